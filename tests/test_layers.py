"""The package's layering, read from its source: which module imports which (at module level or
inside a function; imports under ``if TYPE_CHECKING:`` do not run and do not count).

Importing ``a.b.c`` first runs the package ``a.b`` (its ``__init__``), so a module depends on the
packages above the one it names too, except the root ``genlab`` package, whose ``__init__`` only
gathers the public API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = "genlab"

# A layer never imports the layers named here (the bar: models and the evaluation import
# neither the run layer's users above them nor the command line).
FORBIDDEN = {
    "models": ("api", "cli", "train", "eval", "report", "leaderboard"),
    "eval": ("api", "cli", "train", "report", "leaderboard"),
    "nets": ("api", "cli", "train", "eval", "report", "leaderboard", "models", "runs"),
    "data": ("api", "cli", "train", "eval", "report", "leaderboard", "models", "runs", "nets"),
    "runs": ("api", "cli", "train", "eval", "report", "leaderboard", "models"),
    "feature_networks": ("api", "cli", "train", "eval", "report", "leaderboard", "models", "runs"),
    "io": ("api", "cli", "train", "eval", "report", "leaderboard", "models", "runs", "data"),
    "progress": (
        "api",
        "cli",
        "train",
        "eval",
        "report",
        "leaderboard",
        "models",
        "runs",
        "data",
        "nets",
        "io",
        "checkpoint",
        "feature_networks",
    ),  # fmt: skip
    "checkpoint": ("api", "cli", "train", "eval", "report", "leaderboard", "models", "runs"),
}


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / ROOT).rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _known(name: str, mods: dict[str, Path]) -> str | None:
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """Module -> the genlab modules it imports, with the packages above each."""
    mods = modules()
    graph: dict[str, set[str]] = {}
    for mod, path in mods.items():
        tree = ast.parse(path.read_text(), str(path))
        skip = _type_checking_lines(tree)
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        named: set[str] = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                named.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([node.module] if node.module else []))
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in mods]
                named.update(subs)
                if len(subs) < len(node.names):
                    named.add(base)
        deps: set[str] = set()
        for name in named:
            target = _known(name, mods)
            while target and target != ROOT:
                deps.add(target)
                target = target.rpartition(".")[0]
        deps.discard(mod)
        deps -= {p for p in _parents(mod)}  # a module's own packages are already running
        graph[mod] = deps
    return graph


def _parents(mod: str) -> list[str]:
    parts = mod.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_no_module_imports_a_module_that_imports_it_back():
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("lower", sorted(FORBIDDEN))
def test_a_layer_never_imports_a_layer_above_it(lower):
    graph = import_graph()
    upward = sorted(
        f"{mod} imports {dep}"
        for mod, deps in graph.items()
        if layer(mod) == lower
        for dep in deps
        if layer(dep) in FORBIDDEN[lower]
    )
    assert upward == []


def test_the_import_graph_sees_function_level_imports_and_ignores_type_checking_ones(tmp_path):
    """The checker itself: a made-up package with an import inside a function (counted), one under
    ``TYPE_CHECKING`` (not counted) and a relative one (resolved)."""
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from genlab.api import Run\n"
        "def f():\n    from genlab.eval import evaluate\n"
    )
    skip = _type_checking_lines(tree)
    imports = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    kept = [n.module for n in imports if n.lineno not in skip]
    assert kept == ["typing", "genlab.eval"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def documented_layout() -> set[str]:
    """The modules the layout block of ``docs/index.md`` names, as paths under ``src/genlab``: a
    line's ``.py`` names belong to the deepest folder above it that is indented less."""
    text = (SRC.parent / "docs" / "index.md").read_text()
    block = text.split("```\nsrc/genlab/\n", 1)[1].split("\nconfigs/", 1)[0]
    stack: list[tuple[int, str]] = []
    found: set[str] = set()
    for line in block.splitlines():
        indent = len(line) - len(line.lstrip())
        words = line.split()
        if not words:
            continue
        if words[0].endswith("/"):  # a folder: its own files follow on the line
            stack = [(i, p) for i, p in stack if i < indent]
            stack.append((indent, (stack[-1][1] if stack else "") + words[0]))
            folder, words = stack[-1][1], words[1:]
        else:  # files (or a continuation) of the deepest folder indented less
            folder = next((p for i, p in reversed(stack) if i < indent), "")
        found.update(folder + w for w in words if w.endswith(".py") and w[:-3].isidentifier())
    return found


def test_the_layout_in_docs_index_names_every_module_and_nothing_else():
    tree = {
        str(p.relative_to(SRC / ROOT))
        for p in (SRC / ROOT).rglob("*.py")
        if p.name != "__init__.py"
    }
    documented = documented_layout()
    assert sorted(tree - documented) == [], "modules the layout in docs/index.md does not name"
    assert sorted(documented - tree) == [], "names in the layout of docs/index.md with no module"


MAX_LINES = 700  # a module longer than this is doing more than one job


def test_no_source_file_is_longer_than_700_lines():
    long = {
        str(p.relative_to(SRC)): n
        for p in (SRC / ROOT).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
