"""``make demo-stack``: the demo writer, the daemon, Prometheus and Alertmanager on loopback.

Everything runs with the shipped configs: ``config/prometheus/prometheus.yml`` (which scrapes
127.0.0.1:9847 and alerts to 127.0.0.1:9093) with ``apigee-tls.rules.yml``, and
``config/alertmanager/apigee-tls.example.yml``, whose receivers post to 127.0.0.1:9999: this script
listens there and prints each notification, so a person can watch a page fire and resolve. Data
lives in a temporary directory removed on exit (Ctrl-C).

    python bench/demo_stack.py [--rate LINES_PER_S] [--failure-fraction F]
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
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, Optional

from apigee_tls_exporter.demo import DemoWriter

REPO = Path(__file__).resolve().parent.parent
PROMETHEUS_YML = REPO / "config" / "prometheus" / "prometheus.yml"
ALERTMANAGER_YML = REPO / "config" / "alertmanager" / "apigee-tls.example.yml"
DASHBOARD = REPO / "config" / "grafana" / "apigee-tls-dashboard.json"
EXPORTER_PORT, PROMETHEUS_PORT, ALERTMANAGER_PORT, WEBHOOK_PORT = 9847, 9090, 9093, 9999


def binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin")
        if found:
            return found
    sys.exit(f"demo-stack: {' or '.join(names)} not found (Debian: apt-get install {names[0]})")


def check_free(port: int) -> None:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            sys.exit(f"demo-stack: 127.0.0.1:{port} is in use; the shipped configs need it free")


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
    line = f"[{receiver} {alert.get('status', '?')}] {labels.get('alertname', '?')} {where}"
    if notes.get("cause"):
        line += f" cause={notes['cause']}"
    if notes.get("runbook_url"):
        line += f"\n    {notes.get('summary', '')}\n    runbook: {notes['runbook_url']}"
    return line


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=50.0, help="demo log lines per second")
    parser.add_argument(
        "--failure-fraction", type=float, default=0.02, help="share of lines that are failures"
    )
    args = parser.parse_args(argv)
    for port in (EXPORTER_PORT, PROMETHEUS_PORT, ALERTMANAGER_PORT, WEBHOOK_PORT):
        check_free(port)
    prometheus = binary("prometheus")
    alertmanager = binary("prometheus-alertmanager", "alertmanager")

    stop = threading.Event()

    def on_signal(signum: int, frame: Optional[FrameType]) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    with tempfile.TemporaryDirectory(prefix="apigee-tls-demo-stack-") as tmp_name:
        tmp = Path(tmp_name)
        log_path = tmp / "system.log"
        log_path.touch()
        webhook = ThreadingHTTPServer(("127.0.0.1", WEBHOOK_PORT), Printer)
        threading.Thread(target=webhook.serve_forever, daemon=True).start()
        writer = DemoWriter(log_path, rate=args.rate, failure_fraction=args.failure_fraction)
        writer.start()
        procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        try:
            specs = [
                (
                    "exporter",
                    [
                        sys.executable,
                        "-m",
                        "apigee_tls_exporter",
                        "run",
                        "--log",
                        str(log_path),
                        "--listen",
                        f"127.0.0.1:{EXPORTER_PORT}",
                        "--state-file",
                        str(tmp / "state.json"),
                        "--from-beginning",
                        "--log-format",
                        "json",
                    ],
                    f"http://127.0.0.1:{EXPORTER_PORT}/metrics",
                ),
                (
                    "alertmanager",
                    [
                        alertmanager,
                        f"--config.file={ALERTMANAGER_YML}",
                        f"--storage.path={tmp / 'alertmanager'}",
                        f"--web.listen-address=127.0.0.1:{ALERTMANAGER_PORT}",
                        "--cluster.listen-address=",
                    ],
                    f"http://127.0.0.1:{ALERTMANAGER_PORT}/-/ready",
                ),
                (
                    "prometheus",
                    [
                        prometheus,
                        f"--config.file={PROMETHEUS_YML}",
                        f"--storage.tsdb.path={tmp / 'prometheus'}",
                        f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}",
                    ],
                    f"http://127.0.0.1:{PROMETHEUS_PORT}/-/ready",
                ),
            ]
            for name, command, ready in specs:
                out = tmp / f"{name}.log"
                with out.open("wb") as f:
                    proc = subprocess.Popen(command, stdout=f, stderr=subprocess.STDOUT, cwd=tmp)
                procs.append((name, proc))
                wait_ready(ready, proc, name, out)
            print(
                "\n".join(
                    [
                        "apigee-tls-exporter demo stack (Ctrl-C stops everything):",
                        f"  demo log      {log_path} ({args.rate:g} lines/s)",
                        f"  metrics       http://127.0.0.1:{EXPORTER_PORT}/metrics",
                        f"  Prometheus    http://127.0.0.1:{PROMETHEUS_PORT}/alerts",
                        f"  Alertmanager  http://127.0.0.1:{ALERTMANAGER_PORT}/#/alerts",
                        f"  webhook       http://127.0.0.1:{WEBHOOK_PORT}/ (notifications below)",
                        f"  dashboard     import {DASHBOARD} into Grafana",
                        f"  server logs   {tmp}/{{exporter,prometheus,alertmanager}}.log",
                        "The first page arrives within about a minute.",
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


if __name__ == "__main__":
    sys.exit(main())
