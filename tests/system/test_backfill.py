"""``scan --format backfill`` (``daemon/scan/backfill.py``): OpenMetrics that the real
``promtool tsdb create-blocks-from openmetrics`` turns into blocks, and a real Prometheus started
on them answers with the scan's counts."""

from __future__ import annotations

import collections
import json
import random
import subprocess
import sys
import urllib.error
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from apigee_tls_exporter import __version__
from apigee_tls_exporter.cli import main
from apigee_tls_exporter.scan.backfill import DENSE_MINUTES, sample_minutes, series_samples
from helpers.records import context, failed, ssl_info, text, traffic
from helpers.stack import Server, binary, get_json, poll
from helpers.support import free_port

UTC = timezone.utc
START = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
TARGETS = ["pay.example.com/10.0.0.1:443", "ledger.example.com/10.0.0.2:8443", "10.0.0.3:443"]
ALERTS = ["bad_certificate", "handshake_failure", "unknown_ca"]
Key = tuple[str, str, str]  # target, reason, key_alias


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S,") + f"{moment.microsecond // 1000:03d}"


def history() -> tuple[list[str], list[tuple[datetime, Key]]]:
    """Five hours of log: failures at random times and on the edges of the hour 10:00-11:00
    (10:00:00,000 and 10:59:59,999 in it, 09:59:59,999 and 11:00:00,000 not), one series that
    starts within that hour, and a quiet stretch of an hour and a half; the truth."""
    rng = random.Random(42)
    moments = sorted(START + timedelta(seconds=rng.uniform(0, 5 * 3600)) for _ in range(400))
    moments = [
        m
        for m in moments
        if not (START.replace(hour=11, minute=10) < m < START.replace(hour=12, minute=40))
    ]
    edges = [(9, 59, 59, 999), (10, 0, 0, 0), (10, 59, 59, 999), (11, 0, 0, 0)]
    moments += [
        START.replace(hour=h, minute=m, second=s, microsecond=ms * 1000) for h, m, s, ms in edges
    ]
    late = START.replace(hour=10, minute=37, second=12)  # the first of its series
    lines: list[str] = []
    truth: list[tuple[datetime, Key]] = []
    for i, moment in enumerate(sorted([*moments, late])):
        if moment == late:
            target, alert, alias = "late.example.com/10.0.0.9:443", "certificate_required", "new"
        else:
            target, alert = rng.choice(TARGETS), rng.choice(ALERTS)
            alias = rng.choice(["client-a", "client-b"])
        ctx = context(f"rrt-{i}")
        when = stamp(moment)
        lines += [
            failed(message=f"Received fatal alert: {alert}", remote=target, ctx=ctx, stamp=when),
            traffic(stamp=when),
            ssl_info(alias=alias, ctx=ctx, stamp=when),
        ]
        host = target.split("/")[0] if "/" in target else target.rsplit(":", 1)[0]
        truth.append((moment, (f"{host}:{target.rsplit(':', 1)[1]}", alert, alias)))
    return lines, truth


def run_scan(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["scan", "--timezone", "UTC", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def backfilled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The history scanned with --format backfill, made into blocks by promtool, and a
    Prometheus on 127.0.0.1 started on them."""
    workdir = tmp_path_factory.mktemp("backfill")
    lines, truth = history()
    log = workdir / "system.log"
    log.write_text(text(lines))
    openmetrics = workdir / "failures.om"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "apigee_tls_exporter", "scan", "--timezone", "UTC"),
            *("--format", "backfill", "--label", "job=apigee-tls", "--label", "instance=mp1:9847"),
            str(log),
        ],
        capture_output=True,
        check=True,
    )
    openmetrics.write_bytes(done.stdout)
    data = workdir / "data"
    made = subprocess.run(
        [
            binary("promtool"),
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(openmetrics),
            str(data),
        ],
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stdout + made.stderr
    config = workdir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1m\nscrape_configs: []\n")
    port = free_port()
    server = Server(
        "prometheus",
        [
            binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={data}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=100y",
        ],
        workdir,
    )
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        server.check_running()
        return bool(get_json(f"{url}/api/v1/status/tsdb")["status"] == "success")

    try:
        poll(ready, 60, "prometheus to be ready", server.log)
        yield {"url": url, "log": log, "truth": truth, "openmetrics": openmetrics, "made": made}
    finally:
        server.stop()


def values_at(url: str, expr: str, at: datetime) -> list[tuple[dict[str, str], float]]:
    """An instant query at ``at``: (labels, value) of each result."""
    args = urllib.parse.urlencode({"query": expr, "time": f"{at.timestamp():.3f}"})
    try:
        body = get_json(f"{url}/api/v1/query?{args}")
    except urllib.error.HTTPError as err:
        raise AssertionError(f"{expr!r}: {err.read().decode()}") from None
    return [(item["metric"], float(item["value"][1])) for item in body["data"]["result"]]


def query(url: str, expr: str, at: datetime) -> dict[Key, float]:
    """An instant query at ``at``: value by (target, reason, key_alias)."""
    return {(m["target"], m["reason"], m["key_alias"]): v for m, v in values_at(url, expr, at)}


def counted(out: str) -> dict[Key, float]:
    return {
        (f["target"], f["reason"], f["key_alias"]): float(f["count"])
        for f in json.loads(out)["failures"]
    }


@pytest.mark.slow
def test_last_value_of_every_backfilled_series_is_the_scan_count(
    backfilled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """After promtool and Prometheus, ``last_over_time`` of every failure series at the end of
    the log equals what ``scan`` counts for it; the series carry the --label labels."""
    scanned = counted(run_scan(["--format", "json", str(backfilled["log"])], capsys))
    end = START + timedelta(hours=8)
    got = query(
        backfilled["url"],
        'last_over_time(apigee_tls_handshake_failures_total{job="apigee-tls",'
        'instance="mp1:9847"}[1d])',
        end,
    )
    assert sum(scanned.values()) == len(backfilled["truth"])  # precondition: scan is right
    assert scanned == got


@pytest.mark.slow
def test_increase_over_an_hour_in_the_middle_is_that_hours_failures(
    backfilled: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """``increase(...[1h])`` evaluated at 11:00 (the window 10:00-11:00) gives, series by series,
    exactly the failures logged from 10:00:00,000 to 10:59:59,999, with a series that begins
    within the hour counted in full; ``scan --since 10:00 --until 11:00`` says the same."""
    hour = START.replace(hour=10)
    truth: collections.Counter[Key] = collections.Counter(
        key for moment, key in backfilled["truth"] if hour <= moment < hour + timedelta(hours=1)
    )
    got = query(
        backfilled["url"],
        "increase(apigee_tls_handshake_failures_total[1h])",
        hour + timedelta(hours=1),
    )
    window = run_scan(
        [
            "--format",
            "json",
            "--since",
            "2026-11-20T10:00",
            "--until",
            "2026-11-20T11:00",
            str(backfilled["log"]),
        ],
        capsys,
    )
    assert ("late.example.com:443", "certificate_required", "new") in truth  # precondition
    assert {k: float(v) for k, v in truth.items()} == {k: v for k, v in got.items() if v}
    assert {k: float(v) for k, v in truth.items()} == counted(window)


@pytest.mark.slow
def test_rate_over_the_quiet_stretch_is_zero(backfilled: dict[str, Any]) -> None:
    """Between 11:10 and 12:40 nothing failed: ``increase(...[1h])`` at 12:30 is 0 for every
    series that existed then (each is sampled at 11:30 and 12:30), not an extrapolated guess."""
    got = query(
        backfilled["url"],
        "increase(apigee_tls_handshake_failures_total[1h])",
        START.replace(hour=12, minute=30),
    )
    assert got  # precondition: the series are there in the quiet stretch
    assert set(got.values()) == {0.0}


def test_backfill_text_is_openmetrics_ending_in_eof(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The backfill text: a counter family with a timestamp on every sample, a series starting
    at 0 on the minute of its first failure and stepping on the next minute, extra labels first;
    then build_info over the span; ``# EOF`` last."""
    path = tmp_path / "system.log"
    path.write_text(
        text([failed(stamp="2026-11-20 10:00:30,500"), ssl_info(stamp="2026-11-20 10:00:30,501")])
    )
    out = run_scan(["--format", "backfill", "--label", "instance=mp1", str(path)], capsys)
    lines = out.splitlines()
    labels = (
        'instance="mp1",org="acme",env="prod",api="payments-v1",rev="7",'
        'target="backend.example.com:443",reason="bad_certificate",key_alias="backend-client"'
    )
    t0 = int(datetime(2026, 11, 20, 10, 0, tzinfo=UTC).timestamp())
    assert lines[:4] == [
        lines[0],
        "# TYPE apigee_tls_handshake_failures counter",
        f"apigee_tls_handshake_failures_total{{{labels}}} 0 {t0}",
        f"apigee_tls_handshake_failures_total{{{labels}}} 1 {t0 + 60}",
    ]
    assert lines[0].startswith("# HELP apigee_tls_handshake_failures ")
    info = lines.index("# TYPE apigee_tls_build_info gauge")
    assert lines[info - 2] == f"apigee_tls_handshake_failures_total{{{labels}}} 1 {t0 + 2 * 3600}"
    assert (
        lines[info + 1] == f'apigee_tls_build_info{{instance="mp1",version="{__version__}"}} 1 {t0}'
    )
    assert lines[-1] == "# EOF"


def test_samples_are_dense_around_growth_and_hourly_between() -> None:
    """A series is sampled every minute within an hour of a minute in which it grew, on every
    hour boundary elsewhere up to the end, and counts the failures before each sample."""
    minutes = collections.Counter({600: 2, 601: 1, 900: 4})
    got = dict(series_samples(minutes, 1200))
    expected_minutes = [
        *range(600, 601 + 1 + DENSE_MINUTES + 1),
        720,
        780,
        *range(900 - DENSE_MINUTES, 900 + 1 + DENSE_MINUTES + 1),
        1020,
        1080,
        1140,
        1200,
    ]
    assert sorted(got) == [m * 60 for m in expected_minutes]
    assert list(sample_minutes([600, 601, 900], 1200)) == expected_minutes
    assert (got[600 * 60], got[601 * 60], got[602 * 60], got[900 * 60], got[901 * 60]) == (
        0,
        2,
        3,
        3,
        7,
    )


DASHBOARD = Path(__file__).resolve().parents[2] / "config" / "grafana" / "apigee-tls-dashboard.json"


@pytest.mark.slow
def test_the_shipped_dashboard_shows_the_backfilled_failures(backfilled: dict[str, Any]) -> None:
    """The dashboard's node list (``label_values(apigee_tls_build_info, instance)``) finds the
    backfilled node, and each of its failure panels, with that node and every org and env,
    shows the failures of the hour 10:00-11:00."""
    board = json.loads(DASHBOARD.read_text())
    url, hour = backfilled["url"], START.replace(hour=10)
    args = urllib.parse.urlencode(
        {
            "match[]": "apigee_tls_build_info",
            "start": hour.timestamp(),
            "end": hour.timestamp() + 3600,
        }
    )
    nodes = {s["instance"] for s in get_json(f"{url}/api/v1/series?{args}")["data"]}
    exprs = [
        t["expr"]
        for panel in board["panels"]
        for t in panel.get("targets", [])
        if "apigee_tls_handshake_failures_total" in t.get("expr", "")
    ]
    values = {
        expr: sum(
            v
            for _, v in values_at(
                url,
                expr.replace("$node", "mp1:9847")
                .replace("$org", ".*")
                .replace("$env", ".*")
                .replace("$__rate_interval", "5m")
                .replace("$__range", "1h"),
                hour + timedelta(hours=1),
            )
        )
        for expr in exprs
    }
    assert nodes == {"mp1:9847"}
    assert len(values) >= 3  # precondition: the dashboard has its failure panels
    assert all(v > 0 for v in values.values()), values


def test_until_ends_every_series_at_its_minute(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``--until``, no sample lies past the minute boundary at or after it (the live
    exporter's time), and the last sample of each series still holds its whole count."""
    lines = [
        failed(stamp="2026-11-20 10:00:30,500", ctx=context("m1")),
        failed(stamp="2026-11-20 10:20:10,000", ctx=context("m2")),
        failed(stamp="2026-11-20 10:40:00,000", ctx=context("m3")),
    ]
    path = tmp_path / "system.log"
    path.write_text(text(lines))
    out = run_scan(["--format", "backfill", "--until", "2026-11-20T10:20:30", str(path)], capsys)
    samples = [line.rsplit(" ", 2) for line in out.splitlines() if line.startswith("apigee_tls_h")]
    limit = int(datetime(2026, 11, 20, 10, 21, tzinfo=UTC).timestamp())
    assert max(int(ts) for _, _, ts in samples) == limit
    assert samples[-1][1:] == ["2", str(limit)]
