"""Failures and health -> Prometheus metrics, on an injected registry.

The values live in plain dicts and ints owned by the stages (``FailureStore`` here, ``FileStats`` in
tail, the correlators), so that a checkpoint can save and restore them exactly;
``ExporterCollector`` turns them into metric families at scrape time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .events import Failure

FAILURE_LABELS = ("org", "env", "api", "rev", "target", "reason", "key_alias")
LAST_LABELS = ("org", "env", "target", "reason", "key_alias")
OVERFLOW = ("other",) * len(FAILURE_LABELS)


@dataclass
class FileStats:
    """Health of one followed file. Counters only grow; size and offset are gauges."""

    lines: int = 0
    bytes_read: int = 0
    size: int = 0
    offset: int = 0
    unrecognised: int = 0
    truncated_lines: int = 0
    rotations: dict[str, int] = field(default_factory=dict)
    read_errors: dict[str, int] = field(default_factory=dict)
    last_read: float = 0.0  # wall clock of the last read that returned data

    def snapshot(self) -> dict[str, Any]:
        return {
            "lines": self.lines,
            "bytes_read": self.bytes_read,
            "unrecognised": self.unrecognised,
            "truncated_lines": self.truncated_lines,
            "rotations": dict(self.rotations),
            "read_errors": dict(self.read_errors),
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.lines = int(state.get("lines", 0))
        self.bytes_read = int(state.get("bytes_read", 0))
        self.unrecognised = int(state.get("unrecognised", 0))
        self.truncated_lines = int(state.get("truncated_lines", 0))
        self.rotations = {str(k): int(v) for k, v in state.get("rotations", {}).items()}
        self.read_errors = {str(k): int(v) for k, v in state.get("read_errors", {}).items()}


class FailureStore:
    """Counts of failures by label set, bounded to ``max_series`` label sets.

    Past the bound a new label set is counted under one series whose labels are all ``other``, and
    ``overflow`` counts those failures. Series never expire.
    """

    def __init__(self, max_series: int = 5000) -> None:
        self.max_series = max_series
        self.counts: dict[tuple[str, ...], float] = {}
        self.last: dict[tuple[str, ...], float] = {}
        self.overflow = 0
        self._lock = threading.Lock()

    def record(self, failure: Failure) -> tuple[str, ...]:
        """Count one failure; return the label values it was counted under."""
        labels: tuple[str, ...] = (
            failure.org,
            failure.env,
            failure.api,
            failure.rev,
            failure.target,
            failure.reason,
            failure.key_alias,
        )
        with self._lock:
            if labels not in self.counts and len(self.counts) >= self.max_series:
                labels = OVERFLOW
                self.overflow += 1
            self.counts[labels] = self.counts.get(labels, 0.0) + 1
            short = (labels[0], labels[1], labels[4], labels[5], labels[6])
            self.last[short] = max(self.last.get(short, 0.0), failure.timestamp)
        return labels

    def precreate(self, labels: tuple[str, ...]) -> None:
        """Make a series exist at 0 so that its first failure is a step, not a new series."""
        with self._lock:
            self.counts.setdefault(labels, 0.0)

    def items(self) -> list[tuple[tuple[str, ...], float]]:
        with self._lock:
            return list(self.counts.items())

    def last_items(self) -> list[tuple[tuple[str, ...], float]]:
        with self._lock:
            return list(self.last.items())

    def total(self) -> float:
        with self._lock:
            return sum(self.counts.values())

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counts": [[*k, v] for k, v in self.counts.items()],
                "last": [[*k, v] for k, v in self.last.items()],
                "overflow": self.overflow,
            }

    def restore(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.counts = {tuple(map(str, row[:-1])): float(row[-1]) for row in state["counts"]}
            self.last = {tuple(map(str, row[:-1])): float(row[-1]) for row in state["last"]}
            self.overflow = int(state.get("overflow", 0))


@dataclass
class PairingStats:
    pending: int = 0
    unpaired: int = 0
    orphans: int = 0


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
        failures = CounterMetricFamily(
            "apigee_tls_handshake_failures",
            "Southbound TLS handshake failures logged by the Message Processor.",
            labels=FAILURE_LABELS,
        )
        for labels, value in sorted(self._store.items()):
            failures.add_metric(labels, value)
        yield failures
        last = GaugeMetricFamily(
            "apigee_tls_last_handshake_failure_timestamp_seconds",
            "Log timestamp of the latest handshake failure of the series.",
            labels=LAST_LABELS,
        )
        for labels, value in sorted(self._store.last_items()):
            last.add_metric(labels, value)
        yield last
        yield CounterMetricFamily(
            "apigee_tls_series_overflow",
            "Failures counted under the all-'other' series: the label-set bound was reached.",
            value=self._store.overflow,
        )
        yield from self._file_families(sorted(self._files()))
        pairing = self._pairing()
        yield GaugeMetricFamily(
            "apigee_tls_pairing_pending",
            "Failures waiting for their SSLInfo line.",
            value=pairing.pending,
        )
        yield CounterMetricFamily(
            "apigee_tls_pairing_unpaired",
            "Failures whose pairing window closed without an SSLInfo line (key_alias is empty).",
            value=pairing.unpaired,
        )
        yield CounterMetricFamily(
            "apigee_tls_pairing_orphans",
            "SSLInfo lines with no failure waiting for them.",
            value=pairing.orphans,
        )
        if self._checkpoint_age is not None:
            age = self._checkpoint_age()
            if age is not None:
                yield GaugeMetricFamily(
                    "apigee_tls_checkpoint_age_seconds",
                    "Seconds since the state file was last written (since start-up if never).",
                    value=age,
                )
        if self._checkpoint_errors is not None:
            yield CounterMetricFamily(
                "apigee_tls_checkpoint_write_errors",
                "Writes of the state file that failed (positions and counts not saved).",
                value=self._checkpoint_errors(),
            )
        if self._build_info:
            info = GaugeMetricFamily(
                "apigee_tls_build_info", "Version of apigee-tls-exporter.", labels=["version"]
            )
            info.add_metric([__version__], 1)
            yield info

    def _file_families(self, files: list[tuple[str, FileStats]]) -> Iterator[Metric]:
        simple = (
            (
                "apigee_tls_log_lines",
                CounterMetricFamily,
                "Lines read from the followed log file.",
                "lines",
            ),
            (
                "apigee_tls_log_bytes_read",
                CounterMetricFamily,
                "Bytes read from the followed log file.",
                "bytes_read",
            ),
            (
                "apigee_tls_log_file_size_bytes",
                GaugeMetricFamily,
                "Size in bytes of the followed log file.",
                "size",
            ),
            (
                "apigee_tls_log_offset_bytes",
                GaugeMetricFamily,
                "Byte offset read so far in the followed log file.",
                "offset",
            ),
            (
                "apigee_tls_unrecognised_lines",
                CounterMetricFamily,
                "Lines of the followed log file that mention handshakeFailed, handshakeTimeout or "
                "SSLInfo but match no rule.",
                "unrecognised",
            ),
            (
                "apigee_tls_log_lines_truncated",
                CounterMetricFamily,
                "Lines of the followed log file longer than max_line_bytes, cut to it.",
                "truncated_lines",
            ),
        )
        for name, kind, doc, attr in simple:
            family = kind(name, doc, labels=["path"])
            for path, stats in files:
                family.add_metric([path], getattr(stats, attr))
            yield family
        rotations = CounterMetricFamily(
            "apigee_tls_log_rotations",
            "Rotations of the followed log file seen, by kind.",
            labels=["path", "kind"],
        )
        errors = CounterMetricFamily(
            "apigee_tls_log_read_errors",
            "Errors opening or reading the followed log file, by kind.",
            labels=["path", "error"],
        )
        for path, stats in files:
            for rotation, value in sorted(stats.rotations.items()):
                rotations.add_metric([path, rotation], value)
            for error, value in sorted(stats.read_errors.items()):
                errors.add_metric([path, error], value)
        yield rotations
        yield errors
