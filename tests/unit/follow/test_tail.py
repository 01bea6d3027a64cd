"""File following: one scenario per case of the ``tail`` module docstring.

Each scenario drives a ``Follower`` directly with a fake clock and real files: the test changes the
files the way a writer, logback or logrotate would, then polls.
"""

from __future__ import annotations

import gzip
import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional

import pytest
import structlog
from apigee_tls_exporter.follow.follower import Follower
from apigee_tls_exporter.follow.logfile import Look
from apigee_tls_exporter.follow.saved import FollowerState


class FakeClock:
    """A monotonic clock that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def read(follower: Follower) -> bytes:
    """One poll; the bytes of the whole lines it handed out (copied as they come)."""
    return b"".join(bytes(buf[start:end]) for buf, start, end in follower.poll())


def lines(prefix: str, n: int, start: int = 0) -> bytes:
    return b"".join(f"{prefix} line {i:05d}\n".encode() for i in range(start, start + n))


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


def make(path: Path, *, clock: Optional[FakeClock] = None, **kwargs: Any) -> Follower:
    kwargs.setdefault("from_beginning", True)
    return Follower(str(path), clock=clock or FakeClock(), **kwargs)


def checkpoint(follower: Follower) -> FollowerState:
    """The follower's snapshot as it comes back from the state file."""
    snapshot = follower.snapshot()
    assert snapshot is not None
    return FollowerState.model_validate_json(snapshot.model_dump_json())


def following(log: Path, content: bytes) -> tuple[Follower, FakeClock]:
    """A follower, with its own clock, that has read ``content`` written to the log."""
    log.write_bytes(content)
    clock = FakeClock()
    follower = make(log, clock=clock)
    assert read(follower) == content
    return follower, clock


def restored(log: Path, state: FollowerState, **kwargs: Any) -> tuple[Follower, FakeClock]:
    """A follower started again from ``state``, with its own clock."""
    clock = FakeClock()
    follower = make(log, clock=clock, **kwargs)
    follower.restore(state)
    return follower, clock


def poll_through_waits(follower: Follower, clock: FakeClock, polls: int = 4) -> bytes:
    """Polls with ``copy_wait`` passing between them: every wait the follower starts ends."""
    got = b""
    for _ in range(polls):
        got += read(follower)
        clock.now += 3
    return got


def stopped_after_three_lines(log: Path) -> FollowerState:
    """A follower read a new log of three lines, was checkpointed and stopped: its state."""
    log.write_bytes(lines("a", 3))
    first = make(log)
    assert read(first) == lines("a", 3)
    state = checkpoint(first)
    first.close()
    return state


def stopped_on_an_empty_log(log: Path) -> FollowerState:
    """A follower started on an empty log, checkpointed (nothing read) and stopped: its state."""
    log.write_bytes(b"")
    first = make(log)
    assert read(first) == b""
    state = checkpoint(first)
    first.close()
    return state


def open_offset(state: FollowerState) -> int:
    """The offset of the file being read, in a follower's checkpoint."""
    assert state.open is not None
    return state.ledger[state.open].offset


def set_mtime(path: Path, when: float) -> None:
    os.utime(path, (when, when))


def gzip_like_logrotate(plain: Path) -> Path:
    """``plain`` -> ``plain.gz`` with the original's time, and the original removed."""
    out = plain.with_name(plain.name + ".gz")
    out.write_bytes(gzip.compress(plain.read_bytes()))
    mtime = plain.stat().st_mtime
    set_mtime(out, mtime)
    plain.unlink()
    return out


def rotate_twice(log: Path, *, compress: bool) -> bytes:
    """Two rename-and-create rotations with no poll between: the followed file becomes ``.2``, the
    middle one ``.1`` and the path a third file. With ``compress`` each renamed file is compressed
    at once (logrotate's ``compress`` without ``delaycompress``) and its plain original removed.
    The first two files end in a line cut by the rotation. Returns the lines written from the
    followed file's end on."""
    gz = ".gz" if compress else ""
    append(log, lines("a", 20, 3) + b"cut at the ")
    set_mtime(log, 1_000_000)  # written apart in time, as a real clock tells them
    os.rename(log, f"{log}.1")
    if compress:
        gzip_like_logrotate(Path(f"{log}.1"))
    log.write_bytes(b"first rotation\n" + lines("b", 20) + b"cut at the ")
    set_mtime(log, 1_000_100)
    os.rename(f"{log}.1{gz}", f"{log}.2{gz}")
    os.rename(log, f"{log}.1")
    if compress:
        gzip_like_logrotate(Path(f"{log}.1"))
    log.write_bytes(b"second rotation\n" + lines("c", 2))
    return (
        lines("a", 20, 3)
        + b"cut at the first rotation\n"
        + lines("b", 20)
        + b"cut at the second rotation\n"
        + lines("c", 2)
    )


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "system.log"


# --- the pipeline on a follower: line numbers across cut reads --------------------------------


def test_pipeline_counts_line_numbers_across_cut_reads(log: Path) -> None:
    """Lines are numbered once each, so the line count equals the newlines read, cuts or not."""
    from apigee_tls_exporter.records.correlate import Correlator
    from apigee_tls_exporter.records.parse import Parser
    from apigee_tls_exporter.records.pipeline import LogPipeline

    log.write_bytes(b"")
    follower = make(log, max_line_bytes=4096)
    pipeline = LogPipeline(follower.stats, Parser(), Correlator(), [])
    data = lines("n", 3000)
    for i in range(0, len(data), 777):
        append(log, data[i : i + 777])
        for segment in follower.poll():
            pipeline.process(*segment)
    assert follower.stats.lines == 3000


def test_pipeline_gives_each_event_its_line_number_across_cut_reads(log: Path) -> None:
    """The line number the correlator gets for an event is the event's line in the file, however
    the reads cut the lines (a partial line joined across reads counts once)."""
    from apigee_tls_exporter.demo.generator import LogGenerator
    from apigee_tls_exporter.records.correlate import Correlator
    from apigee_tls_exporter.records.events import Event
    from apigee_tls_exporter.records.events import Failure as Closed
    from apigee_tls_exporter.records.parse import Parser
    from apigee_tls_exporter.records.pipeline import LogPipeline

    seen: list[int] = []

    class Recording(Correlator):
        def feed(self, event: Event, line: int) -> list[Closed]:
            seen.append(line)
            return super().feed(event, line)

    data = LogGenerator(8, failure_fraction=0.05).text(3000).encode()
    expected = [
        number
        for number, line in enumerate(data.split(b"\n"), start=1)
        if b"handshakeFailed()" in line
        or b"handshakeTimeout()" in line
        or b"SSLInfo:" in line
        # an exception line with a received alert: an event too (issue 11), dropped as a repeat
        or (line.startswith(b"javax.net.ssl.") and b"Received fatal alert" in line)
    ]
    log.write_bytes(b"")
    follower = make(log, max_line_bytes=4096)
    pipeline = LogPipeline(follower.stats, Parser(), Recording(), [])
    cuts = random.Random(8)
    at = 0
    while at < len(data):
        step = cuts.randrange(1, 5000)
        append(log, data[at : at + step])
        at += step
        for segment in follower.poll():
            pipeline.process(*segment)
    assert seen == expected


# --- Follower: the cases of the module docstring -----------------------------------------------


def test_append_reads_new_lines_from_the_offset(log: Path) -> None:
    """Append: each poll returns exactly what was appended since the last one."""
    log.write_bytes(lines("a", 3))
    follower = make(log)
    assert lines("a", 3) == read(follower)
    assert read(follower) == b""
    append(log, lines("a", 2, 3))
    assert lines("a", 2, 3) == read(follower)
    assert len(lines("a", 5)) == follower.stats.offset == follower.stats.bytes_read


def test_start_at_end_skips_existing_content_and_a_cut_line(log: Path) -> None:
    """Without from_beginning, an existing file is followed from its end (after its last line)."""
    log.write_bytes(lines("old", 3) + b"half a li")
    follower = make(log, from_beginning=False)
    assert read(follower) == b""
    append(log, b"ne\n" + lines("new", 2))
    assert lines("new", 2) == read(follower)


def test_partial_line_is_held_until_its_newline(log: Path) -> None:
    """Partial line: a last line without newline is held, then handed out whole."""
    log.write_bytes(b"first\nsec")
    follower = make(log)
    assert read(follower) == b"first\n"
    append(log, b"ond")
    assert read(follower) == b""
    assert follower.splitter.partial == b"second"
    append(log, b"\n")
    assert read(follower) == b"second\n"


def test_long_line_is_cut_counted_and_pairing_goes_on(log: Path) -> None:
    """Long line: cut to max_line_bytes, counted, its rest skipped; the next lines are whole."""
    log.write_bytes(b"before\n" + b"x" * 5000 + b"\nafter\n")
    follower = make(log, max_line_bytes=1024)
    assert read(follower) == b"before\n" + b"x" * 1024 + b"\nafter\n"
    assert follower.stats.truncated_lines == 1


def test_rename_and_create_drains_old_file_then_follows_new(log: Path) -> None:
    """Rename and create: the renamed file is drained (also what is written to it after the
    rename), the new one is taken once it has data, and a line cut at the rotation is joined."""
    log.write_bytes(lines("a", 3) + b"cut ")
    follower = make(log)
    assert lines("a", 3) == read(follower)
    with open(log, "ab") as writer:  # the writer keeps its descriptor across the rename
        os.rename(log, f"{log}.1")
        log.write_bytes(b"")  # logrotate create
        assert read(follower) == b""
        writer.write(b"in two\n" + lines("b", 2))  # still to the renamed file
        writer.flush()
        assert b"cut in two\n" + lines("b", 2) == read(follower)
        writer.write(b"cut again ")
    append(log, b"at the rotation\n" + lines("c", 2))  # the writer reopened the path
    assert b"cut again at the rotation\n" + lines("c", 2) == read(follower)
    assert follower.stats.rotations == {"rename": 1}


def test_rename_seen_in_the_instant_before_create_still_waits_for_data(log: Path) -> None:
    """A poll in the instant between logrotate's rename and its create sees no file at the path:
    the renamed file is still followed until the new one has data, so nothing written to it by a
    writer that has not reopened yet is lost."""
    log.write_bytes(lines("a", 2))
    follower = make(log)
    assert read(follower) == lines("a", 2)
    with open(log, "ab") as writer:
        os.rename(log, f"{log}.1")
        assert read(follower) == b""  # the path is missing
        log.write_bytes(b"")  # created
        assert read(follower) == b""
        writer.write(lines("a", 2, 2))
        writer.flush()
        assert read(follower) == lines("a", 2, 2)
    append(log, lines("b", 2))
    assert read(follower) == lines("b", 2)
    assert follower.stats.rotations == {"rename": 1}


def test_atomic_replace_is_a_rename(log: Path, tmp_path: Path) -> None:
    """A file replaced atomically by another (rename over it) is followed from the new start."""
    log.write_bytes(lines("a", 2))
    follower = make(log)
    assert lines("a", 2) == read(follower)
    new = tmp_path / "new"
    new.write_bytes(lines("b", 2))
    os.replace(new, log)
    assert lines("b", 2) == read(follower)
    assert follower.stats.rotations == {"rename": 1}


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_two_renames_between_polls_read_the_middle_file_too(log: Path, compress: bool) -> None:
    """Rename and create twice between two polls (the daemon stopped): the old file is drained,
    then the middle one (``.1``, or ``.1.gz`` with its plain original gone), then the new one:
    every line once, in order, lines cut at each rotation joined; a rotation counted per file."""
    log.write_bytes(lines("a", 3))
    follower = make(log)
    assert read(follower) == lines("a", 3)
    expected = rotate_twice(log, compress=compress)
    got = read(follower)
    got += read(follower)
    assert expected == got
    assert read(follower) == b""
    assert follower.stats.rotations == {"rename": 2}


def test_two_renames_between_polls_new_file_written_while_the_middle_is_read(log: Path) -> None:
    """What is written to the new file while the middle one is being read is not skipped: the new
    file is read from its start once the middle one is done."""
    log.write_bytes(lines("a", 3))
    follower = make(log, max_line_bytes=64)  # small reads: the middle file takes several
    assert read(follower) == lines("a", 3)
    expected = rotate_twice(log, compress=False)
    got = b""
    written = False
    for buf, start, end in follower.poll():
        got += bytes(buf[start:end])
        if b"b line" in got and not written:
            append(log, lines("c", 2, 2))  # the writer goes on meanwhile
            written = True
    got += read(follower)
    assert written
    assert expected + lines("c", 2, 2) == got


def test_two_renames_between_polls_middle_file_followed_until_the_new_one_has_data(
    log: Path,
) -> None:
    """After two rotations the new file may still be empty, its writer still writing to the middle
    one: as with one rename, that file is followed until the new one has data."""
    log.write_bytes(lines("a", 3))
    follower = make(log)
    assert read(follower) == lines("a", 3)
    append(log, lines("a", 2, 3))
    set_mtime(log, 1_000_000)
    os.rename(log, f"{log}.1")
    log.write_bytes(lines("b", 2))
    with open(log, "ab") as writer:  # the writer of the middle file, not reopened yet
        set_mtime(log, 1_000_100)
        os.rename(f"{log}.1", f"{log}.2")
        os.rename(log, f"{log}.1")
        log.write_bytes(b"")  # logrotate create
        got = read(follower)
        got += read(follower)
        assert lines("a", 2, 3) + lines("b", 2) == got
        writer.write(lines("b", 2, 2))
        writer.flush()
        assert lines("b", 2, 2) == read(follower)
    append(log, lines("c", 2))  # the writer reopened the path
    assert lines("c", 2) == read(follower)
    assert follower.stats.rotations == {"rename": 2}


def test_deleted_then_created_again_later(log: Path) -> None:
    """Deleted, created again later: the open file is drained, the new one read from its start."""
    log.write_bytes(lines("a", 2))
    follower = make(log)
    assert lines("a", 2) == read(follower)
    with open(log, "ab") as writer:
        log.unlink()
        writer.write(lines("a", 1, 2))
        writer.flush()
        assert lines("a", 1, 2) == read(follower)
    assert read(follower) == b""
    log.write_bytes(lines("b", 2))
    assert lines("b", 2) == read(follower)
    assert follower.stats.rotations == {"recreate": 1}


@pytest.mark.parametrize("compressed", [False, True], ids=["plain-copy", "gzip-copy"])
def test_copytruncate_reads_the_rest_from_the_copy(log: Path, compressed: bool) -> None:
    """copytruncate: what was written after our offset is read from the copy (plain or gzip),
    then the truncated file from 0; a line cut at the rotation is joined across."""
    log.write_bytes(lines("a", 3))
    follower = make(log)
    assert lines("a", 3) == read(follower)
    append(log, lines("a", 4, 3) + b"cut ")
    copy = Path(f"{log}.1")
    copy.write_bytes(log.read_bytes())  # logrotate copies,
    if compressed:
        gzip_like_logrotate(copy)
    with open(log, "r+b") as f:  # then truncates,
        f.truncate(0)
    append(log, b"across\n" + lines("b", 2))  # and the writer goes on at the new end
    assert lines("a", 4, 3) + b"cut across\n" + lines("b", 2) == read(follower)
    assert follower.stats.rotations == {"copytruncate": 1}


def test_copytruncate_rewritten_past_the_offset_is_seen(log: Path) -> None:
    """Truncated and written again beyond our offset before we looked: the bytes just before
    the offset changed, so it is still a truncation."""
    log.write_bytes(lines("a", 3))
    follower = make(log)
    assert lines("a", 3) == read(follower)
    append(log, lines("a", 1, 3))
    Path(f"{log}.1").write_bytes(log.read_bytes())
    log.write_bytes(lines("b", 10))  # truncated (same inode) and already longer than before
    assert lines("a", 1, 3) + lines("b", 10) == read(follower)
    assert follower.stats.rotations == {"copytruncate": 1}


def test_copytruncate_then_a_rename_before_we_looked(log: Path) -> None:
    """A copytruncate, then a rename-and-create, both before the next poll: the copy is finished
    from our offset, then the truncated file (now renamed) from 0, then the new file."""
    log.write_bytes(lines("a", 3))
    follower = make(log)
    assert read(follower) == lines("a", 3)
    append(log, lines("a", 2, 3))
    Path(f"{log}.100").write_bytes(log.read_bytes())
    with open(log, "r+b") as f:
        f.truncate(0)
    append(log, lines("b", 2))
    os.rename(log, f"{log}.1")
    log.write_bytes(lines("c", 2))
    got = read(follower)
    got += read(follower)
    assert got == lines("a", 2, 3) + lines("b", 2) + lines("c", 2)
    assert follower.stats.rotations == {"copytruncate": 1, "rename": 1}


def test_copytruncate_waits_for_a_copy_being_compressed(log: Path) -> None:
    """While no copy matches, the follower waits up to copy_wait; a copy that comes is used."""
    clock = FakeClock()
    log.write_bytes(lines("a", 3))
    follower = make(log, clock=clock, copy_wait=2.0)
    assert lines("a", 3) == read(follower)
    append(log, lines("a", 2, 3))
    whole = log.read_bytes()
    with open(log, "r+b") as f:
        f.truncate(0)
    append(log, lines("b", 1))
    assert read(follower) == b""  # no copy yet
    clock.now += 1.0
    assert read(follower) == b""
    Path(f"{log}.1.gz").write_bytes(gzip.compress(whole))
    assert lines("a", 2, 3) + lines("b", 1) == read(follower)


def test_truncation_without_a_copy_reads_from_zero_and_drops_the_partial(log: Path) -> None:
    """Truncation without a copy: after copy_wait, the file is read from 0 (kind truncate);
    a partial line held from before the truncation is dropped."""
    clock = FakeClock()
    log.write_bytes(lines("a", 3) + b"never ended")
    follower = make(log, clock=clock, copy_wait=2.0)
    assert lines("a", 3) == read(follower)
    with open(log, "r+b") as f:
        f.truncate(0)
    append(log, lines("b", 2))
    assert read(follower) == b""
    clock.now += 2.0
    assert lines("b", 2) == read(follower)
    assert follower.stats.rotations == {"truncate": 1}


def test_missing_file_and_directory_are_waited_for(tmp_path: Path) -> None:
    """Missing at start, or its directory missing: wait; read it from its start when it comes."""
    path = tmp_path / "not-yet" / "system.log"
    follower = make(path, from_beginning=False)
    assert read(follower) == b""
    assert read(follower) == b""
    path.parent.mkdir()
    assert read(follower) == b""
    path.write_bytes(lines("a", 2))
    assert lines("a", 2) == read(follower)
    assert follower.stats.read_errors == {}  # waiting is not an error


@contextmanager
def as_nobody() -> Iterator[None]:
    """Run the block with the effective uid of nobody when we are root (root reads anything)."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_permission_denied_is_reported_once_and_recovers() -> None:
    """Permission denied: retried at each poll, counted and logged once, read when fixed."""
    directory = tempfile.mkdtemp(prefix="tail-perm-")
    try:
        os.chmod(directory, 0o755)
        path = Path(directory) / "system.log"
        path.write_bytes(lines("a", 2))
        os.chmod(path, 0o000)
        follower = make(path)
        with structlog.testing.capture_logs() as logs, as_nobody():
            assert read(follower) == b""
            assert read(follower) == b""
        assert follower.stats.read_errors == {"permission_denied": 1}
        assert [e["event"] for e in logs] == ["cannot read log file"]
        os.chmod(path, 0o644)  # fixed
        with as_nobody():
            assert lines("a", 2) == read(follower)
        append(path, lines("a", 1, 2))
        with as_nobody():
            assert lines("a", 1, 2) == read(follower)
        assert follower.stats.read_errors == {"permission_denied": 1}
    finally:
        for name in os.listdir(directory):
            os.unlink(os.path.join(directory, name))
        os.rmdir(directory)


# --- Restart -----------------------------------------------------------------------------------


def test_restart_resumes_the_same_file_at_its_offset_with_its_partial(log: Path) -> None:
    """Restart, same file: the restored follower reads only what came after the checkpoint, and
    the partial line held at the checkpoint is completed."""
    log.write_bytes(lines("a", 3) + b"held ")
    first = make(log)
    assert lines("a", 3) == read(first)
    state = checkpoint(first)
    first.close()
    append(log, b"line\n" + lines("b", 2))
    second = make(log, from_beginning=True)
    second.restore(state)
    assert b"held line\n" + lines("b", 2) == read(second)
    assert first.stats.bytes_read == second.stats.bytes_read - len(b"line\n" + lines("b", 2))


def test_restart_after_rotations_while_down_finishes_each_file_once(log: Path) -> None:
    """Restart after rotations while down: the checkpointed file is found by content among the
    rotated (here gzipped), finished from the offset, then each newer rotated file, then the
    current file from its start."""
    state = stopped_after_three_lines(log)
    append(log, lines("a", 2, 3) + b"cut ")
    set_mtime(log, 1_000_000)
    os.rename(log, f"{log}.1")  # rotation 1: a -> .1, b created
    log.write_bytes(b"at rotation\n" + lines("b", 2))
    set_mtime(log, 1_000_100)
    os.rename(f"{log}.1", f"{log}.2")  # rotation 2: a -> .2.gz, b -> .1, c created
    gzip_like_logrotate(Path(f"{log}.2"))
    os.rename(log, f"{log}.1")
    log.write_bytes(lines("c", 2))
    second = make(log)
    second.restore(state)
    got = read(second)
    got += read(second)
    assert lines("a", 2, 3) + b"cut at rotation\n" + lines("b", 2) + lines("c", 2) == got
    assert sum(second.stats.rotations.values()) == 2  # one per file passed; the kind is a guess


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_checkpoint_while_catching_up_two_renames_resumes_exactly(
    tmp_path: Path, compress: bool
) -> None:
    """A checkpoint taken at any settled moment while a follower catches up after two rotations
    between polls (in the old file, between files, in the middle one), then kill -9: the restored
    follower hands out the rest, so that every line is handed out once in all."""
    cuts = in_middle = 0
    while True:
        log = tmp_path / f"cut{cuts}" / "system.log"
        log.parent.mkdir()
        log.write_bytes(lines("a", 3))
        first = make(log, max_line_bytes=64)  # small reads: many moments to checkpoint at
        assert read(first) == lines("a", 3)
        expected = rotate_twice(log, compress=compress)
        got = b""
        state: Optional[FollowerState] = None
        settled = 0
        for buf, start, end in first.poll():
            got += bytes(buf[start:end])
            if first.settled:
                if settled == cuts:
                    state = checkpoint(first)
                    break  # killed right after the checkpoint
                settled += 1
        first.close()
        if state is None:
            break  # past the last moment of the catching up
        in_middle += b"b line" in got
        second = make(log, max_line_bytes=64)
        second.restore(state)
        got += read(second)
        got += read(second)
        assert expected == got, f"checkpoint at settled segment {cuts}"
        assert sum(second.stats.rotations.values()) == 2
        cuts += 1
    assert in_middle >= 3


def test_restart_with_a_held_partial_line_joins_it_across_a_rotation_while_down(
    log: Path,
) -> None:
    """A partial line held at the checkpoint, the file renamed while down and the line finished
    in the new file: the restored follower hands out the line once, whole."""
    log.write_bytes(lines("a", 2) + b"held at the ")
    first = make(log)
    assert read(first) == lines("a", 2)
    state = checkpoint(first)
    first.close()
    append(log, b"checkpoint, ")
    set_mtime(log, 1_000_000)
    os.rename(log, f"{log}.1")
    log.write_bytes(b"finished after the rotation\n" + lines("b", 1))
    second = make(log)
    second.restore(state)
    got = read(second)
    got += read(second)
    assert got == b"held at the checkpoint, finished after the rotation\n" + lines("b", 1)


def test_restart_between_rename_and_reopen_follows_the_renamed_file(log: Path) -> None:
    """Restart after a rename but before the writer reopened the path: the renamed file is
    followed (the writer still writes to it) until the new file has data."""
    log.write_bytes(lines("a", 2))
    first = make(log)
    assert lines("a", 2) == read(first)
    state = checkpoint(first)
    first.close()
    with open(log, "ab") as writer:
        os.rename(log, f"{log}.1")
        log.write_bytes(b"")
        second = make(log)
        second.restore(state)
        writer.write(lines("a", 1, 2))
        writer.flush()
        assert lines("a", 1, 2) == read(second)
        writer.write(lines("a", 1, 3))
        writer.flush()
        assert lines("a", 1, 3) == read(second)
    append(log, lines("b", 2))
    assert lines("b", 2) == read(second)


def test_restart_during_gzip_reads_the_plain_file_not_its_partial_twin(log: Path) -> None:
    """Restart while the compressor writes ``.gz``: the plain original is finished, and the
    incomplete ``.gz`` (same content, newer time) is neither read nor counted twice."""
    log.write_bytes(lines("a", 400))
    first = make(log)
    assert lines("a", 400) == read(first)
    state = checkpoint(first)
    first.close()
    append(log, lines("a", 100, 400))
    set_mtime(log, 1_000_000)
    os.rename(log, f"{log}.1")
    whole = gzip.compress(Path(f"{log}.1").read_bytes())
    Path(f"{log}.1.gz").write_bytes(whole[: len(whole) // 2])  # being written: newer, incomplete
    log.write_bytes(lines("b", 2))
    second = make(log)
    second.restore(state)
    got = read(second)
    got += read(second)
    assert lines("a", 100, 400) + lines("b", 2) == got
    assert second.stats.read_errors == {}


def test_restart_waits_for_a_copy_on_its_way_then_gives_up(log: Path) -> None:
    """Restart when no file holds the checkpointed content: wait up to copy_wait (a compressor
    may be replacing it), then read the current file from its start (kind recreate)."""
    state = stopped_after_three_lines(log)
    log.unlink()
    log.write_bytes(lines("b", 2))
    second, clock = restored(log, state, copy_wait=2.0)
    assert read(second) == b""
    assert open_offset(checkpoint(second)) == open_offset(state)  # still looking: position kept
    clock.now += 2.0
    assert lines("b", 2) == read(second)
    assert second.stats.rotations == {"recreate": 1}


def test_restart_catches_inode_reuse_by_content(log: Path) -> None:
    """Same device and inode but other content (a reused inode): not the checkpointed file."""
    state = stopped_after_three_lines(log)
    with open(log, "r+b") as f:  # same inode, new content longer than the offset
        f.truncate(0)
        f.write(lines("z", 9))
    second, clock = restored(log, state, copy_wait=0.5)
    assert read(second) == b""
    clock.now += 1.0
    assert lines("z", 9) == read(second)


def test_restart_of_a_file_missing_at_the_checkpoint_reads_it_from_its_start(
    tmp_path: Path,
) -> None:
    """A known file that was missing at the checkpoint is read from its start when it comes,
    even without from_beginning: nothing written to it while the daemon was down is lost."""
    path = tmp_path / "later.log"
    first = make(path, from_beginning=False)
    assert read(first) == b""
    state = checkpoint(first)
    path.write_bytes(lines("a", 2))
    second = make(path, from_beginning=False)
    second.restore(state)
    assert lines("a", 2) == read(second)


def test_snapshot_is_none_before_the_first_poll(log: Path) -> None:
    """Before its first poll a follower has no position to save."""
    assert make(log).snapshot() is None


def test_settled_is_false_only_between_the_segments_of_one_read(log: Path) -> None:
    """``settled`` is False while a read's segments are still being handed out, so that a
    checkpoint is never taken with the offset already past unprocessed segments."""
    log.write_bytes(b"par")
    follower = make(log)
    assert read(follower) == b""
    append(log, b"tial\n" + lines("a", 3))
    seen = [follower.settled for _ in follower.poll()]
    assert seen == [False, True]


# --- identity by content: the ledger ----------------------------------------------------------


def test_gzip_twin_being_written_while_the_writer_goes_on_is_not_read_again(log: Path) -> None:
    """logrotate ``compress`` without ``delaycompress``: the renamed file is drained, its ``.gz``
    appears piece by piece (newer modification time, its start not decodable at first) while the
    writer already writes the new file: every line once, the ``.gz`` never read."""
    log.write_bytes(lines("a", 3000))
    follower = make(log)
    assert read(follower) == lines("a", 3000)
    rotated = Path(f"{log}.1")
    os.rename(log, rotated)
    log.write_bytes(lines("b", 2))
    whole = gzip.compress(rotated.read_bytes())
    gz = Path(f"{log}.1.gz")
    got = b""
    for cut in (10, len(whole) // 3, len(whole) // 2, len(whole)):
        gz.write_bytes(whole[:cut])  # the compressor at work, the writer going on
        set_mtime(gz, 2_000_000_000)
        got += read(follower)
        append(log, lines("b", 1, 2 + cut % 7))
    rotated.unlink()
    got += read(follower)
    expected = lines("b", 2) + b"".join(lines("b", 1, 2 + c % 7) for c in (10, len(whole) // 3))
    expected += b"".join(lines("b", 1, 2 + c % 7) for c in (len(whole) // 2, len(whole)))
    assert expected == got
    assert follower.stats.rotations == {"rename": 1}


def test_times_decide_nothing_an_old_file_with_a_new_time_is_not_read_again(log: Path) -> None:
    """A rotated file whose modification time changes (touched, copied with a new time) is still
    the content the ledger knows: it is not read again."""
    log.write_bytes(lines("a", 5))
    follower = make(log)
    assert read(follower) == lines("a", 5)
    os.rename(log, f"{log}.1")
    log.write_bytes(lines("b", 2))
    assert read(follower) == lines("b", 2)
    set_mtime(Path(f"{log}.1"), 2_000_000_000)  # now the "newest" rotated file
    os.rename(log, f"{log}.2")
    log.write_bytes(lines("c", 2))
    assert read(follower) + read(follower) == lines("c", 2)


@pytest.mark.parametrize(
    "rotated_name",
    [
        *("system.log.1", "system.log.1.gz", "system.log-20261201.gz"),
        *("system.1.log", "system.1.log.gz"),
    ],
)
def test_restart_finds_the_file_under_each_rotation_naming(log: Path, rotated_name: str) -> None:
    """logrotate (numbered, ``dateext``) and logback (fixed window) names are all looked at: a
    file rotated while the daemon was down is finished from its offset under any of them."""
    state = stopped_after_three_lines(log)
    append(log, lines("a", 2, 3))
    rotated = log.with_name(rotated_name.replace(".gz", ""))
    os.rename(log, rotated)
    if rotated_name.endswith(".gz"):
        gzip_like_logrotate(rotated)
    log.write_bytes(lines("b", 2))
    second = make(log)
    second.restore(state)
    assert read(second) + read(second) == lines("a", 2, 3) + lines("b", 2)


def test_rotated_files_in_another_directory_are_found_when_configured(
    log: Path, tmp_path: Path
) -> None:
    """logrotate ``olddir``: a directory given in ``rotated`` is searched for the same names."""
    old = tmp_path / "old"
    old.mkdir()
    state = stopped_after_three_lines(log)
    append(log, lines("a", 2, 3))
    os.rename(log, old / "system.log.1")
    log.write_bytes(lines("b", 1))
    second = make(log, rotated=[str(old)])
    second.restore(state)
    assert read(second) + read(second) == lines("a", 2, 3) + lines("b", 1)
    third = make(log)  # without it: the old file is not found, the path is read after copy_wait
    third.restore(state)
    assert read(third) == b""


def test_first_start_records_rotated_files_as_read_and_from_beginning_reads_them(
    log: Path,
) -> None:
    """At the first start the rotated files present are taken as read (a later look at them
    reads nothing); with from_beginning they are read, oldest first, then the path."""
    Path(f"{log}.2.gz").write_bytes(gzip.compress(lines("a", 2)))
    set_mtime(Path(f"{log}.2.gz"), 1_000_000)
    Path(f"{log}.1").write_bytes(lines("b", 2))
    set_mtime(Path(f"{log}.1"), 1_000_100)
    log.write_bytes(lines("c", 2))
    fresh = make(log, from_beginning=False)
    assert read(fresh) == b""
    os.rename(log, f"{log}.0")  # a rotation: the files taken as read stay read
    log.write_bytes(lines("d", 1))
    assert read(fresh) == lines("d", 1)
    assert make(Path(f"{log}.x"), from_beginning=False).snapshot() is None
    Path(f"{log}.0").unlink()
    log.write_bytes(lines("c", 2))
    everything = make(log, from_beginning=True)
    assert read(everything) == lines("a", 2) + lines("b", 2) + lines("c", 2)


def test_entries_of_files_gone_are_forgotten_after_a_while(log: Path) -> None:
    """The ledger keeps an entry while some name shows its file; once none does, for longer than
    forget_after, the entry is dropped: the ledger stays as small as the rotated set."""
    clock = FakeClock()
    follower = make(log, clock=clock, forget_after=60.0)
    log.write_bytes(lines("a", 2))
    assert read(follower) == lines("a", 2)
    for n in range(5):
        os.rename(log, f"{log}.{n}")
        log.write_bytes(lines(f"r{n}", 2))
        assert read(follower) + read(follower) == lines(f"r{n}", 2)
    assert len(checkpoint(follower).ledger) == 6
    for n in range(4):
        Path(f"{log}.{n}").unlink()
    os.rename(log, f"{log}.9")
    log.write_bytes(lines("z", 1))
    assert read(follower) + read(follower) == lines("z", 1)
    assert len(checkpoint(follower).ledger) == 7  # missing, not yet for long
    clock.now += 61
    os.rename(log, f"{log}.10")
    log.write_bytes(lines("y", 1))
    assert read(follower) + read(follower) == lines("y", 1)
    assert len(checkpoint(follower).ledger) == 4  # .4, .9, .10 and the path


def test_gzip_that_never_completes_is_reported_once_and_read_once(log: Path) -> None:
    """A ``.gz`` cut short (its compressor died, its original gone) holding the checkpointed
    file: what it holds is read once, reported once, and the follower moves on."""
    log.write_bytes(lines("a", 3))
    first = make(log)
    assert read(first) == lines("a", 3)
    state = checkpoint(first)
    append(log, lines("a", 3000, 3))
    os.rename(log, f"{log}.1")
    whole = gzip.compress(Path(f"{log}.1").read_bytes())
    Path(f"{log}.1.gz").write_bytes(whole[: len(whole) * 2 // 3])
    Path(f"{log}.1").unlink()
    log.write_bytes(lines("b", 2))
    second, clock = restored(log, state, copy_wait=2.0)
    got = read(second)
    assert got and lines("a", 3000, 3).startswith(got)
    clock.now += 2.0
    got += read(second) + read(second)
    assert got.endswith(lines("b", 2))
    assert second.stats.read_errors == {"compressed_file_incomplete": 1}
    clock.now += 10.0
    os.rename(log, f"{log}.2")
    log.write_bytes(lines("c", 1))
    assert read(second) + read(second) == lines("c", 1)
    assert second.stats.read_errors == {"compressed_file_incomplete": 1}


def test_a_fifo_at_the_path_is_reported_not_opened(tmp_path: Path) -> None:
    """A FIFO (or any non-regular file) at the path never blocks the follower: it is reported
    once, and a regular file that replaces it is read."""
    path = tmp_path / "system.log"
    os.mkfifo(path)
    follower = make(path)
    assert read(follower) == b""
    assert read(follower) == b""
    assert follower.stats.read_errors == {"not_a_regular_file": 1}
    path.unlink()
    path.write_bytes(lines("a", 2))
    assert read(follower) == lines("a", 2)


@pytest.mark.parametrize("suffix", [".gz", ".xz", ".bz2"])
def test_restart_finishes_a_file_compressed_with_gzip_xz_or_bzip2(log: Path, suffix: str) -> None:
    """Rotated while down and compressed with gzip, xz or bzip2 (logrotate's ``compresscmd``),
    the checkpointed file is found by its content (told by the first bytes, not the name) and
    finished from its offset; its plain original, once there too, is not read again."""
    import bz2
    import lzma

    compress = {".gz": gzip.compress, ".xz": lzma.compress, ".bz2": bz2.compress}[suffix]
    log.write_bytes(lines("a", 300))
    first = make(log)
    assert read(first) == lines("a", 300)
    state = checkpoint(first)
    append(log, lines("a", 200, 300))
    Path(f"{log}.1{suffix}").write_bytes(compress(log.read_bytes()))
    os.rename(log, f"{log}.1")
    log.write_bytes(lines("b", 2))
    second = make(log)
    second.restore(state)
    assert read(second) + read(second) == lines("a", 200, 300) + lines("b", 2)
    Path(f"{log}.1").unlink()
    third = make(log)
    third.restore(state)
    assert read(third) + read(third) == lines("a", 200, 300) + lines("b", 2)


def test_a_rotated_file_in_a_format_not_read_here_is_never_read_as_text(log: Path) -> None:
    """A rotated file compressed with zstd (no decoder here) is not mistaken for a plain log:
    after two rotations between polls, its bytes are not handed out as lines."""
    log.write_bytes(lines("a", 2))
    follower = make(log)
    assert read(follower) == lines("a", 2)
    os.rename(log, f"{log}.2")
    Path(f"{log}.1.zst").write_bytes(b"\x28\xb5\x2f\xfd" + b"\n compressed \n bytes \n")
    log.write_bytes(lines("b", 1))
    assert read(follower) + read(follower) == lines("b", 1)


def test_a_log_path_that_is_a_link_finds_rotated_files_beside_its_target(tmp_path: Path) -> None:
    """The configured path is a symbolic link to the real log elsewhere: the files rotated beside
    the target (where logrotate or logback put them) are found too."""
    data = tmp_path / "data"
    data.mkdir()
    real = data / "system.log"
    link = tmp_path / "system.log"
    link.symlink_to(real)
    state = stopped_after_three_lines(link)  # written through the link, to its target
    append(real, lines("a", 2, 3))
    os.rename(real, data / "system.log.1")
    real.write_bytes(lines("b", 1))
    second = make(link)
    second.restore(state)
    assert read(second) + read(second) == lines("a", 2, 3) + lines("b", 1)


def read_while_compressed(follower: Follower, clock: FakeClock, gz: Path, whole: bytes) -> bytes:
    """A slow compressor writes ``gz`` (``whole`` when done) a tenth at a time, 1.5 s of the clock
    apart: less than ``copy_wait`` between two writes, far more in all. The follower polls after
    each write, and twice at the end: the bytes it handed out."""
    got = b""
    for tenth in range(1, 10):
        gz.write_bytes(whole[: len(whole) * tenth // 10])
        got += read(follower)
        clock.now += 1.5
    gz.write_bytes(whole)
    return got + read(follower) + read(follower)


def test_restart_waits_for_a_slow_compressor_as_long_as_it_writes(log: Path) -> None:
    """Restart while logback compresses the rolled file (from a name outside the rotated globs)
    more slowly than ``copy_wait``: the follower reads the ``.gz`` as it grows, waits as long as it
    grows, and finishes it before the new file: every line once, in order, nothing reported."""
    state = stopped_after_three_lines(log)
    append(log, lines("a", 30_000, 3))
    rolled = log.with_name("system.log1733.tmp")
    os.rename(log, rolled)
    whole = gzip.compress(rolled.read_bytes(), compresslevel=1)
    rolled.unlink()
    log.write_bytes(lines("b", 2))
    gz = log.with_name("system-2026-12-02.1.log.gz")
    second, clock = restored(log, state, copy_wait=2.0)
    got = read_while_compressed(second, clock, gz, whole)
    assert got == lines("a", 30_000, 3) + lines("b", 2)
    assert second.stats.read_errors == {}


def test_a_rotated_file_never_opened_is_finished_before_newer_ones_while_compressed(
    log: Path,
) -> None:
    """The follower fell behind by a whole file (held still, or waiting on an older one): the path
    rolled twice, and the middle file, never opened, is now a ``.gz`` its compressor is still
    writing (logback, from a name outside the rotated globs). It is read as it grows and finished
    before the new file: every line once, in order."""
    log.write_bytes(lines("a", 3))
    clock = FakeClock()
    follower = make(log, clock=clock, copy_wait=2.0)
    assert read(follower) == lines("a", 3)
    os.rename(log, f"{log}.1")  # the first roll: kept plain
    log.write_bytes(lines("b", 30_000))  # the middle file: never opened by the follower
    rolled = log.with_name("system.log1733.tmp")
    os.rename(log, rolled)  # the second roll, compressed from a temporary name
    whole = gzip.compress(rolled.read_bytes(), compresslevel=1)
    rolled.unlink()
    log.write_bytes(lines("c", 2))
    gz = log.with_name("system-2026-12-02.2.log.gz")
    got = read_while_compressed(follower, clock, gz, whole)
    assert got == lines("b", 30_000) + lines("c", 2)
    assert follower.stats.read_errors == {}


# --- files that begin alike (issue 19): the head finds candidates, it never proves identity ----

RUN = b"x"  # a run of one repeated character, longer than the head where a rotation cuts it
HEADER = b"# MP system.log " + b"=" * 1500 + b"\n"  # a fixed header longer than the head


def alike(kind: str, name: str, n: int) -> bytes:
    """A file's content that begins like every other file of ``kind``: inside a run of one
    repeated character (the previous file ended inside it), or with the same long header."""
    if kind == "run":
        return RUN * 2000 + b"\n" + lines(name, n) + RUN * 700  # ends inside the next run
    return HEADER + lines(name, n)


def whole_lines(data: bytes) -> bytes:
    return data[: data.rfind(b"\n") + 1]


def rotate(log: Path, *, compress: bool) -> None:
    """logrotate ``create``: ``.1`` -> ``.2``, the path -> ``.1`` (compressed at once with
    ``compress``), each file written apart in time."""
    gz = ".gz" if compress else ""
    if os.path.exists(f"{log}.1{gz}"):
        os.rename(f"{log}.1{gz}", f"{log}.2{gz}")
    os.rename(log, f"{log}.1")
    if compress:
        gzip_like_logrotate(Path(f"{log}.1"))


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("kind", ["run", "header"])
def test_files_that_begin_alike_two_rotations_between_polls_each_read_once(
    log: Path, kind: str, compress: bool
) -> None:
    """Two rotations between two polls, each file beginning with the same 2 KiB (a run of one
    character cut by each rotation, or a fixed header): the middle file is not taken for the
    one read before it; every line is handed out once, in order."""
    a, b, c = alike(kind, "a", 5), alike(kind, "b", 7), alike(kind, "c", 3)
    log.write_bytes(a)
    follower = make(log)
    got = read(follower)
    set_mtime(log, 1_000_000)
    rotate(log, compress=compress)
    log.write_bytes(b)
    set_mtime(log, 1_000_100)
    rotate(log, compress=compress)
    log.write_bytes(c)
    got += read(follower)
    got += read(follower)
    assert whole_lines(a + b + c) == got


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("kind", ["run", "header"])
def test_files_that_begin_alike_rotated_while_down_each_read_once(
    log: Path, kind: str, compress: bool
) -> None:
    """A restart after two rotations while down, every file beginning with the same 2 KiB: the
    checkpointed file is finished, the file that begins like it is read whole, then the path."""
    a, b, c = alike(kind, "a", 5), alike(kind, "b", 7), alike(kind, "c", 3)
    log.write_bytes(a)
    first = make(log)
    got = read(first)
    state = checkpoint(first)
    first.close()
    append(log, lines("a", 2, 5))
    a += lines("a", 2, 5)
    set_mtime(log, 1_000_000)
    rotate(log, compress=compress)
    log.write_bytes(b)
    set_mtime(log, 1_000_100)
    rotate(log, compress=compress)
    log.write_bytes(c)
    second = make(log)
    second.restore(state)
    got += read(second)
    got += read(second)
    assert whole_lines(a + b + c) == got


@pytest.mark.parametrize("kind", ["run", "header"])
def test_rotated_files_that_begin_alike_at_first_start_are_all_taken_as_read(
    log: Path, kind: str
) -> None:
    """First start from the end with rotated files that begin alike: each is taken as read, so
    a rotation later reads only what is new (none of them again, whole or in part)."""
    Path(f"{log}.2.gz").write_bytes(gzip.compress(alike(kind, "a", 5)))
    set_mtime(Path(f"{log}.2.gz"), 1_000_000)
    Path(f"{log}.1").write_bytes(alike(kind, "b", 40))
    set_mtime(Path(f"{log}.1"), 1_000_100)
    log.write_bytes(whole_lines(alike(kind, "c", 3)))
    fresh = make(log, from_beginning=False)
    assert read(fresh) == b""
    rotate(log, compress=False)
    log.write_bytes(lines("d", 1))
    assert read(fresh) == lines("d", 1)


def test_a_copy_of_a_rotated_file_is_not_read_again(log: Path) -> None:
    """A rotated file copied under another rotated name (an operator's backup) holds the same
    content: it is not read a second time."""
    log.write_bytes(HEADER + lines("a", 5))
    follower = make(log)
    assert read(follower) == HEADER + lines("a", 5)
    rotate(log, compress=False)
    log.write_bytes(HEADER + lines("b", 2))
    assert read(follower) == HEADER + lines("b", 2)
    Path(f"{log}.1-copy").write_bytes(Path(f"{log}.1").read_bytes())
    rotate(log, compress=False)
    log.write_bytes(lines("c", 1))
    assert read(follower) == lines("c", 1)


# --- the model's shrunk failures (tests/unit/follow/test_model.py), each a scenario ----------


def test_two_tiny_rotated_files_with_the_same_bytes_are_both_read(log: Path) -> None:
    """Two rotated plain files never read, each holding the same one byte (cut from one line):
    two files, two contents; both are read, oldest first."""
    Path(f"{log}.2").write_bytes(b"0")
    set_mtime(Path(f"{log}.2"), 1_000_000)
    Path(f"{log}.1").write_bytes(b"0")
    set_mtime(Path(f"{log}.1"), 1_000_100)
    log.write_bytes(b" 000002 end\n")
    assert read(make(log)) == b"00 000002 end\n"


def test_a_new_file_that_begins_with_all_of_a_tiny_file_is_not_taken_for_it(log: Path) -> None:
    """A tiny rotated file ("0") still there, and a new file at the path whose first byte is
    the same: the path's file is not the tiny file's content read on (its own file still holds
    that content), it is read from its start."""
    Path(f"{log}.1").write_bytes(b"0")
    set_mtime(Path(f"{log}.1"), 1_000_000)
    log.write_bytes(b" 000002 end\n")
    first = make(log)
    assert read(first) == b"0 000002 end\n"
    state = checkpoint(first)
    first.close()
    os.truncate(log, 0)
    append(log, b"00001 line 0\n")
    second, clock = restored(log, state)
    got = read(second)
    clock.now += 3
    got += read(second)
    assert got == b"00001 line 0\n"


def test_a_gz_written_while_its_original_is_read_is_not_read_again(log: Path) -> None:
    """logback's fixed window while the follower catches up: the renamed file is read, and its
    ``.gz`` (written by the compressor meanwhile, then complete, the original removed) is
    the same content: never read again."""
    log.write_bytes(lines("a", 3))
    follower = make(log, max_line_bytes=64)
    assert read(follower) == lines("a", 3)
    append(log, lines("a", 300, 3))
    os.rename(log, log.with_name("system.1.log"))
    plain = log.with_name("system.1.log")
    whole = gzip.compress(plain.read_bytes())
    out = log.with_name("system.1.log.gz")
    out.write_bytes(whole[: len(whole) // 2])
    log.write_bytes(lines("b", 2))
    got = read(follower)
    out.write_bytes(whole)
    plain.unlink()
    got += read(follower)
    os.rename(log, f"{log}.1")
    log.write_bytes(lines("c", 1))
    got += read(follower)
    assert got == lines("a", 300, 3) + lines("b", 2) + lines("c", 1)


def test_a_compressed_file_of_which_one_byte_is_written_is_waited_for(log: Path) -> None:
    """A compressor has written only the first byte of its magic (``\\x1f``): the file is not
    read as text; it is waited for, and read once it can be decoded."""
    data = lines("a", 2)
    rotated = Path(f"{log}.200.gz")
    rotated.write_bytes(gzip.compress(data)[:1])
    log.write_bytes(lines("b", 1))
    follower = make(log)
    assert read(follower) == b""
    rotated.write_bytes(gzip.compress(data))
    assert read(follower) == data + lines("b", 1)


def test_a_rotated_file_that_begins_with_all_of_the_open_file_is_not_taken_for_it(
    log: Path,
) -> None:
    """The file being read holds one byte (``0``), is renamed and compressed (its name gone,
    the follower still holds it), and the next file, renamed before the follower looked, begins
    with that byte: it is another content (the open file shows it), read whole after the first."""
    log.write_bytes(b"")
    follower = make(log)
    assert read(follower) == b""
    with open(log, "ab") as writer:
        writer.write(b"0")
    os.rename(log, f"{log}.200")
    gz = gzip_like_logrotate(Path(f"{log}.200"))
    set_mtime(gz, 1_000_000)
    log.write_bytes(b"00001 line 0\nline 1\n")
    set_mtime(log, 1_000_100)
    os.rename(log, f"{log}.1")
    log.write_bytes(b"")
    got = read(follower)
    got += read(follower)
    assert got == b"000001 line 0\nline 1\n"


def test_restart_inside_a_leading_run_finds_its_gz_not_a_newer_file_with_a_longer_run(
    log: Path,
) -> None:
    """The checkpoint was taken while the file was read only inside its leading run of ``=``;
    while down it was rotated and compressed (its original gone), and the new file begins with
    a longer run of ``=``: both hold the checkpointed bytes, but a plain file of another inode
    is not a copy of a file that is gone; the ``.gz`` is, and is read on; the new file whole."""
    log.write_bytes(b"=" * 3000)
    first = make(log)
    assert read(first) == b""  # a partial line, held
    state = checkpoint(first)
    first.close()
    append(log, b"=" * 1000 + b"\n" + lines("a", 3))
    set_mtime(log, 1_000_000)
    os.rename(log, f"{log}.1")
    log.write_bytes(b"=" * 5000 + b"\n" + lines("b", 2))  # logrotate create, then compress
    gzip_like_logrotate(Path(f"{log}.1"))
    second = make(log)
    second.restore(state)
    got = read(second)
    got += read(second)
    assert got == b"=" * 4000 + b"\n" + lines("a", 3) + b"=" * 5000 + b"\n" + lines("b", 2)


def test_copytruncate_then_the_emptied_file_renamed_reads_the_copy_once(log: Path) -> None:
    """copytruncate, then logrotate ``create`` renames the emptied file before the follower
    looked: the copy holds only what was read; it is not taken for new content (its own file,
    emptied, is the one held)."""
    follower, clock = following(log, b"#1:line 0\nline 1\n")
    Path(f"{log}.100").write_bytes(log.read_bytes())
    os.truncate(log, 0)
    os.rename(log, f"{log}.1")
    log.write_bytes(b"")
    assert poll_through_waits(follower, clock) == b""


def test_a_second_copytruncate_while_waiting_for_the_first_copy_is_read_in_order(
    log: Path,
) -> None:
    """A truncation with no copy (the follower waits for one), new lines, and a copytruncate of
    them before the wait is over: the second copy is read, then the file from its start."""
    follower, clock = following(log, b" #1: end\n")
    os.truncate(log, 0)
    assert read(follower) == b""  # the copy is waited for
    append(log, b"#2:line 0\nline 1\n")
    assert read(follower) == b""
    Path(f"{log}.100").write_bytes(log.read_bytes())
    os.truncate(log, 0)
    append(log, b" #3: end\n")
    clock.now += 3  # a new rotated file: the wait for a copy starts again
    assert poll_through_waits(follower, clock) == b"#2:line 0\nline 1\n #3: end\n"


def test_a_truncated_file_compressed_while_its_copy_is_waited_for_is_read_once(
    log: Path,
) -> None:
    """Truncated with no copy (the follower waits for one, holding the file), written again,
    then renamed and compressed (logrotate ``compress``, the original removed): its ``.gz`` is
    the same content as the file held, read once, from the file held."""
    follower, clock = following(log, b" #1: end\n")
    os.truncate(log, 0)
    assert read(follower) == b""  # the copy is waited for
    append(log, b"#2:line 0\nline 1\n")
    os.rename(log, f"{log}.200")
    log.write_bytes(b"")
    gzip_like_logrotate(Path(f"{log}.200"))
    clock.now += 3
    assert poll_through_waits(follower, clock) == b"#2:line 0\nline 1\n"


def test_a_truncated_file_rotated_away_is_read_before_newer_rotated_files(log: Path) -> None:
    """Truncated with no copy (the follower waits), written again, renamed and compressed, and
    the next file renamed too, all before the wait ends: the truncated file's new lines come
    before the newer file's (only rotated files older than it are read first)."""
    follower, clock = following(log, b"")
    writer = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(writer, b" #1: end\n")
        assert read(follower) == b" #1: end\n"
        os.truncate(log, 0)
        assert read(follower) == b""
        os.write(writer, b"#2:line 0\nline 1\n")
        set_mtime(log, 1_000_000)
        os.rename(log, f"{log}.200")
        log.write_bytes(b"")
        gzip_like_logrotate(Path(f"{log}.200"))
        os.rename(log, f"{log}.1")
        log.write_bytes(b"")
        Path(f"{log}.1").write_bytes(b" #3: end\n")
        set_mtime(Path(f"{log}.1"), 1_000_100)
    finally:
        os.close(writer)
    got = b""
    for _ in range(4):
        clock.now += 2.1
        got += read(follower)
    assert got == b"#2:line 0\nline 1\n #3: end\n"


def stopped_after_a_copytruncate_it_did_not_see(log: Path) -> FollowerState:
    """A follower read a log of two lines, which was then copied to ``.100`` and truncated;
    checkpointed before it looked again and stopped: its state."""
    first, _ = following(log, b"#1:line 0\nline 1\n")
    Path(f"{log}.100").write_bytes(log.read_bytes())
    os.truncate(log, 0)
    state = checkpoint(first)
    first.close()
    return state


def test_restart_after_copytruncate_and_a_rename_of_the_emptied_file_reads_the_copy_once(
    log: Path,
) -> None:
    """Checkpointed after a copytruncate the follower had not seen, killed; the emptied file is
    then renamed by logrotate ``create``: the copy holds the checkpointed content (its own file,
    emptied, holds it no more), read on from the offset, not again from its start."""
    state = stopped_after_a_copytruncate_it_did_not_see(log)
    os.rename(log, f"{log}.1")
    log.write_bytes(b"")
    second, clock = restored(log, state)
    assert poll_through_waits(second, clock) == b""


def test_restart_after_copytruncate_and_the_emptied_file_compressed_reads_the_copy_once(
    log: Path,
) -> None:
    """Checkpointed after a copytruncate, killed; the emptied file is then rotated and
    compressed (its original removed): the plain copy is still the checkpointed content's
    copy (a rotated file), read on from the offset, not again from its start."""
    state = stopped_after_a_copytruncate_it_did_not_see(log)
    os.rename(log, f"{log}.200")
    log.write_bytes(b"")
    gzip_like_logrotate(Path(f"{log}.200"))
    second, clock = restored(log, state)
    assert poll_through_waits(second, clock) == b""


def test_an_empty_gz_just_created_by_a_compressor_is_waited_for(log: Path) -> None:
    """logback's time-based roll of a file the follower never looked at: renamed to a temporary
    name no glob sees, and its ``.gz`` just created (empty) when the follower looks: the ``.gz``
    is waited for, and read before the new file."""
    follower, clock = following(log, b"")
    log.write_bytes(b"#1:line ")
    os.rename(log, log.with_name("system.log1.tmp"))
    out = log.with_name("system-2026-12-02.1.log.gz")
    out.write_bytes(b"")
    log.write_bytes(b"0\nline 1\n")
    assert read(follower) == b""
    clock.now += 1
    out.write_bytes(gzip.compress(b"#1:line "))
    log.with_name("system.log1.tmp").unlink()
    got = read(follower)
    got += read(follower)
    assert got == b"#1:line 0\nline 1\n"


def test_a_gz_completed_between_the_proof_and_its_length_is_its_entrys_copy(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """logback's fixed window under load: the follower finds the ``.gz`` half written (its start
    proves nothing yet), and the compressor finishes it and removes the original between the
    follower's proof and its look at the length. Whole now, it holds exactly the content read:
    looked at again, not read as new content (it was: every line of it a second time)."""
    log.write_bytes(lines("a", 3000))
    follower = make(log)
    assert read(follower) == lines("a", 3000)
    rotated = log.with_name("system.1.log")
    os.rename(log, rotated)
    log.write_bytes(lines("b", 2))
    whole = gzip.compress(rotated.read_bytes())
    gz = log.with_name("system.1.log.gz")
    gz.write_bytes(whole[: len(whole) // 2])
    content = follower._content

    def compressor_finishes_first(p: Any) -> Any:
        if gz.read_bytes() != whole:
            gz.write_bytes(whole)
            rotated.unlink()
        return content(p)

    monkeypatch.setattr(follower, "_content", compressor_finishes_first)
    got = read(follower) + read(follower) + read(follower)
    assert got == lines("b", 2)


def test_a_gz_being_written_of_the_renamed_file_still_growing_is_not_new_content(
    log: Path,
) -> None:
    """logrotate ``compress`` without ``delaycompress``: the file is renamed, the writer goes on
    writing to it until it reopens, and the compressor has written past what the follower read
    but not to the end. The ``.gz`` begins with all that was read, its end is not there yet: it
    is waited for, never read as new content; every line once."""
    log.write_bytes(lines("a", 3000))
    follower = make(log)
    assert read(follower) == lines("a", 3000)
    rotated = Path(f"{log}.1")
    os.rename(log, rotated)
    append(rotated, lines("a", 500, 3000))  # the writer has not reopened yet
    whole = gzip.compress(rotated.read_bytes())
    gz = Path(f"{log}.1.gz")
    gz.write_bytes(whole[: len(whole) * 9 // 10])  # the compressor at work
    log.write_bytes(lines("b", 2))
    got = read(follower) + read(follower)
    gz.write_bytes(whole)
    rotated.unlink()
    got += read(follower) + read(follower)
    assert got == lines("a", 500, 3000) + lines("b", 2)


# --- a rotated file shorter than a content it begins like: a copy only when proven -----------


def test_restart_a_file_truncated_and_written_shorter_with_the_same_start_is_read_whole(
    log: Path,
) -> None:
    """While the daemon is down, the file it was reading is truncated, written again with fewer
    bytes that begin with the same run (a new content), and rotated. It is the entry's own
    inode, shorter than the entry and not its start: new content, read whole (it was taken for
    a shorter copy of the content read, and lost)."""
    log.write_bytes(RUN * 2000 + b" end\n")
    first = make(log)
    assert read(first) == RUN * 2000 + b" end\n"
    state = checkpoint(first)
    first.close()
    os.truncate(log, 0)
    append(log, RUN * 1500 + b"\n")
    os.rename(log, f"{log}.1")
    log.write_bytes(b"")
    second, clock = restored(log, state)
    assert poll_through_waits(second, clock) == RUN * 1500 + b"\n"


def test_a_copy_of_what_a_truncated_file_holds_since_is_read(log: Path) -> None:
    """The file read is truncated (the follower waits for a copy), written again with fewer
    bytes beginning with the same run, then copytruncated: the copy is the truncated file's new
    content, not a shorter copy of the content read; it is read, then the file from its start."""
    follower, clock = following(log, RUN * 2000 + b" end\n")
    os.truncate(log, 0)
    assert read(follower) == b""  # the copy is waited for
    append(log, RUN * 1500 + b"\n")
    Path(f"{log}.100").write_bytes(log.read_bytes())
    os.truncate(log, 0)
    append(log, b"next\n")
    assert poll_through_waits(follower, clock) == RUN * 1500 + b"\nnext\n"


def rename_for_compress(log: Path) -> tuple[Path, bytes]:
    """logrotate ``compress`` without ``delaycompress``, racing the writer: the file is renamed
    and the compressor takes its copy; the writer then adds its last lines to the renamed file
    before it reopens. The renamed file, and the compressed bytes that lack those lines."""
    rotated = Path(f"{log}.1")
    os.rename(log, rotated)
    return rotated, gzip.compress(rotated.read_bytes())


def compressor_done(rotated: Path, copy: bytes) -> Path:
    """The compressor writes its ``.gz`` and removes the original; the writer has reopened."""
    gz = Path(f"{rotated}.gz")
    gz.write_bytes(copy)
    rotated.unlink()
    return gz


def test_a_gz_that_lacks_the_writers_last_lines_read_from_the_original_is_not_read_again(
    log: Path,
) -> None:
    """The compressor's race, the follower having read the writer's last lines from the renamed
    original, now gone: the ``.gz`` is shown to be the start of the content read (the last
    bytes read are kept for this), so it is not read again."""
    follower, clock = following(log, lines("a", 300))
    rotated, copy = rename_for_compress(log)
    append(rotated, lines("a", 50, 300))
    assert read(follower) == lines("a", 50, 300)  # from the renamed file, held open
    log.write_bytes(lines("b", 2))
    compressor_done(rotated, copy)
    assert poll_through_waits(follower, clock) == lines("b", 2)


@pytest.mark.parametrize("rotations_after", [0, 6])
def test_restart_a_gz_that_lacks_the_last_lines_read_is_not_read_again(
    log: Path, rotations_after: int
) -> None:
    """The same race finished while the daemon is down: the checkpoint keeps the last bytes
    read, so the restarted follower proves the shorter ``.gz`` a copy; once proven it is
    recorded as read, also after more rotations (when those bytes are no longer kept) and
    another restart."""
    log.write_bytes(lines("a", 300))
    first = make(log)
    assert read(first) == lines("a", 300)
    rotated, copy = rename_for_compress(log)
    append(rotated, lines("a", 50, 300))
    assert read(first) == lines("a", 50, 300)
    state = checkpoint(first)
    first.close()
    log.write_bytes(lines("b", 2))
    gz = compressor_done(rotated, copy)
    second, clock = restored(log, state)
    got = poll_through_waits(second, clock)
    for i in range(rotations_after):
        os.rename(log, f"{log}.r{i}")
        log.write_bytes(lines(f"c{i}", 1))
        got += poll_through_waits(second, clock)
    state = checkpoint(second)
    second.close()
    third = make(log, clock=clock)
    third.restore(state)
    got += poll_through_waits(third, clock)
    want = lines("b", 2) + b"".join(lines(f"c{i}", 1) for i in range(rotations_after))
    assert got == want
    assert gz.exists()


def test_a_copytruncate_copy_that_lacks_the_last_lines_read_is_not_read_again(log: Path) -> None:
    """logrotate's copytruncate race: lines written between its copy and its truncation were
    read by the follower from the file itself; the copy, shorter, is the start of what was read
    (proven, not guessed) and is not read again, also renamed by later rotations and after a
    restart."""
    follower, clock = following(log, RUN * 2000 + b"\n")
    append(log, lines("a", 300))
    Path(f"{log}.100").write_bytes(log.read_bytes())  # the copy, then the writer goes on
    append(log, lines("a", 5, 300))
    assert read(follower) == lines("a", 305)
    os.truncate(log, 0)
    append(log, lines("b", 1))
    got = poll_through_waits(follower, clock)
    for i in range(6):  # more rotations, the copy renamed each time (its last bytes forgotten)
        os.rename(f"{log}.{100 + i}", f"{log}.{101 + i}")
        os.rename(log, f"{log}.r{i}")
        log.write_bytes(lines(f"c{i}", 1))
        got += poll_through_waits(follower, clock)
    again = make(log, clock=clock)
    again.restore(checkpoint(follower))
    got += poll_through_waits(again, clock)
    assert got == lines("b", 1) + b"".join(lines(f"c{i}", 1) for i in range(6))


def test_a_short_contents_gz_that_lacks_the_last_bytes_read_is_not_read_again(log: Path) -> None:
    """The same race on a content shorter than the head (1 KiB): the ``.gz``, shorter still,
    begins with less than the content's head; it is found as a candidate by the last bytes
    read, proven the content's start, and not read again."""
    follower, clock = following(log, b"#1:line 0\nline 1\n")
    rotated, copy = rename_for_compress(log)
    append(rotated, b" #2: end\n")
    assert read(follower) == b" #2: end\n"
    log.write_bytes(lines("b", 2))
    compressor_done(rotated, copy)
    assert poll_through_waits(follower, clock) == lines("b", 2)


def test_a_gz_and_its_longer_original_never_read_the_original_is_read(log: Path) -> None:
    """While the daemon is down the log rotates with the compressor's race: the ``.gz`` lacks
    the writer's last lines, which only the plain original (still there, and newer) holds. The
    two are one content, read once, from the one that holds all of it."""
    first = make(log)
    assert read(first) == b""
    state = checkpoint(first)
    first.close()
    log.write_bytes(lines("a", 30))
    set_mtime(log, 1_000_000)
    rotated, copy = rename_for_compress(log)
    Path(f"{rotated}.gz").write_bytes(copy)
    set_mtime(Path(f"{rotated}.gz"), 1_000_000)
    append(rotated, lines("a", 5, 30))
    set_mtime(rotated, 1_000_001)
    log.write_bytes(lines("b", 2))
    second, clock = restored(log, state)
    assert poll_through_waits(second, clock) == lines("a", 35) + lines("b", 2)


def test_restart_a_held_partial_line_is_ended_in_the_next_file_when_its_file_is_gone(
    log: Path,
) -> None:
    """The content read ends in a cut line (held, checkpointed); while the daemon is down its
    file is compressed without that cut line (the race) and removed, and the writer ends the
    line in the new file. No file holds more of the content than was read: the held part is
    kept and ended there (it was dropped: a line lost)."""
    log.write_bytes(lines("a", 3))
    first = make(log)
    assert read(first) == lines("a", 3)
    rotated, copy = rename_for_compress(log)
    append(rotated, b"cut at the ")
    assert read(first) == b""
    state = checkpoint(first)
    first.close()
    compressor_done(rotated, copy)
    log.write_bytes(b"first rotation\n" + lines("b", 1))
    second, clock = restored(log, state)
    assert poll_through_waits(second, clock) == b"cut at the first rotation\n" + lines("b", 1)


def test_a_plain_file_that_is_the_start_of_a_content_whose_file_is_gone_is_read(
    log: Path,
) -> None:
    """The content read was compressed and its file removed; the next file, rotated before its
    writer ended its line, holds only the start of the same run: all of it is the start of the
    content read, but a plain copy is only made of a file that lives on (copytruncate), so it is
    new content, read (it was taken for a shorter copy, and lost)."""
    follower, clock = following(log, RUN * 2000 + b"\n")
    rotate(log, compress=True)
    log.write_bytes(RUN * 500)
    os.rename(log, f"{log}.2")
    log.write_bytes(b"\n" + lines("c", 1))
    assert poll_through_waits(follower, clock) == RUN * 500 + b"\n" + lines("c", 1)


def test_a_rotated_file_still_written_that_is_the_start_of_a_content_read_is_read_once_whole(
    log: Path,
) -> None:
    """A rotated file its writer has not left yet holds only the start of the run the content
    read begins with, and that content's own file still holds it: it may be a copy on its way,
    so nothing is read of it yet, and nothing is remembered of it. Written on, it is another
    content, read whole (it was remembered as read: all of it lost)."""
    follower, clock = following(log, RUN * 2000 + b"\n")
    rotate(log, compress=False)
    log.write_bytes(RUN * 500)
    rotate(log, compress=False)  # the writer goes on in .1 until it reopens
    log.write_bytes(b"")
    got = poll_through_waits(follower, clock)
    append(Path(f"{log}.1"), RUN * 100 + b"\n" + lines("b", 1))
    append(log, lines("c", 1))
    got += poll_through_waits(follower, clock)
    assert got == RUN * 600 + b"\n" + lines("b", 1) + lines("c", 1)


def test_restart_from_an_empty_file_rotated_while_down_reads_what_its_writer_adds_first(
    log: Path,
) -> None:
    """Checkpointed while the file read was still empty (nothing read: nothing to find it by),
    killed; the log rotates twice and its writer has not reopened. The path's new file, empty,
    is not taken yet, so the rotated file the writer adds to is read first, then the path (the
    path was taken at once and the rotated files never looked at again: the lines lost)."""
    state = stopped_on_an_empty_log(log)
    os.rename(log, f"{log}.1")  # the writer stays on .1
    log.write_bytes(b"")
    os.rename(log, f"{log}.2")
    log.write_bytes(b"")
    second, clock = restored(log, state)
    got = poll_through_waits(second, clock)
    append(Path(f"{log}.1"), lines("a", 2))
    got += poll_through_waits(second, clock)
    append(log, lines("b", 1))
    got += poll_through_waits(second, clock)
    assert got == lines("a", 2) + lines("b", 1)


def test_restart_on_an_empty_log_is_not_a_rotation(log: Path) -> None:
    """Started on an empty log, stopped, started again: the same empty file, no rotation counted
    and no warning (it was "checkpointed file not found" and a ``recreate``)."""
    state = stopped_on_an_empty_log(log)
    second, clock = restored(log, state)
    with structlog.testing.capture_logs() as logs:
        assert poll_through_waits(second, clock) == b""
    append(log, lines("a", 1))
    assert read(second) == lines("a", 1)
    assert second.stats.rotations == {}
    assert [e for e in logs if e["log_level"] == "warning"] == []


def test_restart_from_an_empty_file_whose_inode_the_new_log_reuses_reads_in_order(
    log: Path,
) -> None:
    """Checkpointed while the file read was empty; while down it is written, rotated and
    compressed (its original removed), and the new log gets the freed inode. An inode proves
    nothing of a file nothing was read of: the ``.gz`` is read first, then the path (the path
    was taken for the checkpointed file: read first, out of order)."""
    state = stopped_on_an_empty_log(log)
    inode = log.stat().st_ino
    append(log, b"#1:line 0\n")
    set_mtime(log, 1_000_000)
    os.rename(log, f"{log}.1")
    gzip_like_logrotate(Path(f"{log}.1"))
    log.write_bytes(b"")
    if log.stat().st_ino != inode:
        pytest.skip("this filesystem did not give the freed inode to the next file")
    second, clock = restored(log, state)
    append(log, b"#2:line 0\n")
    assert poll_through_waits(second, clock) == b"#1:line 0\n#2:line 0\n"


def test_first_start_on_an_empty_log_reads_what_its_writer_still_adds_to_the_rotated_file(
    log: Path,
) -> None:
    """Started from the end just after a rotation, the writer not reopened yet: the path's file
    is empty, the rotated file taken as read grows. While nothing is read of the path's file,
    a rotated file that changes is looked at: its new lines are read, then the path's."""
    Path(f"{log}.1").write_bytes(lines("a", 3))
    log.write_bytes(b"")
    clock = FakeClock()
    follower = make(log, clock=clock, from_beginning=False)
    assert read(follower) == b""
    append(Path(f"{log}.1"), lines("a", 2, 3))
    got = poll_through_waits(follower, clock)
    append(log, lines("b", 1))
    got += poll_through_waits(follower, clock)
    assert got == lines("a", 2, 3) + lines("b", 1)


def test_restart_the_checkpointed_files_inode_taken_by_a_file_that_begins_alike_reads_its_gz(
    log: Path,
) -> None:
    """Checkpointed while the file was read only inside its leading run; while down it is
    written on, rotated and compressed (its original removed), and the new log takes the freed
    inode and begins with the same run. Its own inode holds the content read, but less than the
    complete ``.gz`` holds: an original only grows, so the ``.gz`` is the content, read on from
    the offset, and the new log another content (it was read on from the offset: the rest of
    the old file lost)."""
    log.write_bytes(RUN * 91)
    first = make(log)
    assert read(first) == b""  # a partial line, held
    state = checkpoint(first)
    first.close()
    inode = log.stat().st_ino
    append(log, RUN * 20 + b"\n" + lines("a", 2))
    set_mtime(log, 1_000_000)
    os.rename(log, f"{log}.1")
    gzip_like_logrotate(Path(f"{log}.1"))
    log.write_bytes(RUN * 120)  # more than the offset: its first bytes are all that was read
    if log.stat().st_ino != inode:
        pytest.skip("this filesystem did not give the freed inode to the next file")
    second, clock = restored(log, state)
    got = poll_through_waits(second, clock)
    append(log, b"\n")
    got += poll_through_waits(second, clock)
    assert got == RUN * 111 + b"\n" + lines("a", 2) + RUN * 120 + b"\n"


def test_a_file_taken_for_a_shorter_copy_that_grows_is_read_whole(log: Path) -> None:
    """The content read was truncated (its file lives on, holding another content now); a
    rotated file appears holding only the start of that content, so it is shown a shorter
    copy (copytruncate's race) and remembered as read. It then grows: a copy does not, so it
    was a new file still being written, read whole (it stayed remembered as read: lost)."""
    follower, clock = following(log, b"# #2: end\n")
    os.truncate(log, 0)
    assert read(follower) == b""  # the copy is waited for
    append(log, b" #3: end\n")
    assert poll_through_waits(follower, clock) == b" #3: end\n"
    Path(f"{log}.1").write_bytes(b"#")  # a writer that has not reopened after a rotation
    set_mtime(Path(f"{log}.1"), 1_000_000)
    os.rename(log, f"{log}.2")
    log.write_bytes(b"")
    got = poll_through_waits(follower, clock)
    append(Path(f"{log}.1"), b" #5: end\n")
    append(log, lines("c", 1))
    got += poll_through_waits(follower, clock)
    assert got == b"# #5: end\n" + lines("c", 1)


@pytest.mark.parametrize("start", ["first start", "restart"])
def test_the_rotated_file_its_writer_adds_to_is_read_before_the_paths_first_lines(
    log: Path, start: str
) -> None:
    """Nothing read yet of the path's file (empty at a first start, or a new one after a
    restart from an empty file); its writer, not reopened yet, adds to the rotated file, then
    reopens and writes to the path, all before the next poll. The rotated file's lines were
    written first and are read first (the path's file was read first: out of order)."""
    if start == "first start":
        Path(f"{log}.1").write_bytes(lines("a", 3))
        log.write_bytes(b"")
        clock = FakeClock()
        follower = make(log, clock=clock, from_beginning=False)
        assert read(follower) == b""
    else:
        state = stopped_on_an_empty_log(log)
        os.rename(log, f"{log}.1")  # the writer stays on .1
        log.write_bytes(b"")
        follower, clock = restored(log, state)
        assert poll_through_waits(follower, clock) == b""
    append(Path(f"{log}.1"), lines("a", 2, 3))
    append(log, lines("b", 1))
    assert poll_through_waits(follower, clock) == lines("a", 2, 3) + lines("b", 1)
    if start == "first start":  # the path's file taken again is the same file: no rotation
        assert follower.stats.rotations == {}


def test_restart_a_file_written_after_the_checkpointed_file_was_emptied_is_not_its_copy(
    log: Path,
) -> None:
    """While down, the file read is emptied (no copy) and rotated on, and a new file begins
    with the first line it held. A copytruncate copy is written before its original is
    truncated (the truncation changes the original's time), so a plain file last written after
    it is not its copy: read whole (it was taken for a shorter copy and lost)."""
    state = stopped_after_three_lines(log)
    os.truncate(log, 0)
    set_mtime(log, 1_000_000)
    os.rename(log, f"{log}.2")  # the emptied file lives on under a rotated name
    Path(f"{log}.1").write_bytes(lines("a", 1))  # the start of what was read, written later
    set_mtime(Path(f"{log}.1"), 1_000_010)
    log.write_bytes(b"")
    follower, clock = restored(log, state)
    got = poll_through_waits(follower, clock)
    append(log, lines("b", 1))
    got += poll_through_waits(follower, clock)
    assert got == lines("a", 1) + lines("b", 1)


def test_a_copy_its_compressor_removes_while_it_is_looked_at_is_not_new_content(
    log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """logrotate's copytruncate with compress: the copy (read on in after the truncation) and
    its complete ``.gz`` both hold the content; the copy is shown to hold it, then removed (the
    compressor is done) before the two are compared. What cannot be read now is told at the
    next look: the ``.gz`` is not taken for another content and read again (it was: every line
    of the copy twice)."""
    follower, clock = following(log, lines("a", 3))
    append(log, lines("a", 2, 3))
    copy = Path(f"{log}.1")
    copy.write_bytes(log.read_bytes())  # the copy, then the truncation
    os.truncate(log, 0)
    got = poll_through_waits(follower, clock)  # the last lines, from the copy
    gz = Path(f"{log}.1.gz")
    gz.write_bytes(gzip.compress(copy.read_bytes()))
    set_mtime(gz, copy.stat().st_mtime + 1)  # finished after the copy was written
    is_its = follower._is_its

    def shown_then_removed(p: Look, *args: Any) -> bool:
        held = is_its(p, *args)
        if held and p.name == str(copy):
            copy.unlink()  # the compressor is done: the copy goes just after it was looked at
        return held

    monkeypatch.setattr(follower, "_is_its", shown_then_removed)
    append(log, lines("b", 1))
    got += poll_through_waits(follower, clock)
    assert got == lines("a", 2, 3) + lines("b", 1)
