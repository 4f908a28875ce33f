"""The layout is the architecture, and these checks keep it so (docs/developers/architecture.md).

`lint-imports` checks the contracts in pyproject.toml ([tool.importlinter]: who may import whom),
`mypy` the types ([tool.mypy]: strict on core/, proxy/ and _client/). Both run on this checkout's
code, not an installed copy, and a failure shows their own output.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "jupyter_osire_llm"


def run_tool(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, check=False)


def test_import_contracts_are_kept():
    result = run_tool("-c", "from importlinter.cli import lint_imports_command as c; "
                            "c(['--no-cache'])")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_no_errors():
    result = run_tool("-m", "mypy")
    assert result.returncode == 0, result.stdout + result.stderr


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's algorithm over the package's own modules (iterative: no recursion limit)."""
    modules = sorted(m for m in graph.modules if m == PACKAGE or m.startswith(PACKAGE + "."))
    edges = {m: sorted(i for i in graph.find_modules_directly_imported_by(m) if i in modules)
             for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in modules:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            for step, target in enumerate(edges[node][position:], start=position):
                if target not in index:
                    work += [(node, step + 1), (target, 0)]
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
    return components


def test_no_import_cycles_between_modules():
    """Imports inside functions and under TYPE_CHECKING count: they close a circle all the same."""
    graph = grimp.build_graph(PACKAGE, cache_dir=None)
    cycles = [sorted(c) for c in strongly_connected(graph) if len(c) > 1]
    assert cycles == []


def test_the_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for name in ("a", "b", "c", "d"):
        graph.add_module(f"{PACKAGE}.{name}")
    for importer, imported in (("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")):
        graph.add_import(importer=f"{PACKAGE}.{importer}", imported=f"{PACKAGE}.{imported}")
    assert [sorted(c) for c in strongly_connected(graph) if len(c) > 1] == [
        [f"{PACKAGE}.a", f"{PACKAGE}.b", f"{PACKAGE}.c"]]


def test_job_side_payloads_import_only_the_standard_library():
    """They are copied into job folders and run with the compute node's bare python."""
    graph = grimp.build_graph(PACKAGE, include_external_packages=True, cache_dir=None)
    outside = {(module, imported)
               for module in graph.find_descendants(f"{PACKAGE}.jobside")
               for imported in graph.find_modules_directly_imported_by(module)
               if imported.split(".")[0] not in sys.stdlib_module_names}
    assert outside == set()
