"""Chaos: every rotation style mixed, lines cut anywhere, ``kill -9``: every failure counted once.

A writer appends a generated MP log with known truth at about 5,000 lines/s in chunks cut at
random byte positions, while the log is rotated every few MB in a random mix of styles: the real
logrotate (run by hand with its own state file) in ``create`` + ``delaycompress``, ``create`` +
``compress`` (the renamed file compressed and removed at once), ``create`` + ``compress`` +
``dateext`` and ``copytruncate``, each with its own names so that no style overwrites another's
files; and logback's fixed-window and time-based rolling, done by the test, each compressing the
renamed file in the background while the writer already writes the new one. The writer reopens
the path in logrotate's ``postrotate`` (the script waits until it has, as a logger that reopens on
SIGHUP does) and at once after a logback roll; nothing holds it still for a compressor. Only
logrotate's own copytruncate race is kept out: the writer is held still while logrotate copies and
truncates. The daemon runs as a subprocess and is killed with SIGKILL at random moments and during
rotations (between a rename and the writer's reopen, while a compressor runs, slower then than the
follower's ``copy_wait``, while logrotate copies), and started again each time; and it is held
still (SIGSTOP) three times, each longer than the pairing window, while the writer goes on. When
the writer is done, ``/metrics`` must equal the truth, series by series, and the lines and bytes
read the lines and bytes written; after a clean stop and a start it still must.

Each run twice over: on the generated log, and on the same log with long lines of one repeated
character cut by the rotations, so that rotated files begin alike (``alike``; issue 19).
``CHAOS_RUNS`` runs of each (2 by default; ``make soak SEEDS=N``), each with its own seed,
printed; ``CHAOS_SEED=<n>`` replays one run's choices (the timing still varies).
"""

from __future__ import annotations

import gzip
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Callable, Optional

import pytest
from helpers.chaos_writer import ChaosWriter
from helpers.support import free_port
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

LOGROTATE = "/usr/sbin/logrotate"
EXPORTER = str(Path(sys.executable).with_name("apigee-tls-exporter"))
FAILURES = "apigee_tls_handshake_failures_total"
LABELS = ("org", "env", "api", "rev", "target", "reason", "key_alias")
LINES = "apigee_tls_log_lines_total"
BYTES = "apigee_tls_log_bytes_read_total"
HEALTH = (LINES, BYTES)
PENDING = "apigee_tls_pairing_pending"
RATE = 5000.0  # lines a second
TOTAL_LINES = int(os.environ.get("CHAOS_LINES", "120000"))  # about 20 MB, 24 s of writing
RUNS = int(os.environ.get("CHAOS_RUNS", "2"))
MB = 1 << 20

# logrotate's styles, each rotating its own names (numbering starts apart, or dates).
LOGROTATE_MODES = {
    "create": "create\n  compress\n  delaycompress\n  start 1",
    "copytruncate": "copytruncate\n  start 100",
    "compress": "create\n  compress\n  start 200",
    "dateext": "create\n  compress\n  dateext\n  dateformat -%Y%m%d-%s",
}
LOGBACK_MODES = ("fixed-window", "time-based")
STALL = 2.5  # seconds the daemon is held still, longer than the pairing window (2 s) ...
STALLS = 3  # ... so many times a run (each has a failure waiting for its SSLInfo line or not)
PACE = threading.Event()  # never set: its wait() paces writers and compressors

Series = dict[tuple[str, ...], float]


def poll_until(what: str, check: Callable[[], bool], timeout: float) -> None:
    """Call ``check`` every 50 ms until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        PACE.wait(0.05)


class DaemonProcess:
    """``apigee-tls-exporter run`` as a subprocess, started again on a new port after a kill."""

    def __init__(self, log: Path, state: Path, output: Path) -> None:
        self.log = log
        self.state = state
        self.output: IO[bytes] = open(output, "ab")  # noqa: SIM115 - closed in close()
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.port = 0
        self.kills = 0
        self.stalls = 0
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

    def stall(self, seconds: float) -> None:
        """Hold the daemon still (SIGSTOP) for ``seconds``, then let it go on (SIGCONT): a stalled
        VM, a starved CPU, a checkpoint's fsync on a slow disk. The writer goes on meanwhile. The
        stop comes just after a scrape that shows a failure waiting for its SSLInfo line (within
        a few seconds), so that its pairing spans the stall."""
        assert self.proc is not None and self.proc.poll() is None, "the daemon died by itself"
        deadline = time.monotonic() + 5
        while self.pending() == 0 and time.monotonic() < deadline:
            PACE.wait(0.005)
        self.proc.send_signal(signal.SIGSTOP)
        PACE.wait(seconds)
        self.proc.send_signal(signal.SIGCONT)
        self.stalls += 1

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

    def _samples(self) -> Optional[list[Sample]]:
        """The samples on /metrics now; None when not serving."""
        try:
            url = f"http://127.0.0.1:{self.port}/metrics"
            with urllib.request.urlopen(url, timeout=5) as response:
                text = response.read().decode()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return None
        return [s for family in text_string_to_metric_families(text) for s in family.samples]

    def scrape(self) -> Optional[Series]:
        """The failure series on /metrics (zero-valued ones left out); None when not serving."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            pytest.fail(f"the daemon exited with {self.proc.returncode}")
        samples = self._samples()
        if samples is None:
            return None
        series: Series = {}
        self.health = {}
        for sample in samples:
            if sample.name == FAILURES and sample.value:
                series[tuple(sample.labels[k] for k in LABELS)] = sample.value
            elif sample.name in HEALTH:
                self.health[sample.name] = sample.value
        return series

    def pending(self) -> float:
        """``apigee_tls_pairing_pending`` now (0 when not serving)."""
        return next((s.value for s in self._samples() or [] if s.name == PENDING), 0.0)

    def wait_ready(self) -> None:
        poll_until("the daemon to serve /metrics", lambda: self.scrape() is not None, 30)


def logrotate_configs(tmp: Path, log: Path, flag: Path) -> dict[str, Path]:
    """One logrotate config per style; ``postrotate`` asks the writer to reopen (``flag``) and
    waits until it has."""
    configs = {}
    reopen = f"touch {flag}; while [ -e {flag} ]; do sleep 0.005; done"
    for mode, directives in LOGROTATE_MODES.items():
        conf = tmp / f"logrotate-{mode}.conf"
        post = "" if mode == "copytruncate" else f"\n  postrotate\n    {reopen}\n  endscript"
        conf.write_text(f"{log} {{\n  rotate 50\n  missingok\n  nomail\n  {directives}{post}\n}}\n")
        configs[mode] = conf
    return configs


class Reopener:
    """Reopens the writer when logrotate's postrotate asks (the flag file), then says so."""

    def __init__(self, writer: ChaosWriter, flag: Path) -> None:
        self.writer = writer
        self.flag = flag
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="reopener", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.002):
            if self.flag.exists():
                self.writer.reopen()
                self.flag.unlink()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


class Logback:
    """logback's rolling, done by the test: the active file renamed (into the window, or to a
    temporary name outside every rotated glob), the writer reopened at once, and the renamed
    file compressed in the background, then removed."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.window = 0
        self.rolls = 0
        self.compressors: list[threading.Thread] = []

    def roll(self, mode: str, writer: ChaosWriter, *, slow: bool = False) -> None:
        """Roll; compress in the background, taking its time, or when ``slow`` longer than the
        follower's ``copy_wait`` (2 s)."""
        self.wait()
        self.rolls += 1
        if mode == "fixed-window":  # system.1.log.gz, system.2.log.gz, ...
            for n in range(self.window, 0, -1):
                os.replace(self._win(n), self._win(n + 1))
            self.window += 1
            renamed = self.log.with_name("system.1.log")
            out = self._win(1)
        else:  # system-2026-12-02.<n>.log.gz from a temporary name
            renamed = self.log.with_name(f"system.log{time.monotonic_ns()}.tmp")
            out = self.log.with_name(f"system-2026-12-02.{self.rolls}.log.gz")
        with writer.paused():
            os.rename(self.log, renamed)
        writer.reopen()
        pace = 0.1 if slow else 0.002  # seconds per 64 KiB: slow is about 3 s for 2 MB
        thread = threading.Thread(target=self._compress, args=(renamed, out, pace), daemon=True)
        thread.start()
        self.compressors.append(thread)

    def _win(self, n: int) -> Path:
        return self.log.with_name(f"system.{n}.log.gz")

    @staticmethod
    def _compress(plain: Path, out: Path, pace: float) -> None:
        with open(plain, "rb") as src, gzip.open(out, "wb") as dst:
            while chunk := src.read(65536):
                dst.write(chunk)
                dst.flush()
                PACE.wait(pace)
        plain.unlink()

    def wait(self) -> None:
        for thread in self.compressors:
            thread.join(timeout=60)


@pytest.mark.slow
@pytest.mark.parametrize("run", range(RUNS))
@pytest.mark.parametrize("content", ["varied", "alike"])
def test_chaos_every_failure_counted_once_across_rotations_and_kill9(
    tmp_path: Path, run: int, content: str
) -> None:
    """With rotations of every style mixed, compressors running, cut lines and SIGKILLs at
    random moments, /metrics equals the truth exactly; also when the rotated files begin alike."""
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1 << 31))
    print(f"chaos seed: {seed} (replay with CHAOS_SEED={seed} -k {content})")
    rng = random.Random(seed)
    began = time.monotonic()

    logdir = tmp_path / "log"
    logdir.mkdir(mode=0o755)
    log = logdir / "system.log"
    state = tmp_path / "state" / "state.json"
    flag = tmp_path / "reopen-now"
    configs = logrotate_configs(tmp_path, log, flag)
    rotate_state = tmp_path / "logrotate.status"

    # Every style at least once, then a random mix; kills at random moments and in rotations.
    modes = [*LOGROTATE_MODES, *LOGBACK_MODES]
    plan = rng.sample(modes, len(modes)) + [rng.choice(modes) for _ in range(30)]
    rotations_expected = int(TOTAL_LINES * 170 / (2 * MB))
    kill_in = set(rng.sample(range(min(len(modes), rotations_expected)), 3))
    total_bytes = TOTAL_LINES * 170
    kill_at = sorted(rng.uniform(0.1, 0.9) * total_bytes for _ in range(2))
    stall_at = sorted(rng.uniform(0.1, 0.7) * total_bytes for _ in range(STALLS))

    writer = ChaosWriter(
        str(log), seed=seed, total_lines=TOTAL_LINES, rate=RATE, runs=content == "alike"
    )
    reopener = Reopener(writer, flag)
    logback = Logback(log)
    daemon = DaemonProcess(log, state, tmp_path / "daemon.log")
    rotations: list[str] = []
    try:
        writer.start()
        daemon.start()
        # A kill before the first checkpoint would start afresh: there would be nothing to resume.
        poll_until("the first checkpoint", state.exists, 30)

        def restart() -> None:
            daemon.kill()
            daemon.start()

        def rotate(mode: str, kill: bool) -> None:
            # One rotation at a time, as logback (its next roll waits for its compressor) and
            # logrotate (it compresses before it returns) each do: a .gz finished after another
            # scheme's next rotation would be newer by its time than that rotation's file, and
            # unread rotated files are read in the order of their times (docs/exactly-once.md).
            logback.wait()
            if mode in LOGBACK_MODES:
                logback.roll(mode, writer, slow=kill)
                if kill:  # while the compressor runs, slower than copy_wait
                    restart()
                rotations.append(mode)  # the compressor goes on: the next rotation waits
                return
            command = [LOGROTATE, "-f", "-s", str(rotate_state), str(configs[mode])]
            if mode == "copytruncate":
                with writer.paused():  # logrotate's own race: lines written while it copies
                    proc = subprocess.Popen(command, stderr=subprocess.PIPE)
                    if kill:
                        daemon.kill()
                    _, err = proc.communicate(timeout=60)
                if kill:
                    daemon.start()
            else:
                if mode == "dateext":
                    PACE.wait(1.05)  # its names are by the second: one rotation a second
                proc = subprocess.Popen(command, stderr=subprocess.PIPE)
                if kill:  # at a random moment of logrotate's run: renaming, reopening, compressing
                    PACE.wait(rng.uniform(0, 0.05))
                    restart()
                _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err.decode()
            rotations.append(mode)

        next_rotation = rng.uniform(1.5, 2.5) * MB
        while not writer.done:
            writer.wait_progress(1.0)
            assert writer.error is None, writer.error
            if kill_at and writer.bytes_written >= kill_at[0]:
                kill_at.pop(0)
                restart()
            if stall_at and writer.bytes_written >= stall_at[0]:
                stall_at.pop(0)
                daemon.stall(STALL)
            if log.exists() and log.stat().st_size >= next_rotation and not writer.done:
                if content == "alike":  # cut inside a run: the next file begins like others
                    deadline = time.monotonic() + 3
                    while not writer.in_run and time.monotonic() < deadline:
                        PACE.wait(0.002)
                index = len(rotations)
                rotate(plan[index], index in kill_in)
                next_rotation = rng.uniform(1.5, 2.5) * MB
        # What the writing did not reach (the stalls, kills and rotations before took their
        # time, more so on a loaded machine) is done after it: every run has them all.
        for _ in stall_at:
            daemon.stall(STALL)
        for mode in [m for m in modes if m not in rotations]:
            rotate(mode, len(rotations) in kill_in)
        writer.stop()
        logback.wait()
        assert writer.error is None, writer.error
        writing = time.monotonic() - began
        truth: Series = {tuple(k): float(v) for k, v in writer.truth.items()}

        seen: list[Optional[Series]] = [None]

        def matches() -> bool:
            seen[0] = daemon.scrape()
            return seen[0] == truth and daemon.health == {
                LINES: writer.lines_generated,
                BYTES: writer.bytes_written,
            }

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
            print(f"read: {daemon.health}; rotations: {rotations}; kills in {sorted(kill_in)}")
            raise
        converged = time.monotonic() - began

        # A clean stop and a start: the counters come back from the checkpoint, not doubled.
        assert daemon.stop() == 0
        daemon.start()
        daemon.wait_ready()
        assert truth == daemon.scrape()
        assert daemon.stop() == 0

        print(
            f"chaos: {writer.lines_generated} lines, {writer.bytes_written / MB:.1f} MB, "
            f"{int(sum(truth.values()))} failures in {len(truth)} series; rotations "
            f"{', '.join(rotations)}; {daemon.kills} kills, {daemon.stalls} stalls; "
            f"writing {writing:.1f}s, "
            f"converged {converged:.1f}s, total {time.monotonic() - began:.1f}s"
        )
        assert daemon.kills >= 3
        assert daemon.stalls == STALLS
        assert set(modes) <= set(rotations)
    except BaseException:
        print((tmp_path / "daemon.log").read_text(errors="replace")[-6000:])
        raise
    finally:
        reopener.close()
        writer.stop()
        logback.wait()
        daemon.close()
