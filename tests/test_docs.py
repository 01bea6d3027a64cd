"""Every reference in the docs and the shipped configs resolves, and the docs hang together.

The README, the topic pages under docs/ and the files under config/ name repository files
(`config/...`, `daemon/follow/follower.py`), link to other documents and to anchors
(`[x](reasons.md#what-it-recognises)`, `#bad_certificate`), and the alerts and the dashboard link
into the runbook. Each must land on something that exists: a file of this repository, or a
heading as GitHub renders its anchor. Every page of docs/ is reachable from the README, which
stays under 10 KB. The runbook has a plain heading for every reason of the exporter's vocabulary
(``reasons.VOCABULARY``), because every failure alert links to
``runbook.md#<reason>``. The architecture page shows the package import graph as
``helpers.stage_graph`` reads it from the source, and that graph runs one way.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from apigee_tls_exporter.records import reasons
from helpers import stage_graph
from helpers.markdown import github_slug, heading_anchors, prose

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
RUNBOOK = REPO / "docs" / "runbook.md"
CONFIG = REPO / "config"
UNIT = REPO / "systemd" / "apigee-tls-exporter.service"
RUNBOOK_URL = "https://github.com/apigee-tls-exporter/apigee-tls-exporter/blob/main/docs/runbook.md"
BLOB_URL = "https://github.com/apigee-tls-exporter/apigee-tls-exporter/blob/main/"
DOCS = (README, *sorted((REPO / "docs").glob("*.md")))
CONFIG_FILES = sorted(p for p in CONFIG.rglob("*") if p.is_file())
# Top-level directories of the repository: a path starting with one is a repository reference.
REPO_DIRS = ("bench", "config", "daemon", "docs", "packaging", "systemd", "tests", ".ci")
# The stage packages under daemon/: the docs name their modules as `records/parse.py`.
STAGE_DIRS = tuple(p.name for p in (REPO / "daemon").iterdir() if (p / "__init__.py").exists())


def anchors_of(path: Path) -> set[str]:
    return heading_anchors(path.read_text(encoding="utf-8"))


def resolve_link(doc: Path, target: str) -> str | None:
    """None when a Markdown link target from ``doc`` resolves, else what is wrong. Links to other
    sites are not followed (no network); links to this repository on GitHub are."""
    if target.startswith(BLOB_URL):
        target = str(REPO / target[len(BLOB_URL) :])
    elif re.match(r"[a-z]+:", target):
        return None
    path_part, _, anchor = target.partition("#")
    path = (doc.parent / path_part).resolve() if path_part else doc
    if not path.exists():
        return f"no file {path_part}"
    if anchor and path.suffix == ".md" and anchor not in anchors_of(path):
        return f"no heading for #{anchor} in {path.relative_to(REPO)}"
    return None


def test_github_slug_matches_what_github_renders() -> None:
    """The slug rule gives GitHub's anchors for the kinds of heading the docs use."""
    assert github_slug("bad_certificate") == "bad_certificate"
    assert github_slug("Client certificate rejected (page)") == "client-certificate-rejected-page"
    assert github_slug("Reasons the MP's JVM reports") == "reasons-the-mps-jvm-reports"
    assert github_slug("Securing /metrics, and the default listen address") == (
        "securing-metrics-and-the-default-listen-address"
    )
    assert heading_anchors("# A\n```sh\n# not a heading\n```\n## A\n") == {"a", "a-1"}


def links_of(doc: Path) -> list[str]:
    """The Markdown link targets of a document, outside code blocks."""
    return re.findall(r"\]\(([^)\s]+)\)", prose(doc.read_text(encoding="utf-8")))


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_markdown_links_resolve(doc: Path) -> None:
    """Every Markdown link of the README and of each page of docs/ names an existing file and,
    with an anchor, an existing heading of that file."""
    problems = [f"{link}: {err}" for link in links_of(doc) if (err := resolve_link(doc, link))]
    assert problems == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_table_ends_at_a_blank_line(doc: Path) -> None:
    """A line right after a table row that is no row itself would be rendered as one more row
    (GitHub ends a table only at a blank line): each table of the docs ends at a blank line."""
    lines = prose(doc.read_text(encoding="utf-8")).split("\n")
    glued = [
        following
        for row, following in zip(lines, lines[1:])
        if row.startswith("|") and following.strip() and not following.startswith("|")
    ]
    assert glued == []


def test_every_page_is_reachable_from_the_readme() -> None:
    """Following links from the README reaches every page of docs/, and every page links back
    to something (no dead end a reader cannot leave but by the browser's back button)."""
    reached, todo = {README}, [README]
    while todo:
        doc = todo.pop()
        for link in links_of(doc):
            path_part = link.split("#", 1)[0]
            if not path_part or re.match(r"[a-z]+:", link):
                continue
            target = (doc.parent / path_part).resolve()
            if target.suffix == ".md" and target.exists() and target not in reached:
                reached.add(target)
                todo.append(target)
    pages = set((REPO / "docs").glob("*.md"))
    assert sorted(p.name for p in pages - reached) == []
    dead_ends = [p.name for p in sorted(pages) if not any(".md" in link for link in links_of(p))]
    assert dead_ends == []


def test_readme_fits_on_a_screen() -> None:
    """The README stays short (under 10 KB): what it is, the two commands, install, the
    commands and the links; the rest lives in the topic pages."""
    assert len(README.read_bytes()) < 10_000


def repository_paths(text: str, markdown: bool) -> set[str]:
    """The repository paths a text names: `dir/...` under a top-level directory and, in Markdown
    inline code, bare `NAME.md` documents."""
    if markdown:
        tokens = set(re.findall(r"`([^`\s]+)`", text))
    else:
        tokens = set(re.findall(r"(?<![\w/.:-])([\w.][\w./*-]*\.[a-z]+)\b", text))
    found = set()
    for token in tokens:
        token = token.rstrip(".,:;)")
        first = token.split("/", 1)[0]
        in_repo_dir = "/" in token and first in (REPO_DIRS + (STAGE_DIRS if markdown else ()))
        bare_doc = markdown and re.fullmatch(r"[\w.-]+\.md", token)
        bare_config = not markdown and "/" not in token and re.search(r"\.(ya?ml|json|md)$", token)
        if in_repo_dir or bare_doc or bare_config:
            found.add(token)
    return found


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_files_named_in_the_docs_exist(doc: Path) -> None:
    """Each repository file the README or a page of docs/ names in inline code exists (a bare
    `NAME.md` is looked for at the top and in docs/, a stage's `records/parse.py` under
    daemon/)."""
    missing = []
    for name in sorted(repository_paths(doc.read_text(encoding="utf-8"), markdown=True)):
        if "/" in name and name.split("/", 1)[0] in STAGE_DIRS:
            candidates = [REPO / "daemon" / name]
        elif "/" in name:
            candidates = [REPO / name]
        else:
            candidates = [REPO / name, REPO / "docs" / name]
        if not any(list(c.parent.glob(c.name)) for c in candidates):
            missing.append(name)
    assert missing == []


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: str(p.relative_to(CONFIG)))
def test_files_named_in_the_configs_exist(path: Path) -> None:
    """Each file a shipped config names exists: a repository path, or a bare file name of
    config/ (a rules file names its tests and prometheus.yml beside it)."""
    shipped = {p.name for p in CONFIG_FILES}
    missing = []
    for name in sorted(repository_paths(path.read_text(encoding="utf-8"), markdown=False)):
        if "/" in name:
            if not (REPO / name).exists():
                missing.append(name)
        elif name not in shipped:
            missing.append(name)
    assert missing == []


def runbook_links() -> list[tuple[str, str]]:
    """(where, anchor) of every link into the runbook from the rules and the dashboard; an
    anchor taken from the reason label is ``{{ $labels.reason }}``."""
    links = []
    for path in CONFIG_FILES:
        if path.suffix not in (".yml", ".json") or ".test." in path.name:
            continue
        for anchor in re.findall(
            re.escape(RUNBOOK_URL) + r"(?:#(\{\{ \$labels\.reason \}\}|[^\s\"'{]+))?",
            path.read_text(),
        ):
            links.append((path.name, anchor.strip()))
    return links


def test_runbook_links_from_the_alerts_and_the_dashboard_resolve() -> None:
    """Every runbook_url of the rules (both families) and every runbook link of the dashboard
    lands on a heading of the runbook."""
    anchors = anchors_of(RUNBOOK)
    links = runbook_links()
    assert {where for where, _ in links} >= {
        "apigee-tls.rules.yml",
        "apigee-tls.promql-alerts.yml",
        "apigee-tls-dashboard.json",
    }
    problems = [
        (where, anchor)
        for where, anchor in links
        if anchor and anchor != "{{ $labels.reason }}" and anchor not in anchors
    ]
    assert problems == []


def test_runbook_has_a_plain_heading_for_every_reason() -> None:
    """A runbook_url built from the reason label lands on a section for every reason the exporter
    can report, each a plain Markdown heading (no raw HTML anchors)."""
    text = RUNBOOK.read_text(encoding="utf-8")
    anchors = anchors_of(RUNBOOK)
    vocabulary = set(reasons.VOCABULARY)
    assert len(vocabulary) > 30
    assert sorted(vocabulary - anchors) == []
    assert re.findall(r"<a\s+(?:id|name)=", text) == []


def test_every_reason_section_says_what_it_means_what_to_check_and_what_to_do() -> None:
    """Each reason's section has its meaning, what to check and what to do (or points to the
    section that has them)."""
    sections = re.split(r"(?m)^#{2,3} ", prose(RUNBOOK.read_text(encoding="utf-8")))
    by_name = {s.split("\n", 1)[0].strip(): s for s in sections}
    thin = []
    for reason in sorted(set(reasons.VOCABULARY)):
        body = by_name[reason]
        explained = "**What it means:**" in body
        acts = re.search(r"\*\*(Check|Confirm)[^*]*:\*\*", body) and re.search(
            r"\*\*(Do|Fix)[^*]*:\*\*|[Cc]onfirm and fix|as for \[", body
        )
        if not (explained and acts):
            thin.append(reason)
    assert thin == []


def test_the_runbook_says_where_the_runbook_url_is_set() -> None:
    """Every shipped file that holds the runbook URL (rules, alternative rules, dashboard) is
    named in the runbook's instructions for pointing the links at another copy."""
    holders = {
        str(p.relative_to(REPO))
        for p in CONFIG_FILES
        if RUNBOOK_URL in p.read_text() and ".test." not in p.name
    }
    text = RUNBOOK.read_text(encoding="utf-8")
    instructions = text[: text.index("## First five minutes")]
    assert holders and sorted(h for h in holders if h not in instructions) == []


def test_installed_config_path_is_the_one_the_unit_uses() -> None:
    """Every /etc/apigee-tls-exporter/*.yml path the docs and configs give is the config file the
    unit runs with, or the web config that securing-metrics.md tells the operator to create."""
    unit_config = re.search(r"--config (\S+)", UNIT.read_text())
    assert unit_config
    allowed = {unit_config[1], "/etc/apigee-tls-exporter/web.yml"}
    texts = [p.read_text(encoding="utf-8") for p in (*DOCS, *CONFIG_FILES)]
    named = {m for t in texts for m in re.findall(r"/etc/apigee-tls-exporter/[\w.-]+\.ya?ml", t)}
    assert unit_config[1] in named
    assert sorted(named - allowed) == []


def test_dashboard_and_rules_parse() -> None:
    """The files the link checks read are the YAML and JSON the tools load."""
    for path in CONFIG_FILES:
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".yml":
            yaml.safe_load(path.read_text())


def test_the_readme_example_is_what_scan_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's two example log lines, scanned, give the metric line it shows under them."""
    from apigee_tls_exporter import cli

    blocks = re.findall(r"(?ms)^```\n(.*?)^```", README.read_text(encoding="utf-8"))
    lines, shown = blocks[0], blocks[1].strip()
    log = tmp_path / "system.log"
    log.write_text(lines, encoding="utf-8")
    assert cli.main(["scan", "--timezone", "UTC", str(log)]) == 0
    assert shown.startswith("apigee_tls_handshake_failures_total{")
    assert shown in capsys.readouterr().out.splitlines()


def test_metric_help_texts_say_of_what(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The HELP text of every per-file metric (label path) names the followed log file, so that
    "Read position." alone never appears on /metrics."""
    from apigee_tls_exporter import cli

    log = tmp_path / "system.log"
    log.write_text("2026-11-27 10:00:00,000  main INFO X - started\n")
    assert cli.main(["scan", str(log)]) == 0
    text = capsys.readouterr().out
    helps = dict(re.findall(r"^# HELP (\S+) (.+)$", text, re.MULTILINE))
    per_file = {m for m in re.findall(r'^(\w+)\{path="', text, re.MULTILINE)}
    assert len(per_file) >= 5
    vague = sorted(m for m in per_file if "log file" not in helps[m])
    assert vague == []


# --- the stage map ---------------------------------------------------------------------------


def test_the_architecture_page_shows_the_current_import_graph() -> None:
    """docs/architecture.md shows the package graph as the script prints it from the source now
    (after a change of imports: `.venv/bin/python tests/helpers/stage_graph.py --write`)."""
    page = stage_graph.PAGE.read_text(encoding="utf-8")
    expected = stage_graph.block(stage_graph.imports())
    assert stage_graph.shown_on_page(page) == expected
    printed = subprocess.run(
        [sys.executable, stage_graph.__file__], capture_output=True, text=True, check=True
    ).stdout
    assert f"```text\n{printed}```" in expected


def test_every_module_belongs_to_a_stage() -> None:
    """Every module of daemon/ is in one of the stages of the order, or a root leaf: a new
    package has to be given its place in the order (``stage_graph.STAGES``) and on the page."""
    places = {stage_graph.stage_of(m) for m in stage_graph.modules()}
    assert sorted(places - {*stage_graph.STAGES, *stage_graph.LEAVES}) == []


def test_the_stage_map_names_every_module() -> None:
    """The stage table of docs/architecture.md names every module of each stage package in
    that stage's row, so that a newcomer finds from the page where a change belongs."""
    rows = re.findall(r"(?m)^\| `(\w+)/` \|(.*)$", stage_graph.PAGE.read_text(encoding="utf-8"))
    named = {stage: set(re.findall(r"`(\w+)`", cells)) for stage, cells in rows}
    unnamed = [
        module
        for module in stage_graph.modules()
        if "." in module and module.split(".", 1)[1] not in named.get(module.split(".")[0], ())
    ]
    packages = {m for m in stage_graph.modules() if (stage_graph.SOURCE / m).is_dir()}
    assert sorted(named) == sorted(packages)
    assert unnamed == []


def test_no_import_runs_back_up_the_stage_order() -> None:
    """No module imports a package later in the stage order (records < follow < state <
    diagnosis < web < scan < run < demo < cli), and the root leaves import no stage."""
    upward = [
        f"{a.path}:{a.line} imports {a.target}" for a in stage_graph.upward(stage_graph.imports())
    ]
    assert upward == []


def test_no_import_circle() -> None:
    """No import circle, between modules or between packages."""
    arrows = stage_graph.imports()
    assert stage_graph.circles(stage_graph.module_edges(arrows)) == []
    assert stage_graph.circles(stage_graph.stage_edges(arrows)) == []


def test_the_graph_checks_find_what_they_look_for() -> None:
    """The checks catch an arrow up and a circle, and the reader resolves relative imports,
    imports inside functions and under TYPE_CHECKING (a made-up module set, not the code)."""
    up = stage_graph.Import("records.parse", "state.counts", 1, False)
    down = stage_graph.Import("state.counts", "records.events", 1, False)
    leaf = stage_graph.Import("config", "records.parse", 1, False)
    assert stage_graph.upward([up, down, leaf]) == [up, leaf]
    assert stage_graph.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [
        ["a", "b", "c"]
    ]
    assert stage_graph.circles({"a": {"b"}, "b": set()}) == []
    known = {"web.status", "run.app", "run", "web", "__init__", "records.events", "cli", "demo"}
    source = """
from __future__ import annotations
from typing import TYPE_CHECKING
import os
from .. import __version__
from ..records.events import Failure
if TYPE_CHECKING:
    from ..run.app import Daemon
def late():
    from apigee_tls_exporter import demo
"""
    found = []
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found += stage_graph.import_targets("web.status", node, known)
    assert found == ["__init__", "records.events", "run.app", "demo"]
