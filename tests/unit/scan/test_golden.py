"""Golden replays: ``scan`` of each ``tests/data/<name>.log`` prints exactly ``<name>.prom``.

The ``.prom`` files are the spec, each reviewed by hand against its log, so a change to the parser,
the pairing or the metrics shows up as a reviewed diff of metric output (like ``mtail --one_shot``).

- ``playbook.log``: the playbook's bad_certificate call twice (failure, SSLInfo, onException record,
  exception line, stack trace), amid ordinary traffic.
- ``reasons.log``: one failure per reason of issue 2, every address form (hostname/ip:port,
  /ip:port, ip:port, IPv6 as Java 8 and as JDK 14+ print it), timeouts, no context block.
- ``pairing.log``: interleaved threads, a retry with two SSLInfo lines, a retry missing its first
  SSLInfo, an orphan, ``KeyAlias:null``, an SSLInfo of the wrong thread, stack frames that mention
  handshakeFailed, invalid UTF-8, two lines in an unknown format, a last failure left unpaired.
- ``drift.log`` (issue 11): both channel renderings in both kinds of line, a backend that cannot be
  read (``unknown``, and unrecognised), four impossible dates and the failure after them, a TLS 1.3
  rejection logged only as an exception record (counted once) and the playbook record (its
  exception not counted again), JDK 8 and JDK 17 wordings, a 3,000-character org (cut to 260).
- ``generated.log``: ``LogGenerator(7, failure_fraction=0.05).text(600)`` from ``demo.py``; its
  ``.prom`` was checked against the generator's own truth.

The scan runs from the repository root on the relative path, so the ``path`` label is stable, and
with ``--timezone UTC`` so the last-failure timestamps do not depend on the machine's zone.

To regenerate after a deliberate change, then review every line of the diff before committing::

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/unit/scan/test_golden.py
    git diff tests/data
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from apigee_tls_exporter.cli import main

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT / "tests" / "data"
LOGS = sorted(DATA.glob("*.log"))


def test_every_golden_log_has_its_expected_output() -> None:
    """Each ``.log`` has a ``.prom`` and each ``.prom`` a ``.log``."""
    expected = sorted(p.stem for p in DATA.glob("*.prom"))
    assert expected == [p.stem for p in LOGS]


@pytest.mark.parametrize("log", LOGS, ids=[p.stem for p in LOGS])
def test_scan_prints_the_golden_output(
    log: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``scan --timezone UTC tests/data/<name>.log`` exits 0 and prints ``<name>.prom``."""
    monkeypatch.chdir(ROOT)
    code = main(["scan", "--timezone", "UTC", log.relative_to(ROOT).as_posix()])
    out, err = capsys.readouterr()
    golden = log.with_suffix(".prom")
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(out)
    expected = (0, golden.read_text(), "")
    assert expected == (code, out, err)
