"""Record heads: every timestamp rendering logback writes, the zone when given, a site's own head
pattern, and the one answer to "does a record start here"."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from apigee_tls_exporter.config import check_head_pattern
from apigee_tls_exporter.records.correlate import Correlator
from apigee_tls_exporter.records.events import Failure
from apigee_tls_exporter.records.head import RecordHead, is_record_line
from apigee_tls_exporter.records.parse import Parser
from apigee_tls_exporter.records.pipeline import LogPipeline
from apigee_tls_exporter.records.stats import FileStats
from helpers import records
from hypothesis import given, settings
from hypothesis import strategies as st

CONFIGURED = ZoneInfo("America/New_York")  # the configured `timezone` of the tests


def run(lines: list[str], head: RecordHead | None = None) -> tuple[list[Failure], FileStats]:
    failures: list[Failure] = []
    stats = FileStats()
    parser = Parser(CONFIGURED) if head is None else Parser(CONFIGURED, head)
    pipeline = LogPipeline(stats, parser, Correlator(1000, None), [failures.append])
    pipeline.process(records.text(lines).encode())
    pipeline.finish()
    return failures, stats


def playbook(stamp: str) -> list[str]:
    """The playbook's record (handshakeFailed + SSLInfo + the onException trace) at ``stamp``."""
    return [
        records.traffic(stamp=stamp),
        records.failed(stamp=stamp),
        records.ssl_info(stamp=stamp),
        *records.on_exception(stamp=stamp),
    ]


# (zone text, what it means: a fixed tz, or None for the configured one)
_ZONES = st.sampled_from(
    [
        ("", None),
        ("Z", dt.timezone.utc),
        ("UTC", dt.timezone.utc),
        ("GMT", dt.timezone.utc),
        ("+0000", dt.timezone.utc),
        ("+00:00", dt.timezone.utc),
        ("+0530", dt.timezone(dt.timedelta(hours=5, minutes=30))),
        ("-07:00", dt.timezone(dt.timedelta(hours=-7))),
        ("+02", dt.timezone(dt.timedelta(hours=2))),
        ("Europe/Berlin", ZoneInfo("Europe/Berlin")),
        ("CEST", None),  # an ambiguous abbreviation: the configured zone
    ]
)


@st.composite
def renderings(draw: st.DrawFn) -> tuple[str, float]:
    """A head time in one rendering, and the epoch it means."""
    moment = draw(
        st.datetimes(
            min_value=dt.datetime(2001, 1, 1),
            max_value=dt.datetime(2037, 12, 31),
            timezones=st.none(),
        )
    )
    zone, tz = draw(_ZONES)
    digits = draw(st.sampled_from([0, 1, 3, 6, 9]))
    separator = draw(st.sampled_from([",", "."]))
    date_time = draw(st.sampled_from([" ", "T"]))
    zone_gap = draw(st.sampled_from(["", " "])) if zone[:1] in "Z+-" else " "
    fraction = f"{moment.microsecond:06d}{draw(st.integers(0, 999)):03d}"[:digits]
    text = moment.strftime(f"%Y-%m-%d{date_time}%H:%M:%S")
    if digits:
        text += separator + fraction
    if zone:
        text += zone_gap + zone
    local = moment.replace(microsecond=0, tzinfo=tz or CONFIGURED)
    if tz is None:  # the configured zone's fold: the first of a repeated hour, as datetime does
        local = local.replace(fold=0)
    epoch = local.timestamp() + (int(fraction) / 10**digits if digits else 0)
    return text, epoch


@given(renderings(), st.booleans())
@settings(max_examples=300, deadline=None)
def test_every_rendering_counts_the_playbook_record_once_at_its_time(
    rendering: tuple[str, float], with_context: bool
) -> None:
    """The playbook's record with its time in any rendering (comma or dot, any fraction or none,
    ``T`` or space, any zone or none) is one paired failure at the time it names: in its zone when
    it gives one, in the configured timezone when not; no line is unrecognised."""
    stamp, epoch = rendering
    lines = playbook(stamp)
    if not with_context:
        lines = [line.replace(records.CTX, "") for line in lines]
    failures, stats = run(lines)
    assert [(f.reason, f.key_alias, f.paired) for f in failures] == [
        ("bad_certificate", "backend-client", True)
    ]
    assert failures[0].timestamp == pytest.approx(epoch, abs=1e-6)
    assert stats.unrecognised == 0


@pytest.mark.parametrize(
    "stamp",
    [
        "23/10/2017 05:28:57,813",
        "2017-10-23_05:28:57",
        "Oct 23, 2017 5:28:57 AM",
    ],
)
def test_a_head_no_rendering_reads_is_unrecognised_not_dropped(stamp: str) -> None:
    """A failure line whose head the built-in pattern cannot read counts as unrecognised."""
    failures, stats = run([records.failed(stamp=stamp), records.ssl_info(stamp=stamp)])
    assert (failures, stats.unrecognised) == ([], 2)


# A site's logback pattern: "[%d{ISO8601}] [%thread] %X{ctx} %level %logger - %msg"
SITE = (
    r"\[(?P<ts>[^\]]+)\] \[(?P<thread>[^\]]+)\] "
    r"(?:org:(?P<org>\S*) env:(?P<env>\S*) api:(?P<api>\S*) rev:(?P<rev>\S*) "
    r"messageid:(?P<messageid>\S*) )?\w+ \S+ - "
)


def site_line(line: str) -> str:
    """A built-in record line rewritten in the site's head."""
    stamp, rest = line[: len(records.STAMP)], line[len(records.STAMP) + 1 :]
    ctx = rest[: rest.index(" ", rest.index("messageid:")) + 1] if rest.startswith("org:") else ""
    thread, level, logger, body = rest[len(ctx) :].split(" ", 3)
    return f"[{stamp}+01:00] [{thread}] {ctx}{level} {logger} {body}"


def test_a_site_head_pattern_reads_its_records_and_their_traces() -> None:
    """With the site's own head pattern, the failure, its SSLInfo, and an exception trace's
    record are read as with the built-in head; the zone inside ``ts`` is used."""
    lines = [records.traffic(), records.failed(), records.ssl_info()]
    trace = records.exception_record(thread="NIOThread@5", ctx=records.context("other-id"))
    site = [site_line(line) for line in lines] + [site_line(trace[0]), *trace[1:]]
    failures, stats = run(site, RecordHead(SITE))
    expected = dt.datetime(2017, 10, 23, 5, 28, 57, 813000, dt.timezone(dt.timedelta(hours=1)))
    assert [(f.reason, f.key_alias, f.api) for f in failures] == [
        ("bad_certificate", "backend-client", "payments-v1"),
        ("certificate_required", "", "payments-v1"),
    ]
    assert failures[0].timestamp == pytest.approx(expected.timestamp())
    assert stats.unrecognised == 0


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("(?P<ts>", "not a regular expression"),
        (r"(?P<ts>\S+) ", "named groups"),
        (r"(?P<ts>\S+) (?P<thread>\S+) (?P<ctx>\S+)", "unknown named group 'ctx'"),
    ],
)
def test_a_bad_head_pattern_says_what_is_wrong(pattern: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        check_head_pattern(pattern)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (records.failed().encode(), True),
        (records.failed(stamp="2017-10-23T05:28:57Z").encode(), True),
        (b"\tat sun.security.ssl.Alerts.getSSLException(Alerts.java:208)", False),
        (b"javax.net.ssl.SSLException: Received fatal alert: bad_certificate", False),
        (b"Caused by: java.security.cert.CertificateException: No name matching x found", False),
        (b"2017 was a year", False),
    ],
)
def test_is_record_line(line: bytes, expected: bool) -> None:
    assert is_record_line(line) == expected
