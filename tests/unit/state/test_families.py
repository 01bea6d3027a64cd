"""Every ``apigee_tls_*`` family has one home, ``state/families.py``: no other module builds a
metric family or instrument, and what a running daemon exposes is the catalogue's name, type and
help, for every family it exposes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from apigee_tls_exporter.state import families
from helpers import records
from helpers.support import ExporterProcess
from prometheus_client.parser import text_string_to_metric_families

DAEMON = Path(families.__file__).resolve().parents[1]
BUILDERS = {"CounterMetricFamily", "GaugeMetricFamily", "InfoMetricFamily", "Counter", "Gauge"}
BUILDERS |= {"Histogram", "Summary", "Info", "Enum", "HistogramMetricFamily"}


def test_the_catalogue_names_each_family_once() -> None:
    names = [f.name for f in families.ALL]
    assert len(names) == len(set(names))
    assert [n for n in names if not n.startswith("apigee_tls_") or n.endswith("_total")] == []
    assert sorted(f.kind for f in families.ALL if f.kind not in ("counter", "gauge")) == []


def test_no_module_but_the_catalogue_builds_a_family() -> None:
    """A family built elsewhere would have a second home for its name and help (a
    prometheus_client instrument is told from ``collections.Counter`` by its name argument)."""
    elsewhere = []
    for path in sorted(DAEMON.rglob("*.py")):
        if path.name == "families.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, (ast.Name, ast.Attribute)):
                name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
                first = node.args[0] if node.args else None
                named = isinstance(first, ast.Constant) and isinstance(first.value, str)
                if name in BUILDERS and (name.endswith("MetricFamily") or named):
                    elsewhere.append(f"{path.relative_to(DAEMON)}:{node.lineno} {name}")
    assert elsewhere == []


@pytest.mark.slow
def test_what_a_running_daemon_exposes_is_the_catalogue(tmp_path: Path) -> None:
    """``run`` on a log with a failure: each apigee_tls_* family of /metrics is in the catalogue,
    with its type and help."""
    log = tmp_path / "system.log"
    log.write_text(records.text([records.failed(), records.ssl_info()]))
    catalogue = {f.name: (f.kind, f.help) for f in families.ALL}
    state = str(tmp_path / "state.json")
    with ExporterProcess("--log", str(log), "--state-file", state, "--from-beginning") as daemon:
        exposed = {
            family.name: (family.type, family.documentation)
            for family in text_string_to_metric_families(daemon.scrape())
            if family.name.startswith("apigee_tls_")
        }
    assert "apigee_tls_handshake_failures" in exposed
    assert {name: catalogue.get(name) for name in exposed} == exposed
