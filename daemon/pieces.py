"""Reading one piece of ``scan``'s input: a range of a file (or a whole gzip file, or standard
input) through the pipeline, with its look-back muted; what it counted.

Run in ``scan``'s own process or in a worker of its pool (``daemon/scan.py`` cuts the pieces and
merges what they counted).
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
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, BinaryIO, Callable, Optional, cast

from .correlate import Correlator
from .counts import FileStats
from .events import Failure
from .lines import Buffer, LineSplitter
from .parse import Parser
from .pipeline import LogPipeline
from .search import pure_python

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
        labels = failure[:7]  # org, env, api, rev, target, reason, key_alias
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
    parser = Parser(options.tz)
    tally = Tally(options)
    with _open(piece, raw, options) as (stream, position):
        base = 0
        record = None  # the record line in force where the piece starts
        if piece.lookback < piece.start:
            back = FileStats()
            muted = LogPipeline(
                back, LineSplitter(options.max_line_bytes, back), parser, correlator, []
            )
            _feed(stream, muted, piece.start - piece.lookback, None)
            correlator.unpaired = correlator.orphans = 0
            base = stats.lines = back.lines
            record = muted.record
        splitter = LineSplitter(options.max_line_bytes, stats)
        pipeline = LogPipeline(stats, splitter, parser, correlator, [tally.record])
        pipeline.record = record
        limit = None if piece.end is None else piece.end - piece.start
        _feed(stream, pipeline, limit, lambda: report(position()))
        if piece.last:
            if splitter.partial:  # the last line has no newline: it is a line all the same
                for segment in splitter.feed(b"\n"):
                    pipeline.process(*segment)
            pipeline.finish()
    stats.lines -= base
    return Partial(stats, correlator.unpaired, correlator.orphans, tally.series, tally.minutes)


def _feed(
    stream: BinaryIO,
    pipeline: LogPipeline,
    limit: Optional[int],
    on_read: Optional[Callable[[], None]],
) -> None:
    """Reads ``limit`` bytes (None: to the end) into the pipeline. (A read may end inside a
    stack trace: the pipeline keeps the record line in force for the lines after it.)"""
    stats, splitter = pipeline.stats, pipeline.splitter
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


RECORD_LINES = 256  # how far up (in lines) a continuation line's record line is looked for


def is_record(buf: Buffer, line: int) -> bool:
    """Whether the line starting at ``line`` is a record's first line: it begins with the
    timestamp's digit; a continuation line (``\tat ...``, an exception class) does not."""
    return 48 <= buf[line] <= 57


_GZIP_ERRORS: tuple[type[BaseException], ...] = (EOFError, zlib.error, gzip.BadGzipFile)
Opener = Callable[[BinaryIO], BinaryIO]


@functools.cache
def inflaters() -> tuple[str, Optional[Opener], Optional[Opener], tuple[type[BaseException], ...]]:
    """The fastest gzip reader installed: ``isal``, then ``zlib-ng`` (the extras), else zlib.

    (name, plain reader, reader that inflates in a thread of its own, the errors they raise);
    the readers are None for zlib, which ``gzip.GzipFile`` reads.
    """
    if not pure_python():
        # imported by name: the extras are optional, and typed differently from one to the other
        for name, plain, threaded, library in (
            ("isal", "isal.igzip", "isal.igzip_threaded", "isal.isal_zlib"),
            ("zlib-ng", "zlib_ng.gzip_ng", "zlib_ng.gzip_ng_threaded", "zlib_ng.zlib_ng"),
        ):
            try:
                single: Any = importlib.import_module(plain)
                inthread: Any = importlib.import_module(threaded)
                errors: Any = importlib.import_module(library).error
            except ImportError:
                continue
            return (
                name,
                lambda raw, m=single: cast(BinaryIO, m.open(raw, "rb")),
                lambda raw, m=inthread: cast(BinaryIO, m.open(raw, "rb", threads=1)),
                (*_GZIP_ERRORS, errors),
            )
    return "zlib", None, None, _GZIP_ERRORS


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
        if magic == b"\x1f\x8b":
            opener = threaded if options.threaded_inflate else single
            if opener is None:
                stream = cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
            else:
                stream = opener(raw)
            stack.callback(stream.close)
        elif piece.lookback:
            raw.seek(piece.lookback)
        seen = [piece.start if magic != b"\x1f\x8b" else 0]

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
