"""Rotation styles with the compressor running while the writer writes and the follower polls.

Each scenario runs a writer thread (about 5,000 lines/s, cut at random byte positions, reopening
the path soon after it names a new file, as a logger does after logrotate's postrotate or
logback's roll), a follower polled in a loop, and a rotator: the real ``logrotate`` (Debian's) for
its modes, the test itself for logback's. Nothing holds the writer still, except for logrotate's
own copytruncate race (lines written between its copy and its truncate are lost on disk, which no
reader can repair). When the writer is done, the bytes the follower handed out must equal the
bytes written, in order: every line exactly once, however the names, times and compressors ran.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Optional

import pytest
from apigee_tls_exporter.follow.follower import Follower

LOGROTATE = shutil.which("logrotate") or "/usr/sbin/logrotate"
PACE = threading.Event()  # never set: its wait() paces the rotator and the compressor


class Writer:
    """Appends numbered lines to ``path`` in random cuts; reopens the path ``reopen_after`` seconds
    after it first sees that the path names another file (or none)."""

    def __init__(self, path: Path, seed: int, *, rate: float = 5000.0, reopen_after: float = 0.02):
        self.path = path
        self.rate = rate
        self.reopen_after = reopen_after
        self.rng = random.Random(seed)
        self.written = bytearray()
        self.lock = threading.Lock()  # held for each write, and by paused()
        self.stop_event = threading.Event()
        self.fd = self._open()
        self.thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self.error: Optional[BaseException] = None
        self.lines = 0

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @contextmanager
    def paused(self) -> Iterator[None]:
        with self.lock:
            yield

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> bytes:
        self.stop_event.set()
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        os.close(self.fd)
        if self.error is not None:
            raise self.error
        return bytes(self.written)

    def _moved(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        held = os.fstat(self.fd)
        return (st.st_dev, st.st_ino) != (held.st_dev, held.st_ino)

    def _run(self) -> None:
        try:
            pending = b""
            started = time.monotonic()
            moved_since: Optional[float] = None
            while not self.stop_event.is_set():
                due = int((time.monotonic() - started) * self.rate)
                while self.lines < due:
                    self.lines += 1
                    pending += (
                        f"2026-12-02 03:{self.lines // 60000 % 60:02d}:00,000 line "
                        f"{self.lines:08d} {'x' * self.rng.randrange(40, 160)}\n"
                    ).encode()
                cut = self.rng.randrange(0, len(pending) + 1)
                with self.lock:
                    now = time.monotonic()
                    if self._moved():
                        moved_since = moved_since or now
                        if now - moved_since >= self.reopen_after and self.path.exists():
                            os.close(self.fd)
                            self.fd = self._open()
                            moved_since = None
                    view = memoryview(pending)[:cut]
                    while view:
                        view = view[os.write(self.fd, view) :]
                    self.written += pending[:cut]
                pending = pending[cut:]
                self.stop_event.wait(0.005)
            with self.lock:  # the rest, ending in a whole line
                os.write(self.fd, pending)
                self.written += pending
        except BaseException as err:  # re-raised by stop()
            self.error = err


@pytest.fixture
def log(tmp_path: Path) -> Path:
    logdir = tmp_path / "logs"
    logdir.mkdir()
    return logdir / "system.log"


def run_scenario(
    log: Path,
    rotate: Callable[[int, Writer], None],
    *,
    rotations: int = 6,
    every: int = 300_000,
    seed: Optional[int] = None,
    copy_wait: float = 2.0,
) -> Follower:
    """Write, rotate ``rotations`` times (each after ``every`` bytes) and follow; assert that what
    the follower handed out equals what was written, byte for byte."""
    seed = random.randrange(1 << 30) if seed is None else seed
    print(f"rotation scenario seed: {seed}")
    log.write_bytes(b"")
    writer = Writer(log, seed)
    follower = Follower(str(log), from_beginning=True, copy_wait=copy_wait, clock=time.monotonic)
    got = bytearray()
    errors: list[BaseException] = []
    stop = threading.Event()

    def poll_loop() -> None:
        try:
            while not stop.is_set():
                for buf, start, end in follower.poll():
                    got.extend(buf[start:end])
                stop.wait(0.01)
        except BaseException as err:  # reported below
            errors.append(err)

    poller = threading.Thread(target=poll_loop, name="poller", daemon=True)
    writer.start()
    poller.start()
    try:
        for i in range(rotations):
            deadline = time.monotonic() + 60
            target = len(writer.written) + every
            while len(writer.written) < target:
                assert time.monotonic() < deadline, "the writer stalled"
                assert writer.error is None and not errors, (writer.error, errors)
                stop.wait(0.02)
            rotate(i, writer)
        written = writer.stop()
        deadline = time.monotonic() + 30
        while len(got) < len(written) and time.monotonic() < deadline and not errors:
            stop.wait(0.05)
        stop.wait(0.3)  # anything read twice would show by now as a longer stream
    finally:
        stop.set()
        poller.join(timeout=10)
    assert not errors, errors
    if bytes(got) != written:
        read_lines = bytes(got).splitlines()
        written_lines = written.splitlines()
        seen: dict[bytes, int] = {}
        for line in read_lines:
            seen[line] = seen.get(line, 0) + 1
        twice = sum(1 for n in seen.values() if n > 1)
        missing = sum(1 for line in written_lines if line not in seen)
        pytest.fail(
            f"read {len(read_lines)} lines, written {len(written_lines)}: "
            f"{twice} read more than once, {missing} never read (seed {seed})"
        )
    return follower


def logrotate(tmp: Path, log: Path, directives: str) -> Callable[[int, Writer], None]:
    """A rotation by the real logrotate with ``directives``, forced, with its own state file."""
    conf = tmp / "logrotate.conf"
    conf.write_text(f"{log} {{\n  rotate 50\n  missingok\n  nomail\n  {directives}\n}}\n")
    status = tmp / "logrotate.status"
    paced = "dateext" in directives

    def rotate(i: int, writer: Writer) -> None:
        if paced:  # dateext names a rotation by the second: one rotation per second at most
            PACE.wait(1.05)
        command = [LOGROTATE, "-f", "-s", str(status), str(conf)]
        if "copytruncate" in directives:
            with writer.paused():  # logrotate's own race: lines written between copy and truncate
                done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        else:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr

    return rotate


LOGROTATE_MODES = {
    "create-compress": "create\n  compress",
    "create-compress-dateext": "create\n  compress\n  dateext\n  dateformat -%Y%m%d-%s",
    "create-compress-delaycompress": "create\n  compress\n  delaycompress",
    "create-plain": "create",
    "copytruncate": "copytruncate",
    "copytruncate-compress": "copytruncate\n  compress",
}


@pytest.mark.parametrize("mode", sorted(LOGROTATE_MODES))
def test_logrotate_mode_every_line_once(tmp_path: Path, log: Path, mode: str) -> None:
    """Each logrotate mode, with its compressor running while the writer writes: every line is
    handed out exactly once, in order."""
    rotate = logrotate(tmp_path, log, LOGROTATE_MODES[mode])
    run_scenario(log, rotate, rotations=4 if "dateext" in mode else 6)


def background_gzip(plain: Path, out: Path, *, remove: bool) -> threading.Thread:
    """Compress ``plain`` into ``out`` in a thread, in small pieces (a compressor that takes its
    time), then remove ``plain`` if told to: as logback's background compression does."""

    def run() -> None:
        with open(plain, "rb") as src, gzip.open(out, "wb") as dst:
            while True:
                chunk = src.read(16384)
                if not chunk:
                    break
                dst.write(chunk)
                dst.flush()
                PACE.wait(0.001)
        if remove:
            plain.unlink()

    thread = threading.Thread(target=run, name="compressor", daemon=True)
    thread.start()
    return thread


def test_logback_fixed_window_rolling_with_gzip(log: Path) -> None:
    """logback's FixedWindowRollingPolicy with ``system.%i.log.gz``: the window shifts (``.1`` to
    ``.2``…), the active file is renamed to ``system.1.log`` and compressed while the writer
    already writes the new file."""
    compressors: list[threading.Thread] = []

    def rotate(i: int, writer: Writer) -> None:
        for c in compressors:
            c.join()
        for n in range(i, 0, -1):
            src = log.with_name(f"system.{n}.log.gz")
            if src.exists():
                os.replace(src, log.with_name(f"system.{n + 1}.log.gz"))
        rolled = log.with_name("system.1.log")
        os.rename(log, rolled)
        log.write_bytes(b"")
        compressors.append(background_gzip(rolled, log.with_name("system.1.log.gz"), remove=True))

    run_scenario(log, rotate)
    for c in compressors:
        c.join()


def test_logback_time_based_rolling_renames_outside_the_glob(log: Path) -> None:
    """logback's TimeBasedRollingPolicy with ``.gz``: the active file is renamed to a temporary
    name that no rotated glob covers, the writer writes the new file at once, and the temporary
    file is compressed to ``system-<date>.<i>.log.gz`` in the background, then removed."""
    compressors: list[threading.Thread] = []

    def rotate(i: int, writer: Writer) -> None:
        tmp = log.with_name(f"system.log{1000 + i}.tmp")
        os.rename(log, tmp)
        log.write_bytes(b"")
        out = log.with_name(f"system-2026-12-02.{i}.log.gz")
        compressors.append(background_gzip(tmp, out, remove=True))

    run_scenario(log, rotate)
    for c in compressors:
        c.join()
