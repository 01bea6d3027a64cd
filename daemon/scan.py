"""The one-shot wiring of ``scan``: read files from start to end, count, report; on every core.

Kept apart from ``app`` (the daemon) so that ``scan`` starts without importing the server, the
config models or the TLS libraries.

**Pieces.** The input is cut into pieces: a plain file larger than the piece size is cut at line
starts, a gzip file or standard input is one piece. Each piece is read by the same code, in this
process (``jobs=1``) or in a pool of worker processes, and gives a :class:`Partial`; the partials
are merged in input order. The result is the serial scan's, series by series:

- *Pairing across a cut.* Whether a failure pairs depends only on the ``window_lines`` lines
  before each event (a failure waits at most that many lines), so a piece is read from
  ``window_lines`` lines before its start (its look-back) with every count and failure muted:
  the correlator then holds exactly the failures the serial scan holds at the cut. A failure still
  waiting at the piece's end is the next piece's to close (it waits in that piece's look-back);
  only the file's last piece closes every window at its end.
- *The series bound.* The serial scan admits the first ``max_series`` label sets in the order
  their first failure is counted. A partial keeps its label sets in that order (a dict), and the
  merge replays them piece after piece: the same label sets are admitted, the same overflow.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gzip
import importlib
import io
import math
import multiprocessing
import os
import stat
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any, BinaryIO, Callable, Optional, cast

from prometheus_client import CollectorRegistry

from .correlate import Correlator
from .events import Failure
from .lines import Buffer, LineSplitter
from .metrics import OVERFLOW, ExporterCollector, FailureStore, FileStats, PairingStats
from .parse import Parser
from .pipeline import LogPipeline
from .search import pure_python

Labels = tuple[str, ...]
Progress = Callable[[int, int], None]
READ_BYTES = 1 << 20
MIN_PIECE_BYTES = 32 << 20


class ScanResult:
    """What a scan counted: the failure store, each file's health, the pairing counts.

    ``timeline``: failures by label set (as counted, ``other`` past the bound) and minute
    (epoch seconds // 60), when the scan was asked for it.
    """

    def __init__(
        self,
        store: FailureStore,
        files: dict[str, FileStats],
        pairing: PairingStats,
        timeline: Optional[dict[Labels, Counter[int]]] = None,
    ) -> None:
        self.store = store
        self.files = files
        self.pairing = pairing
        self.timeline = timeline if timeline is not None else {}

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=True)
        registry.register(
            ExporterCollector(
                self.store,
                lambda: self.files.items(),
                lambda: self.pairing,
                build_info=False,
            )
        )
        return registry


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


def default_jobs() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def scan(
    paths: list[str],
    *,
    tz: Optional[tzinfo] = None,
    max_series: int = 5000,
    max_line_bytes: int = 1 << 20,
    window_lines: int = 1000,
    stdin: Optional[BinaryIO] = None,
    progress: Optional[Progress] = None,
    jobs: int = 1,
    since: Optional[float] = None,
    until: Optional[float] = None,
    timeline: bool = False,
    piece_bytes: Optional[int] = None,
) -> ScanResult:
    """Read each file from its start to its end (``-`` is standard input) and count.

    Opening every file first means a missing one fails before any work. A gzip file (a rotated
    ``system.log.1.gz``) is read decompressed, known by its first bytes, as zgrep does; its
    health figures are those of the log inside. A gzip stream that ends early or is corrupt is an
    ``OSError``. Wall-time windows do not apply: the whole input is there, and the result must
    not depend on how fast it was read. ``jobs`` processes read the pieces (see the module's
    docstring); ``since``/``until`` count only failures logged within [since, until) (pairing and
    the health figures still see every line); ``timeline`` keeps failures by minute too.
    """
    options = Options(
        tz, max_line_bytes, window_lines, since, until, timeline, threaded_inflate=jobs > 1
    )
    with contextlib.ExitStack() as files_open:
        handles: list[BinaryIO] = []
        for path in paths:
            if path == "-":
                handles.append(stdin if stdin is not None else sys.stdin.buffer)
            else:
                handles.append(files_open.enter_context(open(path, "rb")))
        modes = [None if p == "-" else os.fstat(h.fileno()) for p, h in zip(paths, handles)]
        regular = [m is not None and stat.S_ISREG(m.st_mode) for m in modes]
        sizes = [m.st_size if m is not None and r else 0 for m, r in zip(modes, regular)]
        gzipped = [_is_gzip(h) for h in handles]
        pieces = plan(paths, regular, gzipped, sizes, jobs, piece_bytes, window_lines)
        total = sum(sizes)
        meter = _Meter(progress, total)
        in_process = [i for i, p in enumerate(pieces) if p.stream]
        partials: list[Optional[Partial]] = [None] * len(pieces)
        pooled = [i for i in range(len(pieces)) if i not in in_process]
        if jobs > 1 and len(pooled) > 1:
            futures = _submit(pieces, pooled, options, min(jobs, len(pooled)), meter)
        else:
            futures = {}
            in_process = list(range(len(pieces)))
        try:
            for i in in_process:
                piece = pieces[i]
                raw = handles[piece.file] if piece.stream else None
                partials[i] = scan_piece(piece, options, meter.add, raw)
            _collect(futures, partials, meter)
        except BaseException:  # an unreadable piece, Ctrl-C: stop the pool's work at once
            # (terminated, not cancelled: the pool marks its futures broken, which a cancelled
            # future would turn into an error of its own on Python 3.11)
            if futures:
                for child in multiprocessing.active_children():
                    child.terminate()
            raise
    return merge(paths, pieces, [p for p in partials if p is not None], max_series, timeline)


def plan(
    paths: list[str],
    regular: list[bool],
    gzipped: list[bool],
    sizes: list[int],
    jobs: int,
    piece_bytes: Optional[int],
    window_lines: int,
) -> list[Piece]:
    """The pieces of the inputs, in input order."""
    plain = [size for size, gz in zip(sizes, gzipped) if not gz]
    if piece_bytes is None:
        piece_bytes = max(MIN_PIECE_BYTES, sum(plain) // max(1, jobs * 4))
    pieces: list[Piece] = []
    for i, path in enumerate(paths):
        size = sizes[i]
        if not regular[i]:
            pieces.append(Piece(i, path, stream=True))
            continue
        if jobs <= 1 or size <= piece_bytes or gzipped[i]:
            pieces.append(Piece(i, path, length=size))
            continue
        count = math.ceil(size / piece_bytes)
        with open(path, "rb") as handle:
            cuts = sorted({_record_at(handle, size * k // count) for k in range(1, count)})
            bounds = [0, *(c for c in cuts if 0 < c < size), size]
            for k, (start, end) in enumerate(zip(bounds, bounds[1:])):
                last = k == len(bounds) - 2
                lookback = _record_back(handle, _lines_back(handle, start, window_lines))
                pieces.append(
                    Piece(i, path, start, None if last else end, lookback, last, end - start)
                )
    return pieces


def _is_gzip(handle: BinaryIO) -> bool:
    """Whether the input starts with gzip's magic bytes (read without consuming them)."""
    if not hasattr(handle, "peek"):
        return False  # read as a stream: _open looks again
    return bool(handle.peek(2)[:2] == b"\x1f\x8b")


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


def _record_at(handle: BinaryIO, offset: int) -> int:
    """The first record line at or after ``offset`` (within ``RECORD_LINES`` lines; else the
    first line start): a piece starts with a record, never inside its stack trace."""
    first = _line_start_at(handle, offset)
    handle.seek(first)
    block = handle.read(READ_BYTES)
    line = 0
    for _ in range(RECORD_LINES):
        if line >= len(block):
            break
        if _is_record(block, line):
            return first + line
        newline = block.find(b"\n", line)
        if newline < 0:
            break
        line = newline + 1
    return first


def _record_back(handle: BinaryIO, offset: int) -> int:
    """The record line that the line at ``offset`` belongs to (itself when it is one; within
    ``RECORD_LINES`` lines above, else ``offset``): a look-back starts with a whole record."""
    if offset == 0:
        return 0
    lo = max(0, offset - READ_BYTES)
    handle.seek(lo)
    block = handle.read(offset - lo + 1)
    rel = offset - lo
    if rel < len(block) and _is_record(block, rel):
        return offset
    at = rel - 1  # the newline that ends the line above
    for _ in range(RECORD_LINES):
        newline = block.rfind(b"\n", 0, at)
        if newline < 0 and lo > 0:
            break  # that line starts before the block: give up
        line = newline + 1
        if line < at and _is_record(block, line):
            return lo + line
        if line == 0:
            break
        at = newline
    return offset


def _lines_back(handle: BinaryIO, offset: int, lines: int) -> int:
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


class _Meter:
    """Progress in the inputs' own bytes (compressed or not), from this process or the pool."""

    def __init__(self, progress: Optional[Progress], total: int) -> None:
        self.progress = progress
        self.total = total
        self.done = 0
        self.shared: Optional[Any] = None  # a multiprocessing.Value the workers add to

    def add(self, n: int) -> None:
        self.done += n
        self.show()

    def show(self) -> None:
        if self.progress is not None:
            shared = self.shared.value if self.shared is not None else 0
            self.progress(self.done + shared, self.total)


_WORKER: dict[str, Any] = {}


def _worker_init(counter: Any) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the scan
    _WORKER["counter"] = counter


def _worker_add(n: int) -> None:
    counter = _WORKER["counter"]
    with counter.get_lock():
        counter.value += n


def _worker_scan(piece: Piece, options: Options) -> Partial:
    return scan_piece(piece, options, _worker_add)


def _submit(
    pieces: list[Piece], indexes: list[int], options: Options, workers: int, meter: _Meter
) -> dict[int, Future[Partial]]:
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    meter.shared = context.Value("q", 0)
    pool = ProcessPoolExecutor(workers, context, _worker_init, (meter.shared,))
    # the biggest first, so that the last to finish is a small one
    order = sorted(indexes, key=lambda i: -pieces[i].length)
    futures = {i: pool.submit(_worker_scan, pieces[i], options) for i in order}
    pool.shutdown(wait=False)  # the workers exit once every piece is done
    return futures


def _collect(
    futures: dict[int, Future[Partial]], partials: list[Optional[Partial]], meter: _Meter
) -> None:
    pending = set(futures.values())
    while pending:
        done, pending = wait(pending, timeout=0.2, return_when="FIRST_EXCEPTION")
        meter.show()
        for future in done:
            future.result()  # a worker's error is the scan's
    for i, future in futures.items():
        partials[i] = future.result()


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
        if piece.lookback < piece.start:
            back = FileStats()
            muted = LogPipeline(
                back, LineSplitter(options.max_line_bytes, back), parser, correlator, []
            )
            _feed(stream, muted, piece.start - piece.lookback, None)
            correlator.unpaired = correlator.orphans = 0
            base = stats.lines = back.lines
        splitter = LineSplitter(options.max_line_bytes, stats)
        pipeline = LogPipeline(stats, splitter, parser, correlator, [tally.record])
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
    """Reads ``limit`` bytes (None: to the end) into the pipeline, in ranges that start at a
    record (see ``Records``)."""
    stats, splitter = pipeline.stats, pipeline.splitter
    records = Records(pipeline)
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
            records.process(*segment)
        if on_read is not None:
            on_read()
    records.flush()


RECORD_LINES = 256  # how far up (in lines) a continuation line's record line is looked for
CARRY_BYTES = 4 << 20  # at most this much of a read waits for the next one


def _is_record(buf: Buffer, line: int) -> bool:
    """Whether the line starting at ``line`` is a record's first line: it begins with the
    timestamp's digit; a continuation line (``\tat ...``, an exception class) does not."""
    return 48 <= buf[line] <= 57


class Records:
    """Hands the pipeline ranges of whole lines that begin at a record's first line.

    A continuation line (a stack trace's exception line) means something only with the record
    line above it: in the same range, wherever a read, or a piece, happens to end. So the lines
    from a range's last record line on wait for the next read (up to ``RECORD_LINES`` lines and
    ``CARRY_BYTES``); ``flush`` hands them on at the end. The pipeline sees the same lines in the
    same order, so counts and line numbers do not change.
    """

    def __init__(self, pipeline: LogPipeline) -> None:
        self.pipeline = pipeline
        self.carry = b""

    def process(self, buf: Buffer, start: int, end: int) -> None:
        if self.carry:
            buf = b"".join((self.carry, memoryview(buf)[start:end]))
            start, end, self.carry = 0, len(buf), b""
        cut = last_record(buf, start, end)
        if cut is None or end - cut > CARRY_BYTES:
            self.pipeline.process(buf, start, end)
            return
        if cut > start:
            self.pipeline.process(buf, start, cut)
        self.carry = bytes(buf[cut:end])

    def flush(self) -> None:
        if self.carry:
            carry, self.carry = self.carry, b""
            self.pipeline.process(carry, 0, len(carry))


def last_record(buf: Buffer, start: int, end: int) -> Optional[int]:
    """The start of the last record line of ``buf[start:end]`` (whole lines), looking at most
    ``RECORD_LINES`` lines up from the end; None when there is none."""
    at = end - 1  # the newline that ends the line
    for _ in range(RECORD_LINES):
        if at < start:
            return None
        line = buf.rfind(b"\n", start, at) + 1 or start
        if line < at and _is_record(buf, line):
            return line
        if line == start:
            return None
        at = line - 1
    return None


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


def merge(
    paths: list[str],
    pieces: list[Piece],
    partials: list[Partial],
    max_series: int,
    timeline: bool,
) -> ScanResult:
    """The pieces' counts, in input order, as the serial scan counts them."""
    store = FailureStore(max_series)
    files: dict[str, FileStats] = {}
    pairing = PairingStats()
    minutes: dict[Labels, Counter[int]] = {}
    for piece, part in zip(pieces, partials):
        stats = files.setdefault(paths[piece.file], FileStats())
        for name in ("lines", "bytes_read", "offset", "unrecognised", "truncated_lines"):
            setattr(stats, name, getattr(stats, name) + getattr(part.stats, name))
        stats.size = stats.offset
        pairing.unpaired += part.unpaired
        pairing.orphans += part.orphans
        for labels, (count, last) in part.series.items():
            key = labels
            if labels not in store.counts and len(store.counts) >= store.max_series:
                key = OVERFLOW
                store.overflow += int(count)
            store.counts[key] = store.counts.get(key, 0.0) + count
            short = (key[0], key[1], key[4], key[5], key[6])
            store.last[short] = max(store.last.get(short, 0.0), last)
            if timeline:
                minutes.setdefault(key, Counter()).update(part.minutes.get(labels, {}))
    return ScanResult(store, files, pairing, minutes if timeline else None)
