"""A realistic Message Processor ``system.log`` generator that knows its own truth.

Used by the ``demo`` command (``command.py``: the demo writer), by the benchmark and by the tests;
it imports nothing of the daemon. The text follows
``mp-log-format.md``: ordinary traffic of several threads, with and without the
``org: env: api: rev: messageid:`` block (two spaces after the timestamp, sometimes, when it is
absent), stack traces whose lines carry no timestamp, and southbound TLS handshake failures of every
kind the exporter classifies, each followed in its own thread by its ``SSLInfo`` line (or, on
purpose, by none) and by the ``RequestWriteListener.onException()`` record that repeats the alert.

The generator counts what it writes with the rules of issue 2: one count per ``handshakeFailed`` or
``handshakeTimeout`` record, keyed by ``(org, env, api, rev, target, reason, key_alias)``. An
``SSLInfo`` line is written at most a few records after its failure, so no pairing window decides
the truth. A failure's pieces are written over several records; :attr:`LogGenerator.truth` is exact
whenever no failure is open (:attr:`LogGenerator.open_failures` is 0), which :meth:`take`,
:meth:`drain` and :func:`write_log` guarantee.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Callable, NamedTuple, Optional

__all__ = [
    "DEMO_INCIDENTS",
    "Backend",
    "Bursts",
    "DemoWriter",
    "GeneratedLog",
    "Incident",
    "LogGenerator",
    "Proxy",
    "TruthKey",
    "demo_alerts",
    "write_log",
]


class TruthKey(NamedTuple):
    """The labels of ``apigee_tls_handshake_failures_total`` for one failure."""

    org: str
    env: str
    api: str
    rev: str
    target: str
    reason: str
    key_alias: str


@dataclass(frozen=True)
class Backend:
    """A TargetServer: where the MP connects, and the SSLInfo it is configured with."""

    host: Optional[str]  # None: the target is configured by IP address
    ip: str
    port: int
    key_alias: Optional[str]  # None: one-way TLS, logged as KeyAlias:null
    keystore: str  # JVM identity of the keystore object, e.g. java.security.KeyStore@52de60d9
    truststore: str


@dataclass(frozen=True)
class Proxy:
    """An API proxy deployed in one org and environment, load balancing over its backends."""

    org: str
    env: str
    api: str
    revs: tuple[str, ...]
    backends: tuple[Backend, ...]


_PAYMENTS = Backend("payments.internal", "10.20.3.4", 443, "backend-client", "52de60d9", "6ec45759")
_PAYMENTS_DR = Backend(
    "payments-dr.internal", "10.20.7.4", 443, "backend-client-dr", "1b6d3586", "6ec45759"
)
_LEDGER = Backend("ledger.corp.example", "10.30.1.15", 8443, "ledger-mtls", "4554617c", "74a14482")
_PARTNER = Backend("api.partner.example.com", "203.0.113.25", 443, None, "null", "7f31245a")
_LEGACY = Backend(None, "10.40.2.9", 443, None, "null", "74a14482")
_CRM = Backend("crm.globex.local", "10.50.0.12", 443, "globex-client", "6d06d69c", "3f99bd52")
_STOCK = Backend("inventory.globex.local", "10.50.0.40", 9443, None, "null", "3f99bd52")

DEFAULT_PROXIES: tuple[Proxy, ...] = (
    Proxy("acme", "prod", "payments-v1", ("7", "8"), (_PAYMENTS, _PAYMENTS_DR)),
    Proxy("acme", "test", "payments-v1", ("9",), (_PAYMENTS, _PAYMENTS_DR)),
    Proxy("acme", "prod", "ledger-v2", ("3",), (_LEDGER,)),
    Proxy("acme", "prod", "partner-quotes", ("12",), (_PARTNER,)),
    Proxy("acme", "prod", "legacy-orders", ("1",), (_LEGACY,)),
    Proxy("globex", "prod", "crm-sync", ("4",), (_CRM,)),
    Proxy("globex", "prod", "stock", ("2", "3"), (_STOCK,)),
)


@dataclass(frozen=True)
class Incident:
    """What fails during one burst of the demo: one backend of one proxy, with one reason, every
    failure with its SSLInfo line (so the incident is one alert: one org, env, target and key
    alias)."""

    proxy: Proxy
    backend: Backend
    reason: str


# The demo's incidents, in turn: two pages (client certificate rejected) and two warnings.
DEMO_INCIDENTS: tuple[Incident, ...] = (
    Incident(DEFAULT_PROXIES[0], _PAYMENTS, "bad_certificate"),
    Incident(DEFAULT_PROXIES[4], _LEGACY, "handshake_failure"),
    Incident(DEFAULT_PROXIES[5], _CRM, "certificate_required"),
    Incident(DEFAULT_PROXIES[3], _PARTNER, "remote_closed"),
)


class Bursts:
    """A schedule of failure bursts: ``burst`` seconds of one incident's failures, then ``pause``
    seconds without failures, the incidents in turn, from ``start`` (a burst first)."""

    def __init__(
        self,
        burst: float,
        pause: float,
        start: float,
        incidents: tuple[Incident, ...] = DEMO_INCIDENTS,
    ) -> None:
        if burst <= 0 or pause < 0:
            raise ValueError("burst must be positive and pause not negative")
        self.burst, self.pause, self.start, self.incidents = burst, pause, start, incidents

    def incident_at(self, now: float) -> Optional[Incident]:
        """The incident failing at ``now``, or None during a pause (and before ``start``)."""
        if now < self.start:
            return None
        n, into = divmod(now - self.start, self.burst + self.pause)
        return self.incidents[int(n) % len(self.incidents)] if into < self.burst else None


def demo_alerts(burst: float) -> dict[str, object]:
    """The daemon's ``alerts:`` config for the demo: windows as long as a burst, so that an
    alert fires during its burst and resolves one burst length after it ends."""
    window = f"{burst:g}s"
    return {
        "client_certificate_rejected": {"window": window, "resolve_after": window},
        "handshake_failures": {"window": window, "resolve_after": window},
    }


# (reason label, weight); the message text for each is built in _failure_text.
_REASONS: tuple[tuple[str, int], ...] = (
    ("bad_certificate", 40),
    ("certificate_required", 8),
    ("handshake_failure", 8),
    ("unknown_ca", 6),
    ("pkix_path_building_failed", 7),
    ("hostname_mismatch", 5),
    ("remote_closed", 5),
    ("no_appropriate_protocol", 3),
    ("handshake_timeout", 5),
    ("certificate_unknown", 2),
    ("certificate_expired", 2),
    ("protocol_version", 1),
    ("unrecognized_name", 1),
    ("other", 2),  # a message the exporter does not know
    ("odd_alert", 1),  # an alert name outside [a-z_]{1,40}: counted as "other"
)

_PKIX = (
    "sun.security.validator.ValidatorException: PKIX path building failed: "
    "sun.security.provider.certpath.SunCertPathBuilderException: "
    "unable to find valid certification path to requested target"
)
_NO_PROTOCOL = "No appropriate protocol (protocol is disabled or cipher suites are inappropriate)"
_REMOTE_CLOSED = "Remote host closed connection during handshake"
_JDK = "~[na:1.8.0_101]"
_NIO = "~[nio-1.0.0.jar:na]"
_HTTP = "~[http-1.0.0.jar:na]"

_ALERT_FRAMES = (
    f"\tat sun.security.ssl.Alerts.getSSLException(Alerts.java:208) {_JDK}",
    f"\tat sun.security.ssl.SSLEngineImpl.fatal(SSLEngineImpl.java:1666) {_JDK}",
    f"\tat sun.security.ssl.SSLEngineImpl.fatal(SSLEngineImpl.java:1634) {_JDK}",
    f"\tat sun.security.ssl.SSLEngineImpl.recvAlert(SSLEngineImpl.java:1800) {_JDK}",
    f"\tat sun.security.ssl.SSLEngineImpl.readRecord(SSLEngineImpl.java:1083) {_JDK}",
    f"\tat sun.security.ssl.SSLEngineImpl.readNetRecord(SSLEngineImpl.java:907) {_JDK}",
    f"\tat sun.security.ssl.SSLEngineImpl.unwrap(SSLEngineImpl.java:781) {_JDK}",
    f"\tat javax.net.ssl.SSLEngine.unwrap(SSLEngine.java:624) {_JDK}",
)
_HANDSHAKE_FRAMES = (
    f"\tat sun.security.ssl.Handshaker.checkThrown(Handshaker.java:1529) {_JDK}",
    f"\tat sun.security.ssl.SSLEngineImpl.checkTaskThrown(SSLEngineImpl.java:535) {_JDK}",
    f"\tat sun.security.ssl.SSLEngineImpl.writeAppRecord(SSLEngineImpl.java:1214) {_JDK}",
    f"\tat sun.security.ssl.SSLEngineImpl.wrap(SSLEngineImpl.java:1186) {_JDK}",
    f"\tat javax.net.ssl.SSLEngine.wrap(SSLEngine.java:469) {_JDK}",
)
_CHANNEL_FRAMES = (
    f"\tat com.apigee.protocol.http.io.SSLClientChannel.unwrap(SSLClientChannel.java:360) {_HTTP}",
    f"\tat com.apigee.protocol.http.io.SSLClientChannel.onRead(SSLClientChannel.java:221) {_HTTP}",
    f"\tat com.apigee.nio.NIOSelector$SelectedKey.onReadable(NIOSelector.java:372) {_NIO}",
    f"\tat com.apigee.nio.NIOSelector.run(NIOSelector.java:173) {_NIO}",
    f"\tat java.lang.Thread.run(Thread.java:745) {_JDK}",
)
_CONNECT_FRAMES = (
    f"\tat sun.nio.ch.SocketChannelImpl.checkConnect(Native Method) {_JDK}",
    f"\tat sun.nio.ch.SocketChannelImpl.finishConnect(SocketChannelImpl.java:717) {_JDK}",
    f"\tat com.apigee.nio.ClientChannel.finishConnect(ClientChannel.java:122) {_NIO}",
    f"\tat com.apigee.nio.NIOSelector$SelectedKey.onConnectable(NIOSelector.java:389) {_NIO}",
    f"\tat com.apigee.nio.NIOSelector.run(NIOSelector.java:173) {_NIO}",
    f"\tat java.lang.Thread.run(Thread.java:745) {_JDK}",
)
_ZK_FRAMES = (
    f"\tat org.apache.zookeeper.KeeperException.create(KeeperException.java:127) {_JDK}",
    "\tat org.apache.zookeeper.ZooKeeper.getData(ZooKeeper.java:1155) ~[zookeeper-3.4.6.jar:na]",
    "\tat com.apigee.zookeeper.ZooKeeperServiceImpl.getData(ZooKeeperServiceImpl.java:412) "
    "~[zookeeper-1.0.0.jar:na]",
    "\tat com.apigee.kernel.service.deployment.ServerDeploymentMonitor.poll"
    "(ServerDeploymentMonitor.java:96) ~[kernel-1.0.0.jar:na]",
    f"\tat java.util.concurrent.ThreadPoolExecutor.runWorker(ThreadPoolExecutor.java:1142) {_JDK}",
    f"\tat java.lang.Thread.run(Thread.java:745) {_JDK}",
)

_NIO_THREADS = tuple(f"NIOThread@{i}" for i in range(6))
_MAIN_THREADS = tuple(f"Apigee-Main-{i}" for i in range(1, 13))
_TIMER_THREADS = tuple(f"Apigee-Timer-{i}" for i in range(1, 5))
_POOL_THREADS = tuple(f"pool-{p}-thread-{t}" for p in (2, 3, 5) for t in (1, 2, 3, 4))
_MP_IP = "10.0.3.4"
_VERBS = ("GET", "POST", "PUT", "GET", "GET")
_PATHS = ("/v1/charge", "/v1/refund", "/v2/accounts/balance", "/quotes", "/orders/open", "/sync")
_STATUSES = (200, 200, 200, 200, 201, 204, 304, 404, 500)


@dataclass
class _Segment:
    """Lines one thread writes in one go, rendered when they are written (for the timestamp)."""

    render: Callable[[str], list[str]]  # timestamp -> lines
    wait: int  # records of other threads to write before this one
    failure: Optional[TruthKey] = None  # counted when written


@dataclass
class _Episode:
    """A failure (and maybe its retry) still being written: the segments not written yet."""

    thread: str
    segments: collections.deque[_Segment] = field(default_factory=collections.deque)


class LogGenerator:
    """Generates MP ``system.log`` lines, deterministic for a seed, and counts their failures.

    ``failure_fraction`` is the share of all lines that are ``handshakeFailed``/``handshakeTimeout``
    records (each also brings its SSLInfo line and its ``onException`` record and stack trace).
    ``missing_ssl_info`` is the share of failures written with no SSLInfo line at all
    (``key_alias`` ""), ``no_context`` the share written without the context block and
    ``retry`` the share of failures on a two-backend proxy retried, under the same message id,
    to the other backend, and ``timeout_ssl_info`` the share of handshake timeouts followed by an
    SSLInfo line (no public sample shows whether the MP logs one). Timestamps start at ``start``
    and advance a few milliseconds a record, or follow ``clock`` (seconds since the epoch, shown in
    local time) when one is given.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        failure_fraction: float = 0.01,
        missing_ssl_info: float = 0.05,
        no_context: float = 0.03,
        retry: float = 0.3,
        timeout_ssl_info: float = 0.5,
        start: Optional[dt.datetime] = None,
        clock: Optional[Callable[[], float]] = None,
        proxies: tuple[Proxy, ...] = DEFAULT_PROXIES,
    ) -> None:
        if not 0.0 <= failure_fraction <= 0.5:
            raise ValueError("failure_fraction must be within [0, 0.5]")
        self._rng = random.Random(seed)
        self._random = self._rng.random
        self._fraction = failure_fraction
        self._missing = missing_ssl_info
        self._no_context = no_context
        self._retry = retry
        self._timeout_missing = 1.0 - timeout_ssl_info
        self._proxies = proxies
        self._clock = clock
        self._start = start if start is not None else dt.datetime(2026, 11, 27, 0, 0, 0)
        self._ms = 0 if clock is None else int(clock() * 1000)
        self._cached_sec = -1
        self._cached_prefix = ""
        reasons, weights = zip(*_REASONS)
        self._reason_names: tuple[str, ...] = reasons
        self._reason_cum: list[int] = list(_cumulative(weights))
        self._active: list[_Episode] = []
        self._busy: set[str] = set()
        self._truth: collections.Counter[TruthKey] = collections.Counter()
        self._last_failure: dict[TruthKey, str] = {}
        self._ids = 0
        self._object_ids = 0x1A2B3C
        self.n_lines = 0
        self.n_records = 0
        self.n_failures = 0
        self.n_unpaired = 0
        self.n_retries = 0
        self._bursty = False
        self._incident: Optional[Incident] = None
        self._since = (0, 0)  # (lines, failures) when the current incident started

    # -- public API --------------------------------------------------------------------------

    @property
    def truth(self) -> collections.Counter[TruthKey]:
        """Failures written so far, by label set (a copy); exact when no failure is open."""
        return collections.Counter(self._truth)

    @property
    def last_failure_timestamps(self) -> dict[TruthKey, str]:
        """The log timestamp (``yyyy-MM-dd HH:mm:ss,SSS``) of the last failure of each label set."""
        return dict(self._last_failure)

    @property
    def open_failures(self) -> int:
        """Failures whose SSLInfo, onException or retry lines are not written yet."""
        return len(self._active)

    def set_incident(self, incident: Optional[Incident]) -> None:
        """From now on, failures come only from ``incident`` (at ``failure_fraction`` of the
        lines written while it lasts), and none while it is None: the bursts of the demo."""
        if not self._bursty or incident != self._incident:
            self._since = (self.n_lines, self.n_failures)
        self._bursty = True
        self._incident = incident

    def records(self) -> Iterator[list[str]]:
        """Endless records: a timestamped line and its continuation lines (a stack trace)."""
        while True:
            yield self.next_record()

    def lines(self) -> Iterator[str]:
        """Endless lines, without their newline."""
        for record in self.records():
            yield from record

    def next_record(self) -> list[str]:
        """The next record: a pending piece of an open failure, or a new record."""
        for episode in self._active:
            if episode.segments[0].wait <= 0:
                return self._emit_segment(episode)
        for episode in self._active:
            episode.segments[0].wait -= 1
        return self._new_record()

    def drain(self) -> list[str]:
        """Lines that complete every open failure; afterwards :attr:`truth` is exact."""
        out: list[str] = []
        while self._active:
            out.extend(self._emit_segment(self._active[0]))
        return out

    def failure_record(self) -> list[str]:
        """One complete failure now: failure line, SSLInfo, ``onException`` record, stack trace.

        Any open failure is completed first (its lines come before); no other record interleaves.
        The generator's shares still apply: build it with ``missing_ssl_info=0``,
        ``timeout_ssl_info=1`` and ``retry=0`` for exactly one failure with its SSLInfo line.
        """
        out = self.drain()
        self._advance()
        out.extend(self._start_episode())
        out.extend(self.drain())
        return out

    def take(self, n_lines: int) -> list[str]:
        """At least ``n_lines`` lines, ending with no failure open."""
        out: list[str] = []
        next_record = self.next_record
        while len(out) < n_lines:
            out.extend(next_record())
        out.extend(self.drain())
        return out

    def text(self, n_lines: int) -> str:
        """:meth:`take` as text, each line ending with a newline."""
        return "".join(line + "\n" for line in self.take(n_lines))

    # -- internals --------------------------------------------------------------------------

    def _timestamp(self) -> str:
        sec, ms = divmod(self._ms, 1000)
        if sec != self._cached_sec:
            self._cached_sec = sec
            if self._clock is None:
                moment = self._start + dt.timedelta(seconds=sec)
                self._cached_prefix = moment.strftime("%Y-%m-%d %H:%M:%S")
            else:
                self._cached_prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sec))
        return f"{self._cached_prefix},{ms:03d}"

    def _advance(self) -> None:
        if self._clock is None:
            self._ms += int(self._random() * 12)
        else:
            self._ms = max(self._ms, int(self._clock() * 1000))

    def _pick(self, seq: tuple[str, ...]) -> str:
        return seq[int(self._random() * len(seq))]

    def _hex(self) -> str:
        self._object_ids = (self._object_ids * 1103515245 + 12345) & 0x7FFFFFFF
        return f"{self._object_ids:x}"

    def _message_id(self) -> str:
        self._ids += 1
        r = self._random()
        zone = "abc"[int(r * 3)]
        return f"rrt-0d027480041e2a1{int(r * 100):02d}-{zone}-de-7885-{572449 + self._ids}-1"

    def _count(self, lines: list[str]) -> list[str]:
        self.n_lines += len(lines)
        self.n_records += 1
        return lines

    def _new_record(self) -> list[str]:
        self._advance()
        if self._bursty and self._incident is None:
            return self._count(self._traffic())
        lines, failures = self._since
        deficit = self._fraction * (self.n_lines - lines) - (self.n_failures - failures)
        if deficit > 0 and self._random() < 0.25 and len(self._busy) < len(_NIO_THREADS):
            return self._start_episode()  # _emit_segment counts it
        return self._count(self._traffic())

    def _emit_segment(self, episode: _Episode) -> list[str]:
        segment = episode.segments.popleft()
        if not episode.segments:
            self._active.remove(episode)
            self._busy.discard(episode.thread)
        if self._clock is None:
            self._ms += int(self._random() * 1.6)  # the same thread, a moment later
        else:
            self._advance()
        stamp = self._timestamp()
        lines = segment.render(stamp)
        if segment.failure is not None:
            self._truth[segment.failure] += 1
            key = segment.failure
            self._last_failure[key] = stamp
            self.n_failures += 1
        return self._count(lines)

    # -- ordinary traffic ---------------------------------------------------------------------

    def _free_thread(self, pool: tuple[str, ...]) -> str:
        thread = self._pick(pool)
        if thread in self._busy:
            return self._pick(_MAIN_THREADS)
        return thread

    def _context(self, proxy: Proxy, message_id: str) -> str:
        rev = proxy.revs[int(self._random() * len(proxy.revs))]
        return f"org:{proxy.org} env:{proxy.env} api:{proxy.api} rev:{rev} messageid:{message_id} "

    def _traffic(self) -> list[str]:
        r = self._random()
        ts = self._timestamp()
        if r < 0.62:  # inside an API call
            proxy = self._proxies[int(self._random() * len(self._proxies))]
            ctx = self._context(proxy, self._message_id())
            backend = proxy.backends[int(self._random() * len(proxy.backends))]
            host = backend.host or backend.ip
            if r < 0.2:
                thread = self._free_thread(_NIO_THREADS)
                port = 40000 + int(self._random() * 20000)
                return [
                    f"{ts} {ctx}{thread} INFO HTTP.CLIENT - HTTPClient$Context$3.onSuccess() : "
                    f"SSLClientChannel[C:{_MP_IP}:{port} Remote host:{host}/{backend.ip}:"
                    f"{backend.port}]@{self._hex()} useCount=1 bytesRead=0 bytesWritten=0 "
                    f"age={int(self._random() * 80)}ms lastIO=0ms connected"
                ]
            if r < 0.35:
                thread = self._pick(_MAIN_THREADS)
                verb = self._pick(_VERBS)
                path = self._pick(_PATHS)
                return [
                    f"{ts} {ctx}{thread} INFO ADAPTORS.HTTP.FLOW - TargetConnector.request() : "
                    f"{verb} https://{host}:{backend.port}{path}"
                ]
            if r < 0.47:
                thread = self._free_thread(_NIO_THREADS)
                status = _STATUSES[int(self._random() * len(_STATUSES))]
                return [
                    f"{ts} {ctx}{thread} DEBUG ADAPTORS.HTTP.FLOW - "
                    f"ResponseReadListener.onHeaders() : status={status} "
                    f"contentLength={int(self._random() * 4096)}"
                ]
            if r < 0.57:
                thread = self._pick(_MAIN_THREADS)
                step = self._pick(("AssignMessage-SetHeaders", "VerifyAPIKey", "Quota-1", "JS-Map"))
                return [
                    f"{ts} {ctx}{thread} DEBUG MESSAGING.RUNTIME - "
                    f"RuntimeMessageFlow.executeStep() : step={step} elapsed="
                    f"{int(self._random() * 9)}ms"
                ]
            if r < 0.60:
                thread = self._free_thread(_NIO_THREADS)
                return [
                    f"{ts} {ctx}{thread} WARN HTTP.CLIENT - HTTPClient$Context.onTimeout() : "
                    f"ClientChannel[C:{_MP_IP}:{40000 + int(self._random() * 20000)} Remote host:"
                    f"{backend.ip}:{backend.port}]@{self._hex()} read timeout after 55000ms"
                ]
            # a non-TLS onException: the same record shape as after a handshake failure
            thread = self._free_thread(_NIO_THREADS)
            return [
                f"{ts} {ctx}{thread} ERROR ADAPTORS.HTTP.FLOW - RequestWriteListener.onException()"
                f" : RequestWriteListener.onException(HTTPRequest@{self._hex()})",
                "java.net.ConnectException: Connection refused",
                *_CONNECT_FRAMES,
            ]
        sep = "  " if self._random() < 0.5 else " "
        if r < 0.78:
            thread = self._pick(_TIMER_THREADS)
            proxy = self._proxies[int(self._random() * len(self._proxies))]
            backend = proxy.backends[0]
            name = backend.host or backend.ip
            return [
                f"{ts}{sep}{thread} INFO c.a.p.h.d.DNSCachedAddress - DNSCachedAddress.refresh() : "
                f"{name} resolved to [{backend.ip}] ttl=300"
            ]
        if r < 0.88:
            thread = self._pick(_POOL_THREADS)
            return [
                f"{ts}{sep}{thread} DEBUG MESSAGING.RUNTIME - MessageProcessorStats.report() : "
                f"active={int(self._random() * 64)} queued=0 completed={self.n_records}"
            ]
        if r < 0.95:
            thread = self._pick(_MAIN_THREADS)
            proxy = self._proxies[int(self._random() * len(self._proxies))]
            return [
                f"{ts}{sep}{thread} INFO KERNEL.DEPLOYMENT - DeploymentMonitor.check() : "
                f"{proxy.org}/{proxy.env}/{proxy.api} revision {proxy.revs[-1]} is deployed"
            ]
        if r < 0.985:
            thread = "main" if self._random() < 0.3 else self._pick(_TIMER_THREADS)
            return [
                f"{ts}{sep}{thread} INFO c.a.k.m.ServerManager - ServerManager.heartbeat() : "
                f"uuid=7f3b1c2e-52a4-4f2e-9a0d-1c5e8b7d9e41 state=RUNNING"
            ]
        thread = self._pick(_POOL_THREADS)
        return [
            f"{ts}{sep}{thread} WARN c.a.z.ZooKeeperServiceImpl - ZooKeeperServiceImpl.getData() "
            ": retrying after connection loss",
            "org.apache.zookeeper.KeeperException$ConnectionLossException: "
            "KeeperErrorCode = ConnectionLoss for /organizations",
            *_ZK_FRAMES,
        ]

    # -- failures ----------------------------------------------------------------------------

    def _reason(self) -> str:
        x = self._random() * self._reason_cum[-1]
        for name, bound in zip(self._reason_names, self._reason_cum):
            if x < bound:
                return name
        return self._reason_names[-1]

    def _wait(self) -> int:
        r = self._random()
        return 0 if r < 0.65 else 1 if r < 0.82 else 2 if r < 0.94 else 3

    def _start_episode(self) -> list[str]:
        free = [t for t in _NIO_THREADS if t not in self._busy]
        thread = free[int(self._random() * len(free))]
        incident = self._incident
        proxy = (
            incident.proxy
            if incident is not None
            else self._proxies[int(self._random() * len(self._proxies))]
        )
        if incident is None and self._random() < self._no_context:
            ctx, labels = "", ("", "", "", "")
        else:
            rev = proxy.revs[int(self._random() * len(proxy.revs))]
            ctx = (
                f"org:{proxy.org} env:{proxy.env} api:{proxy.api} rev:{rev} "
                f"messageid:{self._message_id()} "
            )
            labels = (proxy.org, proxy.env, proxy.api, rev)
        first = int(self._random() * len(proxy.backends))
        if incident is not None:
            first = proxy.backends.index(incident.backend)
        episode = _Episode(thread)
        self._add_failure(episode, ctx, labels, proxy.backends[first], wait=0)
        if incident is None and len(proxy.backends) > 1 and self._random() < self._retry:
            self.n_retries += 1
            other = proxy.backends[(first + 1) % len(proxy.backends)]
            self._add_failure(episode, ctx, labels, other, wait=self._wait())
        self._active.append(episode)
        self._busy.add(thread)
        return self._emit_segment(episode)

    def _address(self, backend: Backend) -> tuple[str, str]:
        """The address as the JVM renders it, and the ``target`` label it gives (by name in an
        incident, so that its target is one)."""
        r = 0.0 if self._incident is not None else self._random()
        ip_target = f"{backend.ip}:{backend.port}"
        if backend.host is not None and r < 0.8:
            return f"{backend.host}/{ip_target}", f"{backend.host}:{backend.port}"
        if r < 0.9:
            return f"/{ip_target}", ip_target
        return ip_target, ip_target

    def _add_failure(
        self,
        episode: _Episode,
        ctx: str,
        labels: tuple[str, str, str, str],
        backend: Backend,
        wait: int,
    ) -> None:
        thread = episode.thread
        reason = self._incident.reason if self._incident is not None else self._reason()
        address, target = self._address(backend)
        timeout = reason == "handshake_timeout"
        by_name = "/" in address and not address.startswith("/")
        message, exception = _failure_text(reason, backend, by_name)
        with_ssl_info = self._incident is not None or self._random() >= (
            self._timeout_missing if timeout else self._missing
        )
        alias = backend.key_alias if with_ssl_info and backend.key_alias is not None else ""
        if not with_ssl_info:
            self.n_unpaired += 1
        label = "other" if reason == "odd_alert" else reason
        key = TruthKey(*labels, target, label, alias)
        head = f"{ctx}{thread} ERROR HTTP.CLIENT - HTTPClient$Context"
        channel = self._hex()
        port = 40000 + int(self._random() * 20000)
        if timeout:
            age = 55000 + int(self._random() * 20)
            failure_line = (
                f"{head}.handshakeTimeout() : SSLClientChannel[Connected: Remote:{address} "
                f"Local:{_MP_IP}]@{channel} useCount=1 bytesRead=0 bytesWritten=0 age={age}ms "
                f"lastIO={age}ms handshake timeout"
            )
        else:
            age = 20 + int(self._random() * 600)
            failure_line = (
                f"{head}.handshakeFailed() : SSLClientChannel[C:{_MP_IP}:{port} "
                f"Remote host:{address}]@{channel} useCount=1 bytesRead=0 bytesWritten=0 "
                f"age={age}ms lastIO={age}ms "
                f"handshake failed, message: {message}"
            )
        episode.segments.append(_Segment(lambda ts: [f"{ts} {failure_line}"], wait, key))
        if with_ssl_info:
            keystore = (
                "null"
                if backend.keystore == "null"
                else f"java.security.KeyStore@{backend.keystore}"
            )
            method = (
                "handshakeTimeout" if timeout else "handshakeFailed"
            )  # unconfirmed for timeouts
            ssl_info = (
                f"{ctx}{thread} ERROR HTTP.CLIENT - HTTPClient$Context.{method}() : "
                f"SSLInfo: KeyStore:{keystore} KeyAlias:{backend.key_alias or 'null'} "
                f"TrustStore:java.security.KeyStore@{backend.truststore}"
            )
            episode.segments.append(_Segment(lambda ts: [f"{ts} {ssl_info}"], self._wait()))
        if not timeout:
            request = self._hex()
            frames = _frames_for(reason)
            on_exception = (
                f"{ctx}{thread} ERROR ADAPTORS.HTTP.FLOW - RequestWriteListener.onException() : "
                f"RequestWriteListener.onException(HTTPRequest@{request})"
            )
            episode.segments.append(
                _Segment(
                    lambda ts: [f"{ts} {on_exception}", *exception, *frames], self._wait() // 2
                )
            )


def _cumulative(weights: tuple[int, ...]) -> Iterator[int]:
    total = 0
    for w in weights:
        total += w
        yield total


def _failure_text(reason: str, backend: Backend, by_name: bool) -> tuple[str, list[str]]:
    """The ``handshake failed, message:`` text of a failure, and its exception lines."""
    if reason == "pkix_path_building_failed":
        return _PKIX, [
            f"javax.net.ssl.SSLHandshakeException: {_PKIX}",
            *_HANDSHAKE_FRAMES,
            f"Caused by: {_PKIX}",
            "\tat sun.security.validator.PKIXValidator.doBuild(PKIXValidator.java:387) " + _JDK,
            "\t... 14 common frames omitted",
            "Caused by: sun.security.provider.certpath.SunCertPathBuilderException: "
            "unable to find valid certification path to requested target",
            "\tat sun.security.provider.certpath.SunCertPathBuilder.build"
            f"(SunCertPathBuilder.java:141) {_JDK}",
            "\t... 20 common frames omitted",
        ]
    if reason == "hostname_mismatch":
        if by_name and backend.host is not None:
            text = f"java.security.cert.CertificateException: No name matching {backend.host} found"
        else:
            text = (
                "java.security.cert.CertificateException: "
                f"No subject alternative names matching IP address {backend.ip} found"
            )
        return text, [
            f"javax.net.ssl.SSLHandshakeException: {text}",
            *_HANDSHAKE_FRAMES,
            f"Caused by: {text}",
            f"\tat sun.security.util.HostnameChecker.matchIP(HostnameChecker.java:167) {_JDK}",
            "\t... 16 common frames omitted",
        ]
    if reason == "remote_closed":
        return _REMOTE_CLOSED, [
            f"javax.net.ssl.SSLHandshakeException: {_REMOTE_CLOSED}",
            *_HANDSHAKE_FRAMES,
            "Caused by: java.io.EOFException: SSL peer shut down incorrectly",
            f"\tat sun.security.ssl.SSLEngineImpl.readRecord(SSLEngineImpl.java:1001) {_JDK}",
            "\t... 9 common frames omitted",
        ]
    if reason == "no_appropriate_protocol":
        return _NO_PROTOCOL, [f"javax.net.ssl.SSLHandshakeException: {_NO_PROTOCOL}"]
    if reason == "other":  # a JDK text no reason names
        text = "(unexpected_message) Unexpected handshake message: server_hello"
        return text, [f"javax.net.ssl.SSLProtocolException: {text}"]
    if reason == "handshake_timeout":
        return "", []
    alert = "BAD-RECORD-MAC" if reason == "odd_alert" else reason
    text = f"Received fatal alert: {alert}"
    kind = "SSLHandshakeException" if reason == "handshake_failure" else "SSLException"
    return text, [f"javax.net.ssl.{kind}: {text}"]


def _frames_for(reason: str) -> tuple[str, ...]:
    if reason in ("pkix_path_building_failed", "hostname_mismatch", "remote_closed"):
        return ()  # their exception lines already carry frames and causes
    if reason in ("no_appropriate_protocol", "other"):
        return _HANDSHAKE_FRAMES + _CHANNEL_FRAMES
    return _ALERT_FRAMES + _CHANNEL_FRAMES


@dataclass(frozen=True)
class GeneratedLog:
    """What :func:`write_log` wrote: size, lines and the failures it holds."""

    path: str
    n_bytes: int
    n_lines: int
    n_failures: int
    truth: collections.Counter[TruthKey]
    distinct_blocks: int  # 1 when one block was written repeatedly


def write_log(
    path: str | os.PathLike[str],
    n_bytes: int,
    *,
    seed: int = 0,
    failure_fraction: float = 0.01,
    block_bytes: Optional[int] = 64 << 20,
) -> GeneratedLog:
    """Writes a log of at least ``n_bytes`` quickly, and returns its truth.

    Generating text runs at about 30 MB/s, so a large file is one generated block of
    ``block_bytes`` written as many times as needed, each copy moved one day later (its timestamps
    all fall within its first day, which is checked) so that time still only goes forward; message
    ids repeat from copy to copy, a day apart. The truth is the block's, multiplied. With
    ``block_bytes=None`` every line is generated.
    """
    gen = LogGenerator(seed, failure_fraction=failure_fraction)
    day = gen._start.date()
    limit = n_bytes if block_bytes is None else min(n_bytes, block_bytes)
    written = 0
    with open(path, "wb") as out:
        block: list[bytes] = []
        size = 0
        while size < limit:
            n = max(1_000, min(20_000, (limit - size) // 150))
            chunk = "".join(line + "\n" for line in gen.take(n)).encode()
            size += len(chunk)
            if block_bytes is None:
                out.write(chunk)
            else:
                block.append(chunk)
        if block_bytes is None:
            return GeneratedLog(str(path), size, gen.n_lines, gen.n_failures, gen.truth, 1)
        if gen._ms >= 86_400_000 and size < n_bytes:
            raise ValueError("block_bytes too large: a block must span less than a day of log time")
        data = b"".join(block)
        copies = -(-n_bytes // len(data))
        marker = ("\n" + day.isoformat() + " ").encode()
        for i in range(copies):
            if i == 0:
                out.write(data)
            else:
                moved = ("\n" + (day + dt.timedelta(days=i)).isoformat() + " ").encode()
                out.write((b"\n" + data).replace(marker, moved)[1:])
            written += len(data)
    truth: collections.Counter[TruthKey] = collections.Counter(
        {key: count * copies for key, count in gen.truth.items()}
    )
    return GeneratedLog(
        str(path), written, gen.n_lines * copies, gen.n_failures * copies, truth, copies
    )


class DemoWriter:
    """Appends generated records to a file at ``rate`` lines a second, in a background thread.

    With ``bursts``, failures come only during a burst, all from its incident (at
    ``failure_fraction`` of the lines), so that alerts fire and then resolve.

    Each write appends whole records and carries on until no failure is open, so the file never
    ends between a failure and its SSLInfo line and :attr:`truth` is exact after every write (the
    rate is a long-run average). Timestamps follow ``clock``. The file is opened for each write, so
    a rotation (rename or truncation) is followed the way logback would. ``sleep`` and ``clock`` are
    injectable: tests can also call :meth:`write_due` themselves without starting the thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        rate: float = 20.0,
        seed: int = 0,
        failure_fraction: float = 0.05,
        interval: float = 0.1,
        clock: Callable[[], float] = time.time,
        sleep: Optional[Callable[[float], object]] = None,
        bursts: Optional[Bursts] = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.bursts = bursts
        self.path = os.fspath(path)
        self.rate = rate
        self._interval = interval
        self._clock = clock
        self._stopping = threading.Event()
        self._sleep: Callable[[float], object] = sleep if sleep is not None else self._stopping.wait
        self._lock = threading.Lock()
        self._gen = LogGenerator(seed, failure_fraction=failure_fraction, clock=clock)
        self._started_at = clock()
        self._thread: Optional[threading.Thread] = None
        self.lines_written = 0

    @property
    def truth(self) -> collections.Counter[TruthKey]:
        """Failures written so far, by label set."""
        with self._lock:
            return self._gen.truth

    @property
    def failures_written(self) -> int:
        """Failure records written so far."""
        with self._lock:
            return self._gen.n_failures

    def write_due(self) -> int:
        """Appends the lines owed at ``rate`` since construction; returns how many it wrote."""
        now = self._clock()
        with self._lock:
            if self.bursts is not None:
                self._gen.set_incident(self.bursts.incident_at(now))
            owed = int((now - self._started_at) * self.rate) - self.lines_written
            lines: list[str] = []
            while len(lines) < owed or self._gen.open_failures:
                lines.extend(self._gen.next_record())
            if lines:
                with open(self.path, "a", encoding="utf-8") as out:
                    out.write("".join(line + "\n" for line in lines))
            self.lines_written += len(lines)
            return len(lines)

    def start(self) -> None:
        """Starts appending in a background thread."""
        if self._thread is not None:
            raise RuntimeError("DemoWriter already started")
        self._thread = threading.Thread(target=self._run, name="demo-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stops the background thread (the file then ends with no failure open)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            self.write_due()
            self._sleep(self._interval)
