"""Following one log by content: every byte of every file the log passes through, read once.

``Follower.poll()`` reads what is new and yields it as segments of whole lines. It never blocks
and never raises for a file problem; the caller polls it when watchdog reports a change and on a
short timer, so a lost inotify event (queue overflow, no inotify at all) only delays a read.

The state: the file open, at the offset read to (``_src``), the content being read (``_entry``),
where the next new content is read from (``read_from``: its beginning, the path's end at a first
start, or the checkpoint), a wait in progress (``_wait``), what comes after the content being
read (``_next``: a file truncated under us, how the next content is counted), what was seen of
the path (``_seen``), and the ledger (``ledger``): every content seen at the path or among the
rotated names (``discovery`` finds them), with how far it was read. Besides: what looking at
files taught (``_known``: which file holds which entry; the compressed files waited for in vain,
not waited for again) and what was said once (``_said``), not said again. Names,
devices, inodes and modification times never decide what is read (a modification time only
rules out a plain copy written after its original was truncated). A file's first bytes only find
the entries it may be (``Ledger.candidates``); it is taken for one only once all the bytes read of
that entry are shown to be its first bytes (a CRC-32 over them, ``Entry.proven``), and, when it
is not the entry's own file, only as a copy of it (``_is_its``): files that begin alike (a run of
one character cut by a rotation, a long header, a copy) are never taken for one another. A file
shorter than an entry it begins like is a copy of it only when shown to be its start
(``_tell_apart``: the last bytes read of an entry are kept for this). A
``.gz`` holds the same content as its plain original, so the two are one entry. An unknown
rotated file can only hold lines written while nobody looked (the daemon was down, or the log
rotated twice between two polls), and is read whole. ``docs/exactly-once.md`` argues the design.

Exactly once: ``snapshot()`` is the position after the last segment handed out only when
``settled`` is True (one read gives up to three segments, and the offset and held partial line
move past all of them at once); the caller checkpoints its counters with it only then. Every
change of file is recorded before the new file's first segment is handed out, so a caller may
stop consuming ``poll()`` at any settled segment.

The cases, each with its own scenario test in ``tests/unit/follow/test_tail.py`` (the rotation tools
themselves in ``tests/system/test_rotation.py``):

- **Append.** Read from the offset to the end; lines are split on ``\\n``.
- **Partial line.** A last line without its newline is held (and saved in the checkpoint) until the
  newline arrives, also when it arrives in the next file.
- **Long line.** A line longer than ``max_line_bytes`` is cut to that length, counted in
  ``truncated_lines``, and the rest of it up to the newline is skipped. The cut line still counts.
- **The path names another file** (logback rolling, logrotate ``create``, an atomic replace, a
  deletion and a new file). The open file is still read to its end, also what a writer that has
  not reopened yet adds to it: the path's new file is taken only once it has data. Before it, every
  rotated file with unread content is read, oldest first (files the log passed through while
  nobody looked); a ``.gz`` whose start cannot be decoded yet (a compressor is writing it) is
  waited for, and one still being written is read as it grows and finished before any newer
  file (the wait below). The new file is then looked up (a file already known is read on
  from its position) and read. Each new content counts one rotation: ``recreate`` when the path
  was missing and the old file has no name left, else ``rename``.
- **Compressed twins.** A compressor writing ``.gz`` (or xz, bzip2: told by their first bytes)
  while the writer goes on never causes a second read: the compressed file is the entry of its
  original, read to where the original was read. One held open that ends early is read as it
  grows, before any newer file; one that stops growing for ``copy_wait`` without completing is
  reported once (``read_errors{error="compressed_file_incomplete"}``) and what it holds is read
  once. A format that cannot be decoded here (zstd, lz4) is never read as plain text.
- **Waiting.** Every wait above and below (for a copy, a compressor, a moved file) lasts
  ``copy_wait`` after the files waited for last changed size: a compressor that takes a minute
  over a large file is waited for as long as it writes. While the follower waits, ``caught_up``
  is False (the pairing windows' wall time stands still).
- **copytruncate.** The open file is shorter than the offset, or the bytes just before the offset
  changed: its content now lives in a copy (plain or ``.gz``), found by content among the rotated
  names and read from the offset to its end; the truncated file is then read from 0 (kind
  ``copytruncate``): the file we hold, also when it was renamed by a later rotation before we
  looked. No copy within ``copy_wait``: what was written between our last read and the truncation
  is lost, the held partial line is dropped, and the file is read from 0 (kind ``truncate``). (A
  file truncated before we read anything of it cannot be told from one that was never written.)
- **Missing at start, or its directory missing.** Wait for it; read it from its start when it comes.
- **Permission denied, not a regular file.** Retry at every poll; say so once
  (``read_errors{error=…}`` and one log line); carry on when it is readable again. A FIFO or a
  directory at the path is never opened for reading (it would block).
- **First start.** The rotated files already present are recorded as read, and the path is
  followed from its end; with ``from_beginning`` they are read, oldest first, then the path.
  While nothing is read of the path's file (empty since a first start or a restart), the rotated
  files are looked at again as they change: a writer not reopened yet may still add to one, and
  what it adds is read before the path's first lines.
- **Restart.** ``restore()`` takes the ledger, the entry being read and the held partial line. The
  entry is looked for at the path and among the rotated names (plain names first: a ``.gz`` may
  still be being written), and read on from its offset (one nothing was read of yet has
  nothing to find or finish: followed on at once); then, as above, the rotated files with
  unread content, then the path. When no file holds it within ``copy_wait`` (a compressor may be
  replacing it), the path is read from its start (kind ``recreate``), a held partial line ended
  by the next bytes read; the entry stays in the ledger, so its content is read on from its
  offset if it shows up later under another name.
- **Forgetting.** An entry that no name shows any more is dropped after ``forget_after`` seconds.
"""

from __future__ import annotations

import base64
import os
import stat as stat_mod
import zlib
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Callable, Optional, Union

import structlog

from ..records.lines import LineSplitter, Segment
from ..records.stats import FileStats
from .discovery import Discovery
from .ledger import Entry, Ledger
from .logfile import (
    DECODE_ERRORS,
    HEAD_BYTES,
    CompressedSource,
    Look,
    NotRegularFile,
    PlainSource,
    Source,
    kind_of,
    open_source,
    read_prefix,
)
from .saved import FollowerState

DEFAULT_MAX_LINE = 1 << 20


class ReadFrom(Enum):
    """Where the next content the follower takes is read from (Vector's ``ReadFrom``)."""

    BEGINNING = "beginning"  # its start: every file after the first start, or from_beginning
    END = "end"  # the path's file at the first start: its end (rotated files taken as read)
    CHECKPOINT = "checkpoint"  # restored: the entry being read, from its offset


@dataclass
class Wait:
    """A wait for a copy, a compressor or a moved file: since when, and what it last saw of the
    files waited for (their sizes: a change starts it again)."""

    since: float
    progress: object


@dataclass
class Next:
    """What comes after the content being read: the file truncated under us, read from its start
    once its copy is done, and how the next new content is counted (a rotation ``kind``)."""

    truncated: Optional[PlainSource] = None
    kind: Optional[str] = None


@dataclass
class Seen:
    """What the follower saw of the path: that it went missing since the last file was taken,
    and the path's file and rotated names the rotated files were last caught up to."""

    missing: bool = False
    caught_up_to: object = None


@dataclass
class Known:
    """What looking at files taught, kept so that they are not looked at again: whether a file
    (in a given state) holds an entry, and the compressed files waited for once, in vain."""

    proofs: dict[tuple[object, ...], bool] = field(default_factory=dict)
    undecodable: set[tuple[int, int, int]] = field(default_factory=set)  # dev, ino, size


@dataclass
class Said:
    """What was said once and is not said again: the read error of the current episode, the
    entries whose ``.gz`` ended early, and the files that begin like another content."""

    problem: Optional[str] = None
    incomplete: set[int] = field(default_factory=set)  # id() of entries
    alike: set[tuple[int, int]] = field(default_factory=set)  # dev, ino


log = structlog.get_logger()

Reading = Generator[Segment, None, bool]  # segments, then whether the step could be completed


class Follower:
    """Follows one path. See the module docstring for the cases it handles."""

    def __init__(
        self,
        path: str,
        *,
        stats: Optional[FileStats] = None,
        rotated: Union[str, Sequence[str], None] = None,
        max_line_bytes: int = DEFAULT_MAX_LINE,
        from_beginning: bool = False,
        copy_wait: float = 2.0,
        forget_after: float = 600.0,
        clock: Callable[[], float],
    ) -> None:
        self.path = path
        self.stats = stats if stats is not None else FileStats()
        self.files = Discovery(path, rotated)
        self.max_line_bytes = max_line_bytes
        self._buffer = bytearray(min(1 << 20, max_line_bytes))
        self.copy_wait = copy_wait
        self._clock = clock
        self.splitter = LineSplitter(max_line_bytes, self.stats)
        self.ledger = Ledger(clock, forget_after)
        self._src: Optional[Source] = None  # the file open, at the offset read to
        self._entry: Optional[Entry] = None  # the content being read; no _src while looked for
        self._started = False  # polled once, or restored
        self.read_from = ReadFrom.BEGINNING if from_beginning else ReadFrom.END
        self._wait: Optional[Wait] = None  # for a copy, a compressor, a moved file
        self._next = Next()
        self._seen = Seen()
        self._known = Known()
        self._said = Said()
        # False while the segments of one read are being handed out: the offset and the held
        # partial line are already past the segments not handed out yet, so a checkpoint taken
        # then would skip them. The caller checkpoints only when this is True.
        self.settled = True

    @property
    def caught_up(self) -> bool:
        """Whether the last poll read everything the follower knows of: False while it waits for
        a copy, a compressor or a moved file, with content still to come."""
        return self._wait is None

    # --- checkpoint -----------------------------------------------------------------------
    def snapshot(self) -> Optional[FollowerState]:
        """Where we are, for the checkpoint; None before the first poll."""
        if not self._started:
            return None
        entries = self.ledger.entries
        return FollowerState(
            ledger=[e.saved() for e in entries],
            open=next((i for i, e in enumerate(entries) if e is self._entry), None),
            partial=base64.b64encode(self.splitter.partial).decode("ascii"),
            discarding=self.splitter.discarding,
            stats=self.stats.snapshot(),
        )

    def restore(self, state: FollowerState) -> None:
        """Resume from a checkpoint taken by ``snapshot`` (checked when it was read back)."""
        self.stats.restore(state.stats)
        self.splitter.partial = base64.b64decode(state.partial)
        self.splitter.discarding = state.discarding
        self._started = True
        self.read_from = ReadFrom.CHECKPOINT
        self.ledger.entries = [Entry.from_saved(e) for e in state.ledger]
        index = state.open
        self._entry = self.ledger.entries[index] if index is not None else None

    # --- following ------------------------------------------------------------------------
    def poll(self) -> Iterator[Segment]:
        """Read what is new; yield segments of whole lines (see ``LineSplitter``)."""
        if not self._started:
            self._started = True
            if self.read_from is ReadFrom.END:
                self._record_present()
                if not os.path.exists(self.path):  # one that comes is read whole
                    self.read_from = ReadFrom.BEGINNING
        if self._src is not None and not self._intact():
            self._cut_from_under()
        if self._entry is not None and self._src is None and not (yield from self._find_moved()):
            return
        if not self._path_unread():  # (its first lines wait for the rotated files: below)
            yield from self._drain()
        if self._next.truncated is not None:  # a copy finished: the truncated file from its start
            kind = self._next.kind or "copytruncate"
            # first what only a rotated file holds now and was written before what the truncated
            # file holds (another copytruncate while we waited for the first copy)
            if not (
                yield from self._catch_up(before=os.fstat(self._next.truncated.fd).st_mtime_ns)
            ):
                return
            self._take(self._next.truncated, kind)
            self._next.truncated = None
            yield from self._drain()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if not self._seen.missing and self._src is not None:
                log.info("log file gone, waiting for it", path=self.path)
            self._seen.missing = True
            if self._src is None:
                self._report(FileNotFoundError(2, "No such file or directory", self.path))
            return
        except OSError as err:
            self._report(err)
            return
        if not stat_mod.S_ISREG(st.st_mode):
            self._report(NotRegularFile(f"{self.path} is {kind_of(st.st_mode)}"))
            return
        self.stats.size = st.st_size
        src = self._src
        if src is not None and (src.dev, src.ino) == (st.st_dev, st.st_ino):
            if self._entry is None or self._entry.known:
                return  # still the file at the path
            # still nothing read of the path's file: the writer may not have reopened yet after
            # a rotation (the rotated file it writes to was not held: a first start, a restart),
            # so a rotated file that changes is read first, before the path's first lines
            if self._seen.caught_up_to == (st.st_dev, st.st_ino, self.files.signature()):
                yield from self._drain()
                return
        else:
            yield from self._drain()  # what the writer added to the old file before it reopened
        # once per new file at the path and change among the rotated names (not by inode alone:
        # a deleted file's inode is soon another's)
        behind = (st.st_dev, st.st_ino, self.files.signature())
        if self._seen.caught_up_to != behind:
            if not (yield from self._catch_up()):
                return
            self._seen.caught_up_to = behind
        if self._src is not None and st.st_size == 0:
            return  # the writer may still write to the last file, renamed or deleted
        if self._src is None or (self._src.dev, self._src.ino) != (st.st_dev, st.st_ino):
            self._take_path()  # (unless it is the path's file, held since before)
        yield from self._drain()

    def close(self) -> None:
        for src in (self._src, self._next.truncated):
            if src is not None:
                src.close()
        self._src = self._next.truncated = None

    # --- the steps of a poll --------------------------------------------------------------
    def _record_present(self) -> None:
        """First start, from the end: the rotated files present now are recorded as read."""
        for p in sorted(self.files.rotated(), key=lambda p: (p.compressed, p.name)):
            if p.head is None:
                self._known.undecodable.add((p.dev, p.ino, p.size))
                continue
            try:
                src = open_source(p.name)
                crc = read_prefix(src)  # all of it: what tells it from a file that begins alike
            except DECODE_ERRORS:
                continue
            try:
                assert crc is not None
                if any(e.offset == src.offset and self._holds(p, e) for e in self._alike(p)):
                    continue  # the same content under two names (a .gz and its original)
                entry = Entry(done=src.complete)  # a .gz cannot grow: passed over to its end
                entry.mark(src.head(), src.offset, crc, src.tail(), p.dev, p.ino)
                self.ledger.add(entry)
            finally:
                src.close()

    def _path_unread(self) -> bool:
        """Whether the file held is the path's, with nothing read of it yet: a rotated file its
        writer still adds to (not reopened yet) holds older lines than its first ones."""
        src, entry = self._src, self._entry
        if src is None or entry is None or entry.known:
            return False
        try:
            st = os.stat(self.path)
        except OSError:
            return False
        return (src.dev, src.ino) == (st.st_dev, st.st_ino)

    def _intact(self) -> bool:
        """Whether the open file still holds the content read so far (no truncation)."""
        src, entry = self._src, self._entry
        if not isinstance(src, PlainSource) or entry is None:
            return True
        try:
            return (
                src.size() >= src.offset
                and entry.tail_is(src.tail())
                and (not entry.known or entry.matches(src.read_at(0, entry.head_len)))
            )
        except OSError:
            return True

    def _cut_from_under(self) -> None:
        """The open file was truncated: its content, if anywhere, is in a copy now. The file
        itself is read from its start once the copy is done (``_after``)."""
        assert isinstance(self._src, PlainSource)
        self._next.truncated = self._src.dup()
        self._next.truncated.offset = 0
        self._src.close()
        self._src = None
        self._next.kind = "copytruncate"

    def _find_moved(self) -> Reading:
        """The content being read has no file open (a restart, a truncation): find it at the path
        or among the rotated names and read on from its offset; wait ``copy_wait`` for it."""
        entry = self._entry
        assert entry is not None
        if not entry.known:
            self._forget_unread(entry)
            return True
        rotated = self.files.rotated()
        found = self._holder(entry, rotated)
        if found is None:
            if not self._wait_over([(p.name, p.size) for p in rotated]):
                return False
            self._entry = None
            if self._next.truncated is not None:
                log.warning("log truncated, no copy found: reading from its start", path=self.path)
                self.splitter.reset()  # its end was lost with what the truncation took
                self._next.kind = "truncate"
            else:  # the file is gone; no copy holds more than was read: its content ended
                # there, and a held partial line is ended by the writer's next bytes
                log.warning(
                    "checkpointed file not found, reading the current file from its start",
                    path=self.path,
                )
                self._next.kind = "recreate"
            return True
        self._wait = None
        if found.name != self.path or self._next.truncated is not None:
            log.info("finishing the file under another name", path=self.path, name=found.name)
        self._src = found
        yield from self._drain()
        return True

    def _forget_unread(self, entry: Entry) -> None:
        """The checkpointed file had nothing read of it (it was empty): there is nothing to find
        it by and nothing to finish. Followed on as after any rotation: the rotated files with
        unread content first (its own among them, if it has some now), then the path's file once
        it has data. A rotation is counted when the path names another file now."""
        self._entry = None
        try:
            st = os.stat(self.path)
            here: Optional[tuple[int, int]] = (st.st_dev, st.st_ino)
        except OSError:
            here = None
        own = (entry.dev, entry.ino)
        if here != own:
            self._next.kind = "rename" if own in self.files.inodes() else "recreate"

    def _holder(self, entry: Entry, rotated: list[Look]) -> Optional[Source]:
        """A file that holds ``entry``'s content to its offset (``_is_its``), opened there: the
        path and the ``rotated`` files, the entry's own file first, then plain before
        compressed, older before newer."""
        looks = [p for p in [self.files.here(), *rotated] if p is not None]
        own = (entry.dev, entry.ino)
        looks.sort(key=lambda p: ((p.dev, p.ino) != own, p.mtime_ns, p.compressed))
        for p in looks:
            if p.head is not None and entry.matches(p.head) and self._is_its(p, entry, rotated):
                src = self._proof(p, entry)
                if src is None:
                    continue
                if (p.dev, p.ino) == own and not p.compressed:
                    longer = self._longer_copy(entry, p, looks)
                    if longer is not None:
                        src.close()
                        return longer
                return src
        return None

    def _longer_copy(self, entry: Entry, own: Look, looks: list[Look]) -> Optional[Source]:
        """A complete compressed file that holds ``entry`` and more than its own file ``own``
        does, opened at the entry's offset; else None. A compressor copies its original as it
        was, and an original only grows: its own file holds less than its copy only when it is
        not its original any more (its inode given to a new file that begins alike, or truncated
        and written again with the same first bytes). The copy is then the content, and the file
        at ``own``'s name another content. A copy that holds another content read further is
        that content's."""
        for q in looks:
            if not q.compressed or q.head is None or not entry.matches(q.head):
                continue
            length = self._length(q)
            if length is None or not length[1] or length[0] <= own.size:
                continue
            if any(e.offset > entry.offset and self._holds(q, e) for e in self._alike(q)):
                continue
            src = self._proof(q, entry)
            if src is not None:
                log.info(
                    "the checkpointed file's inode holds less than its compressed copy: "
                    "reading on in the copy",
                    path=self.path,
                    name=q.name,
                )
                return src
        return None

    def _catch_up(self, before: Optional[int] = None) -> Reading:
        """Before the path's new file: the rotated files with unread content, oldest first."""
        if self._compressor_writing():
            return False
        todo, pending = self._unread()
        if before is not None:  # only what was written before (by modification time)
            todo = [(p, e) for p, e in todo if p.mtime_ns <= before]
        if pending:
            if not self._wait_over(pending):
                return False
            self._known.undecodable |= pending  # waited in vain: not again (a compressor that died)
        self._wait = None
        for p, entry in todo:
            held = self._proof(p, entry) if entry is not None else None
            if entry is not None and held is not None:
                log.info("reading on in a rotated file", path=self.path, rotated=p.name)
                self._hold(held, entry)
            elif entry is not None:
                continue  # changed since it was looked at: the next look tells
            else:
                try:
                    new = open_source(p.name)
                except OSError as err:
                    self._report(err)
                    continue
                log.info("reading a rotated file not read before", path=self.path, rotated=p.name)
                self._take(new, "rename")
            yield from self._drain()
            if self._compressor_writing():
                return False
        return True

    def _compressor_writing(self) -> bool:
        """Whether the file held is compressed and still being written: its rest comes before
        any newer file, so the follower waits for it as long as it grows. A wait in vain is
        reported, and what it holds is all that is read of it."""
        src = self._src
        if src is None or not src.compressed or src.complete:
            return False
        if not self._wait_over(src.size()):
            return True
        self._report_incomplete()
        return False

    def _unread(self) -> tuple[list[tuple[Look, Optional[Entry]]], set[tuple[int, int, int]]]:
        """The rotated files with content not read yet, oldest first (by modification time: only
        the order of files that are all read), each content once, plain before its ``.gz``; and
        the compressed files that cannot be told yet (their start not decodable), not waited for
        before."""
        src = self._src
        held = {
            (f.dev, f.ino) for f in (src, self._next.truncated) if f is not None
        }  # read now or next
        looks = self.files.rotated()
        self.ledger.prune(looks, self._entry)
        todo: dict[object, tuple[Look, Optional[Entry]]] = {}
        pending: set[tuple[int, int, int]] = set()
        new: list[Look] = []
        claimed: dict[int, Look] = {}  # entry -> the oldest file that holds it
        for p in sorted(looks, key=lambda p: (p.mtime_ns, p.compressed, p.name)):
            if (p.dev, p.ino) in held:
                continue
            if p.head is None:
                if (p.dev, p.ino, p.size) not in self._known.undecodable:
                    pending.add((p.dev, p.ino, p.size))
                continue
            alike = self._alike(p)
            entry = next((e for e in alike if self._is_its(p, e, looks)), None)
            if entry is not None and self._grew_past_copy(p, entry):
                self.ledger.entries.remove(entry)
                alike = [e for e in alike if e is not entry]
                entry = next((e for e in alike if self._is_its(p, e, looks)), None)
            first = claimed.setdefault(id(entry), p) if entry is not None else p
            if first is not p:  # an older file holds it too: the same content, or another
                # one content (one begins with all of the other), or a file gone since the look
                # (a compressor done with its original: None): the next look tells
                if self._starts(p, first) is not False or self._starts(first, p) is not False:
                    continue
                entry, alike = None, []
            if entry is None and alike:
                told = self._tell_apart(p, alike, looks)
                if told is None:  # too short to tell yet: wait while it grows
                    if (p.dev, p.ino, p.size) not in self._known.undecodable:
                        pending.add((p.dev, p.ino, p.size))
                    continue
                if told:
                    continue  # a shorter copy of a content read: nothing in it is new
            after = self._next.truncated
            if entry is None and p.compressed and after is not None and self._starts_in(p, after):
                continue  # the truncated file's own .gz: the same content, read from it next
            if entry is None:
                twins = ((q, self._one_content(p, q)) for q in new)
                twin, whole = next(((q, w) for q, w in twins if w is not None), (None, None))
                if twin is None:
                    new.append(p)
                    todo[(p.dev, p.ino)] = (p, None)
                elif whole is p:  # it holds all of the content its twin holds part of
                    new[new.index(twin)] = p
                    del todo[(twin.dev, twin.ino)]
                    todo[(p.dev, p.ino)] = (p, None)
            elif (
                entry is not self._entry
                and not entry.done
                and id(entry) not in todo
                and self._has_more(p, entry)
            ):
                todo[id(entry)] = (p, entry)
        return sorted(todo.values(), key=lambda t: (t[0].mtime_ns, t[0].name)), pending

    @staticmethod
    def _grew_past_copy(p: Look, entry: Entry) -> bool:
        """Whether ``p`` is a plain file remembered as a shorter copy (``_shorter_copy``: the
        only done entries of plain files) that has grown since: a copy does not grow, so it was
        a new file still being written that began like the content, read whole now."""
        own = (p.dev, p.ino) == (entry.dev, entry.ino)
        return own and entry.done and not p.compressed and p.size > entry.offset

    def _has_more(self, p: Look, entry: Entry) -> bool:
        """Whether the file of ``p`` holds more of ``entry`` than was read; a complete ``.gz``
        that holds no more makes the entry done."""
        if not p.compressed:
            return p.size > entry.offset
        try:
            src = open_source(p.name)
        except OSError:
            return False
        try:
            length = src.length() if isinstance(src, CompressedSource) else src.size()
            if src.complete and length <= entry.offset:
                entry.done = True
            return length > entry.offset
        except DECODE_ERRORS:
            return False
        finally:
            src.close()

    def _take_path(self) -> None:
        """Follow the path's file: from its position if the ledger knows it, else from its start
        (or its end, at the very first start without ``from_beginning``)."""
        try:
            src = open_source(self.path)
        except OSError as err:
            self._report(err)
            return
        if self._said.problem is not None:
            found = self._said.problem == "not_found"
            log.info("log file found" if found else "log file readable again", path=self.path)
            self._said.problem = None
        # the path's file taken before with nothing read of it (a rotated file came first): the
        # same new file again, not a second rotation
        for before in self.ledger.entries:
            if not before.known and (before.dev, before.ino) == (src.dev, src.ino):
                self._hold(src, before)
                self._next.kind = None
                return
        old = self._src
        kind = self._next.kind
        if old is not None:
            recreated = self._seen.missing and old.nlink() == 0
            kind = "recreate" if recreated else "rename"
        self._seen.missing = False
        here = self.files.here()
        alike = self._alike(here) if here is not None else []
        for entry in alike:
            if (
                here is None
                or entry is self._entry
                or not self._is_its(here, entry, self.files.rotated())
            ):
                continue
            held = self._proof(here, entry)
            if held is not None:
                src.close()
                self._hold(held, entry)
                return
        if alike and here is not None:
            self._say_alike(here)
        if self.read_from is ReadFrom.END:
            self._take(src, None)
            crc = read_prefix(src)  # to its end, which is where we start
            assert self._entry is not None and crc is not None
            self._entry.mark(src.head(), src.offset, crc, src.tail(), src.dev, src.ino)
            self.stats.offset = src.offset
            if src.offset and not src.tail().endswith(b"\n"):
                self.splitter.discarding = True  # we start mid-line: skip to the next line
            self.read_from = ReadFrom.BEGINNING
            return
        self._take(src, kind)

    def _take(self, src: Source, kind: Optional[str]) -> None:
        """Read ``src`` as a new content from its start (counted as a rotation of ``kind``)."""
        self._hold(src, self.ledger.add(Entry(dev=src.dev, ino=src.ino)))
        self._next.kind = None
        if kind is not None:
            log.info("log rotated", path=self.path, kind=kind)
            self.stats.rotations[kind] = self.stats.rotations.get(kind, 0) + 1

    def _hold(self, src: Source, entry: Entry) -> None:
        if self._src is not None and self._src is not src:
            self._src.close()
        self._src, self._entry = src, entry
        self.stats.offset = src.offset

    def _entry_mark(self, size: int) -> None:
        """The open entry moves past the ``size`` bytes just read into the buffer."""
        src, entry = self._src, self._entry
        if src is None or entry is None:
            return
        head = src.head() if entry.head_len < min(src.offset, HEAD_BYTES) else b""
        entry.advance(memoryview(self._buffer)[:size], head, src.tail(), src.dev, src.ino)
        self.stats.offset = src.offset

    def _drain(self) -> Iterator[Segment]:
        """Read the open file to its end, yielding segments of whole lines."""
        src = self._src
        if src is None:
            return
        while True:
            try:
                size = src.read(self._buffer)
            except DECODE_ERRORS as err:
                self._report(err)
                return
            if not size:
                return
            self._entry_mark(size)
            self.stats.bytes_read += size
            self.stats.last_read = self._clock()
            segments = self.splitter.feed(self._buffer, size)
            last = len(segments) - 1
            for i, segment in enumerate(segments):
                self.settled = i == last
                yield segment

    # --- telling contents apart -----------------------------------------------------------
    def _alike(self, p: Look) -> list[Entry]:
        """The entries ``p`` may hold: those whose head it begins with. Only candidates."""
        return self.ledger.candidates(p.head) if p.head else []

    def _proof(self, p: Look, entry: Entry) -> Optional[Source]:
        """``p``'s file opened at ``entry``'s offset when its first ``offset`` bytes are the
        entry's (all of them read and compared, ``Entry.proven``); else None. Remembered per
        file state, so a file that does not change is read for it once."""
        try:
            src = open_source(p.name)
        except OSError:
            return None
        try:
            st = os.fstat(src.fd)
            key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, *entry.fingerprint())
            known = self._known.proofs.get(key)
            if known is None:
                crc = read_prefix(src, entry.offset)
                known = crc is not None and entry.proven(src.head(), crc, src.tail())
                if len(self._known.proofs) > 4096:
                    self._known.proofs.clear()
                self._known.proofs[key] = known
            elif known:
                known = src.seek(entry.offset)
            if known:
                return src
        except DECODE_ERRORS:
            pass
        src.close()
        return None

    def _holds(self, p: Look, entry: Entry) -> bool:
        src = self._proof(p, entry)
        if src is None:
            return False
        src.close()
        return True

    def _is_its(self, p: Look, entry: Entry, looks: list[Look]) -> bool:
        """Whether ``p`` holds ``entry``: all of its first ``offset`` bytes are the entry's, and
        it is the entry's own file, or a copy of it: its whole content the start of that file
        (a compressor writing or done), or that file exists and holds the entry no more
        (copytruncate's copy), or that file is gone and ``p`` is compressed (a compressor
        removes the original). A plain file of another inode while the entry's own file is
        gone is another content that merely begins with all of it (a run cut twice)."""
        if not self._holds(p, entry):
            return False
        own = (entry.dev, entry.ino)
        if (p.dev, p.ino) == own:
            return True
        held = self._src
        if held is not None and (held.dev, held.ino) == own:
            if entry is not self._entry:
                return True  # its own file, open, holds another content now (truncated)
            if isinstance(held, PlainSource):
                return self._starts_in(p, held)  # its own file, open
        after = self._next.truncated
        if after is not None and (after.dev, after.ino) == own:
            return True  # its own file was truncated under us: the content lives on in p
        for q in [self.files.here(), *looks]:
            if q is None or (q.dev, q.ino) != own or q.name == p.name:
                continue
            if self._holds(q, entry):
                return self._starts(p, q) is True
            # its own file holds it no more: truncated, the content lives on in p
            return p.compressed or self._copied_before(p, q.mtime_ns)
        # its own file, emptied (an empty file shows in no look), or gone: a copy is a rotated
        # file; the path's file of another inode is newer content that begins with all of it
        if p.compressed:
            return True
        truncated = self.files.inodes().get(own)
        if truncated is not None:
            return self._copied_before(p, truncated)
        return p.name != self.path

    @staticmethod
    def _copied_before(p: Look, truncated: int) -> bool:
        """Whether the plain ``p`` may be copytruncate's copy of a file that holds its content
        no more, modified last at ``truncated``: a copy is written before its original is
        truncated (the truncation is a change of the original), so a file written after it is
        another content. Modification times only ever rule a copy out."""
        return p.mtime_ns <= truncated

    def _starts(self, p: Look, q: Look) -> Optional[bool]:
        """Whether all of ``p``'s content is the start of ``q``'s; None when it cannot be read."""
        try:
            mine, theirs = open_source(p.name), open_source(q.name)
        except OSError:
            return None
        try:
            crc = read_prefix(mine)  # to its end now: a compressor may still be writing it
            return crc is not None and read_prefix(theirs, mine.offset) == crc
        except DECODE_ERRORS:
            return None
        finally:
            mine.close()
            theirs.close()

    def _starts_in(self, p: Look, held: PlainSource) -> bool:
        """Whether all of ``p``'s content is the start of the file ``held`` open."""
        try:
            mine = open_source(p.name)
        except OSError:
            return False
        try:
            crc = read_prefix(mine)
            n = mine.offset
        except DECODE_ERRORS:
            return False
        finally:
            mine.close()
        theirs, at = 0, 0
        while at < n:
            data = held.read_at(at, min(1 << 20, n - at))
            if not data:
                return False
            theirs = zlib.crc32(data, theirs)
            at += len(data)
        return crc == theirs

    def _tell_apart(self, p: Look, alike: list[Entry], looks: list[Look]) -> Optional[bool]:
        """``p`` begins like ``alike`` but holds none of them. True when it is a shorter copy of
        one: its whole content the start of that content, shown by the last bytes read of it
        (``Entry.prefix_crc``: a compressor or copytruncate racing the writer leaves out only
        the writer's last lines) or by a file that still holds it. A plain copy is only ever
        made of a file that lives on (copytruncate's). False when it is another content. None
        while it cannot be told yet: a compressor still writing it, or not readable now (waited
        for)."""
        content = self._content(p)
        if content is None:
            return None
        crc, size, complete = content
        others = [q for q in looks if q.name != p.name]
        undecided = False
        for entry in (e for e in alike if size < e.offset):
            own = self._own_mtime(entry, p)
            if not p.compressed and own is None:
                continue  # a plain copy is only ever made of a file that lives on
            known = entry.prefix_crc(size)
            if known is not None and known != crc:
                continue  # not the start of this content, nor will it be as it grows
            holder = self._holder(entry, others)
            name = holder.name if holder is not None else None
            if holder is not None:
                holder.close()
            # p cannot change (so it is remembered as a copy once shown one) when it is a
            # complete compressed file, or a plain copy whose original holds the content no
            # more (copytruncate truncated it): a plain file that begins like a file still
            # holding the content may be a copy on its way, or a new file still being written
            final = complete if p.compressed else name is None
            if not p.compressed and final and own is not None and not self._copied_before(p, own):
                continue  # written after its original was truncated: not its copy
            if known is not None:
                return self._shorter_copy(p, entry, size, final)
            if name is None:
                undecided = undecided or (p.compressed and not complete)  # may grow into it
                continue
            found = next((q for q in [self.files.here(), *others] if q and q.name == name), None)
            starts = self._starts(p, found) if found is not None else None
            if starts is None:
                return None
            if starts:
                return self._shorter_copy(p, entry, size, final)
        if undecided:
            return None
        if any(size >= e.offset and self._is_its(p, e, looks) for e in alike):
            return None  # a compressor finished it since it was looked at: look again
        self._say_alike(p, size=size, alike=[(e.offset, e.ino) for e in alike])
        return False

    def _own_mtime(self, entry: Entry, p: Look) -> Optional[int]:
        """The modification time of ``entry``'s own file when it is still there under a name
        (a file held open after its last name went does not count), and is not ``p``."""
        own = (entry.dev, entry.ino)
        return None if own == (p.dev, p.ino) else self.files.inodes().get(own)

    def _shorter_copy(self, p: Look, entry: Entry, size: int, final: bool) -> bool:
        """``p`` is shown to be the start of ``entry``'s content: nothing in it is new. When it
        cannot change (``final``) it is recorded as a content passed over, so that it is known
        without the entry's last bytes (kept only for the newest entries) or a file that holds
        it."""
        self._say_alike(p, size=size, copy_of=(entry.offset, entry.ino))
        if not final:
            return True
        try:
            src = open_source(p.name)
        except OSError:
            return True
        try:
            crc = read_prefix(src, size)
            if crc is not None and not any(
                e.offset == size and e.crc == crc for e in self._alike(p)
            ):
                copy = Entry(done=True)
                copy.mark(src.head(), size, crc, src.tail(), src.dev, src.ino)
                self.ledger.add(copy)
        except DECODE_ERRORS:
            pass
        finally:
            src.close()
        return True

    def _say_alike(self, p: Look, **context: object) -> None:
        """Log and count, once per file, one that begins like a known content but is none."""
        if (p.dev, p.ino) in self._said.alike:
            return
        self._said.alike.add((p.dev, p.ino))
        self.stats.equal_heads += 1
        log.info(
            "file begins like another content, telling them apart",
            name=p.name,
            ino=p.ino,
            **context,
        )

    def _content(self, p: Look) -> Optional[tuple[int, int, bool]]:
        """The CRC-32 of all of ``p``'s content now, its length, and whether it is complete (a
        compressed file whose end was reached); None when it cannot be read."""
        try:
            src = open_source(p.name)
        except OSError:
            return None
        try:
            crc = read_prefix(src)
            assert crc is not None  # to its end: never short
            return crc, src.offset, src.complete
        except DECODE_ERRORS:
            return None
        finally:
            src.close()

    def _length(self, p: Look) -> Optional[tuple[int, bool]]:
        """The content length of ``p``'s file now, and whether it is complete (a compressed
        file whose end was reached); None when it cannot be read."""
        try:
            src = open_source(p.name)
        except OSError:
            return None
        try:
            if isinstance(src, PlainSource):
                return src.size(), False
            return src.length(), src.complete
        except DECODE_ERRORS:
            return None
        finally:
            src.close()

    def _one_content(self, p: Look, q: Look) -> Optional[Look]:
        """Of two files not read before that hold one content, the one that holds all of it
        (the longer; the plain one when as long); None when they are two contents. One content:
        a compressed file and another whose content starts the same (a ``.gz`` and its
        original: the compressor may still be writing, or its copy lacks the writer's last
        lines). Two plain files are two contents: a plain copy is only ever made of a file that
        is then truncated (copytruncate), and each is read."""
        if p.head is None or q.head is None or not (p.compressed or q.compressed):
            return None
        n = min(len(p.head), len(q.head))
        if p.head[:n] != q.head[:n]:
            return None
        lp, lq = self._length(p), self._length(q)
        if lp is None or lq is None:
            return None
        short, long = (p, q) if (lp[0], not p.compressed) <= (lq[0], not q.compressed) else (q, p)
        return long if self._starts(short, long) is True else None

    # --- looking around -------------------------------------------------------------------
    def _wait_over(self, progress: object) -> bool:
        """Whether ``copy_wait`` has passed since the current wait began (starting it if not) or
        since ``progress`` (the sizes of the files waited for) last changed: a copy or a
        compressor that is still writing is waited for as long as it writes."""
        now = self._clock()
        if self._wait is None or progress != self._wait.progress:
            self._wait = Wait(now, progress)
        if now - self._wait.since < self.copy_wait:
            return False
        self._wait = None
        return True

    def _report_incomplete(self) -> None:
        entry = self._entry
        if entry is None or id(entry) in self._said.incomplete:
            return
        self._said.incomplete.add(id(entry))
        name = self._src.name if self._src is not None else "?"
        self.stats.read_errors["compressed_file_incomplete"] = (
            self.stats.read_errors.get("compressed_file_incomplete", 0) + 1
        )
        log.warning("compressed file ends early, read as far as it goes", path=self.path, name=name)

    def _report(self, err: BaseException) -> None:
        """Count an open/read error; log it once per episode, not at every poll."""
        if isinstance(err, FileNotFoundError):
            kind = "not_found"
        elif isinstance(err, PermissionError):
            kind = "permission_denied"
        elif isinstance(err, NotRegularFile):
            kind = "not_a_regular_file"
        elif isinstance(err, OSError) and err.errno is not None:
            kind = os.strerror(err.errno).lower().replace(" ", "_")[:40]
        else:
            kind = type(err).__name__.lower()
        if kind == self._said.problem:
            return
        self._said.problem = kind
        if kind == "not_found":
            log.info("waiting for log file", path=self.path)
            return
        self.stats.read_errors[kind] = self.stats.read_errors.get(kind, 0) + 1
        log.warning("cannot read log file", path=self.path, error=kind, detail=str(err))
