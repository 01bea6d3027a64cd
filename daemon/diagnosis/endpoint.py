"""``GET /probe``: the diagnosis as a multi-target exporter (the blackbox_exporter pattern).

Prometheus schedules the probes: each scrape of
``/probe?target=HOST:PORT&org=ORG&env=ENV&key_alias=ALIAS`` (also ``keystore=``,
``protocols=TLSv1.2,TLSv1.3`` and ``servername=``) runs ``run_diagnosis`` with the identity the
management API gives for that key alias and answers a small exposition (``render``). Without a key
alias, or without a management API, only the server side is probed: reachability, protocol, the
backend's chain and its expiry.

The management API never returns a private key, so the probe cannot make the handshake with the
client certificate: ``accepted`` then means what can be told without it (Java would send the
certificate, the backend names its issuer, and every certificate is within its dates).

A scrape storm cannot hammer a backend: one result per request (target and parameters) is kept
``ttl`` seconds and shared by every scrape in that time, requests that arrive while a probe runs
wait for it, at most ``workers`` probes run at once, and a probe never outlasts the scrape timeout
Prometheus sends (``X-Prometheus-Scrape-Timeout-Seconds``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Callable, Optional

import structlog
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from ..config import DiagnosisConfig
from ..state import families
from .decide import CAUSES, Diagnosis, run_diagnosis
from .discovery import SdEndpoint
from .identity import ClientIdentity, identity_from_management
from .inventory import client_from_config
from .mgmt import ManagementAPIError, ManagementClient
from .probe import PROTOCOLS, parse_target

Clock = Callable[[], float]
log = structlog.get_logger()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_TIMEOUT = 10.0  # seconds, when Prometheus sends no scrape timeout
TIMEOUT_OFFSET = 0.5  # seconds kept for answering, as blackbox_exporter's timeout_offset
MAX_RESULTS = 10_000  # results kept at most (each well under a kilobyte)
OUTCOMES = ("probed", "cached", "joined", "timeout", "busy", "bad_request")


@dataclass(frozen=True)
class ProbeRequest:
    """What one ``/probe`` scrape asks; also the cache key."""

    target: str
    org: str = ""
    env: str = ""
    key_alias: str = ""
    keystore: str = ""
    protocols: tuple[str, ...] = ()
    servername: Optional[str] = None  # None: the MP's default (the host name); "": none


def _one(params: Mapping[str, list[str]], name: str) -> str:
    values = params.get(name, [])
    if len(values) > 1:
        raise ValueError(f"{name}: given {len(values)} times")
    return values[0].strip() if values else ""


def parse_request(params: Mapping[str, list[str]]) -> ProbeRequest:
    """The request from the query parameters; ValueError with a one-line reason."""
    target = _one(params, "target")
    if not target:
        raise ValueError("target=HOST:PORT is required")
    parse_target(target)
    protocols = tuple(p.strip() for p in _one(params, "protocols").split(",") if p.strip())
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"protocols: unknown {', '.join(unknown)} (use {', '.join(PROTOCOLS)})")
    servername = params.get("servername")
    return ProbeRequest(
        target=target,
        org=_one(params, "org"),
        env=_one(params, "env"),
        key_alias=_one(params, "key_alias"),
        keystore=_one(params, "keystore"),
        protocols=protocols,
        servername=_one(params, "servername") if servername else None,
    )


def scrape_budget(headers: Mapping[str, str], limit: float) -> float:
    """Seconds a probe may take: Prometheus's scrape timeout less the offset, at most ``limit``."""
    text = headers.get("x-prometheus-scrape-timeout-seconds", "")
    try:
        timeout = float(text) if text else DEFAULT_TIMEOUT
    except ValueError:
        timeout = DEFAULT_TIMEOUT
    if not timeout > 0:  # also NaN
        timeout = DEFAULT_TIMEOUT
    return max(min(timeout, limit) - TIMEOUT_OFFSET, 0.1)


ProbeFunction = Callable[[ProbeRequest, float], Diagnosis]  # (request, seconds it may take)


class Prober:
    """The default ``ProbeFunction``: the identity from the management API, then the diagnosis.

    The keystore is the request's, else the one keystore of the environment holding the alias.
    ``ca_file`` (the MP truststore as PEM) turns on the check of the backend's chain.
    """

    def __init__(
        self,
        client: Optional[ManagementClient],
        *,
        ca_file: Optional[str] = None,
        clock: Clock = time.time,
    ) -> None:
        self._client = client
        self._ca_file = ca_file
        self._clock = clock

    def identity(self, request: ProbeRequest) -> Optional[ClientIdentity]:
        """The client identity to judge, or None for a server-side-only probe."""
        client = self._client
        if client is None or not (request.key_alias and request.org and request.env):
            return None
        keystore = request.keystore
        if not keystore:
            holders = [
                ks
                for ks in client.list_keystores(request.org, request.env)
                if request.key_alias in client.list_aliases(request.org, request.env, ks)
            ]
            if len(holders) != 1:
                return ClientIdentity(
                    "management_api",
                    f"{len(holders)} keystores in {request.org}/{request.env} hold alias "
                    f"{request.key_alias}",
                )
            keystore = holders[0]
        return identity_from_management(
            client, request.org, request.env, keystore, request.key_alias
        )

    def __call__(self, request: ProbeRequest, budget: float) -> Diagnosis:
        deadline = time.monotonic() + budget
        identity = self.identity(request)
        left = max(deadline - time.monotonic(), 0.1)
        # A probe makes at most three connections one after the other, each bounded by timeout.
        return run_diagnosis(
            request.target,
            servername=request.servername,
            identity=identity,
            timeout=left / 3,
            http_wait=min(2.0, left / 6),
            ca_file=self._ca_file,
            clock=self._clock,
            protocols=request.protocols,
        )


def prediction(diagnosis: Diagnosis) -> str:
    """The cause as the probe reports it: ``diagnose``'s, except that a certificate Java would
    send, within its dates, that could not be tried for want of the private key is ``accepted``."""
    ev = diagnosis.evaluation
    if diagnosis.cause == "unknown" and ev.mp_attempt == "not_tried" and ev.java_sends:
        return "accepted"
    return diagnosis.cause


def succeeded(diagnosis: Diagnosis, cause: str) -> bool:
    """With a client identity: accepted. Server side only: the backend answers the MP's
    handshake and nothing is wrong with its certificate."""
    if diagnosis.identity is not None:
        return cause == "accepted"
    anon = diagnosis.anonymous
    ok = ("accepted", "no_client_certificate_requested", "unknown")
    return anon is not None and anon.server_hello and cause in ok


@dataclass(frozen=True)
class Outcome:
    """One probe's result (or its failure to finish) and when it ran."""

    diagnosis: Optional[Diagnosis]
    checked_at: float  # wall clock
    duration: float
    error: Optional[str] = None  # "management_api:<kind>" or "internal"


class _Exposition(Collector):
    def __init__(self, outcome: Outcome, timed_out: bool) -> None:
        self._outcome = outcome
        self._timed_out = timed_out

    def collect(self) -> Iterator[Metric]:
        out, diagnosis = self._outcome, self._outcome.diagnosis
        cause = prediction(diagnosis) if diagnosis is not None else None
        ok = diagnosis is not None and cause is not None and succeeded(diagnosis, cause)
        yield families.PROBE_SUCCESS.new(value=1 if ok and (not self._timed_out) else 0)
        yield families.PROBE_TIMED_OUT.new(value=1 if self._timed_out else 0)
        yield families.PROBE_DURATION_SECONDS.new(value=out.duration)
        yield families.PROBE_CHECKED_TIMESTAMP_SECONDS.new(value=out.checked_at)
        errors = families.PROBE_ERROR.new()
        if out.error:
            errors.add_metric([out.error], 1)
        yield errors
        if diagnosis is None or cause is None or self._timed_out:
            return
        family = families.PROBE_CAUSE.new()
        family.add_metric([cause if cause in CAUSES else "unknown"], 1)
        yield family
        sends = diagnosis.evaluation.java_sends
        if sends is not None:
            yield families.PROBE_JAVA_SENDS_CERTIFICATE.new(value=1 if sends else 0)
        requested = diagnosis.certificate_requested
        if requested is not None:
            yield families.PROBE_CERTIFICATE_REQUESTED.new(value=1 if requested else 0)
        server = diagnosis.server_chain
        if server and server[0].not_after is not None:
            yield families.PROBE_SERVER_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS.new(
                value=server[0].not_after
            )
        leaf = diagnosis.client_certificate
        if leaf is not None and leaf.not_after is not None:
            yield families.PROBE_CLIENT_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS.new(
                value=leaf.not_after
            )
        if diagnosis.tls_version:
            version = families.PROBE_TLS_VERSION_INFO.new()
            version.add_metric([diagnosis.tls_version], 1)
            yield version


def render(outcome: Outcome, timed_out: bool = False) -> bytes:
    """The exposition of one probe."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Exposition(outcome, timed_out))
    return generate_latest(registry)


class ProbeEndpoint:
    """The ``/probe`` route handler: (query parameters, lower-cased headers) -> (status, content
    type, body), blocking; run it off the event loop.

    ``requests`` counts ``apigee_tls_probe_requests_total{outcome}`` on the daemon's registry:
    probed (a probe ran for it), cached, joined (waited for a running probe), timeout, busy
    (``max_pending`` distinct probes already waiting), bad_request.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        probe: ProbeFunction,
        *,
        ttl: float = 60.0,
        workers: int = 4,
        max_pending: int = 64,
        max_timeout: float = 60.0,
        clock: Clock = time.monotonic,
        wall: Clock = time.time,
    ) -> None:
        self._probe = probe
        self._ttl = ttl
        self._max_pending = max_pending
        self._max_timeout = max_timeout
        self._clock = clock
        self._wall = wall
        self._pool = ThreadPoolExecutor(max_workers=max(workers, 1), thread_name_prefix="probe")
        self._lock = threading.Lock()
        self._results: dict[ProbeRequest, tuple[float, Outcome]] = {}  # (monotonic, outcome)
        self._running: dict[ProbeRequest, Future[Outcome]] = {}
        self.requests = families.PROBE_REQUESTS.counter(registry)
        for outcome in OUTCOMES:
            self.requests.labels(outcome)

    def __call__(
        self, params: Mapping[str, list[str]], headers: Mapping[str, str]
    ) -> tuple[int, str, bytes]:
        try:
            request = parse_request(params)
        except ValueError as err:
            self.requests.labels("bad_request").inc()
            return 400, "text/plain; charset=utf-8", f"{err}\n".encode()
        budget = scrape_budget(headers, self._max_timeout)
        now = self._clock()
        with self._lock:
            self._forget_expired(now)
            hit = self._results.get(request)
            future = self._running.get(request)
            if hit is not None:
                outcome_name = "cached"
            elif future is not None:
                outcome_name = "joined"
            elif len(self._running) >= self._max_pending:
                self.requests.labels("busy").inc()
                return 503, "text/plain; charset=utf-8", b"too many probes waiting\n"
            else:
                outcome_name = "probed"
                future = self._pool.submit(self._run, request, budget)
                self._running[request] = future
        if hit is not None:
            self.requests.labels(outcome_name).inc()
            return 200, CONTENT_TYPE, render(hit[1])
        assert future is not None
        try:
            result = future.result(timeout=budget)
        except FutureTimeout:
            self.requests.labels("timeout").inc()
            return 200, CONTENT_TYPE, render(Outcome(None, self._wall(), budget), timed_out=True)
        self.requests.labels(outcome_name).inc()
        return 200, CONTENT_TYPE, render(result)

    def _run(self, request: ProbeRequest, budget: float) -> Outcome:
        started, wall = self._clock(), self._wall()
        diagnosis: Optional[Diagnosis] = None
        error = None
        try:
            diagnosis = self._probe(request, budget)
        except ManagementAPIError as exc:
            error = f"management_api:{exc.kind}"
            log.warning("probe failed", target=request.target, error=error, detail=str(exc))
        except Exception as exc:  # a bug must not kill the worker nor fail every later scrape
            error = "internal"
            log.error("probe failed", target=request.target, error=type(exc).__name__)
        outcome = Outcome(diagnosis, wall, self._clock() - started, error)
        with self._lock:
            if len(self._results) >= MAX_RESULTS:  # many distinct requests: forget the oldest
                del self._results[min(self._results, key=lambda k: self._results[k][0])]
            self._results[request] = (self._clock(), outcome)
            self._running.pop(request, None)
        if diagnosis is not None:
            log.debug("probe done", target=request.target, cause=diagnosis.cause)
        return outcome

    def _forget_expired(self, now: float) -> None:
        """Drop the results older than the cache period (under the lock)."""
        self._results = {k: v for k, v in self._results.items() if now - v[0] < self._ttl}

    def predictions(self) -> list[tuple[ProbeRequest, str, bool, float]]:
        """The probes answered within the cache period, newest first: (request, the cause as
        ``/probe`` reports it, success, when it ran)."""
        with self._lock:
            self._forget_expired(self._clock())
            fresh = sorted(self._results.items(), key=lambda item: -item[1][0])
        out = []
        for request, (_, outcome) in fresh:
            if outcome.diagnosis is None:
                out.append((request, outcome.error or "unknown", False, outcome.checked_at))
                continue
            cause = prediction(outcome.diagnosis)
            out.append((request, cause, succeeded(outcome.diagnosis, cause), outcome.checked_at))
        return out

    def close(self) -> None:
        """Stop the probe threads (running probes end within their timeout)."""
        self._pool.shutdown(wait=False, cancel_futures=True)


Handler = Callable[[Mapping[str, list[str]], Mapping[str, str]], tuple[int, str, bytes]]


def from_config(
    config: DiagnosisConfig, registry: CollectorRegistry
) -> tuple[ProbeEndpoint, dict[str, Handler]]:
    """``/probe`` (always: server side alone without a management API) and, with a management
    API, ``/sd``; ValueError when the client cannot be made (a secret file unreadable)."""
    client = client_from_config(config) if config.management_url else None
    endpoint = ProbeEndpoint(registry, Prober(client, ca_file=config.backend_ca_file))
    routes: dict[str, Handler] = {"/probe": endpoint}
    if client is not None:
        routes["/sd"] = SdEndpoint(client)
    return endpoint, routes
