"""endpoint: /probe as a multi-target exporter, against real TLS servers on 127.0.0.1 and the
management API stand-in (not Apigee)."""

from __future__ import annotations

import base64
import http.client
import socket
import threading
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Optional

import bcrypt
import pytest
from apigee_tls_exporter.demo.standin import Standin, chain_info
from apigee_tls_exporter.diagnosis.decide import CAUSES, Diagnosis
from apigee_tls_exporter.diagnosis.endpoint import (
    OUTCOMES,
    Outcome,
    ProbeEndpoint,
    Prober,
    ProbeRequest,
    parse_request,
    render,
    scrape_budget,
)
from apigee_tls_exporter.diagnosis.mgmt import Credentials, ManagementClient
from apigee_tls_exporter.web.webconfig import WebConfig
from cryptography import x509
from helpers.support import samples
from helpers.tls_backends import Pki, PythonBackend, SilentBackend
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

PASSWORD = "pa55-w0rd-Secret"
PARAMETERS = ["target", "org", "env", "key_alias", "keystore", "protocols", "servername", "x"]


class CountingBackend(PythonBackend):
    """A Python TLS server that counts the connections it accepted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.accepted = 0
        super().__init__(*args, **kwargs)

    def _answer(self, raw: socket.socket) -> None:
        self.accepted += 1
        super()._answer(raw)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def values(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(name, sorted labels): value} of an exposition."""
    return {
        (name, tuple(sorted(labels.items()))): value
        for name, labels, value in samples(body.decode())
    }


def value(body: bytes, name: str, **labels: str) -> Optional[float]:
    return values(body).get((name, tuple(sorted(labels.items()))))


def cause_of(body: bytes) -> list[str]:
    return [dict(labels)["cause"] for (n, labels) in values(body) if n == "apigee_tls_probe_cause"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def standin(pki: Pki) -> Iterator[Standin]:
    """org acme, env prod: keystore ks with alias good (issued by the CA the backends accept)."""
    cert, _ = pki.client(pki.accepted_ca, "good")
    with Standin(password=PASSWORD) as s:
        s.env("acme", "prod").keystores["ks"] = {"good": chain_info(Path(cert).read_bytes())}
        yield s


def client_for(standin: Standin) -> ManagementClient:
    return ManagementClient(standin.url, Credentials("admin", PASSWORD), timeout=5)


def probe_params(target: str, **extra: str) -> dict[str, list[str]]:
    return {"target": [target], **{k: [v] for k, v in extra.items()}}


# --- the request ---------------------------------------------------------------------------------


def test_request_takes_every_documented_parameter() -> None:
    """target, org, env, key_alias, keystore, protocols (comma-separated) and servername."""
    params = probe_params(
        "backend.example:8443",
        org="acme",
        env="prod",
        key_alias="good",
        keystore="ref://ks",
        protocols="TLSv1.2, TLSv1.3",
        servername="api.example",
    )
    assert parse_request(params) == ProbeRequest(
        "backend.example:8443", "acme", "prod", "good", "ref://ks", ("TLSv1.2", "TLSv1.3"),
        "api.example",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "target=HOST:PORT is required"),
        ({"target": ["nohost"]}, "target must be HOST:PORT"),
        ({"target": ["h:1", "h:2"]}, "target: given 2 times"),
        ({"target": ["h:1"], "protocols": ["SSLv3"]}, "protocols: unknown SSLv3"),
    ],
)
def test_a_bad_request_is_a_400_with_its_reason(params: dict[str, list[str]], message: str) -> None:
    """A bad request answers 400 with one line saying what is wrong, and is counted."""
    registry = CollectorRegistry()
    endpoint = ProbeEndpoint(registry, lambda r, t: pytest.fail("no probe for a bad request"))
    status, content_type, body = endpoint(params, {})
    assert status == 400 and content_type.startswith("text/plain")
    assert message in body.decode() and body.decode().count("\n") == 1
    assert registry.get_sample_value(
        "apigee_tls_probe_requests_total", {"outcome": "bad_request"}
    ) == 1  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(PARAMETERS),
        st.lists(st.text(max_size=30), min_size=1, max_size=3),
    )
)
def test_any_query_is_answered_never_raised(params: dict[str, list[str]]) -> None:
    """Whatever the query, the handler answers 200 (a probe ran) or 400, and never raises."""
    endpoint = ProbeEndpoint(CollectorRegistry(), lambda r, t: _unreachable(r))
    status, _, _ = endpoint(params, {})
    assert status in (200, 400)
    endpoint.close()


def _unreachable(request: ProbeRequest) -> Diagnosis:
    raise ConnectionError(request.target)  # counted as an internal error, still an answer


@settings(max_examples=200)
@given(st.one_of(st.none(), st.text(max_size=12)), st.floats(1, 120))
def test_the_budget_stays_within_the_scrape_timeout(header: Optional[str], limit: float) -> None:
    """The probe's budget is positive, below Prometheus's timeout and below the limit."""
    headers = {} if header is None else {"x-prometheus-scrape-timeout-seconds": header}
    budget = scrape_budget(headers, limit)
    assert 0 < budget <= limit
    try:
        sent = float(header) if header else None
    except ValueError:
        sent = None
    if sent is not None and sent > 0.6:
        assert budget <= sent


# --- the probe against real servers ---------------------------------------------------------


def test_an_accepted_pair_gives_success_and_its_facts(pki: Pki, standin: Standin) -> None:
    """The backend names the issuer of the keystore's certificate: success 1, cause accepted,
    Java sends it, both expiry dates (from the certificates) and the negotiated version."""
    trust = pki.ca_file(pki.accepted_ca, name="accepted.pem")
    with PythonBackend(pki, "1.3", trust=trust, ca_names=trust) as backend:
        endpoint = ProbeEndpoint(CollectorRegistry(), Prober(client_for(standin)))
        status, _, body = endpoint(
            probe_params(backend.target, org="acme", env="prod", key_alias="good"), {}
        )
    assert status == 200
    assert value(body, "apigee_tls_probe_success") == 1
    assert cause_of(body) == ["accepted"]
    assert value(body, "apigee_tls_probe_java_sends_certificate") == 1
    assert value(body, "apigee_tls_probe_tls_version_info", version="TLSv1.3") == 1
    leaf = standin.env("acme", "prod").keystores["ks"]["good"][0]
    assert value(body, "apigee_tls_probe_client_certificate_expiry_timestamp_seconds") == (
        leaf["expiryDate"] / 1000
    )
    server = x509.load_pem_x509_certificate(pki.server.cert_chain_pems[0].bytes())
    assert value(body, "apigee_tls_probe_server_certificate_expiry_timestamp_seconds") == (
        server.not_valid_after_utc.timestamp()
    )


def test_a_backend_that_no_longer_names_our_issuer_predicts_ca_mismatch(
    pki: Pki, standin: Standin
) -> None:
    """The backend's CA list holds another CA: Java would send nothing; success 0, ca_mismatch."""
    other = pki.ca_file(pki.other_ca, name="other.pem")
    with PythonBackend(pki, "1.3", trust=other, ca_names=other) as backend:
        endpoint = ProbeEndpoint(CollectorRegistry(), Prober(client_for(standin)))
        _, _, body = endpoint(
            probe_params(backend.target, org="acme", env="prod", key_alias="good"), {}
        )
    assert value(body, "apigee_tls_probe_success") == 0
    assert cause_of(body) == ["ca_mismatch"]
    assert value(body, "apigee_tls_probe_java_sends_certificate") == 0
    # what the status page shows: the prediction, while the answer is cached
    [(request, cause, success, _)] = endpoint.predictions()
    assert (request.target, request.key_alias, cause, success) == (
        backend.target,
        "good",
        "ca_mismatch",
        False,
    )


def test_without_a_key_alias_the_server_side_alone_is_probed(pki: Pki) -> None:
    """No key alias and no management API: reachability, version and the server's expiry."""
    with PythonBackend(pki, "1.2", require=False) as backend:
        endpoint = ProbeEndpoint(CollectorRegistry(), Prober(None))
        _, _, body = endpoint(probe_params(backend.target), {})
    assert value(body, "apigee_tls_probe_success") == 1
    assert cause_of(body) == ["no_client_certificate_requested"]
    assert value(body, "apigee_tls_probe_tls_version_info", version="TLSv1.2") == 1
    assert value(body, "apigee_tls_probe_java_sends_certificate") is None
    assert value(body, "apigee_tls_probe_client_certificate_expiry_timestamp_seconds") is None


def test_a_closed_port_is_unreachable() -> None:
    """Nothing listens: success 0, cause unreachable."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        target = f"127.0.0.1:{s.getsockname()[1]}"  # bound, not listening: refused
        endpoint = ProbeEndpoint(CollectorRegistry(), Prober(None))
        _, _, body = endpoint(probe_params(target), {})
    assert value(body, "apigee_tls_probe_success") == 0
    assert cause_of(body) == ["unreachable"]


def test_a_failing_management_api_is_an_error_not_a_crash(pki: Pki, standin: Standin) -> None:
    """Wrong credentials: the probe answers success 0 with error management_api:unauthorized."""
    with PythonBackend(pki, "1.3", require=False) as backend:
        client = ManagementClient(standin.url, Credentials("admin", "wrong"), timeout=5)
        endpoint = ProbeEndpoint(CollectorRegistry(), Prober(client))
        status, _, body = endpoint(
            probe_params(backend.target, org="acme", env="prod", key_alias="good"), {}
        )
    assert status == 200
    assert value(body, "apigee_tls_probe_success") == 0
    assert value(body, "apigee_tls_probe_error", error="management_api:unauthorized") == 1
    assert cause_of(body) == []


def test_a_probe_never_outlasts_the_scrape_timeout() -> None:
    """A backend that accepts TCP and never answers: the answer comes within Prometheus's scrape
    timeout (here 2 s), with success 0."""
    with SilentBackend() as silent:
        endpoint = ProbeEndpoint(CollectorRegistry(), Prober(None))
        start = time.monotonic()
        _, _, body = endpoint(
            probe_params(silent.target), {"x-prometheus-scrape-timeout-seconds": "2"}
        )
        took = time.monotonic() - start
    assert took < 2.0
    assert value(body, "apigee_tls_probe_success") == 0


def test_a_scrape_storm_opens_one_connection_per_cache_period(pki: Pki, standin: Standin) -> None:
    """50 concurrent scrapes of one target make one probe: the backend accepts one connection and
    every scrape gets the same answer; after the cache period the next scrape probes again."""
    trust = pki.ca_file(pki.accepted_ca, name="storm.pem")
    clock = Clock()
    registry = CollectorRegistry()
    with CountingBackend(pki, "1.3", trust=trust, ca_names=trust) as backend:
        endpoint = ProbeEndpoint(
            registry, Prober(client_for(standin)), ttl=60, workers=4, clock=clock
        )
        params = probe_params(backend.target, org="acme", env="prod", key_alias="good")
        barrier = threading.Barrier(50)

        def scrape(_: int) -> tuple[int, str, bytes]:
            barrier.wait()
            return endpoint(params, {"x-prometheus-scrape-timeout-seconds": "10"})

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(scrape, range(50)))
        assert backend.accepted == 1
        assert {a[0] for a in answers} == {200}
        assert len({a[2] for a in answers}) == 1
        assert value(answers[0][2], "apigee_tls_probe_success") == 1
        counts = {
            o: registry.get_sample_value("apigee_tls_probe_requests_total", {"outcome": o})
            for o in OUTCOMES
        }
        assert counts["probed"] == 1 and counts["joined"] + counts["cached"] == 49
        clock.now += 59
        endpoint(params, {})
        assert backend.accepted == 1
        clock.now += 2
        endpoint(params, {})
        assert backend.accepted == 2
        endpoint.close()


def test_render_reports_every_cause_of_the_vocabulary() -> None:
    """The cause label is always one of diagnose's causes."""
    assert "accepted" in CAUSES and "ca_mismatch" in CAUSES
    body = render(Outcome(None, 1.0, 0.5, "internal"))
    assert value(body, "apigee_tls_probe_success") == 0
    assert value(body, "apigee_tls_probe_error", error="internal") == 1


def test_probe_is_served_behind_the_same_auth_as_metrics(
    start_server: Callable[..., Any], pki: Pki
) -> None:
    """Registered as a route of the HTTP server with basic auth: /probe is 401 without
    credentials, the exposition with them, and 400 for a bad query."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    endpoint = ProbeEndpoint(CollectorRegistry(), Prober(None))
    server = start_server(
        CollectorRegistry(),
        web_config=WebConfig(basic_auth_users={"u": hashed}),
        routes={"/probe": endpoint},
    )

    def get(path: str, authorization: Optional[str]) -> tuple[int, str, bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            headers = {"Authorization": authorization} if authorization else {}
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheader("Content-Type") or "", response.read()
        finally:
            connection.close()

    good = "Basic " + base64.b64encode(b"u:pw").decode()
    with PythonBackend(pki, "1.2", require=False) as backend:
        path = "/probe?" + urllib.parse.urlencode({"target": backend.target})
        assert get(path, None)[0] == 401
        status, content_type, body = get(path, good)
    assert (status, content_type) == (200, "text/plain; version=0.0.4; charset=utf-8")
    assert value(body, "apigee_tls_probe_success") == 1
    assert get("/probe?target=nohost", good)[0] == 400
    endpoint.close()


def test_the_cache_keeps_a_bounded_number_of_results(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_RESULTS distinct requests within the cache period, the oldest result is
    forgotten (probed again when asked), the newer ones are still answered from the cache."""
    from apigee_tls_exporter.diagnosis import endpoint as module

    monkeypatch.setattr(module, "MAX_RESULTS", 2)
    clock, asked = Clock(), []

    def probe(request: ProbeRequest, budget: float) -> Diagnosis:
        asked.append(request.target)
        return _unreachable(request)

    endpoint = ProbeEndpoint(CollectorRegistry(), probe, clock=clock)
    for target in ("a:1", "b:1", "c:1", "b:1", "c:1", "a:1"):
        clock.now += 1
        endpoint(probe_params(target), {})
    assert asked == ["a:1", "b:1", "c:1", "a:1"]
    endpoint.close()
