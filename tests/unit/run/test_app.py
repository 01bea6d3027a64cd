"""The Daemon's loop: what is counted does not depend on when the daemon got to read the lines.

A pairing window closes by wall time only while the daemon has read everything its logs hold, and
its wall time starts when the daemon had read to the end after the failure: a daemon that did not
read for a while (a slow disk under the checkpoint's fsync, a CPU starved VM, a follower waiting
for logrotate's copy or for a compressor) pairs the lines that were written meanwhile as an
uninterrupted read pairs them. Whether an exception record repeats a failure is decided by lines
alone. ``Daemon.step()`` is driven directly with fake clocks (``tests/helpers/node.py``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from apigee_tls_exporter.records.lines import Segment
from helpers import records
from helpers.node import Node, write

PAIRED = ("acme", "prod", "payments-v1", "7", "backend.example.com:443", "bad_certificate")
ONE_PAIRED = {(*PAIRED, "backend-client"): 1.0}


def test_lines_written_while_the_daemon_did_not_read_pair_as_an_uninterrupted_read(
    tmp_path: Path,
) -> None:
    """The failure read, then 3 s in which the daemon did not poll (its SSLInfo line and the
    onException record written meanwhile): one failure, with its key alias."""
    log = tmp_path / "system.log"
    write(log, records.text([records.failed()]).encode())
    node = Node(tmp_path, [log])
    node.daemon.step()
    write(log, records.text([records.ssl_info(), *records.on_exception()]).encode())
    node.clock.now += 3
    node.run_to_end()
    assert node.series() == ONE_PAIRED


def test_an_exception_record_repeats_its_failure_however_long_the_log_was_quiet_between(
    tmp_path: Path,
) -> None:
    """The failure and its SSLInfo line read, the daemon polling a quiet log for 5 s, then the
    onException record that repeats the failure's alert: still one failure."""
    log = tmp_path / "system.log"
    write(log, records.text([records.failed(), records.ssl_info()]).encode())
    node = Node(tmp_path, [log])
    for _ in range(11):
        node.daemon.step()
        node.clock.now += 0.5
    write(log, records.text(records.on_exception()).encode())
    node.run_to_end()
    assert node.series() == ONE_PAIRED


def test_a_window_does_not_pass_while_the_follower_waits_for_the_copy_of_a_copytruncate(
    tmp_path: Path,
) -> None:
    """logrotate's copytruncate truncated the log before its copy was in place: the follower
    waits for the copy (up to ``copy_wait``), and the failure read before it waits too; the
    SSLInfo line the copy holds pairs it."""
    log = tmp_path / "system.log"
    write(log, records.text([records.failed()]).encode())
    node = Node(tmp_path, [log])
    node.daemon.step()
    write(log, records.text([records.ssl_info(), *records.on_exception()]).encode())
    copy = log.read_bytes()
    os.truncate(log, 0)
    node.clock.now += 1.0
    node.daemon.step()  # the log is shorter than what was read: its copy is looked for
    node.clock.now += 1.5
    node.daemon.step()  # 2.5 s after the failure was read: still waiting for the copy
    assert not node.daemon.followers[str(log)].caught_up
    (tmp_path / "system.log.1").write_bytes(copy)
    node.clock.now += 0.1
    node.run_to_end()
    assert node.series() == ONE_PAIRED
    follower = node.daemon.followers[str(log)]
    assert follower.stats.rotations == {"copytruncate": 1}


def test_a_stall_between_the_read_and_the_windows_check_does_not_pass_a_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The daemon read to the end and was held still (SIGSTOP, a starved VM) before it looked
    at its windows; meanwhile the SSLInfo line was written. The wall time that counts is the
    one when the read began (everything written before it was read), not the one after the
    stall: one failure, with its key alias (it was counted unpaired)."""
    log = tmp_path / "system.log"
    write(log, records.text([records.failed()]).encode())
    node = Node(tmp_path, [log])
    node.daemon.step()  # the failure read: its window's wall time starts
    follower = node.daemon.followers[str(log)]
    poll = follower.poll

    def read_then_stall() -> Iterator[Segment]:
        yield from poll()  # to the end: nothing new
        write(log, records.text([records.ssl_info(), *records.on_exception()]).encode())
        node.clock.now += 3  # held still after the read, the SSLInfo line written meanwhile

    monkeypatch.setattr(follower, "poll", read_then_stall)
    node.daemon.step()
    monkeypatch.undo()
    node.run_to_end()
    assert node.series() == ONE_PAIRED
