"""Metrics: failures and health as Prometheus families on a fresh registry.

Values are read with ``CollectorRegistry.get_sample_value``. Failures come from real log text read
by ``scan`` where the log matters, and from ``Failure`` values where only the store does.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional
from zoneinfo import ZoneInfo

import pytest
from apigee_tls_exporter import __version__
from apigee_tls_exporter.demo.generator import LogGenerator
from apigee_tls_exporter.records import search
from apigee_tls_exporter.records.events import Failure
from apigee_tls_exporter.records.stats import FileStats, PairingStats
from apigee_tls_exporter.scan.plan import ScanResult, scan
from apigee_tls_exporter.state.counts import FailureStore
from apigee_tls_exporter.state.metrics import ExporterCollector
from helpers import records
from helpers.records import CTX, MESSAGE_ID, STAMP
from prometheus_client import CollectorRegistry, generate_latest


def failed(stamp: str = STAMP, alert: str = "bad_certificate") -> str:
    return records.failed(message=f"Received fatal alert: {alert}", stamp=stamp)


def ssl_info(alias: str = "backend-client") -> str:
    return records.ssl_info(alias=alias)


TRAFFIC = records.traffic(stamp="2017-10-23 05:28:57,900")
FAILURE_LABELS = {
    "org": "acme",
    "env": "prod",
    "api": "payments-v1",
    "rev": "7",
    "target": "backend.example.com:443",
    "reason": "bad_certificate",
    "key_alias": "backend-client",
}
LAST_LABELS = {k: FAILURE_LABELS[k] for k in ("org", "env", "target", "reason", "key_alias")}


def scan_lines(tmp_path: Path, lines: list[str], tz: Optional[ZoneInfo] = None) -> ScanResult:
    path = tmp_path / "system.log"
    path.write_text("".join(line + "\n" for line in lines))
    return scan([str(path)], tz=tz if tz is not None else ZoneInfo("UTC"))


def failure(api: str, timestamp: float = 1.0e9) -> Failure:
    return Failure("acme", "prod", api, "1", "b:443", "bad_certificate", "k", timestamp)


def store_registry(store: FailureStore) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ExporterCollector(store, lambda: [], PairingStats, build_info=False))
    return registry


def count(registry: CollectorRegistry, api: str) -> Optional[float]:
    labels = {
        "org": "acme",
        "env": "prod",
        "api": api,
        "rev": "1",
        "target": "b:443",
        "reason": "bad_certificate",
        "key_alias": "k",
    }
    return registry.get_sample_value("apigee_tls_handshake_failures_total", labels)


OTHER = dict.fromkeys(("org", "env", "api", "rev", "target", "reason", "key_alias"), "other")


@pytest.fixture
def local_zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's local time zone is America/New_York for the test."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# --- failures ------------------------------------------------------------------------------------


def test_failure_counted_under_its_seven_labels(tmp_path: Path) -> None:
    """A paired failure increments the counter of its org, env, api, rev, target, reason, alias."""
    registry = scan_lines(tmp_path, [failed(), ssl_info()]).registry()
    expected = 1.0
    assert expected == registry.get_sample_value(
        "apigee_tls_handshake_failures_total", FAILURE_LABELS
    )


def test_each_failure_of_a_series_counts(tmp_path: Path) -> None:
    """Three failures with the same labels are one series of value 3."""
    registry = scan_lines(tmp_path, [failed(), ssl_info()] * 3).registry()
    expected = 3.0
    assert expected == registry.get_sample_value(
        "apigee_tls_handshake_failures_total", FAILURE_LABELS
    )


def test_message_id_is_never_a_label(tmp_path: Path) -> None:
    """The message id, unbounded, appears nowhere in the exposition."""
    text = generate_latest(scan_lines(tmp_path, [failed(), ssl_info()]).registry()).decode()
    assert MESSAGE_ID not in text


def test_last_failure_gauge_holds_the_latest_log_time(tmp_path: Path) -> None:
    """The last-failure gauge is the log timestamp of the series' latest failure."""
    lines = [
        failed("2017-10-23 05:28:57,250"),
        ssl_info(),
        failed("2017-10-23 05:30:00,500"),
        ssl_info(),
    ]
    registry = scan_lines(tmp_path, lines).registry()
    expected = calendar.timegm((2017, 10, 23, 5, 30, 0)) + 0.5
    assert expected == registry.get_sample_value(
        "apigee_tls_last_handshake_failure_timestamp_seconds", LAST_LABELS
    )


def test_last_failure_gauge_does_not_go_back_for_an_older_line(tmp_path: Path) -> None:
    """A failure with an older timestamp read later leaves the gauge at the latest time."""
    lines = [
        failed("2017-10-23 05:30:00,500"),
        ssl_info(),
        failed("2017-10-23 05:28:57,250"),
        ssl_info(),
    ]
    registry = scan_lines(tmp_path, lines).registry()
    expected = calendar.timegm((2017, 10, 23, 5, 30, 0)) + 0.5
    assert expected == registry.get_sample_value(
        "apigee_tls_last_handshake_failure_timestamp_seconds", LAST_LABELS
    )


def test_last_failure_gauge_in_the_configured_zone(tmp_path: Path) -> None:
    """With a configured zone, the zone-less log time is read in that zone."""
    result = scan_lines(
        tmp_path, [failed("2026-11-27 09:00:00,500"), ssl_info()], ZoneInfo("Asia/Tokyo")
    )
    expected = calendar.timegm((2026, 11, 27, 0, 0, 0)) + 0.5  # 09:00 in Tokyo is 00:00 UTC
    assert expected == result.registry().get_sample_value(
        "apigee_tls_last_handshake_failure_timestamp_seconds", LAST_LABELS
    )


def test_last_failure_gauge_in_local_time_when_no_zone_is_configured(
    tmp_path: Path, local_zone: None
) -> None:
    """Without a configured zone, the log time is read in the node's local time zone."""
    path = tmp_path / "system.log"
    path.write_text(failed("2026-07-01 12:00:00,500") + "\n" + ssl_info() + "\n")
    registry = scan([str(path)], tz=None).registry()
    expected = calendar.timegm((2026, 7, 1, 16, 0, 0)) + 0.5  # 12:00 EDT is 16:00 UTC
    assert expected == registry.get_sample_value(
        "apigee_tls_last_handshake_failure_timestamp_seconds", LAST_LABELS
    )


# --- the series bound ----------------------------------------------------------------------------


def test_label_sets_within_the_bound_keep_their_labels() -> None:
    """Up to ``max_series`` label sets, each failure is counted under its own labels."""
    store = FailureStore(max_series=2)
    store.record(failure("a"))
    store.record(failure("b"))
    registry = store_registry(store)
    expected = (1.0, 1.0, None)
    assert expected == (
        count(registry, "a"),
        count(registry, "b"),
        registry.get_sample_value("apigee_tls_handshake_failures_total", OTHER),
    )


def test_new_label_set_past_the_bound_goes_to_the_all_other_series() -> None:
    """Past ``max_series`` a new label set is counted under one series, all labels ``other``."""
    store = FailureStore(max_series=2)
    for api in ("a", "b", "c"):
        store.record(failure(api))
    registry = store_registry(store)
    expected = (None, 1.0)
    assert expected == (
        count(registry, "c"),
        registry.get_sample_value("apigee_tls_handshake_failures_total", OTHER),
    )


def test_overflow_counts_each_failure_past_the_bound() -> None:
    """``apigee_tls_series_overflow_total`` counts every failure sent to the all-other series."""
    store = FailureStore(max_series=1)
    for api in ("a", "b", "c", "c"):
        store.record(failure(api))
    expected = 3.0
    assert expected == store_registry(store).get_sample_value("apigee_tls_series_overflow_total")


def test_known_label_set_past_the_bound_keeps_its_series() -> None:
    """A label set that already has a series is still counted there once the bound is reached."""
    store = FailureStore(max_series=1)
    for api in ("a", "b", "a"):
        store.record(failure(api))
    registry = store_registry(store)
    expected = (2.0, 1.0)
    assert expected == (
        count(registry, "a"),
        registry.get_sample_value("apigee_tls_series_overflow_total"),
    )


def test_overflow_is_zero_within_the_bound() -> None:
    """The overflow counter is exported at 0 while the bound is not reached."""
    store = FailureStore(max_series=5000)
    store.record(failure("a"))
    expected = 0.0
    assert expected == store_registry(store).get_sample_value("apigee_tls_series_overflow_total")


def test_store_snapshot_restores_counts_last_times_and_overflow() -> None:
    """A restored store exports what the saved one did."""
    store = FailureStore(max_series=1)
    store.record(failure("a", 1.5e9))
    store.record(failure("b", 1.6e9))
    restored = FailureStore(max_series=1)
    restored.restore(store.snapshot())
    expected = generate_latest(store_registry(store))
    assert expected == generate_latest(store_registry(restored))


# --- health ---------------------------------------------------------------------------------------


def test_file_health_of_a_scanned_log(tmp_path: Path) -> None:
    """Lines, bytes read, size and offset of a scanned file are exported with its path."""
    lines = [TRAFFIC, failed(), ssl_info(), TRAFFIC]
    result = scan_lines(tmp_path, lines)
    path = str(tmp_path / "system.log")
    size = (tmp_path / "system.log").stat().st_size
    registry = result.registry()
    names = (
        "apigee_tls_log_lines_total",
        "apigee_tls_log_bytes_read_total",
        "apigee_tls_log_file_size_bytes",
        "apigee_tls_log_offset_bytes",
    )
    expected = [4.0, float(size), float(size), float(size)]
    assert expected == [registry.get_sample_value(n, {"path": path}) for n in names]


def test_unrecognised_handshake_line_is_counted_per_file(tmp_path: Path) -> None:
    """A handshakeFailed line in an unknown format increments the unrecognised counter."""
    new_format = (
        f"2017-10-23 05:28:57,813 {CTX}NIOThread@0 ERROR HTTP.CLIENT - "
        "HTTPClient$Context.handshakeFailed() : SSLChannel{remote=10.20.3.4:443} failed"
    )
    frame = "\tat com.apigee.protocol.http.HTTPClient$Context.handshakeFailed(HTTPClient.java:1006)"
    result = scan_lines(tmp_path, [new_format, frame, TRAFFIC])
    expected = 1.0
    assert expected == result.registry().get_sample_value(
        "apigee_tls_unrecognised_lines_total", {"path": str(tmp_path / "system.log")}
    )


def test_pairing_counters_of_a_scan(tmp_path: Path) -> None:
    """Unpaired failures and orphan SSLInfo lines are exported; nothing is pending after a scan."""
    lines = [ssl_info("orphan"), failed(), TRAFFIC]
    registry = scan_lines(tmp_path, lines).registry()
    names = (
        "apigee_tls_pairing_pending",
        "apigee_tls_pairing_unpaired_total",
        "apigee_tls_pairing_orphans_total",
    )
    expected = [0.0, 1.0, 1.0]
    assert expected == [registry.get_sample_value(n) for n in names]


def test_pending_gauge_reports_waiting_failures() -> None:
    """``apigee_tls_pairing_pending`` is the number of failures waiting for SSLInfo."""
    registry = CollectorRegistry()
    stats = PairingStats(pending=4, unpaired=0, orphans=0)
    registry.register(ExporterCollector(FailureStore(), lambda: [], lambda: stats))
    expected = 4.0
    assert expected == registry.get_sample_value("apigee_tls_pairing_pending")


def test_file_stats_exported_per_path() -> None:
    """Each followed file's stats are exported under its own path label."""
    files = [("/a.log", FileStats(lines=3, unrecognised=1)), ("/b.log", FileStats(lines=5))]
    registry = CollectorRegistry()
    registry.register(ExporterCollector(FailureStore(), lambda: files, PairingStats))
    expected = [3.0, 5.0, 1.0, 0.0]
    assert expected == [
        registry.get_sample_value("apigee_tls_log_lines_total", {"path": "/a.log"}),
        registry.get_sample_value("apigee_tls_log_lines_total", {"path": "/b.log"}),
        registry.get_sample_value("apigee_tls_unrecognised_lines_total", {"path": "/a.log"}),
        registry.get_sample_value("apigee_tls_unrecognised_lines_total", {"path": "/b.log"}),
    ]


@pytest.mark.parametrize("missing", [None, "cannot import isal.isal_zlib: no wheel"])
def test_build_info_carries_the_version_and_whether_compiled_parts_are_in_use(
    missing: Optional[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``apigee_tls_build_info{version,compiled}`` is 1 with the package version; ``compiled``
    is "false" when a compiled part could not be imported (the pure-Python fallback)."""
    parts = {"ahocorasick_rs": None, "isal": missing}
    monkeypatch.setattr(search, "compiled_parts", lambda: parts)
    registry = CollectorRegistry()
    registry.register(ExporterCollector(FailureStore(), lambda: [], PairingStats))
    labels = {"version": __version__, "compiled": "false" if missing else "true"}
    assert registry.get_sample_value("apigee_tls_build_info", labels) == 1.0


def test_last_failure_timestamps_match_a_generated_log(tmp_path: Path) -> None:
    """On a generated log, the last-failure gauge of every series is the log time of the last
    failure the generator wrote for it (read in UTC here), series by series."""
    gen = LogGenerator(seed=3)
    log = tmp_path / "system.log"
    log.write_text(gen.text(3000))
    expected: dict[tuple[str, ...], float] = {}
    for key, stamp in gen.last_failure_timestamps.items():
        moment = datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=timezone.utc)
        short = (key.org, key.env, key.target, key.reason, key.key_alias)
        expected[short] = max(expected.get(short, 0.0), moment.timestamp())
    result = scan([str(log)], tz=timezone.utc)
    assert expected == {labels: value for labels, value in result.store.last_items()}
