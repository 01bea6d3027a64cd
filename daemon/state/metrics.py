"""Failures and health -> Prometheus metrics, on an injected registry.

The values live in plain dicts and ints owned by the stages (``daemon/state/counts.py``);
``ExporterCollector`` turns them into metric families at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Callable, Optional

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .. import __version__
from ..records.stats import FileStats, PairingStats
from .counts import FAILURE_LABELS, LAST_LABELS, FailureStore


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
            (
                "apigee_tls_log_equal_heads",
                CounterMetricFamily,
                "Rotated files of the followed log file that begin like a content read before "
                "but hold none of it (told apart by all the bytes read, not by the first ones).",
                "equal_heads",
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
