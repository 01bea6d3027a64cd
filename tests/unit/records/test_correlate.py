"""Correlator: each failure paired with the SSLInfo line that follows it, through real log text.

The lines are parsed by the real parser and fed with their line numbers, the way the pipeline does.
Wall time is a fake clock: no test sleeps.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timezone
from typing import Optional

import pytest
from apigee_tls_exporter.records.correlate import Correlator, PairingState
from apigee_tls_exporter.records.events import Event, Failure, HandshakeFailure
from apigee_tls_exporter.records.lines import LineSplitter
from apigee_tls_exporter.records.parse import Parser, candidate_lines, needs_record, record_above
from apigee_tls_exporter.records.pipeline import LogPipeline
from apigee_tls_exporter.records.stats import FileStats
from helpers import records
from helpers.clock import FakeClock
from helpers.records import context
from hypothesis import given, settings
from hypothesis import strategies as st


def through_json(state: PairingState) -> PairingState:
    """``state`` written to the state file and read back."""
    return PairingState.model_validate_json(state.model_dump_json())


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
        record = record_above(block, 0, start)[0] if needs_record(raw) else None
        event = parser.parse(raw, record)
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


def one_failure_waiting() -> tuple[FakeClock, Correlator]:
    """A correlator with a 2 s wall-time window on a fake clock at 0, one failure fed."""
    clock = FakeClock(0.0)
    correlator = Correlator(1000, 2.0, clock=clock)
    for number, event in events([failed("NIOThread@0", "m1")]):
        correlator.feed(event, number)
    return clock, correlator


def assert_window_runs_from(start: float, clock: FakeClock, correlator: Correlator) -> None:
    """The one failure waiting in ``correlator`` has its 2 s of wall time from the ``idle`` at
    ``start``: still waiting just before they pass, closed unpaired when they have."""
    clock.now = start
    assert correlator.idle() == []
    clock.now = start + 1.999
    assert (correlator.idle(), correlator.pending) == ([], 1)
    clock.now = start + 2.0
    assert aliases(correlator.idle()) == [("10.20.3.4:443", "")]


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
    """No SSLInfo within ``window_seconds`` of wall time with everything read: the failure
    closes with ``""``."""
    clock, correlator = one_failure_waiting()
    assert correlator.idle() == []
    clock.now = 2.0
    expected = ([("10.20.3.4:443", "")], 1)
    assert expected == (aliases(correlator.idle()), correlator.unpaired)


def test_failure_still_waits_just_before_the_wall_time_window_passes() -> None:
    """Before ``window_seconds`` have passed, the failure is still waiting."""
    clock, correlator = one_failure_waiting()
    correlator.idle()
    clock.now = 1.999
    expected = ([], 1)
    assert expected == (correlator.idle(), correlator.pending)


def test_wall_time_starts_when_everything_was_read_after_the_failure() -> None:
    """A failure read while the reader was behind: its wall time starts at the first ``idle``
    after it, not when it was read."""
    clock, correlator = one_failure_waiting()
    assert_window_runs_from(5.0, clock, correlator)


def test_ssl_info_read_after_a_pause_of_the_reader_still_pairs() -> None:
    """Wall time passing with no ``idle`` (the reader did not get to read) closes nothing: the
    SSLInfo line read after it pairs."""
    clock, correlator = one_failure_waiting()
    correlator.idle()
    clock.now = 2.5
    n2, s = list(events([failed("NIOThread@0", "m1"), ssl_info("NIOThread@0", "m1", "k")]))[1]
    expected = ([("10.20.3.4:443", "k")], 0)
    assert expected == (aliases(correlator.feed(s, n2)), correlator.orphans)


def test_ssl_info_after_the_wall_time_window_is_an_orphan() -> None:
    """An SSLInfo line read after the wall-time window passed with everything read does not
    pair."""
    clock, correlator = one_failure_waiting()
    correlator.idle()
    clock.now = 2.5
    n2, s = list(events([failed("NIOThread@0", "m1"), ssl_info("NIOThread@0", "m1", "k")]))[1]
    assert aliases(correlator.idle()) == [("10.20.3.4:443", "")]
    assert (correlator.feed(s, n2), correlator.orphans) == ([], 1)


def test_without_window_seconds_idle_closes_nothing() -> None:
    """``window_seconds=None`` (``scan``): only lines and the end of the input close windows."""
    clock = FakeClock(0.0)
    correlator = Correlator(1000, None, clock=clock)
    for number, event in events([failed("NIOThread@0", "m1")]):
        correlator.feed(event, number)
    correlator.idle()
    clock.now = 1e9
    assert (correlator.idle(), correlator.pending) == ([], 1)


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
    """The snapshot survives a JSON round trip (the state file's) unchanged."""
    correlator = make()
    pair([ssl_info("NIOThread@0", "m0", "k")], correlator)
    for number, event in events([failed("NIOThread@0", "m1")]):
        correlator.feed(event, number)
    snapshot = correlator.snapshot()
    assert snapshot == PairingState.model_validate_json(snapshot.model_dump_json())


def test_restored_pending_failure_pairs_with_its_ssl_info() -> None:
    """A failure waiting at a checkpoint pairs after a restart with the SSLInfo that follows."""
    before = make()
    (n1, f), (n2, s) = events([failed("NIOThread@0", "m1"), ssl_info("NIOThread@0", "m1", "k1")])
    before.feed(f, n1)
    after = make()
    after.restore(through_json(before.snapshot()))
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
    """After a restore, a waiting failure gets a full wall-time window from the first ``idle``."""
    before = make()
    for number, event in events([failed("NIOThread@0", "m1")]):
        before.feed(event, number)
    clock = FakeClock(0.0)
    clock.now = 100.0
    after = Correlator(1000, 2.0, clock=clock)
    after.restore(before.snapshot())
    assert_window_runs_from(150.0, clock, after)


# --- failures known only from an exception record -------------------------------------------------

TLS13_REJECTED = (
    "javax.net.ssl.SSLHandshakeException: (certificate_required) Received fatal alert: "
    "certificate_required"
)


def exception(thread: str, message_id: str, text: str = TLS13_REJECTED) -> list[str]:
    return records.exception_record(text, ctx=context(message_id), thread=thread)


def counted(failures: list[Failure]) -> list[tuple[str, str, str, str, bool]]:
    return [(f.api, f.target, f.reason, f.key_alias, f.paired) for f in failures]


def test_exception_record_without_a_handshake_failed_line_is_one_failure() -> None:
    """A TLS alert in an exception record, no handshakeFailed line for its thread and message id:
    one failure, with the record's context, ``target="unknown"``, no key alias, not unpaired."""
    correlator = make()
    failures = pair([traffic(), *exception("NIOThread@0", "m1"), traffic()], correlator)
    expected = ([("payments-v1", "unknown", "certificate_required", "", False)], 1, 0)
    assert expected == (counted(failures), correlator.exception_only, correlator.unpaired)


def test_exception_repeating_a_handshake_failed_line_is_not_counted() -> None:
    """The playbook's record (failure, SSLInfo, onException repeating the alert) is one failure."""
    lines = [
        failed("NIOThread@0", "m1"),
        ssl_info("NIOThread@0", "m1", "backend-client"),
        *records.on_exception(ctx=context("m1")),
    ]
    correlator = make()
    expected = [("payments-v1", "10.20.3.4:443", "bad_certificate", "backend-client", True)]
    assert (expected, 0) == (counted(pair(lines, correlator)), correlator.exception_only)


def test_exception_before_its_handshake_failed_line_is_not_counted() -> None:
    """An exception record followed within the window by a handshakeFailed line of the same
    thread and message id is that failure: counted once, from the handshakeFailed line."""
    lines = [
        *exception("NIOThread@0", "m1"),
        failed("NIOThread@0", "m1"),
        ssl_info("NIOThread@0", "m1", "k1"),
    ]
    expected = [("payments-v1", "10.20.3.4:443", "bad_certificate", "k1", True)]
    assert expected == counted(pair(lines, make()))


def test_exception_repeated_in_two_records_is_one_failure() -> None:
    """Two exception records of one thread and message id within the window are one failure."""
    lines = [*exception("NIOThread@0", "m1"), *exception("NIOThread@0", "m1")]
    expected = [("payments-v1", "unknown", "certificate_required", "", False)]
    assert expected == counted(pair(lines, make()))


def test_a_burst_of_exception_records_is_one_failure_however_long() -> None:
    """Exception records of one thread and message id, each within the window of the one
    before, are one failure, however far the burst reaches; one after a quiet window is the
    next failure."""
    record = [*exception("NIOThread@0", "m1"), traffic()]  # 5 lines: within a window of 8
    burst = record * 12  # 60 lines, seven windows
    lines = burst + [traffic()] * 6 + exception("NIOThread@0", "m1")
    expected = [("payments-v1", "unknown", "certificate_required", "", False)] * 2
    assert expected == counted(pair(lines, make(window_lines=8)))


def test_exception_after_the_window_of_a_handshake_failed_line_is_a_failure_of_its_own() -> None:
    """An exception record more than the window after the handshakeFailed line of its thread and
    message id is no repeat of it: a second failure."""
    lines = [failed("NIOThread@0", "m1"), ssl_info("NIOThread@0", "m1", "k1")]
    lines += [traffic()] * 5 + exception("NIOThread@0", "m1")
    expected = [
        ("payments-v1", "10.20.3.4:443", "bad_certificate", "k1", True),
        ("payments-v1", "unknown", "certificate_required", "", False),
    ]
    assert expected == counted(pair(lines, make(window_lines=3)))


def test_exception_of_another_message_id_is_its_own_failure() -> None:
    """A handshakeFailed line accounts only for the exception of its own thread and message id."""
    lines = [failed("NIOThread@0", "m1"), ssl_info("NIOThread@0", "m1", "k1")]
    lines += exception("NIOThread@0", "m2")
    expected = [
        ("payments-v1", "10.20.3.4:443", "bad_certificate", "k1", True),
        ("payments-v1", "unknown", "certificate_required", "", False),
    ]
    assert expected == counted(pair(lines, make()))


@pytest.mark.parametrize(
    ("exception_line", "caused_by", "reason"),
    [
        (
            "javax.net.ssl.SSLException: Received fatal alert: bad_certificate",
            "",
            "bad_certificate",
        ),
        (
            "java.io.IOException: javax.net.ssl.SSLHandshakeException: Received fatal alert: "
            "unknown_ca",
            "",
            "unknown_ca",
        ),
        (
            "com.apigee.protocol.http.HttpException: write failed",
            "javax.net.ssl.SSLHandshakeException: Received fatal alert: <UNKNOWN ALERT: 116>",
            "certificate_required",
        ),
        (
            "javax.net.ssl.SSLProtocolException: (unexpected_message) Unknown alert description "
            "(116)",
            "",
            "certificate_required",
        ),
    ],
    ids=["ssl-exception", "wrapped", "caused-by-jdk8-number", "jdk11-unknown-description"],
)
def test_every_shape_of_alert_exception_is_counted(
    exception_line: str, caused_by: str, reason: str
) -> None:
    """The alert may be in the exception line, wrapped in another exception, or in a ``Caused
    by:`` line; named or by number: each is one failure with the alert as reason."""
    lines = records.exception_record(exception_line, ctx=context("m1"), caused_by=caused_by)
    expected = [("payments-v1", "unknown", reason, "", False)]
    assert expected == counted(pair(lines, make()))


def test_exception_without_an_ssl_exception_is_not_counted() -> None:
    """An alert text in an exception that is no SSL exception is not a TLS failure record."""
    lines = records.exception_record(
        "java.lang.IllegalStateException: Received fatal alert: bad_certificate", ctx=context("m1")
    )
    assert pair(lines, make()) == []


def test_exception_on_the_record_line_itself_is_counted() -> None:
    """A record whose message carries the SSL exception (no separate exception line) counts."""
    line = (
        f"{records.STAMP} {context('m1')}NIOThread@0 ERROR ADAPTORS.HTTP.FLOW - "
        "RequestWriteListener.onException() : javax.net.ssl.SSLHandshakeException: Received "
        "fatal alert: certificate_required"
    )
    expected = [("payments-v1", "unknown", "certificate_required", "", False)]
    assert expected == counted(pair([line], make()))


def test_exception_record_naming_its_backend_gives_the_target() -> None:
    """An exception record that names the channel gives its backend as target."""
    line = (
        f"{records.STAMP} {context('m1')}NIOThread@0 ERROR HTTP.CLIENT - "
        "HTTPClient$Context.onException() : "
        f"{records.channel('b.example.com/10.1.1.1:443', records.REMOTE_HOST)} "
        "javax.net.ssl.SSLHandshakeException: Received fatal alert: unknown_ca"
    )
    expected = [("payments-v1", "b.example.com:443", "unknown_ca", "", False)]
    assert expected == counted(pair([line], make()))


def test_exception_window_closes_in_wall_time() -> None:
    """An exception-only failure is counted when the window's wall time passes."""
    clock = FakeClock(0.0)
    correlator = Correlator(1000, 2.0, clock)
    for number, event in events(exception("NIOThread@0", "m1")):
        assert correlator.feed(event, number) == []
    assert correlator.idle() == []
    clock.now = 2.0
    expected = [("payments-v1", "unknown", "certificate_required", "", False)]
    assert expected == counted(correlator.idle())


def test_repeat_is_told_by_lines_however_much_wall_time_passed() -> None:
    """The onException record of a failure read long after it, everything read meanwhile (a
    quiet log): still its repeat, not a failure of its own."""
    clock = FakeClock(0.0)
    correlator = Correlator(1000, 2.0, clock)
    lines = [
        failed("NIOThread@0", "m1"),
        ssl_info("NIOThread@0", "m1", "k"),
        *records.on_exception(ctx=context("m1")),
    ]
    closed: list[Failure] = []
    for number, event in events(lines):
        closed += correlator.feed(event, number)
        closed += correlator.idle()
        clock.now += 60
    closed += correlator.close_all()
    assert aliases(closed) == [("10.20.3.4:443", "k")]
    assert correlator.exception_only == 0


def test_restored_exception_still_waits_and_its_repeat_is_not_counted() -> None:
    """A pending exception and the handshakeFailed lines of the window survive a checkpoint: the
    repeat of a failure read before the restart is not counted again."""
    before = make()
    lines = [failed("NIOThread@0", "m1"), ssl_info("NIOThread@0", "m1", "k1")]
    lines += exception("NIOThread@0", "m2")
    for number, event in events(lines):
        before.feed(event, number)
    after = make()
    after.restore(through_json(before.snapshot()))
    later = [traffic()] * 6 + exception("NIOThread@0", "m1")
    out: list[Failure] = []
    for number, event in events(later):
        out += after.feed(event, number + 6)  # numbered after the lines already read
    out += after.close_all()
    expected = [("payments-v1", "unknown", "certificate_required", "", False)]
    assert (expected, 1) == (counted(out), after.exception_only)


def test_pending_exceptions_are_bounded_by_the_window() -> None:
    """However many message ids, at most window_lines + 1 exceptions wait at once."""
    correlator = make(window_lines=10)
    lines = [line for i in range(100) for line in exception("NIOThread@0", f"m{i}")]
    most = 0
    for number, event in events(lines):
        correlator.feed(event, number)
        most = max(most, correlator.pending)
    assert most <= 11


# --- property: no input can crash the parser or the correlator, and the counts add up ----------

_THREADS = st.sampled_from(["NIOThread@0", "NIOThread@1", "Apigee-Main-2"])
_IDS = st.sampled_from(["m1", "m2", ""])
_STAMPS = st.sampled_from(
    [
        records.STAMP,
        "2017-02-30 05:28:57,813",
        "2017-13-01 00:00:00,000",
        "0000-01-01 00:00:00,000",
        "2017-10-23 24:00:00,000",
        "2017-10-23 05:28:59,999",
    ]
)
_REMOTES = st.sampled_from(
    ["backend.example.com/10.20.3.4:443", "/10.20.3.4:443", "[2001:db8::1]:443", "null", "", "x:y"]
)
_MESSAGES = st.sampled_from(
    [
        "Received fatal alert: bad_certificate",
        "(certificate_required) Received fatal alert: certificate_required",
        "Received fatal alert: <UNKNOWN ALERT: 116>",
        "General SSLEngine problem",
        "(certificate_unknown) PKIX path building failed: x",
        "",
        "Received fatal alert: ",
        "handshake failed, message: handshake failed, message: SSLInfo:",
    ]
)
_MARKER_TEXTS = st.sampled_from(
    [
        "handshakeFailed",
        "handshakeTimeout",
        "SSLInfo",
        "SSLInfo: ",
        "KeyAlias:",
        "handshake failed, message: ",
        "handshake timeout",
        "Received fatal alert: unknown_ca",
        "Unknown alert description (116)",
        "SSLClientChannel[",
        "Remote host:",
        "Remote:",
        "javax.net.ssl.SSLHandshakeException: ",
        "\t",
        "Caused by: ",
    ]
)


@st.composite
def record_lines(draw: st.DrawFn) -> list[str]:
    """One record of a random shape: a failure, a timeout, an SSLInfo line, an exception record,
    traffic, random text with markers at random places, or random bytes."""
    ctx = context(draw(_IDS))
    thread = draw(_THREADS)
    stamp = draw(_STAMPS)
    kind = draw(st.integers(0, 6))
    if kind == 0:
        return [
            records.failed(
                message=draw(_MESSAGES),
                remote=draw(_REMOTES),
                ctx=ctx,
                thread=thread,
                stamp=stamp,
                rendering=draw(st.sampled_from([records.REMOTE_HOST, records.CONNECTED])),
            )
        ]
    if kind == 1:
        return [records.timeout(remote=draw(_REMOTES), ctx=ctx, thread=thread, stamp=stamp)]
    if kind == 2:
        return [
            records.ssl_info(
                alias=draw(st.sampled_from(["k1", "null", ""])), ctx=ctx, thread=thread, stamp=stamp
            )
        ]
    if kind == 3:
        return records.exception_record(
            "javax.net.ssl.SSLHandshakeException: " + draw(_MESSAGES),
            ctx=ctx,
            thread=thread,
            stamp=stamp,
            caused_by=draw(st.sampled_from(["", "javax.net.ssl.SSLException: x"])),
        )
    if kind == 4:
        return [records.traffic(ctx=ctx, thread=thread, stamp=stamp)]
    if kind == 5:
        parts = draw(st.lists(st.one_of(_MARKER_TEXTS, st.text(max_size=20)), max_size=8))
        prefix = draw(st.sampled_from(["", f"{stamp} {ctx}{thread} ERROR HTTP.CLIENT - "]))
        return [(prefix + "".join(parts)).replace("\n", " ").replace("\r", " ")]
    raw = draw(st.binary(max_size=80)).replace(b"\n", b" ")
    return [raw.decode("latin-1")]


class CountingParser(Parser):
    """The real parser, counting what it made of each candidate line."""

    def __init__(self) -> None:
        super().__init__(timezone.utc)
        self.kinds: dict[str, int] = {}
        self.candidates = 0
        self.unreadable = 0  # failures whose backend could not be read (also unrecognised)

    def parse(self, raw: bytes, record: Optional[bytes] = None) -> Optional[Event]:
        self.candidates += 1
        event = super().parse(raw, record)  # an UnrecognisedLine passes through to the pipeline
        name = type(event).__name__
        self.kinds[name] = self.kinds.get(name, 0) + 1
        if isinstance(event, HandshakeFailure) and event.target == "unknown":
            self.unreadable += 1
        return event


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    shapes=st.lists(record_lines(), max_size=30),
    cuts=st.lists(st.integers(1, 400), max_size=6),
    window=st.integers(1, 6),
)
def test_no_input_raises_and_the_counts_add_up(
    shapes: list[list[str]], cuts: list[int], window: int
) -> None:
    """Random records, random text with markers anywhere, random bytes, fed in blocks cut at
    random places: nothing raises; every line is counted; every candidate line is an event, none
    or unrecognised; every failure read comes out once, paired or unpaired; every SSLInfo line
    pairs or is an orphan; exception-only failures are at most the exception events."""
    data = records.text([line for shape in shapes for line in shape]).encode("utf-8", "replace")
    stats = FileStats()
    parser = CountingParser()
    correlator = Correlator(window, None)
    out: list[Failure] = []
    pipeline = LogPipeline(stats, parser, correlator, [out.append])
    splitter = LineSplitter(1 << 20, stats)
    at = 0
    for cut in [*cuts, len(data)]:
        piece = data[at : at + cut] if cut != len(data) else data[at:]
        at += len(piece)
        for segment in splitter.feed(piece):
            pipeline.process(*segment)
    pipeline.finish()
    kinds = parser.kinds
    failures, infos = kinds.get("HandshakeFailure", 0), kinds.get("SSLInfo", 0)
    events = failures + infos + kinds.get("AlertException", 0)
    paired = sum(1 for f in out if f.paired)
    from_lines = paired + correlator.unpaired
    unreadable = parser.unreadable
    expected = (data.count(b"\n"), parser.candidates, failures, infos, 0)
    actual = (
        stats.lines,
        events + kinds.get("NoneType", 0) + stats.unrecognised - unreadable,
        from_lines,
        paired + correlator.orphans,
        correlator.pending,
    )
    assert expected == actual
    assert len(out) == from_lines + correlator.exception_only
    assert correlator.exception_only <= kinds.get("AlertException", 0)


def test_exception_line_read_in_the_block_after_its_record_line_is_counted() -> None:
    """A read that ends between the record line and its exception line does not lose the
    exception-only failure: the next block's exception line is read with that record."""
    lines = exception("NIOThread@0", "m1")
    first, rest = records.text(lines[:1]).encode(), records.text(lines[1:]).encode()
    stats = FileStats()
    out: list[Failure] = []
    pipeline = LogPipeline(stats, Parser(), make(), [out.append])
    pipeline.process(first)
    pipeline.process(rest)
    pipeline.finish()
    expected = [("payments-v1", "unknown", "certificate_required", "", False)]
    assert expected == counted(out)
