"""The follower against a model of what must be read (after Vector's
``file_watcher/tests/experiment.rs``): Hypothesis writes, rotates in every style the follower
supports, truncates, crashes and restarts it, and polls, in random order; after every step what
was handed out is a prefix of what was written, in order, nothing twice; after the final drain it
is all of it (to the last newline).

The writer writes a generated stream in cuts at random byte positions, so rotations cut lines and
runs of one repeated character (files then begin alike: the issue-19 case); the stream holds long
runs, identical stack traces, short lines and partial lines. Each chunk of the stream begins with
its own number (``#n:``), as a real log's lines begin with a time, and a rotation waits until the
writer's file holds one (or nothing): two files never hold the same bytes from their start unless
one is a copy of the other (what content cannot tell is in docs/exactly-once.md). A crash
throws the follower away; the next one is restored from the last checkpoint written
(``snapshot()`` at a settled point, through JSON), and what was handed out after that checkpoint
is taken back, as the daemon's counters are.

Examples: ``FOLLOW_MODEL_EXAMPLES`` (300 by default, with a fixed seed, so CI is repeatable: about
8 s on one free core; no wall-clock bound, for one that cuts the run short makes Hypothesis's
generation depend on time); ``make soak`` runs 10,000 with random seeds
(``FOLLOW_MODEL_SEED=random``).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Callable, Optional

from apigee_tls_exporter.follow.follower import Follower
from apigee_tls_exporter.follow.saved import FollowerState
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

EXAMPLES = int(os.environ.get("FOLLOW_MODEL_EXAMPLES", "300"))
SEED = os.environ.get("FOLLOW_MODEL_SEED", "19")  # "random": a new seed each run (make soak)
COPY_WAIT = 2.0
STACK = b"".join(
    b"\tat com.apigee.messaging.adaptors.http.flow.Handler.run(Handler.java:%d)\n" % i
    for i in range(12)
)
RUN_CHARS = b"xyzw"

# The styles of rotation: logrotate create (+compress, +dateext, olddir), copytruncate, logrotate
# compress racing the writer, and logback's fixed window and its temporary name with a background
# compressor.
STYLES = (
    "create",
    "compress",
    "compress-race",
    "dateext",
    "olddir",
    "copytruncate",
    "logback",
    "logback-tmp",
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Compressor:
    """gzip of ``plain`` into ``out`` a step at a time (logrotate's compress, logback's
    background gzip); the plain file is removed when it is done. ``before_remove``, when given,
    runs first and says whether the original may be removed now."""

    def __init__(
        self, plain: Path, out: Path, before_remove: Optional[Callable[[], bool]] = None
    ) -> None:
        self.plain, self.out = plain, out
        self.data = gzip.compress(plain.read_bytes())
        self.at = 0
        self.mtime = plain.stat().st_mtime
        self.before_remove = before_remove
        out.write_bytes(b"")
        os.utime(out, (self.mtime, self.mtime))

    def step(self, n: int) -> bool:
        """Write ``n`` more compressed bytes; True once done (the original removed)."""
        self.at = min(len(self.data), self.at + n)
        with open(self.out, "r+b") as f:
            f.write(self.data[: self.at])
        os.utime(self.out, (self.mtime, self.mtime))
        if self.at < len(self.data):
            return False
        if self.before_remove is not None and not self.before_remove():
            return False
        self.plain.unlink()
        return True


class FollowerModel(RuleBasedStateMachine):
    @initialize()
    def setup(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="follow-model-"))
        (self.dir / "old").mkdir()
        self.log = self.dir / "system.log"
        self.clock = FakeClock()
        self.written = bytearray()  # every byte the writer wrote, in order
        self.pending = bytearray()  # generated, not written yet
        self.chunks = 0
        self.time = 1_000_000  # files' modification times, as a real clock would give them
        self.fd = self._open_writer()
        self.numbers = {style: 0 for style in STYLES}
        self.compressor: Optional[Compressor] = None
        self.follower: Optional[Follower] = self._follower(None)
        self.looked = False
        self.handed = bytearray()  # handed out and counted (back to the checkpoint on a crash)
        self.saved: Optional[FollowerState] = None
        self.handed_at_save = 0
        self.poll(stop_after=None, save_at=None)  # the first start: the daemon polls and
        self.checkpoint()  # checkpoints at once, before anything can rotate under it

    def teardown(self) -> None:
        if not hasattr(self, "dir"):
            return
        try:
            self._final_drain()
        finally:
            if self.follower is not None:
                self.follower.close()
            os.close(self.fd)
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- the writer ---------------------------------------------------------------------------
    def _open_writer(self) -> int:
        self.current = bytearray()  # written to the file the writer has open
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if os.fstat(fd).st_size == 0:  # maybe created now: the model's time, not the wall's
            self.time += 1
            os.utime(fd, (self.time, self.time))
        return fd

    @rule(
        kind=st.sampled_from(["lines", "run", "stack", "partial", "tiny"]),
        n=st.integers(1, 5000),
    )
    def generate(self, kind: str, n: int) -> None:
        """Add a chunk to the stream: lines, a long run of one character, a stack trace (the
        same every time), a line without its end, or a few bytes."""
        self.chunks += 1
        number = b"#%d:" % self.chunks
        char = RUN_CHARS[self.chunks % len(RUN_CHARS) : self.chunks % len(RUN_CHARS) + 1]
        body = {
            "lines": b"".join(b"line %d\n" % i for i in range(n % 40 + 1)),
            "run": char * n + b"\n",
            "stack": b"javax.net.ssl.SSLHandshakeException: x\n" + STACK,
            "partial": b"cut line " * (n % 9 + 1),
            "tiny": b"\n",
        }[kind]
        self.pending += number + body

    @precondition(lambda self: bool(self.pending))
    @rule(fraction=st.floats(0.0, 1.0))
    def write(self, fraction: float) -> None:
        """Write the pending stream up to a random cut (at least one byte)."""
        self._write(max(1, int(len(self.pending) * fraction)))

    def _write(self, n: int) -> None:
        data = bytes(self.pending[:n])
        del self.pending[:n]
        os.write(self.fd, data)
        self.written += data
        self.current += data
        self._touch_writer()

    def _touch_writer(self) -> None:
        self.time += 1
        os.utime(self.fd, (self.time, self.time))

    def _stamp(self, path: Path) -> None:
        """A file changed now: its modification time is the model's clock, as every other
        file's (a wall-clock time would make it newer than all of them, whatever the order)."""
        self.time += 1
        os.utime(path, (self.time, self.time))

    def _create(self, path: Path) -> None:
        path.write_bytes(b"")
        self._stamp(path)

    def _truncate(self, path: Path) -> None:
        os.truncate(path, 0)
        self._stamp(path)

    def _reopen(self) -> None:
        os.close(self.fd)
        self.fd = self._open_writer()

    def _log_exists(self) -> bool:
        return os.path.exists(self.log)

    def _emptied(self) -> None:
        if os.fstat(self.fd).st_ino == os.stat(self.log).st_ino:
            self.current = bytearray()

    def _whole(self) -> bool:
        """Whether the writer's file is empty or holds a chunk's whole number (``#n:``): never
        a file whose whole content lies inside one chunk, for such a file (a few bytes of a run,
        of a stack trace, a lone ``#``) may be the very start of another file, and nothing but
        its name tells them apart once its own file is gone (docs/exactly-once.md, what cannot
        be told)."""
        return not self.current or re.search(rb"#\d+:", self.current) is not None

    # --- rotations ----------------------------------------------------------------------------
    def _shift(self, names: list[Path]) -> None:
        """``names[i]`` -> ``names[i + 1]``, oldest first (the last one must not exist)."""
        for i in range(len(names) - 2, -1, -1):
            if names[i].exists():
                os.rename(names[i], names[i + 1])

    def _tellable_while_down(self) -> bool:
        """Whether a rotation now leaves the log's content tellable from the files that come
        after it: a follower that has looked since it started holds the file open; one that is
        down or has not looked yet starts from its checkpoint, and what an entry of the log's
        content there covers must hold a chunk's number. Else a later file may begin with the
        very same bytes and take the entry's place: the file grown back after a copytruncate,
        or a new file given the entry's freed inode while a copy holds the content too (limits
        content cannot decide, docs/exactly-once.md)."""
        if (self.follower is not None and self.looked) or self.saved is None:
            return True
        content = self.log.read_bytes()
        return all(  # by content (an inode number may be another file's by now)
            re.search(rb"#\d+:", content[: e.offset]) is not None
            for e in self.saved.ledger
            if 0 < e.offset <= len(content) and zlib.crc32(content[: e.offset]) == e.crc
        )

    def _can_finish(self) -> bool:
        """Whether the compressor can finish now: a racing one only with a follower running."""
        c = self.compressor
        return c is None or c.before_remove is None or self.follower is not None

    def _race_lost(self) -> bool:
        """Before a racing compressor removes the original: the writer has reopened (logrotate's
        postrotate; as ever, once its file holds a chunk's number), and the follower, running,
        has read and checkpointed the writer's last lines from the original (else they are lost
        on disk: logrotate's loss, not the follower's)."""
        if self.follower is None:
            return False
        assert self.compressor is not None
        if os.fstat(self.fd).st_ino == os.stat(self.compressor.plain).st_ino:
            while not self._whole():  # it leaves the file once it holds a chunk's number
                if not self.pending:
                    self.generate("tiny", 1)
                self._write(len(self.pending))
            self._reopen()
        self._drain(checkpoint_every=False, finish=False)
        self.checkpoint()  # the daemon checkpoints each second: a held partial line too
        return True

    def _finish_compressor(self) -> None:
        if self.compressor is not None:
            while not self.compressor.step(1 << 20):
                pass
            self.compressor = None

    @precondition(lambda self: self._log_exists() and self._whole() and self._can_finish())
    @rule(style=st.sampled_from(STYLES))
    def rotate(self, style: str) -> None:
        """Rotate the log in ``style``. logrotate's ``create`` leaves the writer on the renamed
        file until ``reopen``; the compressing styles reopen first (postrotate runs before
        compression) and start a compressor that writes in steps; ``compress-race`` compresses
        what the renamed file holds at once while the writer goes on writing to it until it
        reopens: the ``.gz`` lacks the writer's last lines, which the follower read."""
        looks_first = style == "copytruncate" and self.follower is not None  # (below)
        if not looks_first and not self._tellable_while_down():
            return
        self._finish_compressor()  # one rotation at a time, as logrotate and logback do
        self.numbers[style] += 1
        count = self.numbers[style]
        d, log = self.dir, self.log
        if style == "create":
            self._shift([Path(f"{log}.{i}") for i in range(1, count + 1)])
            os.rename(log, f"{log}.1")
            self._create(log)
        elif style == "olddir":
            self._shift([d / "old" / f"system.log.{i}" for i in range(1, count + 1)])
            os.rename(log, d / "old" / "system.log.1")
            self._create(log)
        elif style == "copytruncate":
            if self.follower is not None:  # it has looked (it polls every 50 ms): a file copied
                self.poll(stop_after=None, save_at=None)  # and emptied before any look is lost
            self._shift([Path(f"{log}.{i}") for i in range(100, 100 + count)])
            shutil.copy2(log, f"{log}.100")
            self._truncate(log)
            self._emptied()
        elif style == "compress":
            self._shift([Path(f"{log}.{i}.gz") for i in range(200, 200 + count)])
            os.rename(log, f"{log}.200")
            self._create(log)
            self._reopen()
            self.compressor = Compressor(Path(f"{log}.200"), Path(f"{log}.200.gz"))
        elif style == "compress-race":
            self._shift([Path(f"{log}.{i}.gz") for i in range(300, 300 + count)])
            os.rename(log, f"{log}.300")
            self._create(log)
            plain = Path(f"{log}.300")
            self.compressor = Compressor(plain, Path(f"{plain}.gz"), self._race_lost)
        elif style == "dateext":
            os.rename(log, f"{log}-2026120{count}")
            self._create(log)
            self._reopen()
            plain = Path(f"{log}-2026120{count}")
            self.compressor = Compressor(plain, Path(f"{plain}.gz"))
        elif style == "logback":
            self._shift([d / f"system.{i}.log.gz" for i in range(1, count + 1)])
            os.rename(log, d / "system.1.log")
            self._reopen()
            self.compressor = Compressor(d / "system.1.log", d / "system.1.log.gz")
        else:  # logback-tmp: a temporary name no glob sees, then the time-based name
            tmp = d / f"system.log{count}.tmp"
            os.rename(log, tmp)
            self._reopen()
            self.compressor = Compressor(tmp, d / f"system-2026-12-02.{count}.log.gz")

    @precondition(lambda self: self._whole())
    @rule()
    def reopen(self) -> None:
        """The writer reopens the path (after logrotate's create, a logger's SIGHUP): once the
        file it leaves holds a whole chunk number, as every file the writer leaves does."""
        self._reopen()

    @precondition(lambda self: self.compressor is not None)
    @rule(n=st.integers(1, 400))
    def compress(self, n: int) -> None:
        """The compressor writes ``n`` more bytes (and removes the original when done)."""
        assert self.compressor is not None
        if self.compressor.step(n):
            self.compressor = None

    @precondition(lambda self: self.follower is not None and self._log_exists())
    @rule()
    def truncate(self) -> None:
        """Truncation without a copy: what was written after the last read is lost by it, so
        the writer ends its line, the follower reads all and is checkpointed first; then the
        file is emptied and looked at once (a truncation regrown past the offset before any
        look cannot be told from an append)."""
        self.chunks += 1
        end = b" #%d: end\n" % self.chunks
        self.pending[:0] = end
        self._write(len(end))
        self._drain(checkpoint_every=False)
        self.checkpoint()
        self._truncate(self.log)
        self._emptied()
        self.poll(stop_after=None, save_at=None)

    # --- the follower -------------------------------------------------------------------------
    def _follower(self, state: Optional[FollowerState]) -> Follower:
        follower = Follower(
            str(self.log),
            rotated=[str(self.dir / "old")],
            from_beginning=True,
            copy_wait=COPY_WAIT,
            clock=self.clock,
        )
        if state is not None:
            follower.restore(FollowerState.model_validate_json(state.model_dump_json()))
        return follower

    @precondition(lambda self: self.follower is not None)
    @rule(
        stop_after=st.one_of(st.none(), st.integers(0, 5)),
        save_at=st.one_of(st.none(), st.integers(0, 5)),
    )
    def poll(self, stop_after: Optional[int], save_at: Optional[int]) -> None:
        """One poll; a checkpoint at the ``save_at``-th settled segment; the caller stops
        consuming after ``stop_after`` settled segments (the daemon's bound on one step)."""
        assert self.follower is not None
        self.looked = True
        settled = 0
        for buf, start, end in self.follower.poll():
            self.handed += bytes(buf[start:end])
            if self.follower.settled:
                if settled == save_at:
                    self.checkpoint()
                if settled == stop_after:
                    break
                settled += 1

    @precondition(lambda self: self.follower is not None)
    @rule()
    def checkpoint(self) -> None:
        """The daemon checkpoints only at a settled point (skipped otherwise: which rules are
        enabled must not depend on what the follower did, which may depend on inode numbers)."""
        assert self.follower is not None
        if not self.follower.settled:
            return
        self.saved = self.follower.snapshot()
        self.handed_at_save = len(self.handed)

    @precondition(lambda self: self.follower is not None)
    @rule()
    def crash(self) -> None:
        """kill -9: the follower is gone; what it handed out after the last checkpoint is not
        counted (the counters come back from the checkpoint too)."""
        assert self.follower is not None
        self.follower.close()
        self.follower = None
        del self.handed[self.handed_at_save :]

    @precondition(lambda self: self.follower is None)
    @rule()
    def restart(self) -> None:
        self.follower = self._follower(self.saved)
        self.looked = False  # until it polls, it knows its files only by the checkpoint
        if self.saved is None:
            self.handed.clear()  # a first start again: everything is read from the beginning

    @rule(seconds=st.sampled_from([0.1, 1.0, COPY_WAIT + 0.1]))
    def tick(self, seconds: float) -> None:
        """Time passes; a compressor writes meanwhile (it never stalls for ``copy_wait``)."""
        self.clock.now += seconds
        if self.compressor is not None and self.compressor.step(64):
            self.compressor = None

    # --- what must hold -----------------------------------------------------------------------
    @invariant()
    def handed_is_a_prefix_of_written(self) -> None:
        if not hasattr(self, "handed"):
            return
        n = len(self.handed)
        assert bytes(self.handed) == bytes(self.written[:n]), self._where(n)

    def _where(self, n: int) -> str:
        differ = next(
            (i for i in range(min(n, len(self.written))) if self.handed[i] != self.written[i]), n
        )
        return (
            f"handed {n} bytes, written {len(self.written)}; first difference at {differ}: "
            f"handed {bytes(self.handed[differ - 20 : differ + 40])!r}, "
            f"written {bytes(self.written[differ - 20 : differ + 40])!r}"
        )

    def _drain(self, *, checkpoint_every: bool, finish: bool = True) -> None:
        """Poll until caught up, time passing by ``copy_wait`` at each poll: a compressor
        finishes first (one stalled longer than ``copy_wait`` is read as far as it goes, out of
        order: the documented bound, not a loss the model looks for)."""
        if finish:
            self._finish_compressor()
        for _ in range(8):
            self.clock.now += COPY_WAIT + 0.1
            before = len(self.handed)
            self.poll(stop_after=None, save_at=0 if checkpoint_every else None)
            follower = self.follower
            if len(self.handed) == before and follower is not None and follower.caught_up:
                break

    def _final_drain(self) -> None:
        """The end: compressors finish, the follower runs, and reads everything to the last
        newline written."""
        if self.follower is None:
            self.restart()
        self._finish_compressor()
        for _ in range(4):
            self._drain(checkpoint_every=True)
        expected = bytes(self.written[: self.written.rfind(b"\n") + 1])
        assert bytes(self.handed) == expected, self._where(len(self.handed))
        assert zlib.crc32(self.handed) == zlib.crc32(expected)


FollowerModel.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=60,
    deadline=None,
    derandomize=SEED != "random",
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestFollowerModel = FollowerModel.TestCase
