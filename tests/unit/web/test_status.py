"""The status page: its data from a real daemon, its HTML (escaped, self-contained), served
behind the same auth as /metrics, and as a real browser (headless Chromium) shows it."""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path
from typing import Callable, Optional

import bcrypt
import pytest
from apigee_tls_exporter.config import validate
from apigee_tls_exporter.records.events import Failure
from apigee_tls_exporter.run.app import Daemon, status_of
from apigee_tls_exporter.web.serve import MetricsServer
from apigee_tls_exporter.web.status import (
    AlertStatus,
    DiagnosisStatus,
    LogStatus,
    PredictionStatus,
    Recent,
    Status,
    render,
)
from apigee_tls_exporter.web.webconfig import WebConfig
from helpers import records
from helpers.components import missing
from prometheus_client import CollectorRegistry

Start = Callable[..., MetricsServer]
NOW = 1_800_000_000.0
HOSTILE = '<script>alert("x")</script>'


class Tables(HTMLParser):
    """The text of every table cell, by table id: {id: [[cell, ...], ...]} (header row first);
    also every tag seen."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.tags: list[str] = []
        self._table: Optional[str] = None
        self._cell: Optional[list[str]] = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, Optional[str]]]) -> None:
        self.tags.append(tag)
        if tag == "table":
            self._table = dict(attrs).get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def sample() -> Status:
    """A status with one of everything, and hostile text in fields a log line controls."""
    return Status(
        now=NOW,
        logs=(
            LogStatus(
                "/var/log/edge/system.log", 5000, 4000, 2.0, 42, {"rename": 1}, {"EACCES": 2}
            ),
        ),
        failures=(
            Failure("acme", "prod", "pay-v1", "7", HOSTILE, "bad_certificate", "mtls", NOW - 5),
        ),
        failures_total=12,
        alerts=(
            AlertStatus(
                "client_certificate_rejected",
                "page",
                "acme",
                "prod",
                "ledger:443",
                "mtls",
                "bad_certificate",
                "expired_client_certificate",
            ),
        ),
        diagnoses=(
            DiagnosisStatus(
                "acme", "prod", "ledger:443", "mtls", "expired_client_certificate", "Renew it.", NOW
            ),
        ),
        diagnosis_enabled=True,
        predictions=(
            PredictionStatus("acme", "prod", "partner:443", "mtls", "ca_mismatch", False, NOW - 7),
            PredictionStatus("acme", "prod", "ledger:443", "mtls", "accepted", True, NOW - 9),
        ),
        state_file="/var/lib/apigee-tls-exporter/state.json",
        checkpoint_age=3.0,
        reload_ok=False,
        reload_error="config /etc/x.yml: logs: required",
        started=NOW - 3600,
    )


def test_page_shows_every_part_of_the_status() -> None:
    """Each followed log (path, size, position, lag, last read, rotations, errors), the last
    failures, the alerts firing with their cause, the last diagnoses, the predictions of the
    probes answered in the last minute, the checkpoint's age, the
    refused reload with its error and the version."""
    page = render(sample(), phase="ready")
    tables = Tables(page).tables

    assert tables["logs"][1] == [
        "/var/log/edge/system.log",
        "5,000",
        "4,000",
        "1,000",
        "2 s ago",
        "42",
        "rename: 1",
        "EACCES: 2",
    ]
    assert tables["failures"][1][1:] == [
        "acme",
        "prod",
        "pay-v1",
        HOSTILE,
        "bad_certificate",
        "mtls",
    ]
    assert tables["alerts"][1][-1] == "expired_client_certificate"
    assert tables["diagnoses"][1][-2:] == ["expired_client_certificate", "Renew it."]
    assert tables["predictions"][1:] == [
        ["7 s ago", "acme", "prod", "partner:443", "mtls", "ca_mismatch"],
        ["9 s ago", "acme", "prod", "ledger:443", "mtls", "accepted"],
    ]
    assert '<span class="bad">ca_mismatch</span>' in page
    assert "written 3 s ago" in page
    assert "last reload refused" in page and "config /etc/x.yml: logs: required" in page
    assert "Version " in page and "Last failures seen (12 counted)" in page


def test_page_escapes_everything_and_fetches_nothing() -> None:
    """Text from the log (here a target holding a script tag) is escaped; the page has no
    script and refers to nothing outside itself (only its own paths)."""
    page = render(sample())
    parsed = Tables(page)

    assert HOSTILE not in page
    assert "&lt;script&gt;" in page
    assert "script" not in parsed.tags and "img" not in parsed.tags and "link" not in parsed.tags
    assert "http://" not in page and "https://" not in page and "src=" not in page


def test_status_of_reads_the_running_daemon(tmp_path: Path) -> None:
    """run.app's status_of on a real daemon that read three failures: its log's size and
    position, the failures newest first with their labels, the alert they fired."""
    log = tmp_path / "system.log"
    lines = []
    for i in range(3):
        ctx = records.context(f"rrt-{i}")
        stamp = f"2026-11-27 10:00:0{i},100"
        lines += [
            records.failed(remote="ledger.internal/10.20.3.4:443", ctx=ctx, stamp=stamp),
            records.ssl_info(alias="ledger-mtls", ctx=ctx, stamp=stamp),
            *records.on_exception(ctx=ctx, stamp=stamp),
        ]
    log.write_text(records.text(lines))
    config = validate(
        {
            "logs": [{"path": str(log)}],
            "from_beginning": True,
            "timezone": "UTC",
            "state_file": str(tmp_path / "state.json"),
        }
    )
    daemon = Daemon(config, CollectorRegistry())
    try:
        daemon.step()
        status = status_of(
            daemon,
            reload_ok=True,
            reload_time=NOW,
            reload_error=None,
            started=NOW,
        )
    finally:
        daemon.close()

    size = log.stat().st_size
    [entry] = status.logs
    assert (entry.path, entry.size, entry.offset, entry.lag) == (str(log), size, size, 0)
    assert entry.last_read_age is not None and entry.lines == len(lines)
    assert [(f.target, f.key_alias, f.api) for f in status.failures] == [
        ("ledger.internal:443", "ledger-mtls", "payments-v1")
    ] * 3
    assert [f.timestamp for f in status.failures] == sorted(
        (f.timestamp for f in status.failures), reverse=True
    )
    assert [(a.name, a.target) for a in status.alerts] == [
        ("client_certificate_rejected", "ledger.internal:443")
    ]


def test_recent_is_bounded_and_newest_first() -> None:
    """Recent keeps the last N, newest first; an item added again moves to the front."""
    recent: Recent[int] = Recent(3)
    for item in (1, 2, 3, 4, 2):
        recent.add(item)

    assert recent.items() == [2, 4, 3]


def test_status_page_is_behind_the_same_auth_as_metrics(start_server: Start) -> None:
    """With basic auth, / is 401 without credentials and the page with them, served with a CSP
    that allows nothing but its inline style."""
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(rounds=4)).decode()
    server = start_server(
        CollectorRegistry(), web_config=WebConfig(basic_auth_users={"u": hashed}), status=sample
    )

    def get(authorization: Optional[str]) -> tuple[int, dict[str, str], bytes]:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            connection.request(
                "GET", "/", headers={"Authorization": authorization} if authorization else {}
            )
            response = connection.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            connection.close()

    denied = get(None)
    status, headers, body = get("Basic " + base64.b64encode(b"u:pw").decode())

    assert denied[0] == 401 and b"system.log" not in denied[2]
    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert headers["content-security-policy"] == "default-src 'none'; style-src 'unsafe-inline'"
    assert b"/var/log/edge/system.log" in body


# ---------------------------------------------------------------------------------------------
# In a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with a throw-away profile (no sandbox when running as root)."""
    if CHROMIUM is None:
        missing("chromium", "apt-get install --no-install-recommends chromium")
    command = [
        CHROMIUM,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


def png_size_and_colours(path: Path) -> tuple[tuple[int, int], int]:
    """(width, height) from the PNG header, and how many distinct byte values its pixel data
    holds: a blank page has a handful, a page of text hundreds."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    pixels = bytearray()
    offset = 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        if kind == b"IDAT":
            pixels += data[offset + 8 : offset + 8 + length]
        offset += 12 + length
    return (width, height), len(set(zlib.decompress(bytes(pixels))))


@pytest.mark.slow
def test_chromium_shows_the_page(start_server: Start, tmp_path: Path) -> None:
    """Headless Chromium loads the page from the server: the DOM it builds holds the log path,
    the alert and its cause, the hostile target as text (no script element made of it); the
    screenshot is a page of the asked size with content on it."""
    server = start_server(CollectorRegistry(), status=sample)
    url = f"http://127.0.0.1:{server.port}/"

    dom = chromium(tmp_path, "--dump-dom", url).stdout
    shot = tmp_path / "status.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1000", url)

    tables = Tables(dom).tables
    assert tables["logs"][1][0] == "/var/log/edge/system.log"
    assert tables["alerts"][1][0] == "client_certificate_rejected"
    assert tables["failures"][1][4] == HOSTILE  # shown as text...
    assert "script" not in Tables(dom).tags  # ...not run
    size, colours = png_size_and_colours(shot)
    assert size == (1280, 1000)
    assert colours > 50
