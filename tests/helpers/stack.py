"""A real Prometheus and Alertmanager on 127.0.0.1 for the tests, with a webhook receiver.

``Stack`` starts both once (``conftest.py`` makes it a session fixture) from the shipped configs:
``config/prometheus/prometheus.yml`` with its scrape and evaluation intervals cut to 1 s and its
target moved to the port the tests' exporter will listen on, the shipped rules, and
``config/alertmanager/apigee-tls.example.yml`` with its receivers pointed at a webhook server run
here and its group timings cut to a second. Each server gets a temporary data directory and a free
port; its output goes to a file that a failing wait prints.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

import yaml

from helpers.support import free_port, stop_process, wait_for

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "config" / "prometheus" / "apigee-tls.rules.yml"
RULES_TEST = REPO / "config" / "prometheus" / "apigee-tls.rules.test.yml"
PROMETHEUS_YML = REPO / "config" / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = REPO / "config" / "alertmanager" / "apigee-tls.example.yml"
DASHBOARD = REPO / "config" / "grafana" / "apigee-tls-dashboard.json"


PREDICTED_ROW = "Predicted failures (/probe)"  # its panels need the apigee-tls-probe job's data


def dashboard_rows() -> dict[str, list[dict[str, Any]]]:
    """The dashboard's panels (rows left out) under the title of the row above them."""
    rows: dict[str, list[dict[str, Any]]] = {}
    title = ""
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        if panel["type"] == "row":
            title = panel["title"]
            rows[title] = []
        else:
            rows.setdefault(title, []).append(panel)
    return rows


def binary(*names: str) -> str:
    """The first of ``names`` found on PATH or in /usr/bin; fails the test (never skips)."""
    for name in names:
        found = shutil.which(name) or (
            f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None
        )
        if found:
            return found
    raise AssertionError(
        f"{' or '.join(names)} not installed: .ci/run installs the Debian packages "
        "prometheus and prometheus-alertmanager"
    )


def poll(
    check: Callable[[], Optional[T]],
    timeout: float,
    what: str,
    log: Optional[Path] = None,
    extra: Optional[Callable[[], str]] = None,
) -> T:
    """``support.wait_for`` at a 0.1 s interval; a failure shows the server's log tail and
    ``extra()``."""

    def detail() -> str:
        output = f"\n--- {log} ---\n{log.read_text()[-4000:]}" if log and log.exists() else ""
        if extra is not None:
            output += f"\n--- state ---\n{extra()}"
        return output

    return wait_for(check, timeout, what, interval=0.1, detail=detail)


def get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read().decode())


class Webhook:
    """An Alertmanager webhook receiver: keeps every notification (path, JSON payload)."""

    def __init__(self) -> None:
        self.notifications: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with webhook._lock:
                    webhook.notifications.append((self.path, json.loads(body)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def alerts(self, path: Optional[str] = None) -> list[dict[str, Any]]:
        """Every alert of every notification so far (to ``path`` if given), in arrival order."""
        with self._lock:
            items = list(self.notifications)
        return [a for p, n in items if path is None or p == path for a in n.get("alerts", [])]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class Server:
    """A subprocess with its output in a file."""

    def __init__(self, name: str, args: list[str], workdir: Path) -> None:
        self.name = name
        self.log = workdir / f"{name}.out"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=workdir)

    def check_running(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(
                f"{self.name} exited with {self.proc.returncode}:\n{self.log.read_text()[-4000:]}"
            )

    def stop(self) -> None:
        stop_process(self.proc)


def prometheus_config(exporter: str, alertmanager: str, rules: Path = RULES) -> dict[str, Any]:
    """The shipped prometheus.yml for a test: 1 s intervals, the given exporter and Alertmanager."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["rule_files"] = [str(rules)]
    config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "apigee-tls"]
    assert jobs, "prometheus.yml has no apigee-tls job"
    jobs[0]["static_configs"] = [{"targets": [exporter]}]
    jobs[0]["scrape_interval"] = "1s"
    config["scrape_configs"] = jobs
    return config


def alertmanager_config(webhook: str) -> dict[str, Any]:
    """The shipped Alertmanager example, delivering to ``webhook`` within about a second."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_YML.read_text())
    config["global"]["resolve_timeout"] = "1m"
    routes = [config["route"], *config["route"].get("routes", [])]
    for route in routes:
        for key, value in (
            ("group_wait", "1s"),
            ("group_interval", "1s"),
            ("repeat_interval", "1h"),
        ):
            if key in route or route is config["route"]:
                route[key] = value
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            path = urllib.parse.urlsplit(hook["url"]).path
            hook["url"] = webhook + path
    return config


class Stack:
    """Prometheus scraping ``exporter_port`` on 127.0.0.1, alerting to Alertmanager, which
    notifies ``webhook``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.exporter_port = free_port()
        self.prometheus_port = free_port()
        self.alertmanager_port = free_port()
        self.webhook = Webhook()
        self.servers: list[Server] = []

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    @property
    def alertmanager_url(self) -> str:
        return f"http://127.0.0.1:{self.alertmanager_port}"

    def start(self) -> Stack:
        am_yml = self.workdir / "alertmanager.yml"
        am_yml.write_text(yaml.safe_dump(alertmanager_config(self.webhook.url)))
        (self.workdir / "alertmanager-data").mkdir()
        alertmanager = Server(
            "alertmanager",
            [
                binary("prometheus-alertmanager", "alertmanager"),
                f"--config.file={am_yml}",
                f"--storage.path={self.workdir / 'alertmanager-data'}",
                f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                "--cluster.listen-address=",
            ],
            self.workdir,
        )
        self.servers.append(alertmanager)
        prom_yml = self.workdir / "prometheus.yml"
        prom_yml.write_text(
            yaml.safe_dump(
                prometheus_config(
                    f"127.0.0.1:{self.exporter_port}", f"127.0.0.1:{self.alertmanager_port}"
                )
            )
        )
        (self.workdir / "prometheus-data").mkdir()
        prometheus = Server(
            "prometheus",
            [
                binary("prometheus"),
                f"--config.file={prom_yml}",
                f"--storage.tsdb.path={self.workdir / 'prometheus-data'}",
                f"--web.listen-address=127.0.0.1:{self.prometheus_port}",
                "--rules.alert.resend-delay=1s",
            ],
            self.workdir,
        )
        self.servers.append(prometheus)
        for server, url in (
            (alertmanager, self.alertmanager_url),
            (prometheus, self.prometheus_url),
        ):
            poll(
                lambda s=server, u=url: self._ready(s, u),
                30,
                f"{server.name} to be ready",
                server.log,
            )
        return self

    @staticmethod
    def _ready(server: Server, url: str) -> bool:
        server.check_running()
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query; the result vector (fails on a PromQL error)."""
        url = f"{self.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            body = get_json(url)
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{expr!r}: {err.read().decode()}") from None
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def label_values(self, label: str, match: str) -> list[str]:
        query = urllib.parse.urlencode({"match[]": match})
        body = get_json(f"{self.prometheus_url}/api/v1/label/{label}/values?{query}")
        values: list[str] = body["data"]
        return values

    def check_running(self) -> None:
        for server in self.servers:
            server.check_running()

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.webhook.close()
