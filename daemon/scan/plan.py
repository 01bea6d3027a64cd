"""The one-shot wiring of ``scan``: read files from start to end, count, report; on every core.

Kept apart from ``app`` (the daemon) so that ``scan`` starts without importing the server, the
config models or the TLS libraries.

**Pieces.** The input is cut into pieces: a plain file larger than the piece size is cut at the
start of a record (a timestamped line, not inside its stack trace); a gzip file is one piece,
unless there are fewer pieces than cores: then each piece of it inflates the file from its start
and reads its own range, cut at a record too (``Piece.inflated_size``); standard input is one
piece. Each piece is read by the same code (``daemon/scan/pieces.py``), in this process (``jobs=1``)
or in a pool of worker processes, and gives a ``Partial``; the partials are merged in input
order. The result is the serial scan's, series by series:

- *Pairing across a cut.* What waits at a cut (failures for their SSLInfo line, and whatever
  else the correlator holds for a window) came within the last ``window_lines`` lines, and what
  decides its fate came within the window before it. So a piece is read from
  ``LOOKBACK_WINDOWS`` (2) windows of lines before its start (its look-back) with every count and
  failure muted: the correlator then holds exactly what the serial scan holds at the cut. What
  still waits at a piece's end is the next piece's to close (it waits in that piece's
  look-back); only the file's last piece closes every window at its end.
- *The series bound.* The serial scan admits the first ``max_series`` label sets in the order
  their first failure is counted. A partial keeps its label sets in that order (a dict), and the
  merge replays them piece after piece: the same label sets are admitted, the same overflow.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
import stat
import sys
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor, wait
from datetime import tzinfo
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Optional

from ..follow.logfile import GZIP_MAGIC
from ..records.head import DEFAULT, RecordHead
from ..records.search import say_fallback
from ..records.stats import FileStats, PairingStats
from ..state.counts import FailureStore
from .pieces import (
    LOOKBACK_WINDOWS,
    Labels,
    Options,
    Partial,
    Piece,
    lookback_start,
    record_at,
    scan_piece,
)

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

Progress = Callable[[int, int], None]
MIN_PIECE_BYTES = 32 << 20
# What inflating costs beside reading what comes out (isal, measured by make bench): the pieces
# of a gzip file get shorter towards its end, where more of the file is inflated to reach them.
INFLATE_SHARE = 0.3


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
        """The result as Prometheus metrics (the client is loaded here, not at start-up: the
        pool starts reading sooner)."""
        from prometheus_client import CollectorRegistry

        from ..state.metrics import ExporterCollector

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
    meanwhile: Optional[Callable[[], object]] = None,
    record_head: Optional[str] = None,
) -> ScanResult:
    """Read each file from its start to its end (``-`` is standard input) and count.

    Opening every file first means a missing one fails before any work. A gzip file (a rotated
    ``system.log.1.gz``) is read decompressed, known by its first bytes, as zgrep does; its
    health figures are those of the log inside. A gzip stream that ends early or is corrupt is an
    ``OSError``. Wall-time windows do not apply: the whole input is there, and the result must
    not depend on how fast it was read. ``jobs`` processes read the pieces (see the module's
    docstring); ``since``/``until`` count only failures logged within [since, until) (pairing and
    the health figures still see every line); ``timeline`` keeps failures by minute too.
    ``meanwhile`` is called while the workers read (the CLI loads what its output needs then).
    ``record_head`` is a site's own record head pattern (the config's ``logs[].record_head``,
    checked by the caller): it reads the records and tells where the pieces may be cut.
    """
    options = Options(
        tz,
        max_line_bytes,
        window_lines,
        since,
        until,
        timeline,
        threaded_inflate=jobs > 1,
        record_head=record_head,
    )
    say_fallback()  # here, once: the workers inherit it
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
        pieces = plan(
            paths, regular, gzipped, sizes, jobs, piece_bytes, window_lines, RecordHead(record_head)
        )
        total = sum(sizes)
        meter = _Meter(progress, total)
        in_process = [i for i, p in enumerate(pieces) if p.stream]
        partials: list[Optional[Partial]] = [None] * len(pieces)
        pooled = [i for i in range(len(pieces)) if i not in in_process]
        pool: Optional[ProcessPoolExecutor] = None
        futures: dict[int, Future[Partial]] = {}
        pooling = jobs > 1 and len(pooled) > 1
        if not pooling:
            in_process = list(range(len(pieces)))
        try:  # (the pool made inside: a Ctrl-C while its workers start stops them too)
            if pooling:
                pool = _pool(min(jobs, len(pooled)), meter)
                futures = _submit(pool, pieces, pooled, options)
            if futures and meanwhile is not None:
                meanwhile()
            for i in in_process:
                piece = pieces[i]
                raw = handles[piece.file] if piece.stream else None
                partials[i] = scan_piece(piece, options, meter.add, raw)
            _collect(futures, partials, meter)
        except BaseException:  # an unreadable piece, Ctrl-C: stop the pool's work at once
            # (terminated, not cancelled: the pool marks its futures broken, which a cancelled
            # future would turn into an error of its own on Python 3.11)
            if pool is not None:
                for child in multiprocessing.active_children():
                    child.terminate()
            raise
        finally:
            # Waited for: a pool left to end by itself races the interpreter's exit, which then
            # prints a traceback on Python < 3.12 (its wakeup pipe closed under it, gh-125451).
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    return merge(paths, pieces, [p for p in partials if p is not None], max_series, timeline)


def plan(
    paths: list[str],
    regular: list[bool],
    gzipped: list[bool],
    sizes: list[int],
    jobs: int,
    piece_bytes: Optional[int],
    window_lines: int,
    head: RecordHead = DEFAULT,
) -> list[Piece]:
    """The pieces of the inputs, in input order, cut at lines that ``head`` reads as records."""
    plain = [size for size, gz in zip(sizes, gzipped) if not gz]
    if piece_bytes is None:
        # rounded up: a file of the whole size is cut in exactly jobs * 4 pieces, that the
        # workers finish together (one piece more would be read by one worker alone, at the end)
        piece_bytes = max(MIN_PIECE_BYTES, -(-sum(plain) // max(1, jobs * 4)))
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
            cuts = sorted({record_at(handle, size * k // count, head) for k in range(1, count)})
            bounds = [0, *(c for c in cuts if 0 < c < size), size]
            for k, (start, end) in enumerate(zip(bounds, bounds[1:])):
                last = k == len(bounds) - 2
                lookback = lookback_start(handle, start, LOOKBACK_WINDOWS * window_lines, head)
                pieces.append(
                    Piece(i, path, start, None if last else end, lookback, last, end - start)
                )
    if jobs > 1 and len(pieces) < jobs:  # a core would wait: the gzip files are cut too
        cut = [_cut_gzip(p, jobs, piece_bytes) if gzipped[p.file] else [p] for p in pieces]
        pieces = [piece for pieces_of_file in cut for piece in pieces_of_file]
    return pieces


def _cut_gzip(piece: Piece, count: int, piece_bytes: int) -> list[Piece]:
    """A gzip file in ``count`` pieces, when it inflates to more than ``piece_bytes``.

    Each piece inflates the file from its start and reads its own range (see ``Piece``): the
    inflating is done again in every process, which costs less than a core left waiting. The
    ranges are cut so that the pieces take the same time, inflating included.
    """
    if piece.stream:
        return [piece]
    inflated = _inflated_size(piece.path, piece.length)
    if inflated <= piece_bytes:
        return [piece]
    # piece k ends at x_k of the inflated bytes: (1 + INFLATE_SHARE) x_k - x_(k-1) is the same
    # for every k, a geometric series in q
    q = 1 / (1 + INFLATE_SHARE)
    sums = [sum(q**j for j in range(1, k + 1)) for k in range(count + 1)]
    bounds = [int(inflated * s / sums[-1]) for s in sums]
    size = piece.length
    return [
        Piece(
            piece.file,
            piece.path,
            start=bounds[k],
            end=None if k == count - 1 else bounds[k + 1],
            last=k == count - 1,
            length=size * (k + 1) // count - size * k // count,
            inflated_size=inflated,
        )
        for k in range(count)
    ]


def _inflated_size(path: str, size: int) -> int:
    """The size a gzip file inflates to, as its trailer says: modulo 2**32 (taken as the first
    value not below the file's own size) and for its last member only. An estimate: it decides
    only where the pieces are cut, never what they count."""
    with open(path, "rb") as handle:
        handle.seek(max(0, size - 4))
        inflated = int.from_bytes(handle.read(4), "little")
    while inflated < size:
        inflated += 1 << 32
    return inflated


def _is_gzip(handle: BinaryIO) -> bool:
    """Whether the input starts with gzip's magic bytes (read without consuming them)."""
    if not hasattr(handle, "peek"):
        return False  # read as a stream: _open looks again
    return bool(handle.peek(2)[:2] == GZIP_MAGIC)


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


def _pool(workers: int, meter: _Meter) -> ProcessPoolExecutor:
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    meter.shared = context.Value("q", 0)
    return ProcessPoolExecutor(workers, context, _worker_init, (meter.shared,))


def _submit(
    pool: ProcessPoolExecutor, pieces: list[Piece], indexes: list[int], options: Options
) -> dict[int, Future[Partial]]:
    # the biggest first, so that the last to finish is a small one
    order = sorted(indexes, key=lambda i: -pieces[i].length)
    return {i: pool.submit(_worker_scan, pieces[i], options) for i in order}


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
            key = store.add(labels, count, last)
            if timeline:
                minutes.setdefault(key, Counter()).update(part.minutes.get(labels, {}))
    return ScanResult(store, files, pairing, minutes if timeline else None)
