"""diagnose on the backends operators run: nginx, Apache httpd, HAProxy, openssl s_server (and a
Python ssl server), each started once for the module on 127.0.0.1; one test per cause and per row
of issue 12's table, each on TLS 1.2 and 1.3 where it applies (the MP's protocols choose)."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
from apigee_tls_exporter import diagnosis
from apigee_tls_exporter.demo.standin import Standin, chain_info, target_server
from apigee_tls_exporter.diagnosis import (
    ClientIdentity,
    Diagnosis,
    load_pem_identity,
    render_report,
    run_diagnosis,
)
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID
from helpers import jsse
from helpers.tls_backends import (
    SNI_NAME,
    VERSIONS,
    Lab,
    OpenSSLBackend,
    Pki,
    PlainHttpBackend,
    PythonBackend,
    SilentBackend,
    free_port,
)

TIMEOUT = 5.0


@dataclass
class Ids:
    """The client identities of the module (PEM files with keys)."""

    good: ClientIdentity
    other: ClientIdentity
    wrong_usage: ClientIdentity
    via_intermediate: ClientIdentity  # leaf and intermediate
    leaf_of_intermediate: ClientIdentity  # the same leaf without its intermediate
    expired: ClientIdentity
    future: ClientIdentity
    files: dict[str, tuple[str, str]]


EMPTY = ClientIdentity("management_api", "keystore ks in org/env: no certificates")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def ids(pki: Pki) -> Ids:
    files = {
        "good": pki.client(pki.accepted_ca, "good"),
        "other": pki.client(pki.other_ca, "other"),
        "wrong_usage": pki.client(
            pki.accepted_ca, "server-only", usages=(ExtendedKeyUsageOID.SERVER_AUTH,)
        ),
        "via_intermediate": pki.client(pki.intermediate, "inter"),
        "leaf_of_intermediate": pki.client(pki.intermediate, "leafonly", chain=1),
        "expired": pki.client(pki.accepted_ca, "old", days=(-60, -1)),
        "future": pki.client(pki.accepted_ca, "new", days=(2, 60)),
    }
    loaded = {name: load_pem_identity(*pair) for name, pair in files.items()}
    return Ids(files=files, **loaded)


@pytest.fixture(scope="module")
def lab(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    with Lab(tmp_path_factory.mktemp("lab"), pki) as running:
        yield running


def run(
    lab: Lab,
    kind: str,
    scenario: str,
    identity: Optional[ClientIdentity],
    version: Optional[str] = None,
    **kw: Any,
) -> Diagnosis:
    """Diagnose ``kind`` playing ``scenario`` with the MP limited to TLS ``version``."""
    if version is not None:
        kw.setdefault("protocols", (f"TLSv{version}",))
    return run_diagnosis(lab.target(kind, scenario), identity=identity, timeout=TIMEOUT, **kw)


def cases(scenario: str, *kinds: str) -> Any:
    """Parametrize (kind, version) over the kinds that play ``scenario`` and both versions."""
    every = kinds or Lab.KINDS_BY_SCENARIO[scenario]
    return pytest.mark.parametrize(
        ("kind", "version"), [(k, v) for k in every for v in VERSIONS], ids=lambda x: str(x)
    )


def why(d: Diagnosis, lab: Lab, kind: str) -> str:
    return render_report(d) + "\n--- backend log ---\n" + lab.log(kind)


# -- the existing causes, on every backend that plays them, TLS 1.2 and 1.3 ----------------------


@cases("require")
def test_empty_keystore_is_missing_client_certificate(lab: Lab, kind: str, version: str) -> None:
    """An identity without certificates, against a backend that requires one: missing cert."""
    d = run(lab, kind, "require", EMPTY, version)
    assert (d.cause, d.certificate_requested) == ("missing_client_certificate", True), why(
        d, lab, kind
    )


@cases("require")
def test_leaf_from_unlisted_ca_is_ca_mismatch(lab: Lab, ids: Ids, kind: str, version: str) -> None:
    """A leaf whose chain has no issuer among the CA names: Java sends nothing, ca_mismatch."""
    d = run(lab, kind, "require", ids.other, version)
    assert (d.cause, d.evaluation.java_sends, d.evaluation.mp_attempt) == (
        "ca_mismatch",
        False,
        "without_certificate",
    ), why(d, lab, kind)
    assert d.handshake_with_certificate == "rejected"


@cases("require")
def test_expired_client_certificate(lab: Lab, ids: Ids, kind: str, version: str) -> None:
    """A leaf from an accepted CA whose validity ended is client_certificate_expired, alone."""
    d = run(lab, kind, "require", ids.expired, version)
    assert (d.cause, d.other_problems) == ("client_certificate_expired", ()), why(d, lab, kind)


@cases("require")
def test_not_yet_valid_leaf_is_its_only_cause(lab: Lab, ids: Ids, kind: str, version: str) -> None:
    """A not-yet-valid leaf gives that cause and no spurious 'Also: incomplete_chain'."""
    d = run(lab, kind, "require", ids.future, version)
    assert (d.cause, d.other_problems) == ("client_certificate_not_yet_valid", ()), why(
        d, lab, kind
    )
    assert "Also:" not in render_report(d)


@cases("require")
def test_good_certificate_is_accepted(lab: Lab, ids: Ids, kind: str, version: str) -> None:
    """A valid leaf from an accepted CA is accepted, at TLS and at HTTP, on the MP's version."""
    d = run(lab, kind, "require", ids.good, version)
    assert (d.cause, d.handshake_with_certificate, d.tls_version) == (
        "accepted",
        "accepted",
        f"TLSv{version}",
    ), why(d, lab, kind)


@cases("incomplete")
def test_leaf_without_its_intermediate_is_incomplete_chain(
    lab: Lab, ids: Ids, kind: str, version: str
) -> None:
    """The backend names the intermediate but trusts only the root; the keystore holds the leaf
    alone: Java sends it (its issuer is named) and the backend cannot build the path."""
    d = run(lab, kind, "incomplete", ids.leaf_of_intermediate, version)
    assert d.cause == "incomplete_chain", why(d, lab, kind)


@cases("incomplete")
def test_leaf_with_its_intermediate_is_accepted(
    lab: Lab, ids: Ids, kind: str, version: str
) -> None:
    """The same leaf with its intermediate in the chain is accepted (the incomplete_chain fix)."""
    d = run(lab, kind, "incomplete", ids.via_intermediate, version)
    assert d.cause == "accepted", why(d, lab, kind)


@cases("no_client_auth")
def test_backend_without_client_auth(lab: Lab, ids: Ids, kind: str, version: str) -> None:
    """A backend that asks for no certificate gives no_client_certificate_requested."""
    d = run(lab, kind, "no_client_auth", ids.good, version)
    assert (d.cause, d.certificate_requested) == ("no_client_certificate_requested", False), why(
        d, lab, kind
    )


@cases("require")
def test_server_chain_not_in_truststore(
    lab: Lab, ids: Ids, pki: Pki, kind: str, version: str
) -> None:
    """A truststore without the backend's CA gives server_certificate_untrusted."""
    wrong = pki.ca_file(pki.other_ca, name="truststore-wrong.pem")
    d = run(lab, kind, "require", ids.good, version, ca_file=wrong)
    assert d.cause == "server_certificate_untrusted", why(d, lab, kind)
    assert d.server_verify_error is not None


@cases("require")
def test_server_chain_in_truststore_does_not_hide_the_cause(
    lab: Lab, ids: Ids, pki: Pki, kind: str, version: str
) -> None:
    """With the right truststore the chain verifies and the client-side cause still shows."""
    trust = pki.ca_file(pki.server_ca, name="truststore.pem")
    d = run(lab, kind, "require", ids.other, version, ca_file=trust)
    assert (d.result.server_chain_checked, d.server_verify_error, d.cause) == (
        True,
        None,
        "ca_mismatch",
    ), why(d, lab, kind)


@cases("require")
def test_no_identity_given_is_unknown(lab: Lab, kind: str, version: str) -> None:
    """Without a client identity the cause stays unknown, but the CA names are reported, and the
    advice says what to give instead of pointing at the report."""
    d = run(lab, kind, "require", None, version)
    assert (d.cause, len(d.acceptable_ca_names)) == ("unknown", 1), why(d, lab, kind)
    assert "--client-cert" in d.advice
    assert "above" not in d.advice


def test_closed_port_is_unreachable() -> None:
    """Nothing listening on the port: unreachable, quickly."""
    d = run_diagnosis(f"127.0.0.1:{free_port()}", identity=None, timeout=TIMEOUT)
    assert d.cause == "unreachable"
    assert d.error is not None and "TCP connect failed" in d.error


def test_silent_backend_times_out_as_unreachable() -> None:
    """A peer that accepts TCP but never answers the ClientHello times out: unreachable."""
    start = time.monotonic()
    with SilentBackend() as silent:
        d = run_diagnosis(silent.target, identity=None, timeout=0.5)
    assert (d.cause, time.monotonic() - start < 3.0) == ("unreachable", True)
    assert d.error is not None and "no TLS answer" in d.error


# -- the rows of issue 12's table ------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_nginx_rejecting_at_http_is_rejected_at_http(lab: Lab, ids: Ids, version: str) -> None:
    """nginx (optional_no_ca, no CA names, 403 unless verified) completes the handshake with a
    certificate from an untrusted CA, then answers 403: rejected_at_http with the status."""
    d = run(lab, "nginx", "no_names_403", ids.other, version)
    assert (d.cause, d.evaluation.rejection) == ("rejected_at_http", "http"), why(d, lab, "nginx")
    assert "HTTP 403 Forbidden" in d.advice
    assert "HTTP 403" in render_report(d)


@cases("cn_403")
def test_access_rule_refusing_a_verified_certificate_is_rejected_at_http(
    lab: Lab, ids: Ids, kind: str, version: str
) -> None:
    """Apache (Require expr on the CN) and HAProxy (http-request deny on ssl_c_s_dn) verify the
    certificate, complete the handshake, then answer 403: rejected_at_http with the status."""
    d = run(lab, kind, "cn_403", ids.good, version)
    assert (d.cause, d.handshake_with_certificate) == ("rejected_at_http", "rejected"), why(
        d, lab, kind
    )
    assert "HTTP 403" in d.advice


@pytest.mark.parametrize("version", VERSIONS)
def test_nginx_http_400_reason_is_reported(lab: Lab, ids: Ids, version: str) -> None:
    """nginx's 400 and its reason ("No required SSL certificate was sent") appear with the cause:
    the MP's handshake without a certificate is rejected at HTTP, not accepted."""
    d = run(lab, "nginx", "require", ids.other, version)
    anon = d.anonymous
    assert anon is not None and anon.http is not None
    assert (anon.http.status, anon.http.title, d.evaluation.rejection) == (
        400,
        "400 No required SSL certificate was sent",
        "certificate",
    )
    assert "No required SSL certificate was sent" in render_report(d)


@pytest.mark.parametrize("version", VERSIONS)
def test_nginx_optional_no_ca_403_without_certificate(lab: Lab, version: str) -> None:
    """nginx optional_no_ca with a 403 and an empty keystore: missing_client_certificate, and the
    report shows the 403 the MP would get."""
    d = run(lab, "nginx", "optional_403", EMPTY, version)
    assert (d.cause, d.evaluation.rejection) == ("missing_client_certificate", "http")
    assert "HTTP 403" in render_report(d)


@pytest.mark.parametrize("version", VERSIONS)
def test_backend_that_asks_but_does_not_require(lab: Lab, ids: Ids, pki: Pki, version: str) -> None:
    """openssl s_server -verify asks for a certificate but lets the call in without one: an
    empty keystore or an unlisted issuer is not what fails there (accepted, the latent problem
    listed)."""
    names = pki.ca_file(pki.accepted_ca, name="optional-names.pem")
    with OpenSSLBackend(pki, version, ca_file=names, require=False, extra=("-verify", "1")) as be:
        empty = run_diagnosis(be.target, identity=EMPTY, timeout=TIMEOUT)
        other = run_diagnosis(be.target, identity=ids.other, timeout=TIMEOUT)
    assert (empty.cause, empty.other_problems) == ("accepted", ("missing_client_certificate",))
    assert (other.cause, other.other_problems) == ("accepted", ("ca_mismatch",))


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("backend_kind", ["s_server", "python"])
def test_untrusted_issuer_without_ca_names(
    lab: Lab, ids: Ids, pki: Pki, backend_kind: str, version: str
) -> None:
    """A backend that sends no CA names rejects a leaf from a CA it does not trust: the backend
    does not trust this issuer (not "upload the chain")."""
    if backend_kind == "s_server":
        d = run(lab, "s_server", "no_names", ids.other, version)
    else:
        trust = pki.ca_file(pki.accepted_ca, name="py-trust.pem")
        with PythonBackend(pki, version, trust=trust) as be:
            d = run_diagnosis(be.target, identity=ids.other, timeout=TIMEOUT)
    assert (d.cause, d.acceptable_ca_names) == ("issuer_not_trusted_by_backend", ()), why(
        d, lab, "s_server"
    )
    assert ids.other.certificates[0].issuer in d.advice
    assert "any issuer is acceptable" not in render_report(d)


@cases("require")
def test_leaf_without_client_auth_usage_is_wrong_usage(
    lab: Lab, ids: Ids, kind: str, version: str
) -> None:
    """A leaf whose extended key usage lacks clientAuth (nginx error 26, s_server
    unsupported_certificate) is client_certificate_wrong_usage."""
    d = run(lab, kind, "require", ids.wrong_usage, version)
    assert d.cause == "client_certificate_wrong_usage", why(d, lab, kind)
    assert d.handshake_with_certificate == "rejected"
    assert "clientAuth" in d.advice


@cases("sni")
def test_sni_required_without_servername(lab: Lab, ids: Ids, kind: str, version: str) -> None:
    """nginx's ssl_reject_handshake and HAProxy's strict-sni refuse a handshake without SNI; the
    MP sends none for an IP target: sni_required, and with the host name as --servername the
    same certificate works."""
    d = run(lab, kind, "sni", ids.good, version)
    assert d.cause == "sni_required", why(d, lab, kind)
    assert "--servername" in d.advice and "IP target" in d.advice
    named = run(lab, kind, "sni", ids.good, version, servername=SNI_NAME)
    assert named.cause == "accepted", why(named, lab, kind)


@cases("tls13")
def test_tls13_only_backend_and_mp_limited_to_tls12(
    lab: Lab, ids: Ids, kind: str, version: str
) -> None:
    """A TLS 1.3-only backend and the MP's protocols TLSv1.2: protocol_mismatch; with TLSv1.3
    offered, the same certificate is accepted."""
    d = run(lab, kind, "tls13", ids.good, "1.2")
    assert d.cause == "protocol_mismatch", why(d, lab, kind)
    assert "TLSv1.3" in d.advice
    if version == "1.3":
        assert run(lab, kind, "tls13", ids.good, "1.3").cause == "accepted"


@cases("require")
def test_no_common_cipher_suite_is_cipher_mismatch(
    lab: Lab, ids: Ids, kind: str, version: str
) -> None:
    """The MP's cipher suites (RSA key exchange) cannot serve the backend's ECDSA certificate;
    with the default suites it works: cipher_mismatch. On TLS 1.3 a TLS 1.3 suite is offered
    too, so the handshake works there."""
    suites = ("TLS_RSA_WITH_AES_128_GCM_SHA256",)
    if version == "1.3":
        suites += ("TLS_AES_128_GCM_SHA256",)
    d = run(lab, kind, "require", ids.good, version, ciphers=suites)
    expected = "cipher_mismatch" if version == "1.2" else "accepted"
    assert d.cause == expected, why(d, lab, kind)


@cases("other_host")
def test_backend_certificate_for_another_host(lab: Lab, ids: Ids, kind: str, version: str) -> None:
    """The backend's certificate names other.example only: hostname_mismatch."""
    d = run(lab, kind, "other_host", ids.good, version)
    assert d.cause == "hostname_mismatch", why(d, lab, kind)
    assert "other.example" in d.advice


@cases("expired_server")
def test_expired_backend_certificate(lab: Lab, ids: Ids, kind: str, version: str) -> None:
    """The backend serves an expired certificate: server_certificate_expired."""
    d = run(lab, kind, "expired_server", ids.good, version)
    assert d.cause == "server_certificate_expired", why(d, lab, kind)


@cases("depth0")
def test_verify_depth_too_small_is_chain_too_long(
    lab: Lab, ids: Ids, kind: str, version: str
) -> None:
    """ssl_verify_depth 0 / SSLVerifyDepth 0 and a chain with an intermediate: Java sends it (the
    intermediate's issuer is named) and the backend refuses it: chain_too_long."""
    d = run(lab, kind, "depth0", ids.via_intermediate, version)
    assert (d.cause, d.evaluation.matched_depth) == ("chain_too_long", 1), why(d, lab, kind)


@pytest.mark.parametrize("version", VERSIONS)
def test_verify_depth_zero_and_a_leaf_of_a_named_root(lab: Lab, ids: Ids, version: str) -> None:
    """A leaf issued by the named root itself: nginx's ssl_verify_depth 0 lets it in, Apache's
    SSLVerifyDepth 0 (self-signed only) refuses it with internal_error: chain_too_long."""
    assert run(lab, "nginx", "depth0", ids.good, version).cause == "accepted"
    d = run(lab, "apache", "depth0", ids.good, version)
    assert (d.cause, d.alert_with_certificate) == ("chain_too_long", "internal_error"), why(
        d, lab, "apache"
    )


@pytest.mark.parametrize("version", VERSIONS)
def test_apache_default_depth_refuses_an_intermediate(lab: Lab, ids: Ids, version: str) -> None:
    """Apache's default SSLVerifyDepth 1 refuses leaf + intermediate below a named root."""
    d = run(lab, "apache", "require", ids.via_intermediate, version)
    assert d.cause == "chain_too_long", why(d, lab, "apache")


@pytest.mark.parametrize("version", VERSIONS)
def test_nginx_accepts_an_intermediate_chain(lab: Lab, ids: Ids, version: str) -> None:
    """nginx's default ssl_verify_depth 1 accepts leaf + intermediate below a named root, and
    the report marks the intermediate's issuer, not the leaf's, as the acceptable one."""
    d = run(lab, "nginx", "require", ids.via_intermediate, version)
    assert (d.cause, d.evaluation.matched_depth) == ("accepted", 1), why(d, lab, "nginx")
    report = render_report(d)
    assert "NOT among them" not in report
    marked = [line for line in report.splitlines() if "<- among the acceptable CAs" in line]
    assert marked == [f"    issuer:  {d.client_chain[1].issuer}   <- among the acceptable CAs"]


def test_plain_http_port_is_not_tls() -> None:
    """A port that answers the ClientHello with plain HTTP: not_tls."""
    with PlainHttpBackend() as plain:
        d = run_diagnosis(plain.target, identity=None, timeout=TIMEOUT)
    assert d.cause == "not_tls", render_report(d)


@pytest.mark.parametrize(
    ("received", "meaning"),
    [
        ("unrecognized_name", "SNI"),
        ("unsupported_certificate", "clientAuth"),
        ("certificate_required", "TLS 1.3"),
    ],
)
def test_unknown_says_what_the_received_alert_means(lab: Lab, received: str, meaning: str) -> None:
    """When no cause is certain, the advice names the alert the MP received and its usual
    meaning, not "compare with the backend's log"."""
    d = run(lab, "nginx", "require", None, "1.2", received=received)
    assert d.cause == "unknown"
    assert f"The MP received {received}, which usually means" in d.advice
    assert meaning in d.advice
    assert "backend's own log" not in d.advice


# -- details of the probe -------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_acceptable_ca_names_are_the_ones_the_backend_sends(pki: Pki, version: str) -> None:
    """The probe reports exactly the CA names the backend sent, most specific attribute first."""
    names = pki.ca_file(pki.accepted_ca, pki.other_ca, name="two.pem")
    with OpenSSLBackend(pki, version, ca_file=names) as be:
        d = run_diagnosis(be.target, identity=None, timeout=TIMEOUT)
    expected = sorted(
        diagnosis.format_name(c.subject)
        for c in x509.load_pem_x509_certificates(Path(names).read_bytes())
    )
    assert expected == sorted(d.acceptable_ca_names)


@pytest.mark.parametrize("kind", ["s_server", "haproxy", "apache"])
def test_tls13_rejection_is_seen_after_the_handshake(lab: Lab, ids: Ids, kind: str) -> None:
    """In TLS 1.3 the backend's alert arrives after the client's handshake: the probe reads it."""
    d = run(lab, kind, "require", ids.expired, "1.3")
    cert = d.result.with_certificate
    assert cert is not None and cert.alert_after_handshake, why(d, lab, kind)
    assert d.alert_without_certificate == "certificate_required"
    assert d.alert_with_certificate is not None


def test_server_chain_is_recorded(lab: Lab) -> None:
    """The server's chain is reported with subject, issuer, validity and SANs."""
    d = run(lab, "nginx", "require", None, "1.2")
    leaf = d.server_chain[0]
    assert leaf.subject_alternative_names == ("DNS:localhost", "IP:127.0.0.1")
    assert leaf.not_after is not None and leaf.not_after > time.time()


def test_injected_clock_decides_expiry(lab: Lab, ids: Ids) -> None:
    """Validity is judged by the injected clock, not the host's."""
    later = time.time() + 90 * 86400
    d = run(lab, "haproxy", "require", ids.good, "1.2", clock=lambda: later)
    assert d.cause == "client_certificate_expired"


def test_sni_is_the_host_name_and_none_for_an_ip() -> None:
    """The MP sends the host name as SNI, none for an IP literal; --servername overrides."""
    assert diagnosis.mp_settings("10.1.2.3:443").servername is None
    assert diagnosis.mp_settings("[::1]:443").servername is None
    assert diagnosis.mp_settings("backend.example:443").servername == "backend.example"
    assert diagnosis.mp_settings("10.1.2.3:443", servername="b.example").servername == "b.example"
    assert diagnosis.mp_settings("backend.example:443", servername="").servername is None


@pytest.mark.parametrize(
    ("java", "openssl"),
    [
        ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"),
        ("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"),
        ("TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA"),
        ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256"),
        ("TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"),
        ("SSL_RSA_WITH_3DES_EDE_CBC_SHA", "DES-CBC3-SHA"),
        ("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256", "DHE-RSA-AES128-GCM-SHA256"),
    ],
)
def test_java_cipher_names_map_to_openssl(java: str, openssl: str) -> None:
    """Java's (IANA) cipher suite names are offered under OpenSSL's names."""
    assert diagnosis.probe.openssl_cipher(java) == openssl


# -- the report and the JSON agree with the decision ----------------------------------------------


def test_report_explains_the_probe_sent_what_java_would_not(lab: Lab, ids: Ids) -> None:
    """With ca_mismatch the probe's own handshake with the certificate is explained: Java would
    not have sent it; the leaf issuer is marked NOT among the names."""
    d = run(lab, "haproxy", "require", ids.other, "1.2")
    report = render_report(d)
    assert d.cause == "ca_mismatch"
    assert "(the probe sent it; Java sends none for these CA names)" in report
    assert f"issuer:  {ids.other.certificates[0].issuer}   <- NOT among them" in report
    assert "Java's key manager: sends an empty Certificate message" in report


def test_report_without_ca_names_does_not_call_every_issuer_acceptable(lab: Lab, ids: Ids) -> None:
    """No CA names sent: the report says Java sends the certificate whatever its issuer, and no
    longer that any issuer is acceptable when the backend then rejects it."""
    report = render_report(run(lab, "s_server", "no_names", ids.other, "1.3"))
    assert "No client certificate CA names sent: Java sends the certificate whatever" in report
    assert "any issuer is acceptable" not in report


@pytest.mark.parametrize(
    ("kind", "scenario", "identity"),
    [
        (kind, scenario, identity)
        for kind, scenario in [("nginx", "require"), ("apache", "require"),
                               ("s_server", "no_names"), ("nginx", "depth0"),
                               ("apache", "incomplete"), ("haproxy", "cn_403")]
        for identity in ("good", "other", "via_intermediate", "leaf_of_intermediate", "future")
    ],
)  # fmt: skip
def test_report_marks_follow_the_decision(
    lab: Lab, ids: Ids, kind: str, scenario: str, identity: str
) -> None:
    """Whatever the case, the report's marks come from the evaluation the cause comes from: the
    leaf issuer is marked NOT among the names exactly when Java sends nothing, one chain issuer is
    marked acceptable exactly when Java sends the chain for the names, the probe's own
    certificate handshake is explained when Java would not send it, and no line refers to
    another ("above")."""
    d = run(lab, kind, scenario, getattr(ids, identity), "1.3")
    report = render_report(d)
    ev = d.evaluation
    assert ("NOT among them" in report) == (ev.java_sends is False), report
    marked = report.count("<- among the acceptable CAs")
    assert marked == (1 if ev.java_sends and d.acceptable_ca_names else 0), report
    explained = "(the probe sent it; Java sends none for these CA names)" in report
    assert explained == ev.probe_sent_unlike_java, report
    assert f"\nCause: {d.cause}\n" in report
    assert "above" not in report


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize(
    ("scenario", "identity", "cause"),
    [
        ("require", None, "unknown"),
        ("require", "other", "ca_mismatch"),
        ("depth0", "via_intermediate", "chain_too_long"),
        ("sni", "good", "sni_required"),
        ("no_names_403", "other", "rejected_at_http"),
    ],
)
def test_json_carries_the_same_facts(
    lab: Lab, ids: Ids, scenario: str, identity: Optional[str], cause: str
) -> None:
    """--json holds the facts the report shows (Java's choice, the matched CA, the MP's attempt,
    the HTTP answer) and no text that refers to a report ("above")."""
    d = run(lab, "nginx", scenario, getattr(ids, identity) if identity else None, "1.2")
    out = json.loads(json.dumps(d.to_json()))
    assert out["cause"] == cause
    assert not [s for s in _strings(out) if "above" in s]
    ev = d.evaluation
    assert (out["java_sends_certificate"], out["matched_ca"], out["mp_attempt"]) == (
        ev.java_sends,
        ev.matched_ca,
        ev.mp_attempt,
    )
    anon = out["handshake_without_certificate"]
    if d.anonymous is not None and d.anonymous.http is not None:
        assert anon["http"]["status"] == d.anonymous.http.status


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="diagnose")
    diagnosis.configure_parser(parser)
    return parser.parse_args(list(argv))


def test_command_json_keys_and_exit_zero(
    lab: Lab, ids: Ids, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json prints one object with the documented keys; a decided cause exits 0."""
    cert, key = ids.files["other"]
    target = lab.target("s_server", "require")
    code = diagnosis.command(
        parse("--target", target, "--client-cert", cert, "--client-key", key, "--json",
              "--protocols", "TLSv1.2")
    )  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {"target", "cause", "acceptable_ca_names", "client_certificate", "tls_version",
            "advice", "java_sends_certificate", "protocols"} <= set(out)  # fmt: skip
    assert {"subject", "issuer", "not_after"} <= set(out["client_certificate"])
    assert (out["cause"], out["tls_version"], out["protocols"]) == (
        "ca_mismatch",
        "TLSv1.2",
        ["TLSv1.2"],
    )


def test_command_unknown_exits_one(lab: Lab, capsys: pytest.CaptureFixture[str]) -> None:
    """Without an identity the cause is unknown and the exit code 1; the report still prints."""
    code = diagnosis.command(parse("--target", lab.target("s_server", "require")))
    assert code == 1
    assert "Cause: unknown" in capsys.readouterr().out


def test_command_protocols_and_received(
    lab: Lab, ids: Ids, capsys: pytest.CaptureFixture[str]
) -> None:
    """--protocols limits the MP's side (protocol_mismatch against TLS 1.3 only), --received is
    shown with its meaning."""
    cert, key = ids.files["good"]
    code = diagnosis.command(
        parse("--target", lab.target("nginx", "tls13"), "--client-cert", cert, "--client-key",
              key, "--protocols", "TLSv1.2", "--received", "protocol_version")
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "Cause: protocol_mismatch" in out
    assert "Alert received by the MP: protocol_version (no TLS version in common" in out


@pytest.mark.parametrize(
    "argv",
    [
        ["--target", "no-port"],
        ["--target", "127.0.0.1:99999"],
        ["--target", "127.0.0.1:1", "--client-cert", "/nonexistent.pem", "--client-key", "/x"],
        ["--target", "127.0.0.1:1", "--client-cert", "/nonexistent.pem"],
        ["--target", "127.0.0.1:1", "--pkcs12", "/nonexistent.p12", "--client-cert", "c"],
        ["--target", "127.0.0.1:1", "--management-url", "http://127.0.0.1:1/v1"],
        ["--target", "127.0.0.1:1", "--keystore", "ks"],
        ["--target", "127.0.0.1:1", "--timeout", "0"],
        ["--target", "127.0.0.1:1", "--backend-ca-file", "/etc/hostname"],
        ["--target", "127.0.0.1:1", "--protocols", "SSLv3"],
        [
            "--target",
            "127.0.0.1:1",
            "--management-url",
            "https://127.0.0.1:1/v1",
            "--org",
            "o",
            "--env",
            "e",
            "--keystore",
            "k",
            "--ca-file",
            "/nonexistent.pem",
        ],
        [
            "--target",
            "127.0.0.1:1",
            "--management-url",
            "ftp://127.0.0.1/v1",
            "--org",
            "o",
            "--env",
            "e",
            "--keystore",
            "k",
        ],
        ["--target", "127.0.0.1:1", "--username", "u", "--management-url", "http://h/v1"],
    ],
)
def test_command_bad_arguments_exit_two(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad arguments exit 2 with one line on stderr and no traceback."""
    assert diagnosis.command(parse(*argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("diagnose: error: ")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


@pytest.mark.parametrize("missing", ["--client-cert", "--client-key"])
def test_missing_client_file_is_file_not_found(
    ids: Ids, missing: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --client-cert or --client-key that does not exist is "file not found", not "no PEM
    certificate found" or "not a readable PEM private key"."""
    cert, key = ids.files["good"]
    gone = str(tmp_path / "gone.pem")
    files = {"--client-cert": cert, "--client-key": key, missing: gone}
    code = diagnosis.command(
        parse("--target", "127.0.0.1:1", "--client-cert", files["--client-cert"],
              "--client-key", files["--client-key"])
    )  # fmt: skip
    err = capsys.readouterr().err
    assert (code, err.strip()) == (2, f"diagnose: error: {missing} {gone}: file not found")


def test_command_key_not_matching_certificate(ids: Ids, capsys: pytest.CaptureFixture[str]) -> None:
    """A key that does not belong to the certificate is a bad argument, not a probe."""
    cert, _ = ids.files["good"]
    _, other_key = ids.files["other"]
    code = diagnosis.command(
        parse("--target", "127.0.0.1:1", "--client-cert", cert, "--client-key", other_key)
    )
    assert code == 2
    assert "does not match" in capsys.readouterr().err


def p12_blob(ids: Ids, password: bytes) -> bytes:
    """A PKCS#12 file with the good client certificate and its key."""
    cert_file, key_file = ids.files["good"]
    cert = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())[0]
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    encryption = serialization.BestAvailableEncryption(password)
    return pkcs12.serialize_key_and_certificates(b"client", key, cert, None, encryption)


def test_pkcs12_identity_with_password(lab: Lab, ids: Ids, tmp_path: Path) -> None:
    """A password-protected PKCS#12 file is a client identity like PEM files are."""
    path = tmp_path / "client.p12"
    path.write_bytes(p12_blob(ids, b"p12-pass"))
    identity = diagnosis.load_pkcs12_identity(str(path), b"p12-pass")
    assert run(lab, "s_server", "require", identity, "1.3").cause == "accepted"


def test_command_pkcs12_wrong_password_names_no_password(
    ids: Ids, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong PKCS#12 password exits 2 and the message does not contain the password."""
    (tmp_path / "c.p12").write_bytes(p12_blob(ids, b"right"))
    monkeypatch.setenv("P12_PASS", "Wr0ng-Secret-Value")
    code = diagnosis.command(
        parse("--target", "127.0.0.1:1", "--pkcs12", str(tmp_path / "c.p12"),
              "--pkcs12-password-env", "P12_PASS")
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "Wr0ng-Secret-Value" not in err


@pytest.mark.parametrize(
    ("java", "other"),
    [
        ("CN=MyCompany CA G2, DC=test, DC=com", "DC=com,DC=test,CN=MyCompany CA G2"),
        ("CN=My  Company, O=Acme", "/O=acme/CN=my company"),
        ("EMAILADDRESS=a@b.c, CN=x", "CN = x, emailAddress = a@b.c"),
        ("CN=a\\, b, O=z", 'O=z, CN="a, b"'),
    ],
)
def test_dn_key_ignores_order_spacing_and_case(java: str, other: str) -> None:
    """The same name as Java, OpenSSL and RFC 4514 print it compares equal."""
    assert diagnosis.dn_key(java) == diagnosis.dn_key(other)


def test_dn_key_tells_different_names_apart() -> None:
    """Different names do not compare equal."""
    assert diagnosis.dn_key("CN=a, O=x") != diagnosis.dn_key("CN=a, O=y")


def test_chain_issuer_matches_like_java() -> None:
    """Java sends the alias when the issuer of any certificate in its chain is acceptable."""
    leaf = diagnosis.CertSummary("CN=leaf", "CN=Inter", None, None)
    inter = diagnosis.CertSummary("CN=Inter", "CN=Root", None, None)
    assert diagnosis.would_send((leaf, inter), ("CN=Root",))
    assert diagnosis.match_depth((leaf, inter), ("CN=Root",)) == 1
    assert not diagnosis.would_send((leaf,), ("CN=Root",))
    assert diagnosis.would_send((leaf,), ())


class _LegacyName:
    def __init__(self, components: list[tuple[bytes, bytes]]) -> None:
        self._components = components

    def get_components(self) -> list[tuple[bytes, bytes]]:
        return self._components


class _LegacyConnection:
    """What pyOpenSSL < 25.2 offers: no as_cryptography keyword, X509Name objects."""

    def get_client_ca_list(self) -> list[_LegacyName]:
        return [_LegacyName([(b"C", b"AU"), (b"O", b"My, Company"), (b"CN", b"CA G2")])]


def test_ca_names_from_older_pyopenssl() -> None:
    """Without as_cryptography the CA names are built from X509Name components, Java style."""
    names = diagnosis.probe._client_ca_names(_LegacyConnection())  # type: ignore[arg-type]
    assert names == ("CN=CA G2, O=My\\, Company, C=AU",)
    assert diagnosis.dn_key(names[0]) == diagnosis.dn_key('C=AU, O="My, Company", CN=CA G2')


# -- through the management API stand-in ----------------------------------------------------------


def api_args(standin: Standin, target: str, pw_file: Path, *extra: str) -> argparse.Namespace:
    pw_file.write_text(standin.password + "\n")
    return parse(
        "--target", target, "--management-url", standin.url, "--org", "acme", "--env", "prod",
        "--username", standin.username, "--password-file", str(pw_file), "--json", *extra,
    )  # fmt: skip


@pytest.mark.parametrize("version", VERSIONS)
def test_api_keystore_reference_with_unlisted_issuer_is_ca_mismatch(
    lab: Lab, ids: Ids, tmp_path: Path, version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """ref:// -> keystore -> alias from the API, leaf issuer not acceptable: ca_mismatch, exit 0."""
    with Standin() as standin:
        env = standin.env("acme", "prod")
        env.references["myKeystoreRef"] = "myKeystore"
        env.keystores["myKeystore"] = {
            "myKey": chain_info(Path(ids.files["other"][0]).read_bytes())
        }
        args = api_args(standin, lab.target("apache", "require"), tmp_path / "pw", "--keystore",
                        "ref://myKeystoreRef", "--key-alias", "myKey", "--protocols",
                        f"TLSv{version}")  # fmt: skip
        code = diagnosis.command(args)
    out = json.loads(capsys.readouterr().out)
    assert (code, out["cause"], out["identity_source"]) == (0, "ca_mismatch", "management_api")
    assert any("never the private key" in note for note in out["notes"])


def test_api_empty_keystore_is_missing_client_certificate(
    lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A keystore with no certificates, read through the API: missing_client_certificate."""
    with Standin() as standin:
        standin.env("acme", "prod").keystores["empty"] = {}
        args = api_args(standin, lab.target("s_server", "require"), tmp_path / "pw",
                        "--keystore", "empty", "--key-alias", "myKey")  # fmt: skip
        code = diagnosis.command(args)
    out = json.loads(capsys.readouterr().out)
    assert (code, out["cause"]) == (0, "missing_client_certificate")
    assert out["client_certificate"] is None


def ts1(protocols: list[str]) -> dict[str, Any]:
    """TargetServer backend with keyStore ks1, keyAlias alias1 and these protocols."""
    return target_server(
        "backend", "127.0.0.1", 1, key_store="ks1", key_alias="alias1", protocols=protocols
    )


def test_api_target_server_ssl_info_is_followed(
    lab: Lab, ids: Ids, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--target-server reads keyStore and keyAlias from sSLInfo; an expired leaf is reported."""
    with Standin() as standin:
        env = standin.env("acme", "prod")
        env.keystores["ks1"] = {"alias1": chain_info(Path(ids.files["expired"][0]).read_bytes())}
        env.target_servers["backend"] = ts1([])
        args = api_args(standin, lab.target("nginx", "require"), tmp_path / "pw",
                        "--target-server", "backend")  # fmt: skip
        code = diagnosis.command(args)
    out = json.loads(capsys.readouterr().out)
    assert (code, out["cause"]) == (0, "client_certificate_expired")


@cases("tls13")
def test_api_target_server_protocols_are_the_mps(
    lab: Lab, ids: Ids, tmp_path: Path, kind: str, version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The TargetServer's sSLInfo protocols are what the probe offers: TLSv1.2 against a
    TLS 1.3-only backend is protocol_mismatch; TLSv1.3 there decides from the certificate."""
    with Standin() as standin:
        env = standin.env("acme", "prod")
        env.keystores["ks1"] = {"alias1": chain_info(Path(ids.files["other"][0]).read_bytes())}
        env.target_servers["backend"] = ts1([f"TLSv{version}"])
        args = api_args(standin, lab.target(kind, "tls13"), tmp_path / "pw",
                        "--target-server", "backend")  # fmt: skip
        code = diagnosis.command(args)
    out = json.loads(capsys.readouterr().out)
    expected = "protocol_mismatch" if version == "1.2" else "ca_mismatch"
    assert (code, out["cause"], out["protocols"]) == (0, expected, [f"TLSv{version}"])


def test_api_matching_keystore_without_key_is_unknown(
    lab: Lab, ids: Ids, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fitting keystore certificate cannot be tried without its key: unknown, exit 1."""
    with Standin() as standin:
        standin.env("acme", "prod").keystores["ks"] = {
            "a": chain_info(Path(ids.files["good"][0]).read_bytes())
        }
        args = api_args(standin, lab.target("haproxy", "require"), tmp_path / "pw",
                        "--keystore", "ks", "--key-alias", "a")  # fmt: skip
        code = diagnosis.command(args)
    out = json.loads(capsys.readouterr().out)
    assert (code, out["cause"]) == (1, "unknown")
    assert "--client-key" in out["advice"]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        ("wrong_password", "HTTP 401"),
        ("unknown_keystore", "HTTP 404"),
        ("unknown_reference", "HTTP 404"),
        ("broken_json", "not JSON"),
    ],
)
def test_api_errors_exit_two_without_credentials(
    setup: str,
    expected: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """401, 404 and bad JSON from the API exit 2 with one line that holds no credentials."""
    with Standin() as standin:
        env = standin.env("acme", "prod")
        env.keystores["ks"] = {}
        keystore = {"unknown_keystore": "nope", "unknown_reference": "ref://nope"}.get(setup, "ks")
        if setup == "broken_json":
            standin.broken_json.add("/v1/organizations/acme/environments/prod/keystores/ks/certs")
        args = api_args(standin, "127.0.0.1:1", tmp_path / "pw", "--keystore", keystore)
        if setup == "wrong_password":
            (tmp_path / "pw").write_text("Not-The-Right-0ne\n")
        code = diagnosis.command(args)
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1
    for secret in (standin.password, "Not-The-Right-0ne"):
        assert secret not in err


def test_api_token_from_environment(
    lab: Lab, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bearer token from an environment variable authenticates; it never reaches the output."""
    token = "tok-Very-Secret-123"
    monkeypatch.setenv("EDGE_TOKEN", token)
    with Standin(token=token) as standin:
        standin.env("acme", "prod").keystores["empty"] = {}
        code = diagnosis.command(
            parse("--target", lab.target("nginx", "require"), "--management-url", standin.url,
                  "--org", "acme", "--env", "prod", "--keystore", "empty", "--token-env",
                  "EDGE_TOKEN")
        )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    assert token not in captured.out + captured.err
    assert "Cause: missing_client_certificate" in captured.out


def test_api_alias_not_in_keystore_is_missing_client_certificate(
    lab: Lab, ids: Ids, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A KeyAlias the keystore does not hold means the MP has no certificate to send."""
    with Standin() as standin:
        standin.env("acme", "prod").keystores["ks"] = {
            "other": chain_info(Path(ids.files["good"][0]).read_bytes())
        }
        args = api_args(standin, lab.target("apache", "require"), tmp_path / "pw",
                        "--keystore", "ks", "--key-alias", "myKey")  # fmt: skip
        code = diagnosis.command(args)
    out = json.loads(capsys.readouterr().out)
    assert (code, out["cause"]) == (0, "missing_client_certificate")
    assert "no alias myKey" in out["identity"]


# -- ground truth: the MP's own TLS stack (a JSSE client on the Debian JDK) ----------------------

# (kind, scenario, identity), each on both versions. The scenarios about the backend's certificate
# run the JSSE client with a truststore and the HTTPS host check, as an MP that validates it.
AGREEMENT = [
    ("nginx", "require", "good"),
    ("nginx", "require", "other"),
    ("nginx", "require", "wrong_usage"),
    ("nginx", "require", "expired"),
    ("nginx", "require", "via_intermediate"),
    ("nginx", "depth0", "via_intermediate"),
    ("nginx", "sni", "good"),
    ("haproxy", "sni", "good"),
    ("nginx", "no_names_403", "other"),
    ("nginx", "other_host", "good"),
    ("nginx", "expired_server", "good"),
    ("apache", "require", "via_intermediate"),
    ("apache", "incomplete", "leaf_of_intermediate"),
    ("apache", "require", "future"),
    ("apache", "depth0", "good"),
    ("haproxy", "require", "other"),
    ("haproxy", "tls13", "good"),
    ("haproxy", "cn_403", "good"),
    ("apache", "cn_403", "good"),
    ("s_server", "no_names", "other"),
    ("s_server", "incomplete", "via_intermediate"),
    ("jsse", "require", "other"),
    ("jsse", "require", "good"),
    ("jsse", "require", "expired"),
    ("nginx", "require+rsa_suites", "good"),
    ("jsse", "require+rsa_suites", "good"),
]
MP_OK = ("accepted", "no_client_certificate_requested")
# The MP's cipher suites per scenario ("require+rsa_suites": an RSA-only suite list against the
# backends' ECDSA certificates, with a TLS 1.3 suite so that TLS 1.3 still works).
CIPHERS = {"require+rsa_suites": ("TLS_RSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256")}
SERVER_SIDE = ("hostname_mismatch", "server_certificate_expired", "server_certificate_untrusted")


@pytest.fixture(scope="module")
def keystores(ids: Ids, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Each identity as the PKCS#12 keystore a JSSE client loads."""
    jsse.require_java()
    tmp = tmp_path_factory.mktemp("keystores")
    out = {}
    for name, (cert, key) in ids.files.items():
        chain = [c.public_bytes(serialization.Encoding.PEM)
                 for c in x509.load_pem_x509_certificates(Path(cert).read_bytes())]  # fmt: skip
        out[name] = jsse.write_pkcs12(tmp / f"{name}.p12", Path(key).read_bytes(), chain)
    return out


def _status(line: Optional[str]) -> Optional[int]:
    parts = (line or "").split()
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


@pytest.mark.slow  # a JVM per case
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize(("kind", "scenario", "identity"), AGREEMENT)
def test_prediction_agrees_with_the_jsse_client(
    lab: Lab,
    pki: Pki,
    ids: Ids,
    keystores: dict[str, str],
    kind: str,
    scenario: str,
    identity: str,
    version: str,
) -> None:
    """For every scenario, diagnose predicts what the JVM does: whether Java's KeyManager sends
    the certificate for the server's CA names, whether the MP's handshake (and request) gets
    through, the alert it receives and the HTTP status it reads."""
    target = lab.target(kind, scenario.split("+")[0])
    host, port = diagnosis.parse_target(target)
    protocols = (f"TLSv{version}",)
    validates = scenario in ("other_host", "expired_server")
    trust = pki.ca_file(pki.server_ca, name="mp-truststore.pem") if validates else None
    ciphers = CIPHERS.get(scenario, ())
    java = jsse.run_client(
        host, port, keystore=keystores[identity], trust_all=not validates, truststore=trust,
        protocols=protocols, ciphers=ciphers, request="GET", verify_host=validates,
    )  # fmt: skip
    d = run_diagnosis(
        target, identity=getattr(ids, identity), timeout=TIMEOUT, protocols=protocols,
        ciphers=ciphers,
    )  # fmt: skip
    facts = f"{java}\n{why(d, lab, kind)}"
    ev = d.evaluation
    if d.cause in SERVER_SIDE:  # the JVM stops at the backend's certificate, before its own
        assert (java.outcome, java.sent_certificate) == ("handshake_failed", False), facts
        return
    assert java.sent_certificate == bool(ev.java_sends), facts
    java_ok = java.outcome == "ok" and (_status(java.http_status) or 200) < 400
    assert java_ok == (d.cause in MP_OK), facts
    mp = d.result.with_certificate if ev.mp_attempt == "with_certificate" else d.anonymous
    assert mp is not None
    if java.message and "Received fatal alert: " in java.message:
        received = java.message.split("Received fatal alert: ", 1)[1].split()[0]
        assert mp.alert == received, facts
    if java.http_status:
        assert mp.http is not None and mp.http.status == _status(java.http_status), facts


def test_diagnose_subcommand_end_to_end(lab: Lab, ids: Ids, tmp_path: Path) -> None:
    """`apigee-tls-exporter diagnose` as a process: the report's JSON and exit 0 for a decided
    cause; a missing --client-key file is one line on stderr and exit 2."""
    import subprocess
    import sys

    cert, key = ids.files["other"]
    argv = [sys.executable, "-m", "apigee_tls_exporter", "diagnose", "--target",
            lab.target("nginx", "require"), "--client-cert", cert]  # fmt: skip
    done = subprocess.run([*argv, "--client-key", key, "--json"], capture_output=True, text=True)
    assert (done.returncode, json.loads(done.stdout)["cause"]) == (0, "ca_mismatch")
    gone = str(tmp_path / "gone.key")
    bad = subprocess.run([*argv, "--client-key", gone], capture_output=True, text=True)
    assert (bad.returncode, bad.stdout, bad.stderr) == (
        2,
        "",
        f"diagnose: error: --client-key {gone}: file not found\n",
    )
