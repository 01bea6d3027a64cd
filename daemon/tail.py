"""Following one log file: offsets, rotation, truncation, partial lines, checkpoint state.

``Follower.poll()`` reads what is new and yields it as segments of whole lines. It never blocks
and never raises for a file problem; the caller polls it when watchdog reports a change and on a
short timer, so a lost inotify event (queue overflow, no inotify at all) only delays a read.

Exactly once: ``snapshot()`` is the position after the last segment handed out only when
``settled`` is True (one read gives up to three segments, and the offset and held partial line
move past all of them at once); the caller checkpoints its counters with it only then.

The cases, each with its own scenario test in ``tests/test_tail.py``:

- **Append.** Read from the offset to the end; lines are split on ``\\n``.
- **Partial line.** A last line without its newline is held (and saved in the checkpoint) until the
  newline arrives.
- **Long line.** A line longer than ``max_line_bytes`` is cut to that length, counted in
  ``truncated_lines``, and the rest of it up to the newline is skipped. The cut line still counts.
- **Rename and create** (logback rolling, logrotate ``create``, an atomic replace). The path names a
  new inode: the old file, still open, is drained to its end; the new one is followed from its start
  once it has data, so a writer that keeps writing to the renamed file for a while loses nothing.
  A partial line at the end of the old file is completed by the start of the new one. When the
  path was rotated more than once between two polls (the daemon stopped, the machine overloaded),
  the files in between are read as at a restart (below): after the old file, each rotated file
  newer than it, oldest first, from its start, plain or ``.gz``; the newest of them is followed
  like a renamed file until the next poll looks at the path again. A checkpoint taken meanwhile
  names the file being read, so a restart resumes in it. Each file passed through counts one
  rotation of kind ``rename``: two rotations between polls count two.
- **Deleted, created again later.** The open file is drained; the follower waits; the new file is
  read from its start once it has data (kind ``recreate``: the path was missing and the old file
  has no name left). Seeing the path missing for an instant (between logrotate's rename and its
  create) changes nothing: the renamed file is still drained until the new one has data.
- **copytruncate.** Same inode, but the file is shorter than the offset, or the bytes just before
  the offset changed (it was truncated and written again before we looked). The rotated copy is
  found among the ``rotated`` glob (plain or ``.gz``), confirmed by its content (the first bytes and
  the bytes just before our offset), read from the offset to its end, and the truncated file is then
  read from 0 (kind ``copytruncate``): the file we hold, also when it was renamed by a later
  rotation before we looked. For a moment the copy may not be there yet (a compressor is
  replacing it): the follower waits up to ``copy_wait`` seconds for it.
- **Truncation without a copy.** No rotated file matches: read from 0 (kind ``truncate``); what was
  written between our last read and the truncation is lost and cannot be recovered, and a partial
  line held from before is dropped. (A file truncated before we read anything of it cannot be told
  from one that was never written: its copy is not looked for.)
- **Missing at start, or its directory missing.** Wait for it; read it from its start when it comes.
- **Permission denied.** Retry at every poll; say so once
  (``read_errors{error="permission_denied"}`` and one log line); carry on when it is readable
  again.
- **Restart.** ``restore()`` takes the checkpointed identity: device+inode, a hash of the first
  bytes and a hash of the bytes just before the offset, and the held partial line. The same file
  resumes at the offset; the same inode with other content (a reused inode) is not the same file.
  Otherwise the file is looked for among the rotated names by content (plain ones first: a ``.gz``
  may still be being written, and its plain original is there until it is done), finished from
  the offset, followed by each rotated file newer than it (by modification time, leaving out the
  file itself under another name, same device and inode, and a file that begins like one already
  taken: its ``.gz`` twin), the newest of them followed like a renamed file until the current
  path has data (the writer may not have reopened it yet), then the current file from its start.
  Each file passed through counts one rotation, the first at the restore (kind ``copytruncate``
  when the path still has the checkpointed inode, else ``rename``). When no file holds the
  content, the follower waits up to ``copy_wait`` (a compressor may be replacing it), then reads
  the current file from its start (kind ``recreate``). A file the checkpoint knows but that was
  not open (missing, unreadable) is read from its start when it comes, whatever
  ``from_beginning`` says.
"""

from __future__ import annotations

import base64
import glob
import gzip
import hashlib
import io
import math
import os
import stat as stat_mod
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import IO, Any, Callable, Optional, cast

import structlog

from .lines import LineSplitter, Segment
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
        self._buffer = bytearray(min(1 << 20, max_line_bytes))
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
        self._backlog: list[str] = []  # rotated files newer than the open one, oldest first
        self._counted = False  # the rotation to the current path was counted at the restore
        # the file at the path (dev, ino) for which the files rotated between polls were looked for
        self._looked_behind: Optional[tuple[int, int]] = None
        # False while the segments of one read are being handed out: the offset and the held
        # partial line are already past the segments not handed out yet, so a checkpoint taken
        # then would skip them. The caller checkpoints only when this is True.
        self.settled = True
        self._restoring: Optional[Identity] = None  # checkpointed file not found yet
        self._restoring_since: Optional[float] = None
        self._saw_missing = False
        self._truncated_since: Optional[float] = None
        self._problem: Optional[str] = None  # the error we already reported

    # --- checkpoint -----------------------------------------------------------------------
    def snapshot(self) -> Optional[dict[str, Any]]:
        """Where we are, for the checkpoint; None before the first poll.

        A file not open (missing, unreadable) is saved without an identity: the restored
        follower reads it from its start when it comes, as this one would have.
        """
        if self._restoring is not None:
            return {
                **asdict(self._restoring),
                "partial": base64.b64encode(self.splitter.partial).decode("ascii"),
                "discarding": self.splitter.discarding,
                "stats": self.stats.snapshot(),
            }
        if self._f is None:
            if self._first_poll:
                return None
            return {
                "partial": base64.b64encode(self.splitter.partial).decode("ascii"),
                "discarding": self.splitter.discarding,
                "stats": self.stats.snapshot(),
            }
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
        self.splitter.partial = base64.b64decode(state.get("partial", ""))
        self.splitter.discarding = bool(state.get("discarding", False))
        self._first_poll = False
        self._start_at_end = False
        if state.get("dev") is None:
            return  # known but not open at the checkpoint: read it from its start when it comes
        self._restoring = Identity(
            dev=int(state["dev"]),
            ino=int(state["ino"]),
            offset=int(state["offset"]),
            head_len=int(state["head_len"]),
            head_sha=str(state["head_sha"]),
            tail_len=int(state["tail_len"]),
            tail_sha=str(state["tail_sha"]),
        )
        self._restoring_since = None
        self._resume()

    def _resume(self) -> bool:
        """Find the checkpointed file; False while it may still be on its way (a compressor)."""
        ident = self._restoring
        if ident is None:
            return True
        found = self._find(ident)
        if found is None:
            now = self._clock()
            if self._restoring_since is None:
                self._restoring_since = now
            if now - self._restoring_since < self.copy_wait:
                return False
            self._restoring = None
            log.warning(
                "checkpointed file not found, reading the current file from its start",
                path=self.path,
            )
            self.splitter.reset()
            self._count_rotation("recreate")
            return True
        self._restoring = None
        name, f = found
        self._adopt(f, ident.offset)
        if name != self.path:
            self._rotated_source = True
            self._backlog = self._newer_than(_mtime(name), _inode(name), _head(name))
            kind = "copytruncate" if _inode(self.path) == (ident.dev, ident.ino) else "rename"
            log.info(
                "finishing rotated file from checkpoint", path=self.path, rotated=name, kind=kind
            )
            self._count_rotation(kind)
            self._counted = True
        return True

    def _candidates(self) -> list[str]:
        """The path, then the rotated names: plain ones before ``.gz`` ones, newest first.

        A ``.gz`` being written by a compressor is incomplete, but its plain original is still
        there until it is done, so looking at plain files first never picks the incomplete one.
        """
        names = [n for n in glob.glob(self.rotated_glob) if n != self.path]
        names.sort(key=lambda n: (not n.endswith(".gz"), _mtime(n), n), reverse=True)
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

    def _newer_than(self, mtime: float, inode: tuple[int, int], head: Optional[bytes]) -> list[str]:
        """Rotated files written after a file (its ``mtime``, ``inode`` and first bytes ``head``),
        oldest first, each content once.

        A name with that inode is the file itself, renamed; one that begins like it is the file in
        another form (its ``.gz`` being written, whose time is that of the compression); a ``.gz``
        whose start cannot be read is still being written, and its plain original is among the
        names. The restart and the live follower ask the same question here, so that a checkpoint
        taken while these files are read resumes exactly.
        """
        heads = {head}
        newer: list[str] = []
        for n in sorted(self._candidates()[1:], key=lambda n: (_mtime(n), n.endswith(".gz"), n)):
            if _mtime(n) <= mtime or _inode(n) == inode:
                continue
            start = _head(n)
            if start is None or start in heads:
                continue
            heads.add(start)
            newer.append(n)
        return newer

    # --- following ------------------------------------------------------------------------
    def poll(self) -> Iterator[Segment]:
        """Read what is new; yield segments of whole lines (see ``LineSplitter``)."""
        if self._restoring is not None and not self._resume():
            return
        if self._f is None and not self._open_path():
            return
        if self._rotated_source:
            yield from self._drain()
            yield from self._next_rotated()
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
            if self._open_file_truncated():  # copytruncate, then a rotation, before we looked
                yield from self._truncated()
                return
            yield from self._drain()
            # Rotated more than once since the last poll: the rotated files newer than the old
            # one come first (there are none after a single rotation). Looked for once per new
            # file at the path, not at every poll while it stays empty.
            if self._looked_behind != (st.st_dev, st.st_ino):
                self._looked_behind = (st.st_dev, st.st_ino)
                self._backlog = self._newer_than(
                    self._open_mtime(), (self._dev, self._ino), self._head
                )
                if self._backlog:
                    yield from self._next_rotated()
                    return  # the path is looked at again next time: it may have rotated meanwhile
            if st.st_size == 0:
                # The writer may still be writing to the old file, renamed or deleted: also when
                # we saw the path missing (the instant between logrotate's rename and create).
                return
            recreated = self._saw_missing and self._old_deleted()
            kind: Optional[str] = "recreate" if recreated else "rename"
            if self._counted:
                kind = None  # counted when the checkpointed file was found among the rotated
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
            found = self._problem == "not_found"
            log.info("log file found" if found else "log file readable again", path=self.path)
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
        self._counted = False
        if kind is not None:
            log.info("log rotated", path=self.path, kind=kind)
            self._count_rotation(kind)
        return True

    def _next_rotated(self) -> Iterator[Segment]:
        """The open file is finished: read the rotated files newer than it, oldest first.

        Taking each one is a rotation of kind ``rename``. The newest stays open and is followed
        like a renamed file: the current path is taken once it has data, since the writer may not
        have reopened the path yet. A checkpoint names the file being read: a restart finds it
        among the rotated names and the files newer than it again.
        """
        while self._backlog:
            name = self._backlog.pop(0)
            try:
                self._adopt(_open(name), 0)
            except OSError as err:
                self._report(err)
                continue
            log.info("log rotated", path=self.path, kind="rename", rotated=name)
            self._count_rotation("rename")
            yield from self._drain()
        self._rotated_source = False

    def _open_mtime(self) -> float:
        """The open file's modification time; infinite when unknown, so that none is newer."""
        if self._f is None:
            return math.inf
        try:
            return os.fstat(self._f.fileno()).st_mtime
        except (OSError, io.UnsupportedOperation):
            return math.inf

    def _old_deleted(self) -> bool:
        """Whether the open file has no name left (deleted, not renamed)."""
        if self._f is None:
            return False
        try:
            return os.fstat(self._f.fileno()).st_nlink == 0
        except (OSError, io.UnsupportedOperation):
            return False

    def _tail_intact(self) -> bool:
        if not self._tail or self._f is None:
            return True
        try:
            now = os.pread(self._f.fileno(), len(self._tail), self._offset - len(self._tail))
        except OSError:
            return True
        return now == self._tail

    def _truncated(self) -> Iterator[Segment]:
        """Our file's content is gone from under our offset: find the copy, else start over.

        Either way the same file is then read from 0: the file we hold, not the path, since it
        may have been renamed since (a rotation after the truncation, before we looked).
        """
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
                again = self._second_handle()
                self._adopt(f, ident.offset)
                yield from self._drain()
                self._count_rotation("copytruncate")
                self._from_start(again)
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
        self._from_start(self._second_handle())
        yield from self._drain()

    def _second_handle(self) -> Optional[IO[bytes]]:
        """Another descriptor of the open file, to read it again from 0 after its copy."""
        if self._f is None:
            return None
        try:
            return os.fdopen(os.dup(self._f.fileno()), "rb", buffering=0)
        except OSError:
            return None

    def _from_start(self, f: Optional[IO[bytes]]) -> None:
        """Read ``f`` from its start (the path, when there is no ``f``)."""
        self._truncated_since = None
        if f is not None:
            self._adopt(f, 0)
            return
        try:
            self._adopt(_open(self.path), 0)
        except OSError as err:
            self._report(err)
            self.close()

    def _open_file_truncated(self) -> bool:
        """Whether the open (plain) file is shorter than our offset or changed before it."""
        if not isinstance(self._f, io.FileIO):
            return False  # a .gz is never truncated
        try:
            size = os.fstat(self._f.fileno()).st_size
        except OSError:
            return False
        return size < self._offset or not self._tail_intact()

    def _drain(self) -> Iterator[Segment]:
        """Read the open file to its end, yielding segments of whole lines."""
        f = self._f
        if f is None:
            return
        while True:
            try:
                size = f.readinto(self._buffer)  # type: ignore[attr-defined]
            except (OSError, EOFError, zlib.error) as err:
                self._report(err)
                return
            if not size:
                return
            data = self._buffer
            self._offset += size
            self.stats.bytes_read += size
            self.stats.offset = self._offset
            self.stats.last_read = self._clock()
            if len(self._head) < HEAD_BYTES:
                self._head = (self._head + bytes(data[: min(size, HEAD_BYTES)]))[:HEAD_BYTES]
            self._tail = (self._tail + bytes(data[max(0, size - TAIL_BYTES) : size]))[-TAIL_BYTES:]
            segments = self.splitter.feed(data, size)
            last = len(segments) - 1
            for i, segment in enumerate(segments):
                self.settled = i == last
                yield segment

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


def _head(name: str) -> Optional[bytes]:
    """The first bytes of a file (plain or gzip); None when they cannot be read."""
    try:
        with _open(name) as f:
            return _read_at(f, 0, HEAD_BYTES)
    except (OSError, EOFError, zlib.error):
        return None


def _inode(name: str) -> tuple[int, int]:
    try:
        st = os.stat(name)
    except OSError:
        return (-1, -1)
    if not stat_mod.S_ISREG(st.st_mode):
        return (-1, -1)
    return (st.st_dev, st.st_ino)
