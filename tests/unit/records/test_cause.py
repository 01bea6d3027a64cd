"""``General SSLEngine problem``: the failure takes the reason of the ``Caused by:`` chain of the
exception record of its thread and message id, counted once in any order, in ``run`` (blocks as
they are read, the wall-time window) and in ``scan`` (serial and cut in pieces) alike.

The traces are the old JDK 8 SSLEngine's (``sun.security.ssl.Handshaker.checkThrown``): the
wrapper, the same wrapper as the first cause, then the cause the JDK 8 sources throw.
"""

from __future__ import annotations

from collections import Counter
from datetime import timezone
from pathlib import Path
from typing import Optional

import pytest
from apigee_tls_exporter.records.correlate import Correlator, PairingState
from apigee_tls_exporter.records.events import Failure
from apigee_tls_exporter.records.parse import Parser
from apigee_tls_exporter.records.pipeline import LogPipeline
from apigee_tls_exporter.records.stats import FileStats
from apigee_tls_exporter.scan.plan import plan, scan
from helpers import records
from hypothesis import given, settings
from hypothesis import strategies as st

GENERAL = "General SSLEngine problem"
# (the cause's Caused by: lines as JDK 8 writes them, the reason they give)
CAUSES = [
    (
        [
            "sun.security.validator.ValidatorException: PKIX path building failed: "
            "sun.security.provider.certpath.SunCertPathBuilderException: unable to find valid "
            "certification path to requested target",
            "sun.security.provider.certpath.SunCertPathBuilderException: unable to find valid "
            "certification path to requested target",
        ],
        "pkix_path_building_failed",
    ),
    (
        [
            "sun.security.validator.ValidatorException: PKIX path validation failed: "
            "java.security.cert.CertPathValidatorException: timestamp check failed",
            "java.security.cert.CertPathValidatorException: timestamp check failed",
            "java.security.cert.CertificateExpiredException: "
            "NotAfter: Sun Jan 01 00:00:00 UTC 2017",
        ],
        "pkix_path_validation_failed",
    ),
    (
        ["java.security.cert.CertificateException: No subject alternative names present"],
        "hostname_mismatch",
    ),
    (
        [
            "java.security.cert.CertificateException: No name matching backend.example.com found",
        ],
        "hostname_mismatch",
    ),
    (
        [
            "sun.security.validator.ValidatorException: PKIX path validation failed: "
            "java.security.cert.CertPathValidatorException: Algorithm constraints check failed "
            "on signature algorithm: MD5withRSA",
        ],
        "algorithm_constraints",
    ),
]
THREAD = "NIOThread@3"
MID = "rrt-gsp-1"


def trace(causes: list[str], *, thread: str = THREAD, mid: str = MID) -> list[str]:
    """The onException record of a General SSLEngine problem with its Caused by: chain."""
    lines = [
        f"{records.STAMP} {records.context(mid)}{thread} ERROR ADAPTORS.HTTP.FLOW - "
        "RequestWriteListener.onException() : "
        "RequestWriteListener.onException(HTTPRequest@6071a73d)",
        f"javax.net.ssl.SSLHandshakeException: {GENERAL}",
        "\tat sun.security.ssl.Handshaker.checkThrown(Handshaker.java:1529) ~[na:1.8.0_151]",
        "\tat sun.security.ssl.SSLEngineImpl.checkTaskThrown(SSLEngineImpl.java:535)",
        f"Caused by: javax.net.ssl.SSLHandshakeException: {GENERAL}",
        "\tat sun.security.ssl.Alerts.getSSLException(Alerts.java:192) ~[na:1.8.0_151]",
    ]
    for cause in causes:
        lines += [f"Caused by: {cause}", "\tat sun.security.ssl.X.y(X.java:1) ~[na:1.8.0_151]"]
    return [*lines, "\t... 22 common frames omitted"]


def failure(*, thread: str = THREAD, mid: str = MID) -> str:
    return records.failed(message=GENERAL, ctx=records.context(mid), thread=thread)


def info(*, thread: str = THREAD, mid: str = MID) -> str:
    return records.ssl_info(alias="legacy-client", ctx=records.context(mid), thread=thread)


def noise(n: int) -> list[str]:
    return [records.traffic(ctx=records.context(f"m-{i}"), thread="NIOThread@9") for i in range(n)]


def read(
    lines: list[str], cuts: tuple[int, ...] = (), window: int = 1000
) -> tuple[list[Failure], Correlator]:
    """The failures of ``lines`` read in blocks cut after each line index of ``cuts``."""
    failures: list[Failure] = []
    stats = FileStats()
    correlator = Correlator(window, None)
    pipeline = LogPipeline(stats, Parser(timezone.utc), correlator, [failures.append])
    at = 0
    for cut in (*sorted(set(cuts)), len(lines)):
        if cut > at:
            pipeline.process(records.text(lines[at:cut]).encode())
            at = cut
    pipeline.finish()
    return failures, correlator


def reasons(failures: list[Failure]) -> list[tuple[str, str, bool]]:
    return [(f.reason, f.key_alias, f.paired) for f in failures]


@pytest.mark.parametrize(("causes", "reason"), CAUSES, ids=[r for _, r in CAUSES])
def test_general_sslengine_problem_takes_the_reason_of_its_caused_by_chain(
    causes: list[str], reason: str
) -> None:
    """handshakeFailed (General SSLEngine problem), SSLInfo, then the exception record: one
    failure, paired, with the cause's reason."""
    failures, _ = read([failure(), info(), *trace(causes), *noise(3)])
    assert reasons(failures) == [(reason, "legacy-client", True)]


def test_without_an_exception_record_it_stays_general_sslengine_problem() -> None:
    """No exception record within the window: the failure keeps its reason, counted once."""
    failures, correlator = read([failure(), info(), *noise(20)], window=10)
    assert reasons(failures) == [("general_sslengine_problem", "legacy-client", True)]
    assert correlator.pending == 0


def test_the_trace_of_another_thread_or_message_id_is_not_its_cause() -> None:
    """An exception record of another message id or thread gives its failure nothing."""
    other = trace(CAUSES[0][0], mid="rrt-other") + trace(CAUSES[2][0], thread="NIOThread@4")
    failures, _ = read([failure(), info(), *other, *noise(3)])
    assert reasons(failures) == [("general_sslengine_problem", "legacy-client", True)]


def test_a_cause_past_the_window_is_not_taken() -> None:
    """The exception record comes more than ``window_lines`` lines after the failure."""
    failures, _ = read([failure(), info(), *noise(30), *trace(CAUSES[0][0])], window=10)
    assert reasons(failures) == [("general_sslengine_problem", "legacy-client", True)]


@st.composite
def arrangements(draw: st.DrawFn) -> tuple[list[str], tuple[int, ...], str]:
    """The three records of one failure in any order, noise between them, read in blocks cut
    anywhere; and the reason expected."""
    causes, reason = draw(st.sampled_from(CAUSES))
    parts = [[failure()], [info()], trace(causes)]
    order = draw(st.permutations(range(3)))
    if order.index(0) > order.index(1):  # an SSLInfo line before its failure pairs with nothing
        order = [i for i in order if i != 1]
        order.insert(order.index(0) + 1, 1)
    lines = noise(draw(st.integers(0, 3)))
    for i in order:
        lines += parts[i] + noise(draw(st.integers(0, 4)))
    cuts = tuple(draw(st.lists(st.integers(1, len(lines) - 1), max_size=4)))
    return lines, cuts, reason


@given(arrangements())
@settings(max_examples=200, deadline=None)
def test_counted_once_with_its_cause_in_any_order_and_any_blocks(
    arrangement: tuple[list[str], tuple[int, ...], str],
) -> None:
    """Whichever order the failure, its SSLInfo line and the exception record come in, and
    wherever the reads end (inside the trace too), one failure with the cause's reason."""
    lines, cuts, reason = arrangement
    failures, correlator = read(lines, cuts)
    assert reasons(failures) == [(reason, "legacy-client", True)]
    assert correlator.pending == 0


def run_pipeline(clock: list[float]) -> tuple[LogPipeline, list[Failure]]:
    failures: list[Failure] = []
    stats = FileStats()
    correlator = Correlator(1000, 2.0, clock=lambda: clock[0])
    pipeline = LogPipeline(stats, Parser(timezone.utc), correlator, [failures.append])
    return pipeline, failures


def test_run_waits_for_the_cause_written_after_an_idle_read() -> None:
    """``run``: the failure and its SSLInfo line are read, the log is idle, the trace comes a
    second later (within the wall-time window): counted once, with the cause."""
    now = [0.0]
    pipeline, failures = run_pipeline(now)
    pipeline.process(records.text([failure(), info()]).encode())
    pipeline.idle()
    now[0] = 1.0
    pipeline.process(records.text(trace(CAUSES[0][0])).encode())
    pipeline.idle()  # the trace is the last thing written: at idle it is whole
    now[0] = 10.0
    pipeline.idle()
    assert reasons(failures) == [("pkix_path_building_failed", "legacy-client", True)]


def test_run_counts_general_sslengine_problem_when_no_cause_comes_in_the_window() -> None:
    """``run``: no trace within the wall-time window: counted as general_sslengine_problem."""
    now = [0.0]
    pipeline, failures = run_pipeline(now)
    pipeline.process(records.text([failure(), info()]).encode())
    pipeline.idle()
    now[0] = 1.0
    pipeline.idle()
    assert failures == []
    now[0] = 2.5
    pipeline.idle()
    assert reasons(failures) == [("general_sslengine_problem", "legacy-client", True)]


def test_run_counts_the_failure_with_its_cause_at_once_when_the_trace_is_whole() -> None:
    """``run``: failure, SSLInfo and the trace read in one go, then the log is idle: the
    failure is counted with its cause; a later idle counts nothing more."""
    now = [0.0]
    pipeline, failures = run_pipeline(now)
    pipeline.process(records.text([failure(), info(), *trace(CAUSES[2][0])]).encode())
    pipeline.idle()
    now[0] = 5.0
    pipeline.idle()
    assert reasons(failures) == [("hostname_mismatch", "legacy-client", True)]


def scan_counts(path: Path, jobs: int, piece_bytes: Optional[int] = None) -> Counter[str]:
    extra = {} if piece_bytes is None else {"piece_bytes": piece_bytes}
    result = scan([str(path)], tz=timezone.utc, jobs=jobs, window_lines=40, **extra)  # type: ignore[arg-type]
    counts: Counter[str] = Counter()
    for metric in result.registry().collect():
        for sample in metric.samples:
            if sample.name == "apigee_tls_handshake_failures_total":
                counts[sample.labels["reason"]] += int(sample.value)
    return counts


@pytest.mark.parametrize("piece_bytes", [1_500, 3_000, 7_000, 11_000])
def test_scan_serial_and_parallel_count_each_failure_once_with_its_cause(
    tmp_path: Path, piece_bytes: int
) -> None:
    """A log of many General SSLEngine problem failures (every cause, some without an exception
    record), cut in pieces anywhere: the serial and the parallel scan count the same reasons,
    each failure once."""
    lines: list[str] = []
    expected: Counter[str] = Counter()
    for i in range(120):
        mid = f"rrt-gsp-{i}"
        causes, reason = CAUSES[i % len(CAUSES)]
        lines += [failure(mid=mid), info(mid=mid)]
        if i % 7 == 3:
            expected["general_sslengine_problem"] += 1
        else:
            lines += trace(causes, mid=mid)
            expected[reason] += 1
        lines += noise(i % 5)
    path = tmp_path / "system.log"
    path.write_text(records.text(lines))
    pieces = plan([str(path)], [True], [False], [path.stat().st_size], 2, piece_bytes, 40)
    assert len(pieces) >= 10  # the precondition: cut in many places
    serial = scan_counts(path, 1)
    parallel = scan_counts(path, 2, piece_bytes)
    assert (serial, parallel) == (expected, expected)


def test_a_failure_waiting_for_its_cause_survives_a_checkpoint() -> None:
    """The paired failure waiting for its cause is saved and restored (plain JSON); the cause
    read after the restart gives its reason."""
    failures: list[Failure] = []
    stats = FileStats()
    first = Correlator(1000, None)
    pipeline = LogPipeline(stats, Parser(timezone.utc), first, [failures.append])
    pipeline.process(records.text([failure(), info()]).encode())
    saved = PairingState.model_validate_json(first.snapshot().model_dump_json())
    second = Correlator(1000, None)
    second.restore(saved)
    pipeline.correlator = second
    pipeline.process(records.text(trace(CAUSES[3][0])).encode())
    pipeline.finish()
    assert reasons(failures) == [("hostname_mismatch", "legacy-client", True)]
