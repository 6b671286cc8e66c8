"""The house's layering, checked on the source: no import cycle, no import against the layers,
and every module importable on its own in a fresh interpreter (DESIGN, Layers)."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Each layer may import itself and every layer listed before it, never one after it.
LAYERS: list[tuple[str, ...]] = [
    ("cleanpairs", "cleanpairs.errors", "cleanpairs.schema", "cleanpairs.contract", "cleanpairs.device"),
    ("cleanpairs.core",),
    ("cleanpairs.io", "cleanpairs.engines"),
    ("cleanpairs.encoders",),
    ("cleanpairs.methods",),
    ("cleanpairs.noise", "cleanpairs.metrics", "cleanpairs.demo"),
    ("cleanpairs.pipeline", "cleanpairs.retrieval", "cleanpairs.bench", "cleanpairs.bench_report",
     "cleanpairs.review"),
    ("cleanpairs.sharded", "cleanpairs.sharded_moments", "cleanpairs.sharded_rematch"),
    ("cleanpairs.api",),
    ("cleanpairs.cli",),
]


def _module_files() -> dict[str, Path]:
    found = {}
    for path in sorted((ROOT / "cleanpairs").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted((ROOT / "cli").rglob("*.py")):
        parts = ("cleanpairs", "cli", *path.relative_to(ROOT / "cli").with_suffix("").parts)
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


MODULES = _module_files()


def _layer(module: str) -> int:
    best, best_len = None, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = index, len(prefix)
    assert best is not None, f"{module} is in no layer; add it to LAYERS"
    return best


def _imports(path: Path, *, top_level_only: bool) -> set[str]:
    """The cleanpairs modules a file imports (module level only, or every import in it)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("cleanpairs"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cleanpairs"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.add(sub if sub in MODULES else node.module)
    return out


def test_no_import_goes_up_the_layers():
    broken = []
    for module, path in MODULES.items():
        if module == "cleanpairs":  # the package's face re-exports from above, lazily
            continue
        for target in _imports(path, top_level_only=False):
            if _layer(target) > _layer(module):
                broken.append(f"{module} imports {target}")
    assert not broken, "\n".join(broken)


def test_core_never_imports_methods_io_or_cli():
    for module, path in MODULES.items():
        if module.startswith("cleanpairs.core"):
            for target in _imports(path, top_level_only=False):
                assert not target.startswith(
                    ("cleanpairs.methods", "cleanpairs.io", "cleanpairs.cli", "cleanpairs.pipeline",
                     "cleanpairs.encoders")
                ), f"{module} imports {target}"


def test_module_level_imports_have_no_cycle():
    graph = {m: {t for t in _imports(p, top_level_only=True) if t in MODULES and t != m}
             for m, p in MODULES.items()}
    # A package's __init__ importing its own submodules is how packages work; the loop it would
    # close (submodule -> package) is the one Python resolves, so only submodule edges count.
    for module in graph:
        graph[module] = {t for t in graph[module] if not module.startswith(t + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt):], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module)


def _import_alone(module: str) -> tuple[str, int, str]:
    done = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, text=True)
    return module, done.returncode, done.stderr.strip().splitlines()[-1:]


def test_every_module_imports_on_its_own_in_a_fresh_interpreter():
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(_import_alone, sorted(MODULES)))
    failed = [f"{m}: {err}" for m, rc, err in results if rc != 0]
    assert not failed, "\n".join(failed)
