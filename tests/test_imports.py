"""Imports: every module of xmeta imports, the torch-free entry points stay torch-free, no import cycles.

The cycle check reads the module-level imports of every ``xmeta`` source file (``recipes/`` is
``xmeta.recipes``) from its AST, without running them. Imports inside functions run late and
``if TYPE_CHECKING:`` blocks never; both are left out. ``import a.b.c`` also runs ``a/__init__.py``
and ``a/b/__init__.py``: those implicit edges count, except to the importer's own ancestors, which
Python always initialises first. With the graph acyclic, no module can see another half-initialised,
so importing them all in one process (in any order) is as strict as one process per module.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"xmeta": ROOT / "xmeta", "xmeta.recipes": ROOT / "recipes"}  # pyproject's package-dir mapping

# Documented as torch-free: the CLI starts fast, and artifacts/bench metadata are read without a model.
TORCH_FREE = ("xmeta", "xmeta.cli", "xmeta.artifacts", "xmeta.bench.metarun")


def module_files() -> dict[str, Path]:
    """Module name -> source file, for every ``.py`` file of the package (namespace dirs included)."""
    out: dict[str, Path] = {}
    for prefix, base in SOURCES.items():
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([prefix, *parts])] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def module_level_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Import statements that run when the module is imported (not in functions, not TYPE_CHECKING)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            elif isinstance(node, ast.If) and _is_type_checking(node.test):
                visit(node.orelse)
            else:  # class bodies, if/try/with/for blocks run at import time
                for field in ("body", "orelse", "finalbody"):
                    visit(getattr(node, field, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)

    visit(tree.body)
    return found


def module_edges(name: str, path: Path, files: dict[str, Path]) -> set[str]:
    """The xmeta modules that importing ``name`` runs (explicitly, or as a package of what it imports)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    # The module itself and its packages are initialised before its body runs.
    initialised = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
    edges: set[str] = set()

    def add(target: str, explicit: bool) -> None:
        parts = target.split(".")
        for i in range(1, len(parts)):  # parent packages run first: implicit edges
            parent = ".".join(parts[:i])
            if parent in files and parent not in initialised:
                edges.add(parent)
        if target in files and target != name and (explicit or target not in initialised):
            edges.add(target)

    for node in module_level_imports(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, explicit=True)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join(anchor + ([base] if base else []))
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            add(sub if sub in files else base, explicit=True)  # `from pkg import submodule` runs the submodule
    return edges


def import_graph() -> dict[str, set[str]]:
    """Module -> the xmeta modules its import runs."""
    files = module_files()
    return {name: module_edges(name, path, files) for name, path in files.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as ``[a, b, ..., a]``, or None when the graph is acyclic."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := dfs(start)):
            return cycle
    return None


def test_cycle_finder_reports_the_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_reads_module_level_imports_only() -> None:
    source = (
        "from typing import TYPE_CHECKING\nimport xmeta.data.tasks\n"
        "if TYPE_CHECKING:\n    import xmeta.meta\n"
        "try:\n    from xmeta.errors import InputError\nexcept ImportError:\n    pass\n"
        "def f():\n    import xmeta.icl\n"
        "class C:\n    from xmeta import interfaces\n"
    )
    found = {
        n.module if isinstance(n, ast.ImportFrom) else n.names[0].name for n in module_level_imports(ast.parse(source))
    }
    assert found == {"typing", "xmeta.data.tasks", "xmeta.errors", "xmeta"}


def test_no_module_of_xmeta_is_in_an_import_cycle() -> None:
    graph = import_graph()
    assert "xmeta.meta.maml" in graph and "xmeta.recipes.meta_train" in graph
    assert "xmeta.models.encoder" in graph["xmeta.meta.maml"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", TORCH_FREE)
def test_documented_torch_free_modules_do_not_import_torch(module: str) -> None:
    loaded = _run(f"import json, sys, {module}; print(json.dumps(sorted(sys.modules)))")
    heavy = [m for m in ("torch", "transformers") if m in loaded]
    assert not heavy, f"import {module} loads {heavy}"


def test_every_module_imports() -> None:
    """Every module imports in a fresh process; pkgutil finds no module the cycle check did not read."""
    names = sorted(module_files())
    code = f"""
import importlib, json, pkgutil, traceback
failed = {{}}
for name in {names!r}:
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=4)
import xmeta, xmeta.recipes
walked = [m.name for pkg in (xmeta, xmeta.recipes) for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + ".")]
print(json.dumps({{"failed": failed, "walked": walked}}))
"""
    out = _run(code)
    assert not out["failed"], "\n".join(f"{k}:\n{v}" for k, v in out["failed"].items())
    assert set(out["walked"]) <= set(names), set(out["walked"]) - set(names)


def test_no_perf_script_imports_measure() -> None:
    """eval/perf/measure.py runs as ``__main__`` (run.py starts it): importing it back would load it twice."""
    for path in sorted((ROOT / "eval" / "perf").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            assert "measure" not in names, f"{path.name} imports measure; import from eval/perf/common.py instead"
