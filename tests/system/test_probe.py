"""/probe end to end: a real Prometheus scrapes it through the shipped job and rules.

The targets come from ``apigee-tls-exporter targets`` run against the management API stand-in
(not Apigee: the documented shapes, ``apigee_tls_exporter.demo.standin``); the backends are real
TLS servers on 127.0.0.1 (nginx, openssl s_server, a JSSE server). Prometheus runs the shipped
``apigee-tls-probe`` job (file_sd, relabelling) and the shipped rules, with 1 s intervals and the
15 minutes of ``BackendWillRejectClientCertificate`` cut to 5 s. No failure is ever logged: every
alert here is a prediction.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest
import yaml
from apigee_tls_exporter.demo.standin import Standin, chain_info, target_server
from helpers import jsse
from helpers.stack import (
    PREDICTED_ROW,
    PROMETHEUS_YML,
    RULES,
    Server,
    Stack,
    binary,
    dashboard_rows,
    get_json,
    poll,
    prometheus_config,
)
from helpers.support import EXPORTER, ExporterProcess, free_port, samples
from helpers.tls_backends import Nginx, NginxSite, OpenSSLBackend, Pki, PythonBackend

pytestmark = pytest.mark.slow

PASSWORD = "pa55-w0rd-Secret"
FOR = "5s"  # BackendWillRejectClientCertificate's 15m, for a test with 1 s evaluations


@dataclass(frozen=True)
class Backend:
    name: str  # the TargetServer
    target: str
    client_auth: bool
    success: int  # what the probe must say
    cause: str


@dataclass
class Scenario:
    backends: dict[str, Backend]
    targets_file: Path
    prometheus_url: str
    exporter: ExporterProcess
    pki: Pki

    def query(self, expr: str) -> list[dict[str, Any]]:
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        result: list[dict[str, Any]] = get_json(url)["data"]["result"]
        return result

    def firing(self, alertname: str) -> list[dict[str, str]]:
        alerts = get_json(f"{self.prometheus_url}/api/v1/alerts")["data"]["alerts"]
        return [
            a["labels"]
            for a in alerts
            if a["labels"]["alertname"] == alertname and a["state"] == "firing"
        ]


def probe_job(exporter: str, targets: Path) -> dict[str, Any]:
    """The shipped apigee-tls-probe job: 1 s scrapes, the test's targets file and exporter."""
    jobs = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]
    [job] = [j for j in jobs if j["job_name"] == "apigee-tls-probe"]
    job["scrape_interval"] = job["scrape_timeout"] = "1s"
    job["file_sd_configs"] = [{"files": [str(targets)], "refresh_interval": "1s"}]
    last = job["relabel_configs"][-1]
    assert last["target_label"] == "__address__", "the job's last relabelling names the exporter"
    last["replacement"] = exporter
    return dict(job)


def rules_for_test(tmp: Path) -> Path:
    """The shipped rules with BackendWillRejectClientCertificate's ``for`` cut to ``FOR``."""
    rules = yaml.safe_load(RULES.read_text())
    found = [
        rule
        for group in rules["groups"]
        for rule in group["rules"]
        if rule.get("alert") == "BackendWillRejectClientCertificate"
    ]
    assert [r["for"] for r in found] == ["15m"]
    found[0]["for"] = FOR
    path = tmp / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    jsse.require_java()
    tmp = tmp_path_factory.mktemp("probe")
    pki = Pki(tmp)
    accepted = pki.ca_file(pki.accepted_ca, name="accepted.pem")
    other = pki.ca_file(pki.other_ca, name="other.pem")
    soon = pki.server_files("soon", ips=("127.0.0.1",), days=(-1, 5))
    client_cert, _ = pki.client(pki.accepted_ca, "mp")
    srv = (pki.server_cert, pki.server_key)
    nginx_ok = NginxSite(*srv, client_ca=accepted)
    # The backend's CA list was rotated: it no longer holds the issuer of our certificate.
    nginx_rotated = NginxSite(*srv, client_ca=other)
    one_way = NginxSite(*srv, verify="off")
    keystore = jsse.write_pkcs12(
        tmp / "jsse-server.p12",
        Path(pki.server_key).read_bytes(),
        [Path(pki.server_cert).read_bytes()],
    )
    with contextlib.ExitStack() as stack:
        stack.enter_context(Nginx(tmp / "nginx", [nginx_ok, nginx_rotated, one_way]))
        s_ok = stack.enter_context(OpenSSLBackend(pki, "any", ca_file=accepted))
        s_soon = stack.enter_context(OpenSSLBackend(pki, "any", ca_file=accepted, cert=soon))
        jsse_ok = stack.enter_context(
            jsse.JsseServer(keystore, truststore=accepted, client_auth="need")
        )
        standin = stack.enter_context(Standin(password=PASSWORD))
        backends = {
            b.name: b
            for b in (
                Backend("nginx-ok", nginx_ok.target, True, 1, "accepted"),
                Backend("s-server-ok", s_ok.target, True, 1, "accepted"),
                Backend("jsse-ok", jsse_ok.target, True, 1, "accepted"),
                Backend("nginx-rotated", nginx_rotated.target, True, 0, "ca_mismatch"),
                Backend("s-server-expiring", s_soon.target, True, 1, "accepted"),
                Backend("one-way", one_way.target, False, 1, "no_client_certificate_requested"),
            )
        }
        env = standin.env("acme", "prod")
        env.keystores["mp-ks"] = {"mp-client": chain_info(Path(client_cert).read_bytes())}
        for b in backends.values():
            host, port = b.target.rsplit(":", 1)
            env.target_servers[b.name] = target_server(
                b.name, host, int(port), key_store="mp-ks", key_alias="mp-client",
                client_auth=b.client_auth,
            )  # fmt: skip
        password = tmp / "password"
        password.write_text(PASSWORD + "\n")
        log = tmp / "system.log"
        log.write_text("")
        config = tmp / "config.yml"
        config.write_text(
            yaml.safe_dump(
                {
                    "timezone": "UTC",
                    "logs": [{"path": str(log)}],
                    "state_file": str(tmp / "state.json"),
                    "diagnosis": {
                        "enabled": True,
                        "management_url": standin.url,
                        "username": "admin",
                        "password_file": str(password),
                    },
                }
            )
        )
        targets = tmp / "targets.json"
        done = subprocess.run(
            [
                *EXPORTER,
                "targets",
                "--config",
                str(config),
                "--env",
                "acme/prod",
                "-o",
                str(targets),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        with ExporterProcess("--config", str(config)) as exporter:
            address = f"127.0.0.1:{exporter.port}"
            prom_config = prometheus_config(address, "127.0.0.1:9", rules=rules_for_test(tmp))
            del prom_config["alerting"]
            prom_config["scrape_configs"].append(probe_job(address, targets))
            (tmp / "prometheus.yml").write_text(yaml.safe_dump(prom_config))
            (tmp / "prometheus-data").mkdir()
            port = free_port()
            prometheus = Server(
                "prometheus",
                [
                    binary("prometheus"),
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'prometheus-data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                tmp,
            )
            try:
                url = f"http://127.0.0.1:{port}"
                poll(lambda: Stack._ready(prometheus, url), 30, "prometheus", prometheus.log)
                yield Scenario(backends, targets, url, exporter, pki)
            finally:
                prometheus.stop()


def test_targets_lists_every_tls_target_server(scenario: Scenario) -> None:
    """`targets` wrote one group per TargetServer, with its key alias when it uses client
    authentication."""
    groups = json.loads(scenario.targets_file.read_text())
    found = {g["labels"]["target_server"]: (g["targets"], g["labels"]["key_alias"]) for g in groups}
    assert found == {
        b.name: ([b.target], "mp-client" if b.client_auth else "")
        for b in scenario.backends.values()
    }


def test_prometheus_probes_every_target_through_the_shipped_job(scenario: Scenario) -> None:
    """Each target is scraped with its own labels (instance and target: the backend; org, env,
    key alias), an accepted pair gives success 1 and the rotated CA list ca_mismatch."""

    def results() -> Optional[dict[str, tuple[int, str]]]:
        success = {
            r["metric"]["target_server"]: int(float(r["value"][1]))
            for r in scenario.query('apigee_tls_probe_success{job="apigee-tls-probe"}')
        }
        causes = {
            r["metric"]["target_server"]: r["metric"]["cause"]
            for r in scenario.query('apigee_tls_probe_cause{job="apigee-tls-probe"} == 1')
        }
        if set(success) != set(scenario.backends) or set(causes) != set(scenario.backends):
            return None
        return {name: (success[name], causes[name]) for name in success}

    found = poll(results, 60, "every target probed")
    assert found == {b.name: (b.success, b.cause) for b in scenario.backends.values()}
    for r in scenario.query('apigee_tls_probe_success{job="apigee-tls-probe"}'):
        backend = scenario.backends[r["metric"]["target_server"]]
        assert r["metric"]["instance"] == r["metric"]["target"] == backend.target
        assert (r["metric"]["org"], r["metric"]["env"]) == ("acme", "prod")


def test_a_rotated_ca_list_fires_before_any_failure_is_logged(scenario: Scenario) -> None:
    """BackendWillRejectClientCertificate fires for the backend whose CA list lost our issuer, and
    for no other, while the exporter has logged no failure at all."""
    rotated = scenario.backends["nginx-rotated"]

    def fired() -> Optional[list[dict[str, str]]]:
        return scenario.firing("BackendWillRejectClientCertificate") or None

    alerts = poll(fired, 60, "BackendWillRejectClientCertificate to fire")
    assert [(a["target"], a["key_alias"], a["cause"]) for a in alerts] == [
        (rotated.target, "mp-client", "ca_mismatch")
    ]
    assert scenario.query("apigee_tls_handshake_failures_total") == []


def test_a_backend_certificate_expiring_in_5_days_fires(scenario: Scenario) -> None:
    """BackendCertificateExpiresSoon fires for the backend whose certificate expires in 5 days."""
    expiring = scenario.backends["s-server-expiring"]

    def fired() -> Optional[list[dict[str, str]]]:
        return scenario.firing("BackendCertificateExpiresSoon") or None

    alerts = poll(fired, 60, "BackendCertificateExpiresSoon to fire")
    assert [a["target"] for a in alerts] == [expiring.target]


def test_the_dashboard_shows_the_predictions(scenario: Scenario) -> None:
    """Every panel of the dashboard's predicted failures row returns data (All selected) once the
    prediction alerts fire, and the row reads the probe's success, cause and expiry."""
    panels = dashboard_rows()[PREDICTED_ROW]
    exprs = [t["expr"] for p in panels for t in p["targets"]]
    for metric in (
        "apigee_tls_probe_success",
        "apigee_tls_probe_cause",
        "apigee_tls_probe_server_certificate_expiry_timestamp_seconds",
        "BackendWillRejectClientCertificate",
    ):
        assert any(metric in e for e in exprs), metric
    poll(lambda: scenario.firing("BackendWillRejectClientCertificate"), 60, "the prediction")
    for expr in exprs:
        query = expr.replace("$org", ".*").replace("$env", ".*")
        assert "$" not in query, query
        poll(lambda q=query: scenario.query(q), 20, f"data for {query}")


class CountingBackend(PythonBackend):
    """A Python TLS server that counts the connections it accepted."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.accepted = 0
        super().__init__(*args, **kwargs)

    def _answer(self, raw: socket.socket) -> None:
        self.accepted += 1
        super()._answer(raw)


def test_a_scrape_storm_opens_one_connection_to_the_backend(scenario: Scenario) -> None:
    """50 concurrent /probe requests for one target, over HTTP to the daemon: the backend accepts
    one connection, every request gets the same answer."""
    trust = scenario.pki.ca_file(scenario.pki.accepted_ca, name="storm.pem")
    with CountingBackend(scenario.pki, "1.3", trust=trust, ca_names=trust) as backend:
        query = urllib.parse.urlencode(
            {"target": backend.target, "org": "acme", "env": "prod", "key_alias": "mp-client"}
        )
        url = f"http://127.0.0.1:{scenario.exporter.port}/probe?{query}"

        def scrape(_: int) -> bytes:
            request = urllib.request.Request(
                url, headers={"X-Prometheus-Scrape-Timeout-Seconds": "10"}
            )
            with urllib.request.urlopen(request, timeout=15) as response:
                return bytes(response.read())

        with ThreadPoolExecutor(50) as pool:
            answers = list(pool.map(scrape, range(50)))
        assert backend.accepted == 1
        assert len(set(answers)) == 1
        values = {name: value for name, _, value in samples(answers[0].decode())}
        assert values["apigee_tls_probe_success"] == 1


def unauthorized_answer(url: str) -> urllib.error.HTTPError:
    """The HTTP error a GET without credentials gets."""
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(url, timeout=5).close()
    return caught.value


def test_the_demo_shows_a_cause_and_a_prediction_within_a_minute(tmp_path: Path) -> None:
    """`demo` starts its backend and the management API stand-in (labelled as one): within a
    minute the first page carries its cause on apigee_tls_alert_firing and the status page, and
    /probe predicts the rejection of that alias and the acceptance of the other."""
    proc = subprocess.Popen(
        [*EXPORTER, "demo", "--listen", "127.0.0.1:0", "--rate", "300", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True).start()

    def printed(prefix: str) -> Optional[str]:
        return next((line for line in list(lines) if line.startswith(prefix)), None)

    def firing_cause() -> Optional[str]:
        text = urllib.request.urlopen(metrics, timeout=5).read().decode()
        causes = [
            labels["cause"]
            for name, labels, _ in samples(text)
            if name == "apigee_tls_alert_firing" and labels.get("cause")
        ]
        return causes[0] if causes else None

    try:
        metrics = poll(lambda: printed("metrics:"), 30, "the metrics URL").split()[1]
        base = metrics.rsplit("/", 1)[0]
        mgmt = poll(lambda: printed("mgmt API:"), 10, "the stand-in's URL")
        assert "STAND-IN" in mgmt and "not Apigee" in mgmt
        probes = [line.split()[-1] for line in lines if "/probe?" in line]
        assert len(probes) == 2, lines
        err = unauthorized_answer(mgmt.split()[2].rstrip(",") + "/organizations/acme")
        assert err.code == 401 and err.headers["X-Stand-In"] == "apigee-tls-exporter (not Apigee)"
        assert poll(firing_cause, 60, "the page's cause") == "ca_mismatch"
        with urllib.request.urlopen(base + "/", timeout=5) as response:
            assert "ca_mismatch" in response.read().decode()
        found = []
        for url in probes:
            with urllib.request.urlopen(url, timeout=15) as response:
                text = response.read().decode()
            success = [v for n, _, v in samples(text) if n == "apigee_tls_probe_success"]
            causes = [lb["cause"] for n, lb, _ in samples(text) if n == "apigee_tls_probe_cause"]
            found.append((success, causes))
        assert found == [([0], ["ca_mismatch"]), ([1], ["accepted"])]
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
