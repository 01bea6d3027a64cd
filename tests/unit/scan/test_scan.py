"""``scan`` on every core: pieces and their merge (``daemon/scan/plan.py``,
``daemon/scan/pieces.py``), the prefilter's two search implementations
(``daemon/records/search.py``), ``--since``/``--until`` and the table's failures over time."""

from __future__ import annotations

import gzip
import io
import json
import multiprocessing
import os
import random
import re
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional
from zoneinfo import ZoneInfo

import pytest
from apigee_tls_exporter import cli
from apigee_tls_exporter.cli import main
from apigee_tls_exporter.records.parse import MARKERS
from apigee_tls_exporter.records.search import PURE_ENV, LineFinder
from apigee_tls_exporter.scan import pieces
from apigee_tls_exporter.scan.plan import ScanResult, plan, scan
from helpers import records
from helpers.records import context, failed, on_exception, ssl_info, text, timeout, traffic
from helpers.support import wait_for
from prometheus_client import generate_latest

UTC = timezone.utc
ROOT = Path(__file__).resolve().parents[3]
TARGETS = [f"backend-{i}.example.com/10.20.3.{i}:443" for i in range(12)]
MESSAGES = [
    "Received fatal alert: bad_certificate",
    "Received fatal alert: handshake_failure",
    "PKIX path building failed: unable to find valid certification path",
    "Remote host closed connection during handshake",
]


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S,") + f"{moment.microsecond // 1000:03d}"


def noisy_log(seed: int, records: int, *, gap: int, start: Optional[datetime] = None) -> list[str]:
    """Lines of a busy MP: failures of four threads over a few message ids (so that some are
    replaced before their SSLInfo comes), SSLInfo lines 0 to ``gap`` lines later (some past the
    pairing window, some never), orphan SSLInfo lines, timeouts, unrecognised handshake lines,
    stack traces, lines of 3,000 bytes, and many label sets (targets, reasons, aliases)."""
    rng = random.Random(seed)
    moment = start or datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    lines: list[str] = []
    due: list[tuple[int, str]] = []  # (line index, SSLInfo line) still to write
    for _ in range(records):
        moment += timedelta(milliseconds=rng.randint(0, 1500))
        now = stamp(moment)
        thread = f"NIOThread@{rng.randint(0, 3)}"
        ctx = context(f"rrt-{rng.randint(0, 5)}", api=rng.choice(["payments-v1", "ledger-v2"]))
        for item in [d for d in due if d[0] <= len(lines)]:
            due.remove(item)
            lines.append(item[1])
        r = rng.random()
        if r < 0.10:
            lines.append(
                failed(
                    message=rng.choice(MESSAGES),
                    remote=rng.choice(TARGETS),
                    ctx=ctx,
                    thread=thread,
                    stamp=now,
                )
            )
            if rng.random() < 0.85:
                alias = rng.choice(["client-a", "client-b", "null"])
                info = ssl_info(alias=alias, ctx=ctx, thread=thread, stamp=now)
                due.append((len(lines) + rng.randint(0, gap), info))
            if rng.random() < 0.3:
                lines += on_exception(ctx=ctx, thread=thread, stamp=now)
        elif r < 0.105:  # an exception record alone, as TLS 1.3 rejections may be logged
            lines += on_exception(
                alert=rng.choice(["certificate_required", "bad_certificate"]),
                ctx=ctx,
                thread=thread,
                stamp=now,
            )
        elif r < 0.11:
            lines.append(ssl_info(alias="orphan", ctx=ctx, thread=thread, stamp=now))
        elif r < 0.12:
            lines.append(timeout(remote=rng.choice(TARGETS), ctx=ctx, thread=thread, stamp=now))
        elif r < 0.125:
            lines.append(f"{now} {ctx}{thread} ERROR HTTP.CLIENT - X.handshakeFailed() : new shape")
        elif r < 0.13:
            lines.append(traffic(ctx=ctx, stamp=now) + " " + "x" * 3000)
        else:
            lines.append(traffic(ctx=ctx if rng.random() < 0.7 else "", stamp=now))
    return lines + [line for _, line in due]


def outputs(result: ScanResult) -> tuple[str, dict[str, Any], dict[Any, Any]]:
    """Everything a scan reports: Prometheus text, the JSON report, the timeline."""
    timeline = {labels: dict(minutes) for labels, minutes in result.timeline.items()}
    return generate_latest(result.registry()).decode(), cli.scan_json(result), timeline


def cuts_of(paths: list[str], piece_bytes: int, window: int) -> list[tuple[int, int]]:
    """(start, look-back start) of every piece but the first of each file."""
    sizes = [os.path.getsize(p) for p in paths]
    gz = [Path(p).read_bytes()[:2] == b"\x1f\x8b" for p in paths]
    pieces = plan(paths, [True] * len(paths), gz, sizes, 2, piece_bytes, window)
    return [(p.start, p.lookback) for p in pieces if p.start]


def straddling_pairs(path: Path, cuts: list[tuple[int, int]]) -> int:
    """Failure lines before a cut whose SSLInfo line (same thread and id) comes after it."""
    data = path.read_bytes()
    found = 0
    for cut, lookback in cuts:
        before = data[lookback:cut].split(b"\n")
        after = data[cut : cut + (cut - lookback)].split(b"\n")
        for line in before:
            if b"handshakeFailed() : SSLClientChannel" in line:
                key = line.split(b" ERROR ")[0].split(b" ", 2)[2]  # context block and thread
                found += any(b"SSLInfo" in x and key in x for x in after)
    return found


@pytest.mark.parametrize("piece_bytes", [2_000, 9_000, 60_000])
def test_parallel_scan_equals_the_serial_scan_series_by_series(
    tmp_path: Path, piece_bytes: int
) -> None:
    """Cut into pieces and read by two processes, a log gives the serial scan's output: every
    series and its last timestamp, lines, unrecognised and cut lines, unpaired failures and
    orphans, and the timeline, with failures whose SSLInfo line lies across a cut."""
    path = tmp_path / "system.log"
    path.write_text(text(noisy_log(1, 4000, gap=60)))
    options: dict[str, Any] = {"tz": UTC, "window_lines": 40, "max_line_bytes": 1000}
    serial = outputs(scan([str(path)], jobs=1, timeline=True, **options))
    parallel = outputs(scan([str(path)], jobs=2, timeline=True, piece_bytes=piece_bytes, **options))
    cuts = cuts_of([str(path)], piece_bytes, 40)
    report = serial[1]
    assert len(cuts) >= 10  # preconditions: many cuts, pairings across them, every kind of line
    assert straddling_pairs(path, cuts) >= 5
    assert all(report["pairing"][k] > 0 for k in ("unpaired", "orphans"))
    assert report["files"][str(path)]["unrecognised_lines"] > 0
    assert report["files"][str(path)]["truncated_lines"] > 0
    assert serial == parallel


def test_parallel_scan_counts_bursts_of_exception_records_as_the_serial_scan(
    tmp_path: Path,
) -> None:
    """Exception records of one thread and message id, each within the pairing window of the
    one before, for far longer than the look-back, with now and then a handshakeFailed line of
    the same id: cut anywhere, the pieces count what the serial scan counts. (Each record's fate
    must depend on the window before it only: when it depended on whether the record before was
    counted, the chain reached further back than any look-back.)"""
    rng = random.Random(7)
    lines: list[str] = []
    moment = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    for i in range(1500):
        moment += timedelta(milliseconds=rng.randint(1, 900))
        ctx = context("rrt-burst")
        r = rng.random()
        if r < 0.3:
            lines += on_exception(ctx=ctx, thread="NIOThread@3", stamp=stamp(moment))
        elif r < 0.33:
            lines.append(
                failed(
                    message=MESSAGES[0],
                    remote=TARGETS[1],
                    ctx=ctx,
                    thread="NIOThread@3",
                    stamp=stamp(moment),
                )
            )
        else:
            lines.append(traffic(ctx=context(f"rrt-{i}"), stamp=stamp(moment)))
    path = tmp_path / "system.log"
    path.write_text(text(lines))
    options: dict[str, Any] = {"tz": UTC, "window_lines": 8, "timeline": True}
    serial = outputs(scan([str(path)], jobs=1, **options))
    assert serial[1]["total_failures"] > 10  # precondition: bursts counted
    for piece_bytes in (700, 1_500, 4_000):
        assert outputs(scan([str(path)], jobs=2, piece_bytes=piece_bytes, **options)) == serial


def test_parallel_scan_of_several_files_keeps_the_serial_series_bound(tmp_path: Path) -> None:
    """Several files (plain, gzip, one ending without a newline), with a series bound that
    overflows: the parallel scan admits the same label sets as the serial one, counts the same
    overflow, and reports each file as the serial scan does."""
    paths = []
    for i in range(4):
        lines = noisy_log(10 + i, 1500, gap=30, start=datetime(2026, 11, 20 + i, tzinfo=UTC))
        data = text(lines).encode()
        path = tmp_path / f"system.log.{i}"
        if i == 1:
            path = tmp_path / "system.log.1.gz"
            data = gzip.compress(data)
        elif i == 3:
            data = data.rstrip(b"\n")
        path.write_bytes(data)
        paths.append(str(path))
    options: dict[str, Any] = {"tz": UTC, "window_lines": 25, "max_series": 20}
    serial = outputs(scan(paths, jobs=1, timeline=True, **options))
    parallel = outputs(scan(paths, jobs=2, timeline=True, piece_bytes=5_000, **options))
    assert serial[1]["series_overflow"] > 0  # precondition: the bound is reached
    assert len(cuts_of(paths, 5_000, 25)) >= 10
    assert serial == parallel


@pytest.mark.parametrize("zlib", [False, True], ids=["fast", "zlib"])
@pytest.mark.parametrize("keep", [None, 3_000])
@pytest.mark.parametrize("members", [1, 3])
def test_a_gzip_file_cut_in_pieces_counts_as_the_serial_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keep: Optional[int], members: int, zlib: bool
) -> None:
    """A gzip file read by five processes, each inflating it from its start and reading its own
    range, gives the serial scan's output, pairings across the cuts included: with the look-back
    within the bytes kept or beyond them (inflated again from the start), for a file of several
    gzip members (whose trailer gives the size of the last one only), with the fast inflater
    and with zlib's."""
    if zlib:  # the workers are forked: they see what is patched here
        monkeypatch.setattr(pieces, "inflaters", lambda: ("zlib", None, None, (OSError,)))
    lines = noisy_log(5, 6000, gap=60)
    data = text(lines).encode()
    parts = [
        data[len(data) * k // members : len(data) * (k + 1) // members] for k in range(members)
    ]
    path = tmp_path / "system.log.1.gz"
    path.write_bytes(b"".join(gzip.compress(part) for part in parts))
    plain = tmp_path / "system.log.1"
    plain.write_bytes(data)
    if keep is not None:
        monkeypatch.setattr(pieces, "KEEP_BYTES", keep)
    options: dict[str, Any] = {"tz": UTC, "window_lines": 40, "timeline": True}
    serial = outputs(scan([str(path)], jobs=1, **options))
    parallel = outputs(scan([str(path)], jobs=5, piece_bytes=2_000, **options))
    gz_pieces = plan([str(path)], [True], [True], [path.stat().st_size], 5, 2_000, 40)
    assert len(gz_pieces) == 5  # precondition: cut
    inflated = [p.start for p in gz_pieces[1:]]
    assert straddling_pairs(plain, [(at, max(0, at - 20_000)) for at in inflated]) >= 2
    assert serial == parallel


def test_a_gzip_file_smaller_than_its_trailer_says_counts_as_the_serial_scan(
    tmp_path: Path,
) -> None:
    """When the pieces are planned past the file's end (a last gzip member of a few bytes makes
    the size read from the trailer 4 GiB too large), the piece that reaches the end closes it:
    the last line, without a newline and a failure whose SSLInfo line never comes, is counted
    once, as a line and as an unpaired failure."""
    lines = noisy_log(6, 3000, gap=20)
    lines.append(failed(message=MESSAGES[0], remote=TARGETS[0], ctx=context("rrt-last")))
    data = text(lines).encode().rstrip(b"\n")
    path = tmp_path / "system.log.1.gz"
    path.write_bytes(gzip.compress(data[:-30]) + gzip.compress(data[-30:]))
    pieces_planned = plan([str(path)], [True], [True], [path.stat().st_size], 5, 2_000, 40)
    assert all(p.start > len(data) for p in pieces_planned[1:])  # precondition: past the end
    options: dict[str, Any] = {"tz": UTC, "window_lines": 40}
    serial = scan([str(path)], jobs=1, **options)
    parallel = scan([str(path)], jobs=5, piece_bytes=2_000, **options)
    assert outputs(serial) == outputs(parallel)
    shorter = tmp_path / "system.log.2.gz"
    shorter.write_bytes(gzip.compress(data.rsplit(b"\n", 1)[0] + b"\n"))
    before = scan([str(shorter)], jobs=1, **options)
    assert (serial.files[str(path)].lines, serial.store.total(), serial.pairing.unpaired) == (
        before.files[str(shorter)].lines + 1,
        before.store.total() + 1,
        before.pairing.unpaired + 1,
    )


def test_progress_of_a_gzip_file_cut_in_pieces_ends_at_its_size(tmp_path: Path) -> None:
    """The pieces of a gzip file report their shares of its bytes on disk: the total, once."""
    path = tmp_path / "system.log.1.gz"
    path.write_bytes(gzip.compress(text(noisy_log(8, 4000, gap=20)).encode()))
    calls: list[tuple[int, int]] = []
    scan([str(path)], jobs=3, piece_bytes=2_000, progress=lambda d, t: calls.append((d, t)))
    size = path.stat().st_size
    assert calls[-1] == (size, size)
    assert all(done <= size for done, _ in calls)


def test_rewindable_reads_like_the_file_whatever_the_seeks() -> None:
    """Reads after any seeks (back within the bytes kept, back beyond them, forward past what
    was read) give the bytes a file would."""
    data = bytes(random.Random(1).getrandbits(8) for _ in range(200_000))
    rng = random.Random(2)
    stream = pieces.Rewindable(gzip.GzipFile(fileobj=io.BytesIO(gzip.compress(data))), keep=5_000)
    at = 0
    for _ in range(2_000):
        if rng.random() < 0.3:
            at = rng.choice([rng.randrange(len(data)), max(0, at - rng.randrange(8_000))])
            assert stream.seek(at) == at
        size = rng.choice([1, 100, 4_000, 30_000])
        got = stream.read(size)
        assert (got, stream.tell()) == (data[at : at + size], min(len(data), at + size))
        at = stream.tell()


@pytest.mark.parametrize("seed", range(12))
def test_parallel_scan_equals_the_serial_scan_on_random_logs(tmp_path: Path, seed: int) -> None:
    """Random logs (no final newline, CRLF, a line of up to 200 kB, cut lines, gzip of one or
    several members) and random windows, piece sizes and process counts: the parallel scan's
    output is the serial one's. (Such a fuzz, 300 cases, found the exception-burst chain.)"""
    rng = random.Random(seed)
    data = text(noisy_log(seed, rng.randint(200, 3000), gap=rng.randint(1, 80))).encode()
    if rng.random() < 0.3:
        data = data.rstrip(b"\n")
    if rng.random() < 0.2:
        data = data.replace(b"\n", b"\r\n")
    if rng.random() < 0.3:
        at = rng.randrange(len(data))
        data = data[:at] + b"x" * rng.randint(1_000, 200_000) + data[at:]
    path = tmp_path / "system.log"
    if rng.random() < 0.5:
        cuts = sorted(rng.randrange(len(data) + 1) for _ in range(rng.choice([0, 0, 1, 4])))
        parts = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)])]
        path = tmp_path / "system.log.1.gz"
        path.write_bytes(b"".join(gzip.compress(part) for part in parts))
    else:
        path.write_bytes(data)
    options: dict[str, Any] = {
        "tz": UTC,
        "window_lines": rng.choice([5, 40, 200]),
        "max_line_bytes": rng.choice([1_000, 1 << 20]),
        "timeline": True,
    }
    serial = outputs(scan([str(path)], jobs=1, **options))
    jobs, piece_bytes = rng.randint(2, 5), rng.choice([500, 2_000, 20_000])
    assert outputs(scan([str(path)], jobs=jobs, piece_bytes=piece_bytes, **options)) == serial


# A site's logback pattern: "[%d] [%thread] %X{ctx} %level %logger - %msg" (as logs[].record_head)
SITE_HEAD = (
    r"\[(?P<ts>[^\]]+)\] \[(?P<thread>[^\]]+)\] "
    r"(?:org:(?P<org>\S*) env:(?P<env>\S*) api:(?P<api>\S*) rev:(?P<rev>\S*) "
    r"messageid:(?P<messageid>\S*) )?\w+ \S+ - "
)


def in_site_head(line: str) -> str:
    """A line of ``noisy_log`` with its record head (if it has one) in the site's rendering."""
    if not re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ", line):
        return line  # a stack frame, an exception class line: the same in any rendering
    stamp, rest = line[:23], line[24:]
    ctx = rest[: rest.index(" ", rest.index("messageid:")) + 1] if rest.startswith("org:") else ""
    thread, level, logger, body = rest[len(ctx) :].split(" ", 3)
    return f"[{stamp}] [{thread}] {ctx}{level} {logger} {body}"


def without_bytes(metrics: str) -> str:
    """Prometheus text without the byte counts (a site's head is longer than the built-in)."""
    return "\n".join(line for line in metrics.splitlines() if "_bytes" not in line)


@pytest.mark.parametrize("seed", range(4))
def test_a_log_with_the_sites_record_head_scans_as_the_built_in_one_cut_anywhere(
    tmp_path: Path, seed: int
) -> None:
    """A log whose records begin with the site's own head (no line begins with a digit), read
    with ``record_head``, counts what the same log in the built-in rendering counts, serial or
    cut in pieces of any size (gzip too): the pieces begin and look back at the records that
    the site's head reads."""
    rng = random.Random(seed)
    lines = noisy_log(seed, rng.randint(1500, 3000), gap=rng.randint(5, 60))
    lines = [line if rng.random() < 0.98 else "4 " + line for line in lines]  # digits, no record
    built_in, site = tmp_path / "system.log", tmp_path / "site.log"
    built_in.write_text(text(lines))
    site.write_text(text([in_site_head(line) for line in lines]))
    options: dict[str, Any] = {"tz": UTC, "window_lines": rng.choice([5, 40]), "timeline": True}
    expected = outputs(scan([str(built_in)], jobs=1, **options))
    assert expected[1]["total_failures"] > 50  # precondition: a busy log
    site_options = {**options, "record_head": SITE_HEAD}
    serial = outputs(scan([str(site)], jobs=1, **site_options))
    assert without_bytes(serial[0]) == without_bytes(expected[0].replace(str(built_in), str(site)))
    assert serial[2] == expected[2]
    gz = tmp_path / "site.log.1.gz"
    gz.write_bytes(gzip.compress(site.read_bytes()))
    for path in (site, gz):
        for piece_bytes in (700, 3_000, 20_000):
            parallel = scan([str(path)], jobs=2, piece_bytes=piece_bytes, **site_options)
            got = outputs(parallel)
            assert got[0].replace(str(path), str(site)) == serial[0]
            assert got[2] == serial[2]


def test_scan_takes_the_sites_record_head_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--record-head`` reads a site's log that the built-in head reads as unrecognised lines;
    a pattern that is not one is one line and exit code 2."""
    path = tmp_path / "site.log"
    path.write_text(text([in_site_head(failed(message=MESSAGES[0], remote=TARGETS[0]))]))
    assert main(["scan", "--format", "json", "--timezone", "UTC", str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["total_failures"], report["files"][str(path)]["unrecognised_lines"]) == (0, 1)
    args = ["scan", "--format", "json", "--timezone", "UTC", "--record-head", SITE_HEAD]
    assert main([*args, str(path)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["total_failures"], report["files"][str(path)]["unrecognised_lines"]) == (1, 0)
    code = main(["scan", "--record-head", r"(?P<ts>\S+) ", str(path)])
    err = capsys.readouterr().err
    assert (code, len(err.splitlines())) == (2, 1)
    assert err.startswith(f"{cli.PROG}: --record-head: needs the named groups")


def test_the_pool_is_gone_when_the_parallel_scan_returns(tmp_path: Path) -> None:
    """When ``scan`` returns, its worker processes and the pool's thread have ended. A pool left
    to end on its own (``shutdown(wait=False)``) races the interpreter's exit: Python 3.9 to 3.11
    then print a traceback (``OSError: [Errno 9] Bad file descriptor`` from the pool's wakeup
    pipe) after the output, about one run in five."""
    path = tmp_path / "system.log"
    path.write_text(text(noisy_log(3, 1500, gap=10)))
    threads = threading.active_count()
    scan([str(path)], jobs=2, piece_bytes=10_000)
    assert (multiprocessing.active_children(), threading.active_count()) == ([], threads)


def test_lines_back_finds_the_line_so_many_lines_before(tmp_path: Path) -> None:
    """A look-back starts exactly so many lines before the cut (or at the file's start),
    whatever the lengths of the lines."""
    lines = [f"line {i} " + "y" * (i * 7919 % 3000) for i in range(400)]
    path = tmp_path / "x.log"
    path.write_text(text(lines))
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    with open(path, "rb") as handle:
        got = [pieces.lines_back(handle, starts[n], 100) for n in (0, 50, 100, 101, 399)]
    assert [0, 0, 0, starts[1], starts[299]] == got


@pytest.mark.parametrize("read_bytes", [997, 4_096, 65_536])
def test_reads_of_any_size_count_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_bytes: int
) -> None:
    """However the reads cut the file (inside stack traces too), a scan counts the same:
    exception-only records whose exception line comes in the read after their record line keep
    that record's labels and time."""
    path = tmp_path / "system.log"
    path.write_text(text(noisy_log(4, 3000, gap=10)))
    options: dict[str, Any] = {"tz": UTC, "window_lines": 40, "timeline": True}
    whole = outputs(scan([str(path)], jobs=1, **options))
    monkeypatch.setattr(pieces, "READ_BYTES", read_bytes)
    assert outputs(scan([str(path)], jobs=1, **options)) == whole
    assert outputs(scan([str(path)], jobs=2, piece_bytes=20_000, **options)) == whole
    data = path.read_bytes()
    apart = [
        at
        for at in (m.start() for m in re.finditer(rb"^javax\.net\.ssl", data, re.MULTILINE))
        if at // read_bytes != (data.rfind(b"\n", 0, at - 1) + 1) // read_bytes
    ]
    assert apart  # precondition: an exception line read apart from its record line above


@pytest.mark.parametrize("read_bytes", [4_096, 30_000, 1 << 20])
def test_deep_stack_traces_count_the_same_however_the_reads_cut_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, read_bytes: int
) -> None:
    """A ``Caused by:`` line carrying the alert belongs to the record line above it within 256
    lines, however the reads fall in between: at depth 250 it is counted, at depth 300 it is
    not, whether a read ends between the record and that line or not, and whether a piece of a
    parallel scan starts inside the trace (its look-back then starts at the trace's record line,
    however many reads up it is)."""
    lines: list[str] = []
    moment = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    frame = "\tat sun.security.ssl.SSLEngineImpl.readRecord(SSLEngineImpl.java:1000) ~[na:1.8]"
    for i in range(40):
        moment += timedelta(seconds=1)
        depth = 250 if i % 2 else 300
        record = records.exception_record(
            "java.io.IOException: the connection failed",
            ctx=context(f"rrt-{i}"),
            stamp=stamp(moment),
        )
        cause = "Caused by: javax.net.ssl.SSLHandshakeException: Received fatal alert: unknown_ca"
        lines += [record[0], *[frame] * (depth - 1), cause, frame, traffic(stamp=stamp(moment))]
    path = tmp_path / "system.log"
    path.write_text(text(lines))
    monkeypatch.setattr(pieces, "READ_BYTES", read_bytes)
    options: dict[str, Any] = {"tz": UTC, "window_lines": 5}  # look-backs of 10 lines
    result = scan([str(path)], jobs=1, **options)
    assert result.store.total() == 20
    for piece_bytes in (3_000, 50_000):
        parallel = scan([str(path)], jobs=2, piece_bytes=piece_bytes, **options)
        assert outputs(parallel) == outputs(result)


def test_pieces_and_look_backs_begin_with_a_record(tmp_path: Path) -> None:
    """A piece is cut at a record's first line, never inside its stack trace, and its
    look-back starts at a record too."""
    path = tmp_path / "system.log"
    path.write_text(text(noisy_log(6, 3000, gap=20)))
    data = path.read_bytes()
    cuts = cuts_of([str(path)], 3_000, 40)
    assert len(cuts) > 50  # precondition
    assert all(data[c : c + 1].isdigit() and data[b : b + 1].isdigit() for c, b in cuts)
    assert all(data[c - 1 : c] == b"\n" and (b == 0 or data[b - 1 : b] == b"\n") for c, b in cuts)


def test_progress_reaches_the_whole_input_across_processes(tmp_path: Path) -> None:
    """The progress callback counts the bytes every process read: it ends at the total."""
    path = tmp_path / "system.log"
    path.write_text(text(noisy_log(3, 3000, gap=20)))
    calls: list[tuple[int, int]] = []
    scan([str(path)], jobs=2, piece_bytes=20_000, progress=lambda d, t: calls.append((d, t)))
    size = path.stat().st_size
    assert (size, size) == calls[-1]


# -- the prefilter: compiled and pure-Python searches -------------------------------------------


def tricky_buffers(seed: int) -> list[bytes]:
    """Buffers with markers at the start, at the end without a newline, twice in a line, and
    near misses (``handshakeFail``, ``SSLInf``, ``handshake Failed``)."""
    rng = random.Random(seed)
    words = [
        *MARKERS,
        b"handshakeFail",
        b"handshake Failed",
        b"SSLInf",
        b"handshakeTimeou",
        b"xx",
        b" ",
        b"\tat ",
        b"\n",
        b"\n\n",
        b"handshake",
    ]
    out = [b"", b"\n", b"SSLInfo", b"handshakeFailed\n", b"a\nhandshakeTimeout"]
    for _ in range(300):
        out.append(b"".join(rng.choice(words) for _ in range(rng.randint(1, 40))))
    return out


def test_accelerated_search_finds_the_same_lines_as_pure_python() -> None:
    """The compiled multi-literal search (``ahocorasick_rs``) and the
    pure-Python ``find`` passes yield the same (offset, line) pairs for any buffer and range."""
    fast, pure = LineFinder(MARKERS, accelerate=True), LineFinder(MARKERS, accelerate=False)
    assert (fast.accelerated, pure.accelerated) == (True, False)
    checked = 0
    for buf in tricky_buffers(7):
        data = bytearray(buf)
        ranges = [(0, len(data))]
        newlines = [i + 1 for i, c in enumerate(data) if c == 10]
        if len(newlines) >= 2:
            ranges.append((newlines[0], newlines[-1]))  # a range of whole lines in the middle
        for start, end in ranges:
            got = list(fast(data, start, end))
            assert list(pure(data, start, end)) == got
            checked += len(got)
    assert checked > 500  # precondition: lines were found


def test_the_search_leaves_out_the_ignorable_lines_as_pure_python_does() -> None:
    """With the built-in head, the candidates are the marker lines that are not ``ignorable``
    (indented stack frames that mention a handshake marker only), found alike by the compiled
    search and the pure-Python one, for any buffer and range; with a site's head, every marker
    line."""
    from apigee_tls_exporter.records.head import DEFAULT, RecordHead
    from apigee_tls_exporter.records.parse import (
        HANDSHAKE_MARKERS,
        candidate_lines,
        ignorable,
    )

    fast = LineFinder(MARKERS, accelerate=True, not_indented=HANDSHAKE_MARKERS)
    pure = LineFinder(MARKERS, accelerate=False, not_indented=HANDSHAKE_MARKERS)
    every = LineFinder(MARKERS, accelerate=False)
    site = RecordHead(r"(?P<ts>\S+ \S+) (?P<thread>\S+) ")
    left_out = 0
    for buf in tricky_buffers(11):
        data = bytearray(buf)
        ranges = [(0, len(data))]
        newlines = [i + 1 for i, c in enumerate(data) if c == 10]
        if len(newlines) >= 2:
            ranges.append((newlines[0], newlines[-1]))
        for start, end in ranges:
            all_lines = list(every(data, start, end))
            expected = [(at, line) for at, line in all_lines if not ignorable(line)]
            assert list(fast(data, start, end)) == expected
            assert list(pure(data, start, end)) == expected
            assert list(candidate_lines(data, start, end, DEFAULT)) == expected
            assert list(candidate_lines(data, start, end, site)) == all_lines
            left_out += len(all_lines) - len(expected)
    assert left_out > 20  # precondition: indented frames with a marker were there


def test_pure_python_search_groups_markers_by_shared_prefix() -> None:
    """The pure-Python search looks for ``handshake`` once for both of its markers, and finds
    a marker added later (no shared prefix) with a search of its own."""
    finder = LineFinder([b"handshakeFailed", b"handshakeTimeout", b"SSLInfo", b"Received fatal"])
    lines = b"x handshakeTimeout\nReceived fatal alert\nhandshake only\nSSLInfo: a\n"
    assert sorted(finder._needles) == [
        (b"Received fatal", None),
        (b"SSLInfo", None),
        (b"handshake", (b"Failed", b"Timeout")),
    ]
    assert [line for _, line in LineFinder(finder.literals, accelerate=False)(lines)] == [
        b"x handshakeTimeout",
        b"Received fatal alert",
        b"SSLInfo: a",
    ]


def environment(extra: dict[str, str]) -> dict[str, str]:
    """This environment without the switch that turns the accelerators off, plus ``extra``."""
    return {**{k: v for k, v in os.environ.items() if k != PURE_ENV}, **extra}


def run_cli(args: list[str], env: dict[str, str]) -> bytes:
    done = subprocess.run(
        [sys.executable, "-m", "apigee_tls_exporter", *args],
        capture_output=True,
        env=environment(env),
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_output_is_byte_identical_with_and_without_the_accelerators(tmp_path: Path) -> None:
    """``scan`` prints the same bytes with the compiled search and the isal inflater as
    with pure Python and zlib (``APIGEE_TLS_EXPORTER_PURE_PYTHON=1``), for a plain and a gzip
    log, serial and parallel, in every format."""
    lines = noisy_log(5, 3000, gap=30)
    plain = tmp_path / "system.log"
    plain.write_text(text(lines))
    packed = tmp_path / "system.log.1.gz"
    packed.write_bytes(gzip.compress(text(lines[::-1]).encode()))
    probe = "from apigee_tls_exporter.records import parse; "
    probe += "from apigee_tls_exporter.scan import pieces; print(parse._FINDER.accelerated, "
    probe += "pieces.inflaters()[0])"
    flags = [
        subprocess.run(
            [sys.executable, "-c", probe],
            capture_output=True,
            text=True,
            env=environment(env),
        ).stdout.split()
        for env in ({}, {PURE_ENV: "1"})
    ]
    assert flags == [["True", "isal"], ["False", "zlib"]]  # precondition: both paths are taken
    for fmt in ("prometheus", "json", "table", "backfill"):
        for jobs in ("1", "2"):
            args = ["scan", "--timezone", "UTC", "--format", fmt, "--jobs", jobs]
            args += [str(plain), str(packed)]
            assert run_cli(args, {PURE_ENV: "1"}) == run_cli(args, {})


# -- --since and --until ----------------------------------------------------------------------


def test_since_counts_from_its_instant_and_until_stops_before_its_own(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--since 10:00 --until 11:00`` (ISO times in the log's zone) counts a failure logged at
    10:00:00,000 and at 10:59:59,999, not at 09:59:59,999 nor at 11:00:00,000; a failure just
    before ``--since`` still pairs with its SSLInfo line after it (and is not counted), so no
    orphan appears."""
    times = ["09:59:59,999", "10:00:00,000", "10:59:59,999", "11:00:00,000"]
    lines = []
    for i, t in enumerate(times):
        ctx, when = context(f"m{i}"), f"2026-11-20 {t}"
        lines += [failed(ctx=ctx, stamp=when, remote=TARGETS[i])]
        lines += [traffic(stamp=when), ssl_info(ctx=ctx, stamp=when, alias=f"a{i}")]
    path = tmp_path / "system.log"
    path.write_text(text(lines))
    args = ["scan", "--format", "json", "--timezone", "Europe/Berlin", "--jobs", "1", str(path)]
    code = main([*args, "--since", "2026-11-20T10:00", "--until", "2026-11-20 11:00:00"])
    report = json.loads(capsys.readouterr().out)
    expected = (0, ["a1", "a2"], 0, 0, 12)
    assert expected == (
        code,
        sorted(f["key_alias"] for f in report["failures"]),
        report["pairing"]["orphans"],
        report["pairing"]["unpaired"],
        report["files"][str(path)]["lines"],
    )


def test_time_options_read_iso_times_in_the_log_zone_and_durations_before_now() -> None:
    """An ISO time without offset is in the log's time zone, one with an offset is itself, and
    ``90m``, ``2h``, ``1d12h`` are that long before now."""
    berlin = ZoneInfo("Europe/Berlin")
    now = 1_800_000_000.0
    base = datetime(2026, 11, 20, 10, 0, tzinfo=berlin).timestamp()
    got = [
        cli.parse_time(value, berlin, now, "--since")
        for value in ("2026-11-20T10:00", "2026-11-20 09:00:00+00:00", "90m", "2h", "1d12h")
    ]
    assert [base, base, now - 5400, now - 7200, now - 129600] == got


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "yesterday"], "--since: cannot read 'yesterday'"),
        (["--since", "1h", "--until", "2h"], "--since must be before --until"),
        (["--jobs", "0"], "--jobs must be at least 1"),
        (["--label", "bad-name=x"], "--label: 'bad-name=x' is not NAME=VALUE"),
        (["--label", "target=x"], "--label: target is a label of the failure series already"),
    ],
)
def test_bad_scan_options_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    """A bad time, an empty time range, no processes or a bad label: one line, exit 2."""
    path = tmp_path / "system.log"
    path.write_text(text([traffic()]))
    code = main(["scan", *args, str(path)])
    err = capsys.readouterr().err
    assert (code, len(err.splitlines()), err.startswith(f"{cli.PROG}: {message}")) == (2, 1, True)


# -- the table's failures over time -----------------------------------------------------------


def test_table_shows_failures_per_minute_for_the_top_targets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over a short span the table gives failures per minute, every minute from the first to
    the last, in all and per target, biggest target first, in the log's time zone."""
    lines = []
    for minute, target, n in ((0, 0, 2), (0, 1, 1), (2, 1, 3), (3, 0, 1)):
        for k in range(n):
            when = f"2026-11-20 10:{minute:02d}:{k:02d},000"
            lines.append(failed(stamp=when, remote=TARGETS[target], ctx=context(f"m{k}")))
    path = tmp_path / "system.log"
    path.write_text(text(lines))
    main(["scan", "--format", "table", "--timezone", "UTC", str(path)])
    out = capsys.readouterr().out
    part = out[out.index("Failures over time") :].splitlines()
    assert part == [
        "Failures over time (per minute, time zone UTC), in all and for the top 2 targets:",
        "  [1] backend-1.example.com:443",
        "  [2] backend-0.example.com:443",
        "  TIME              ALL  [1]  [2]",
        "  2026-11-20 10:00    3    1    2",
        "  2026-11-20 10:01    0    0    0",
        "  2026-11-20 10:02    3    3    0",
        "  2026-11-20 10:03    1    0    1",
    ]


def test_table_shows_failures_per_hour_over_a_long_span(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Over more than three hours the table gives failures per hour."""
    lines = [
        failed(stamp=f"2026-11-20 {h:02d}:{m:02d}:00,000", ctx=context(f"m{h}{m}"))
        for h, m in ((8, 5), (8, 55), (11, 30), (12, 1))
    ]
    path = tmp_path / "system.log"
    path.write_text(text(lines))
    main(["scan", "--format", "table", "--timezone", "UTC", str(path)])
    out = capsys.readouterr().out
    part = out[out.index("Failures over time") :].splitlines()
    assert part[2:] == [
        "  TIME              ALL  [1]",
        "  2026-11-20 08:00    2    2",
        "  2026-11-20 09:00    0    0",
        "  2026-11-20 10:00    0    0",
        "  2026-11-20 11:00    1    1",
        "  2026-11-20 12:00    1    1",
    ]
    assert part[0].startswith("Failures over time (per hour, time zone UTC)")


def test_scan_reads_standard_input_beside_files_in_parallel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``-`` among files with ``--jobs 2``: standard input is read here, the files by the pool,
    and the report is the serial one."""
    lines = noisy_log(8, 1500, gap=20)
    path = tmp_path / "system.log"
    path.write_text(text(lines))
    data = text(lines[:700]).encode()
    reports = []
    for jobs in ("1", "2"):
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
        main(["scan", "--format", "json", "--timezone", "UTC", "--jobs", jobs, str(path), "-"])
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0]["total_failures"] > 0
    assert reports[0] == reports[1]


def test_ctrl_c_stops_the_scan_and_its_workers_with_exit_130(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the process group) while the pool reads two files and the scan waits
    on a pipe: exit 130, no traceback, and no process of the scan left behind."""
    paths = []
    for i in range(2):
        path = tmp_path / f"system.log.{i}"
        path.write_text(text(noisy_log(20 + i, 500, gap=10)))
        paths.append(str(path))
    fifo = tmp_path / "live"
    os.mkfifo(fifo)
    proc = subprocess.Popen(
        [sys.executable, "-m", "apigee_tls_exporter", "scan", "--jobs", "2", *paths, str(fifo)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        # as a terminal's foreground job has it: a test run in the background of a script
        # inherits SIGINT ignored (so does the scan then, as every program started so)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    with open(fifo, "wb"):  # returns once the scan has opened the pipe: its handlers are set
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)

    def gone() -> bool:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_for(gone, 30, "every process of the scan to exit")
    assert (proc.returncode, out, b"Traceback" in err) == (130, b"", False)


def test_a_reader_that_stops_early_ends_the_scan_quietly(tmp_path: Path) -> None:
    """``scan ... | head``: when the reader has gone, scan stops with 141 (as a shell reports
    SIGPIPE) and no traceback, whatever the format."""
    path = tmp_path / "system.log"
    path.write_text(text(noisy_log(9, 2000, gap=10)))
    results = []
    for fmt in ("prometheus", "json", "table", "backfill"):
        read, write = os.pipe()
        os.close(read)  # the reader is gone before the first write
        done = subprocess.run(
            [sys.executable, "-m", "apigee_tls_exporter", "scan", "--format", fmt, str(path)],
            stdout=write,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        os.close(write)
        results.append((done.returncode, done.stderr))
    assert results == [(141, b"")] * 4
