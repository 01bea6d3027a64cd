"""End to end: ``apigee-tls-exporter run`` follows a real file and serves /metrics over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from pathlib import Path

from apigee_tls_exporter.demo.generator import LogGenerator
from helpers import records
from helpers.support import EXPORTER, ExporterProcess, free_port, samples, wait_for


def failure(n: object) -> str:
    """A bad_certificate failure and its SSLInfo line, message id ``m-<n>``."""
    ctx, thread = records.context(f"m-{n}"), "NIOThread@1"
    return records.text(
        [
            records.failed(
                remote="backend.example/10.20.3.4:443",
                ctx=ctx,
                thread=thread,
                stamp="2026-11-27 10:00:00,000",
            ),
            records.ssl_info(ctx=ctx, thread=thread, stamp="2026-11-27 10:00:00,001"),
        ]
    )


KEY = (
    *("acme", "prod", "payments-v1", "7"),
    *("backend.example:443", "bad_certificate", "backend-client"),
)


def append(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(text)


def test_appended_failures_appear_in_metrics(tmp_path: Path) -> None:
    """Failures appended to the followed file are counted, with their labels, in /metrics."""
    log = tmp_path / "system.log"
    log.write_text("2026-11-27 09:59:59,000  main INFO MESSAGING.RUNTIME - started\n")
    with ExporterProcess("--log", str(log), "--state-file", str(tmp_path / "state.json")) as daemon:
        for n in range(3):
            append(log, failure(n))
        counted = wait_for(lambda: daemon.failures().get(KEY) == 3, what="3 failures")
        assert counted
        # started at the end of the file: only the 3 appended records (2 lines each) were read
        assert daemon.value("apigee_tls_log_lines_total", path=str(log)) == 6
        assert daemon.value("apigee_tls_pairing_pending") == 0
        assert daemon.value("apigee_tls_build_info") == 1
        assert daemon.value("process_resident_memory_bytes") is not None


def test_failure_at_an_impossible_date_neither_stops_run_nor_loses_the_rest(tmp_path: Path) -> None:
    """A failure dated 2017-02-30 (or month 13, hour 24, year 0000) appended with good failures
    in one write is counted as unrecognised; the daemon keeps running and counts the failures
    after it in the same read (issue 11: it exited, and they were lost)."""
    log = tmp_path / "system.log"
    log.write_text("2026-11-27 09:59:59,000  main INFO MESSAGING.RUNTIME - started\n")
    impossible = [
        records.failed(ctx=records.context(f"bad-{n}"), stamp=stamp)
        for n, stamp in enumerate(
            [
                "2017-02-30 05:28:57,813",
                "2017-13-01 05:28:57,813",
                "2017-10-23 24:00:00,000",
                "0000-10-23 05:28:57,813",
            ]
        )
    ]
    with ExporterProcess("--log", str(log), "--state-file", str(tmp_path / "state.json")) as daemon:
        append(log, records.text(impossible) + failure(0) + failure(1))
        counted = wait_for(lambda: daemon.failures().get(KEY) == 2, what="the 2 good failures")
        unrecognised = daemon.value("apigee_tls_unrecognised_lines_total", path=str(log))
        assert (counted, unrecognised) == (True, 4)


def test_starts_at_the_end_of_an_existing_file(tmp_path: Path) -> None:
    """Without --from-beginning, what the file held before the start is not counted."""
    log = tmp_path / "system.log"
    log.write_text(failure("old"))
    with ExporterProcess("--log", str(log), "--state-file", str(tmp_path / "state.json")) as daemon:
        append(log, failure("new"))
        wait_for(lambda: daemon.failures().get(KEY) == 1, what="the new failure")


def test_from_beginning_reads_the_whole_file(tmp_path: Path) -> None:
    """With --from-beginning, a generated log is counted exactly as its truth says."""
    gen = LogGenerator(seed=7)
    log = tmp_path / "system.log"
    log.write_text(gen.text(5000))
    truth = {tuple(k): float(v) for k, v in gen.truth.items()}
    args = ("--log", str(log), "--state-file", str(tmp_path / "s.json"), "--from-beginning")
    with ExporterProcess(*args) as daemon:
        wait_for(lambda: daemon.failures() == truth, what="the generated truth")


def test_waits_for_a_log_that_does_not_exist_yet(tmp_path: Path) -> None:
    """A missing log (and directory) is waited for, then read from its start."""
    log = tmp_path / "later" / "system.log"
    with ExporterProcess("--log", str(log), "--state-file", str(tmp_path / "state.json")) as daemon:
        log.parent.mkdir()
        log.write_text(failure(1))
        wait_for(lambda: daemon.failures().get(KEY) == 1, what="the failure in the new file")


def test_sigterm_and_sigint_exit_cleanly(tmp_path: Path) -> None:
    """SIGTERM and SIGINT stop the daemon within 5 s, exit 0, after writing the checkpoint."""
    log = tmp_path / "system.log"
    log.touch()
    for sig in (signal.SIGTERM, signal.SIGINT):
        state = tmp_path / f"state-{sig.name}.json"
        with ExporterProcess("--log", str(log), "--state-file", str(state)) as daemon:
            code, output = daemon.stop(sig, timeout=5)  # issue 5: exit 0 within 5 s
        assert code == 0, output
        assert state.exists()
        assert "Traceback" not in output


def test_sigterm_during_a_large_backlog_stops_between_reads(tmp_path: Path) -> None:
    """SIGTERM while a large backlog is being read stops between reads, well before the end of
    the file (systemd's TimeoutStopSec is 15 s), with the checkpoint of the last settled read;
    the next start reads the rest, and every failure is counted once."""
    log = tmp_path / "system.log"
    gen = LogGenerator(21, failure_fraction=0.01)
    block = gen.text(20_000).encode()
    with log.open("wb") as f:
        for _ in range(60):  # about 200 MB: seconds of reading, also on a fast machine
            f.write(block)
    state = tmp_path / "state.json"
    args = ("--log", str(log), "--state-file", str(state), "--from-beginning")
    with ExporterProcess(*args) as daemon:
        code, output = daemon.stop(signal.SIGTERM, timeout=5)
    assert code == 0, output
    saved = json.loads(state.read_text())
    follower = saved["logs"][str(log)]["follower"]
    offset = follower["ledger"][follower["open"]]["offset"]
    assert 0 < offset < log.stat().st_size  # stopped in the middle
    with ExporterProcess(*args) as again:
        size = log.stat().st_size
        wait_for(lambda: again.value("apigee_tls_log_offset_bytes") == size, timeout=120)
        lines = again.value("apigee_tls_log_lines_total")
        assert lines == 60 * block.count(b"\n")


def test_bad_config_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """An invalid config stops ``run`` before it starts: a clear message, exit 1, no traceback."""
    config = tmp_path / "bad.yml"
    config.write_text("listen: nowhere\nunknown_key: 1\n")
    result = subprocess.run(
        [*EXPORTER, "run", "--config", str(config)], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 1
    assert "listen" in result.stderr
    assert "unknown_key: unknown key" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_index_page_links_to_metrics(tmp_path: Path) -> None:
    """``/`` is a small page that links to /metrics."""
    log = tmp_path / "system.log"
    log.touch()
    with ExporterProcess("--log", str(log), "--state-file", str(tmp_path / "s.json")) as daemon:
        page = urllib.request.urlopen(f"http://127.0.0.1:{daemon.port}/", timeout=5)
        assert 'href="/metrics"' in page.read().decode()


def test_demo_prints_its_metrics_url_and_counts_failures() -> None:
    """``demo`` (what ``make run`` starts) prints the metrics URL, and failures from its writer
    appear there; SIGTERM stops it and its writer with exit 0."""
    port = free_port()
    proc = subprocess.Popen(
        [*EXPORTER, "demo", "--listen", f"127.0.0.1:{port}", "--rate", "500"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = f"http://127.0.0.1:{port}/metrics"
        lines = [proc.stdout.readline() for _ in range(2)]
        assert f"metrics:   {url}\n" in lines

        def failures() -> float:
            text = urllib.request.urlopen(url, timeout=5).read().decode()
            return sum(
                value
                for name, _, value in samples(text)
                if name == "apigee_tls_handshake_failures_total"
            )

        assert wait_for(lambda: failures() > 0, what="failures from the demo writer")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
