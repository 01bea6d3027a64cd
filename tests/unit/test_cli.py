"""The command line through ``main(argv)``: ``scan`` and ``check-config``, exit codes, output."""

from __future__ import annotations

import argparse
import gzip
import io
import json
from pathlib import Path

import pytest
from apigee_tls_exporter import cli
from apigee_tls_exporter.config import Config
from helpers import records
from helpers.records import CTX, MESSAGE_ID, STAMP, context
from prometheus_client.parser import text_string_to_metric_families


def failed(
    alert: str = "bad_certificate", thread: str = "NIOThread@0", message_id: str = MESSAGE_ID
) -> str:
    return records.failed(
        message=f"Received fatal alert: {alert}", ctx=context(message_id), thread=thread
    )


def ssl_info(
    alias: str = "backend-client", thread: str = "NIOThread@0", message_id: str = MESSAGE_ID
) -> str:
    return records.ssl_info(alias=alias, ctx=context(message_id), thread=thread)


ON_EXCEPTION = records.on_exception()
TRAFFIC = records.traffic()
FAILURE_LABELS = {
    "org": "acme",
    "env": "prod",
    "api": "payments-v1",
    "rev": "7",
    "target": "backend.example.com:443",
    "reason": "bad_certificate",
    "key_alias": "backend-client",
}


def write_log(tmp_path: Path, lines: list[str], name: str = "system.log") -> str:
    path = tmp_path / name
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text exposition, by name and sorted labels."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def failure_count(text: str, **labels: str) -> float:
    key = (
        "apigee_tls_handshake_failures_total",
        tuple(sorted({**FAILURE_LABELS, **labels}.items())),
    )
    return samples(text).get(key, 0.0)


# --- scan: Prometheus text ------------------------------------------------------------------------


def test_scan_exits_0_with_parseable_prometheus_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``scan FILE`` prints Prometheus text that prometheus_client parses, and exits 0."""
    path = write_log(tmp_path, [failed(), ssl_info(), *ON_EXCEPTION])
    code, out, err = run(["scan", path], capsys)
    expected = (0, 1.0, "")
    assert expected == (code, failure_count(out), err)


def test_scan_prints_every_metric_family_of_the_issue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The failure, last-failure, health and pairing families are all in the output."""
    path = write_log(tmp_path, [failed(), ssl_info()])
    _, out, _ = run(["scan", path], capsys)
    names = {s.name for family in text_string_to_metric_families(out) for s in family.samples}
    expected = {
        "apigee_tls_handshake_failures_total",
        "apigee_tls_last_handshake_failure_timestamp_seconds",
        "apigee_tls_series_overflow_total",
        "apigee_tls_log_lines_total",
        "apigee_tls_log_bytes_read_total",
        "apigee_tls_log_file_size_bytes",
        "apigee_tls_log_offset_bytes",
        "apigee_tls_unrecognised_lines_total",
        "apigee_tls_pairing_pending",
        "apigee_tls_pairing_unpaired_total",
        "apigee_tls_pairing_orphans_total",
    }
    assert expected == expected & names


def test_scan_counts_the_playbook_record_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The onException record, exception line and stack trace do not count the failure again."""
    path = write_log(tmp_path, [failed(), ssl_info(), *ON_EXCEPTION] * 2)
    _, out, _ = run(["scan", path], capsys)
    unrecognised = samples(out)[("apigee_tls_unrecognised_lines_total", (("path", path),))]
    expected = (2.0, 0.0)
    assert expected == (failure_count(out), unrecognised)


def test_scan_counts_unrecognised_handshake_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A handshakeFailed line in a new format is counted as unrecognised, and not as a failure;
    the exception record after it, the only readable trace of that failure, counts it once
    (``target="unknown"``), so that a format change does not make failures vanish (issue 11)."""
    new_format = (
        f"{STAMP} {CTX}NIOThread@0 ERROR HTTP.CLIENT - HTTPClient$Context.handshakeFailed() : "
        "SSLChannel{remote=backend.example.com:443} failed: bad_certificate"
    )
    path = write_log(tmp_path, [TRAFFIC, new_format, *ON_EXCEPTION, TRAFFIC])
    _, out, _ = run(["scan", path], capsys)
    got = samples(out)
    failures = [
        (dict(labels)["target"], dict(labels)["reason"], value)
        for (name, labels), value in got.items()
        if name == "apigee_tls_handshake_failures_total"
    ]
    expected = (1.0, [("unknown", "bad_certificate", 1.0)])
    assert expected == (got[("apigee_tls_unrecognised_lines_total", (("path", path),))], failures)


def test_scan_timezone_option_sets_the_zone_of_log_times(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--timezone`` reads the zone-less log time in that zone."""
    path = write_log(tmp_path, [failed(), ssl_info()])
    _, out, _ = run(["scan", "--timezone", "Asia/Tokyo", path], capsys)
    labels = {k: v for k, v in FAILURE_LABELS.items() if k not in ("api", "rev")}
    key = ("apigee_tls_last_handshake_failure_timestamp_seconds", tuple(sorted(labels.items())))
    expected = 1508736537.813 - 9 * 3600  # 2017-10-23 05:28:57.813 in Tokyo (UTC+9)
    assert expected == samples(out)[key]


def test_scan_window_lines_option_bounds_pairing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``--window-lines 2`` an SSLInfo line 3 lines after its failure does not pair."""
    path = write_log(tmp_path, [failed(), TRAFFIC, TRAFFIC, ssl_info()])
    _, out, _ = run(["scan", "--window-lines", "2", path], capsys)
    expected = (1.0, 0.0)
    assert expected == (failure_count(out, key_alias=""), failure_count(out))


def test_scan_max_series_option_bounds_label_sets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With ``--max-series 1`` a second label set is counted under the all-other series."""
    path = write_log(tmp_path, [failed(), ssl_info(), failed("unknown_ca"), ssl_info()])
    _, out, _ = run(["scan", "--max-series", "1", path], capsys)
    other = dict.fromkeys(FAILURE_LABELS, "other")
    expected = (1.0, 1.0, 1.0)
    assert expected == (
        failure_count(out),
        failure_count(out, **other),
        samples(out)[("apigee_tls_series_overflow_total", ())],
    )


def test_scan_reads_standard_input_for_dash(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``scan -`` reads the log from standard input; its path label is ``-``."""
    data = "".join(line + "\n" for line in [failed(), ssl_info(), TRAFFIC]).encode()
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, _ = run(["scan", "-"], capsys)
    expected = (0, 1.0, 3.0)
    assert expected == (
        code,
        failure_count(out),
        samples(out)[("apigee_tls_log_lines_total", (("path", "-"),))],
    )


def test_scan_reads_a_gzip_file_as_the_log_inside(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A rotated ``system.log.1.gz`` gives the metrics of the log inside: the same figures as the
    plain file, under its own path."""
    lines = [TRAFFIC, failed(), ssl_info(), *ON_EXCEPTION, failed("unknown_ca"), TRAFFIC]
    plain = write_log(tmp_path, lines)
    packed = tmp_path / "system.log.1.gz"
    packed.write_bytes(gzip.compress(Path(plain).read_bytes()))
    _, plain_out, _ = run(["scan", plain], capsys)
    code, packed_out, _ = run(["scan", str(packed)], capsys)
    as_plain = {
        (name, tuple((k, plain if k == "path" else v) for k, v in labels)): value
        for (name, labels), value in samples(packed_out).items()
    }
    assert (0, samples(plain_out)) == (code, as_plain)
    assert failure_count(packed_out, reason="unknown_ca", key_alias="") == 1.0


def test_scan_reads_gzip_from_standard_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``zcat``-free: ``scan - < system.log.1.gz`` reads the log inside."""
    data = gzip.compress("".join(line + "\n" for line in [failed(), ssl_info()]).encode())
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(data)))
    code, out, _ = run(["scan", "-"], capsys)
    expected = (0, 1.0)
    assert expected == (code, failure_count(out))


def test_scan_of_two_files_reports_each_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two files are read one after the other, failures summed, health per path."""
    a = write_log(tmp_path, [failed(), ssl_info()], "a.log")
    b = write_log(tmp_path, [TRAFFIC, failed(), ssl_info()], "b.log")
    _, out, _ = run(["scan", a, b], capsys)
    got = samples(out)
    expected = (2.0, 2.0, 3.0)
    assert expected == (
        failure_count(out),
        got[("apigee_tls_log_lines_total", (("path", a),))],
        got[("apigee_tls_log_lines_total", (("path", b),))],
    )


def test_scan_of_a_log_ending_without_newline_counts_its_last_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A last line without its newline is still read (end of input closes the windows)."""
    path = tmp_path / "system.log"
    path.write_text(failed() + "\n" + ssl_info())
    _, out, _ = run(["scan", str(path)], capsys)
    expected = 1.0
    assert expected == failure_count(out)


def test_scan_with_a_two_megabyte_line_keeps_the_records_around_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 2 MB line is cut and counted as truncated; the failures before and after it still pair."""
    long_line = TRAFFIC + " " + "x" * (2 << 20)
    lines = [failed(), ssl_info(), long_line, failed(), ssl_info("second-client")]
    path = write_log(tmp_path, lines)
    code, out, _ = run(["scan", "--format", "json", path], capsys)
    report = json.loads(out)
    expected = (0, {"backend-client": 1, "second-client": 1}, 5, 1)
    assert expected == (
        code,
        {f["key_alias"]: f["count"] for f in report["failures"]},
        report["files"][path]["lines"],
        report["files"][path]["truncated_lines"],
    )


def test_scan_counts_a_two_megabyte_failure_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 2 MB failure line (a huge message) is one failure, paired with its SSLInfo line."""
    huge = failed("handshake_failure") + " " + "y" * (2 << 20)
    path = write_log(tmp_path, [huge, ssl_info()])
    _, out, _ = run(["scan", path], capsys)
    expected = 1.0
    assert expected == failure_count(out, reason="handshake_failure")


def test_scan_survives_invalid_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Invalid UTF-8 in the log neither crashes the scan nor loses the failure."""
    path = tmp_path / "system.log"
    data = (TRAFFIC + " \xff\xfe\n" + failed() + " \xc3\n" + ssl_info() + "\n").encode("latin-1")
    path.write_bytes(data)
    code, out, _ = run(["scan", str(path)], capsys)
    expected = (0, 1.0)
    assert expected == (code, failure_count(out))


def test_scan_never_prints_the_message_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The message id is not a label in any output format."""
    path = write_log(tmp_path, [failed(), ssl_info()])
    outputs = [
        run(["scan", "--format", f, path], capsys)[1] for f in ("prometheus", "json", "table")
    ]
    expected = [False, False, False]
    assert expected == [MESSAGE_ID in out for out in outputs]


# --- scan: json and table -------------------------------------------------------------------------


def test_scan_json_has_failures_totals_pairing_and_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--format json`` gives the failures with their labels and count, and the health figures."""
    path = write_log(tmp_path, [failed(), ssl_info(), TRAFFIC, ssl_info("orphan", "NIOThread@3")])
    code, out, _ = run(["scan", "--format", "json", path], capsys)
    expected = {
        "failures": [{**FAILURE_LABELS, "count": 1}],
        "total_failures": 1,
        "series_overflow": 0,
        "pairing": {"unpaired": 0, "orphans": 1},
        "files": {
            path: {
                "lines": 4,
                "bytes": Path(path).stat().st_size,
                "unrecognised_lines": 0,
                "truncated_lines": 0,
            }
        },
    }
    assert (0, expected) == (code, json.loads(out))


def test_scan_json_lists_the_biggest_series_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Failures in the JSON report are ordered by count, highest first."""
    lines = [failed("unknown_ca"), ssl_info()] + [failed(), ssl_info()] * 3
    path = write_log(tmp_path, lines)
    _, out, _ = run(["scan", "--format", "json", path], capsys)
    expected = [("bad_certificate", 3), ("unknown_ca", 1)]
    assert expected == [(f["reason"], f["count"]) for f in json.loads(out)["failures"]]


def test_scan_table_summarises_by_target_reason_alias_and_proxy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--format table`` sums failures by target, reason and key alias, lists each series, then
    shows the failures over time (per minute here: the log spans less than three hours)."""
    lines = [failed(), ssl_info(), failed("unknown_ca", "NIOThread@2", "m2"), TRAFFIC]
    path = write_log(tmp_path, lines)
    code, out, _ = run(["scan", "--format", "table", path], capsys)
    expected = [
        "2 handshake failures in 4 lines (0 unrecognised handshake lines, 1 failures without an "
        "SSLInfo line, 0 orphan SSLInfo lines)",
        "",
        "By target:",
        "          2  backend.example.com:443",
        "",
        "By reason:",
        "          1  bad_certificate",
        "          1  unknown_ca",
        "",
        "By key alias:",
        "          1  backend-client",
        "          1  -",
        "",
        "By proxy, target, reason and key alias:",
        "  FAILURES  TARGET                   REASON           KEY ALIAS       PROXY",
        "         1  backend.example.com:443  bad_certificate  backend-client  "
        "acme/prod/payments-v1 rev 7",
        "         1  backend.example.com:443  unknown_ca       -               "
        "acme/prod/payments-v1 rev 7",
        "",
        "Failures over time (per minute, local time), in all and for the top 1 targets:",
        "  [1] backend.example.com:443",
        "  TIME              ALL  [1]",
        "  2017-10-23 05:28    2    2",
    ]
    assert (0, expected) == (code, out.splitlines())


def test_scan_table_of_a_log_without_failures_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without failures the table is just the summary line."""
    path = write_log(tmp_path, [TRAFFIC])
    _, out, _ = run(["scan", "--format", "table", path], capsys)
    expected = [
        "0 handshake failures in 1 lines (0 unrecognised handshake lines, 0 failures without an "
        "SSLInfo line, 0 orphan SSLInfo lines)"
    ]
    assert expected == out.splitlines()


# --- scan: bad input ------------------------------------------------------------------------------


def test_scan_of_a_missing_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file: one clear line on stderr naming it, nothing on stdout, exit 2."""
    path = str(tmp_path / "absent.log")
    expected = (2, "", [f"apigee-tls-exporter: cannot read {path}: No such file or directory"])
    code, out, err = run(["scan", path], capsys)
    assert expected == (code, out, err.splitlines())


def test_scan_of_a_directory_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An input that cannot be read as a file: one line on stderr, exit 2, no traceback."""
    expected = (2, "", [f"apigee-tls-exporter: cannot read {tmp_path}: Is a directory"])
    code, out, err = run(["scan", str(tmp_path)], capsys)
    assert expected == (code, out, err.splitlines())


def test_scan_with_one_missing_file_among_several_prints_no_metrics(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing second file fails the scan before any output."""
    good = write_log(tmp_path, [failed(), ssl_info()])
    missing = str(tmp_path / "absent.log")
    expected = (2, "", [f"apigee-tls-exporter: cannot read {missing}: No such file or directory"])
    code, out, err = run(["scan", good, missing], capsys)
    assert expected == (code, out, err.splitlines())


def test_scan_of_a_cut_gzip_file_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``.gz`` cut short (a compressor still writing it) is not read as a whole log: one line
    naming the file, no metrics, exit 2."""
    log = "".join(line + "\n" for line in [failed(), ssl_info()] * 200).encode()
    path = tmp_path / "system.log.1.gz"
    path.write_bytes(gzip.compress(log)[:-40])
    expected = (
        2,
        "",
        [
            f"apigee-tls-exporter: cannot read {path}: not a whole gzip file: "
            "Compressed file ended before the end-of-stream marker was reached"
        ],
    )
    code, out, err = run(["scan", str(path)], capsys)
    assert expected == (code, out, err.splitlines())


def test_scan_with_an_unknown_time_zone_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad ``--timezone`` is a usage error."""
    path = write_log(tmp_path, [TRAFFIC])
    expected = (2, ["apigee-tls-exporter: timezone: unknown time zone 'Mars/Olympus_Mons'"])
    code, _, err = run(["scan", "--timezone", "Mars/Olympus_Mons", path], capsys)
    assert expected == (code, err.splitlines())


def test_scan_with_a_zero_series_bound_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--max-series 0`` is a usage error, not a scan that counts nothing."""
    path = write_log(tmp_path, [TRAFFIC])
    expected = (2, 1)
    code, _, err = run(["scan", "--max-series", "0", path], capsys)
    assert expected == (code, len(err.splitlines()))


# --- check-config ---------------------------------------------------------------------------------


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return str(path)


def test_check_config_of_a_valid_file_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A valid config: OK on stdout with the logs and listen address, exit 0."""
    path = write_config(
        tmp_path, "logs:\n  - path: /var/log/mp/system.log\nlisten: 127.0.0.1:9900\n"
    )
    ok = "OK (logs: /var/log/mp/system.log (does not exist yet: waited for); listen 127.0.0.1:9900)"
    expected = (0, [f"{path}: {ok}"], "")
    code, out, err = run(["check-config", path], capsys)
    assert expected == (code, out.splitlines(), err)


def test_check_config_of_the_example_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped example config passes check-config."""
    example = Path(__file__).resolve().parents[2] / "config" / "apigee-tls-exporter.yml"
    expected = 0
    assert expected == run(["check-config", str(example)], capsys)[0]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("listne: ':9847'\n", "listne: unknown key"),
        ("pairing:\n  windw: 2s\n", "pairing.windw: unknown key"),
        ("max_series: many\n", "max_series: Input should be a valid integer"),
        ("pairing:\n  window: soon\n", "pairing.window: expected a duration such as 30s, 5m or 1h"),
        ("a: 1\n b: 2\n", "line 2, column 3: invalid YAML: mapping values are not allowed here"),
    ],
    ids=["unknown-key", "unknown-nested-key", "bad-type", "bad-duration", "bad-yaml"],
)
def test_check_config_reports_the_problem_with_its_location_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, problem: str
) -> None:
    """An invalid config: a header line, then the problem with its location on stderr; exit 1."""
    path = write_config(tmp_path, text)
    code, out, err = run(["check-config", path], capsys)
    lines = err.splitlines()
    expected = (1, "", [f"{path}: invalid configuration"], 2, True)
    assert expected == (code, out, lines[:1], len(lines), lines[1].startswith(f"  {problem}"))


def test_check_config_lists_every_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Several problems are each listed on their own line."""
    path = write_config(tmp_path, "listne: x\npairing:\n  window: soon\n")
    code, _, err = run(["check-config", path], capsys)
    expected = (
        1,
        f"{path}: invalid configuration",
        [
            "  listne: unknown key",
            "  pairing.window: expected a duration such as 30s, 5m or 1h, got 'soon'",
        ],
    )
    lines = err.splitlines()
    assert expected == (code, lines[0], sorted(lines[1:]))


def test_check_config_of_a_missing_file_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config file that does not exist is reported, not a traceback."""
    path = str(tmp_path / "absent.yml")
    expected = (1, [f"{path}: invalid configuration", "  file not found"])
    code, _, err = run(["check-config", path], capsys)
    assert expected == (code, err.splitlines())


# --- options and config keys ----------------------------------------------------------------------


def test_every_run_option_has_a_config_key() -> None:
    """Each option of ``run`` (but --config itself) sets a key of the config file."""
    parser = cli._parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    run_parser = subparsers.choices["run"]
    dests = {a.dest for a in run_parser._actions if a.option_strings} - {"help", "config"}
    keys = set(Config.model_fields) | {"log"}  # --log PATH (repeatable) fills `logs`
    expected: set[str] = set()
    assert expected == dests - keys


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_scan_shows_progress_on_a_terminal_for_a_large_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a terminal, a large input gets a progress bar on stderr; stdout stays pure metrics."""
    path = write_log(tmp_path, [failed(), ssl_info()])
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setattr(cli._Progress, "MIN_BYTES", 1)  # this small file counts as large
    code, out, _ = run(["scan", path], capsys)
    expected = (0, 1.0, True, True)
    assert expected == (
        code,
        failure_count(out),
        terminal.getvalue().startswith("\r[" + "#" * 30 + "] 100.0%"),
        terminal.getvalue().endswith("\n"),
    )


def filler(size: int) -> str:
    """An ordinary record of exactly ``size`` bytes with its newline."""
    line = TRAFFIC + " "
    return line + "z" * (size - len(line) - 1) + "\n"


def test_scan_pairs_records_that_straddle_read_boundaries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records cut by the 1 MiB reads are whole lines all the same: every failure pairs."""
    mib = 1 << 20
    first = failed(thread="NIOThread@0", message_id="m1") + "\n"
    second = failed(thread="NIOThread@1", message_id="m2") + "\n"
    text = filler(4000) * 262  # 1,048,000 bytes: the first failure line is cut by the 1st read
    text += first + ssl_info("one", "NIOThread@0", "m1") + "\n"
    text += filler(4000) * ((2 * mib - len(text) - len(second)) // 4000 - 1)
    text += filler(2 * mib - len(text) - len(second))  # 4,000 to 7,999 bytes
    text += second  # ends exactly at 2 MiB: its SSLInfo line is in the next read
    assert 2 * mib == len(text)  # precondition: the layout is as meant
    text += ssl_info("two", "NIOThread@1", "m2") + "\n" + TRAFFIC + "\n"
    path = tmp_path / "system.log"
    path.write_text(text)
    _, out, _ = run(["scan", "--format", "json", str(path)], capsys)
    report = json.loads(out)
    expected = ({"one": 1, "two": 1}, text.count("\n"), 0)
    assert expected == (
        {f["key_alias"]: f["count"] for f in report["failures"]},
        report["files"][str(path)]["lines"],
        report["pairing"]["unpaired"],
    )


def test_check_config_checks_the_web_config_it_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """check-config (systemd's ExecStartPre) also refuses a web config the daemon would refuse."""
    web = tmp_path / "web.yml"
    web.write_text("basic_auth_users:\n  prometheus: not-a-bcrypt-hash\n")
    config = tmp_path / "config.yml"
    config.write_text(f"web_config: {web}\n")
    code, _, err = run(["check-config", str(config)], capsys)
    expected = (1, f"{config}: invalid configuration")
    assert expected == (code, err.splitlines()[0])
    assert err.splitlines()[1].startswith("  web_config: basic_auth_users.prometheus")


def test_check_config_reports_an_unreadable_secret_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A diagnosis password file the daemon cannot read is reported before the start."""
    missing = tmp_path / "mgmt-password"
    config = tmp_path / "config.yml"
    config.write_text(
        "diagnosis:\n  enabled: true\n  management_url: http://ms:8080/v1\n"
        f"  username: ops\n  password_file: {missing}\n"
    )
    expected = (1, ["  diagnosis.password_file: cannot read " + str(missing)])
    code, _, err = run(["check-config", str(config)], capsys)
    assert expected == (code, err.splitlines()[1:])


def test_check_config_says_a_missing_log_will_be_waited_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log path that does not exist yet is valid (the daemon waits for it), and the OK line
    says so for that path only."""
    present, absent = tmp_path / "present.log", tmp_path / "absent.log"
    present.touch()
    config = tmp_path / "config.yml"
    config.write_text(f"logs:\n  - path: {present}\n  - path: {absent}\n")

    assert cli.main(["check-config", str(config)]) == 0

    out = capsys.readouterr().out
    assert f"logs: {present}, {absent} (does not exist yet: waited for);" in out
