"""The status page at ``/``: what a person on the node wants to see, as plain HTML.

``Status`` is a frozen snapshot of the daemon, a plain value built by the daemon's wiring
(``run.app``) when the HTTP server asks for it in its render thread; ``render`` turns it into one
self-contained page: every value escaped, inline style only, no script, nothing fetched from
elsewhere. ``Recent`` keeps the last few items of a kind (failures seen, diagnosis keys) for it,
bounded.
"""

from __future__ import annotations

import collections
import html
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Generic, Optional, TypeVar

from .. import __version__
from ..records.events import Failure

__all__ = [
    "AlertStatus",
    "DiagnosisStatus",
    "HttpSummary",
    "LogStatus",
    "PredictionStatus",
    "Recent",
    "Status",
    "render",
]

T = TypeVar("T")
RECENT = 20  # failures and diagnoses shown


class Recent(Generic[T]):
    """The last ``size`` items added, newest first; an item added again moves to the front.
    Thread-safe (added by the follower, read by the HTTP server)."""

    def __init__(self, size: int = RECENT) -> None:
        self._items: collections.OrderedDict[T, None] = collections.OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def add(self, item: T) -> None:
        with self._lock:
            self._items.pop(item, None)
            self._items[item] = None
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def items(self) -> list[T]:
        with self._lock:
            return list(reversed(self._items))


class RecentFailures(Recent[Failure]):
    """A pipeline sink keeping the last failures for the status page."""

    def record(self, failure: Failure) -> None:
        self.add(failure)


@dataclass(frozen=True)
class LogStatus:
    path: str
    size: int
    offset: int
    last_read_age: Optional[float]  # seconds since data was last read; None: never
    lines: int
    rotations: Mapping[str, int] = field(default_factory=dict)
    errors: Mapping[str, int] = field(default_factory=dict)

    @property
    def lag(self) -> int:
        """Bytes in the file not read yet."""
        return max(0, self.size - self.offset)


@dataclass(frozen=True)
class AlertStatus:
    name: str
    severity: str
    org: str
    env: str
    target: str
    key_alias: str
    reason: str
    cause: str


@dataclass(frozen=True)
class DiagnosisStatus:
    org: str
    env: str
    target: str
    key_alias: str
    cause: str
    advice: str
    checked_at: float  # wall clock


@dataclass(frozen=True)
class PredictionStatus:
    """One ``/probe`` answer still in its cache: what the next handshake would do."""

    org: str
    env: str
    target: str
    key_alias: str
    cause: str
    success: bool
    checked_at: float  # wall clock


@dataclass(frozen=True)
class HttpSummary:
    connections: int = 0
    requests: Mapping[str, int] = field(default_factory=dict)
    rejected: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Status:
    now: float  # wall clock
    logs: tuple[LogStatus, ...] = ()
    failures: tuple[Failure, ...] = ()
    failures_total: float = 0.0
    alerts: tuple[AlertStatus, ...] = ()
    diagnoses: tuple[DiagnosisStatus, ...] = ()
    diagnosis_enabled: bool = False
    predictions: tuple[PredictionStatus, ...] = ()
    state_file: str = ""
    checkpoint_age: Optional[float] = None
    checkpoint_failing: bool = False
    reload_ok: bool = True
    reload_time: Optional[float] = None  # wall clock of the last successful load
    reload_error: Optional[str] = None
    started: Optional[float] = None  # wall clock
    version: str = __version__


def _alias(key_alias: str) -> str:
    """A key alias; an empty one says that no client certificate is configured."""
    if key_alias:
        return _e(key_alias)
    return '<span class="muted">(none: no client certificate)</span>'


# --- rendering ---------------------------------------------------------------------------------

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#111;background:#fff}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;margin:.2em 0}td,th{border:1px solid #ccc;padding:.2em .5em;
text-align:left;vertical-align:top}th{background:#f3f3f3}td.n{text-align:right}
.bad{color:#a00;font-weight:bold}.ok{color:#070}.muted{color:#666}
dl{display:grid;grid-template-columns:max-content auto;gap:.1em 1em}dt{font-weight:bold}dd{margin:0}
"""


def render(
    status: Optional[Status], *, phase: str = "ready", http: Optional[HttpSummary] = None
) -> str:
    """The whole page; ``status`` None (a server without a daemon) shows the links and HTTP."""
    now = status.now if status is not None else time.time()
    version = status.version if status is not None else __version__
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        "<title>apigee-tls-exporter status</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>apigee-tls-exporter</h1>",
        "<p>Southbound TLS handshake failures of the Apigee Message Processor. "
        f"Version {_e(version)}. "
        '<a href="/metrics">Metrics</a> · <a href="/-/ready">Ready</a> · '
        '<a href="/-/healthy">Healthy</a></p>',
        _overview(status, phase, now),
    ]
    if status is not None:
        parts += [
            _logs(status.logs),
            _alerts(status.alerts, status.diagnosis_enabled),
            _failures(status.failures, status.failures_total, now),
            _diagnoses(status.diagnoses, status.diagnosis_enabled, now),
            _predictions(status.predictions, now),
        ]
    if http is not None:
        parts.append(_http(http))
    parts.append(f'<p class="muted">Page made at {_e(_when(now))}.</p></body></html>\n')
    return "\n".join(parts)


def _overview(status: Optional[Status], phase: str, now: float) -> str:
    rows = [("State", _flag(phase == "ready", phase))]
    if status is not None:
        if status.started is not None:
            rows.append(("Started", _e(f"{_when(status.started)} ({_ago(now - status.started)})")))
        if status.checkpoint_failing:
            checkpoint = _flag(False, "failing to write")
        elif status.checkpoint_age is None:
            checkpoint = "not written yet"
        else:
            checkpoint = _e(f"written {_ago(status.checkpoint_age)}")
        where = f'<span class="muted">{_e(status.state_file)}</span>'
        rows.append(("Checkpoint", f"{checkpoint} {where}"))
        if status.reload_ok:
            loaded = f"loaded {_when(status.reload_time)}" if status.reload_time else "loaded"
            reload = _flag(True, loaded)
        else:
            reload = _flag(False, "last reload refused; the previous config stays in force")
            if status.reload_error:
                reload += f"<br>{_e(status.reload_error)}"
        rows.append(("Config", reload))
    body = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in rows)
    return f'<dl id="overview">{body}</dl>'


def _logs(logs: Iterable[LogStatus]) -> str:
    rows = []
    for entry in logs:
        rows.append(
            [
                _e(entry.path),
                _num(entry.size),
                _num(entry.offset),
                _num(entry.lag) if entry.lag == 0 else _flag(False, f"{entry.lag:,}"),
                _e(_ago(entry.last_read_age)) if entry.last_read_age is not None else "never",
                _num(entry.lines),
                _e(_counts(entry.rotations)) or "none",
                _flag(False, _counts(entry.errors)) if entry.errors else "none",
            ]
        )
    headings = ["Path", "Size (bytes)", "Read position", "Lag (bytes)", "Last read", "Lines"]
    return _table(
        "logs", "Followed logs", [*headings, "Rotations", "Errors"], rows, "No log is followed."
    )


def _alerts(alerts: Iterable[AlertStatus], diagnosis_enabled: bool) -> str:
    unknown = "not diagnosed yet" if diagnosis_enabled else "diagnosis not enabled"
    rows = [
        [
            _e(a.name),
            _e(a.severity),
            _e(a.org),
            _e(a.env),
            _e(a.target),
            _alias(a.key_alias),
            _e(a.reason),
            _e(a.cause) or f'<span class="muted">{unknown}</span>',
        ]
        for a in alerts
    ]
    headings = ["Alert", "Severity", "Org", "Env", "Target", "Key alias", "Reason", "Cause"]
    return _table("alerts", "Alerts firing", headings, rows, "No alert is firing.")


def _failures(failures: Iterable[Failure], total: float, now: float) -> str:
    rows = [
        [
            _e(_when(f.timestamp)),
            _e(f.org),
            _e(f.env),
            _e(f.api),
            _e(f.target),
            _e(f.reason),
            _alias(f.key_alias),
        ]
        for f in failures
    ]
    title = f"Last failures seen ({int(total):,} counted)"
    headings = ["Time (log)", "Org", "Env", "API", "Target", "Reason", "Key alias"]
    return _table("failures", title, headings, rows, "No failure seen since the start.")


def _diagnoses(diagnoses: Iterable[DiagnosisStatus], enabled: bool, now: float) -> str:
    rows = [
        [
            _e(_ago(now - d.checked_at)),
            _e(d.org),
            _e(d.env),
            _e(d.target),
            _alias(d.key_alias),
            _e(d.cause),
            _e(d.advice),
        ]
        for d in diagnoses
    ]
    empty = "No diagnosis yet." if enabled else "Diagnosis is not enabled in the config."
    headings = ["When", "Org", "Env", "Target", "Key alias", "Cause", "Advice"]
    return _table("diagnoses", "Last diagnoses", headings, rows, empty)


def _predictions(predictions: Iterable[PredictionStatus], now: float) -> str:
    rows = [
        [
            _e(_ago(now - p.checked_at)),
            _e(p.org),
            _e(p.env),
            _e(p.target),
            _alias(p.key_alias),
            f'<span class="{"ok" if p.success else "bad"}">{_e(p.cause)}</span>',
        ]
        for p in predictions
    ]
    empty = "No probe in the last minute (Prometheus scrapes /probe: see docs/probe.md)."
    headings = ["When", "Org", "Env", "Target", "Key alias", "Predicted"]
    return _table("predictions", "Predictions (/probe)", headings, rows, empty)


def _http(http: HttpSummary) -> str:
    requests = _counts(http.requests) or "none"
    rejected = _counts(http.rejected) or "none"
    return (
        '<h2>HTTP server</h2><dl id="http">'
        f"<dt>Open connections</dt><dd>{http.connections}</dd>"
        f"<dt>Answers by code</dt><dd>{_e(requests)}</dd>"
        f"<dt>Refused or cut short</dt><dd>{_e(rejected)}</dd></dl>"
    )


def _table(ident: str, title: str, headings: list[str], rows: list[list[str]], empty: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headings)
    if not rows:
        return f'<h2>{_e(title)}</h2><p id="{ident}" class="muted">{_e(empty)}</p>'
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f'<h2>{_e(title)}</h2><table id="{ident}"><tr>{head}</tr>{body}</table>'


class _Num(str):
    """A cell holding a number: right-aligned."""


def _cell(content: str) -> str:
    if isinstance(content, _Num):
        return f'<td class="n">{content}</td>'
    return f"<td>{content}</td>"


def _num(value: float) -> str:
    return _Num(f"{int(value):,}")


def _flag(good: bool, text: str) -> str:
    return f'<span class="{"ok" if good else "bad"}">{_e(text)}</span>'


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))


def _when(wall: Optional[float]) -> str:
    if wall is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(wall))


def _ago(seconds: Optional[float]) -> str:
    if seconds is None:
        return "never"
    if seconds < 1:
        return "just now"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} days ago"
