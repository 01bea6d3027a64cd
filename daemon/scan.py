"""The one-shot wiring of ``scan``: read files from start to end, count, report.

Kept apart from ``app`` (the daemon) so that ``scan`` starts without importing the server, the
config models or the TLS libraries.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import os
import sys
import zlib
from datetime import tzinfo
from typing import BinaryIO, Callable, Optional, cast

from prometheus_client import CollectorRegistry

from .correlate import Correlator
from .lines import LineSplitter
from .metrics import ExporterCollector, FailureStore, FileStats, PairingStats
from .parse import Parser
from .pipeline import LogPipeline, pairing_stats


class ScanResult:
    def __init__(self, store: FailureStore, files: dict[str, FileStats], pairing: PairingStats):
        self.store = store
        self.files = files
        self.pairing = pairing

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


def scan(
    paths: list[str],
    *,
    tz: Optional[tzinfo] = None,
    max_series: int = 5000,
    max_line_bytes: int = 1 << 20,
    window_lines: int = 1000,
    stdin: Optional[BinaryIO] = None,
    progress: Optional[Callable[[int, int], None]] = None,
) -> ScanResult:
    """Read each file from its start to its end (``-`` is standard input) and count.

    Opening every file first means a missing one fails before any work. A gzip file (a rotated
    ``system.log.1.gz``) is read decompressed, known by its first bytes, as zgrep does; its
    health figures are those of the log inside. A gzip stream that ends early or is corrupt is an
    ``OSError``. Wall-time windows do not apply: the whole input is there, and the result must
    not depend on how fast it was read.
    """
    store = FailureStore(max_series)
    files: dict[str, FileStats] = {}
    correlators: list[Correlator] = []
    with contextlib.ExitStack() as files_open:
        sources: list[tuple[str, BinaryIO]] = []
        for path in paths:
            if path == "-":
                sources.append((path, stdin if stdin is not None else sys.stdin.buffer))
            else:
                sources.append((path, files_open.enter_context(open(path, "rb"))))
        total = sum(os.fstat(s.fileno()).st_size for p, s in sources if p != "-")
        done = 0
        for path, raw in sources:
            stream = _decompressed(raw)
            stats = files.setdefault(path, FileStats())
            splitter = LineSplitter(max_line_bytes, stats)
            correlator = Correlator(window_lines, None)
            correlators.append(correlator)
            pipeline = LogPipeline(stats, splitter, Parser(tz), correlator, [store.record])
            buffer = bytearray(min(1 << 20, max_line_bytes))
            start = done
            while True:
                try:
                    size = stream.readinto(buffer)  # type: ignore[attr-defined]
                except (EOFError, zlib.error, gzip.BadGzipFile) as err:
                    name = "standard input" if path == "-" else path
                    raise OSError(errno.EIO, f"not a whole gzip file: {err}", name) from None
                if not size:
                    break
                stats.bytes_read += size
                stats.offset += size
                # progress in the file's own bytes, compressed or not (standard input has no size)
                done = start + (stats.offset if path == "-" else raw.tell())
                for segment in splitter.feed(buffer, size):
                    pipeline.process(*segment)
                if progress is not None:
                    progress(done, total)
            if splitter.partial:  # the last line has no newline: it is a line all the same
                for segment in splitter.feed(b"\n"):
                    pipeline.process(*segment)
            pipeline.finish()
            stats.size = stats.offset
    return ScanResult(store, files, pairing_stats(correlators))


def _decompressed(raw: BinaryIO) -> BinaryIO:
    """``raw`` itself, or a gzip reader over it when it starts with gzip's magic bytes."""
    if not hasattr(raw, "peek"):
        raw = cast(BinaryIO, io.BufferedReader(cast(io.RawIOBase, raw)))
    if raw.peek(2)[:2] == b"\x1f\x8b":  # type: ignore[attr-defined]
        return cast(BinaryIO, gzip.GzipFile(fileobj=raw, mode="rb"))
    return raw
