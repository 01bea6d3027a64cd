"""mgmt: the management API client against the local stand-in (not Apigee; see demo/standin.py)."""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest
import trustme
from apigee_tls_exporter.demo.standin import Standin, chain_info, target_server
from apigee_tls_exporter.diagnosis.mgmt import Credentials, ManagementAPIError, ManagementClient
from helpers.tls_backends import Pki, SilentBackend, free_port

PASSWORD = "pa55-w0rd-Secret"


def client_for(
    standin: Standin,
    password: str = PASSWORD,
    *,
    verify: bool = True,
    ca_file: Optional[str] = None,
) -> ManagementClient:
    creds = Credentials("admin", password)
    return ManagementClient(standin.url, creds, verify=verify, ca_file=ca_file)


def secrets_of(password: str) -> list[str]:
    return [password, base64.b64encode(f"admin:{password}".encode()).decode()]


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


@pytest.fixture
def standin(pki: Pki) -> Iterator[Standin]:
    cert, _ = pki.client(pki.accepted_ca, "client")
    s = Standin(password=PASSWORD)
    env = s.env("acme", "prod")
    env.references["myKeystoreRef"] = "myKeystore"
    env.keystores["myKeystore"] = {"myKey": chain_info(Path(cert).read_bytes())}
    env.keystores["empty"] = {}
    env.target_servers["backend"] = target_server(
        "backend", "10.20.3.4", 443, key_store="ref://myKeystoreRef", key_alias="myKey",
        trust_store="ref://myTrustStoreRef", protocols=["TLSv1.2"],
        ciphers=["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"],
    )  # fmt: skip
    with s:
        yield s


def test_reference_resolves_to_keystore(standin: Standin) -> None:
    """ref://REF resolves through the environment's references; a plain name stays as it is."""
    client = client_for(standin)
    assert client.resolve_keystore("acme", "prod", "ref://myKeystoreRef") == "myKeystore"
    assert client.resolve_keystore("acme", "prod", "myKeystore") == "myKeystore"


def test_certs_and_cert_details(standin: Standin, pki: Pki) -> None:
    """certs lists names; a cert's certInfo gives subject, issuer and dates in seconds."""
    client = client_for(standin)
    assert client.list_certs("acme", "prod", "myKeystore") == ["myKey-cert"]
    assert client.list_certs("acme", "prod", "empty") == []
    chain = client.get_cert("acme", "prod", "myKeystore", "myKey-cert")
    info = standin.env("acme", "prod").keystores["myKeystore"]["myKey"][0]
    assert (chain[0].issuer, chain[0].expiry) == (info["issuer"], info["expiryDate"] / 1000)
    assert chain[0].is_valid is True


def test_alias_chain(standin: Standin) -> None:
    """aliases/{alias} gives the chain from certsInfo, leaf first."""
    chain = client_for(standin).get_alias("acme", "prod", "myKeystore", "myKey")
    assert len(chain) == 1
    assert chain[0].subject.startswith("CN=client.client.test")


def test_target_server_ssl_info(standin: Standin) -> None:
    """targetservers/{name} gives host, port and the sSLInfo keystore, alias, protocols and
    cipher suites."""
    server = client_for(standin).get_target_server("acme", "prod", "backend")
    got = (server.host, server.port, server.client_auth_enabled, server.key_store, server.key_alias)
    assert got == ("10.20.3.4", 443, True, "ref://myKeystoreRef", "myKey")
    assert (server.protocols, server.ciphers) == (
        ("TLSv1.2",),
        ("TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "TLS_AES_128_GCM_SHA256"),
    )


def test_bearer_token(pki: Pki) -> None:
    """A bearer token is sent as Authorization: Bearer and accepted."""
    with Standin(token="tok-123-secret") as s:
        s.env("o", "e").keystores["ks"] = {}
        client = ManagementClient(s.url, Credentials(token="tok-123-secret"))
        assert client.list_keystores("o", "e") == ["ks"]


def test_wrong_password_is_unauthorized_without_credentials(standin: Standin) -> None:
    """HTTP 401 is kind 'unauthorized'; the message holds neither password nor header."""
    wrong = "Wr0ng-Pa55word"
    with pytest.raises(ManagementAPIError) as caught:
        client_for(standin, wrong).list_keystores("acme", "prod")
    assert caught.value.kind == "unauthorized"
    assert "HTTP 401" in str(caught.value)
    for secret in secrets_of(wrong) + secrets_of(PASSWORD):
        assert secret not in str(caught.value)


def test_unknown_names_are_not_found(standin: Standin) -> None:
    """Unknown keystore, reference or target server: HTTP 404, kind 'not_found'."""
    client = client_for(standin)
    calls = [
        lambda: client.list_certs("acme", "prod", "nope"),
        lambda: client.resolve_reference("acme", "prod", "nope"),
        lambda: client.get_target_server("acme", "prod", "nope"),
        lambda: client.list_certs("other", "prod", "myKeystore"),
    ]
    for call in calls:
        with pytest.raises(ManagementAPIError) as caught:
            call()
        assert (caught.value.kind, caught.value.status) == ("not_found", 404)


def test_bad_json_is_bad_response(standin: Standin) -> None:
    """A body that is not JSON is kind 'bad_response'."""
    standin.broken_json.add("/v1/organizations/acme/environments/prod/keystores")
    with pytest.raises(ManagementAPIError) as caught:
        client_for(standin).list_keystores("acme", "prod")
    assert caught.value.kind == "bad_response"


def test_connection_refused_is_connection_error() -> None:
    """Nothing listening: kind 'connection', one line, no credentials."""
    client = ManagementClient(f"http://127.0.0.1:{free_port()}/v1", Credentials("admin", PASSWORD))
    with pytest.raises(ManagementAPIError) as caught:
        client.list_keystores("acme", "prod")
    assert caught.value.kind == "connection"
    assert PASSWORD not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_silent_server_times_out() -> None:
    """A server that never answers gives kind 'timeout' after about the timeout."""
    start = time.monotonic()
    with SilentBackend() as silent:
        client = ManagementClient(f"http://{silent.target}/v1", timeout=0.3)
        with pytest.raises(ManagementAPIError) as caught:
            client.list_keystores("acme", "prod")
    assert caught.value.kind == "timeout"
    assert time.monotonic() - start < 3


def test_https_is_verified_by_default(tmp_path: Path) -> None:
    """HTTPS with an unknown CA fails unless its CA is given or verification is switched off."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.cert_pem.bytes())
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(tls)
    with Standin(tls=tls, password=PASSWORD) as s:
        s.env("acme", "prod").keystores["ks"] = {}
        with pytest.raises(ManagementAPIError) as caught:
            client_for(s).list_keystores("acme", "prod")
        assert caught.value.kind == "connection"
        assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
        assert client_for(s, ca_file=str(ca_file)).list_keystores("acme", "prod") == ["ks"]
        assert client_for(s, verify=False).list_keystores("acme", "prod") == ["ks"]


def test_credentials_in_url_are_refused() -> None:
    """A URL with user:password is refused, and the message does not repeat the password."""
    with pytest.raises(ValueError) as caught:
        ManagementClient("http://admin:Url-Secret-1@127.0.0.1:8080/v1")
    assert "Url-Secret-1" not in str(caught.value)


def test_credentials_repr_hides_secrets() -> None:
    """repr() of credentials and of the client shows no password or token."""
    creds = Credentials("admin", "Repr-Secret", None)
    client = ManagementClient("http://127.0.0.1:1/v1", Credentials(token="Tok-Secret"))
    assert "Repr-Secret" not in repr(creds)
    assert "Tok-Secret" not in repr(client)


def test_read_secret_one_rule_for_the_command_and_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A secret is a file's first line without its line end (spaces kept) or a variable's value;
    an empty one, a missing file and both at once are errors saying so; neither is None."""
    from apigee_tls_exporter.diagnosis.mgmt import read_secret

    (tmp_path / "crlf").write_bytes(b" pa ss\r\nsecond line\n")
    (tmp_path / "empty").write_bytes(b"\n")
    monkeypatch.setenv("SECRET_SET", "tok")
    monkeypatch.setenv("SECRET_EMPTY", "")

    def outcome(file: Optional[str], env: Optional[str]) -> Optional[str]:
        try:
            return read_secret(file, env)
        except ValueError as err:
            return f"error: {err}"

    assert [
        outcome(str(tmp_path / "crlf"), None),
        outcome(None, "SECRET_SET"),
        outcome(None, None),
        outcome(str(tmp_path / "empty"), None),
        outcome(None, "SECRET_EMPTY"),
        outcome(None, "SECRET_UNSET"),
        outcome(str(tmp_path / "nowhere"), None),
        outcome(str(tmp_path / "crlf"), "SECRET_SET"),
    ] == [
        " pa ss",
        "tok",
        None,
        f"error: {tmp_path / 'empty'} is empty",
        "error: $SECRET_EMPTY is not set or empty",
        "error: $SECRET_UNSET is not set or empty",
        f"error: cannot read {tmp_path / 'nowhere'}: No such file or directory",
        "error: give it as a file or an environment variable, not both",
    ]
