"""The daemon's side of the management API: keystore inventory and background diagnoses.

``KeystoreInventory`` turns the keystores' certificates into
``apigee_tls_client_certificate_expiry_timestamp_seconds{org,env,keystore,alias}``: the page before
the outage, which no log can give. ``DiagnosisWorker`` runs ``diagnose`` in a small thread pool
when a failure alert (page or warning) starts firing and exposes
``apigee_tls_diagnosis_info{org,env,target,key_alias,cause}``.
``ApiDiagnoser`` is the diagnose function the worker needs when the management API is configured.

Both take their registry, clock and collaborators as arguments; the wiring (``app.py``) owns the
schedule (``refresh()`` every interval) and calls ``close()`` on shutdown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Optional

import structlog
from prometheus_client import CollectorRegistry

from ..config import DiagnosisConfig
from ..state import families
from .decide import CAUSES, Diagnosis, run_diagnosis
from .identity import ClientIdentity, identity_from_management, identity_from_target_server
from .mgmt import ERROR_KINDS, Credentials, ManagementAPIError, ManagementClient, read_secret

Clock = Callable[[], float]
log = structlog.get_logger()


class KeystoreInventory:
    """Expiry of every client certificate in the configured keystores, from the management API.

    ``keystores`` lists ``(org, env, keystore)``; a keystore may be ``ref://REF``. The ``keystore``
    label is the resolved name. A keystore that fails to refresh keeps its previous values and
    counts ``apigee_tls_inventory_errors_total{error}`` (``error`` is one of ``mgmt.ERROR_KINDS``).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        client: ManagementClient,
        keystores: Sequence[tuple[str, str, str]],
        *,
        clock: Clock = time.time,
    ) -> None:
        self._client = client
        self._keystores = list(keystores)
        self._clock = clock
        self._series: dict[tuple[str, str, str], set[tuple[str, str, str, str]]] = {}
        self._lock = threading.Lock()
        self.expiry = families.CLIENT_CERTIFICATE_EXPIRY_TIMESTAMP_SECONDS.gauge(registry)
        self.errors = families.INVENTORY_ERRORS.counter(registry)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        self.last_success = families.INVENTORY_LAST_SUCCESS_TIMESTAMP_SECONDS.gauge(registry)

    def refresh(self) -> bool:
        """Read every keystore once; True when all succeeded. Never raises for API errors."""
        all_ok = True
        for org, env, configured in self._keystores:
            try:
                found = self._read(org, env, configured)
            except ManagementAPIError as exc:
                all_ok = False
                self.errors.labels(exc.kind).inc()
                log.warning(
                    "keystore inventory failed",
                    org=org,
                    env=env,
                    keystore=configured,
                    error=exc.kind,
                    detail=str(exc),
                )
                continue
            with self._lock:
                key = (org, env, configured)
                for gone in self._series.get(key, set()) - set(found):
                    self.expiry.remove(*gone)
                for labels, expiry in found.items():
                    self.expiry.labels(*labels).set(expiry)
                self._series[key] = set(found)
        if all_ok:
            self.last_success.set(self._clock())
        return all_ok

    def _read(self, org: str, env: str, configured: str) -> dict[tuple[str, str, str, str], float]:
        name = self._client.resolve_keystore(org, env, configured)
        found: dict[tuple[str, str, str, str], float] = {}
        for alias in self._client.list_aliases(org, env, name):
            chain = self._client.get_alias(org, env, name, alias)
            if chain and chain[0].expiry is not None:
                found[(org, env, name, alias)] = chain[0].expiry
        return found


@dataclass(frozen=True)
class DiagnosisRequest:
    """What to diagnose: the labels of a firing alert. The key is (org, env, target, key_alias);
    ``received`` (the alert's reason: what the MP received) is carried along, not compared."""

    org: str
    env: str
    target: str
    key_alias: str
    received: Optional[str] = field(default=None, compare=False)


DiagnoseFunction = Callable[[DiagnosisRequest, float], Diagnosis]  # (request, timeout)


class DiagnosisWorker:
    """Runs diagnoses in the background, at most one per key per ``min_interval`` seconds.

    ``request()`` never blocks: it queues work on a pool of 1-2 threads and returns. The key is
    ``(org, env, target, key_alias)``. Results are ``apigee_tls_diagnosis_info{...,cause} = 1``,
    one series per key (a new cause replaces the old series), and ``cause_for()``.
    A diagnose function that raises gives cause ``unknown`` and counts as ``result="error"``.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        diagnose: DiagnoseFunction,
        *,
        clock: Clock = time.time,
        min_interval: float = 600.0,
        timeout: float = 10.0,
        workers: int = 1,
        max_pending: int = 100,
    ) -> None:
        self._diagnose = diagnose
        self._clock = clock
        self._min_interval = min_interval
        self._timeout = timeout
        self._max_pending = max_pending
        self._pool = ThreadPoolExecutor(
            max_workers=min(max(workers, 1), 2), thread_name_prefix="diagnosis"
        )
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._closed = False
        self._pending: set[DiagnosisRequest] = set()
        self._last_start: dict[DiagnosisRequest, float] = {}
        self._results: dict[DiagnosisRequest, Optional[Diagnosis]] = {}
        self._causes: dict[DiagnosisRequest, str] = {}
        self.info = families.DIAGNOSIS_INFO.gauge(registry)
        self.runs = families.DIAGNOSES.counter(registry)
        self.skipped = families.DIAGNOSES_SKIPPED.counter(registry)

    def request(
        self, org: str, env: str, target: str, key_alias: str, received: Optional[str] = None
    ) -> bool:
        """Queue a diagnosis unless one ran recently or is pending; True when queued.

        ``received`` is the reason of the alert (the TLS alert the MP received), which the
        diagnosis explains when no cause is certain.
        """
        key = DiagnosisRequest(org, env, target, key_alias, received)
        now = self._clock()
        with self._lock:
            reason = None
            last = self._last_start.get(key)
            if self._closed:
                reason = "closed"
            elif key in self._pending:
                reason = "pending"
            elif last is not None and now - last < self._min_interval:
                reason = "recent"
            elif len(self._pending) >= self._max_pending:
                reason = "queue_full"
            if reason is not None:
                self.skipped.labels(reason).inc()
                return False
            self._pending.add(key)
            self._last_start[key] = now
        try:
            self._pool.submit(self._run, key)
        except RuntimeError:  # the pool was shut down between the check and the submit
            with self._lock:
                self._pending.discard(key)
                self._idle.notify_all()
            self.skipped.labels("closed").inc()
            return False
        return True

    def _run(self, key: DiagnosisRequest) -> None:
        diagnosis: Optional[Diagnosis] = None
        try:
            diagnosis = self._diagnose(key, self._timeout)
            cause = diagnosis.cause if diagnosis.cause in CAUSES else "unknown"
            result = cause
        except Exception as exc:  # a bug or an API failure must not kill the worker thread
            cause, result = "unknown", "error"
            log.warning(
                "diagnosis failed",
                org=key.org,
                env=key.env,
                target=key.target,
                key_alias=key.key_alias,
                error=str(exc) if isinstance(exc, ManagementAPIError) else type(exc).__name__,
            )
        self.runs.labels(result).inc()
        with self._lock:
            old = self._causes.get(key)
            if old is not None and old != cause:
                self.info.remove(key.org, key.env, key.target, key.key_alias, old)
            self.info.labels(key.org, key.env, key.target, key.key_alias, cause).set(1)
            self._causes[key] = cause
            self._results[key] = diagnosis
            self._pending.discard(key)
            self._idle.notify_all()
        log.info(
            "diagnosis done",
            org=key.org,
            env=key.env,
            target=key.target,
            key_alias=key.key_alias,
            cause=cause,
        )

    def cause_for(self, org: str, env: str, target: str, key_alias: str) -> Optional[str]:
        """The last cause decided for this key, or None if none finished yet."""
        with self._lock:
            return self._causes.get(DiagnosisRequest(org, env, target, key_alias))

    def diagnosis_for(self, org: str, env: str, target: str, key_alias: str) -> Optional[Diagnosis]:
        """The last full ``Diagnosis`` (advice for alert annotations), or None."""
        with self._lock:
            return self._results.get(DiagnosisRequest(org, env, target, key_alias))

    def wait_idle(self, timeout: float) -> bool:
        """Block until no diagnosis is pending (True) or ``timeout`` seconds pass (False)."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending, timeout)

    def close(self, wait: bool = True) -> None:
        """Stop accepting requests, drop queued ones and shut the pool down."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=wait, cancel_futures=True)


@dataclass(frozen=True)
class TargetOverride:
    """Per-target settings: which keystore the MP uses for it, the SNI name it sends (default:
    the host name, none for an IP) and its TargetServer protocols and cipher suites."""

    keystore: Optional[str] = None  # NAME or ref://REF
    servername: Optional[str] = None
    protocols: tuple[str, ...] = ()
    ciphers: tuple[str, ...] = ()
    target_server: Optional[str] = None  # read keyStore/keyAlias/protocols/ciphers from it


class ApiDiagnoser:
    """A ``DiagnoseFunction`` that reads the client identity from the management API.

    The keystore comes from ``overrides[target]``, else ``default_keystore``, else the one keystore
    of the environment that holds the key alias from the log. ``backend_ca_file`` (the MP
    truststore as PEM) enables the server chain check.
    """

    def __init__(
        self,
        client: ManagementClient,
        *,
        overrides: Optional[Mapping[str, TargetOverride]] = None,
        default_keystore: Optional[str] = None,
        backend_ca_file: Optional[str] = None,
        clock: Clock = time.time,
    ) -> None:
        self._client = client
        self._overrides = dict(overrides or {})
        self._default_keystore = default_keystore
        self._ca_file = backend_ca_file
        self._clock = clock

    def _find_keystore(self, org: str, env: str, alias: str) -> Optional[str]:
        if not alias:
            return None
        holders = [
            ks
            for ks in self._client.list_keystores(org, env)
            if alias in self._client.list_aliases(org, env, ks)
        ]
        return holders[0] if len(holders) == 1 else None

    def identity(self, request: DiagnosisRequest) -> Optional[ClientIdentity]:
        """The identity the MP uses for this request, or None when it cannot be told."""
        override = self._overrides.get(request.target, TargetOverride())
        keystore = override.keystore or self._default_keystore
        if keystore is None:
            keystore = self._find_keystore(request.org, request.env, request.key_alias)
        if keystore is None:
            return None
        return identity_from_management(
            self._client, request.org, request.env, keystore, request.key_alias or None
        )

    def __call__(self, request: DiagnosisRequest, timeout: float) -> Diagnosis:
        """Diagnose one request (raises ``ManagementAPIError`` when the API fails).

        With ``target_server`` configured for the target, its ``sSLInfo`` gives the keystore,
        key alias, protocols and cipher suites (settings given in the override win).
        """
        override = self._overrides.get(request.target, TargetOverride())
        protocols, ciphers = override.protocols, override.ciphers
        identity: Optional[ClientIdentity]
        if override.target_server and not override.keystore:
            identity, server = identity_from_target_server(
                self._client, request.org, request.env, override.target_server
            )
            protocols, ciphers = protocols or server.protocols, ciphers or server.ciphers
        else:
            identity = self.identity(request)
            if override.target_server:
                server = self._client.get_target_server(
                    request.org, request.env, override.target_server
                )
                protocols, ciphers = protocols or server.protocols, ciphers or server.ciphers
        return run_diagnosis(
            request.target,
            servername=override.servername,
            identity=identity,
            timeout=timeout,
            ca_file=self._ca_file,
            clock=self._clock,
            protocols=protocols,
            ciphers=ciphers,
            received=request.received,
        )


def _secret(file: Optional[str], env: Optional[str], what: str) -> Optional[str]:
    """``read_secret`` for ``diagnosis.<what>_file`` or ``_env``; never from the config itself."""
    try:
        return read_secret(file, env)
    except ValueError as err:
        raise ValueError(f"diagnosis.{what}_{'file' if file else 'env'}: {err}") from None


def client_from_config(config: DiagnosisConfig) -> ManagementClient:
    """The management API client ``diagnosis:`` describes; ValueError when it cannot be made."""
    assert config.management_url is not None  # the config model requires it when enabled
    credentials = Credentials(
        username=config.username,
        password=_secret(config.password_file, config.password_env, "password"),
        token=_secret(config.token_file, config.token_env, "token"),
    )
    return ManagementClient(
        config.management_url,
        credentials,
        verify=not config.insecure_skip_verify,
        ca_file=config.ca_file,
        timeout=config.timeout,
    )


def from_config(
    config: DiagnosisConfig, registry: CollectorRegistry, *, clock: Clock = time.time
) -> tuple[DiagnosisWorker, KeystoreInventory]:
    """The worker and the inventory ``diagnosis:`` asks for; ValueError when it cannot be met."""
    client = client_from_config(config)
    diagnoser = ApiDiagnoser(
        client,
        overrides={
            target: TargetOverride(
                keystore=t.keystore,
                servername=t.servername,
                protocols=tuple(t.protocols),
                ciphers=tuple(t.ciphers),
                target_server=t.target_server,
            )
            for target, t in config.targets.items()
        },
        default_keystore=config.default_keystore,
        backend_ca_file=config.backend_ca_file,
        clock=clock,
    )
    worker = DiagnosisWorker(
        registry,
        diagnoser,
        clock=clock,
        min_interval=config.min_interval,
        timeout=config.timeout,
        workers=config.workers,
    )
    inventory = KeystoreInventory(
        registry,
        client,
        [(k.org, k.env, k.keystore) for k in config.inventory.keystores],
        clock=clock,
    )
    return worker, inventory
