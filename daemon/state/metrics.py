"""Failures and health -> Prometheus metrics, on an injected registry.

The values live in plain dicts and ints owned by the stages (``daemon/state/counts.py``);
``ExporterCollector`` turns them into metric families at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Callable, Optional

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from .. import __version__
from ..records.search import accelerated
from ..records.stats import FileStats, PairingStats
from . import families
from .counts import FailureStore


class ExporterCollector(Collector):
    """Yields every ``apigee_tls_*`` family from the live state of the stages."""

    def __init__(
        self,
        store: FailureStore,
        files: Callable[[], Iterable[tuple[str, FileStats]]],
        pairing: Callable[[], PairingStats],
        checkpoint_age: Optional[Callable[[], Optional[float]]] = None,
        checkpoint_errors: Optional[Callable[[], int]] = None,
        build_info: bool = True,
    ) -> None:
        self._store = store
        self._files = files
        self._pairing = pairing
        self._checkpoint_age = checkpoint_age
        self._checkpoint_errors = checkpoint_errors
        self._build_info = build_info

    def collect(self) -> Iterator[Metric]:
        failures = families.HANDSHAKE_FAILURES.new()
        for labels, value in sorted(self._store.items()):
            failures.add_metric(labels, value)
        yield failures
        last = families.LAST_HANDSHAKE_FAILURE_TIMESTAMP_SECONDS.new()
        for labels, value in sorted(self._store.last_items()):
            last.add_metric(labels, value)
        yield last
        yield families.SERIES_OVERFLOW.new(value=self._store.overflow)
        yield from self._file_families(sorted(self._files()))
        pairing = self._pairing()
        yield families.PAIRING_PENDING.new(value=pairing.pending)
        yield families.PAIRING_UNPAIRED.new(value=pairing.unpaired)
        yield families.PAIRING_ORPHANS.new(value=pairing.orphans)
        if self._checkpoint_age is not None:
            age = self._checkpoint_age()
            if age is not None:
                yield families.CHECKPOINT_AGE_SECONDS.new(value=age)
        if self._checkpoint_errors is not None:
            yield families.CHECKPOINT_WRITE_ERRORS.new(value=self._checkpoint_errors())
        if self._build_info:
            info = families.BUILD_INFO.new()
            info.add_metric([__version__, str(accelerated()).lower()], 1)
            yield info

    def _file_families(self, files: list[tuple[str, FileStats]]) -> Iterator[Metric]:
        simple = (
            (families.LOG_LINES, "lines"),
            (families.LOG_BYTES_READ, "bytes_read"),
            (families.LOG_FILE_SIZE_BYTES, "size"),
            (families.LOG_OFFSET_BYTES, "offset"),
            (families.UNRECOGNISED_LINES, "unrecognised"),
            (families.LOG_LINES_TRUNCATED, "truncated_lines"),
            (families.LOG_EQUAL_HEADS, "equal_heads"),
        )
        for kind, attr in simple:
            family = kind.new()
            for path, stats in files:
                family.add_metric([path], getattr(stats, attr))
            yield family
        rotations = families.LOG_ROTATIONS.new()
        errors = families.LOG_READ_ERRORS.new()
        for path, stats in files:
            for rotation, value in sorted(stats.rotations.items()):
                rotations.add_metric([path, rotation], value)
            for error, value in sorted(stats.read_errors.items()):
                errors.add_metric([path, error], value)
        yield rotations
        yield errors
