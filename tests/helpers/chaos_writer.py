"""The chaos test's log writer: a generated MP log with known truth, appended in random cuts.

``ChaosWriter`` appends the text of a :class:`~apigee_tls_exporter.demo.generator.LogGenerator` at a
steady rate of lines per second, in chunks cut at random byte positions, so the file usually ends in
the
middle of a line (also at the moment of a rotation). It writes through one open descriptor with
``O_APPEND`` like logback: after a rename the test calls :meth:`reopen` (until then the writer
keeps writing to the renamed file); after ``copytruncate`` the descriptor writes at the
new end by itself. :meth:`paused` holds the writer still while logrotate copies and truncates
(logrotate's own race, which no reader can repair). The rate is kept by waiting on the stop event
between ticks: it paces a load generator, it does not wait for a result.

With ``runs`` the log also holds long lines of one repeated character (a body dump, padding), a
few hundred KiB each, a third of the bytes in all, written slowly (``RUN_WRITE`` bytes a tick);
:attr:`in_run` says when the next byte written is inside one, so that a rotation then makes the
next file begin with a run, like others (issue 19: a file must never be taken for another by its
first bytes).
"""

from __future__ import annotations

import collections
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional

from apigee_tls_exporter.demo.generator import LogGenerator, TruthKey

TICK = 0.02  # seconds between writes
RUN_SHARE = 1 / 3000  # with runs: the share of records followed by a line of one character
RUN_WRITE = 16 << 10  # bytes of a run written a tick
RUN_HEAD = 2048  # in_run: at least so many bytes of one character come next


class ChaosWriter:
    """Appends ``total_lines`` generated lines to ``path`` at ``rate`` lines a second."""

    def __init__(
        self,
        path: str,
        *,
        seed: int,
        total_lines: int,
        rate: float = 5000.0,
        failure_fraction: float = 0.02,
        runs: bool = False,
    ) -> None:
        self.path = path
        self.total_lines = total_lines
        self.rate = rate
        self._gen = LogGenerator(seed, failure_fraction=failure_fraction)
        self._rng = random.Random(seed ^ 0x5EED)
        self._runs = random.Random(seed ^ 0x2B5) if runs else None
        self._pending = b""  # generated, not written yet: the rest of a cut line
        self._lock = threading.Lock()  # held for each write, and by paused()
        self._progress = threading.Condition()
        self._stop = threading.Event()
        self._fd = self._open()
        self._thread = threading.Thread(target=self._run, name="chaos-writer", daemon=True)
        self.bytes_written = 0
        self.lines_generated = 0
        self.done = False
        self.error: Optional[BaseException] = None

    @property
    def truth(self) -> collections.Counter[TruthKey]:
        """The failures written; exact once :attr:`done` (every failure is complete then)."""
        return self._gen.truth

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop writing and close the file (again: nothing happens)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def reopen(self) -> None:
        """Open the path again now, between two writes (a logger's reopen after a rotation)."""
        with self._lock:
            os.close(self._fd)
            self._fd = self._open()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No write happens inside this block."""
        with self._lock:
            yield

    def wait_progress(self, timeout: float) -> None:
        """Return after the next write, or after ``timeout`` seconds."""
        with self._progress:
            self._progress.wait(timeout)

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _run(self) -> None:
        try:
            started = time.monotonic()
            while not self._stop.is_set() and not self.done:
                due = min(self.total_lines, int((time.monotonic() - started) * self.rate))
                self._generate(due)
                self._write(last=self.lines_generated >= self.total_lines)
                with self._progress:
                    self._progress.notify_all()
                self._stop.wait(TICK)
        except BaseException as err:  # reported by the test, which then fails
            self.error = err
            raise
        finally:
            with self._progress:
                self._progress.notify_all()

    def _generate(self, due: int) -> None:
        lines: list[str] = []
        while self.lines_generated + len(lines) < due:
            record = self._gen.next_record()
            lines.extend(record)
            if self._runs is not None and self._runs.random() < RUN_SHARE:
                lines.append(self._run_line(record[0][:23]))
        if due >= self.total_lines:
            lines.extend(self._gen.drain())  # the end: every failure complete, truth exact
        self.lines_generated += len(lines)
        if lines:
            self._pending += "".join(line + "\n" for line in lines).encode()

    @property
    def in_run(self) -> bool:
        """Whether the next ``RUN_HEAD`` bytes to be written are one repeated character."""
        pending = self._pending  # replaced, never changed in place: a consistent look
        return len(pending) >= RUN_HEAD and pending[:RUN_HEAD].count(pending[:1]) == RUN_HEAD

    def _run_line(self, timestamp: str) -> str:
        """A DEBUG line dumping a body of one repeated character (64-512 KiB)."""
        assert self._runs is not None
        char = self._runs.choice("0= A")
        size = self._runs.randrange(64 << 10, 512 << 10)
        return (
            f"{timestamp}  Apigee-Main-1 DEBUG MESSAGING.RUNTIME - "
            f"RuntimeMessageFlow.dump() : body={char * size}"
        )

    def _write(self, *, last: bool) -> None:
        """Write the pending bytes up to a random cut (all of them at the end)."""
        if not self._pending:
            self.done = last
            return
        cut = len(self._pending) if last else self._rng.randrange(1, len(self._pending) + 1)
        if self._runs is not None and not last and self.in_run:
            cut = min(cut, RUN_WRITE)
        with self._lock:
            view = memoryview(self._pending)[:cut]
            while view:
                view = view[os.write(self._fd, view) :]
        self._pending = self._pending[cut:]
        self.bytes_written += cut
        self.done = last and not self._pending
