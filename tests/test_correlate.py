"""Correlator: each failure paired with the SSLInfo line that follows it, through real log text.

The lines are parsed by the real parser and fed with their line numbers, the way the pipeline does.
Wall time is a fake clock: no test sleeps.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timezone

import records
from apigee_tls_exporter.correlate import Correlator
from apigee_tls_exporter.events import Event, Failure
from apigee_tls_exporter.parse import Parser, candidate_lines
from records import context


def failed(thread: str, message_id: str, remote: str = "10.20.3.4:443") -> str:
    return records.failed(remote=remote, ctx=context(message_id), thread=thread)


def ssl_info(thread: str, message_id: str, alias: str) -> str:
    return records.ssl_info(alias=alias, ctx=context(message_id), thread=thread)


def traffic(thread: str = "NIOThread@5") -> str:
    return records.traffic(ctx=context("m-other"), thread=thread)


def events(lines: list[str]) -> Iterator[tuple[int, Event]]:
    """(line number, event) for the handshake lines of ``lines``, numbered from 1."""
    block = "".join(line + "\n" for line in lines).encode()
    parser = Parser(timezone.utc)
    for start, raw in candidate_lines(block):
        event = parser.parse(raw)
        if event is not None:
            yield block.count(b"\n", 0, start) + 1, event


def pair(lines: list[str], correlator: Correlator) -> list[Failure]:
    """Feed every line, then end the input."""
    out: list[Failure] = []
    for number, event in events(lines):
        out += correlator.feed(event, number)
    out += correlator.advance(len(lines))
    return out + correlator.close_all()


def aliases(failures: list[Failure]) -> list[tuple[str, str]]:
    return [(f.target, f.key_alias) for f in failures]


def make(window_lines: int = 1000) -> Correlator:
    return Correlator(window_lines, None)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# --- pairing -------------------------------------------------------------------------------------


def test_failure_takes_alias_of_following_ssl_info() -> None:
    """A failure followed by its SSLInfo line is counted once with that key alias."""
    lines = [failed("NIOThread@0", "m1"), ssl_info("NIOThread@0", "m1", "backend-client")]
    expected = [("10.20.3.4:443", "backend-client")]
    assert expected == aliases(pair(lines, make()))


def test_paired_failure_comes_out_when_its_ssl_info_is_read() -> None:
    """The pairing is decided by the SSLInfo line itself, not at the end of the input."""
    correlator = make()
    (first, f), (second, s) = events(
        [failed("NIOThread@0", "m1"), ssl_info("NIOThread@0", "m1", "k1")]
    )
    assert correlator.feed(f, first) == []
    expected = ["k1"]
    assert expected == [x.key_alias for x in correlator.feed(s, second)]


def test_failure_waits_while_its_window_is_open() -> None:
    """Until its SSLInfo line comes, a failure is pending."""
    correlator = make()
    for number, event in events([failed("NIOThread@0", "m1")]):
        correlator.feed(event, number)
    expected = 1
    assert expected == correlator.pending


def test_null_alias_is_empty_and_counts_as_paired() -> None:
    """``KeyAlias:null`` gives ``""``; the failure was paired, not left unpaired."""
    correlator = make()
    failures = pair(
        [failed("NIOThread@0", "m1"), ssl_info("NIOThread@0", "m1", "null")], correlator
    )
    expected = ([("10.20.3.4:443", "")], 0)
    assert expected == (aliases(failures), correlator.unpaired)


def test_interleaved_threads_each_take_their_own_ssl_info() -> None:
    """Lines of other threads interleave anywhere; each failure pairs within its thread."""
    lines = [
        failed("NIOThread@0", "m1", "a.example/10.1.1.1:443"),
        traffic(),
        failed("NIOThread@1", "m2", "b.example/10.1.1.2:443"),
        ssl_info("NIOThread@1", "m2", "alias-b"),
        traffic(),
        ssl_info("NIOThread@0", "m1", "alias-a"),
    ]
    expected = {("a.example:443", "alias-a"), ("b.example:443", "alias-b")}
    assert expected == set(aliases(pair(lines, make())))


def test_one_thread_serving_two_calls_pairs_each_by_message_id() -> None:
    """An NIO thread serves many calls: its failures pair by message id, in any order."""
    lines = [
        failed("NIOThread@0", "m1", "a.example/10.1.1.1:443"),
        failed("NIOThread@0", "m2", "b.example/10.1.1.2:443"),
        ssl_info("NIOThread@0", "m2", "alias-b"),
        ssl_info("NIOThread@0", "m1", "alias-a"),
    ]
    expected = {("a.example:443", "alias-a"), ("b.example:443", "alias-b")}
    assert expected == set(aliases(pair(lines, make())))


def test_ssl_info_of_another_message_in_the_same_thread_does_not_pair() -> None:
    """The SSLInfo line must carry the failure's message id, not just its thread."""
    correlator = make()
    lines = [failed("NIOThread@0", "m1"), ssl_info("NIOThread@0", "m2", "wrong")]
    expected = ([("10.20.3.4:443", "")], 1)
    assert expected == (aliases(pair(lines, correlator)), correlator.orphans)


def test_ssl_info_of_the_same_message_in_another_thread_does_not_pair() -> None:
    """The SSLInfo line must come from the failure's thread."""
    lines = [failed("NIOThread@0", "m1"), ssl_info("NIOThread@1", "m1", "wrong")]
    expected = [("10.20.3.4:443", "")]
    assert expected == aliases(pair(lines, make()))


def test_lines_without_context_pair_by_thread() -> None:
    """Without the context block (no message id) failure and SSLInfo pair within the thread."""
    lines = [failed("Apigee-Main-3", ""), ssl_info("Apigee-Main-3", "", "k-main")]
    expected = [("10.20.3.4:443", "k-main")]
    assert expected == aliases(pair(lines, make()))


def test_retry_with_two_ssl_info_lines_is_two_failures_with_their_own_alias() -> None:
    """One message id failing twice (retry to the next TargetServer) is two failures."""
    lines = [
        failed("NIOThread@0", "m1", "ts1.example/10.1.1.1:443"),
        ssl_info("NIOThread@0", "m1", "alias-ts1"),
        traffic(),
        failed("NIOThread@0", "m1", "ts2.example/10.1.1.2:443"),
        ssl_info("NIOThread@0", "m1", "alias-ts2"),
    ]
    expected = [("ts1.example:443", "alias-ts1"), ("ts2.example:443", "alias-ts2")]
    assert expected == aliases(pair(lines, make()))


def test_second_failure_before_an_ssl_info_closes_the_first_unpaired() -> None:
    """The SSLInfo after a retry belongs to the retry; the first failure gets ``""``."""
    correlator = make()
    lines = [
        failed("NIOThread@0", "m1", "ts1.example/10.1.1.1:443"),
        failed("NIOThread@0", "m1", "ts2.example/10.1.1.2:443"),
        ssl_info("NIOThread@0", "m1", "alias-ts2"),
    ]
    expected = ([("ts1.example:443", ""), ("ts2.example:443", "alias-ts2")], 1)
    assert expected == (aliases(pair(lines, correlator)), correlator.unpaired)


def test_orphan_ssl_info_is_counted_and_makes_no_failure() -> None:
    """An SSLInfo line with no failure waiting is an orphan."""
    correlator = make()
    failures = pair([ssl_info("NIOThread@0", "m1", "k1")], correlator)
    expected = ([], 1)
    assert expected == (failures, correlator.orphans)


def test_second_ssl_info_for_one_failure_is_an_orphan() -> None:
    """A failure takes only the first SSLInfo line that follows it."""
    correlator = make()
    lines = [
        failed("NIOThread@0", "m1"),
        ssl_info("NIOThread@0", "m1", "first"),
        ssl_info("NIOThread@0", "m1", "second"),
    ]
    expected = ([("10.20.3.4:443", "first")], 1)
    assert expected == (aliases(pair(lines, correlator)), correlator.orphans)


# --- windows -------------------------------------------------------------------------------------


def test_ssl_info_at_the_last_line_of_the_window_pairs() -> None:
    """With a window of 3 lines, an SSLInfo line 3 lines after its failure still pairs."""
    lines = [failed("NIOThread@0", "m1"), traffic(), traffic(), ssl_info("NIOThread@0", "m1", "k")]
    expected = [("10.20.3.4:443", "k")]
    assert expected == aliases(pair(lines, make(window_lines=3)))


def test_missing_ssl_info_closes_empty_after_the_window_in_lines() -> None:
    """No SSLInfo within the window of lines: the failure closes with ``""`` and is unpaired."""
    correlator = make(window_lines=3)
    lines = [failed("NIOThread@0", "m1"), traffic(), traffic(), traffic()]
    closed: list[Failure] = []
    for number, event in events(lines):
        closed += correlator.feed(event, number)
    closed += correlator.advance(len(lines))
    expected = ([("10.20.3.4:443", "")], 1, 0)
    assert expected == (aliases(closed), correlator.unpaired, correlator.pending)


def test_ssl_info_after_the_window_in_lines_is_an_orphan() -> None:
    """An SSLInfo line that comes too late does not pair; it is an orphan."""
    correlator = make(window_lines=3)
    lines = [failed("NIOThread@0", "m1"), *[traffic()] * 3, ssl_info("NIOThread@0", "m1", "k")]
    expected = ([("10.20.3.4:443", "")], 1)
    assert expected == (aliases(pair(lines, correlator)), correlator.orphans)


def test_missing_ssl_info_closes_empty_after_the_window_in_wall_time() -> None:
    """No SSLInfo within ``window_seconds`` of wall time: the failure closes with ``""``."""
    clock = FakeClock()
    correlator = Correlator(1000, 2.0, clock=clock)
    for number, event in events([failed("NIOThread@0", "m1")]):
        correlator.feed(event, number)
    clock.now = 2.0
    expected = ([("10.20.3.4:443", "")], 1)
    assert expected == (aliases(correlator.advance(1)), correlator.unpaired)


def test_failure_still_waits_just_before_the_wall_time_window_passes() -> None:
    """Before ``window_seconds`` have passed, the failure is still waiting."""
    clock = FakeClock()
    correlator = Correlator(1000, 2.0, clock=clock)
    for number, event in events([failed("NIOThread@0", "m1")]):
        correlator.feed(event, number)
    clock.now = 1.999
    expected = ([], 1)
    assert expected == (correlator.advance(1), correlator.pending)


def test_ssl_info_after_the_wall_time_window_is_an_orphan() -> None:
    """An SSLInfo line read after the wall-time window passed does not pair."""
    clock = FakeClock()
    correlator = Correlator(1000, 2.0, clock=clock)
    (n1, f), (n2, s) = events([failed("NIOThread@0", "m1"), ssl_info("NIOThread@0", "m1", "k")])
    correlator.feed(f, n1)
    clock.now = 2.5
    closed = correlator.feed(s, n2)
    expected = ([("10.20.3.4:443", "")], 1)
    assert expected == (aliases(closed), correlator.orphans)


def test_end_of_input_closes_every_window_empty() -> None:
    """At the end of the input every waiting failure closes with ``""``."""
    correlator = make()
    lines = [failed("NIOThread@0", "m1"), failed("NIOThread@1", "m2")]
    expected = ([("10.20.3.4:443", ""), ("10.20.3.4:443", "")], 2, 0)
    assert expected == (aliases(pair(lines, correlator)), correlator.unpaired, correlator.pending)


def test_pending_failures_are_bounded_by_the_window() -> None:
    """However many message ids fail without SSLInfo, few wait at once.

    A failure waits until ``window_lines`` lines after its own, so the failures of
    ``window_lines + 1`` consecutive lines can wait together, and no more.
    """
    correlator = make(window_lines=10)
    lines = [failed("NIOThread@0", f"m{i}") for i in range(100)]
    most = 0
    for number, event in events(lines):
        correlator.feed(event, number)
        most = max(most, correlator.pending)
    expected = 11
    assert expected == most


# --- checkpoint ----------------------------------------------------------------------------------


def test_snapshot_is_plain_json() -> None:
    """The snapshot survives a JSON round trip unchanged."""
    correlator = make()
    pair([ssl_info("NIOThread@0", "m0", "k")], correlator)
    for number, event in events([failed("NIOThread@0", "m1")]):
        correlator.feed(event, number)
    snapshot = correlator.snapshot()
    assert snapshot == json.loads(json.dumps(snapshot))


def test_restored_pending_failure_pairs_with_its_ssl_info() -> None:
    """A failure waiting at a checkpoint pairs after a restart with the SSLInfo that follows."""
    before = make()
    (n1, f), (n2, s) = events([failed("NIOThread@0", "m1"), ssl_info("NIOThread@0", "m1", "k1")])
    before.feed(f, n1)
    after = make()
    after.restore(json.loads(json.dumps(before.snapshot())))
    expected = [("10.20.3.4:443", "k1")]
    assert expected == aliases(after.feed(s, n2))


def test_restore_keeps_unpaired_and_orphan_counts() -> None:
    """The unpaired and orphan counters come back from the snapshot."""
    before = make(window_lines=1)
    pair(
        [failed("NIOThread@0", "m1"), traffic(), traffic(), ssl_info("NIOThread@0", "m1", "k")],
        before,
    )
    after = make()
    after.restore(before.snapshot())
    expected = (1, 1)
    assert expected == (after.unpaired, after.orphans)


def test_restored_window_restarts_its_wall_time() -> None:
    """After a restore, a waiting failure gets a full wall-time window from the restore."""
    before = make()
    for number, event in events([failed("NIOThread@0", "m1")]):
        before.feed(event, number)
    clock = FakeClock()
    clock.now = 100.0
    after = Correlator(1000, 2.0, clock=clock)
    after.restore(before.snapshot())
    clock.now = 101.5
    expected = ([], 1)
    assert expected == (after.advance(1), after.pending)
