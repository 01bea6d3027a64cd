"""Following one log file: offsets, rotation, truncation, partial lines, checkpoint state.

``Follower.poll()`` reads what is new and yields it as blocks of whole lines. It never blocks and
never raises for a file problem; the caller polls it when watchdog reports a change and on a short
timer, so a lost inotify event (queue overflow, no inotify at all) only delays a read.

The cases, each with its own scenario test in ``tests/test_tail.py``:

- **Append.** Read from the offset to the end; lines are split on ``\\n``.
- **Partial line.** A last line without its newline is held (and saved in the checkpoint) until the
  newline arrives.
- **Long line.** A line longer than ``max_line_bytes`` is cut to that length, counted in
  ``truncated_lines``, and the rest of it up to the newline is skipped. The cut line still counts.
- **Rename and create** (logback rolling, logrotate ``create``, an atomic replace). The path names a
  new inode: the old file, still open, is drained to its end; the new one is followed from its start
  once it has data, so a writer that keeps writing to the renamed file for a while loses nothing.
  A partial line at the end of the old file is completed by the start of the new one.
- **Deleted, created again later.** The open file is drained; the follower waits; the new file is
  read from its start (kind ``recreate``).
- **copytruncate.** Same inode, but the file is shorter than the offset, or the bytes just before
  the offset changed (it was truncated and written again before we looked). The rotated copy is
  found among the ``rotated`` glob (plain or ``.gz``), confirmed by its content (the first bytes and
  the bytes just before our offset), read from the offset to its end, and the truncated file is then
  read from 0 (kind ``copytruncate``). For a moment the copy may not be there yet (a compressor is
  replacing it): the follower waits up to ``copy_wait`` seconds for it.
- **Truncation without a copy.** No rotated file matches: read from 0 (kind ``truncate``); what was
  written between our last read and the truncation is lost and cannot be recovered.
- **Missing at start, or its directory missing.** Wait for it; read it from its start when it comes.
- **Permission denied.** Retry at every poll; say so once
  (``read_errors{error="permission_denied"}`` and one log line); carry on when it is readable
  again.
- **Restart.** ``restore()`` takes the checkpointed identity: device+inode, a hash of the first
  bytes and a hash of the bytes just before the offset. The same file resumes at the offset.
  Otherwise the file is looked for among the rotated names (plain or gzip) by content, finished
  from the offset, followed by any rotated file newer than it, then the current file from its start.
"""

from __future__ import annotations

import base64
import glob
import gzip
import hashlib
import io
import os
import stat as stat_mod
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Callable, Optional, cast

import structlog

from .metrics import FileStats

HEAD_BYTES = 1024
TAIL_BYTES = 128
DEFAULT_MAX_LINE = 1 << 20

log = structlog.get_logger()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Identity:
    """What identifies a file's content at an offset, as saved in the checkpoint."""

    dev: int
    ino: int
    offset: int
    head_len: int
    head_sha: str
    tail_len: int
    tail_sha: str


def _open(path: str) -> IO[bytes]:
    if path.endswith(".gz"):
        return cast(IO[bytes], gzip.open(path, "rb"))
    return open(path, "rb", buffering=0)


def _read_at(f: IO[bytes], offset: int, size: int) -> bytes:
    f.seek(offset)
    out = b""
    while len(out) < size:
        chunk = f.read(size - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _matches(f: IO[bytes], ident: Identity) -> bool:
    """Whether the open file holds the checkpointed content up to the checkpointed offset."""
    try:
        head = _read_at(f, 0, ident.head_len)
        if len(head) != ident.head_len or _sha(head) != ident.head_sha:
            return False
        start = ident.offset - ident.tail_len
        tail = _read_at(f, start, ident.tail_len)
        return len(tail) == ident.tail_len and _sha(tail) == ident.tail_sha
    except (OSError, EOFError, zlib.error):
        return False


class LineSplitter:
    """Bytes -> blocks of whole lines; holds a partial last line, cuts lines over ``limit``.

    Lines are counted here (``stats.lines``), so that every source of bytes counts the same way.
    """

    def __init__(self, limit: int, stats: FileStats) -> None:
        self.limit = limit
        self.stats = stats
        self.partial = b""
        self.discarding = False  # skipping the rest of a cut line
        self.last_count = 0  # lines in the block returned last

    def reset(self) -> None:
        self.partial = b""
        self.discarding = False

    def feed(self, data: bytes) -> bytes:
        """Join ``data`` (at most ``limit`` bytes) to the partial line; return the whole lines."""
        buf = self.partial + data if self.partial else data
        if self.discarding:
            newline = buf.find(b"\n")
            if newline < 0:
                self.partial = b""
                return b""
            buf = buf[newline + 1 :]
            self.discarding = False
        last = buf.rfind(b"\n")
        block, rest = buf[: last + 1], buf[last + 1 :]
        # Reads are at most `limit` long, so only the line that began in the partial can be over it.
        first = block.find(b"\n")
        if first > self.limit:
            block = block[: self.limit] + block[first:]
            self.stats.truncated_lines += 1
        if len(rest) > self.limit:
            block += rest[: self.limit] + b"\n"
            rest = b""
            self.discarding = True
            self.stats.truncated_lines += 1
        self.partial = rest
        self.last_count = block.count(b"\n")
        self.stats.lines += self.last_count
        return block


class Follower:
    """Follows one path. See the module docstring for the cases it handles."""

    def __init__(
        self,
        path: str,
        *,
        stats: Optional[FileStats] = None,
        rotated: Optional[str] = None,
        max_line_bytes: int = DEFAULT_MAX_LINE,
        from_beginning: bool = False,
        copy_wait: float = 2.0,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self.stats = stats if stats is not None else FileStats()
        self.rotated_glob = rotated or f"{glob.escape(path)}.*"
        self.max_line_bytes = max_line_bytes
        self.read_size = min(1 << 20, max_line_bytes)
        self.copy_wait = copy_wait
        self._clock = clock
        self._start_at_end = not from_beginning  # only for a file present at the first poll
        self._first_poll = True
        self._f: Optional[IO[bytes]] = None
        self._dev = 0
        self._ino = 0
        self._offset = 0
        self._head = b""
        self._tail = b""
        self.splitter = LineSplitter(max_line_bytes, self.stats)
        self._rotated_source = False  # reading a rotated file: the current path comes next
        self._backlog: list[str] = []  # rotated files newer than the restored one, oldest first
        self._saw_missing = False
        self._truncated_since: Optional[float] = None
        self._problem: Optional[str] = None  # the error we already reported

    # --- checkpoint -----------------------------------------------------------------------
    def snapshot(self) -> Optional[dict[str, Any]]:
        """Where we are, for the checkpoint; None before the file was first opened."""
        if self._f is None:
            return None
        head = self._head[: min(HEAD_BYTES, self._offset)]
        tail = self._tail[-min(TAIL_BYTES, self._offset) :] if self._offset else b""
        return {
            "dev": self._dev,
            "ino": self._ino,
            "offset": self._offset,
            "head_len": len(head),
            "head_sha": _sha(head),
            "tail_len": len(tail),
            "tail_sha": _sha(tail),
            "partial": base64.b64encode(self.splitter.partial).decode("ascii"),
            "discarding": self.splitter.discarding,
            "stats": self.stats.snapshot(),
        }

    def restore(self, state: dict[str, Any]) -> None:
        """Resume from a checkpoint taken by ``snapshot`` ("Restart" in the module docstring)."""
        self.stats.restore(state.get("stats", {}))
        ident = Identity(
            dev=int(state["dev"]),
            ino=int(state["ino"]),
            offset=int(state["offset"]),
            head_len=int(state["head_len"]),
            head_sha=str(state["head_sha"]),
            tail_len=int(state["tail_len"]),
            tail_sha=str(state["tail_sha"]),
        )
        self.splitter.partial = base64.b64decode(state.get("partial", ""))
        self.splitter.discarding = bool(state.get("discarding", False))
        self._first_poll = False
        self._start_at_end = False
        found = self._find(ident)
        if found is None:
            log.warning(
                "checkpointed file not found, reading the current file from its start",
                path=self.path,
            )
            self.splitter.reset()
            self._count_rotation("recreate")
            return
        name, f = found
        self._adopt(f, ident.offset)
        if name != self.path:
            self._rotated_source = True
            self._backlog = self._newer_than(name)
            log.info("finishing rotated file from checkpoint", path=self.path, rotated=name)
            self._count_rotation("rename")

    def _candidates(self) -> list[str]:
        names = [n for n in glob.glob(self.rotated_glob) if n != self.path]
        names.sort(key=lambda n: (_mtime(n), n), reverse=True)
        return [self.path, *names]

    def _find(self, ident: Identity) -> Optional[tuple[str, IO[bytes]]]:
        """The file that holds the checkpointed content: same inode first, then by content."""
        names = self._candidates()
        same_inode = [n for n in names if _inode(n) == (ident.dev, ident.ino)]
        for name in same_inode + [n for n in names if n not in same_inode]:
            try:
                f = _open(name)
            except OSError:
                continue
            if _matches(f, ident):
                return name, f
            f.close()
        return None

    def _newer_than(self, name: str) -> list[str]:
        base = _mtime(name)
        newer = [n for n in self._candidates()[1:] if n != name and _mtime(n) > base]
        return sorted(newer, key=lambda n: (_mtime(n), n))

    # --- following ------------------------------------------------------------------------
    def poll(self) -> Iterator[bytes]:
        """Read what is new; yield blocks of whole lines (each ending in a newline)."""
        if self._f is None and not self._open_path():
            return
        if self._rotated_source:
            yield from self._drain()
            yield from self._next_rotated()
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            yield from self._drain()  # deleted: what it still holds is ours
            if not self._saw_missing:
                log.info("log file gone, waiting for it", path=self.path)
            self._saw_missing = True
            return
        except OSError as err:
            yield from self._drain()
            self._report(err)
            return
        self.stats.size = st.st_size
        if (st.st_dev, st.st_ino) != (self._dev, self._ino):
            yield from self._drain()
            if st.st_size == 0 and not self._saw_missing:
                return  # the new file is empty: the writer may still be writing to the old one
            kind = "recreate" if self._saw_missing else "rename"
            if self._switch_to_path(kind):
                yield from self._drain()
            return
        if st.st_size < self._offset or not self._tail_intact():
            yield from self._truncated()
            return
        yield from self._drain()

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def _open_path(self) -> bool:
        """Open the current path; at the very first poll, maybe at its end."""
        try:
            f = _open(self.path)
        except OSError as err:
            self._report(err)
            self._first_poll = False
            return False
        if self._problem is not None:
            log.info("log file readable again", path=self.path)
            self._problem = None
        offset = 0
        if self._first_poll and self._start_at_end:
            offset = os.fstat(f.fileno()).st_size
        self._first_poll = False
        self._adopt(f, offset)
        if offset and _read_at(f, offset - 1, 1) != b"\n":
            self.splitter.discarding = True  # we start mid-line: skip to the next line
        return True

    def _adopt(self, f: IO[bytes], offset: int) -> None:
        self.close()
        self._f = f
        try:
            st = os.fstat(f.fileno())
            self._dev, self._ino = st.st_dev, st.st_ino
        except (OSError, io.UnsupportedOperation):
            self._dev, self._ino = 0, 0
        self._offset = offset
        self._head = _read_at(f, 0, min(HEAD_BYTES, offset))
        self._tail = _read_at(f, max(0, offset - TAIL_BYTES), min(TAIL_BYTES, offset))
        f.seek(offset)
        self.stats.offset = offset

    def _switch_to_path(self, kind: Optional[str]) -> bool:
        """Follow the current path from its start, carrying a partial line over."""
        try:
            f = _open(self.path)
        except OSError as err:
            self._report(err)
            return False
        self._adopt(f, 0)
        self._saw_missing = False
        self._truncated_since = None
        if kind is not None:
            log.info("log rotated", path=self.path, kind=kind)
            self._count_rotation(kind)
        return True

    def _next_rotated(self) -> Iterator[bytes]:
        """A rotated file is finished: go on with the next newer one, then the current path."""
        while self._backlog:
            name = self._backlog.pop(0)
            try:
                self._adopt(_open(name), 0)
            except OSError as err:
                self._report(err)
                continue
            yield from self._drain()
        self._rotated_source = False
        if self._switch_to_path(None):  # the rotation was counted when the file was found
            yield from self._drain()

    def _tail_intact(self) -> bool:
        if not self._tail or self._f is None:
            return True
        try:
            now = os.pread(self._f.fileno(), len(self._tail), self._offset - len(self._tail))
        except OSError:
            return True
        return now == self._tail

    def _truncated(self) -> Iterator[bytes]:
        """Same inode, content gone from under our offset: find the copy, else start over."""
        ident = Identity(
            dev=self._dev,
            ino=self._ino,
            offset=self._offset,
            head_len=len(self._head),
            head_sha=_sha(self._head),
            tail_len=len(self._tail),
            tail_sha=_sha(self._tail),
        )
        for name in self._candidates()[1:]:
            try:
                f = _open(name)
            except OSError:
                continue
            if _matches(f, ident):
                log.info("log truncated, finishing its copy", path=self.path, copy=name)
                self._adopt(f, ident.offset)
                yield from self._drain()
                self._count_rotation("copytruncate")
                self._switch_quietly()
                yield from self._drain()
                return
            f.close()
        now = self._clock()
        if self._truncated_since is None:
            self._truncated_since = now
        if now - self._truncated_since < self.copy_wait:
            return  # the copy may be on its way (compression); look again at the next poll
        log.warning("log truncated, no copy found: reading from its start", path=self.path)
        self.splitter.reset()
        self._count_rotation("truncate")
        self._switch_quietly()
        yield from self._drain()

    def _switch_quietly(self) -> None:
        try:
            self._adopt(_open(self.path), 0)
        except OSError as err:
            self._report(err)
            self.close()
        self._truncated_since = None

    def _drain(self) -> Iterator[bytes]:
        """Read the open file to its end, yielding blocks of whole lines."""
        f = self._f
        if f is None:
            return
        while True:
            try:
                data = f.read(self.read_size)
            except (OSError, EOFError, zlib.error) as err:
                self._report(err)
                return
            if not data:
                return
            self._offset += len(data)
            self.stats.bytes_read += len(data)
            self.stats.offset = self._offset
            self.stats.last_read = self._clock()
            if len(self._head) < HEAD_BYTES:
                self._head = (self._head + data[:HEAD_BYTES])[:HEAD_BYTES]
            self._tail = (self._tail + data[-TAIL_BYTES:])[-TAIL_BYTES:]
            block = self.splitter.feed(data)
            if block:
                yield block

    def _count_rotation(self, kind: str) -> None:
        self.stats.rotations[kind] = self.stats.rotations.get(kind, 0) + 1

    def _report(self, err: BaseException) -> None:
        """Count an open/read error; log it once per episode, not at every poll."""
        if isinstance(err, FileNotFoundError):
            kind = "not_found"
        elif isinstance(err, PermissionError):
            kind = "permission_denied"
        elif isinstance(err, OSError) and err.errno is not None:
            kind = os.strerror(err.errno).lower().replace(" ", "_")[:40]
        else:
            kind = type(err).__name__.lower()
        if kind == self._problem:
            return
        self._problem = kind
        if kind == "not_found":
            log.info("waiting for log file", path=self.path)
            return
        self.stats.read_errors[kind] = self.stats.read_errors.get(kind, 0) + 1
        log.warning("cannot read log file", path=self.path, error=kind, detail=str(err))


def _mtime(name: str) -> float:
    try:
        return os.stat(name).st_mtime
    except OSError:
        return 0.0


def _inode(name: str) -> tuple[int, int]:
    try:
        st = os.stat(name)
    except OSError:
        return (-1, -1)
    if not stat_mod.S_ISREG(st.st_mode):
        return (-1, -1)
    return (st.st_dev, st.st_ino)
