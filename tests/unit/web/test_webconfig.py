"""The web config: loading and its errors; real HTTPS requests with basic auth and client certs."""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import bcrypt
import pytest
import trustme
import yaml
from apigee_tls_exporter.web import webconfig
from apigee_tls_exporter.web.serve import MetricsServer
from apigee_tls_exporter.web.webconfig import BasicAuth, WebConfig, WebConfigError, load_web_config
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from helpers.http_load import start_load, timed_scrapes
from helpers.stack import Server, binary, get_json, poll
from helpers.support import free_port
from prometheus_client import CollectorRegistry, Counter

PASSWORD = "s3cret-scrape-password"
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()


@dataclass
class PKI:
    """Certificates made for one test: a server CA, a client CA and a stranger CA."""

    directory: Path
    server_ca: trustme.CA
    client_ca: trustme.CA
    client: trustme.LeafCert
    stranger: trustme.LeafCert


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    """Server cert/key and client CA written next to where the web config will be."""
    server_ca = trustme.CA()
    server = server_ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.crt"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    client_ca = trustme.CA()
    client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.crt"))
    return PKI(
        directory=tmp_path,
        server_ca=server_ca,
        client_ca=client_ca,
        client=client_ca.issue_cert("prometheus"),
        stranger=trustme.CA().issue_cert("prometheus"),
    )


def write_config(directory: Path, text: str) -> Path:
    """The web config file, in the test's directory."""
    path = directory / "web.yml"
    path.write_text(text)
    return path


Start = Callable[[WebConfig], MetricsServer]


@pytest.fixture
def start(start_server: Callable[..., MetricsServer]) -> Start:
    """Starts a server on 127.0.0.1 for a web config; stopped after the test."""
    registry = CollectorRegistry()
    Counter("apigee_tls_test_total", "A test counter.", registry=registry).inc()
    return lambda config: start_server(registry, web_config=config)


def client_context(pki: PKI, cert: Optional[trustme.LeafCert] = None) -> ssl.SSLContext:
    """A client context trusting the server CA, presenting cert when given."""
    context = ssl.create_default_context()
    pki.server_ca.configure_trust(context)
    if cert is not None:
        cert.configure_cert(context)
    return context


def https_get(
    server: MetricsServer,
    context: ssl.SSLContext,
    authorization: Optional[str] = None,
    path: str = "/metrics",
    source: Optional[str] = None,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTPS request (from the source address when given); status, lower-cased headers and
    body."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1",
        server.port,
        context=context,
        timeout=10,
        source_address=(source, 0) if source else None,
    )
    try:
        headers = {"Authorization": authorization} if authorization else {}
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        connection.close()


def basic(user: str, password: str) -> str:
    """An Authorization header value for basic auth."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


TLS_ONLY = """\
tls_server_config:
  cert_file: server.crt
  key_file: server.key
"""

TLS_AND_AUTH = (
    TLS_ONLY
    + f"""\
basic_auth_users:
  prometheus: {HASH}
"""
)

MUTUAL_TLS = (
    TLS_ONLY
    + """\
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: client-ca.crt
"""
)

# ---------------------------------------------------------------------------------------------
# Loading


def test_load_resolves_paths_relative_to_the_file(pki: PKI) -> None:
    """cert_file, key_file and client_ca_file are resolved against the web config's directory."""
    config = load_web_config(write_config(pki.directory, MUTUAL_TLS))

    tls = config.tls_server_config
    assert tls is not None
    assert (tls.cert_file, tls.key_file, tls.client_ca_file) == (
        str(pki.directory / "server.crt"),
        str(pki.directory / "server.key"),
        str(pki.directory / "client-ca.crt"),
    )
    assert (tls.client_auth_type, tls.min_version) == ("RequireAndVerifyClientCert", "TLS12")


def test_empty_file_means_plain_http_without_auth(tmp_path: Path) -> None:
    """An empty web config is valid: no TLS, no users."""
    assert load_web_config(write_config(tmp_path, "")) == WebConfig()


def test_empty_sections_are_accepted(tmp_path: Path) -> None:
    """Sections present but empty (as toolkit examples leave them) mean no TLS and no users."""
    config = load_web_config(write_config(tmp_path, "tls_server_config:\nbasic_auth_users:\n"))

    assert config == WebConfig()


def test_missing_cert_file_names_location_and_path(tmp_path: Path) -> None:
    """A certificate file that does not exist is reported with its key and absolute path."""
    path = write_config(tmp_path, "tls_server_config:\n  cert_file: /x\n  key_file: /y\n")

    with pytest.raises(WebConfigError) as info:
        load_web_config(path)

    assert info.value.problems == [
        "tls_server_config.cert_file: file not found: /x",
        "tls_server_config.key_file: file not found: /y",
    ]
    assert str(info.value) == (
        f"web config {path}: tls_server_config.cert_file: file not found: /x;"
        " tls_server_config.key_file: file not found: /y"
    )


def test_every_schema_problem_is_listed(tmp_path: Path) -> None:
    """Unknown keys, bad enum values and missing fields are all reported, each with its location."""
    path = write_config(
        tmp_path,
        "tls_server_config:\n"
        "  key_file: k\n"
        "  client_auth_type: Always\n"
        "  cipher_suites: [TLS_AES_128_GCM_SHA256]\n"
        "basic_auth_users:\n"
        "  alice: 42\n"
        "listen: :9847\n",
    )

    with pytest.raises(WebConfigError) as info:
        load_web_config(path)

    problems = info.value.problems
    assert "tls_server_config.cert_file: required" in problems
    assert any(
        p.startswith("tls_server_config.client_auth_type: input should be") for p in problems
    )
    assert (
        "tls_server_config.cipher_suites: TLS_AES_128_GCM_SHA256 is not a TLS 1.2 cipher suite"
        " Go offers (TLS 1.3 suites cannot be chosen, as in Go)"
    ) in problems
    assert "basic_auth_users.alice: input should be a valid string" in problems
    assert "listen: unknown key" in problems
    assert len(problems) == 5


def test_bad_bcrypt_hash_is_reported_without_its_value(tmp_path: Path) -> None:
    """A value that is not a bcrypt hash is refused and never echoed (it may be a password)."""
    path = write_config(tmp_path, "basic_auth_users:\n  alice: plain-password\n")

    with pytest.raises(WebConfigError) as info:
        load_web_config(path)

    assert info.value.problems == ["basic_auth_users.alice: not a bcrypt hash ($2a$, $2b$ or $2y$)"]
    assert "plain-password" not in str(info.value)


def test_user_name_with_colon_is_refused(tmp_path: Path) -> None:
    """A user name containing ':' could never log in with basic auth, so it is refused."""
    path = write_config(tmp_path, f"basic_auth_users:\n  'a:b': {HASH}\n")

    with pytest.raises(WebConfigError, match="user name 'a:b' is empty or contains ':'"):
        load_web_config(path)


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        (
            "  client_auth_type: RequireAnyClientCert\n",
            "tls_server_config.client_auth_type: RequireAnyClientCert accepts unverified client"
            " certificates and is not supported; use VerifyClientCertIfGiven or"
            " RequireAndVerifyClientCert with client_ca_file",
        ),
        (
            "  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config.client_ca_file: required for RequireAndVerifyClientCert",
        ),
        (
            "  client_ca_file: client-ca.crt\n",
            "tls_server_config.client_auth_type: client_ca_file is set but client_auth_type is"
            " NoClientCert; set VerifyClientCertIfGiven or RequireAndVerifyClientCert",
        ),
        (
            "  min_version: TLS10\n",
            "tls_server_config.min_version: TLS10 is not offered; use TLS12 or TLS13",
        ),
        (
            "  min_version: TLS13\n  max_version: TLS12\n",
            "tls_server_config.max_version: lower than min_version TLS13",
        ),
    ],
)
def test_policy_problems(pki: PKI, extra: str, problem: str) -> None:
    """Client-auth and version settings that cannot work are refused with what to do instead."""
    path = write_config(pki.directory, TLS_ONLY + extra)

    with pytest.raises(WebConfigError) as info:
        load_web_config(path)

    assert info.value.problems == [problem]


def test_key_not_matching_certificate(pki: PKI) -> None:
    """A key that does not belong to the certificate is caught at load time, not at a scrape."""
    other = trustme.CA().issue_cert("127.0.0.1")
    other.private_key_pem.write_to_path(str(pki.directory / "other.key"))
    path = write_config(
        pki.directory, "tls_server_config:\n  cert_file: server.crt\n  key_file: other.key\n"
    )

    with pytest.raises(WebConfigError) as info:
        load_web_config(path)

    [problem] = info.value.problems
    assert problem.startswith(
        f"tls_server_config.cert_file/key_file: cannot load {pki.directory}/server.crt with"
        f" {pki.directory}/other.key (not PEM, or the key does not match the certificate): "
    )


def test_encrypted_key_is_refused_without_prompting(pki: PKI) -> None:
    """A passphrase-protected key is refused with a clear message instead of a terminal prompt."""
    key = ec.generate_private_key(ec.SECP256R1())
    (pki.directory / "enc.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pass"),
        )
    )
    path = write_config(
        pki.directory, "tls_server_config:\n  cert_file: server.crt\n  key_file: enc.key\n"
    )

    with pytest.raises(WebConfigError) as info:
        load_web_config(path)

    assert info.value.problems == [
        f"tls_server_config.key_file: encrypted private keys are not supported: "
        f"{pki.directory}/enc.key"
    ]


def test_ca_file_without_certificates(pki: PKI) -> None:
    """A client_ca_file holding no PEM certificate is reported against client_ca_file."""
    (pki.directory / "empty-ca.crt").write_text("not a certificate\n")
    path = write_config(
        pki.directory,
        TLS_ONLY + "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: empty-ca.crt\n",
    )

    with pytest.raises(WebConfigError) as info:
        load_web_config(path)

    [problem] = info.value.problems
    assert problem.startswith(
        f"tls_server_config.client_ca_file: no PEM certificate in {pki.directory}/empty-ca.crt"
    )


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tls_server_config: [\n", "line 2, column 1: invalid YAML: expected the node content"),
        ("- a\n- b\n", "expected a mapping at the top level"),
    ],
)
def test_yaml_problems_are_one_line(tmp_path: Path, text: str, problem: str) -> None:
    """Broken YAML or a non-mapping gives a one-line problem with line and column."""
    with pytest.raises(WebConfigError) as info:
        load_web_config(write_config(tmp_path, text))

    [actual] = info.value.problems
    assert actual.startswith(problem)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    """A web config path that does not exist is a WebConfigError naming it."""
    path = tmp_path / "nope.yml"

    with pytest.raises(WebConfigError) as info:
        load_web_config(path)

    assert str(info.value) == f"web config {path}: file not found"


def test_invalid_yaml_is_reported_with_line_and_column(tmp_path: Path) -> None:
    """Broken YAML is one problem with the line and column, worded as for the config."""
    path = write_config(tmp_path, "basic_auth_users:\n  a: 1\n   b: 2\n")

    with pytest.raises(WebConfigError) as info:
        load_web_config(path)

    expected = ["line 3, column 5: invalid YAML: mapping values are not allowed here"]
    assert expected == info.value.problems


# ---------------------------------------------------------------------------------------------
# Basic auth, without the network


def test_basic_auth_accepts_right_and_refuses_wrong() -> None:
    """The right user and password pass; a wrong password, unknown user or junk header do not."""
    auth = BasicAuth({"prometheus": HASH})

    assert [
        auth.check(basic("prometheus", PASSWORD)),
        auth.check(basic("prometheus", "wrong")),
        auth.check(basic("grafana", PASSWORD)),
        auth.check(None),
        auth.check("Bearer abc"),
        auth.check("Basic !!!not-base64"),
    ] == [True, False, False, False, False, False]


def test_basic_auth_caches_success_briefly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A repeated good login skips bcrypt until the cache expires; a wrong one always pays."""
    calls: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", counting_checkpw)
    now = [1000.0]
    auth = BasicAuth({"prometheus": HASH}, cache_seconds=60, clock=lambda: now[0])
    good = basic("prometheus", PASSWORD)

    assert auth.check(good) and auth.check(good)
    assert len(calls) == 1
    assert not auth.check(basic("prometheus", "wrong"))
    assert len(calls) == 2
    now[0] += 61
    assert auth.check(good)
    assert len(calls) == 3


def test_basic_auth_cache_lasts_while_used(monkeypatch: pytest.MonkeyPatch) -> None:
    """A credential used every 15 s stays cached (no bcrypt, nothing to queue behind a flood);
    unused for longer than cache_seconds, it is checked again."""
    calls: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def counting_checkpw(password: bytes, hashed: bytes) -> bool:
        calls.append(password)
        return real_checkpw(password, hashed)

    monkeypatch.setattr(webconfig.bcrypt, "checkpw", counting_checkpw)
    now = [0.0]
    auth = BasicAuth({"prometheus": HASH}, cache_seconds=60, clock=lambda: now[0])
    good = basic("prometheus", PASSWORD)

    for _ in range(20):  # five minutes of scrapes
        assert auth.check(good)
        now[0] += 15
    now[0] += 61
    assert auth.check(good)

    assert len(calls) == 2


def test_basic_auth_truncates_long_passwords_as_bcrypt_does() -> None:
    """Passwords over 72 bytes are compared on their first 72 bytes (bcrypt>=5 would raise)."""
    long_password = "p" * 100
    hashed = bcrypt.hashpw(long_password.encode()[:72], bcrypt.gensalt(rounds=4)).decode()

    assert BasicAuth({"u": hashed}).check(basic("u", long_password))


# ---------------------------------------------------------------------------------------------
# Real HTTPS requests


def test_https_without_auth(pki: PKI, start: Start) -> None:
    """With only tls_server_config, /metrics is served over HTTPS to a client trusting the CA."""
    server = start(load_web_config(write_config(pki.directory, TLS_ONLY)))

    status, _, body = https_get(server, client_context(pki))

    assert (server.scheme, status) == ("https", 200)
    assert b"apigee_tls_test_total 1.0" in body


def test_plain_http_to_https_port_gets_no_metrics(pki: PKI, start: Start) -> None:
    """A plain HTTP request to the TLS port never gets the metrics."""
    server = start(load_web_config(write_config(pki.directory, TLS_ONLY)))
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

    with pytest.raises((ConnectionError, http.client.HTTPException)):
        connection.request("GET", "/metrics")
        connection.getresponse().read()
    connection.close()


def test_no_credentials_is_401_with_challenge(pki: PKI, start: Start) -> None:
    """Without credentials every path answers 401 with a Basic WWW-Authenticate challenge."""
    server = start(load_web_config(write_config(pki.directory, TLS_AND_AUTH)))

    for path in ("/metrics", "/", "/elsewhere"):
        status, headers, body = https_get(server, client_context(pki), path=path)
        assert status == 401
        assert headers["www-authenticate"] == 'Basic realm="apigee-tls-exporter", charset="UTF-8"'
        assert b"apigee_tls" not in body


def test_wrong_credentials_are_401(pki: PKI, start: Start) -> None:
    """A wrong password or an unknown user is 401."""
    server = start(load_web_config(write_config(pki.directory, TLS_AND_AUTH)))
    context = client_context(pki)

    assert [
        https_get(server, context, basic("prometheus", "wrong"))[0],
        https_get(server, context, basic("nobody", PASSWORD))[0],
    ] == [401, 401]


def test_right_credentials_get_metrics(pki: PKI, start: Start) -> None:
    """The configured user with the right password gets the metrics, repeatedly."""
    server = start(load_web_config(write_config(pki.directory, TLS_AND_AUTH)))
    context = client_context(pki)

    first = https_get(server, context, basic("prometheus", PASSWORD))
    second = https_get(server, context, basic("prometheus", PASSWORD))

    assert (first[0], second[0]) == (200, 200)
    assert b"apigee_tls_test_total 1.0" in second[2]


def test_basic_auth_over_plain_http(tmp_path: Path, start: Start) -> None:
    """basic_auth_users without TLS protects plain HTTP too (for a TLS-terminating proxy)."""
    server = start(load_web_config(write_config(tmp_path, f"basic_auth_users:\n  u: {HASH}\n")))

    def status(authorization: Optional[str]) -> int:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", "/metrics", headers={"Authorization": authorization or ""})
        code = connection.getresponse().status
        connection.close()
        return code

    assert [status(None), status(basic("u", PASSWORD))] == [401, 200]


def test_client_certificate_required(pki: PKI, start: Start) -> None:
    """RequireAndVerifyClientCert: a client cert from the client CA gets in; none or another CA's
    does not."""
    server = start(load_web_config(write_config(pki.directory, MUTUAL_TLS)))

    assert https_get(server, client_context(pki, pki.client))[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(server, client_context(pki))
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(server, client_context(pki, pki.stranger))


def test_client_certificate_verified_if_given(pki: PKI, start: Start) -> None:
    """VerifyClientCertIfGiven: no cert is fine, a good cert is fine, a stranger's is refused."""
    text = TLS_ONLY + (
        "  client_auth_type: VerifyClientCertIfGiven\n  client_ca_file: client-ca.crt\n"
    )
    server = start(load_web_config(write_config(pki.directory, text)))

    assert https_get(server, client_context(pki))[0] == 200
    assert https_get(server, client_context(pki, pki.client))[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(server, client_context(pki, pki.stranger))


def test_client_certificate_and_basic_auth_together(pki: PKI, start: Start) -> None:
    """With both configured a request needs the client cert and the password."""
    text = MUTUAL_TLS + f"basic_auth_users:\n  prometheus: {HASH}\n"
    server = start(load_web_config(write_config(pki.directory, text)))
    context = client_context(pki, pki.client)

    assert [
        https_get(server, context)[0],
        https_get(server, context, basic("prometheus", PASSWORD))[0],
    ] == [401, 200]


def test_min_version_tls13_refuses_tls12_client(pki: PKI, start: Start) -> None:
    """min_version TLS13 refuses a client that stops at TLS 1.2."""
    text = TLS_ONLY + "  min_version: TLS13\n"
    server = start(load_web_config(write_config(pki.directory, text)))
    old_client = client_context(pki)
    old_client.maximum_version = ssl.TLSVersion.TLSv1_2

    assert https_get(server, client_context(pki))[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(server, old_client)


def test_stalled_handshake_does_not_block_other_clients(pki: PKI, start: Start) -> None:
    """A client that connects and never starts TLS does not stop others from being served."""
    server = start(load_web_config(write_config(pki.directory, TLS_ONLY)))
    stalled = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        assert https_get(server, client_context(pki))[0] == 200
    finally:
        stalled.close()


def test_new_web_config_applies_to_next_connection(pki: PKI, start: Start) -> None:
    """set_web_config (as on SIGHUP) changes the users for the following requests."""
    server = start(load_web_config(write_config(pki.directory, TLS_ONLY)))
    context = client_context(pki)
    assert https_get(server, context)[0] == 200

    server.set_web_config(load_web_config(write_config(pki.directory, TLS_AND_AUTH)))

    assert https_get(server, context)[0] == 401
    assert https_get(server, context, basic("prometheus", PASSWORD))[0] == 200


# ---------------------------------------------------------------------------------------------
# Health endpoints and the exporter's own section


HEALTH_OPEN = TLS_AND_AUTH + "apigee_tls_exporter:\n  health_without_auth: true\n"


def test_health_endpoints_open_only_when_configured(pki: PKI, start: Start) -> None:
    """With ``apigee_tls_exporter.health_without_auth`` /-/healthy and /-/ready answer without
    credentials (/metrics and / still need them); without it they need them too."""
    closed = start(load_web_config(write_config(pki.directory, TLS_AND_AUTH)))
    opened = start(load_web_config(write_config(pki.directory, HEALTH_OPEN)))
    context = client_context(pki)

    def statuses(server: MetricsServer) -> list[int]:
        paths = ("/-/healthy", "/-/ready", "/metrics", "/")
        return [https_get(server, context, path=p)[0] for p in paths]

    assert statuses(closed) == [401, 401, 401, 401]
    assert statuses(opened) == [200, 200, 401, 401]


def test_own_section_is_strict(tmp_path: Path) -> None:
    """An unknown key in the apigee_tls_exporter section is refused with its location."""
    path = write_config(tmp_path, "apigee_tls_exporter:\n  health_without_auht: true\n")

    with pytest.raises(WebConfigError) as info:
        load_web_config(path)

    assert info.value.problems == ["apigee_tls_exporter.health_without_auht: unknown key"]


# ---------------------------------------------------------------------------------------------
# Timing and floods


def test_stand_in_hash_has_the_cost_of_the_configured_ones() -> None:
    """Unknown users are checked against a stand-in hash of the configured cost (the highest
    when they differ), not a fixed one."""
    cost_12 = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=12)).decode()
    cost_5 = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=5)).decode()

    auth = BasicAuth({"a": cost_5, "b": cost_12})

    assert auth.cost == 12
    assert auth._stand_in.startswith(b"$2b$12$")


def test_unknown_user_401_takes_as_long_as_a_wrong_password(pki: PKI, start: Start) -> None:
    """With cost-12 hashes, a 401 for an unknown user takes the time of a 401 for a known user
    with a wrong password, so user names cannot be found out by timing: the median of the
    ratios of back-to-back pairs is within 20% of 1 (the fixed cost-10 stand-in made it 0.25;
    pairs in alternating order, so that the machine's load drifts out). Each request from its
    own source address, so that the failed-login backoff does not answer at once."""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12)).decode()
    text = TLS_ONLY + f"basic_auth_users:\n  p: {hashed}\n"
    server = start(load_web_config(write_config(pki.directory, text)))
    context = client_context(pki)
    sources = (f"127.0.3.{i}" for i in range(1, 250))

    def seconds(user: str) -> float:
        started = time.perf_counter()
        status = https_get(server, context, basic(user, "wrong"), source=next(sources))[0]
        assert status == 401
        return time.perf_counter() - started

    ratios = []
    for i in range(8):
        if i % 2:
            unknown, known = seconds("nobody"), seconds("p")
        else:
            known, unknown = seconds("p"), seconds("nobody")
        ratios.append(unknown / known)

    assert abs(statistics.median(ratios) - 1) <= 0.2, ratios


@pytest.mark.slow
def test_wrong_password_flood_does_not_lock_out_scrapes(pki: PKI, start: Start) -> None:
    """40 clients (each from its own address) sending wrong passwords over TLS as fast as they
    are answered: a scrape with good credentials every 0.5 s (a new TLS connection each time)
    and then fresh logins (users never verified, so bcrypt runs) from clean addresses are each
    answered 200 within 1 s. (Before: every
    connection slot waited for the 2-way bcrypt semaphore and most scrapes failed.)"""
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    users = "".join(f"  user{i}: {hashed}\n" for i in range(4))  # fresh: never verified yet
    text = TLS_ONLY + f"basic_auth_users:\n  prometheus: {hashed}\n{users}"
    server = start(load_web_config(write_config(pki.directory, text)))
    context = client_context(pki)
    good = basic("prometheus", PASSWORD)
    assert https_get(server, context, good)[0] == 200  # the scraper logged in before the flood
    ca = pki.directory / "server-ca.pem"
    pki.server_ca.cert_pem.write_to_path(str(ca))
    attack = start_load("wrong-password", server.port, 40, 14, "--spread", "--ca", str(ca))
    fresh = iter(range(4))

    def fresh_login(i: int) -> int:
        return https_get(server, context, basic(f"user{i}", PASSWORD), source=f"127.0.4.{i}")[0]

    try:
        scrapes = timed_scrapes(lambda: https_get(server, context, good)[0], 12)
        logins = timed_scrapes(lambda: fresh_login(next(fresh)), 4)
    finally:
        attack.terminate()
        attack.wait(timeout=10)

    assert [s for s, _ in scrapes + logins] == [200] * 16
    assert max(t for _, t in scrapes + logins) < 1.0, (scrapes, logins)
    failed = server.stats.rejected
    assert failed["auth_failed"] + failed["auth_busy"] >= 40  # the flood ran


@pytest.mark.slow
def test_idle_connections_to_the_tls_port_do_not_block_scrapes(pki: PKI, start: Start) -> None:
    """200 connections that never start the TLS handshake (cut off at the handshake deadline,
    then back): a TLS scrape every 0.5 s for 10 s is answered within 1 s every time."""
    server = start(load_web_config(write_config(pki.directory, TLS_ONLY)))
    attack = start_load("idle", server.port, 200, 14)
    try:
        results = timed_scrapes(lambda: https_get(server, client_context(pki))[0], 20)
    finally:
        attack.terminate()
        attack.wait(timeout=10)

    assert [s for s, _ in results] == [200] * 20
    assert max(t for _, t in results) < 1.0, results
    assert server.stats.rejected["tls_handshake"] >= 200  # every idle one was cut off


@pytest.mark.slow
def test_real_prometheus_scrapes_over_mutual_tls_and_basic_auth_on_one_connection(
    pki: PKI, start: Start, tmp_path: Path
) -> None:
    """A real Prometheus with a client certificate and basic auth scrapes the target every
    second: the target is up, and its scrapes reuse one kept-alive connection."""
    text = MUTUAL_TLS + f"basic_auth_users:\n  prometheus: {HASH}\n"
    server = start(load_web_config(write_config(pki.directory, text)))
    pki.server_ca.cert_pem.write_to_path(str(tmp_path / "server-ca.pem"))
    pki.client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.crt"))
    pki.client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
        "scrape_configs": [
            {
                "job_name": "apigee-tls",
                "scheme": "https",
                "tls_config": {
                    "ca_file": str(tmp_path / "server-ca.pem"),
                    "cert_file": str(tmp_path / "client.crt"),
                    "key_file": str(tmp_path / "client.key"),
                },
                "basic_auth": {"username": "prometheus", "password": PASSWORD},
                "static_configs": [{"targets": [f"127.0.0.1:{server.port}"]}],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    prometheus = Server(
        "prometheus",
        [
            binary("prometheus"),
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        tmp_path,
    )
    try:

        def scraped() -> Optional[float]:
            prometheus.check_running()
            answer = get_json(f"http://127.0.0.1:{port}/api/v1/query?query=count_over_time(up[1m])")
            result = answer["data"]["result"]
            return float(result[0]["value"][1]) if result else None

        poll(lambda: (scraped() or 0) >= 4, 60, "four scrapes by Prometheus", prometheus.log)
        up = get_json(f"http://127.0.0.1:{port}/api/v1/query?query=up")["data"]["result"]
    finally:
        prometheus.stop()

    assert up[0]["value"][1] == "1"
    assert server.stats.requests["200"] >= 4
    assert server.stats.opened == 1  # keep-alive: Prometheus never had to reconnect


# ---------------------------------------------------------------------------------------------
# exporter-toolkit parity: client_allowed_sans, cipher_suites, http_server_config.headers


def test_client_allowed_sans_lets_in_only_certificates_naming_one(pki: PKI, start: Start) -> None:
    """client_allowed_sans: a verified client certificate naming an allowed SAN gets in; one
    from the same CA naming another is cut off after the handshake and counted."""
    text = MUTUAL_TLS + "  client_allowed_sans: [prometheus, 192.0.2.9]\n"
    server = start(load_web_config(write_config(pki.directory, text)))
    by_ip = pki.client_ca.issue_cert("192.0.2.9")
    other = pki.client_ca.issue_cert("grafana")

    assert https_get(server, client_context(pki, pki.client))[0] == 200
    assert https_get(server, client_context(pki, by_ip))[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError)):
        https_get(server, client_context(pki, other))
    assert server.stats.rejected["tls_client_san"] == 1


def test_client_allowed_sans_needs_a_verified_certificate(pki: PKI) -> None:
    """client_allowed_sans without client certificates would allow nobody: said at load."""
    text = TLS_ONLY + "  client_allowed_sans: [prometheus]\n"

    with pytest.raises(WebConfigError) as info:
        load_web_config(write_config(pki.directory, text))

    assert info.value.problems == [
        "tls_server_config.client_allowed_sans: needs a verified client certificate; set"
        " client_auth_type RequireAndVerifyClientCert and client_ca_file"
    ]


def test_cipher_suites_take_go_names(pki: PKI, start: Start) -> None:
    """cipher_suites in Go's names limit the TLS 1.2 suites: a client offering one of them
    gets it (OpenSSL's name for it), a client offering only another one is refused."""
    text = (
        TLS_ONLY
        + "  max_version: TLS12\n"
        + "  cipher_suites: [TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384]\n"
    )
    server = start(load_web_config(write_config(pki.directory, text)))

    def handshake(suite: str) -> str:
        context = client_context(pki)
        context.set_ciphers(suite)
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:  # closes raw too
            cipher = tls.cipher()
            assert cipher is not None
            return cipher[0]

    assert handshake("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256") == (
        "ECDHE-ECDSA-AES256-GCM-SHA384"
    )
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake("ECDHE-ECDSA-AES128-GCM-SHA256")


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        (
            {"Server": "x"},
            "http_server_config.headers: Server cannot be set; allowed: Content-Security-Policy,"
            " Strict-Transport-Security, X-Content-Type-Options, X-Frame-Options,"
            " X-XSS-Protection",
        ),
        (
            {"X-Frame-Options": "allow"},
            "http_server_config.headers: X-Frame-Options: expected one of deny, sameorigin",
        ),
        (
            {"Strict-Transport-Security": "max-age=1\r\nX-Injected: yes"},
            "http_server_config.headers: Strict-Transport-Security: only printable ASCII in a"
            " header value",
        ),
    ],
)
def test_http_server_config_headers_refused_as_go_refuses_them(
    tmp_path: Path, headers: dict[str, str], problem: str
) -> None:
    """Only the five headers the Go toolkit allows, with its allowed values; no CR or LF."""
    path = tmp_path / "web.yml"
    path.write_text(yaml.safe_dump({"http_server_config": {"headers": headers}}))

    with pytest.raises(WebConfigError) as info:
        load_web_config(path)

    assert info.value.problems == [problem]


def test_http_server_config_headers_are_on_every_answer(pki: PKI, start: Start) -> None:
    """The configured headers go out with every answer, 401s included; http2: false is
    accepted, true is refused by name."""
    text = (
        TLS_AND_AUTH
        + "http_server_config:\n  http2: false\n  headers:\n"
        + "    Strict-Transport-Security: max-age=31536000\n"
        + "    X-Frame-Options: deny\n"
    )
    server = start(load_web_config(write_config(pki.directory, text)))
    context = client_context(pki)

    for authorization in (None, basic("prometheus", PASSWORD)):
        _, headers, _ = https_get(server, context, authorization)
        assert headers["strict-transport-security"] == "max-age=31536000"
        assert headers["x-frame-options"] == "deny"
    with pytest.raises(WebConfigError, match=r"http_server_config\.http2: HTTP/2 is not"):
        load_web_config(write_config(pki.directory, "http_server_config:\n  http2: true\n"))
