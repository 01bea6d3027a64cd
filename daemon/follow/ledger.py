"""The ledger: every file a follower has read or passed over, known by content, and how far.

An ``Entry`` is one file's content: its fingerprint (a hash of its first bytes, up to
``HEAD_BYTES``; a file shorter than that is known by the prefix it had), how far it was read
(``offset``, with a hash of the bytes just before it), and whether nothing more can come of it
(``done``). Device and inode are kept as a hint for log lines and for telling which of two
holders is the file itself; they never decide identity. The ledger is saved in the checkpoint.

Entries of files that no name shows any more are dropped once they have been missing for
``forget_after`` seconds (a compressor's temporary name may hide a file for a while), so the
ledger stays as small as the set of rotated files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from .logfile import HEAD_BYTES, TAIL_BYTES, Probe, sha

MAX_ENTRIES = 1000


@dataclass(eq=False)
class Entry:
    """One file's content as the ledger knows it (compared by identity, not by value)."""

    head_len: int = 0
    head_sha: str = ""
    offset: int = 0
    tail_len: int = 0
    tail_sha: str = ""
    dev: int = 0
    ino: int = 0
    done: bool = False  # read or passed over to its end, and it cannot grow (a complete .gz)
    missing_since: Optional[float] = field(default=None, compare=False)

    @property
    def known(self) -> bool:
        """Whether it has a fingerprint (a file not read into yet has none)."""
        return self.head_len > 0

    def matches(self, head: bytes) -> bool:
        """Whether a file that begins with ``head`` holds this content."""
        n = self.head_len
        return self.known and len(head) >= n and sha(head[:n]) == self.head_sha

    def mark(self, head: bytes, offset: int, tail: bytes, dev: int, ino: int) -> None:
        """Record the position (``tail``: the bytes just before ``offset``)."""
        head = head[:HEAD_BYTES]
        if len(head) > self.head_len:
            self.head_len, self.head_sha = len(head), sha(head)
        tail = tail[-TAIL_BYTES:]
        self.offset = offset
        self.tail_len, self.tail_sha = len(tail), sha(tail)
        self.dev, self.ino = dev, ino

    def tail_is(self, tail: bytes) -> bool:
        """Whether ``tail`` are the bytes just before the offset (none at offset 0)."""
        return len(tail) == self.tail_len and (not tail or sha(tail) == self.tail_sha)

    def to_json(self) -> dict[str, Any]:
        return {
            "head_len": self.head_len,
            "head_sha": self.head_sha,
            "offset": self.offset,
            "tail_len": self.tail_len,
            "tail_sha": self.tail_sha,
            "dev": self.dev,
            "ino": self.ino,
            "done": self.done,
        }


class Ledger:
    """The entries of one followed log."""

    def __init__(self, clock: Callable[[], float], forget_after: float) -> None:
        self.entries: list[Entry] = []
        self._clock = clock
        self.forget_after = forget_after

    def find(self, head: bytes) -> Optional[Entry]:
        """The entry of the content that begins with ``head``: the longest fingerprint that fits."""
        best: Optional[Entry] = None
        for entry in self.entries:
            if entry.matches(head) and (best is None or entry.head_len > best.head_len):
                best = entry
        return best

    def add(self, entry: Entry) -> Entry:
        self.entries.append(entry)
        if len(self.entries) > MAX_ENTRIES:
            del self.entries[0]
        return entry

    def prune(self, probes: list[Probe], keep: Optional[Entry]) -> None:
        """Forget the entries that none of ``probes`` holds (after ``forget_after``); ``keep`` is
        the entry being read, held open whatever its names."""
        now = self._clock()
        seen = {id(e) for p in probes if p.head is not None for e in [self.find(p.head)] if e}
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
