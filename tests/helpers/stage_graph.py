"""The import graph of ``daemon/`` (the package ``apigee_tls_exporter``), read from the source.

Run it to print the package graph that ``docs/architecture.md`` shows, or to write it there::

    .venv/bin/python tests/helpers/stage_graph.py           # print
    .venv/bin/python tests/helpers/stage_graph.py --write   # update docs/architecture.md

Each module's imports are read with ``ast`` (nothing is imported), relative or absolute, also
those inside functions and under ``if TYPE_CHECKING:`` (marked: they are arrows of the design all
the same). ``tests/test_docs.py`` checks that the page shows the current graph, that no import
runs in a circle and that none runs back up the stage order.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SOURCE = REPO / "daemon"
PAGE = REPO / "docs" / "architecture.md"
TOP = "apigee_tls_exporter"

# The stages, in order: a package may import only those before it (and the leaves).
STAGES = (
    "records",
    "follow",
    "state",
    "diagnosis",
    "web",
    "scan",
    "run",
    "demo",
    "cli",
    "__main__",
)
# Root modules anyone may import: they import no stage themselves.
LEAVES = ("config", "errors", "log", "__init__")

BEGIN = "<!-- stage graph: begin (tests/helpers/stage_graph.py --write) -->"
END = "<!-- stage graph: end -->"


@dataclass(frozen=True)
class Import:
    """One import statement's arrow: from module to module (dotted, under the package)."""

    source: str  # e.g. "web.status"
    target: str  # e.g. "run.app"; "__init__" for the root package
    line: int
    type_checking: bool

    @property
    def path(self) -> str:
        return module_path(self.source)


def module_path(module: str) -> str:
    """The file of a dotted module name, as the repository names it: ``daemon/web/status.py``."""
    parts = module.split(".")
    candidate = SOURCE.joinpath(*parts)
    if candidate.is_dir():
        return f"daemon/{'/'.join(parts)}/__init__.py"
    return f"daemon/{'/'.join(parts)}.py"


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name: ``records.parse``, ``records`` (its
    ``__init__``), ``cli``, ``__init__`` (the root)."""
    found = {}
    for path in sorted(SOURCE.rglob("*.py")):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if len(parts) > 1 and parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def stage_of(module: str) -> str:
    """The stage (package) or root leaf a module belongs to."""
    return module.split(".", 1)[0]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_targets(module: str, node: ast.ImportFrom | ast.Import, known: set[str]) -> list[str]:
    """The modules of the package one import statement names (none for a third-party one)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names if a.name == TOP or a.name.startswith(TOP + ".")]
        return [_deepest(n.split(".")[1:], known) for n in names]
    if node.level == 0:
        if node.module is None or not (node.module == TOP or node.module.startswith(TOP + ".")):
            return []
        base = node.module.split(".")[1:]
    else:
        is_package = SOURCE.joinpath(*module.split(".")).is_dir() or module == "__init__"
        package = [] if module == "__init__" else module.split(".")
        if not is_package:
            package = package[:-1]
        if node.level > 1:
            package = package[: len(package) - (node.level - 1)]
        base = package + (node.module.split(".") if node.module else [])
    targets = []
    for alias in node.names:
        whole = ".".join([*base, alias.name])
        targets.append(whole if whole in known else _deepest(base, known))
    return targets


def _deepest(parts: list[str], known: set[str]) -> str:
    """The longest known module that the dotted parts start with; the root package if none."""
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in known:
            return name
    return "__init__"


def imports() -> list[Import]:
    """Every arrow from a module of the package to another of its modules."""
    found = modules()
    known = set(found)
    arrows = []
    for module, path in found.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        guarded: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                guarded |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in import_targets(module, node, known):
                    if target != module:
                        arrows.append(Import(module, target, node.lineno, id(node) in guarded))
    return sorted(arrows, key=lambda a: (a.source, a.target, a.line))


def package_graph(arrows: list[Import]) -> dict[str, dict[str, bool]]:
    """Stage -> {stage or leaf it imports: True when only under TYPE_CHECKING}."""
    graph: dict[str, dict[str, bool]] = {s: {} for s in (*STAGES, *LEAVES)}
    for arrow in arrows:
        source, target = stage_of(arrow.source), stage_of(arrow.target)
        if source == target:
            continue
        graph.setdefault(source, {})
        graph[source][target] = graph[source].get(target, True) and arrow.type_checking
    return graph


def order_of(name: str) -> int:
    """Position in the stage order; the leaves come before every stage; unknown ones last."""
    if name in LEAVES:
        return -1
    return STAGES.index(name) if name in STAGES else len(STAGES)


def upward(arrows: list[Import]) -> list[Import]:
    """Imports that run back up the stage order (or from a leaf into a stage)."""
    bad = []
    for arrow in arrows:
        source, target = stage_of(arrow.source), stage_of(arrow.target)
        if source == target:
            continue
        if source in LEAVES and target in LEAVES:
            continue
        if order_of(target) >= order_of(source) or source not in (*STAGES, *LEAVES):
            bad.append(arrow)
    return bad


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The import circles of a graph, one per strongly connected group of two or more nodes
    (Tarjan), each as its sorted members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(groups)


def module_edges(arrows: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for arrow in arrows:
        edges.setdefault(arrow.source, set()).add(arrow.target)
    return edges


def stage_edges(arrows: list[Import]) -> dict[str, set[str]]:
    return {s: set(targets) for s, targets in package_graph(arrows).items()}


def render(arrows: list[Import]) -> str:
    """The package graph as the page shows it: one line per stage, in stage order, with the
    stages it imports and the root leaves it uses; ``*`` marks an import made only under
    ``TYPE_CHECKING``."""
    graph = package_graph(arrows)
    rows = [("stage", "imports stages", "and root modules")]
    for stage in sorted(graph, key=lambda s: (order_of(s), s)):
        if stage in LEAVES:
            continue
        targets = graph[stage]
        stages = [t + ("*" if targets[t] else "") for t in sorted(targets, key=order_of)]
        leaves = [t for t in LEAVES if t in targets]
        rows.append(
            (
                stage,
                " ".join(s for s in stages if s.rstrip("*") not in LEAVES) or "-",
                " ".join(leaves) or "-",
            )
        )
    for leaf in LEAVES:
        uses = sorted(t for t in graph[leaf] if t != leaf)
        rows.append((leaf, " ".join(uses) or "-", "(root module)"))
    width = [max(len(r[i]) for r in rows) for i in range(2)]
    lines = [f"{a:<{width[0]}}  {b:<{width[1]}}  {c}".rstrip() for a, b, c in rows]
    if any(imported for targets in graph.values() for imported in targets.values()):
        lines.append("")
        lines.append("* only under `if TYPE_CHECKING:` (for the type checker; still an arrow)")
    return "\n".join(lines) + "\n"


def block(arrows: list[Import]) -> str:
    """The fenced block between the page's markers."""
    return f"{BEGIN}\n```text\n{render(arrows)}```\n{END}"


def shown_on_page(page: str) -> str:
    """The block the page shows now (empty when the markers are missing)."""
    start, end = page.find(BEGIN), page.find(END)
    return page[start : end + len(END)] if 0 <= start < end else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--write", action="store_true", help=f"update {PAGE.relative_to(REPO)}")
    args = parser.parse_args(argv)
    arrows = imports()
    if not args.write:
        sys.stdout.write(render(arrows))
        return 0
    page = PAGE.read_text(encoding="utf-8")
    old = shown_on_page(page)
    if not old:
        sys.stderr.write(f"{PAGE}: no stage graph markers ({BEGIN!r} ... {END!r})\n")
        return 1
    PAGE.write_text(page.replace(old, block(arrows)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
