"""diagnose: real TLS backends on 127.0.0.1 (Python ssl, openssl s_server), one test per cause."""

from __future__ import annotations

import argparse
import json
import time
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Optional, Union

import pytest
from apigee_tls_exporter import diagnose
from apigee_tls_exporter.diagnose import ClientIdentity, load_pem_identity, run_diagnosis
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from mgmt_standin import Standin, chain_info
from tls_backends import (
    VERSIONS,
    OpenSSLBackend,
    Pki,
    PythonBackend,
    SilentBackend,
    free_port,
)

Backend = Union[PythonBackend, OpenSSLBackend]
KINDS = ("python", "openssl")
TIMEOUT = 5.0


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def backend(
    pki: Pki,
    kind: str,
    version: str,
    *,
    names: Optional[str] = None,
    trust: Optional[str] = None,
    require: bool = True,
) -> Backend:
    """A backend that sends ``names`` as acceptable CAs and trusts ``trust`` (default: names)."""
    if kind == "python":
        return PythonBackend(pki, version, trust=trust or names, ca_names=names, require=require)
    if trust is not None and names is None:
        # s_server cannot send an empty list while -CAfile is set: list the trust itself.
        names = trust
    return OpenSSLBackend(pki, version, ca_file=names, verify_file=trust, require=require)


def accepted_names(pki: Pki) -> str:
    return pki.ca_file(pki.accepted_ca, name="accepted.pem")


def diagnose_with(
    be: AbstractContextManager[Any], identity: Optional[ClientIdentity], **kw: Any
) -> diagnose.Diagnosis:
    with be as running:
        return run_diagnosis(running.target, identity=identity, timeout=TIMEOUT, **kw)


versions = pytest.mark.parametrize("version", VERSIONS)
kinds = pytest.mark.parametrize("kind", KINDS)


# -- one test per cause, each on both peers and both TLS versions -------------------------------


@versions
@kinds
def test_empty_keystore_is_missing_client_certificate(pki: Pki, kind: str, version: str) -> None:
    """An identity without certificates, against a backend that requires one: missing cert."""
    empty = ClientIdentity("management_api", "keystore ks in org/env: no certificates")
    be = backend(pki, kind, version, names=accepted_names(pki))
    result = diagnose_with(be, empty)
    assert result.cause == "missing_client_certificate"
    assert result.certificate_requested is True


@versions
@kinds
def test_leaf_from_unlisted_ca_is_ca_mismatch(pki: Pki, kind: str, version: str) -> None:
    """A leaf whose issuer is not among the acceptable CA names gives ca_mismatch."""
    identity = load_pem_identity(*pki.client(pki.other_ca, "other"))
    be = backend(pki, kind, version, names=accepted_names(pki))
    result = diagnose_with(be, identity)
    assert result.cause == "ca_mismatch"
    assert result.client_certificate is not None
    assert result.client_certificate.issuer not in result.acceptable_ca_names
    assert result.handshake_with_certificate == "rejected"


@versions
@kinds
def test_expired_client_certificate(pki: Pki, kind: str, version: str) -> None:
    """A leaf from an accepted CA whose validity ended is client_certificate_expired."""
    identity = load_pem_identity(*pki.client(pki.accepted_ca, "old", days=(-60, -1)))
    be = backend(pki, kind, version, names=accepted_names(pki))
    result = diagnose_with(be, identity)
    assert result.cause == "client_certificate_expired"
    assert result.alert_with_certificate == "certificate_expired"


@versions
@kinds
def test_future_client_certificate_is_not_yet_valid(pki: Pki, kind: str, version: str) -> None:
    """A leaf from an accepted CA whose validity has not started is not_yet_valid."""
    identity = load_pem_identity(*pki.client(pki.accepted_ca, "new", days=(2, 60)))
    be = backend(pki, kind, version, names=accepted_names(pki))
    result = diagnose_with(be, identity)
    assert result.cause == "client_certificate_not_yet_valid"


@versions
@kinds
def test_leaf_without_its_intermediate_is_incomplete_chain(
    pki: Pki, kind: str, version: str
) -> None:
    """The leaf of an intermediate without the intermediate is rejected: incomplete_chain.

    Python sends no CA names (any certificate goes) and trusts the root; s_server names the
    intermediate but only trusts the root, so the leaf alone cannot be verified.
    """
    identity = load_pem_identity(*pki.client(pki.intermediate, "leafonly", chain=1))
    root = accepted_names(pki)
    if kind == "python":
        be = backend(pki, kind, version, trust=root)
    else:
        names = pki.ca_file(pki.intermediate, name="intermediate.pem")
        be = backend(pki, kind, version, names=names, trust=root)
    result = diagnose_with(be, identity)
    assert result.cause == "incomplete_chain"


@versions
@kinds
def test_leaf_with_its_intermediate_is_accepted(pki: Pki, kind: str, version: str) -> None:
    """The same leaf with its intermediate in the chain is accepted (the incomplete_chain fix)."""
    identity = load_pem_identity(*pki.client(pki.intermediate, "full"))
    root = accepted_names(pki)
    be = backend(pki, kind, version, names=root)
    result = diagnose_with(be, identity)
    assert result.cause == "accepted"


@versions
@kinds
def test_backend_without_client_auth(pki: Pki, kind: str, version: str) -> None:
    """A backend that asks for no certificate gives no_client_certificate_requested."""
    identity = load_pem_identity(*pki.client(pki.accepted_ca, "good"))
    be = backend(pki, kind, version, require=False)
    result = diagnose_with(be, identity)
    assert result.cause == "no_client_certificate_requested"
    assert result.certificate_requested is False


@versions
@kinds
def test_good_certificate_is_accepted(pki: Pki, kind: str, version: str) -> None:
    """A valid leaf from an accepted CA completes both handshakes: accepted."""
    identity = load_pem_identity(*pki.client(pki.accepted_ca, "good"))
    be = backend(pki, kind, version, names=accepted_names(pki))
    result = diagnose_with(be, identity)
    assert result.cause == "accepted"
    assert result.handshake_with_certificate == "accepted"
    assert f"TLSv{version}" == result.tls_version


@versions
@kinds
def test_server_chain_not_in_truststore(pki: Pki, kind: str, version: str) -> None:
    """A truststore without the backend's CA gives server_certificate_untrusted."""
    identity = load_pem_identity(*pki.client(pki.accepted_ca, "good"))
    be = backend(pki, kind, version, names=accepted_names(pki))
    wrong = pki.ca_file(pki.other_ca, name="truststore.pem")
    result = diagnose_with(be, identity, ca_file=wrong)
    assert result.cause == "server_certificate_untrusted"
    assert result.server_verify_error is not None


@versions
@kinds
def test_server_chain_in_truststore_does_not_hide_the_cause(
    pki: Pki, kind: str, version: str
) -> None:
    """With the right truststore the chain verifies and the client-side cause still shows."""
    identity = load_pem_identity(*pki.client(pki.other_ca, "other"))
    be = backend(pki, kind, version, names=accepted_names(pki))
    trust = pki.ca_file(pki.server_ca, name="truststore.pem")
    result = diagnose_with(be, identity, ca_file=trust)
    assert (
        result.server_chain_checked,
        result.server_verify_error,
        result.cause,
    ) == (True, None, "ca_mismatch")


@versions
@kinds
def test_no_identity_given_is_unknown(pki: Pki, kind: str, version: str) -> None:
    """Without a client identity the cause stays unknown, but the CA names are reported."""
    names = accepted_names(pki)
    be = backend(pki, kind, version, names=names)
    result = diagnose_with(be, None)
    assert result.cause == "unknown"
    assert len(result.acceptable_ca_names) == 1


def test_closed_port_is_unreachable() -> None:
    """Nothing listening on the port: unreachable, quickly."""
    result = run_diagnosis(f"127.0.0.1:{free_port()}", identity=None, timeout=TIMEOUT)
    assert result.cause == "unreachable"
    assert result.error is not None and "TCP connect failed" in result.error


def test_silent_backend_times_out_as_unreachable() -> None:
    """A peer that accepts TCP but never answers the ClientHello times out: unreachable."""
    start = time.monotonic()
    with SilentBackend() as silent:
        result = run_diagnosis(silent.target, identity=None, timeout=0.5)
    elapsed = time.monotonic() - start
    assert result.cause == "unreachable"
    assert elapsed < 3.0
    assert result.error is not None and "no TLS answer" in result.error


# -- details of the probe -----------------------------------------------------------------------


@versions
@kinds
def test_acceptable_ca_names_are_the_ones_the_backend_sends(
    pki: Pki, kind: str, version: str
) -> None:
    """The probe reports exactly the CA names the backend sent, most specific attribute first."""
    names = pki.ca_file(pki.accepted_ca, pki.other_ca, name="two.pem")
    be = backend(pki, kind, version, names=names)
    result = diagnose_with(be, None)
    expected = sorted(
        diagnose.format_name(c.subject)
        for c in x509.load_pem_x509_certificates(Path(names).read_bytes())
    )
    assert expected == sorted(result.acceptable_ca_names)


@kinds
def test_tls13_rejection_is_seen_after_the_handshake(pki: Pki, kind: str) -> None:
    """In TLS 1.3 the backend's alert arrives after the client's handshake: the probe reads it."""
    identity = load_pem_identity(*pki.client(pki.accepted_ca, "old", days=(-60, -1)))
    be = backend(pki, kind, "1.3", names=accepted_names(pki))
    result = diagnose_with(be, identity)
    assert (
        result.alert_without_certificate,
        result.alert_with_certificate,
    ) == ("certificate_required", "certificate_expired")


def test_server_chain_is_recorded(pki: Pki) -> None:
    """The server's chain is reported with subject, issuer, validity and SANs."""
    be = backend(pki, "python", "1.2", names=accepted_names(pki))
    result = diagnose_with(be, None)
    leaf = result.server_chain[0]
    assert leaf.subject_alternative_names == ("DNS:localhost", "IP:127.0.0.1")
    assert leaf.not_after is not None and leaf.not_after > time.time()


def test_injected_clock_decides_expiry(pki: Pki) -> None:
    """Validity is judged by the injected clock, not the host's."""
    identity = load_pem_identity(*pki.client(pki.accepted_ca, "good", days=(-1, 30)))
    later = time.time() + 90 * 86400
    be = backend(pki, "python", "1.2", names=accepted_names(pki))
    result = diagnose_with(be, identity, clock=lambda: later)
    assert result.cause == "client_certificate_expired"


def p12_blob(pki: Pki, password: bytes) -> bytes:
    """A PKCS#12 file with a fresh client certificate from the accepted CA and its key."""
    cert_file, key_file = pki.client(pki.accepted_ca, "p12")
    cert = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())[0]
    key = serialization.load_pem_private_key(Path(key_file).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    encryption = serialization.BestAvailableEncryption(password)
    return pkcs12.serialize_key_and_certificates(b"client", key, cert, None, encryption)


def test_pkcs12_identity_with_password(pki: Pki, tmp_path: Path) -> None:
    """A password-protected PKCS#12 file is a client identity like PEM files are."""
    blob = p12_blob(pki, b"p12-pass")
    path = tmp_path / "client.p12"
    path.write_bytes(blob)
    identity = diagnose.load_pkcs12_identity(str(path), b"p12-pass")
    be = backend(pki, "openssl", "1.3", names=accepted_names(pki))
    assert diagnose_with(be, identity).cause == "accepted"


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
    assert diagnose.dn_key(java) == diagnose.dn_key(other)


def test_dn_key_tells_different_names_apart() -> None:
    """Different names do not compare equal."""
    assert diagnose.dn_key("CN=a, O=x") != diagnose.dn_key("CN=a, O=y")


def test_chain_issuer_matches_like_java() -> None:
    """Java sends the alias when the issuer of any certificate in its chain is acceptable."""
    leaf = diagnose.CertSummary("CN=leaf", "CN=Inter", None, None)
    inter = diagnose.CertSummary("CN=Inter", "CN=Root", None, None)
    assert diagnose.would_send((leaf, inter), ("CN=Root",))
    assert not diagnose.would_send((leaf,), ("CN=Root",))
    assert diagnose.would_send((leaf,), ())


# -- the report, the JSON and the command -------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="diagnose")
    diagnose.configure_parser(parser)
    return parser.parse_args(list(argv))


def test_report_shows_issuer_next_to_acceptable_names(pki: Pki) -> None:
    """The human report puts the leaf issuer next to the acceptable CA names, cause and fix."""
    identity = load_pem_identity(*pki.client(pki.other_ca, "other"))
    be = backend(pki, "python", "1.2", names=accepted_names(pki))
    report = diagnose.render_report(diagnose_with(be, identity))
    leaf_issuer = identity.certificates[0].issuer
    assert "Acceptable client certificate CA names" in report
    assert f"issuer:  {leaf_issuer}   <- NOT among them" in report
    assert "Cause: ca_mismatch" in report
    assert "Fix:" in report


def test_command_json_keys_and_exit_zero(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    """--json prints one object with the documented keys; a decided cause exits 0."""
    cert, key = pki.client(pki.other_ca, "other")
    with backend(pki, "openssl", "1.2", names=accepted_names(pki)) as be:
        code = diagnose.command(
            parse("--target", be.target, "--client-cert", cert, "--client-key", key, "--json")
        )
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert {
        "target",
        "cause",
        "acceptable_ca_names",
        "client_certificate",
        "tls_version",
        "advice",
    } <= set(out)
    assert {"subject", "issuer", "not_after"} <= set(out["client_certificate"])
    assert (out["cause"], out["tls_version"]) == ("ca_mismatch", "TLSv1.2")


def test_command_unknown_exits_one(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    """Without an identity the cause is unknown and the exit code 1; the report still prints."""
    with backend(pki, "python", "1.3", names=accepted_names(pki)) as be:
        code = diagnose.command(parse("--target", be.target))
    assert code == 1
    assert "Cause: unknown" in capsys.readouterr().out


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
    assert diagnose.command(parse(*argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("diagnose: error: ")
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_command_key_not_matching_certificate(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    """A key that does not belong to the certificate is a bad argument, not a probe."""
    cert, _ = pki.client(pki.accepted_ca, "a")
    _, other_key = pki.client(pki.accepted_ca, "b")
    code = diagnose.command(
        parse("--target", "127.0.0.1:1", "--client-cert", cert, "--client-key", other_key)
    )
    assert code == 2
    assert "does not match" in capsys.readouterr().err


def test_command_pkcs12_wrong_password_names_no_password(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong PKCS#12 password exits 2 and the message does not contain the password."""
    blob = p12_blob(pki, b"right")
    (tmp_path / "c.p12").write_bytes(blob)
    monkeypatch.setenv("P12_PASS", "Wr0ng-Secret-Value")
    code = diagnose.command(
        parse("--target", "127.0.0.1:1", "--pkcs12", str(tmp_path / "c.p12"),
              "--pkcs12-password-env", "P12_PASS")
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "Wr0ng-Secret-Value" not in err


# -- through the management API stand-in --------------------------------------------------------


def api_args(standin: Standin, target: str, pw_file: Path, *extra: str) -> argparse.Namespace:
    pw_file.write_text(standin.password + "\n")
    return parse(
        "--target", target, "--management-url", standin.url, "--org", "acme", "--env", "prod",
        "--username", standin.username, "--password-file", str(pw_file), "--json", *extra,
    )  # fmt: skip


@versions
def test_api_keystore_reference_with_unlisted_issuer_is_ca_mismatch(
    pki: Pki, tmp_path: Path, version: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """ref:// -> keystore -> alias from the API, leaf issuer not acceptable: ca_mismatch, exit 0."""
    cert, _ = pki.client(pki.other_ca, "api")
    with Standin() as standin:
        env = standin.env("acme", "prod")
        env.references["myKeystoreRef"] = "myKeystore"
        env.keystores["myKeystore"] = {"myKey": chain_info(Path(cert).read_bytes())}
        with backend(pki, "python", version, names=accepted_names(pki)) as be:
            args = api_args(standin, be.target, tmp_path / "pw", "--keystore",
                            "ref://myKeystoreRef", "--key-alias", "myKey")  # fmt: skip
            code = diagnose.command(args)
    out = json.loads(capsys.readouterr().out)
    assert (code, out["cause"], out["identity_source"]) == (0, "ca_mismatch", "management_api")
    assert any("never the private key" in note for note in out["notes"])


def test_api_empty_keystore_is_missing_client_certificate(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A keystore with no certificates, read through the API: missing_client_certificate."""
    with Standin() as standin:
        standin.env("acme", "prod").keystores["empty"] = {}
        with backend(pki, "openssl", "1.3", names=accepted_names(pki)) as be:
            args = api_args(standin, be.target, tmp_path / "pw", "--keystore", "empty",
                            "--key-alias", "myKey")  # fmt: skip
            code = diagnose.command(args)
    out = json.loads(capsys.readouterr().out)
    assert (code, out["cause"]) == (0, "missing_client_certificate")
    assert out["client_certificate"] is None


def test_api_target_server_ssl_info_is_followed(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--target-server reads keyStore and keyAlias from sSLInfo; an expired leaf is reported."""
    cert, _ = pki.client(pki.accepted_ca, "expired", days=(-60, -1))
    with Standin() as standin:
        env = standin.env("acme", "prod")
        env.keystores["ks1"] = {"alias1": chain_info(Path(cert).read_bytes())}
        env.target_servers["backend"] = {
            "name": "backend", "host": "127.0.0.1", "port": 1, "isEnabled": True,
            "sSLInfo": {"enabled": "true", "clientAuthEnabled": "true", "keyStore": "ks1",
                        "keyAlias": "alias1", "trustStore": "ts", "protocols": [], "ciphers": []},
        }  # fmt: skip
        with backend(pki, "python", "1.3", names=accepted_names(pki)) as be:
            args = api_args(standin, be.target, tmp_path / "pw", "--target-server", "backend")
            code = diagnose.command(args)
    out = json.loads(capsys.readouterr().out)
    assert (code, out["cause"]) == (0, "client_certificate_expired")


def test_api_matching_keystore_without_key_is_unknown(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fitting keystore certificate cannot be tried without its key: unknown, exit 1."""
    cert, _ = pki.client(pki.accepted_ca, "fits")
    with Standin() as standin:
        standin.env("acme", "prod").keystores["ks"] = {"a": chain_info(Path(cert).read_bytes())}
        with backend(pki, "python", "1.2", names=accepted_names(pki)) as be:
            args = api_args(standin, be.target, tmp_path / "pw", "--keystore", "ks",
                            "--key-alias", "a")  # fmt: skip
            code = diagnose.command(args)
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
        code = diagnose.command(args)
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err
    assert len(err.strip().splitlines()) == 1
    for secret in (standin.password, "Not-The-Right-0ne"):
        assert secret not in err


def test_api_token_from_environment(
    pki: Pki, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bearer token from an environment variable authenticates; it never reaches the output."""
    token = "tok-Very-Secret-123"
    monkeypatch.setenv("EDGE_TOKEN", token)
    with Standin(token=token) as standin:
        standin.env("acme", "prod").keystores["empty"] = {}
        with backend(pki, "python", "1.2", names=accepted_names(pki)) as be:
            code = diagnose.command(
                parse("--target", be.target, "--management-url", standin.url, "--org", "acme",
                      "--env", "prod", "--keystore", "empty", "--token-env", "EDGE_TOKEN")
            )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0
    assert token not in captured.out + captured.err
    assert "Cause: missing_client_certificate" in captured.out


def test_api_alias_not_in_keystore_is_missing_client_certificate(
    pki: Pki, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A KeyAlias the keystore does not hold means the MP has no certificate to send."""
    cert, _ = pki.client(pki.accepted_ca, "someone")
    with Standin() as standin:
        standin.env("acme", "prod").keystores["ks"] = {"other": chain_info(Path(cert).read_bytes())}
        with backend(pki, "python", "1.2", names=accepted_names(pki)) as be:
            args = api_args(standin, be.target, tmp_path / "pw", "--keystore", "ks",
                            "--key-alias", "myKey")  # fmt: skip
            code = diagnose.command(args)
    out = json.loads(capsys.readouterr().out)
    assert (code, out["cause"]) == (0, "missing_client_certificate")
    assert "no alias myKey" in out["identity"]


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
    names = diagnose._client_ca_names(_LegacyConnection())  # type: ignore[arg-type]
    assert names == ("CN=CA G2, O=My\\, Company, C=AU",)
    assert diagnose.dn_key(names[0]) == diagnose.dn_key('C=AU, O="My, Company", CN=CA G2')
