"""discovery: probe targets from the management API stand-in (not Apigee), as file_sd JSON, through
``targets`` and ``/sd``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from apigee_tls_exporter import cli
from apigee_tls_exporter.demo.standin import Standin, target_endpoint, target_server
from apigee_tls_exporter.diagnosis.discovery import SdEndpoint, discover, scope
from apigee_tls_exporter.diagnosis.mgmt import Credentials, ManagementAPIError, ManagementClient
from helpers.support import free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

PASSWORD = "pa55-w0rd-Secret"


@pytest.fixture
def standin() -> Iterator[Standin]:
    with Standin(password=PASSWORD) as s:
        servers = s.env("acme", "prod").target_servers
        servers["payments"] = target_server(
            "payments", "payments.internal", 443, key_store="ks", key_alias="good",
            protocols=["TLSv1.2"],
        )  # fmt: skip
        servers["partner"] = target_server(
            "partner", "api.partner.example", 8443, client_auth=False
        )
        plain = target_server("plain", "plain.internal", 80)
        plain["sSLInfo"]["enabled"] = "false"
        servers["plain"] = plain
        s.env("acme", "test").target_servers["ledger"] = target_server(
            "ledger", "ledger.test", 9443, key_store="ref://ks-ref", key_alias="ledger"
        )
        yield s


def client_for(standin: Standin, password: str = PASSWORD) -> ManagementClient:
    return ManagementClient(standin.url, Credentials("admin", password), timeout=5)


PAYMENTS = {
    "targets": ["payments.internal:443"],
    "labels": {"org": "acme", "env": "prod", "target_server": "payments", "target_endpoint": "",
               "keystore": "ks", "key_alias": "good", "protocols": "TLSv1.2"},
}  # fmt: skip
PARTNER = {
    "targets": ["api.partner.example:8443"],
    "labels": {"org": "acme", "env": "prod", "target_server": "partner", "target_endpoint": "",
               "keystore": "", "key_alias": "", "protocols": ""},
}  # fmt: skip


def test_every_tls_target_server_is_a_target_with_its_labels(standin: Standin) -> None:
    """TLS TargetServers become targets (one-way TLS with an empty key alias); one without TLS
    does not."""
    assert discover(client_for(standin), [("acme", "prod")]) == [PARTNER, PAYMENTS]


def test_a_deleted_target_server_drops_out(standin: Standin) -> None:
    """The list is the current state: a TargetServer deleted or switched to plain HTTP is gone."""
    client = client_for(standin)
    assert len(discover(client, [("acme", "prod"), ("acme", "test")])) == 3
    del standin.env("acme", "prod").target_servers["payments"]
    standin.env("acme", "test").target_servers["ledger"]["sSLInfo"]["enabled"] = "false"
    assert discover(client, [("acme", "prod"), ("acme", "test")]) == [PARTNER]


@pytest.mark.parametrize("text", ["acme", "/prod", "acme/", "a/b/c", ""])
def test_a_bad_scope_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="expected ORG/ENV"):
        scope(text)


def test_sd_answers_the_same_list_and_keeps_it_a_while(standin: Standin) -> None:
    """/sd?env=ORG/ENV answers the file_sd JSON; within its ttl the API is not asked again."""
    now = [0.0]
    sd = SdEndpoint(client_for(standin), ttl=30, clock=lambda: now[0])
    status, content_type, body = sd({"env": ["acme/prod"]}, {})
    assert (status, content_type) == (200, "application/json")
    assert json.loads(body) == [PARTNER, PAYMENTS]
    asked = len(standin.requests)
    del standin.env("acme", "prod").target_servers["payments"]
    assert json.loads(sd({"env": ["acme/prod"]}, {})[2]) == [PARTNER, PAYMENTS]
    assert len(standin.requests) == asked
    now[0] = 31
    assert json.loads(sd({"env": ["acme/prod"]}, {})[2]) == [PARTNER]


def test_sd_refuses_a_bad_request_and_reports_an_api_failure(standin: Standin) -> None:
    """No env or a bad one: 400. The management API refusing: 503 (Prometheus keeps its
    targets), naming the kind of error, never the credentials."""
    assert SdEndpoint(client_for(standin))({}, {})[0] == 400
    assert SdEndpoint(client_for(standin))({"env": ["acme"]}, {})[0] == 400
    status, _, body = SdEndpoint(client_for(standin, "wrong-Secret"))({"env": ["acme/prod"]}, {})
    assert status == 503 and b"unauthorized" in body and b"Secret" not in body


def write_config(tmp_path: Path, url: str, password: str = PASSWORD) -> Path:
    secret = tmp_path / "password"
    secret.write_text(password + "\n")
    config: dict[str, Any] = {
        "diagnosis": {"enabled": True, "management_url": url, "username": "admin",
                      "password_file": str(secret)},
    }  # fmt: skip
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_targets_writes_file_sd_json(standin: Standin, tmp_path: Path) -> None:
    """`targets --config FILE --env ORG/ENV -o FILE` writes the list Prometheus reads."""
    config = write_config(tmp_path, standin.url)
    out = tmp_path / "targets.json"
    code = cli.main(["targets", "--config", str(config), "--env", "acme/prod", "-o", str(out)])
    assert code == 0
    assert json.loads(out.read_text()) == [PARTNER, PAYMENTS]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".targets-")] == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--env", "acme"], "expected ORG/ENV"),
        (["--env", "acme/prod", "--wrong-password"], "refused the credentials"),
        (["--env", "acme/prod", "--down"], "Connection refused"),
    ],
)
def test_targets_fails_in_one_line(
    standin: Standin,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    """A bad scope, refused credentials or an API that is down: exit 1, one line on stderr, and
    the output file is left as it was."""
    url = f"http://127.0.0.1:{free_port()}/v1" if "--down" in args else standin.url
    password = "wrong-Secret" if "--wrong-password" in args else PASSWORD
    config = write_config(tmp_path, url, password)
    out = tmp_path / "targets.json"
    out.write_text("[]\n")
    argv = [a for a in args if a not in ("--down", "--wrong-password")]
    code = cli.main(["targets", "--config", str(config), *argv, "-o", str(out)])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert "Secret" not in err
    assert out.read_text() == "[]\n"


ORDERS = {
    "targets": ["orders.internal:8443"],
    "labels": {"org": "acme", "env": "prod", "target_server": "",
               "target_endpoint": "orders-v2/default", "keystore": "ref://ks-ref",
               "key_alias": "orders", "protocols": ""},
}  # fmt: skip


def deploy_endpoints(standin: Standin) -> None:
    """orders-v2 revisions 4 and 5 deployed, both with the same TLS TargetEndpoint; others that
    give no probe target: a load balancer over TargetServers, plain HTTP, a URL with a variable,
    and a revision that is not deployed."""
    orders = target_endpoint(
        "default", "https://orders.internal:8443/v2", key_store="ref://ks-ref", key_alias="orders"
    )
    for rev in ("4", "5"):
        targets = standin.revision("acme", "orders-v2", rev).targets
        targets["default"] = orders
        targets["lb"] = {"name": "lb", "connection": {"connectionType": "httpConnection",
                         "loadBalancer": {"server": [{"name": "payments"}]}}}  # fmt: skip
        plain = target_endpoint("plain", "http://plain.internal/x")
        plain["connection"]["sSLInfo"]["enabled"] = "false"
        targets["plain"] = plain
        targets["variable"] = target_endpoint("variable", "https://{backend.host}/x")
    standin.revision("acme", "orders-v2", "6").targets["default"] = target_endpoint(
        "default", "https://undeployed.internal/"
    )
    standin.env("acme", "prod").deployed["orders-v2"] = ["4", "5"]


def test_target_endpoints_with_their_own_tls_url_come_once(standin: Standin) -> None:
    """With endpoints, a deployed TargetEndpoint with an https URL is one more target, however
    many revisions hold it; without, only TargetServers."""
    deploy_endpoints(standin)
    client = client_for(standin)
    assert discover(client, [("acme", "prod")]) == [PARTNER, PAYMENTS]
    assert discover(client, [("acme", "prod")], endpoints=True) == [PARTNER, ORDERS, PAYMENTS]


def test_sd_lists_target_endpoints_when_asked(standin: Standin) -> None:
    """/sd?env=...&target_endpoints=1 adds them."""
    deploy_endpoints(standin)
    sd = SdEndpoint(client_for(standin))
    assert json.loads(sd({"env": ["acme/prod"]}, {})[2]) == [PARTNER, PAYMENTS]
    found = json.loads(sd({"env": ["acme/prod"], "target_endpoints": ["1"]}, {})[2])
    assert found == [PARTNER, ORDERS, PAYMENTS]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
SSL_FIELDS = ("enabled", "clientAuthEnabled", "keyStore", "keyAlias", "protocols")
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "host": JSON, "port": JSON, "sSLInfo": JSON | st.fixed_dictionaries(
            {}, optional={k: JSON for k in SSL_FIELDS}
        ),
    },
)  # fmt: skip


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(servers=st.lists(FIELDS, max_size=3), urls=st.lists(JSON, max_size=3))
def test_any_answer_of_the_api_is_a_list_or_a_management_api_error(
    standin: Standin, servers: list[dict[str, Any]], urls: list[Any]
) -> None:
    """Whatever TargetServers and TargetEndpoint connections the API returns, discovery gives
    well-formed groups (a host and a port in range) or a ManagementAPIError, never a crash."""
    env = standin.env("acme", "fuzz")
    env.target_servers = {f"ts{i}": {"name": f"ts{i}", **body} for i, body in enumerate(servers)}
    targets = standin.revision("acme", "fuzz-api", "1").targets
    targets.clear()
    for i, url in enumerate(urls):
        targets[f"te{i}"] = {
            "name": f"te{i}",
            "connection": {"uRL": url, "sSLInfo": {"enabled": "true"}},
        }
    env.deployed = {"fuzz-api": ["1"]}
    try:
        groups = discover(client_for(standin), [("acme", "fuzz")], endpoints=True)
    except ManagementAPIError as err:
        assert err.kind == "bad_response"
        return
    for found in groups:
        [target] = found["targets"]
        host, port = target.rsplit(":", 1)
        assert host and 0 < int(port) < 65536
        assert all(isinstance(v, str) for v in found["labels"].values())
