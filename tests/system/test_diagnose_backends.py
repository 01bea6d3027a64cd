"""diagnose on the backends of issue 20, each started here on 127.0.0.1 with certificates made
here: lighttpd asking for ECDSA keys only, stunnel (``verify = 2``), Python ``ssl`` servers (TLS 1.3
post-handshake authentication; a silent close after the handshake; 421 without SNI) and HAProxy
in ``mode tcp`` (routing on SNI; in front of a dead server), Apache Tomcat and Node.js ``https``.

For every scenario the JSSE client (``tests/helpers/jsse.py``, the default SunX509 key manager
watched) is the ground truth: whether its key manager was asked for an alias, for which key
types, which alias it chose, how the connection ended; ``diagnose --json`` must agree with it.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
from apigee_tls_exporter.cli import main
from apigee_tls_exporter.diagnosis import (
    ClientIdentity,
    Diagnosis,
    load_pem_identity,
    render_report,
    run_diagnosis,
)
from helpers import jsse
from helpers.jsse import JsseResult, RawServer
from helpers.tls_backends import (
    VERSIONS,
    HaproxyTcp,
    Lighttpd,
    NodeHttps,
    Pki,
    PythonHttpsBackend,
    Stunnel,
    Tomcat,
    free_port,
    write_pem,
)

TIMEOUT = 5.0
ALLOWED = "allowed.client.test"


@dataclass
class Client:
    """One client identity: its PEM files and the PKCS#12 keystore the JSSE client uses."""

    cert: str
    key: str
    keystore: str


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def clients(pki: Pki) -> dict[str, Client]:
    out = {}
    for name, ca, key_type in (
        ("ec", pki.accepted_ca, "EC"),
        ("rsa", pki.accepted_ca, "RSA"),
        ("other", pki.other_ca, "EC"),
        ("allowed", pki.accepted_ca, "EC"),
    ):
        cert, key = pki.client(ca, name, key_type=key_type)
        pems = [Path(cert).read_bytes()]
        store = jsse.write_pkcs12(pki.tmp / f"{name}.p12", Path(key).read_bytes(), pems)
        out[name] = Client(cert, key, store)
    return out


def ground_truth(
    target: str, client: Optional[Client], sni: Optional[str] = None, protocol: str = ""
) -> JsseResult:
    """What the MP's JVM does: the JSSE client with the default key manager, GET /."""
    jsse.require_java()
    host, port = target.rsplit(":", 1)
    return jsse.run_client(
        host,
        int(port),
        keystore=client.keystore if client else None,
        trust_all=True,
        sni=sni,
        protocols=[f"TLSv{protocol}"] if protocol else None,
        timeout=TIMEOUT,
        request="GET",
    )


def diagnose(target: str, client: Optional[Client], **options: Any) -> dict[str, Any]:
    """``diagnose TARGET --json`` as a user runs it; its JSON object."""
    argv = ["diagnose", "--target", target, "--json", "--timeout", str(TIMEOUT)]
    if client is not None:
        argv += ["--client-cert", client.cert, "--client-key", client.key]
    if options.get("servername") is not None:
        argv += ["--servername", options["servername"]]
    if options.get("protocol"):
        argv += ["--protocols", f"TLSv{options['protocol']}"]
    return _json_of(argv)


def _json_of(argv: list[str]) -> dict[str, Any]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(argv)
    data: dict[str, Any] = json.loads(out.getvalue())
    return data


def agree_on_the_key_manager(report: dict[str, Any], truth: JsseResult) -> None:
    """diagnose's model of Java's choice is what Java's key manager did, and the attempt it
    calls the MP's got the answer the JVM got: the same alert, the same HTTP status."""
    assert report["certificate_requested"] == truth.asked, (report, truth)
    if truth.asked:
        assert report["java_sends_certificate"] == (truth.chosen_alias is not None), truth
        if report["requested_key_types"] is not None:
            asked = set(truth.key_types) - {"RSASSA-PSS"}  # a kind of key PKCS#12 cannot hold
            assert set(report["requested_key_types"]) - {"RSASSA-PSS"} == asked, truth
    mp = report["with_certificate"] if report["mp_attempt"] == "with_certificate" else None
    mp = mp or report["handshake_without_certificate"]
    received = re.match(r"\(([a-z_]+)\) Received fatal alert", truth.message or "")
    if received:
        assert mp["alert"] == received.group(1), (mp, truth)
    if truth.http_status:
        assert mp["http"] and mp["http"]["status"] == int(truth.http_status.split()[1]), mp


# -- lighttpd: a client key of a type the backend does not ask for ------------------------------


@pytest.fixture(scope="module", params=VERSIONS)
def lighttpd(pki: Pki, request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[Any]:
    ca = pki.ca_file(pki.accepted_ca, name="lighttpd-ca.pem")
    directory = tmp_path_factory.mktemp(f"lighttpd{request.param}")
    chain = write_pem(
        directory / "server-chain.pem",
        Path(pki.server_cert).read_bytes(),
        pki.server_ca.cert_pem.bytes(),
    )
    with Lighttpd(directory, chain, pki.server_key, ca, request.param) as server:
        yield server, request.param


def test_rsa_key_for_an_ecdsa_only_backend_is_key_type_not_requested(
    lighttpd: Any, clients: dict[str, Client]
) -> None:
    server, version = lighttpd
    truth = ground_truth(server.target, clients["rsa"], protocol=version)
    assert truth.asked and truth.chosen_alias is None, truth  # Java sends an empty Certificate
    assert "RSA" not in truth.key_types
    report = diagnose(server.target, clients["rsa"], protocol=version)
    agree_on_the_key_manager(report, truth)
    assert report["cause"] == "key_type_not_requested", report["advice"]
    assert report["key_type_fits"] is False
    assert "RSA" in report["advice"] and "EC" in report["advice"]
    assert report["handshake_without_certificate"]["sent_certificate"] is False


def test_ec_key_for_an_ecdsa_only_backend_is_sent_and_accepted(
    lighttpd: Any, clients: dict[str, Client]
) -> None:
    server, version = lighttpd
    truth = ground_truth(server.target, clients["ec"], protocol=version)
    assert truth.chosen_alias == "client", truth
    assert truth.http_status and " 200 " in truth.http_status, truth
    report = diagnose(server.target, clients["ec"], protocol=version)
    agree_on_the_key_manager(report, truth)
    assert report["cause"] == "accepted", report["advice"]
    assert report["with_certificate"]["sent_certificate"] is True  # seen in its Certificate


# -- stunnel: verify = 2 ------------------------------------------------------------------------


def _ok(conn: socket.socket) -> None:
    conn.recv(65536)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


@pytest.fixture(scope="module")
def stunnel(pki: Pki, tmp_path_factory: Any) -> Iterator[Stunnel]:
    ca = pki.ca_file(pki.accepted_ca, name="stunnel-ca.pem")
    with RawServer(_ok) as upstream:
        server = Stunnel(
            tmp_path_factory.mktemp("stunnel"), pki.server_cert, pki.server_key, ca, upstream.port
        )
        with server:
            yield server


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("who", "cause"), [("ec", "accepted"), ("other", "ca_mismatch")])
def test_stunnel_verify(
    stunnel: Stunnel, clients: dict[str, Client], who: str, cause: str, version: str
) -> None:
    truth = ground_truth(stunnel.target, clients[who], protocol=version)
    assert (truth.chosen_alias is not None) == (cause == "accepted"), truth
    report = diagnose(stunnel.target, clients[who], protocol=version)
    agree_on_the_key_manager(report, truth)
    assert report["cause"] == cause, report["advice"]


# -- Python ssl servers: what they say after the handshake --------------------------------------


def test_post_handshake_authentication_is_its_own_cause(
    pki: Pki, clients: dict[str, Client]
) -> None:
    trust = pki.ca_file(pki.accepted_ca, name="pha-ca.pem")
    with PythonHttpsBackend(pki, "post_handshake", trust=trust) as server:
        truth = ground_truth(server.target, clients["ec"])
        assert not truth.asked and truth.http_status and " 403 " in truth.http_status, truth
        report = diagnose(server.target, clients["ec"])
    agree_on_the_key_manager(report, truth)
    assert report["cause"] == "post_handshake_auth", report["advice"]
    assert report["post_handshake"]["post_handshake_certificate_request"] is True
    assert report["handshake_without_certificate"]["http"]["status"] == 403


@pytest.mark.parametrize(
    ("who", "cause"), [("ec", "rejected_without_reason"), ("allowed", "accepted")]
)
def test_silent_close_after_a_tls13_handshake_is_a_rejection(
    pki: Pki, clients: dict[str, Client], who: str, cause: str
) -> None:
    trust = pki.ca_file(pki.accepted_ca, name="silent-ca.pem")
    with PythonHttpsBackend(pki, "silent", trust=trust, allowed_cn=ALLOWED) as server:
        truth = ground_truth(server.target, clients[who])
        report = diagnose(server.target, clients[who])
    assert truth.chosen_alias == "client", truth  # no CA names: Java sends what it has
    assert (truth.http_status is not None) == (cause == "accepted"), truth
    agree_on_the_key_manager(report, truth)
    assert report["cause"] == cause, report["advice"]
    if cause != "accepted":
        assert report["with_certificate"]["closed_after_handshake"] is True
        assert "no reason" in report["advice"]


def test_421_without_sni_is_sni_required(pki: Pki) -> None:
    with PythonHttpsBackend(pki, "misdirected") as server:
        truth = ground_truth(server.target, None)
        named = ground_truth(server.target, None, sni="localhost")
        report = diagnose(server.target, None)
        with_name = diagnose(server.target, None, servername="localhost")
    assert truth.http_status and " 421 " in truth.http_status, truth
    assert named.http_status and " 200 " in named.http_status, named
    assert report["cause"] == "sni_required", report["advice"]
    assert with_name["cause"] == "no_client_certificate_requested", with_name["advice"]


# -- HAProxy in mode tcp ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tcp_proxy(pki: Pki, tmp_path_factory: Any) -> Iterator[HaproxyTcp]:
    directory = tmp_path_factory.mktemp("haproxy-tcp")
    with PythonHttpsBackend(pki, "misdirected") as upstream:  # noqa: SIM117 (3.9: no parens)
        with HaproxyTcp(directory, upstream.port, free_port()) as proxy:
            yield proxy


def test_proxy_routing_on_sni_closes_without_it(tcp_proxy: HaproxyTcp) -> None:
    target = f"127.0.0.1:{tcp_proxy.sni_port}"
    truth = ground_truth(target, None)
    assert truth.outcome == "handshake_failed", truth  # closed before the ServerHello
    assert ground_truth(target, None, sni="localhost").http_status is not None
    report = diagnose(target, None)
    assert report["cause"] == "sni_required", report["advice"]
    assert any(r["servername"] and r["tls_version"] for r in report["retries"]), report["retries"]


def test_proxy_in_front_of_a_dead_server_is_unreachable(tcp_proxy: HaproxyTcp) -> None:
    target = f"127.0.0.1:{tcp_proxy.dead_port}"
    truth = ground_truth(target, None)
    assert truth.outcome == "handshake_failed", truth
    started = time.monotonic()
    d: Diagnosis = run_diagnosis(target, identity=None, timeout=TIMEOUT)
    took = time.monotonic() - started
    assert d.cause == "unreachable", d.advice
    assert d.error and "whatever" in d.error
    assert "nothing answers TLS" in d.advice
    # the first attempt, then the retries side by side: each bounded by the timeout
    assert took < 2 * TIMEOUT + 1, took


def test_ecdsa_only_backend_with_an_identity_from_files(
    lighttpd: Any, clients: dict[str, Client]
) -> None:
    """The same decision from the library call the daemon and /probe use."""
    server, version = lighttpd
    ident = load_pem_identity(clients["rsa"].cert, clients["rsa"].key)
    d = run_diagnosis(server.target, identity=ident, timeout=TIMEOUT, protocols=(f"TLSv{version}",))
    assert d.cause == "key_type_not_requested"
    assert d.evaluation.key_types == ("EC",)
    report = render_report(d)
    assert "sends an empty Certificate message (the key is RSA, the backend asks for EC)" in report
    assert "NOT among them" not in report  # the issuer is not the reason
    with_cert = d.result.with_certificate
    assert with_cert is not None and not with_cert.sent_certificate  # what the probe sent


# -- Apache Tomcat: the JSSE connector, required and optional with a 403 -------------------------


@pytest.fixture(scope="module")
def tomcat(pki: Pki, tmp_path_factory: Any) -> Iterator[Tomcat]:
    jsse.require_java()
    ca = pki.ca_file(pki.accepted_ca, name="tomcat-ca.pem")
    with Tomcat(tmp_path_factory.mktemp("tomcat"), pki.server_cert, pki.server_key, ca) as server:
        yield server


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(
    ("mode", "who", "cause"),
    [
        ("required", "ec", "accepted"),
        ("required", "other", "ca_mismatch"),
        ("required", None, "missing_client_certificate"),
        ("optional", "ec", "accepted"),
        ("optional", "other", "ca_mismatch"),
    ],
)
def test_tomcat(
    tomcat: Tomcat,
    clients: dict[str, Client],
    mode: str,
    who: Optional[str],
    cause: str,
    version: str,
) -> None:
    target = tomcat.target(mode)
    client = clients[who] if who else None
    truth = ground_truth(target, client, protocol=version)
    status = truth.http_status.split()[1] if truth.http_status else None
    assert (status == "200") == (cause == "accepted"), truth
    if mode == "optional" and cause != "accepted":
        assert status == "403", truth
    if client is None:
        empty = ClientIdentity("management_api", "keystore ks in org/env: no certificates")
        d = run_diagnosis(target, identity=empty, timeout=TIMEOUT, protocols=(f"TLSv{version}",))
        report = d.to_json()
    else:
        report = diagnose(target, client, protocol=version)
        agree_on_the_key_manager(report, truth)
    assert report["cause"] == cause, report["advice"]


# -- Node.js https: requestCert, in TLS (rejectUnauthorized) or in the application (401) --------


@pytest.fixture(scope="module", params=["reject", "app"])
def node(pki: Pki, request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[NodeHttps]:
    ca = pki.ca_file(pki.accepted_ca, name="node-ca.pem")
    directory = tmp_path_factory.mktemp(f"node-{request.param}")
    reject = request.param == "reject"
    with NodeHttps(directory, pki.server_cert, pki.server_key, ca, reject) as server:
        yield server


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("who", "cause"), [("ec", "accepted"), ("other", "ca_mismatch")])
def test_node_https(
    node: NodeHttps, clients: dict[str, Client], who: str, cause: str, version: str
) -> None:
    truth = ground_truth(node.target, clients[who], protocol=version)
    status = truth.http_status.split()[1] if truth.http_status else None
    assert (status == "200") == (cause == "accepted"), truth
    assert (truth.chosen_alias is not None) == (cause == "accepted"), truth
    report = diagnose(node.target, clients[who], protocol=version)
    agree_on_the_key_manager(report, truth)
    assert report["cause"] == cause, report["advice"]
    if status == "401":  # the application's refusal is what the MP sees
        assert report["handshake_without_certificate"]["http"]["status"] == 401
