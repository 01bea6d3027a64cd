"""The one-shot wiring of ``scan``: read files from start to end, count, report.

Kept apart from ``app`` (the daemon) so that ``scan`` starts without importing the server, the
config models or the TLS libraries.
"""

from __future__ import annotations

import contextlib
import os
import sys
from datetime import tzinfo
from typing import BinaryIO, Callable, Optional

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

    Opening every file first means a missing one fails before any work. Wall-time windows do not
    apply: the whole input is there, and the result must not depend on how fast it was read.
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
        for path, stream in sources:
            stats = files.setdefault(path, FileStats())
            splitter = LineSplitter(max_line_bytes, stats)
            correlator = Correlator(window_lines, None)
            correlators.append(correlator)
            pipeline = LogPipeline(stats, splitter, Parser(tz), correlator, [store.record])
            buffer = bytearray(min(1 << 20, max_line_bytes))
            while True:
                size = stream.readinto(buffer)  # type: ignore[attr-defined]
                if not size:
                    break
                stats.bytes_read += size
                stats.offset += size
                done += size
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
