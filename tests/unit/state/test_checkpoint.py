"""The state file, and the Daemon's restart from it: counters, positions and pairings together.

``Daemon.step()`` is driven directly with a temporary state file and fake clocks; the logs are
written with ``LogGenerator``, whose truth is exact.
"""

from __future__ import annotations

import base64
import json
import os
import random
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import pytest
import structlog
from apigee_tls_exporter.demo.generator import LogGenerator, TruthKey
from apigee_tls_exporter.run.app import Daemon
from apigee_tls_exporter.state import checkpoint
from helpers.node import Node, as_series, write
from prometheus_client import CollectorRegistry


def warnings_of(logs: list[dict[str, Any]]) -> list[str]:
    return [str(e["event"]) for e in logs if e["log_level"] == "warning"]


# --- the state file ----------------------------------------------------------------------------


def test_save_then_load_gives_the_state_back_with_its_version(tmp_path: Path) -> None:
    """What ``save`` wrote, ``load`` returns, with the format version added."""
    path = tmp_path / "state.json"
    checkpoint.save(str(path), {"logs": {"a": 1}})
    assert checkpoint.load(str(path)) == {"version": checkpoint.VERSION, "logs": {"a": 1}}


def test_the_state_file_is_readable_by_the_daemons_user_only(tmp_path: Path) -> None:
    """It holds log text (a held partial line, the last bytes read): mode 0600, also when an
    earlier file at the path was readable by all."""
    path = tmp_path / "state.json"
    path.write_text("{}")
    path.chmod(0o644)
    checkpoint.save(str(path), {"n": 1})
    assert path.stat().st_mode & 0o777 == 0o600


def test_save_creates_the_directory_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    """The state directory is created when missing; only the state file remains after a save."""
    path = tmp_path / "state" / "state.json"
    checkpoint.save(str(path), {"n": 1})
    checkpoint.save(str(path), {"n": 2})
    assert os.listdir(path.parent) == ["state.json"]
    assert json.loads(path.read_text())["n"] == 2


def test_save_is_atomic_a_failed_write_keeps_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A save that fails before its rename leaves the previous state whole, and no temporary."""
    path = tmp_path / "state.json"
    checkpoint.save(str(path), {"n": 1})

    def crash(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(checkpoint.CheckpointError, match="No space left"):
        checkpoint.save(str(path), {"n": 2})
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["state.json"]
    assert checkpoint.load(str(path)) == {"version": checkpoint.VERSION, "n": 1}


def test_save_into_an_unusable_directory_raises_checkpoint_error(tmp_path: Path) -> None:
    """A state path under a regular file is a CheckpointError naming the path, not a crash."""
    (tmp_path / "file").write_text("")
    with pytest.raises(checkpoint.CheckpointError) as raised:
        checkpoint.save(str(tmp_path / "file" / "state.json"), {})
    assert str(raised.value) == (
        f"cannot write state file {tmp_path / 'file' / 'state.json'}: "
        f"{tmp_path / 'file'} is not a directory"
    )


@pytest.mark.parametrize(
    ("content", "event"),
    [
        ("directory", "state file unreadable, starting fresh"),
        (b'{"version": 1, "logs": ', "state file corrupt, starting fresh"),
        (b"\xff\xfe not utf-8", "state file corrupt, starting fresh"),
        (b"[1, 2]", "state file corrupt, starting fresh"),
        (b'{"logs": {}}', "state file corrupt, starting fresh"),
        (b'{"version": true}', "state file corrupt, starting fresh"),
        (b'{"version": 99, "logs": {}}', "state file of another version, starting fresh"),
    ],
    ids=[
        "unreadable",
        "truncated",
        "not-utf8",
        "not-object",
        "no-version",
        "bool",
        "v99",
    ],
)
def test_unusable_state_file_gives_one_warning_and_none(
    tmp_path: Path, content: Optional[object], event: str
) -> None:
    """An unreadable, corrupt or future-version state file: one warning, None."""
    path = tmp_path / "state.json"
    if content == "directory":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with structlog.testing.capture_logs() as logs:
        assert checkpoint.load(str(path)) is None
    assert warnings_of(logs) == [event]


def test_missing_state_file_is_a_first_start_one_info_line_and_none(tmp_path: Path) -> None:
    """No state file is what a first start looks like: said once at info level, not a warning."""
    with structlog.testing.capture_logs() as logs:
        assert checkpoint.load(str(tmp_path / "state.json")) is None
    assert warnings_of(logs) == []
    assert [e["event"] for e in logs if e["log_level"] == "info"] == [
        "no state file, starting fresh"
    ]


# --- the Daemon's restart ----------------------------------------------------------------------


def checkpointed_at_the_end(
    tmp_path: Path, seed: int, lines: int
) -> tuple[Path, LogGenerator, Node]:
    """A node that read a generated log of ``lines`` lines to its end and checkpointed: the log,
    its generator (the truth) and the node."""
    log = tmp_path / "system.log"
    gen = LogGenerator(seed, failure_fraction=0.05)
    write(log, gen.text(lines).encode())
    node = Node(tmp_path, [log])
    node.run_to_end()
    node.daemon.save_checkpoint()
    return log, gen, node


def test_restore_brings_the_counters_back_before_any_read(tmp_path: Path) -> None:
    """After a restart the counters are those of the checkpoint at once, not zero."""
    log, gen, first = checkpointed_at_the_end(tmp_path, 1, 3000)
    second = Node(tmp_path, [log])
    second.daemon.restore()
    assert second.series() == as_series(gen.truth)
    assert (
        second.daemon.followers[str(log)].stats.lines
        == first.daemon.followers[str(log)].stats.lines
    )


def test_restart_is_neither_a_reset_nor_a_double_count(tmp_path: Path) -> None:
    """Stop (checkpoint), more lines written, start: the counters go on from where they were."""
    log, gen, _ = checkpointed_at_the_end(tmp_path, 2, 2000)
    write(log, gen.text(2000).encode())
    second = Node(tmp_path, [log])
    second.daemon.restore()
    second.run_to_end()
    assert second.series() == as_series(gen.truth)


def test_kill_9_rereads_only_what_came_after_the_checkpoint(tmp_path: Path) -> None:
    """A daemon that read past its last checkpoint and died: the next one takes the counters of
    that checkpoint and reads again what came after it, so each failure is counted once."""
    log, gen, first = checkpointed_at_the_end(tmp_path, 3, 2000)
    write(log, gen.text(2000).encode())
    first.run_to_end()  # counted, never checkpointed: then SIGKILL
    write(log, gen.text(1000).encode())
    second = Node(tmp_path, [log])
    second.daemon.restore()
    second.run_to_end()
    assert second.series() == as_series(gen.truth)


def test_every_checkpoint_taken_mid_stream_resumes_to_the_exact_truth(tmp_path: Path) -> None:
    """Any checkpoint of a run, taken between reads of lines cut anywhere, with failures waiting
    for their SSLInfo line: restored and run to the end, it gives exactly the truth."""
    rng = random.Random(4)
    log = tmp_path / "system.log"
    gen = LogGenerator(4, failure_fraction=0.05)
    data = gen.text(20_000).encode()
    node = Node(tmp_path, [log])
    node.daemon.checkpoint_interval = 0.0  # a checkpoint after every whole read
    states: list[dict[str, Any]] = []
    save = node.daemon.save_checkpoint

    def record() -> None:
        save()
        states.append(json.loads(Path(node.config.state_path()).read_text()))

    node.daemon.save_checkpoint = record  # type: ignore[method-assign]
    at = 0
    while at < len(data):
        cut = at + rng.randrange(1, 40_000)
        write(log, data[at:cut])
        at = cut
        node.daemon.step()
    node.run_to_end()
    truth = as_series(gen.truth)
    assert node.series() == truth
    pending = [s for s in states if s["logs"][str(log)]["pairing"]["pending"]]
    partial = [s for s in states if s["logs"][str(log)]["follower"]["partial"]]
    assert pending and partial  # the interesting moments were among the checkpoints
    for state in rng.sample(states, 15) + pending[:5] + partial[:5]:
        checkpoint.save(node.config.state_path(), state)
        again = Node(tmp_path, [log])
        again.daemon.restore()
        again.run_to_end()
        assert again.series() == truth


def test_from_beginning_applies_only_to_files_the_checkpoint_does_not_know(
    tmp_path: Path,
) -> None:
    """With --from-beginning, a known file resumes at its checkpoint (no re-read) and a log new
    to the checkpoint is read from its start; without it, the new log starts at its end."""
    known = tmp_path / "known.log"
    new = tmp_path / "new.log"
    gen = LogGenerator(5, failure_fraction=0.05)
    write(known, gen.text(1000).encode())
    first = Node(tmp_path, [known])
    first.run_to_end()
    first.daemon.save_checkpoint()
    other = LogGenerator(6, failure_fraction=0.05)
    write(new, other.text(1000).encode())

    again = Node(tmp_path, [known, new], from_beginning=True)
    again.daemon.restore()
    again.run_to_end()
    assert again.series() == as_series(gen.truth + other.truth)

    first.daemon.save_checkpoint()  # back to the state that knows only `known`
    at_end = Node(tmp_path, [known, new], from_beginning=False)
    at_end.daemon.restore()
    at_end.run_to_end()
    assert at_end.series() == as_series(gen.truth)


def test_structurally_bad_state_gives_one_warning_and_a_fresh_start(tmp_path: Path) -> None:
    """A state file of the right version but a wrong shape: one warning, a fresh start."""
    log = tmp_path / "system.log"
    gen = LogGenerator(7, failure_fraction=0.05)
    write(log, gen.text(1000).encode())
    node = Node(tmp_path, [log])
    state_path = Path(node.config.state_path())
    state_path.parent.mkdir()
    state_path.write_text(json.dumps({"version": checkpoint.VERSION, "store": {"counts": 3}}))
    with structlog.testing.capture_logs() as logs:
        node.daemon.restore()
    assert warnings_of(logs) == ["state file corrupt, starting fresh"]
    node.run_to_end()
    assert node.series() == as_series(gen.truth)


def _saved_state(tmp_path: Path) -> tuple[Path, dict[str, Any], Counter[TruthKey]]:
    """A real state file of a node that read half a generated log; its path, content and truth."""
    _, gen, node = checkpointed_at_the_end(tmp_path, 11, 2000)
    state_path = Path(node.config.state_path())
    return state_path, json.loads(state_path.read_text()), gen.truth


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("follower", "ledger", 0, "offset"), 10**30),
        (("follower", "ledger", 0, "offset"), -100),
        (("follower", "ledger", 0, "head_len"), 5000),
        (("follower", "open"), 7),
        (("follower", "stats", "lines"), -5),
        (("follower", "stats", "bytes_read"), "12"),
        (("follower", "partial"), "not base64!"),
        (("follower", "ledger", 0, "recent"), base64.b64encode(b"not zlib").decode()),
        (
            ("follower", "ledger", 0, "recent"),
            base64.b64encode(zlib.compress(b"x" * 70000)).decode(),
        ),
        (("follower", "ledger", 0, "recent_crc"), -1),
        (("store", "counts", 0, -1), float("nan")),
        (("store", "counts", 0, -1), -5),
        (("store", "counts", 0, -1), float("inf")),
        (("store", "overflow"), -1),
        (("pairing", "unpaired"), -5),
        (("written_at",), float("nan")),
    ],
    ids=lambda v: "-".join(map(str, v)) if isinstance(v, tuple) else repr(v),
)
def test_impossible_values_give_one_warning_and_a_fresh_start(
    tmp_path: Path, where: tuple[Any, ...], value: object
) -> None:
    """Valid JSON with an impossible value in any field (an offset of 10**30 or -100, a count of
    NaN or -5): one warning naming the field, and a fresh start that counts the log exactly."""
    state_path, state, truth = _saved_state(tmp_path)
    target: Any = state
    if where[0] in ("follower", "pairing"):
        target = next(iter(state["logs"].values()))
    for key in where[:-1]:
        target = target[key]
    target[where[-1]] = value
    state_path.write_text(json.dumps(state))
    node = Node(tmp_path, [tmp_path / "system.log"])
    with structlog.testing.capture_logs() as logs:
        node.daemon.restore()
    assert warnings_of(logs) == ["state file corrupt, starting fresh"]
    node.run_to_end()
    assert node.series() == as_series(truth)


def test_a_fifo_as_state_file_does_not_block_and_is_not_replaced(tmp_path: Path) -> None:
    """A FIFO at the state path: load says what it is and starts fresh without blocking; save
    refuses to replace it."""
    path = tmp_path / "state.json"
    os.mkfifo(path)
    with structlog.testing.capture_logs() as logs:
        assert checkpoint.load(str(path)) is None
    assert warnings_of(logs) == ["state file is not a regular file, starting fresh"]
    with pytest.raises(checkpoint.CheckpointError, match="it is a FIFO"):
        checkpoint.save(str(path), {})


def test_unwritable_state_file_is_counted_and_its_age_grows_from_start_up(tmp_path: Path) -> None:
    """A state file that cannot be written: each failed write is counted, and the checkpoint age
    counts from start-up, so the stale-checkpoint alert can fire."""
    log = tmp_path / "system.log"
    write(log, LogGenerator(3).text(100).encode())
    (tmp_path / "state").write_text("a file where the state directory should be")
    node = Node(tmp_path, [log])
    registry = CollectorRegistry()
    daemon = Daemon(node.config, registry, clock=node.clock, wall=node.wall)
    node.wall.now += 30
    with structlog.testing.capture_logs() as logs:
        daemon.save_checkpoint()
        daemon.save_checkpoint()
    errors = [e["event"] for e in logs if e["log_level"] == "error"]
    assert errors == ["checkpoint failed: positions and counts will not survive a restart"]
    assert registry.get_sample_value("apigee_tls_checkpoint_write_errors_total") == 2
    assert registry.get_sample_value("apigee_tls_checkpoint_age_seconds") == 30


def test_step_stops_between_reads_when_asked(tmp_path: Path) -> None:
    """A stop asked for while a backlog is read ends the step after the read in progress (at a
    settled point); the checkpoint then written resumes exactly where it stopped."""
    log = tmp_path / "system.log"
    gen = LogGenerator(5, failure_fraction=0.05)
    write(log, gen.text(60_000).encode())  # about 10 MB: many reads of 1 MiB
    first = Node(tmp_path, [log])
    assert first.daemon.step(lambda: True)
    follower = first.daemon.followers[str(log)]
    assert 0 < follower.stats.bytes_read <= 1 << 20
    first.daemon.save_checkpoint()
    second = Node(tmp_path, [log])
    second.daemon.restore()
    second.run_to_end()
    assert second.series() == as_series(gen.truth)


@pytest.mark.parametrize("depth", [1, 200, 300])
def test_exception_line_read_after_a_restart_keeps_its_record_line(
    tmp_path: Path, depth: int
) -> None:
    """An exception-only failure (TLS 1.3: no handshakeFailed line) whose record line was read
    before a checkpoint and whose exception line after the restart is counted as one
    uninterrupted read counts it: once, with the record's org, env and proxy; not at all when
    the exception line is more than 256 lines below its record line (the record's line number
    is kept too)."""
    from helpers import records

    frame = "\tat sun.security.ssl.SSLEngineImpl.readRecord(SSLEngineImpl.java:1000) ~[na:1.8]"
    head, *rest = records.exception_record()
    record = [head, *[frame] * (depth - 1), *rest]
    once = tmp_path / "once"
    once.mkdir()
    whole = once / "system.log"
    write(whole, records.text(record).encode())
    uninterrupted = Node(once, [whole])
    uninterrupted.run_to_end()
    expected = uninterrupted.series()
    assert sum(expected.values()) == (depth <= 256)

    log = tmp_path / "system.log"
    write(log, records.text(record[:depth]).encode())
    first = Node(tmp_path, [log])
    first.daemon.step()
    first.daemon.save_checkpoint()
    write(log, records.text(record[depth:]).encode())
    second = Node(tmp_path, [log])
    second.daemon.restore()
    second.run_to_end()
    assert second.series() == expected


OLD_STATE = Path(__file__).parent / "data" / "state-main-2026-12-07.json"


def test_a_state_file_written_before_the_schema_was_written_once_still_loads(
    tmp_path: Path,
) -> None:
    """``data/state-main-2026-12-07.json`` was written by main before the correlator's, the alert
    engine's and the store's snapshots became models (hand-written dicts then): ``LogGenerator(7,
    failure_fraction=0.3).text(400)`` read to its end (one failure still waiting for its SSLInfo
    line, an alert firing), no window passed; its log is named ``LOG``, and its file's device and
    inode are those of the log written here. Restored over the same log it loads whole, and
    reading on counts what was written, nothing twice."""
    log = tmp_path / "system.log"
    gen = LogGenerator(7, failure_fraction=0.3)
    write(log, gen.text(400).encode())
    saved = json.loads(OLD_STATE.read_text())
    saved["logs"] = {str(log): saved["logs"]["LOG"]}
    entry = saved["logs"][str(log)]["follower"]["ledger"][0]  # the same file, here
    entry["dev"], entry["ino"] = os.stat(log).st_dev, os.stat(log).st_ino
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.json").write_text(json.dumps(saved))
    node = Node(tmp_path, [log])
    with structlog.testing.capture_logs() as logs:
        node.daemon.restore()
    assert warnings_of(logs) == []
    assert node.daemon.store.snapshot().model_dump(mode="json") == saved["store"]
    pairing = node.daemon.pipelines[str(log)].correlator.snapshot()
    assert pairing.model_dump(mode="json", exclude_none=True) == saved["logs"][str(log)]["pairing"]
    assert [a[:6] for a in node.daemon.alerts.snapshot().model_dump(mode="json")["firing"]] == [
        a[:6] for a in saved["alerts"]["firing"]
    ]
    write(log, gen.text(600).encode())
    node.run_to_end()
    assert node.series() == as_series(gen.truth)
