"""The reason vocabulary is written once (``records.reasons``): docs/reasons.md's table is its
rendering, and the runbook has a section for every reason it links to.

After a change of ``MEANINGS``,
``UPDATE_DOCS=1 .venv/bin/pytest tests/unit/records/test_reasons.py``
rewrites the table; review the diff of docs/reasons.md."""

from __future__ import annotations

import os
import re
from pathlib import Path

from apigee_tls_exporter.records.reasons import MEANINGS, REASONS, TLS_ALERTS, VOCABULARY
from helpers.markdown import heading_anchors

DOCS = Path(__file__).resolve().parents[3] / "docs"
PAGE = DOCS / "reasons.md"
BEGIN = "<!-- reasons table: rendered from daemon/records/reasons.py -->"
END = "<!-- end of the reasons table -->"


def kind(reason: str) -> str:
    if reason in TLS_ALERTS and reason in REASONS:
        return "alert, or the MP's own"
    return "alert" if reason in TLS_ALERTS else "the MP's JVM"


def table() -> str:
    rows = [
        f"| `{r}` | {kind(r)} | {MEANINGS[r]} | [runbook](runbook.md#{r}) |" for r in VOCABULARY
    ]
    return "\n".join(["| reason | from | what it means | what to do |", "|---|---|---|---|", *rows])


def test_every_reason_has_a_meaning_and_nothing_else_does() -> None:
    assert sorted(MEANINGS) == sorted(VOCABULARY)
    assert len(VOCABULARY) == len(set(VOCABULARY))


def test_the_docs_table_is_the_rendering_of_the_meanings() -> None:
    """docs/reasons.md's table says exactly what ``MEANINGS`` says, a row per reason."""
    text = PAGE.read_text(encoding="utf-8")
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    if os.environ.get("UPDATE_DOCS"):
        text = text[:start] + "\n" + table() + "\n\n" + text[end:]
        PAGE.write_text(text, encoding="utf-8")
        start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    assert text[start:end].strip() == table()


def test_every_row_links_to_the_runbook_section_of_its_reason() -> None:
    """Each row's runbook link lands on a heading of docs/runbook.md."""
    anchors = heading_anchors((DOCS / "runbook.md").read_text(encoding="utf-8"))
    linked = re.findall(r"\(runbook\.md#([a-z0-9_]+)\)", PAGE.read_text(encoding="utf-8"))
    assert sorted(set(VOCABULARY) - set(linked)) == []
    assert sorted(set(linked) - anchors) == []
