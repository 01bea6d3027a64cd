"""The daemon's alert rules: firing and resolving on the log's time, wall-time health rules, hooks,
checkpoints, bounds, and the metrics they export."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional

import pytest
from apigee_tls_exporter.config import AlertsConfig, ConfigError, validate
from apigee_tls_exporter.records.events import Failure
from apigee_tls_exporter.records.stats import FileStats
from apigee_tls_exporter.run.app import Daemon
from apigee_tls_exporter.state.alerts import (
    CLIENT_CERTIFICATE_REJECTED,
    FORMAT_DRIFT,
    HANDSHAKE_FAILURES,
    LOG_STALLED,
    AlertEngine,
    AlertsState,
    known_series,
)
from helpers import records
from helpers.clock import FakeClock
from prometheus_client import CollectorRegistry

T0 = 1_795_773_600.0  # 2026-11-27 10:00:00 UTC: log time of the first failure in these tests


def alerts_config(**sections: Any) -> AlertsConfig:
    return validate({"alerts": sections}).alerts


def failure(
    at: float,
    reason: str = "bad_certificate",
    *,
    target: str = "payments.internal:443",
    key_alias: str = "backend-client",
    org: str = "acme",
    env: str = "prod",
) -> Failure:
    return Failure(
        org=org,
        env=env,
        api="payments-v1",
        rev="7",
        target=target,
        reason=reason,
        key_alias=key_alias,
        timestamp=at,
    )


def firing_value(registry: CollectorRegistry, **labels: str) -> Optional[float]:
    full = {
        "alertname": CLIENT_CERTIFICATE_REJECTED,
        "severity": "page",
        "org": "acme",
        "env": "prod",
        "target": "payments.internal:443",
        "key_alias": "backend-client",
        "reason": "bad_certificate",
        "cause": "",
    }
    full.update(labels)
    return registry.get_sample_value("apigee_tls_alert_firing", full)


def transitions(registry: CollectorRegistry, alertname: str, state: str) -> Optional[float]:
    return registry.get_sample_value(
        "apigee_tls_alert_transitions_total", {"alertname": alertname, "state": state}
    )


@pytest.fixture
def clock() -> FakeClock:
    """A fake monotonic clock."""
    return FakeClock(T0)


def make_engine(
    clock: FakeClock, config: Optional[AlertsConfig] = None, **kwargs: Any
) -> tuple[AlertEngine, CollectorRegistry]:
    engine = AlertEngine(config or AlertsConfig(), clock=clock, wall=clock, **kwargs)
    registry = CollectorRegistry()
    registry.register(engine.collector())
    return engine, registry


# --- client_certificate_rejected -----------------------------------------------------------------


def test_client_certificate_alert_fires_at_the_threshold(clock: FakeClock) -> None:
    """Three bad_certificate failures within 5 minutes of log time for one (org, env, target,
    key_alias) fire a page; two do not."""
    engine, registry = make_engine(clock)
    engine.record(failure(T0))
    engine.record(failure(T0 + 60))
    engine.evaluate()
    assert firing_value(registry) is None
    engine.record(failure(T0 + 120))
    assert firing_value(registry) == 1.0
    assert transitions(registry, CLIENT_CERTIFICATE_REJECTED, "firing") == 1.0
    assert transitions(registry, CLIENT_CERTIFICATE_REJECTED, "resolved") == 0.0


def test_failures_spread_wider_than_the_window_do_not_fire(clock: FakeClock) -> None:
    """Failures further apart in log time than the window never add up, even when they are read
    at the same instant (a backlog replay)."""
    engine, registry = make_engine(clock)
    for i in range(5):
        engine.record(failure(T0 + i * 301))
    engine.evaluate()
    assert firing_value(registry) is None
    assert transitions(registry, CLIENT_CERTIFICATE_REJECTED, "firing") == 0.0


def test_alert_resolves_when_the_log_time_passes_the_window(clock: FakeClock) -> None:
    """Once failures stop, the log's time moves on with the clock and the alert resolves after
    resolve_after (default: the window); its series disappears."""
    engine, registry = make_engine(clock)
    for i in range(3):
        engine.record(failure(T0 + i))
    clock.advance(299)
    engine.evaluate()
    assert firing_value(registry) == 1.0
    clock.advance(5)
    engine.evaluate()
    assert firing_value(registry) is None
    assert transitions(registry, CLIENT_CERTIFICATE_REJECTED, "resolved") == 1.0


def test_alert_stays_firing_while_failures_continue(clock: FakeClock) -> None:
    """A failure within resolve_after of log time keeps the alert firing, without a new
    transition."""
    config = alerts_config(client_certificate_rejected={"window": "1m"})
    engine, registry = make_engine(clock, config)
    for i in range(20):
        engine.record(failure(T0 + i * 20))
        engine.evaluate()
        assert firing_value(registry) == (1.0 if i >= 2 else None)
    assert transitions(registry, CLIENT_CERTIFICATE_REJECTED, "firing") == 1.0


def test_resolve_after_overrides_the_window(clock: FakeClock) -> None:
    """With resolve_after 30s, the alert resolves 30 s of log time after its last failure."""
    config = alerts_config(client_certificate_rejected={"window": "5m", "resolve_after": "30s"})
    engine, registry = make_engine(clock, config)
    for i in range(3):
        engine.record(failure(T0 + i))
    clock.advance(29)
    engine.evaluate()
    assert firing_value(registry) == 1.0
    clock.advance(2)
    engine.evaluate()
    assert firing_value(registry) is None


def test_reason_label_is_the_most_frequent_client_certificate_reason(clock: FakeClock) -> None:
    """Mixed reasons of the client-certificate family add up; the alert's reason is the most
    frequent among them."""
    engine, registry = make_engine(clock)
    engine.record(failure(T0, "unknown_ca"))
    engine.record(failure(T0 + 1, "certificate_required"))
    engine.record(failure(T0 + 2, "certificate_required"))
    assert firing_value(registry, reason="certificate_required") == 1.0
    assert firing_value(registry, reason="unknown_ca") is None


def test_each_key_alias_has_its_own_alert(clock: FakeClock) -> None:
    """Failures of two key aliases on one target do not add up."""
    engine, registry = make_engine(clock)
    engine.record(failure(T0, key_alias="a"))
    engine.record(failure(T0 + 1, key_alias="b"))
    engine.record(failure(T0 + 2, key_alias="a"))
    assert firing_value(registry, key_alias="a") is None
    engine.record(failure(T0 + 3, key_alias="a"))
    assert firing_value(registry, key_alias="a") == 1.0
    assert firing_value(registry, key_alias="b") is None


# --- handshake_failures ---------------------------------------------------------------------------


def test_other_reasons_fire_a_warning_per_reason(clock: FakeClock) -> None:
    """Ten handshake_failure failures within the window fire a warning for that reason; other
    reasons on the same target count separately; client-certificate reasons never count here."""
    engine, registry = make_engine(clock)
    for i in range(9):
        engine.record(failure(T0 + i, "handshake_failure"))
        engine.record(failure(T0 + i, "remote_closed"))
    engine.record(failure(T0 + 9, "bad_certificate"))
    labels = {"alertname": HANDSHAKE_FAILURES, "severity": "warning"}
    assert firing_value(registry, reason="handshake_failure", **labels) is None
    engine.record(failure(T0 + 10, "handshake_failure"))
    assert firing_value(registry, reason="handshake_failure", **labels) == 1.0
    assert firing_value(registry, reason="remote_closed", **labels) is None
    assert transitions(registry, CLIENT_CERTIFICATE_REJECTED, "firing") == 0.0


def test_a_disabled_rule_never_fires(clock: FakeClock) -> None:
    """client_certificate_rejected.enabled false: no alert and no transition series."""
    engine, registry = make_engine(clock, alerts_config(client_certificate_rejected={"enabled": 0}))
    for i in range(10):
        engine.record(failure(T0 + i))
    engine.evaluate()
    assert firing_value(registry) is None
    assert transitions(registry, CLIENT_CERTIFICATE_REJECTED, "firing") is None
    assert transitions(registry, HANDSHAKE_FAILURES, "firing") == 0.0


def test_all_alerts_disabled_exports_no_alert_series(clock: FakeClock) -> None:
    """alerts.enabled false: the engine keeps no state and exports no sample."""
    engine, registry = make_engine(clock, alerts_config(enabled=False))
    for i in range(10):
        engine.record(failure(T0 + i))
    engine.evaluate()
    samples = [s for m in registry.collect() for s in m.samples]
    assert samples == []


def test_tracked_keys_are_bounded(clock: FakeClock) -> None:
    """Past max_tracked keys, new (org, env, target, key_alias) go to one key labelled other."""
    engine, registry = make_engine(clock, alerts_config(max_tracked=2))
    for i, alias in enumerate(("a", "b", "c", "d", "e")):
        engine.record(failure(T0 + i, key_alias=alias))
    other = {"org": "other", "env": "other", "target": "other", "key_alias": "other"}
    assert firing_value(registry, **other) == 1.0
    assert len(engine.snapshot().windows) == 3


# --- hooks ---------------------------------------------------------------------------------------


def test_cause_label_comes_from_the_hook(clock: FakeClock) -> None:
    """The cause label is "" until cause_for knows, then its answer; on_firing is called once
    with (org, env, target, key_alias) when the alert starts firing."""
    causes: dict[tuple[str, str, str, str], str] = {}
    calls: list[tuple[str, str, str, str]] = []
    engine, registry = make_engine(
        clock,
        cause_for=lambda *key: causes.get(key),
        on_firing=lambda *key: calls.append(key),
    )
    for i in range(5):
        engine.record(failure(T0 + i))
    key = ("acme", "prod", "payments.internal:443", "backend-client")
    assert calls == [key]
    assert firing_value(registry) == 1.0
    causes[key] = "ca_mismatch"
    assert firing_value(registry) is None
    assert firing_value(registry, cause="ca_mismatch") == 1.0


def test_broken_hooks_do_not_stop_the_pipeline(clock: FakeClock) -> None:
    """Exceptions from on_firing and cause_for are logged; recording and scraping carry on."""

    def broken(*key: str) -> Any:
        raise RuntimeError("diagnosis unavailable")

    engine, registry = make_engine(clock, cause_for=broken, on_firing=broken)
    for i in range(3):
        engine.record(failure(T0 + i))
    assert firing_value(registry) == 1.0


# --- log_stalled ---------------------------------------------------------------------------------


class Files:
    """Followed files for the engine: stats by path, and their sizes as os.stat would see them."""

    def __init__(self, path: str = "/var/log/mp/system.log") -> None:
        self.path = path
        self.stats = FileStats()
        self.size: Optional[int] = 0  # None: the file does not exist
        self.error: Optional[OSError] = None

    def __call__(self) -> list[tuple[str, FileStats]]:
        return [(self.path, self.stats)]

    def stat(self, path: str) -> os.stat_result:
        assert path == self.path
        if self.error is not None:
            raise self.error
        if self.size is None:
            raise FileNotFoundError(path)
        return os.stat_result((0o100644, 1, 1, 1, 0, 0, self.size, 0, 0, 0))


def stalled(registry: CollectorRegistry) -> Optional[float]:
    labels = dict.fromkeys(("org", "env", "target", "key_alias", "cause"), "")
    return registry.get_sample_value(
        "apigee_tls_alert_firing",
        {"alertname": LOG_STALLED, "severity": "warning", "reason": "stalled", **labels},
    )


def test_log_stalled_fires_when_the_file_grows_unread(clock: FakeClock) -> None:
    """The file holds data past our offset and nothing was read for longer than `after`: a
    warning; reading again resolves it."""
    files = Files()
    engine, registry = make_engine(
        clock, alerts_config(log_stalled={"after": "2m"}), files=files, stat=files.stat
    )
    files.stats.offset = files.size = 100
    files.stats.last_read = clock()
    clock.advance(100)
    files.size = 200
    engine.evaluate()
    assert stalled(registry) is None
    clock.advance(21)
    engine.evaluate()
    assert stalled(registry) == 1.0
    files.stats.offset = 200
    files.stats.last_read = clock()
    engine.evaluate()
    assert stalled(registry) is None
    assert transitions(registry, LOG_STALLED, "resolved") == 1.0


def test_a_quiet_log_is_not_stalled(clock: FakeClock) -> None:
    """Nothing new to read is not a stall, however long it lasts."""
    files = Files()
    engine, registry = make_engine(clock, files=files, stat=files.stat)
    files.stats.offset = files.size = 100
    clock.advance(3600)
    engine.evaluate()
    assert stalled(registry) is None


def test_quiet_is_stalled_makes_silence_a_stall(clock: FakeClock) -> None:
    """With quiet_is_stalled, a log not read for `after` is stalled even with nothing to read."""
    files = Files()
    config = alerts_config(log_stalled={"after": "1m", "quiet_is_stalled": True})
    engine, registry = make_engine(clock, config, files=files, stat=files.stat)
    files.stats.offset = files.size = 100
    clock.advance(61)
    engine.evaluate()
    assert stalled(registry) == 1.0


def test_an_unreadable_log_is_stalled_and_a_missing_one_is_not(clock: FakeClock) -> None:
    """A log we cannot stat (permission denied) stalls after `after`; a log that does not exist
    is waited for, not a stall."""
    files = Files()
    engine, registry = make_engine(clock, files=files, stat=files.stat)
    files.size = None
    clock.advance(301)
    engine.evaluate()
    assert stalled(registry) is None
    files.error = PermissionError(13, "Permission denied")
    engine.evaluate()
    assert stalled(registry) == 1.0


# --- format_drift --------------------------------------------------------------------------------


def drift(registry: CollectorRegistry) -> Optional[float]:
    labels = dict.fromkeys(("org", "env", "target", "key_alias", "cause"), "")
    return registry.get_sample_value(
        "apigee_tls_alert_firing",
        {
            "alertname": FORMAT_DRIFT,
            "severity": "warning",
            "reason": "unrecognised_lines",
            **labels,
        },
    )


def test_format_drift_fires_on_unrecognised_lines_and_resolves_after_the_window(
    clock: FakeClock,
) -> None:
    """New unrecognised handshake lines fire format_drift; it resolves once none appeared for
    the window."""
    files = Files()
    engine, registry = make_engine(
        clock, alerts_config(format_drift={"window": "10m"}), files=files, stat=files.stat
    )
    engine.evaluate()
    assert drift(registry) is None
    files.stats.unrecognised = 2
    engine.evaluate()
    assert drift(registry) == 1.0
    clock.advance(599)
    engine.evaluate()
    assert drift(registry) == 1.0
    clock.advance(2)
    engine.evaluate()
    assert drift(registry) is None
    assert transitions(registry, FORMAT_DRIFT, "resolved") == 1.0


def test_format_drift_needs_min_lines(clock: FakeClock) -> None:
    """With min_lines 5, four unrecognised lines within the window do not fire; a fifth does."""
    files = Files()
    config = alerts_config(format_drift={"min_lines": 5})
    engine, registry = make_engine(clock, config, files=files, stat=files.stat)
    files.stats.unrecognised = 4
    engine.evaluate()
    assert drift(registry) is None
    files.stats.unrecognised = 5
    engine.evaluate()
    assert drift(registry) == 1.0


def test_restored_counters_are_not_drift(clock: FakeClock) -> None:
    """Unrecognised lines counted before a restart (restored counters, no alert state) are the
    baseline, not new drift."""
    files = Files()
    engine, registry = make_engine(clock, files=files, stat=files.stat)
    files.stats.unrecognised = 40
    engine.restore(None)
    engine.evaluate()
    assert drift(registry) is None


# --- checkpoint ----------------------------------------------------------------------------------


def test_firing_alert_survives_a_restart(clock: FakeClock) -> None:
    """A snapshot taken while an alert fires restores it firing, with its transitions, and
    on_firing is called again so that the diagnosis is redone."""
    engine, _ = make_engine(clock)
    for i in range(3):
        engine.record(failure(T0 + i))
    state = AlertsState.model_validate_json(engine.snapshot().model_dump_json())
    calls: list[tuple[str, ...]] = []
    later = FakeClock(clock() + 10)
    restored, registry = make_engine(later, on_firing=lambda *key: calls.append(key))
    restored.restore(state)
    restored.evaluate()
    assert firing_value(registry) == 1.0
    assert transitions(registry, CLIENT_CERTIFICATE_REJECTED, "firing") == 1.0
    assert calls == [("acme", "prod", "payments.internal:443", "backend-client")]


def test_downtime_moves_the_log_time_on(clock: FakeClock) -> None:
    """After a restart, the log's time has moved on by the downtime: an alert whose failures are
    now older than the window resolves at the first evaluation."""
    engine, _ = make_engine(clock)
    for i in range(3):
        engine.record(failure(T0 + i))
    state = engine.snapshot()
    later = FakeClock(clock() + 600)
    restored, registry = make_engine(later)
    restored.restore(state)
    restored.evaluate()
    assert firing_value(registry) is None
    assert transitions(registry, CLIENT_CERTIFICATE_REJECTED, "resolved") == 1.0


def test_windows_survive_a_restart(clock: FakeClock) -> None:
    """Two failures before a quick restart and one after add up to the threshold."""
    engine, _ = make_engine(clock)
    engine.record(failure(T0))
    engine.record(failure(T0 + 1))
    state = engine.snapshot()
    later = FakeClock(clock() + 5)
    restored, registry = make_engine(later)
    restored.restore(state)
    restored.record(failure(T0 + 10))
    assert firing_value(registry) == 1.0


# --- config --------------------------------------------------------------------------------------


def test_alerts_config_defaults() -> None:
    """The defaults: 3 client-certificate failures in 5 minutes page; 10 others in 5 minutes warn;
    a log stalled for 5 minutes and any unrecognised line within 15 minutes warn."""
    config = AlertsConfig()
    assert config.client_certificate_rejected.min_failures == 3
    assert config.client_certificate_rejected.window == 300.0
    assert config.client_certificate_rejected.severity == "page"
    assert config.handshake_failures.min_failures == 10
    assert config.handshake_failures.severity == "warning"
    assert config.log_stalled.after == 300.0
    assert config.format_drift.window == 900.0


def test_alerts_config_rejects_unknown_keys_and_bad_durations() -> None:
    """Unknown keys and unreadable durations are reported with their location."""
    with pytest.raises(ConfigError) as err:
        validate(
            {"alerts": {"log_stalled": {"afterwards": "1m"}, "format_drift": {"window": "soon"}}}
        )
    problems = "\n".join(err.value.problems)
    assert "alerts.log_stalled.afterwards: unknown key" in problems
    assert "alerts.format_drift.window:" in problems


def test_known_targets_become_failure_label_sets() -> None:
    """Each known target gives one label set per listed reason, in FAILURE_LABELS order."""
    config = alerts_config(
        known_targets=[
            {
                "org": "acme",
                "env": "prod",
                "api": "payments-v1",
                "rev": "7",
                "target": "payments.internal:443",
                "key_alias": "backend-client",
                "reasons": ["bad_certificate", "unknown_ca"],
            }
        ]
    )
    proxy = ("acme", "prod", "payments-v1", "7", "payments.internal:443")
    assert known_series(config) == [
        (*proxy, "bad_certificate", "backend-client"),
        (*proxy, "unknown_ca", "backend-client"),
    ]


# --- wired into the daemon -----------------------------------------------------------------------


def failure_lines(stamp: str, message_id: str, alias: str = "backend-client") -> str:
    """One bad_certificate failure as the MP logs it: failure line, SSLInfo, onException."""
    ctx = records.context(message_id)
    return records.text(
        [
            records.failed(remote="payments.internal/10.20.3.4:443", ctx=ctx, stamp=stamp),
            records.ssl_info(alias=alias, ctx=ctx, stamp=stamp),
            *records.on_exception(ctx=ctx, stamp=stamp),
        ]
    )


def test_daemon_fires_exports_and_checkpoints_alerts(tmp_path: Path, clock: FakeClock) -> None:
    """The daemon feeds its failures to the engine: three bad_certificate records in its log fire
    the page; known targets exist at 0; the alert state is in the checkpoint and comes back."""
    log_path = tmp_path / "system.log"
    log_path.write_text("")
    config = validate(
        {
            "logs": [{"path": str(log_path)}],
            "from_beginning": True,
            "timezone": "UTC",
            "state_file": str(tmp_path / "state.json"),
            "alerts": {
                "known_targets": [
                    {
                        "org": "acme",
                        "env": "prod",
                        "api": "payments-v1",
                        "rev": "7",
                        "target": "ledger.corp.example:8443",
                        "key_alias": "ledger-mtls",
                    }
                ]
            },
        }
    )
    registry = CollectorRegistry()
    daemon = Daemon(config, registry, clock=clock, wall=clock)
    known = {
        "org": "acme",
        "env": "prod",
        "api": "payments-v1",
        "rev": "7",
        "target": "ledger.corp.example:8443",
        "reason": "bad_certificate",
        "key_alias": "ledger-mtls",
    }
    assert registry.get_sample_value("apigee_tls_handshake_failures_total", known) == 0.0
    with log_path.open("a") as f:
        for i in range(3):
            f.write(failure_lines(f"2026-11-27 10:00:0{i},100", f"rrt-{i}"))
    daemon.step()
    assert firing_value(registry) == 1.0
    daemon.save_checkpoint()
    daemon.close()

    registry2 = CollectorRegistry()
    daemon2 = Daemon(config, registry2, clock=clock, wall=clock)
    daemon2.restore()
    daemon2.step()
    assert firing_value(registry2) == 1.0
    assert registry2.get_sample_value("apigee_tls_handshake_failures_total", known) == 0.0
    clock.advance(301)
    daemon2.step()
    assert firing_value(registry2) is None
    assert transitions(registry2, CLIENT_CERTIFICATE_REJECTED, "resolved") == 1.0
    daemon2.close()


def test_reload_with_a_higher_threshold_still_fires(clock: FakeClock) -> None:
    """After a reload raises min_failures from 3 to 5, failures seen before the reload still count
    and the fifth within the window fires."""
    engine, registry = make_engine(clock)
    engine.record(failure(T0))
    engine.record(failure(T0 + 1))
    engine.reconfigure(alerts_config(client_certificate_rejected={"min_failures": 5}))
    engine.record(failure(T0 + 2))
    engine.record(failure(T0 + 3))
    assert firing_value(registry) is None
    engine.record(failure(T0 + 4))
    assert firing_value(registry) == 1.0


def test_a_timestamp_far_in_the_future_does_not_move_the_log_time() -> None:
    """One failure stamped a year ahead of the wall clock (a broken clock) still counts for its own
    key, but does not become the log's time: later failures still fire."""
    clock = FakeClock(T0)  # the wall clock of this test is the log's clock
    engine, registry = make_engine(clock)
    engine.record(failure(T0 + 365 * 86400, "handshake_failure"))
    for i in range(3):
        engine.record(failure(T0 + i))
    engine.evaluate()
    assert firing_value(registry) == 1.0
