"""Bytes -> whole lines: ``LineSplitter``, shared by ``run`` and ``scan``."""

from __future__ import annotations

from apigee_tls_exporter.records.lines import LineSplitter, Segment
from apigee_tls_exporter.records.stats import FileStats


def text(segments: list[Segment]) -> bytes:
    return b"".join(bytes(buf[start:end]) for buf, start, end in segments)


def lines(prefix: str, n: int) -> bytes:
    return b"".join(f"{prefix} line {i:05d}\n".encode() for i in range(n))


def test_splitter_holds_a_partial_line_until_its_newline() -> None:
    """Bytes after the last newline are held, not handed out, and joined to what comes next."""
    splitter = LineSplitter(1024, FileStats())
    assert text(splitter.feed(b"one\ntw")) == b"one\n"
    assert splitter.partial == b"tw"
    assert text(splitter.feed(b"o and")) == b""
    assert text(splitter.feed(b" three\n")) == b"two and three\n"
    assert splitter.partial == b""


def test_splitter_hands_out_every_line_once_in_order_whatever_the_cuts() -> None:
    """Fed in pieces cut anywhere, the segments are exactly the input's whole lines, in order."""
    data = lines("x", 500)
    for step in (1, 7, 64, 1000):
        splitter = LineSplitter(1024, FileStats())
        out = b"".join(text(splitter.feed(data[i : i + step])) for i in range(0, len(data), step))
        assert data == out


def test_splitter_segments_of_a_buffer_respect_the_size_given() -> None:
    """``feed(buffer, size)`` reads only ``buffer[:size]``: stale bytes after it are ignored."""
    splitter = LineSplitter(1024, FileStats())
    buffer = bytearray(b"a\nb\nSTALE\nSTALE\n")
    assert text(splitter.feed(buffer, 3)) == b"a\n"
    assert splitter.partial == b"b"


def test_splitter_cuts_a_long_line_counts_it_and_skips_its_rest() -> None:
    """A line over the limit is handed out cut to the limit, counted once, its rest dropped."""
    stats = FileStats()
    splitter = LineSplitter(10, stats)
    out = text(splitter.feed(b"short\n0123456789"))  # 10 bytes held: at the limit, not over
    out += text(splitter.feed(b"ABCDEFGHIJ"))  # now 20 without a newline: cut
    out += text(splitter.feed(b"more of it"))  # still the same line: skipped
    out += text(splitter.feed(b"end\nnext\n"))
    assert out == b"short\n0123456789\nnext\n"
    assert stats.truncated_lines == 1


def test_splitter_cuts_a_long_line_completed_in_one_feed() -> None:
    """A held partial plus the start of the next read over the limit: the line is cut there."""
    stats = FileStats()
    splitter = LineSplitter(10, stats)
    assert text(splitter.feed(b"01234567")) == b""
    assert text(splitter.feed(b"89ABCD\nok\n")) == b"0123456789\nok\n"
    assert stats.truncated_lines == 1


def test_splitter_line_at_the_limit_is_whole() -> None:
    """A line of exactly ``limit`` bytes is not cut."""
    stats = FileStats()
    splitter = LineSplitter(10, stats)
    assert text(splitter.feed(b"01234") + splitter.feed(b"56789\n")) == b"0123456789\n"
    assert stats.truncated_lines == 0
