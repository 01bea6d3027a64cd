"""Failures and health -> alert state, evaluated in the daemon and exported as metrics.

Four rules, configured under ``alerts:`` (see ``config.AlertsConfig``):

``client_certificate_rejected`` (severity ``page``)
    at least ``min_failures`` failures whose reason says the backend rejected or could not use our
    client certificate (``bad_certificate``, ``certificate_required``, ``unknown_ca``,
    ``certificate_unknown``, ``certificate_expired``) within ``window`` for one
    (org, env, target, key_alias). Its ``reason`` label is the most frequent of those reasons among
    the failures that made it fire, and stays fixed while it fires.
``handshake_failures`` (``warning``)
    the same for every other reason, per (org, env, target, key_alias, reason).
``log_stalled`` (``warning``)
    a followed log not read for ``after`` while its file holds data we have not read (it grew, was
    replaced, or cannot be opened); with ``quiet_is_stalled`` a quiet log counts too. One alert
    for the node, ``reason="stalled"``, the other labels empty.
``format_drift`` (``warning``)
    at least ``min_lines`` lines within ``window`` that mention a handshake but match no rule: the
    sign that an Apigee upgrade changed the log format. It resolves once none came for
    ``window``. One alert for the node, ``reason="unrecognised_lines"``, the other labels empty.

The failure rules run on the log's own time: a failure counts while its timestamp is within
``window`` of "log now", the latest failure timestamp seen, carried forward by the (injected)
monotonic clock while no newer one arrives, so an alert resolves ``resolve_after`` after the last
failure even when the log goes quiet, and a backlog replays at its own pace. They fire as soon as
the failure that crosses the threshold is recorded and resolve in :meth:`AlertEngine.evaluate`.
The wall-time rules compare ``FileStats.last_read`` and the unrecognised-line counters with the
same monotonic clock.

Exported (at scrape time, from plain state that the checkpoint saves):
``apigee_tls_alert_firing{alertname,severity,org,env,target,key_alias,reason,cause}`` = 1 while an
alert fires, absent once resolved; ``apigee_tls_alert_transitions_total{alertname,state}``.
``cause`` comes from the optional ``cause_for(org, env, target, key_alias)`` hook (a diagnosis
worker), ``""`` until it knows; ``on_firing(org, env, target, key_alias)`` is called each time a
failure alert of either rule (page or warning) starts firing (and again for alerts restored from a
checkpoint) so that the worker can start diagnosing; ``firing_reason`` tells it the reason. Both
hooks must be quick and thread-safe: ``cause_for`` runs in the scrape.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Optional, Union

import structlog
from prometheus_client.core import Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr

from ..config import AlertsConfig, ClientCertificateRule, HandshakeFailuresRule
from ..records.events import Failure
from ..records.stats import FileStats
from . import families
from .families import ALERT_LABELS

__all__ = [
    "ALERT_LABELS",
    "CLIENT_CERTIFICATE_REJECTED",
    "FORMAT_DRIFT",
    "HANDSHAKE_FAILURES",
    "LOG_STALLED",
    "AlertCollector",
    "AlertEngine",
    "known_series",
]

log = structlog.get_logger(__name__)

CLIENT_CERTIFICATE_REJECTED = "client_certificate_rejected"
HANDSHAKE_FAILURES = "handshake_failures"
LOG_STALLED = "log_stalled"
FORMAT_DRIFT = "format_drift"
ALERT_NAMES = (CLIENT_CERTIFICATE_REJECTED, HANDSHAKE_FAILURES, LOG_STALLED, FORMAT_DRIFT)
FAILURE_ALERTS = (CLIENT_CERTIFICATE_REJECTED, HANDSHAKE_FAILURES)
STATES = ("firing", "resolved")
OTHER = "other"
MAX_AHEAD = 86400.0  # a failure timestamp further ahead of the wall clock does not move log time

# (alertname, org, env, target, key_alias, reason); reason is "" where it is not part of the key
Ident = tuple[str, str, str, str, str, str]

Finite = Annotated[float, Field(allow_inf_nan=False)]
Count = Annotated[StrictInt, Field(ge=0, le=1 << 62)]
S = StrictStr


class AlertsState(BaseModel):
    """An ``AlertEngine`` in the state file; rows lead with the six ``ALERT_LABELS`` values."""

    model_config = ConfigDict(extra="forbid")
    written_at: Finite
    log_now: Optional[Finite] = None
    windows: list[tuple[S, S, S, S, S, S, list[tuple[Finite, S]]]] = []  # failures in the window
    firing: list[tuple[S, S, S, S, S, S, S, S, Finite]] = []  # ..., severity, reason, last_seen
    transitions: list[tuple[S, S, Count]] = []  # rule, state, count
    unrecognised_seen: Count = 0
    drift: list[tuple[Finite, Count]] = []  # age in seconds, lines


CauseFor = Callable[[str, str, str, str], Optional[str]]
OnFiring = Callable[[str, str, str, str], object]
FailureRule = Union[ClientCertificateRule, HandshakeFailuresRule]


@dataclass
class Active:
    """A firing alert. ``last_seen``: log time of its latest failure (failure alerts only)."""

    severity: str
    reason: str
    last_seen: float = 0.0


def known_series(config: AlertsConfig) -> list[tuple[str, ...]]:
    """Failure label sets (``metrics.FAILURE_LABELS`` order) to create at 0 from the config."""
    return [
        (t.org, t.env, t.api, t.rev, t.target, reason, t.key_alias)
        for t in config.known_targets
        for reason in t.reasons
    ]


class AlertEngine:
    """Keeps the alert state. ``record`` is a pipeline sink; call ``evaluate`` after each step.

    ``files`` returns the followed logs and their stats; ``clock`` is the monotonic clock that
    ``FileStats.last_read`` uses; ``wall`` (seconds since the epoch) only measures the downtime
    between a checkpoint and its restore; ``stat`` is ``os.stat`` unless a test replaces it.
    """

    def __init__(
        self,
        config: AlertsConfig,
        files: Callable[[], Iterable[tuple[str, FileStats]]] = lambda: (),
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        stat: Callable[[str], os.stat_result] = os.stat,
        cause_for: Optional[CauseFor] = None,
        on_firing: Optional[OnFiring] = None,
    ) -> None:
        self.config = config
        self.cause_for = cause_for
        self.on_firing = on_firing
        self._files = files
        self._clock = clock
        self._wall = wall
        self._stat = stat
        self._lock = threading.Lock()
        self._started = clock()
        self._anchor: Optional[tuple[float, float]] = None  # (log time, clock) of "log now"
        self._windows: dict[Ident, collections.deque[tuple[float, str]]] = {}
        self.firing: dict[Ident, Active] = {}
        self.transitions: dict[tuple[str, str], int] = {
            (name, state): 0 for name in self.enabled_rules() for state in STATES
        }
        self._unrecognised_seen = 0
        self._drift: collections.deque[tuple[float, int]] = collections.deque()
        self._cause_failing = False
        self._ahead_logged = False

    def reconfigure(self, config: AlertsConfig) -> None:
        """A reload: new rules apply from the next evaluation; alerts firing stay until resolved."""
        with self._lock:
            self.config = config
            for name in self.enabled_rules():
                for state in STATES:
                    self.transitions.setdefault((name, state), 0)
            for ident, window in list(self._windows.items()):  # min_failures may have changed
                size = self._failure_rule(ident[0]).min_failures
                self._windows[ident] = collections.deque(window, maxlen=size)

    def enabled_rules(self) -> list[str]:
        if not self.config.enabled:
            return []
        return [name for name in ALERT_NAMES if getattr(self.config, name).enabled]

    # --- log time ---------------------------------------------------------------------------
    def log_now(self) -> Optional[float]:
        """The log's "now": the latest failure timestamp, carried on by the clock since then."""
        if self._anchor is None:
            return None
        at, seen = self._anchor
        return at + max(0.0, self._clock() - seen)

    def _observe(self, timestamp: float) -> float:
        now = self.log_now()
        if timestamp > self._wall() + MAX_AHEAD:
            # a clock or time zone gone wrong: following it would expire every window at once
            if not self._ahead_logged:
                log.warning(
                    "failure timestamp far ahead of the clock, not used as the log's time",
                    timestamp=timestamp,
                )
            self._ahead_logged = True
            return now if now is not None else timestamp
        if now is None or timestamp > now:
            self._anchor = (timestamp, self._clock())
            return timestamp
        return now

    # --- failures ---------------------------------------------------------------------------
    def record(self, failure: Failure) -> None:
        """Sink: count one failure; fire its alert if it crosses the threshold."""
        if not self.config.enabled:
            return
        with self._lock:
            fired = self._record(failure)
        if fired is not None:
            self._call_on_firing(fired)

    def _rule_for(self, reason: str) -> tuple[str, Optional[FailureRule]]:
        cert = self.config.client_certificate_rejected
        if reason in cert.reasons:
            return CLIENT_CERTIFICATE_REJECTED, cert if cert.enabled else None
        other = self.config.handshake_failures
        return HANDSHAKE_FAILURES, other if other.enabled else None

    def _record(self, failure: Failure) -> Optional[Ident]:
        now = self._observe(failure.timestamp)
        name, rule = self._rule_for(failure.reason)
        if rule is None:
            return None
        key_reason = failure.reason if name == HANDSHAKE_FAILURES else ""
        ident: Ident = (
            name,
            failure.org,
            failure.env,
            failure.target,
            failure.key_alias,
            key_reason,
        )
        if ident not in self._windows and len(self._windows) >= self.config.max_tracked:
            ident = (name, OTHER, OTHER, OTHER, OTHER, OTHER if key_reason else "")
        window = self._windows.get(ident)
        if window is None:
            window = self._windows[ident] = collections.deque(maxlen=rule.min_failures)
        window.append((failure.timestamp, failure.reason))
        active = self.firing.get(ident)
        if active is not None:
            active.last_seen = max(active.last_seen, failure.timestamp)
            return None
        recent = [(ts, reason) for ts, reason in window if ts >= now - rule.window]
        if len(recent) < rule.min_failures:
            return None
        self._fire(ident, rule.severity, _dominant(recent), max(ts for ts, _ in recent))
        return ident

    def _fire(self, ident: Ident, severity: str, reason: str, last_seen: float = 0.0) -> None:
        self.firing[ident] = Active(severity, reason, last_seen)
        self._count(ident[0], "firing")
        name, org, env, target, key_alias, _ = ident
        log.warning(
            "alert firing",
            alertname=name,
            severity=severity,
            org=org,
            env=env,
            target=target,
            key_alias=key_alias,
            reason=reason,
        )

    def _resolve(self, ident: Ident) -> None:
        active = self.firing.pop(ident)
        self._count(ident[0], "resolved")
        name, org, env, target, key_alias, _ = ident
        log.info(
            "alert resolved",
            alertname=name,
            org=org,
            env=env,
            target=target,
            key_alias=key_alias,
            reason=active.reason,
        )

    def _count(self, name: str, state: str) -> None:
        self.transitions[(name, state)] = self.transitions.get((name, state), 0) + 1

    def _call_on_firing(self, ident: Ident) -> None:
        if self.on_firing is None:
            return
        _, org, env, target, key_alias, _ = ident
        try:
            self.on_firing(org, env, target, key_alias)
        except Exception as err:  # a broken hook must not stop the pipeline
            log.error("on_firing hook failed", target=target, key_alias=key_alias, error=str(err))

    # --- evaluation -------------------------------------------------------------------------
    def evaluate(self) -> None:
        """Resolve failure alerts whose failures stopped; check the wall-time rules."""
        if not self.config.enabled:
            return
        with self._lock:
            self._evaluate_failures()
            files = list(self._files())
            self._set(LOG_STALLED, self._stalled(files))
            self._set(FORMAT_DRIFT, self._drifting(files))

    def _failure_rule(self, name: str) -> FailureRule:
        if name == CLIENT_CERTIFICATE_REJECTED:
            return self.config.client_certificate_rejected
        return self.config.handshake_failures

    def _evaluate_failures(self) -> None:
        now = self.log_now()
        if now is None:
            return
        for ident, active in list(self.firing.items()):
            if ident[0] not in FAILURE_ALERTS:
                continue
            rule = self._failure_rule(ident[0])
            resolve_after = rule.resolve_after or rule.window
            if now - active.last_seen > resolve_after:
                self._resolve(ident)
        for ident, window in list(self._windows.items()):
            rule = self._failure_rule(ident[0])
            keep = max(rule.window, rule.resolve_after or 0.0)
            if ident not in self.firing and max(ts for ts, _ in window) < now - keep:
                del self._windows[ident]

    def _set(self, name: str, reason: Optional[str]) -> None:
        ident: Ident = (name, "", "", "", "", "")
        if reason is not None and ident not in self.firing:
            self._fire(ident, getattr(self.config, name).severity, reason)
        elif reason is None and ident in self.firing:
            self._resolve(ident)

    def _stalled(self, files: list[tuple[str, FileStats]]) -> Optional[str]:
        """``"stalled"`` when a followed log is stalled, else None."""
        rule = self.config.log_stalled
        if not rule.enabled:
            return None
        now = self._clock()
        for path, stats in files:
            if now - max(stats.last_read, self._started) <= rule.after:
                continue
            if rule.quiet_is_stalled or self._unread(path, stats):
                return "stalled"
        return None

    def _unread(self, path: str, stats: FileStats) -> bool:
        """Does the file at ``path`` hold data the follower has not read?"""
        try:
            st = self._stat(path)
        except FileNotFoundError:
            return False  # not there (yet): the follower waits for it, nothing to read
        except OSError:
            return True  # there but unreadable
        return st.st_size != stats.offset

    def _drifting(self, files: list[tuple[str, FileStats]]) -> Optional[str]:
        """``"unrecognised_lines"`` while unrecognised lines keep appearing, else None."""
        rule = self.config.format_drift
        total = sum(stats.unrecognised for _, stats in files)
        now = self._clock()
        if total > self._unrecognised_seen:
            self._drift.append((now, total - self._unrecognised_seen))
        self._unrecognised_seen = total
        while self._drift and self._drift[0][0] < now - rule.window:
            self._drift.popleft()
        if not rule.enabled:
            return None
        count = sum(n for _, n in self._drift)
        firing = (FORMAT_DRIFT, "", "", "", "", "") in self.firing
        if count >= rule.min_lines or (firing and count > 0):
            return "unrecognised_lines"
        return None

    # --- metrics ----------------------------------------------------------------------------
    def firing_series(self) -> list[tuple[tuple[str, ...], int]]:
        """Label values (``ALERT_LABELS`` order) of each firing alert, with the value 1."""
        with self._lock:
            items = sorted(self.firing.items())
        out: list[tuple[tuple[str, ...], int]] = []
        for (name, org, env, target, key_alias, _), active in items:
            cause = self._cause(org, env, target, key_alias) if name in FAILURE_ALERTS else ""
            out.append(
                ((name, active.severity, org, env, target, key_alias, active.reason, cause), 1)
            )
        return out

    def firing_reason(self, org: str, env: str, target: str, key_alias: str) -> Optional[str]:
        """The reason of the failure alert firing for this key (the page's, if both fire): what
        the MP received, for the diagnosis to explain when no cause is certain."""
        with self._lock:
            for name in FAILURE_ALERTS:
                for ident, active in self.firing.items():
                    if ident[0] == name and ident[1:5] == (org, env, target, key_alias):
                        return active.reason
        return None

    def _cause(self, org: str, env: str, target: str, key_alias: str) -> str:
        if self.cause_for is None:
            return ""
        try:
            cause = self.cause_for(org, env, target, key_alias) or ""
        except Exception as err:  # a broken hook must not break the scrape
            if not self._cause_failing:
                log.error("cause_for hook failed", target=target, error=str(err))
            self._cause_failing = True
            return ""
        self._cause_failing = False
        return cause

    def transition_counts(self) -> list[tuple[tuple[str, str], int]]:
        with self._lock:
            return sorted(self.transitions.items())

    # --- checkpoint -------------------------------------------------------------------------
    def snapshot(self) -> AlertsState:
        """The alert state, for the checkpoint."""
        with self._lock:
            now = self._clock()
            return AlertsState(
                written_at=self._wall(),
                log_now=self.log_now(),
                windows=[(*ident, list(w)) for ident, w in self._windows.items()],
                firing=[
                    (*ident, a.severity, a.reason, a.last_seen) for ident, a in self.firing.items()
                ],
                transitions=[(name, state, n) for (name, state), n in self.transitions.items()],
                unrecognised_seen=self._unrecognised_seen,
                drift=[(now - at, n) for at, n in self._drift],
            )

    def restore(self, state: Optional[AlertsState]) -> None:
        """Take back a ``snapshot``; the log's time moves on by the downtime. ``None`` (a state
        file without alert state, or none usable) starts clean from the current counters."""
        callbacks: list[Ident] = []
        with self._lock:
            self._windows.clear()
            self.firing.clear()
            self._drift.clear()
            self._anchor = None
            self.transitions = {(n, s): 0 for n in self.enabled_rules() for s in STATES}
            if state is None:
                self._unrecognised_seen = sum(s.unrecognised for _, s in self._files())
                return
            downtime = max(0.0, self._wall() - state.written_at)
            now = self._clock()
            if state.log_now is not None:
                self._anchor = (state.log_now + downtime, now)
            for *window_ident, entries in state.windows:
                ident = _ident(window_ident)
                rule = self._failure_rule(ident[0])
                self._windows[ident] = collections.deque(entries, maxlen=rule.min_failures)
            for *firing_ident, severity, reason, last_seen in state.firing:
                ident = _ident(firing_ident)
                self.firing[ident] = Active(severity, reason, last_seen)
                if ident[0] in FAILURE_ALERTS:
                    callbacks.append(ident)
            for name, state_name, n in state.transitions:
                self.transitions[(name, state_name)] = n
            self._unrecognised_seen = state.unrecognised_seen
            for age, n in state.drift:
                self._drift.append((now - age - downtime, n))
        for ident in callbacks:
            self._call_on_firing(ident)

    def collector(self) -> AlertCollector:
        return AlertCollector(self)


def _ident(values: list[Any]) -> Ident:
    a, b, c, d, e, f = (str(v) for v in values)
    return (a, b, c, d, e, f)


def _dominant(entries: list[tuple[float, str]]) -> str:
    """The most frequent reason; between equals, the one seen last."""
    counts = collections.Counter(reason for _, reason in entries)
    latest = {reason: ts for ts, reason in sorted(entries)}
    return max(counts, key=lambda reason: (counts[reason], latest[reason]))


class AlertCollector(Collector):
    """Yields ``apigee_tls_alert_firing`` and ``apigee_tls_alert_transitions_total``."""

    def __init__(self, engine: AlertEngine) -> None:
        self._engine = engine

    def collect(self) -> Iterator[Metric]:
        firing = families.ALERT_FIRING.new()
        for labels, value in self._engine.firing_series():
            firing.add_metric(labels, value)
        yield firing
        transitions = families.ALERT_TRANSITIONS.new()
        for (name, state), n in self._engine.transition_counts():
            transitions.add_metric((name, state), n)
        yield transitions
