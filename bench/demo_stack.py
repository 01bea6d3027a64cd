"""``make demo-stack``: the demo writer, the daemon, Prometheus and Alertmanager on loopback.

The writer appends MP records whose failures come in bursts (``--burst`` seconds of one incident,
then ``--pause`` seconds of none, four incidents in turn: two pages, two warnings); the daemon's
alert windows are as long as a burst, so each alert fires during its burst and resolves after it.
Prometheus runs the shipped rules (``config/prometheus/apigee-tls.rules.yml``) and Alertmanager the
shipped example (``config/alertmanager/apigee-tls.example.yml``), from copies of the shipped
``prometheus.yml`` and Alertmanager example that differ only in ports, intervals and (so that a
resolved notification comes within a minute, not five) ``group_interval``; the copies are written
into the demo's directory. The example's receivers post to a webhook that this script runs: it
prints each notification, firing and resolved. Everything (copies, data and the servers' logs)
stays in that directory after Ctrl-C, until you remove it.

    python bench/demo_stack.py [--rate LINES_PER_S] [--burst S] [--pause S] [--dir DIR] ...
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, Optional

import yaml
from apigee_tls_exporter.demo.generator import Bursts, DemoWriter, demo_alerts

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_YML = REPO / "config" / "prometheus" / "prometheus.yml"
RULES = REPO / "config" / "prometheus" / "apigee-tls.rules.yml"
ALERTMANAGER_YML = REPO / "config" / "alertmanager" / "apigee-tls.example.yml"
DASHBOARD = REPO / "config" / "grafana" / "apigee-tls-dashboard.json"
PORTS = "9847,9090,9093,9999"  # exporter, Prometheus, Alertmanager, webhook: the shipped ones


def binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin")
        if found:
            return found
    sys.exit(f"demo-stack: {' or '.join(names)} not found (Debian: apt-get install {names[0]})")


def check_free(port: int) -> None:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            sys.exit(f"demo-stack: 127.0.0.1:{port} is in use (choose others with --ports)")


def wait_ready(url: str, proc: subprocess.Popen[bytes], name: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"demo-stack: {name} exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    sys.exit(f"demo-stack: {name} not ready at {url} after 30 s; see {log}")


def wait_scraped(prometheus_url: str, timeout: float) -> None:
    """Until Prometheus has scraped the exporter once (ready is not scraping yet)."""
    query = urllib.parse.urlencode({"query": 'up{job="apigee-tls"} == 1'})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{prometheus_url}/api/v1/query?{query}", timeout=2) as r:
                if json.loads(r.read())["data"]["result"]:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    sys.exit(f"demo-stack: Prometheus did not scrape the exporter within {timeout:g} s")


class Printer(BaseHTTPRequestHandler):
    """Receives Alertmanager webhooks and prints one line per alert."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.send_response(200)
        self.end_headers()
        for alert in body.get("alerts", []):
            print(notification_line(self.path, alert), flush=True)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def notification_line(path: str, alert: dict[str, Any]) -> str:
    labels, notes = alert.get("labels", {}), alert.get("annotations", {})
    receiver = path.rstrip("/").rsplit("/", 1)[-1].upper()
    where = " ".join(
        f"{k}={labels[k]}" for k in ("org", "env", "target", "key_alias", "reason") if k in labels
    )
    stamp = time.strftime("%H:%M:%S")
    line = f"{stamp} [{receiver} {alert.get('status', '?')}] {labels.get('alertname', '?')} {where}"
    if notes.get("cause"):
        line += f" cause={notes['cause']}"
    if alert.get("status") == "firing" and notes.get("runbook_url"):
        line += f"\n    {notes.get('summary', '')}\n    runbook: {notes['runbook_url']}"
    return line


def seconds(duration: str) -> float:
    """A Prometheus duration of one unit (15s, 1m, 500ms) in seconds."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if duration.endswith(unit) and duration[: -len(unit)].isdigit():
            return int(duration[: -len(unit)]) * units[unit]
    sys.exit(f"demo-stack: not a duration: {duration!r} (such as 15s or 1m)")


def prometheus_config(exporter: int, alertmanager: int, interval: str) -> dict[str, Any]:
    """The shipped prometheus.yml with the demo's ports and intervals, and the rules by path."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"]["scrape_interval"] = interval
    config["global"]["evaluation_interval"] = interval
    config["rule_files"] = [str(RULES)]
    config["alerting"]["alertmanagers"][0]["static_configs"] = [
        {"targets": [f"127.0.0.1:{alertmanager}"]}
    ]
    for job in config["scrape_configs"]:
        if job["job_name"] == "apigee-tls":
            job["static_configs"] = [{"targets": [f"127.0.0.1:{exporter}"]}]
    return config


def alertmanager_config(
    webhook: int, group_interval: str, group_wait: Optional[str] = None
) -> dict[str, Any]:
    """The shipped Alertmanager example, posting to the demo's webhook port, with a shorter
    group_interval (the wait before a group's next notification, a resolved one too) and, if
    given, group_wait (before a group's first notification)."""
    config: dict[str, Any] = yaml.safe_load(ALERTMANAGER_YML.read_text())
    for route in [config["route"], *config["route"].get("routes", [])]:
        route["group_interval"] = group_interval
        if group_wait is not None:
            route["group_wait"] = group_wait
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            url = urllib.parse.urlsplit(hook["url"])
            hook["url"] = url._replace(netloc=f"127.0.0.1:{webhook}").geturl()
    return config


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="demo log lines per second")
    parser.add_argument(
        "--burst", type=float, default=60.0, help="seconds of each burst of failures (60)"
    )
    parser.add_argument(
        "--pause", type=float, default=120.0, help="seconds without failures between bursts (120)"
    )
    parser.add_argument(
        "--interval", default=None, help="scrape and evaluation interval (prometheus.yml's)"
    )
    parser.add_argument(
        "--group-interval", default="1m", help="Alertmanager's group_interval (shipped: 5m)"
    )
    parser.add_argument(
        "--group-wait", default=None, help="Alertmanager's group_wait (shipped: 10s for pages)"
    )
    parser.add_argument(
        "--ports", default=PORTS, help=f"exporter,Prometheus,Alertmanager,webhook ({PORTS})"
    )
    parser.add_argument(
        "--dir", help="where everything goes (default: a new directory under /tmp); kept"
    )
    args = parser.parse_args(argv)
    try:
        exporter_port, prometheus_port, alertmanager_port, webhook_port = (
            int(p) for p in args.ports.split(",")
        )
    except ValueError:
        parser.error("--ports: four port numbers separated by commas")
    for port in (exporter_port, prometheus_port, alertmanager_port, webhook_port):
        check_free(port)
    interval = args.interval or yaml.safe_load(PROMETHEUS_YML.read_text())["global"].get(
        "scrape_interval", "15s"
    )
    prometheus = binary("prometheus")
    alertmanager = binary("prometheus-alertmanager", "alertmanager")

    stop = threading.Event()

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    tmp = Path(args.dir or tempfile.mkdtemp(prefix="apigee-tls-demo-stack-")).resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    log_path = tmp / "system.log"
    log_path.touch()
    (tmp / "exporter.yml").write_text(yaml.safe_dump({"alerts": demo_alerts(args.burst)}))
    (tmp / "prometheus.yml").write_text(
        yaml.safe_dump(prometheus_config(exporter_port, alertmanager_port, interval))
    )
    (tmp / "alertmanager.yml").write_text(
        yaml.safe_dump(alertmanager_config(webhook_port, args.group_interval, args.group_wait))
    )
    webhook = ThreadingHTTPServer(("127.0.0.1", webhook_port), Printer)
    threading.Thread(target=webhook.serve_forever, daemon=True).start()
    writer: Optional[DemoWriter] = None
    prometheus_url = f"http://127.0.0.1:{prometheus_port}"
    alertmanager_url = f"http://127.0.0.1:{alertmanager_port}"
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        specs = [
            (
                "exporter",
                [
                    *(sys.executable, "-m", "apigee_tls_exporter", "run"),
                    *("--config", str(tmp / "exporter.yml"), "--log", str(log_path)),
                    *("--listen", f"127.0.0.1:{exporter_port}", "--from-beginning"),
                    *("--state-file", str(tmp / "state.json"), "--log-format", "json"),
                ],
                f"http://127.0.0.1:{exporter_port}/metrics",
            ),
            (
                "alertmanager",
                [
                    alertmanager,
                    f"--config.file={tmp / 'alertmanager.yml'}",
                    f"--storage.path={tmp / 'alertmanager'}",
                    f"--web.listen-address=127.0.0.1:{alertmanager_port}",
                    f"--web.external-url={alertmanager_url}/",
                    "--cluster.listen-address=",
                ],
                f"{alertmanager_url}/-/ready",
            ),
            (
                "prometheus",
                [
                    prometheus,
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'prometheus'}",
                    f"--web.listen-address=127.0.0.1:{prometheus_port}",
                    f"--web.external-url={prometheus_url}/",
                ],
                f"{prometheus_url}/-/ready",
            ),
        ]
        for name, command, ready in specs:
            out = tmp / f"{name}.log"
            with out.open("wb") as f:
                proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=tmp)
            procs.append((name, proc))
            wait_ready(ready, proc, name, out)
        # The first burst starts once Prometheus scrapes the exporter: its alert is not missed.
        wait_scraped(prometheus_url, 4 * seconds(interval) + 30)
        bursts = Bursts(args.burst, args.pause, start=time.time())
        writer = DemoWriter(log_path, rate=args.rate, failure_fraction=0.02, bursts=bursts)
        writer.start()
        period = args.burst + args.pause
        print(
            "\n".join(
                [
                    "apigee-tls-exporter demo stack (Ctrl-C stops everything):",
                    f"  demo log          {log_path} ({args.rate:g} lines/s; a {args.burst:g} s"
                    f" burst of failures every {period:g} s)",
                    f"  metrics           http://127.0.0.1:{exporter_port}/metrics",
                    f"  Prometheus        {prometheus_url}/alerts",
                    f"  Alertmanager      {alertmanager_url}/#/alerts",
                    f"  Alertmanager API  {alertmanager_url}/api/v2/alerts",
                    f"  webhook           http://127.0.0.1:{webhook_port}/ (notifications below)",
                    f"  dashboard         import {DASHBOARD} into Grafana",
                    f"  files             {tmp} (configs, data, {{exporter,prometheus,"
                    "alertmanager}.log); kept after exit: rm -rf it when done",
                    f"Each alert fires during its burst and resolves {args.burst:g} s after it; "
                    f"Alertmanager sends the resolved notification within {args.group_interval}.",
                ]
            ),
            flush=True,
        )
        while not stop.wait(1.0):
            for name, proc in procs:
                if proc.poll() is not None:
                    print(f"demo-stack: {name} exited with {proc.returncode}", file=sys.stderr)
                    return 1
        return 0
    finally:
        if writer is not None:
            writer.stop()
        for _, proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        webhook.shutdown()
        webhook.server_close()
        print(f"demo-stack: files kept in {tmp}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
