"""``run`` without its compiled parts (a platform without their wheels): it counts the same, says
so once in its log, and exports ``apigee_tls_build_info{compiled="false"}``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from apigee_tls_exporter.demo.generator import LogGenerator
from helpers.compiled import BLOCKED, WARNING
from helpers.support import ExporterProcess, wait_for


def test_run_without_the_compiled_parts_counts_the_same_and_says_so_once(tmp_path: Path) -> None:
    gen = LogGenerator(5, failure_fraction=0.05)
    log = tmp_path / "system.log"
    log.write_text(gen.text(3000))
    expected = sum(gen.truth.values())
    totals = {}
    for blocked in (False, True):
        args = ["--log", str(log), "--from-beginning", "--state-file", str(tmp_path / "s.json")]
        args += ["--log-format", "json"]
        (tmp_path / "s.json").unlink(missing_ok=True)
        daemon = ExporterProcess(*args)
        if blocked:
            daemon.args = [sys.executable, "-c", BLOCKED, *daemon.args[3:]]
        with daemon:
            wait_for(
                lambda d=daemon: sum(d.failures().values()) == expected,
                what=f"{expected} failures",
            )
            totals[blocked] = daemon.failures()
            compiled = "false" if blocked else "true"
            assert daemon.value("apigee_tls_build_info", compiled=compiled) == 1
            code, out = daemon.stop()
        assert code == 0, out
        said = [json.loads(line) for line in out.splitlines() if WARNING in line]
        assert len(said) == (1 if blocked else 0), out
        if blocked:
            assert said[0]["level"] == "warning"
            assert "ahocorasick_rs" in said[0]["event"] and "isal" in said[0]["event"]
    assert totals[True] == totals[False]
