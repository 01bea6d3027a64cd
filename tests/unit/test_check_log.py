"""``check-config --log LOG [FILE]``: does the exporter read this log? And ``check-config FILE``
tries each log's ``record_head`` on the first lines of its log."""

from __future__ import annotations

from pathlib import Path

import pytest
from apigee_tls_exporter import cli
from helpers import records
from helpers.records import failed, on_exception, ssl_info, text, traffic

SITE_HEAD = r"\[(?P<ts>[^\]]+)\] \[(?P<thread>[^\]]+)\] \w+ \S+ - "


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def playbook(stamp: str = records.STAMP) -> list[str]:
    return [
        traffic(stamp=stamp),
        failed(stamp=stamp),
        ssl_info(stamp=stamp),
        *on_exception(stamp=stamp),
    ]


def test_a_log_it_reads_is_counted_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The playbook's record twice, in two renderings: every count, exit 0."""
    log = tmp_path / "system.log"
    log.write_text(text(playbook() + playbook("2017-10-23T05:29:57.500+02:00")))
    code, out, err = run(["check-config", "--log", str(log)], capsys)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{log}: 14 lines, 8 records, 2 failures, 0 unrecognised lines (format drift), "
        "0 lines neither a record it reads nor a stack trace line",
        f"{log}: the exporter reads this log",
    ]


def test_a_log_in_another_rendering_names_the_lines_and_what_it_expected(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log whose heads the exporter cannot read: the first such lines with their numbers, the
    expected head, exit 1."""
    log = tmp_path / "system.log"
    stamp = "23/10/2017 05:28:57.813"
    log.write_text(text(playbook(stamp)))
    code, out, err = run(["check-config", "--log", str(log)], capsys)
    lines = out.splitlines()
    assert code == 1
    assert lines[0] == (
        f"{log}: 7 lines, 0 records, 0 failures, 2 unrecognised lines (format drift), "
        "4 lines neither a record it reads nor a stack trace line"
    )
    assert lines[1] == "  first lines it could not read:"
    assert lines[2] == f"    line 1: {playbook(stamp)[0][:200]}"
    assert [line.split(":")[0].strip() for line in lines[2:6]] == [
        "line 1",
        "line 2",
        "line 3",
        "line 4",
    ]
    assert lines[6].startswith("  expected a record head: yyyy-MM-dd HH:mm:ss")
    assert err == f"{log}: the exporter does not read this log: no record it can read\n"


def site(line: str) -> str:
    """A record line of the built-in shape in the site's head (no context block)."""
    stamp, rest = line[: len(records.STAMP)], line[len(records.STAMP) + 1 :]
    thread, level, logger, body = rest.split(" ", 3)
    return f"[{stamp}] [{thread}] {level} {logger} {body}"


def test_the_configs_record_head_reads_the_sites_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With a config whose log has a ``record_head``, ``--log`` reads that log with it; without
    the config the same log is not read."""
    log = tmp_path / "system.log"
    lines = [
        site(line.replace(records.CTX, "")) if line[:1].isdigit() else line for line in playbook()
    ]
    log.write_text(text(lines))
    config = tmp_path / "config.yml"
    config.write_text(f"logs:\n  - path: {log}\n    record_head: '{SITE_HEAD}'\n")
    with_config = run(["check-config", "--log", str(log), str(config)], capsys)
    without = run(["check-config", "--log", str(log)], capsys)
    assert with_config[0] == 0
    assert with_config[1].splitlines()[0].startswith(f"{log}: 7 lines, 4 records, 1 failures, ")
    assert without[0] == 1


def test_check_config_tries_the_record_head_on_the_first_lines_of_its_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A ``record_head`` that reads none of its log's first lines is a config problem."""
    log = tmp_path / "system.log"
    log.write_text(text(playbook()))  # the built-in rendering: the site's head reads none
    config = tmp_path / "config.yml"
    config.write_text(f"logs:\n  - path: {log}\n    record_head: '{SITE_HEAD}'\n")
    code, out, err = run(["check-config", str(config)], capsys)
    assert (code, out) == (1, "")
    assert f"logs[0].record_head: reads none of the first 7 lines of {log}" in err


@pytest.mark.parametrize(
    ("head", "problem"),
    [
        ("(?P<ts>", "not a regular expression"),
        (r"(?P<ts>\\S+) ", "needs the named groups"),
    ],
)
def test_a_bad_record_head_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], head: str, problem: str
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(f"logs:\n  - path: /var/log/x.log\n    record_head: '{head}'\n")
    code, out, err = run(["check-config", str(config)], capsys)
    assert (code, out) == (1, "")
    assert "logs.0.record_head" in err or "logs[0].record_head" in err
    assert problem in err


def test_an_unreadable_log_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["check-config", "--log", str(tmp_path / "missing.log")], capsys)
    assert (code, out) == (2, "")
    assert "cannot read" in err and err[-1] == "\n" and err.count("\n") == 1
