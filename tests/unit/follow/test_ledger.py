"""The ledger's entry: what it keeps of a content read in reads of any size."""

from __future__ import annotations

import zlib

from apigee_tls_exporter.follow.ledger import RECENT_KEPT, Entry, Ledger
from apigee_tls_exporter.follow.saved import RECENT_BYTES, EntryState
from hypothesis import given, settings
from hypothesis import strategies as st

READS = st.lists(
    st.one_of(st.binary(max_size=300), st.integers(1, 3 * RECENT_BYTES).map(lambda n: b"x" * n)),
    max_size=12,
)


def read_in(reads: list[bytes]) -> Entry:
    entry = Entry()
    for data in reads:
        entry.advance(memoryview(data), b"", b"", 1, 2)
    return entry


@settings(max_examples=200, deadline=None)
@given(reads=READS, at=st.floats(0.0, 1.0))
def test_the_crc_of_every_prefix_ending_in_the_last_bytes_read_is_known(
    reads: list[bytes], at: float
) -> None:
    """Whatever the sizes of the reads: the CRC covers all that was read, the last
    ``RECENT_BYTES`` (or all, when less) are kept, and the CRC of any prefix that ends within
    them is that of the bytes; one that ends before them is not known."""
    content = b"".join(reads)
    entry = read_in(reads)
    assert entry.offset == len(content)
    assert entry.crc == zlib.crc32(content)
    assert entry.recent == content[-RECENT_BYTES:]
    start = len(content) - len(entry.recent)
    n = start + int(at * len(entry.recent))
    assert entry.prefix_crc(n) == zlib.crc32(content[:n])
    assert entry.begins_with(content[:n])
    if start > 0:
        assert entry.prefix_crc(start - 1) is None


@settings(max_examples=50, deadline=None)
@given(reads=READS)
def test_what_is_kept_comes_back_from_the_state_file(reads: list[bytes]) -> None:
    entry = read_in(reads)
    back = Entry.from_saved(EntryState.model_validate_json(entry.saved().model_dump_json()))
    assert (back.recent, back.recent_crc, back.crc) == (entry.recent, entry.recent_crc, entry.crc)


def test_a_content_passed_over_keeps_nothing_and_proves_no_prefix() -> None:
    """A position taken without reading (the end at a first start) keeps no bytes."""
    entry = Entry()
    entry.mark(b"abc", 3, zlib.crc32(b"abc"), b"abc", 1, 2)
    assert entry.recent == b""
    assert entry.prefix_crc(3) == zlib.crc32(b"abc")
    assert entry.prefix_crc(2) is None


def test_only_the_newest_entries_keep_their_last_bytes() -> None:
    """A shorter copy is made of a file just rotated: the four newest entries keep their last
    bytes (in memory and in the state file), the older ones forget them."""
    ledger = Ledger(lambda: 0.0, 600.0)
    entries = [ledger.add(read_in([b"line %d\n" % i])) for i in range(6)]
    assert [bool(e.recent) for e in entries] == [False] * (6 - RECENT_KEPT) + [True] * RECENT_KEPT
    assert all(e.prefix_crc(e.offset) == e.crc for e in entries)
