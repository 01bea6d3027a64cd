"""inventory: keystore expiry metrics and the background diagnosis worker."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest
from apigee_tls_exporter.demo.standin import Standin, chain_info, target_server
from apigee_tls_exporter.diagnosis import Diagnosis, Evaluation, ProbeResult, TlsSettings
from apigee_tls_exporter.diagnosis.inventory import (
    ApiDiagnoser,
    DiagnosisRequest,
    DiagnosisWorker,
    KeystoreInventory,
    TargetOverride,
)
from apigee_tls_exporter.diagnosis.mgmt import Credentials, ManagementClient
from helpers.clock import FakeClock
from helpers.tls_backends import Pki, PythonBackend
from prometheus_client import CollectorRegistry

EXPIRY = "apigee_tls_client_certificate_expiry_timestamp_seconds"
INFO = "apigee_tls_diagnosis_info"


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def standin() -> Iterator[Standin]:
    with Standin() as s:
        yield s


def client_for(standin: Standin, password: Optional[str] = None) -> ManagementClient:
    return ManagementClient(standin.url, Credentials("admin", password or standin.password))


def expiry_ms(standin: Standin, org: str, env: str, ks: str, alias: str) -> float:
    value: float = standin.env(org, env).keystores[ks][alias][0]["expiryDate"]
    return value


# -- KeystoreInventory --------------------------------------------------------------------------


def test_refresh_exports_expiry_per_alias(standin: Standin, pki: Pki) -> None:
    """Every alias of a keystore (reached through a reference) gets its leaf's expiry."""
    env = standin.env("acme", "prod")
    env.references["ksref"] = "ks1"
    env.keystores["ks1"] = {
        "a1": chain_info(Path(pki.client(pki.accepted_ca, "a1", days=(-1, 10))[0]).read_bytes()),
        "a2": chain_info(Path(pki.client(pki.accepted_ca, "a2", days=(-1, 90))[0]).read_bytes()),
    }
    registry = CollectorRegistry()
    inventory = KeystoreInventory(
        registry,
        client_for(standin),
        [("acme", "prod", "ref://ksref")],
        clock=FakeClock(1_800_000_000.0),
    )
    assert inventory.refresh() is True
    for alias in ("a1", "a2"):
        labels = {"org": "acme", "env": "prod", "keystore": "ks1", "alias": alias}
        expected = expiry_ms(standin, "acme", "prod", "ks1", alias) / 1000
        assert registry.get_sample_value(EXPIRY, labels) == expected
    assert registry.get_sample_value("apigee_tls_inventory_last_success_timestamp_seconds") == (
        1_800_000_000.0
    )


def test_removed_alias_disappears(standin: Standin, pki: Pki) -> None:
    """An alias deleted from the keystore loses its series on the next refresh."""
    env = standin.env("acme", "prod")
    cert = Path(pki.client(pki.accepted_ca, "a", days=(-1, 10))[0]).read_bytes()
    env.keystores["ks"] = {"old": chain_info(cert), "kept": chain_info(cert)}
    registry = CollectorRegistry()
    inventory = KeystoreInventory(registry, client_for(standin), [("acme", "prod", "ks")])
    inventory.refresh()
    del env.keystores["ks"]["old"]
    inventory.refresh()
    labels = {"org": "acme", "env": "prod", "keystore": "ks"}
    assert registry.get_sample_value(EXPIRY, {**labels, "alias": "old"}) is None
    assert registry.get_sample_value(EXPIRY, {**labels, "alias": "kept"}) is not None


def test_empty_keystore_exports_nothing(standin: Standin) -> None:
    """A keystore without certificates refreshes fine and exports no series."""
    standin.env("acme", "prod").keystores["empty"] = {}
    registry = CollectorRegistry()
    inventory = KeystoreInventory(registry, client_for(standin), [("acme", "prod", "empty")])
    assert inventory.refresh() is True
    assert [s for m in registry.collect() if m.name == EXPIRY for s in m.samples] == []


def test_errors_are_counted_by_kind_and_values_kept(standin: Standin, pki: Pki) -> None:
    """A failing refresh counts the error kind and keeps the last known expiry."""
    cert = Path(pki.client(pki.accepted_ca, "a")[0]).read_bytes()
    standin.env("acme", "prod").keystores["ks"] = {"a": chain_info(cert)}
    registry = CollectorRegistry()
    good = KeystoreInventory(registry, client_for(standin), [("acme", "prod", "ks")])
    good.refresh()
    standin.password = "rotated-password"
    assert good.refresh() is False
    errors = "apigee_tls_inventory_errors_total"
    assert registry.get_sample_value(errors, {"error": "unauthorized"}) == 1
    assert registry.get_sample_value(errors, {"error": "not_found"}) == 0
    labels = {"org": "acme", "env": "prod", "keystore": "ks", "alias": "a"}
    assert registry.get_sample_value(EXPIRY, labels) is not None


def test_unknown_keystore_counts_not_found(standin: Standin) -> None:
    """A keystore the environment does not have counts as not_found; the others still refresh."""
    standin.env("acme", "prod").keystores["ks"] = {}
    registry = CollectorRegistry()
    inventory = KeystoreInventory(
        registry, client_for(standin), [("acme", "prod", "gone"), ("acme", "prod", "ks")]
    )
    assert inventory.refresh() is False
    errors = "apigee_tls_inventory_errors_total"
    assert registry.get_sample_value(errors, {"error": "not_found"}) == 1


# -- DiagnosisWorker ----------------------------------------------------------------------------


def fake_diagnosis(request: DiagnosisRequest, cause: str) -> Diagnosis:
    result = ProbeResult(request.target, TlsSettings(), reachable=False)
    return Diagnosis(request.target, cause, "", 0.0, result, Evaluation())


class Scripted:
    """A diagnose function that returns scripted causes, optionally held at a gate."""

    def __init__(self, *causes: str) -> None:
        self.causes = list(causes)
        self.calls: list[tuple[DiagnosisRequest, float]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()

    def __call__(self, request: DiagnosisRequest, timeout: float) -> Diagnosis:
        self.calls.append((request, timeout))
        self.started.set()
        self.gate.wait(10)
        cause = self.causes.pop(0)
        if cause == "raise":
            raise RuntimeError("boom")
        return fake_diagnosis(request, cause)


def info(registry: CollectorRegistry, cause: str, alias: str = "k") -> Optional[float]:
    labels = {"org": "o", "env": "e", "target": "10.0.0.1:443", "key_alias": alias}
    return registry.get_sample_value(INFO, {**labels, "cause": cause})


def test_request_does_not_block_and_result_is_exported() -> None:
    """request() returns while the diagnosis still runs; the cause shows when it is done."""
    registry = CollectorRegistry()
    diagnose = Scripted("ca_mismatch")
    diagnose.gate.clear()
    worker = DiagnosisWorker(registry, diagnose, timeout=7.0)
    try:
        assert worker.request("o", "e", "10.0.0.1:443", "k") is True
        assert diagnose.started.wait(5)
        assert worker.cause_for("o", "e", "10.0.0.1:443", "k") is None
        diagnose.gate.set()
        assert worker.wait_idle(5)
        assert worker.cause_for("o", "e", "10.0.0.1:443", "k") == "ca_mismatch"
        assert info(registry, "ca_mismatch") == 1
        assert diagnose.calls[0][1] == 7.0
    finally:
        worker.close()


def test_at_most_one_per_key_per_interval() -> None:
    """A second request for a key within min_interval is skipped; another key still runs."""
    registry = CollectorRegistry()
    clock = FakeClock(1_800_000_000.0)
    diagnose = Scripted("ca_mismatch", "ca_mismatch")
    worker = DiagnosisWorker(registry, diagnose, clock=clock, min_interval=600)
    try:
        assert worker.request("o", "e", "10.0.0.1:443", "k") is True
        assert worker.wait_idle(5)
        clock.now += 599
        assert worker.request("o", "e", "10.0.0.1:443", "k") is False
        assert worker.request("o", "e", "10.0.0.1:443", "other") is True
        assert worker.wait_idle(5)
    finally:
        worker.close()
    skipped = registry.get_sample_value("apigee_tls_diagnoses_skipped_total", {"reason": "recent"})
    assert skipped == 1


def test_interval_elapsed_allows_a_new_diagnosis() -> None:
    """Once min_interval has passed, the same key is diagnosed again."""
    registry = CollectorRegistry()
    clock = FakeClock(1_800_000_000.0)
    worker = DiagnosisWorker(registry, Scripted("ca_mismatch", "accepted"), clock=clock)
    try:
        worker.request("o", "e", "10.0.0.1:443", "k")
        assert worker.wait_idle(5)
        clock.now += 601
        assert worker.request("o", "e", "10.0.0.1:443", "k") is True
        assert worker.wait_idle(5)
    finally:
        worker.close()
    assert worker.cause_for("o", "e", "10.0.0.1:443", "k") == "accepted"


def test_pending_request_is_not_queued_twice() -> None:
    """While a diagnosis for a key runs, another request for it is skipped as pending."""
    registry = CollectorRegistry()
    diagnose = Scripted("ca_mismatch")
    diagnose.gate.clear()
    worker = DiagnosisWorker(registry, diagnose, min_interval=0)
    try:
        assert worker.request("o", "e", "10.0.0.1:443", "k") is True
        assert worker.request("o", "e", "10.0.0.1:443", "k") is False
        diagnose.gate.set()
        assert worker.wait_idle(5)
    finally:
        worker.close()
    assert len(diagnose.calls) == 1


def test_new_cause_replaces_old_series() -> None:
    """When the cause changes, the old cause's series goes away: one series per key."""
    registry = CollectorRegistry()
    clock = FakeClock(1_800_000_000.0)
    worker = DiagnosisWorker(registry, Scripted("ca_mismatch", "accepted"), clock=clock)
    try:
        worker.request("o", "e", "10.0.0.1:443", "k")
        assert worker.wait_idle(5)
        clock.now += 700
        worker.request("o", "e", "10.0.0.1:443", "k")
        assert worker.wait_idle(5)
    finally:
        worker.close()
    assert (info(registry, "ca_mismatch"), info(registry, "accepted")) == (None, 1)


def test_failing_diagnosis_is_unknown_and_counted() -> None:
    """A diagnose function that raises gives cause unknown and result="error"; the worker lives."""
    registry = CollectorRegistry()
    clock = FakeClock(1_800_000_000.0)
    worker = DiagnosisWorker(registry, Scripted("raise", "ca_mismatch"), clock=clock)
    try:
        worker.request("o", "e", "10.0.0.1:443", "k")
        assert worker.wait_idle(5)
        assert info(registry, "unknown") == 1
        clock.now += 700
        worker.request("o", "e", "10.0.0.1:443", "k")
        assert worker.wait_idle(5)
    finally:
        worker.close()
    runs = "apigee_tls_diagnoses_total"
    assert registry.get_sample_value(runs, {"result": "error"}) == 1
    assert info(registry, "ca_mismatch") == 1


def test_closed_worker_refuses_requests() -> None:
    """After close(), request() returns False and nothing runs."""
    registry = CollectorRegistry()
    diagnose = Scripted()
    worker = DiagnosisWorker(registry, diagnose)
    worker.close()
    assert worker.request("o", "e", "10.0.0.1:443", "k") is False
    assert diagnose.calls == []


# -- end to end: worker + management API stand-in + a real TLS backend --------------------------


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_api_diagnoser_finds_ca_mismatch_in_background(
    standin: Standin, pki: Pki, version: str
) -> None:
    """A keystore leaf from a CA the backend does not list ends as diagnosis_info ca_mismatch.

    The keystore is found by the key alias from the log (no override configured).
    """
    cert, _ = pki.client(pki.other_ca, "mp")
    env = standin.env("acme", "prod")
    env.keystores["other"] = {}
    env.keystores["mpKeystore"] = {"mpKey": chain_info(Path(cert).read_bytes())}
    names = pki.ca_file(pki.accepted_ca, name="accepted.pem")
    registry = CollectorRegistry()
    diagnoser = ApiDiagnoser(client_for(standin))
    worker = DiagnosisWorker(registry, diagnoser, timeout=5.0)
    with PythonBackend(pki, version, trust=names, ca_names=names) as backend:
        try:
            assert worker.request("acme", "prod", backend.target, "mpKey") is True
            assert worker.wait_idle(10)
        finally:
            worker.close()
        labels = {"org": "acme", "env": "prod", "target": backend.target, "key_alias": "mpKey"}
        assert registry.get_sample_value(INFO, {**labels, "cause": "ca_mismatch"}) == 1
        diagnosis = worker.diagnosis_for("acme", "prod", backend.target, "mpKey")
        assert diagnosis is not None and "Leaf issuer" in diagnosis.advice


def test_api_diagnoser_uses_target_override(standin: Standin, pki: Pki) -> None:
    """A per-target keystore override wins over discovery; an empty one is missing cert."""
    env = standin.env("acme", "prod")
    env.references["ref1"] = "emptyKs"
    env.keystores["emptyKs"] = {}
    names = pki.ca_file(pki.accepted_ca, name="accepted.pem")
    with PythonBackend(pki, "1.3", trust=names, ca_names=names) as backend:
        diagnoser = ApiDiagnoser(
            client_for(standin), overrides={backend.target: TargetOverride(keystore="ref://ref1")}
        )
        result = diagnoser(DiagnosisRequest("acme", "prod", backend.target, "k"), 5.0)
    assert result.cause == "missing_client_certificate"


def test_wait_idle_returns_false_at_its_deadline() -> None:
    """wait_idle() returns False when a diagnosis is still running at its deadline."""
    registry = CollectorRegistry()
    diagnose = Scripted("accepted")
    diagnose.gate.clear()
    worker = DiagnosisWorker(registry, diagnose)
    try:
        worker.request("o", "e", "10.0.0.1:443", "k")
        start = time.monotonic()
        assert worker.wait_idle(0.1) is False
        assert time.monotonic() - start < 2
    finally:
        diagnose.gate.set()
        worker.close()


@pytest.mark.parametrize(("protocols", "expected"), [(["TLSv1.2"], "protocol_mismatch"),
                                                     (["TLSv1.3"], "ca_mismatch")])  # fmt: skip
def test_api_diagnoser_follows_the_target_server(
    standin: Standin, pki: Pki, protocols: list[str], expected: str
) -> None:
    """A target mapped to a TargetServer is diagnosed with its sSLInfo: its keystore and key
    alias, and its protocols (TLSv1.2 against a TLS 1.3 backend: protocol_mismatch)."""
    cert, _ = pki.client(pki.other_ca, "ts")
    env = standin.env("acme", "prod")
    env.keystores["tsKeystore"] = {"tsKey": chain_info(Path(cert).read_bytes())}
    names = pki.ca_file(pki.accepted_ca, name="accepted.pem")
    with PythonBackend(pki, "1.3", trust=names, ca_names=names) as backend:
        env.target_servers["ts1"] = target_server(
            "ts1", "127.0.0.1", backend.port, key_store="tsKeystore", key_alias="tsKey",
            protocols=protocols,
        )  # fmt: skip
        diagnoser = ApiDiagnoser(
            client_for(standin), overrides={backend.target: TargetOverride(target_server="ts1")}
        )
        result = diagnoser(DiagnosisRequest("acme", "prod", backend.target, "tsKey"), 5.0)
    assert (result.cause, result.result.settings.protocols) == (expected, tuple(protocols))
