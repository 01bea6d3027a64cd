"""The demo log generator: deterministic, realistic, and right about its own truth.

The truth is checked against a count made here, independently of the generator and of the daemon's
parser, from the generated text alone.
"""

from __future__ import annotations

import collections
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Optional

import pytest
from apigee_tls_exporter.demo.generator import (
    DEMO_INCIDENTS,
    Bursts,
    DemoWriter,
    LogGenerator,
    TruthKey,
    write_log,
)
from helpers.clock import FakeClock
from helpers.support import EXPORTER, free_port, samples, wait_for

REPO = Path(__file__).resolve().parents[3]

STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ( ?)(.*)$")
CONTEXT = re.compile(r"^org:(\S+) env:(\S+) api:(\S+) rev:(\S+) messageid:(\S+) (.*)$")
FAILED = re.compile(
    r"HTTPClient\$Context\.handshakeFailed\(\) : SSLClientChannel\[C:\S+ Remote host:(\S+)\]"
)
TIMEOUT = re.compile(
    r"HTTPClient\$Context\.handshakeTimeout\(\) : SSLClientChannel\[Connected: Remote:(\S+) "
)
SSLINFO = re.compile(
    r"handshake(?:Failed|Timeout)\(\) : SSLInfo: KeyStore:\S+ KeyAlias:(\S+) TrustStore:\S+$"
)
CONTINUATION = re.compile(r"^(\t(at |\.\.\. )|Caused by: |[a-z]+(\.[a-z]+)+\.[A-Z][\w$]*(: |$))")
ALL_REASONS = {
    "bad_certificate",
    "certificate_required",
    "handshake_failure",
    "unknown_ca",
    "pkix_path_building_failed",
    "hostname_mismatch",
    "remote_closed",
    "no_appropriate_protocol",
    "handshake_timeout",
    "certificate_unknown",
    "certificate_expired",
    "protocol_version",
    "unrecognized_name",
    "other",
}


def target_of(address: str) -> str:
    """host:port from an InetSocketAddress rendering, by the rule of issue 2."""
    host, _, rest = address.partition("/")
    if not rest:
        return address
    port = rest.rsplit(":", 1)[1]
    return f"{host}:{port}" if host else rest


def reason_of(message: str) -> str:
    """The reason label of a ``handshake failed, message:`` text, by the rule of issue 2."""
    alert = re.match(r"Received fatal alert: (\S+)", message)
    if alert:
        return alert.group(1) if re.fullmatch(r"[a-z_]{1,40}", alert.group(1)) else "other"
    for needle, reason in (
        ("PKIX path building failed", "pkix_path_building_failed"),
        ("No subject alternative names", "hostname_mismatch"),
        ("No name matching", "hostname_mismatch"),
        ("Remote host closed connection during handshake", "remote_closed"),
        ("No appropriate protocol", "no_appropriate_protocol"),
    ):
        if needle in message:
            return reason
    return "other"


class Record(collections.namedtuple("Record", "index context thread rest")):
    """A timestamped line, split: its context labels (or None), its thread, and the rest."""


def records(lines: list[str]) -> list[Record]:
    """The timestamped lines of a log, each with its index, checking every other line continues."""
    out = []
    for index, line in enumerate(lines):
        m = STAMP.match(line)
        if m is None:
            assert CONTINUATION.match(line), line
            continue
        body = m.group(3)
        ctx = CONTEXT.match(body)
        context = ctx.groups()[:5] if ctx else None
        if ctx:
            body = ctx.group(6)
            assert m.group(2) == "", line  # two spaces only without a context block
        thread, rest = body.split(" ", 1)
        out.append(Record(index, context, thread, rest))
    return out


def count_failures(lines: list[str]) -> collections.Counter[TruthKey]:
    """Failures by label set, paired with the next SSLInfo of the same thread and message id."""
    counted: collections.Counter[TruthKey] = collections.Counter()
    open_: dict[tuple[str, str], tuple[str, ...]] = {}  # (thread, message id) -> labels sans alias
    for rec in records(lines):
        org, env, api, rev, mid = rec.context or ("", "", "", "", "")
        key = (rec.thread, mid)
        failed = FAILED.search(rec.rest)
        timeout = TIMEOUT.search(rec.rest)
        info = SSLINFO.search(rec.rest)
        if failed or timeout:
            if key in open_:
                counted[TruthKey(*open_.pop(key), "")] += 1
            if failed:
                reason = reason_of(rec.rest.split("handshake failed, message: ", 1)[1])
                address = failed.group(1)
            else:
                assert timeout is not None
                reason, address = "handshake_timeout", timeout.group(1)
            open_[key] = (org, env, api, rev, target_of(address), reason)
        elif info and key in open_:
            alias = info.group(1)
            counted[TruthKey(*open_.pop(key), "" if alias == "null" else alias)] += 1
    for labels in open_.values():
        counted[TruthKey(*labels, "")] += 1
    return counted


def test_same_seed_same_text_other_seed_other_text() -> None:
    """The generator is deterministic for a seed, and the seed matters."""
    assert LogGenerator(7).text(5_000) == LogGenerator(7).text(5_000)
    assert LogGenerator(7).text(5_000) != LogGenerator(8).text(5_000)


def test_truth_matches_an_independent_count_of_the_text() -> None:
    """Counting failures in the text with the rules of issue 2 gives the generator's truth."""
    gen = LogGenerator(1, failure_fraction=0.05)
    lines = gen.take(60_000)
    assert count_failures(lines) == gen.truth
    assert gen.open_failures == 0


def test_failure_records_are_about_one_percent_by_default() -> None:
    """By default about 1% of the lines are handshakeFailed/handshakeTimeout records."""
    gen = LogGenerator(2)
    lines = gen.take(100_000)
    failures = sum(1 for r in records(lines) if FAILED.search(r.rest) or TIMEOUT.search(r.rest))
    assert failures == gen.n_failures == sum(gen.truth.values())
    assert 0.008 < failures / len(lines) < 0.012


def test_failure_text_in_stack_traces_is_not_a_failure_record() -> None:
    """Alert text repeats in onException records' exception lines, which carry no timestamp."""
    gen = LogGenerator(3, failure_fraction=0.05)
    lines = gen.take(20_000)
    repeated = [ln for ln in lines if ln.startswith("javax.net.ssl.") and "fatal alert" in ln]
    on_exception = [ln for ln in lines if "RequestWriteListener.onException()" in ln]
    assert len(repeated) > 100
    assert len(on_exception) > gen.n_failures * 0.8  # timeouts have none, connect errors add some
    assert sum(1 for ln in lines if "handshake failed, message:" in ln) < gen.n_failures


def test_every_case_of_the_format_appears() -> None:
    """Every reason, address form, context shape, thread kind, stack trace and alias case occurs."""
    gen = LogGenerator(4, failure_fraction=0.05)
    lines = gen.take(100_000)
    recs = records(lines)
    assert {key.reason for key in gen.truth} == ALL_REASONS
    addresses = [m.group(1) for r in recs if (m := FAILED.search(r.rest) or TIMEOUT.search(r.rest))]
    assert any(re.fullmatch(r"[a-z][\w.-]+/[\d.]+:\d+", a) for a in addresses)
    assert any(re.fullmatch(r"/[\d.]+:\d+", a) for a in addresses)
    assert any(re.fullmatch(r"[\d.]+:\d+", a) for a in addresses)
    assert any("No subject alternative names matching IP address" in r.rest for r in recs)
    assert any(key.org == "" and key.reason for key in gen.truth)  # a failure without context
    assert any(re.match(r"^\S+ \S+  \S", ln) for ln in lines)  # two spaces, no context block
    assert any(re.match(r"^\S+ \S+ [A-Z]", ln) and "org:" not in ln for ln in lines)
    assert any(ln.startswith("\tat ") for ln in lines)
    assert any(ln.startswith("Caused by: ") for ln in lines)
    assert any("KeyAlias:null" in r.rest for r in recs)
    assert any(key.key_alias == "" for key in gen.truth)
    assert any(key.key_alias == "backend-client" for key in gen.truth)
    threads = {re.sub(r"\d+", "N", r.thread) for r in recs}
    assert {"NIOThread@N", "Apigee-Main-N", "Apigee-Timer-N", "pool-N-thread-N"} <= threads
    assert {"DEBUG", "INFO", "WARN", "ERROR"} <= {r.rest.split(" ", 1)[0] for r in recs}


def test_retries_carry_their_own_ssl_info() -> None:
    """A message id retried to a second TargetServer has two failures, each with its own SSLInfo."""
    gen = LogGenerator(5, failure_fraction=0.05)
    recs = records(gen.take(50_000))
    by_id: dict[str, list[str]] = collections.defaultdict(list)
    for r in recs:
        if r.context and (FAILED.search(r.rest) or SSLINFO.search(r.rest)):
            by_id[r.context[4]].append("F" if FAILED.search(r.rest) else "S")
    assert gen.n_retries > 10
    assert sum(1 for seq in by_id.values() if seq == ["F", "S", "F", "S"]) > 5
    assert any(seq == ["F", "F", "S"] or seq == ["F", "S", "F"] for seq in by_id.values())


def test_other_threads_interleave_but_ssl_info_stays_close() -> None:
    """Other threads' lines come between a failure and its SSLInfo, but only a few records."""
    gen = LogGenerator(6, failure_fraction=0.05)
    recs = records(gen.take(50_000))
    gaps = []
    for i, r in enumerate(recs):
        if FAILED.search(r.rest):
            for j in range(i + 1, min(i + 40, len(recs))):
                nxt = recs[j]
                if nxt.thread == r.thread:
                    if SSLINFO.search(nxt.rest) and nxt.context == r.context:
                        gaps.append(j - i - 1)
                    break
    assert max(gaps) > 0
    assert max(gaps) <= 12
    assert sum(1 for g in gaps if g > 0) > len(gaps) * 0.1


def test_failure_record_is_one_complete_failure() -> None:
    """failure_record gives one failure of one thread with its SSLInfo, and counts it."""
    gen = LogGenerator(12, missing_ssl_info=0.0, timeout_ssl_info=1.0, retry=0.0)
    lines = gen.take(1_000)
    before = sum(gen.truth.values())
    for _ in range(50):
        record = gen.failure_record()
        recs = records(record)
        lines += record
        assert len({r.thread for r in recs}) == 1
        assert sum(1 for r in recs if FAILED.search(r.rest) or TIMEOUT.search(r.rest)) == 1
        assert sum(1 for r in recs if SSLINFO.search(r.rest)) == 1
    assert sum(gen.truth.values()) == before + 50
    assert count_failures(lines) == gen.truth


def test_timestamps_never_go_back(tmp_path: Path) -> None:
    """Timestamps only move forward, also across the repeated blocks of write_log."""
    result = write_log(tmp_path / "s.log", 3_000_000, seed=9, block_bytes=1_000_000)
    lines = (tmp_path / "s.log").read_text().splitlines()
    stamps = [m.group(1) for ln in lines if (m := STAMP.match(ln))]
    assert stamps == sorted(stamps)
    assert stamps[0][:10] != stamps[-1][:10]
    assert result.distinct_blocks == 3


def test_write_log_truth_is_the_block_truth_times_the_copies(tmp_path: Path) -> None:
    """write_log's truth, line count and size describe the file it wrote."""
    path = tmp_path / "s.log"
    result = write_log(path, 2_500_000, seed=10, failure_fraction=0.02, block_bytes=1_000_000)
    lines = path.read_text().splitlines()
    assert result.n_bytes == path.stat().st_size >= 2_500_000
    assert result.n_lines == len(lines)
    assert result.truth == count_failures(lines)
    assert result.n_failures == sum(result.truth.values())


def test_write_log_without_blocks_generates_every_line(tmp_path: Path) -> None:
    """With block_bytes=None the whole file is generated text and its truth is exact."""
    path = tmp_path / "s.log"
    result = write_log(path, 1_000_000, seed=11, block_bytes=None)
    lines = path.read_text().splitlines()
    assert result.distinct_blocks == 1
    assert result.truth == count_failures(lines)


def test_demo_writer_writes_at_its_rate_and_ends_between_failures(tmp_path: Path) -> None:
    """write_due appends the lines owed at the rate, whole failures only, and knows their truth."""
    clock = FakeClock(1_790_000_000.0)
    path = tmp_path / "system.log"
    writer = DemoWriter(path, rate=100.0, seed=1, failure_fraction=0.1, clock=clock)
    assert writer.write_due() == 0
    for _ in range(50):
        clock.sleep(1.0)
        writer.write_due()
    lines = path.read_text().splitlines()
    assert len(lines) == writer.lines_written
    assert 5_000 <= len(lines) <= 5_200
    assert count_failures(lines) == writer.truth
    assert writer.failures_written == sum(writer.truth.values()) > 100
    first = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(clock.now - 49))
    assert lines[0][:19] >= first[:19]


def test_demo_writer_thread_starts_and_stops(tmp_path: Path) -> None:
    """The background thread appends until stop(); the file then matches the truth."""
    clock = FakeClock(1_790_000_000.0)
    slept = threading.Event()

    def fake_sleep(seconds: float) -> None:
        clock.sleep(seconds)
        slept.set()

    path = tmp_path / "system.log"
    writer = DemoWriter(path, rate=1_000.0, seed=2, clock=clock, sleep=fake_sleep)
    writer.start()
    deadline = time.monotonic() + 10
    while writer.lines_written < 3_000 and time.monotonic() < deadline:
        slept.wait(0.05)
    writer.stop()
    assert slept.is_set()
    lines = path.read_text().splitlines()
    assert len(lines) == writer.lines_written >= 3_000
    assert count_failures(lines) == writer.truth


def test_demo_writer_follows_a_renamed_file(tmp_path: Path) -> None:
    """Each write opens the path again, so after a rename the writer starts a new file."""
    clock = FakeClock(1_790_000_000.0)
    path = tmp_path / "system.log"
    writer = DemoWriter(path, rate=50.0, clock=clock)
    clock.sleep(2)
    writer.write_due()
    path.rename(tmp_path / "system.log.1")
    clock.sleep(2)
    writer.write_due()
    both = (tmp_path / "system.log.1").read_text() + path.read_text()
    assert len(both.splitlines()) == writer.lines_written
    assert count_failures(both.splitlines()) == writer.truth


# --- bursts: failures that start and stop, so that alerts fire and resolve ----------------------


def test_bursts_alternate_incidents_and_pauses() -> None:
    """A burst of the first incident from the start, a pause, then the next incident."""
    bursts = Bursts(10, 20, start=100.0)
    assert bursts.incident_at(99.0) is None
    assert bursts.incident_at(100.0) == DEMO_INCIDENTS[0]
    assert bursts.incident_at(109.9) == DEMO_INCIDENTS[0]
    assert bursts.incident_at(110.0) is None
    assert bursts.incident_at(130.0) == DEMO_INCIDENTS[1]
    period = 30 * len(DEMO_INCIDENTS)
    assert bursts.incident_at(100.0 + period) == DEMO_INCIDENTS[0]


def test_demo_writer_bursts_are_one_incident_each_and_stop(tmp_path: Path) -> None:
    """With bursts, failures are written only during a burst, each burst's with the labels of
    its incident (one org, env, target, key alias and reason: one alert), and the truth still
    matches the text."""
    clock = FakeClock(1_790_000_000.0)
    start = clock.now
    path = tmp_path / "system.log"
    writer = DemoWriter(path, rate=200.0, seed=4, clock=clock, bursts=Bursts(10, 20, start=start))
    for _ in range(55):  # two bursts and their pauses, not the third burst at 60 s
        clock.sleep(1.0)
        writer.write_due()
    lines = path.read_text().splitlines()
    assert count_failures(lines) == writer.truth
    stamps = [
        time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
        for line in lines
        if FAILED.search(line) or TIMEOUT.search(line)
    ]
    assert len(stamps) == sum(writer.truth.values()) >= 20
    for stamp in stamps:
        into = (stamp - int(start)) % 30
        assert into <= 10, f"a failure {into} s into a period: outside its burst"
    assert {int((stamp - int(start)) // 30) for stamp in stamps} == {0, 1}
    alerts = {(k.org, k.env, k.target, k.reason, k.key_alias) for k in writer.truth}
    expected = set()
    for incident in DEMO_INCIDENTS[:2]:
        backend = incident.backend
        target = f"{backend.host or backend.ip}:{backend.port}"
        alias = backend.key_alias or ""
        expected.add((incident.proxy.org, incident.proxy.env, target, incident.reason, alias))
    assert alerts == expected


class Output:
    """Lines a subprocess prints, collected by a thread so that a test can wait for one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def find(self, pattern: str) -> Optional[re.Match[str]]:
        for line in list(self.lines):
            match = re.search(pattern, line)
            if match:
                return match
        return None

    def text(self) -> str:
        return "\n".join(self.lines)


def transitions(url: str, state: str) -> float:
    """apigee_tls_alert_transitions_total of the failure alerts in ``state``."""
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(
        value
        for name, labels, value in samples(text)
        if name == "apigee_tls_alert_transitions_total"
        and labels.get("alertname") in ("client_certificate_rejected", "handshake_failures")
        and labels.get("state") == state
    )


def stopped(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.mark.slow
def test_demo_prints_the_url_first_and_its_alert_fires_and_resolves(tmp_path: Path) -> None:
    """`demo` prints the metrics URL (of the port it really listens on) as its first line, once
    it listens; a burst fires an alert and it resolves after the burst; the demo's files
    are still there after it stops, and it says where."""
    workdir = tmp_path / "demo"
    proc = subprocess.Popen(
        [
            *(*EXPORTER, "demo", "--listen", "127.0.0.1:0", "--rate", "300"),
            *("--burst", "3", "--pause", "10", "--dir", str(workdir)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = Output(proc)
    try:
        wait_for(lambda: out.lines or None, 30, "the demo's first line", detail=out.text)
        first = out.lines[0]
        match = re.fullmatch(r"metrics: +(http://127\.0\.0\.1:(\d+)/metrics)", first)
        assert match, out.text()
        url = match[1]
        assert int(match[2]) > 0
        wait_for(lambda: transitions(url, "firing") >= 1, 60, "an alert to fire", detail=out.text)
        wait_for(lambda: transitions(url, "resolved") >= 1, 60, "it to resolve", detail=out.text)
    finally:
        code = stopped(proc)
    assert code == 0
    assert (workdir / "system.log").stat().st_size > 0
    wait_for(lambda: out.find(f"kept in {re.escape(str(workdir))}"), 10, "where the files are")


def alertmanager_pages(url: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts?active=true", timeout=5) as response:
        alerts: list[dict[str, Any]] = json.loads(response.read().decode())
    return [
        a for a in alerts if a["labels"].get("alertname") == "ApigeeTLSClientCertificateRejected"
    ]


@pytest.mark.slow
def test_demo_stack_page_fires_and_resolves_in_alertmanager_and_the_webhook(
    tmp_path: Path,
) -> None:
    """`make demo-stack` (bench/demo_stack.py, on free ports, 1 s intervals and group timings): the
    first burst's
    page reaches Alertmanager's API (its generatorURL on the external URL) and the webhook's
    output as firing, then as resolved; every file stays in the directory it names."""
    ports = [free_port() for _ in range(4)]
    workdir = tmp_path / "stack"
    proc = subprocess.Popen(
        [
            *(sys.executable, str(REPO / "bench" / "demo_stack.py")),
            *("--ports", ",".join(map(str, ports)), "--interval", "1s"),
            *("--group-interval", "1s", "--group-wait", "1s"),
            *("--rate", "300", "--burst", "5", "--pause", "120", "--dir", str(workdir)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out = Output(proc)
    page = r"\[PAGE (firing|resolved)\] ApigeeTLSClientCertificateRejected org=acme env=prod "
    page += r"target=payments\.internal:443 key_alias=backend-client reason=bad_certificate"
    alertmanager = f"http://127.0.0.1:{ports[2]}"
    try:
        wait_for(lambda: out.find(r"Alertmanager API +http"), 60, "the stack", detail=out.text)
        wait_for(lambda: out.find(page.replace("(firing|resolved)", "firing")), 60, "the page")
        firing = wait_for(lambda: alertmanager_pages(alertmanager), 30, "the alert in Alertmanager")
        assert firing[0]["generatorURL"].startswith(f"http://127.0.0.1:{ports[1]}/")
        wait_for(
            lambda: out.find(page.replace("(firing|resolved)", "resolved")),
            60,
            "the resolved notification",
            detail=out.text,
        )
        assert alertmanager_pages(alertmanager) == []
    finally:
        code = stopped(proc)
    assert code == 0, out.text()
    for name in ("system.log", "prometheus.log", "alertmanager.log", "exporter.log"):
        assert (workdir / name).stat().st_size > 0, name
    wait_for(lambda: out.find(f"files kept in {re.escape(str(workdir))}"), 10, "the files' place")


@pytest.mark.slow
def test_make_run_prints_the_url_first(tmp_path: Path) -> None:
    """`make run` (with its venv in place) prints nothing before the demo's metrics URL: no
    make command lines, no build warnings, no start-up log lines."""
    proc = subprocess.Popen(
        [
            *("make", "--no-print-directory", "-C", str(REPO), "run", f"VENV={sys.prefix}"),
            *("STAMP=", f"DEMO_ARGS=--listen 127.0.0.1:0 --dir {tmp_path / 'demo'}"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # SIGINT to make and the demo, as Ctrl-C would
    )
    out = Output(proc)
    try:
        wait_for(lambda: out.lines or None, 30, "the first line", detail=out.text)
        assert re.fullmatch(r"metrics: +http://127\.0\.0\.1:\d+/metrics", out.lines[0]), out.text()
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)


def test_demo_prints_no_url_when_it_cannot_listen(tmp_path: Path) -> None:
    """On an address in use, `demo` prints no metrics URL: one error line and exit 2."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run(
            [*EXPORTER, "demo", "--listen", f"127.0.0.1:{port}", "--dir", str(tmp_path / "d")],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2
    assert "metrics:" not in done.stdout
    assert done.stderr.splitlines() == [
        f"apigee-tls-exporter: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
