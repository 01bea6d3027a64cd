"""Chaos: real logrotate, a writer cutting lines anywhere, and ``kill -9``: every failure once.

A writer appends a generated MP log with known truth at about 5,000 lines/s in chunks cut at
random byte positions, while the real logrotate (run by hand with its own state file) rotates it
every few MB: ``create`` + ``delaycompress`` and ``copytruncate`` in turn, and once ``compress``
without ``delaycompress``, each mode with its own numbering (``start 1``, ``start 100``,
``start 200``) so that no mode overwrites another's rotated files. Two losses are logrotate's own
and kept out: the writer is held still while logrotate copies and truncates, and during the
``compress`` rotation until it has reopened the path. The daemon runs as a subprocess
and is killed with SIGKILL at two random moments and during three rotations (between the rename
and the writer's reopen; while the compressor of the ``compress`` rotation runs; while logrotate
copies and truncates), and started again each time. When the writer is done, ``/metrics`` must
equal the truth, series by series, and the lines and bytes read the lines and bytes written;
after a clean stop and a start it still must.

The seed is printed; ``CHAOS_SEED=<n>`` replays a run's choices (the timing still varies).
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Callable, Optional

import pytest
from chaos_writer import ChaosWriter
from prometheus_client.parser import text_string_to_metric_families

LOGROTATE = "/usr/sbin/logrotate"
EXPORTER = str(Path(sys.executable).with_name("apigee-tls-exporter"))
FAILURES = "apigee_tls_handshake_failures_total"
LABELS = ("org", "env", "api", "rev", "target", "reason", "key_alias")
LINES = "apigee_tls_log_lines_total"
BYTES = "apigee_tls_log_bytes_read_total"
HEALTH = (LINES, BYTES)
RATE = 5000.0  # lines a second
TOTAL_LINES = 225_000  # 45 s of writing, about 38 MB
MB = 1 << 20

MODES = {
    "create": "create\n  compress\n  delaycompress\n  start 1",
    "copytruncate": "copytruncate\n  start 100",
    "compress": "create\n  compress\n  start 200",
}

Series = dict[tuple[str, ...], float]


def poll_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    """Call ``check`` every 50 ms until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        pause.wait(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class DaemonProcess:
    """``apigee-tls-exporter run`` as a subprocess, started again on a new port after a kill."""

    def __init__(self, log: Path, state: Path, output: Path) -> None:
        self.log = log
        self.state = state
        self.output: IO[bytes] = open(output, "ab")  # noqa: SIM115 - closed in close()
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.port = 0
        self.kills = 0
        self.health: dict[str, float] = {}  # the HEALTH samples of the last scrape

    def start(self) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                EXPORTER,
                "run",
                "--log",
                str(self.log),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--state-file",
                str(self.state),
                "--from-beginning",
                "--log-format",
                "json",
            ],
            stdout=self.output,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        assert self.proc is not None and self.proc.poll() is None, "the daemon died by itself"
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1

    def stop(self) -> int:
        """SIGTERM; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=20)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.output.close()

    def scrape(self) -> Optional[Series]:
        """The failure series on /metrics (zero-valued ones left out); None when not serving."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"the daemon exited with {self.proc.returncode}")
        try:
            url = f"http://127.0.0.1:{self.port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        series: Series = {}
        self.health = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == FAILURES and sample.value:
                    series[tuple(sample.labels[k] for k in LABELS)] = sample.value
                elif sample.name in HEALTH:
                    self.health[sample.name] = sample.value
        return series

    def wait_ready(self) -> None:
        poll_until("the daemon to serve /metrics", lambda: self.scrape() is not None, 30)


def logrotate_configs(tmp: Path, log: Path) -> dict[str, Path]:
    configs = {}
    for mode, directives in MODES.items():
        conf = tmp / f"logrotate-{mode}.conf"
        conf.write_text(f"{log} {{\n  rotate 50\n  missingok\n  nomail\n  {directives}\n}}\n")
        configs[mode] = conf
    return configs


@pytest.mark.slow
def test_chaos_every_failure_counted_once_across_logrotate_and_kill9(tmp_path: Path) -> None:
    """With rotations of every mode, cut lines and SIGKILLs, /metrics equals the truth exactly."""
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1 << 31))
    print(f"chaos seed: {seed} (replay with CHAOS_SEED={seed})")
    rng = random.Random(seed)
    began = time.monotonic()

    logdir = tmp_path / "log"
    logdir.mkdir(mode=0o755)
    log = logdir / "system.log"
    state = tmp_path / "state" / "state.json"
    configs = logrotate_configs(tmp_path, log)
    rotate_state = tmp_path / "logrotate.status"

    # The rotations: create and copytruncate in turn, one of the create ones compressing at once.
    # Kills: during one create rotation (between the rename and the writer's reopen), during the
    # compress rotation (while its compressor runs), during one copytruncate (while logrotate
    # copies), and at two random moments.
    plan = [("create", "copytruncate")[i % 2] for i in range(40)]
    plan[rng.choice([2, 4, 6])] = "compress"
    kill_rename = rng.choice([i for i in range(8) if plan[i] == "create"])
    kill_copy = rng.choice([i for i in range(1, 8) if plan[i] == "copytruncate"])
    total_bytes = TOTAL_LINES * 170
    kill_at = sorted(rng.uniform(0.1, 0.9) * total_bytes for _ in range(2))

    writer = ChaosWriter(str(log), seed=seed, total_lines=TOTAL_LINES, rate=RATE)
    daemon = DaemonProcess(log, state, tmp_path / "daemon.log")
    rotations: list[str] = []
    try:
        writer.start()
        daemon.start()
        # A kill before the first checkpoint would start afresh: there would be nothing to resume.
        poll_until("the first checkpoint", state.exists, 30)

        def rotate(mode: str, index: int) -> None:
            command = [LOGROTATE, "-f", "-s", str(rotate_state), str(configs[mode])]
            if mode == "copytruncate":
                with writer.paused():  # logrotate's own race: lines written while it copies
                    proc = subprocess.Popen(command, stderr=subprocess.PIPE)
                    if index == kill_copy:
                        daemon.kill()
                    _, err = proc.communicate(timeout=60)
                if index == kill_copy:
                    daemon.start()
            elif mode == "compress":
                # Without delaycompress the renamed file is compressed and removed at once, so
                # what a writer adds to it before reopening is gone from the disk (a daemon that
                # holds the file open still reads it; one that was down cannot). Real writers
                # reopen in postrotate, before the compression: the writer is held still until
                # it has reopened. The daemon is killed and started while the compressor runs.
                with writer.paused():
                    proc = subprocess.Popen(command, stderr=subprocess.PIPE)
                    daemon.kill()
                    daemon.start()
                    _, err = proc.communicate(timeout=60)
                    writer.reopen()
            else:
                proc = subprocess.Popen(command, stderr=subprocess.PIPE)
                _, err = proc.communicate(timeout=60)
                if index == kill_rename:  # renamed, created, the writer not reopened yet
                    daemon.kill()
                    daemon.start()
                    daemon.wait_ready()
                writer.reopen()
            assert proc.returncode == 0, err.decode()
            rotations.append(mode)

        next_rotation = rng.uniform(2, 3.5) * MB
        while not writer.done:
            writer.wait_progress(1.0)
            assert writer.error is None, writer.error
            if kill_at and writer.bytes_written >= kill_at[0]:
                kill_at.pop(0)
                daemon.kill()
                daemon.start()
            if log.exists() and log.stat().st_size >= next_rotation and not writer.done:
                rotate(plan[len(rotations)], len(rotations))
                next_rotation = rng.uniform(2, 3.5) * MB
        writer.stop()
        assert writer.error is None, writer.error
        writing = time.monotonic() - began
        truth: Series = {tuple(k): float(v) for k, v in writer.truth.items()}

        seen: list[Optional[Series]] = [None]

        def matches() -> bool:
            seen[0] = daemon.scrape()
            return seen[0] == truth

        try:
            poll_until("/metrics to equal the truth", matches, 60)
        except pytest.fail.Exception:
            got = seen[0] or {}
            diff = {
                k: (truth.get(k, 0.0), got.get(k, 0.0))
                for k in set(truth) | set(got)
                if truth.get(k, 0.0) != got.get(k, 0.0)
            }
            print("series (truth, daemon) that differ:", diff)
            print(f"written: {writer.lines_generated} lines, {writer.bytes_written} bytes")
            print(f"read: {daemon.health}")
            raise
        converged = time.monotonic() - began

        # Lines and bytes are checkpointed with the counters: also exact, however often re-read.
        assert daemon.health == {LINES: writer.lines_generated, BYTES: writer.bytes_written}

        # A clean stop and a start: the counters come back from the checkpoint, not doubled.
        assert daemon.stop() == 0
        daemon.start()
        daemon.wait_ready()
        assert truth == daemon.scrape()
        assert daemon.stop() == 0

        print(
            f"chaos: {writer.lines_generated} lines, {writer.bytes_written / MB:.1f} MB, "
            f"{int(sum(truth.values()))} failures in {len(truth)} series; rotations "
            f"{', '.join(rotations)}; {daemon.kills} kills; writing {writing:.1f}s, "
            f"converged {converged:.1f}s, total {time.monotonic() - began:.1f}s"
        )
        assert daemon.kills >= 5
        assert {"create", "copytruncate", "compress"} <= set(rotations)
    except BaseException:
        print((tmp_path / "daemon.log").read_text(errors="replace")[-6000:])
        raise
    finally:
        writer.stop()
        daemon.close()
