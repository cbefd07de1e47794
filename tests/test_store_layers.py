"""The store's layers as docs/architecture.md draws them, checked on the source: backends
and the repository never import the maintenance layer, the store never reads the
environment, and no module of the store imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STORE = ROOT / "rpfs" / "store"


def _modules() -> dict[str, Path]:
    out = {}
    for p in STORE.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _imports(path: Path) -> set[str]:
    """Every module a file names in an import (top level or inside a function)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


def test_lower_layers_never_import_maintenance():
    mods = _modules()
    lower = [m for m in mods if not m.startswith("rpfs.store.maintenance") and m != "rpfs.store"]
    assert "rpfs.store.repository" in lower and "rpfs.store.backend" in lower
    for m in lower:
        bad = {i for i in _imports(mods[m]) if i.startswith("rpfs.store.maintenance") or i == "rpfs.store"}
        assert not bad, f"{m} imports {bad}"


def test_store_never_reads_the_environment():
    for p in STORE.rglob("*.py"):
        text = p.read_text()
        assert "os.environ" not in text and "getenv" not in text, p


def test_no_import_cycle_in_the_store():
    mods = _modules()
    graph = {m: {i for i in _imports(p) if i in mods and i != m} for m, p in mods.items()}

    def reaches(a, b, seen):
        for n in graph[a]:
            if n == b:
                return True
            if n not in seen:
                seen.add(n)
                if reaches(n, b, seen):
                    return True
        return False
    cycles = [m for m in graph if reaches(m, m, set())]
    assert not cycles, cycles
    # the check can fail: the package's own __init__ imports maintenance, which imports the
    # repository; a repository importing the package would close a loop
    assert "rpfs.store.maintenance" in graph["rpfs.store"]
