"""Reading one piece of ``scan``'s input: a range of a file (of a plain file, of the inflated
stream of a gzip file, or standard input) through the pipeline, with its look-back muted; what it
counted. And the few helpers that find record lines in a seekable file, and ``Rewindable``, which
makes an inflating reader seekable like one.

Run in ``scan``'s own process or in a worker of its pool (``daemon/scan/plan.py`` cuts the pieces
and merges what they counted).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gzip
import importlib
import io
import os
import zlib
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, BinaryIO, Callable, Optional, cast

from ..follow.logfile import GZIP_MAGIC
from ..records.correlate import Correlator
from ..records.events import Failure
from ..records.head import RecordHead
from ..records.lines import Buffer, LineSplitter
from ..records.parse import RECORD_LINES, Parser
from ..records.pipeline import LogPipeline
from ..records.search import compiled_parts, say_fallback
from ..records.stats import FileStats
from ..state.counts import failure_labels

Labels = tuple[str, ...]
READ_BYTES = 1 << 20


@dataclass(frozen=True)
class Options:
    """What every piece is read with."""

    tz: Optional[tzinfo] = None
    max_line_bytes: int = 1 << 20
    window_lines: int = 1000
    since: Optional[float] = None  # count failures logged at or after (epoch seconds)
    until: Optional[float] = None  # ... and before
    timeline: bool = False
    threaded_inflate: bool = False  # decompress in a thread beside the scan (jobs > 1)
    record_head: Optional[str] = None  # a site's own record head pattern (None: the built-in)


@dataclass(frozen=True)
class Piece:
    """A range of one input: read from ``lookback`` (muted) then ``start`` to ``end``."""

    file: int  # index of the input
    path: str
    start: int = 0
    end: Optional[int] = None  # None: to the end
    lookback: int = 0  # == start: no look-back
    last: bool = True  # the input's last piece: every window closes at its end
    length: int = 0  # bytes on disk, to read the biggest pieces first
    stream: bool = False  # standard input, a pipe: read here, from the handle already open
    # A piece of a gzip file cut in several: the file's inflated size as estimated. ``start`` and
    # ``end`` are then offsets in the inflated stream, which the reader moves to the next record
    # line; it finds the look-back itself (``lookback`` is not used).
    inflated_size: Optional[int] = None


@dataclass
class Partial:
    """What one piece counted. ``series``: label set -> [failures, last timestamp], in the
    order each label set's first failure was counted."""

    stats: FileStats
    unpaired: int = 0
    orphans: int = 0
    series: dict[Labels, list[float]] = field(default_factory=dict)
    minutes: dict[Labels, Counter[int]] = field(default_factory=dict)


class Tally:
    """The sink of a piece: failures by label set, in first-counted order; the time filter."""

    def __init__(self, options: Options) -> None:
        self.since = options.since
        self.until = options.until
        self.timeline = options.timeline
        self.series: dict[Labels, list[float]] = {}
        self.minutes: dict[Labels, Counter[int]] = {}

    def record(self, failure: Failure) -> None:
        ts = failure.timestamp
        if (self.since is not None and ts < self.since) or (
            self.until is not None and ts >= self.until
        ):
            return
        labels = failure_labels(failure)
        entry = self.series.get(labels)
        if entry is None:
            self.series[labels] = [1.0, ts]
        else:
            entry[0] += 1
            if ts > entry[1]:
                entry[1] = ts
        if self.timeline:
            minutes = self.minutes.get(labels)
            if minutes is None:
                minutes = self.minutes[labels] = Counter()
            minutes[int(ts // 60)] += 1


def scan_piece(
    piece: Piece, options: Options, report: Callable[[int], None], raw: Optional[BinaryIO] = None
) -> Partial:
    """Read one piece (``raw``: an open standard input); what it counted."""
    stats = FileStats()
    correlator = Correlator(options.window_lines, None)
    head = RecordHead(options.record_head)
    parser = Parser(options.tz, head)
    tally = Tally(options)
    with _open(piece, raw, options) as (stream, position):
        start, lookback, end, closes = piece.start, piece.lookback, piece.end, piece.last
        progress: Callable[[], None] = lambda: report(position())  # noqa: E731
        if piece.inflated_size is not None:
            rewindable = Rewindable(stream)
            stream = cast(BinaryIO, rewindable)
            start = record_at(stream, start, head)
            share = _Share(piece, start, stream, report)
            if rewindable.size is not None and start >= rewindable.size:
                share.finish()  # the file ends before this piece: the piece before closed it
                return Partial(stats)
            lookback = lookback_start(stream, start, LOOKBACK_WINDOWS * options.window_lines, head)
            stream.seek(lookback)
            progress = share
        base = 0
        splitter = LineSplitter(options.max_line_bytes, stats)
        pipeline = LogPipeline(stats, parser, correlator, [tally.record])
        if lookback < start:
            back = FileStats()
            muted = LogPipeline(back, parser, correlator, [])
            _feed(stream, muted, LineSplitter(options.max_line_bytes, back), start - lookback, None)
            correlator.unpaired = correlator.orphans = 0
            base = stats.lines = back.lines
            # the record line in force where the piece starts
            pipeline.record, pipeline.record_number = muted.record, muted.record_number
        if end is not None and piece.inflated_size is not None:
            # Read to just before the end as planned, then on to the record line at or after it
            # (the next piece starts there: it finds the same line), or to the end of the file,
            # which this piece then closes (an inflated size estimated too large).
            _feed(stream, pipeline, splitter, max(0, end - 1 - start), progress)
            start = stream.tell()
            end = record_at(stream, end, head)
            size = rewindable.size
            if size is not None and end >= size:
                end, closes = size, True
            stream.seek(start)
        _feed(stream, pipeline, splitter, None if end is None else end - start, progress)
        if closes:
            if splitter.partial:  # the last line has no newline: it is a line all the same
                for segment in splitter.feed(b"\n"):
                    pipeline.process(*segment)
            pipeline.finish()
        if piece.inflated_size is not None:
            share.finish()
    stats.lines -= base
    return Partial(stats, correlator.unpaired, correlator.orphans, tally.series, tally.minutes)


class _Share:
    """Progress of a piece of a gzip file: its share of the file's bytes on disk (``length``),
    as far as it has read its range. (Every piece inflates the file from its start: the bytes
    on disk it went through would count the same bytes in several processes.)"""

    def __init__(
        self, piece: Piece, first: int, stream: BinaryIO, report: Callable[[int], None]
    ) -> None:
        self.piece, self.first, self.stream, self.report = piece, first, stream, report
        planned_end = piece.end if piece.end is not None else piece.inflated_size or 0
        self.span = max(1, planned_end - first)
        self.told = 0

    def __call__(self) -> None:
        read = self.stream.tell() - self.first
        self._tell(min(self.piece.length, self.piece.length * read // self.span))

    def finish(self) -> None:
        self._tell(self.piece.length)

    def _tell(self, share: int) -> None:
        if share > self.told:
            self.report(share - self.told)
            self.told = share


def _feed(
    stream: BinaryIO,
    pipeline: LogPipeline,
    splitter: LineSplitter,
    limit: Optional[int],
    on_read: Optional[Callable[[], None]],
) -> None:
    """Reads ``limit`` bytes (None: to the end) through ``splitter`` into the pipeline. (A read
    may end inside a stack trace: the pipeline keeps the record line in force for the lines after
    it.)"""
    stats = pipeline.stats
    buffer = bytearray(min(READ_BYTES, splitter.limit))
    view = memoryview(buffer)
    left = -1 if limit is None else limit
    while left:
        want = len(buffer) if left < 0 else min(left, len(buffer))
        size = stream.readinto(view[:want])  # type: ignore[attr-defined]
        if not size:
            break
        if left > 0:
            left -= size
        stats.bytes_read += size
        stats.offset += size
        for segment in splitter.feed(buffer, size):
            pipeline.process(*segment)
        if on_read is not None:
            on_read()


HEAD_BYTES = 4096  # how much of a line is read to tell whether it starts a record


def starts_record(head: RecordHead, buf: Buffer, line: int) -> bool:
    """Whether the line starting at ``buf[line]`` starts a record, as ``head`` (the pipeline's
    own) tells from its first ``HEAD_BYTES``: a continuation line (``\tat ...``, an exception
    class) does not. The pieces are cut, and look back, at the lines the pipeline reads as
    records."""
    newline = buf.find(b"\n", line, line + HEAD_BYTES)
    return head.is_record(buf[line : newline if newline >= 0 else line + HEAD_BYTES])


LOOKBACK_WINDOWS = 2  # how many pairing windows of lines a piece re-reads before its start


def _line_start_at(handle: BinaryIO, offset: int) -> int:
    """The first line start at or after ``offset``."""
    if offset <= 0:
        return 0
    handle.seek(offset - 1)
    at = offset - 1
    while True:
        block = handle.read(READ_BYTES)
        if not block:
            return at
        newline = block.find(b"\n")
        if newline >= 0:
            return at + newline + 1
        at += len(block)


def record_at(handle: BinaryIO, offset: int, head: RecordHead) -> int:
    """The first record line at or after ``offset`` (within ``RECORD_LINES`` lines; else the
    first line start): a piece starts with a record, never inside its stack trace."""
    first = _line_start_at(handle, offset)
    handle.seek(first)
    block = handle.read(READ_BYTES)
    line = 0
    for _ in range(RECORD_LINES):
        if line >= len(block):
            break
        if starts_record(head, block, line):
            return first + line
        newline = block.find(b"\n", line)
        if newline < 0:
            break
        line = newline + 1
    return first


def _record_back(handle: BinaryIO, offset: int, head: RecordHead) -> int:
    """The record line that the line at ``offset`` belongs to: itself when it is one, else the
    nearest record line within ``RECORD_LINES`` lines above it (however long they are), else
    ``offset``. A look-back starts there: with the record line in force for the lines below."""
    if offset == 0 or _record_here(handle, offset, head):
        return offset
    hi = offset - 1  # the lines above end at the newline at `hi`
    looked = 0
    while hi > 0 and looked < RECORD_LINES:
        lo = max(0, hi - READ_BYTES)
        handle.seek(lo)
        block = handle.read(hi - lo)
        end = len(block)
        while looked < RECORD_LINES:
            newline = block.rfind(b"\n", 0, end)
            if newline < 0 and lo > 0:
                break  # the line starts in a block further up
            looked += 1
            if _record_here(handle, lo + newline + 1, head):
                return lo + newline + 1
            if newline < 0:
                break  # the file's first line
            end = newline
        hi = lo
    return offset


def _record_here(handle: BinaryIO, at: int, head: RecordHead) -> bool:
    """Whether the line starting at ``at`` of the file starts a record."""
    handle.seek(at)
    return starts_record(head, handle.read(HEAD_BYTES), 0)


def lines_back(handle: BinaryIO, offset: int, lines: int) -> int:
    """The start of the line ``lines`` lines before the line that starts at ``offset``."""
    need = lines + 1  # the newline ending the line before `offset` comes first
    hi = offset
    while hi > 0:
        lo = max(0, hi - READ_BYTES)
        handle.seek(lo)
        block = handle.read(hi - lo)
        found = block.count(b"\n")
        if found < need:
            need -= found
            hi = lo
            continue
        at = len(block)
        for _ in range(need):
            at = block.rfind(b"\n", 0, at)
        return lo + at + 1
    return 0


def lookback_start(handle: BinaryIO, start: int, lines: int, head: RecordHead) -> int:
    """Where the look-back of a piece starting at ``start`` begins: ``lines`` lines before it,
    moved up to the start of that line's record."""
    return _record_back(handle, lines_back(handle, start, lines), head)


KEEP_BYTES = 16 << 20  # how far back a Rewindable seeks without inflating again from the start


class Rewindable:
    """A stream that reads only forward (an inflating gzip reader), seekable like a file: back
    over the last ``keep`` bytes read (kept), forward by reading on; further back, it reads again
    from the start (slow, and rare: a look-back longer than ``keep``)."""

    def __init__(self, stream: BinaryIO, keep: Optional[int] = None) -> None:
        self._stream = stream
        self._keep = KEEP_BYTES if keep is None else keep
        self._chunks: deque[bytes] = deque()  # the last bytes read, ending at `_end`
        self._kept = 0  # their length
        self._end = 0  # the offset of the stream's next byte
        self._at = 0  # the position
        self.size: Optional[int] = None  # the stream's length, once its end was read

    def tell(self) -> int:
        return self._at

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence != os.SEEK_SET or offset < 0:
            raise ValueError("Rewindable seeks to an offset from the start only")
        if offset < self._end - self._kept:
            self._stream.seek(0)  # a gzip reader starts over
            self._chunks.clear()
            self._kept = self._end = 0
        self._at = offset
        return offset

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        while size < 0 or len(out) < size:
            chunk = bytearray(READ_BYTES if size < 0 else size - len(out))
            got = self.readinto(chunk)
            if not got:
                break
            out += memoryview(chunk)[:got]
        return bytes(out)

    def readinto(self, buffer: Any) -> int:
        """Up to ``len(buffer)`` bytes at the position (fewer where a kept chunk ends)."""
        view = memoryview(buffer).cast("B")
        while self._at >= self._end:  # read on (past what is wanted too, when seeking forward)
            chunk = self._stream.read(max(len(view), READ_BYTES))
            if not chunk:
                self.size = self._end
                return 0
            self._chunks.append(chunk)
            self._kept += len(chunk)
            self._end += len(chunk)
            while self._kept - len(self._chunks[0]) >= self._keep:
                self._kept -= len(self._chunks.popleft())
        at = self._end  # find the kept chunk holding the position, from the newest back
        for chunk in reversed(self._chunks):
            at -= len(chunk)
            if at <= self._at:
                part = memoryview(chunk)[self._at - at : self._at - at + len(view)]
                view[: len(part)] = part
                self._at += len(part)
                return len(part)
        raise AssertionError("the position is within the kept chunks")


_GZIP_ERRORS: tuple[type[BaseException], ...] = (EOFError, zlib.error, gzip.BadGzipFile)
Opener = Callable[[BinaryIO], BinaryIO]


@functools.cache
def inflaters() -> tuple[str, Optional[Opener], Optional[Opener], tuple[type[BaseException], ...]]:
    """The gzip reader: ``isal`` when ``compiled_parts`` uses it, else zlib.

    (name, plain reader, reader that inflates in a thread of its own, the errors they raise);
    the readers are None for zlib, which ``gzip.GzipFile`` reads.
    """
    say_fallback()
    if compiled_parts()["isal"] is not None:
        return "zlib", None, None, _GZIP_ERRORS
    # imported by name: isal's modules are typed loosely
    single: Any = importlib.import_module("isal.igzip")
    inthread: Any = importlib.import_module("isal.igzip_threaded")
    errors: Any = importlib.import_module("isal.isal_zlib").error
    return (
        "isal",
        lambda raw: cast(BinaryIO, single.open(raw, "rb")),
        lambda raw: cast(BinaryIO, inthread.open(raw, "rb", threads=1)),
        (*_GZIP_ERRORS, errors),
    )


@contextlib.contextmanager
def _open(
    piece: Piece, raw: Optional[BinaryIO], options: Options
) -> Iterator[tuple[BinaryIO, Callable[[], int]]]:
    """The piece's bytes (decompressed), positioned at its look-back, and a progress reader:
    how many of the input's own bytes were consumed since the last call."""
    with contextlib.ExitStack() as stack:
        if raw is None:
            raw = cast(BinaryIO, stack.enter_context(open(piece.path, "rb", buffering=0)))
        elif not hasattr(raw, "peek"):
            raw = cast(BinaryIO, io.BufferedReader(cast(io.RawIOBase, raw)))
        name = "standard input" if piece.path == "-" else piece.path
        peek = getattr(raw, "peek", None)
        magic = peek(2)[:2] if piece.stream and peek else os.pread(raw.fileno(), 2, 0)
        stream: BinaryIO = raw
        _, single, threaded, errors = inflaters()
        if magic == GZIP_MAGIC:
            # a piece of a cut file seeks back: the threaded reader does not
            in_thread = options.threaded_inflate and piece.inflated_size is None
            opener = threaded if in_thread else single
            if opener is None:
                stream = cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
            else:
                stream = opener(raw)
            stack.callback(stream.close)
        elif piece.lookback:
            raw.seek(piece.lookback)
        seen = [piece.start if magic != GZIP_MAGIC else 0]

        def position() -> int:
            at = seen[0]
            with contextlib.suppress(OSError, ValueError):
                at = raw.tell()
            step, seen[0] = max(0, at - seen[0]), max(at, seen[0])
            return step

        try:
            yield stream, position
        except errors as err:
            raise OSError(errno.EIO, f"not a whole gzip file: {err}", name) from None
