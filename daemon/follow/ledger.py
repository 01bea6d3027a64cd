"""The ledger: every file a follower has read or passed over, known by content, and how far.

An ``Entry`` is one file's content: its head (a hash of its first bytes, up to ``HEAD_BYTES``;
a file shorter than that is known by the prefix it had), how far it was read (``offset``), a
CRC-32 of everything read (``crc``: the bytes ``[0, offset)``) and a hash of the bytes just before
the offset, the last bytes read themselves (``recent``, up to ``RECENT_BYTES``, with the CRC-32 of
what comes before them: what proves a shorter copy to be the start of the content), and whether
nothing more can come of it (``done``). The head only finds candidates
(``candidates``): many files may begin alike (a run of one character cut by a rotation, a fixed
header, a copy). A file is taken for an entry only once all of its first ``offset`` bytes are
shown to be the entry's (``proven``: the follower reads them and compares). Device and inode are
a hint for which of two holders is the file itself; they never decide identity. The ledger is
saved in the checkpoint.

Entries of files that no name shows any more are dropped once they have been missing for
``forget_after`` seconds (a compressor's temporary name may hide a file for a while), so the
ledger stays as small as the set of rotated files.
"""

from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass, field
from typing import Callable, Optional

from .logfile import HEAD_BYTES, TAIL_BYTES, Buffer, Look, sha
from .saved import MAX_ENTRIES, RECENT_BYTES, EntryState

# The entries that keep their last bytes read (``recent``), the newest ones: a shorter copy is
# made of a file just rotated (a compressor or copytruncate racing its writer), not of older ones.
RECENT_KEPT = 4


@dataclass(eq=False)
class Entry:
    """One file's content as the ledger knows it (compared by identity, not by value)."""

    head_len: int = 0
    head_sha: str = ""
    offset: int = 0
    crc: Optional[int] = 0  # CRC-32 of the content [0, offset); None: not known (older state)
    tail_len: int = 0
    tail_sha: str = ""
    dev: int = 0
    ino: int = 0
    done: bool = False  # read or passed over to its end, and it cannot grow (a complete .gz)
    recent: bytes = b""  # the last bytes read, just before the offset (at most RECENT_BYTES)
    recent_crc: Optional[int] = 0  # CRC-32 of the content before ``recent``
    missing_since: Optional[float] = field(default=None, compare=False)

    @property
    def known(self) -> bool:
        """Whether it has a fingerprint (a file not read into yet has none)."""
        return self.head_len > 0

    def matches(self, head: bytes) -> bool:
        """Whether a file that begins with ``head`` holds this content."""
        n = self.head_len
        return self.known and len(head) >= n and sha(head[:n]) == self.head_sha

    def mark(
        self, head: bytes, offset: int, crc: Optional[int], tail: bytes, dev: int, ino: int
    ) -> None:
        """Record the position (``crc``: of the content up to ``offset``; ``tail``: the bytes
        just before it)."""
        head = head[:HEAD_BYTES]
        if len(head) > self.head_len:
            self.head_len, self.head_sha = len(head), sha(head)
        tail = tail[-TAIL_BYTES:]
        self.offset, self.crc = offset, crc
        self.recent, self.recent_crc = b"", crc  # passed over, not read: nothing kept
        self.tail_len, self.tail_sha = len(tail), sha(tail)
        self.dev, self.ino = dev, ino

    def advance(self, data: Buffer, head: bytes, tail: bytes, dev: int, ino: int) -> None:
        """Record ``data`` as read, from the offset on: the CRC goes on over it, and the last
        ``RECENT_BYTES`` read are kept (each byte goes through the CRC once, or twice for reads
        shorter than what is kept)."""
        crc, base, recent = self.crc, self.recent_crc, self.recent
        offset = self.offset + len(data)
        if crc is None or base is None:  # an entry from an older state file: no CRC
            self.mark(head, offset, None, tail, dev, ino)
            return
        n = len(data)
        if n >= RECENT_BYTES:
            base = zlib.crc32(data[: n - RECENT_BYTES], crc)
            recent = bytes(data[n - RECENT_BYTES :])
            crc = zlib.crc32(recent, base)
        else:
            crc = zlib.crc32(data, crc)
            drop = len(recent) + n - RECENT_BYTES
            if drop > 0:
                base = zlib.crc32(recent[:drop], base)
                recent = recent[drop:]
            recent += bytes(data)
        self.mark(head, offset, crc, tail, dev, ino)
        self.recent, self.recent_crc = recent, base

    def forget_recent(self) -> None:
        self.recent, self.recent_crc = b"", self.crc

    def begins_with(self, data: bytes) -> bool:
        """Whether the content begins with all of ``data``, as far as the last bytes read tell
        (False when ``data`` ends before them)."""
        return self.prefix_crc(len(data)) == zlib.crc32(data)

    def prefix_crc(self, n: int) -> Optional[int]:
        """The CRC-32 of the content's first ``n`` bytes, when ``n`` falls within the last bytes
        read (kept); else None."""
        start = self.offset - len(self.recent)
        if self.recent_crc is None or not start <= n <= self.offset:
            return None
        return zlib.crc32(self.recent[: n - start], self.recent_crc)

    def fingerprint(self) -> tuple[object, ...]:
        """What a proof of this entry depends on (not the entry object: one that is gone may
        leave its ``id`` to another)."""
        return (self.head_len, self.head_sha, self.offset, self.crc, self.tail_len, self.tail_sha)

    def tail_is(self, tail: bytes) -> bool:
        """Whether ``tail`` are the bytes just before the offset (none at offset 0)."""
        return len(tail) == self.tail_len and (not tail or sha(tail) == self.tail_sha)

    def proven(self, head: bytes, crc: int, tail: bytes) -> bool:
        """Whether a content whose first ``offset`` bytes have this CRC-32, begin with ``head``
        and end in ``tail`` is this entry's."""
        same = self.crc is None or crc == self.crc  # an entry from an older state file: no CRC
        return self.matches(head) and same and self.tail_is(tail)

    def saved(self) -> EntryState:
        return EntryState(
            head_len=self.head_len,
            head_sha=self.head_sha,
            offset=self.offset,
            crc=self.crc,
            tail_len=self.tail_len,
            tail_sha=self.tail_sha,
            dev=self.dev,
            ino=self.ino,
            done=self.done,
            recent=base64.b64encode(zlib.compress(self.recent, 1)).decode() if self.recent else "",
            recent_crc=self.recent_crc,
        )

    @classmethod
    def from_saved(cls, state: EntryState) -> Entry:
        fields = state.model_dump()
        fields["recent"] = state.recent_bytes()
        return cls(**fields)


class Ledger:
    """The entries of one followed log."""

    def __init__(self, clock: Callable[[], float], forget_after: float) -> None:
        self.entries: list[Entry] = []
        self._clock = clock
        self.forget_after = forget_after

    def candidates(self, head: bytes) -> list[Entry]:
        """The entries a content that begins with ``head`` may be, the longest read first: the
        head never proves which (``Entry.proven`` does). A file shorter than an entry's head is
        a candidate when all of it is the entry's start (a shorter copy of a short content)."""
        found = [
            e
            for e in self.entries
            if e.matches(head) or (len(head) < e.head_len and e.begins_with(head))
        ]
        return sorted(found, key=lambda e: -e.offset)

    def add(self, entry: Entry) -> Entry:
        self.entries.append(entry)
        if len(self.entries) > MAX_ENTRIES:
            del self.entries[0]
        for older in self.entries[:-RECENT_KEPT]:
            older.forget_recent()
        return entry

    def prune(self, looks: list[Look], keep: Optional[Entry]) -> None:
        """Forget the entries that none of ``looks`` holds (after ``forget_after``); ``keep`` is
        the entry being read, held open whatever its names."""
        now = self._clock()
        seen = {id(e) for p in looks if p.head is not None for e in self.candidates(p.head)}
        kept: list[Entry] = []
        for entry in self.entries:
            if entry is keep or id(entry) in seen:
                entry.missing_since = None
            elif not entry.known:
                continue  # never read into, and not open: nothing to remember
            elif entry.missing_since is None:
                entry.missing_since = now
            elif now - entry.missing_since > self.forget_after:
                continue
            kept.append(entry)
        self.entries = kept
