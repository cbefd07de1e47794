"""The project's layers as docs/architecture.md draws them, checked on the source with `ast`:

    streams  ->  formats/, the *_reader packages, rpfs/store  ->  rpfs nodes and tree
             ->  index, backup, restore  ->  front ends (rpfs.source, cli, fuse, web, ops)

A layer imports only layers below it: `streams` imports nothing of the project, the parsers
import `streams` (and each other) but never `rpfs`, and no module imports itself back through
others. Every import counts, at module level or inside a function (a lazy import does not make
a cycle go away, it only hides it); only `if TYPE_CHECKING:` blocks are left out, since they
never run. tests/test_store_layers.py checks the store's own three layers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("streams", "formats", "ntfs_reader", "ext4_reader", "xfs_reader", "btrfs_reader", "rpfs")
PARSERS = ("formats", "ntfs_reader", "ext4_reader", "xfs_reader", "btrfs_reader")


def _modules() -> dict[str, Path]:
    """Every module of the installed packages by dotted name (a package by its own name), C
    extensions (``_ntfsparse.cpython-311-x86_64-linux-gnu.so``) included."""
    out = {}
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")) + sorted((ROOT / pkg).rglob("*.so")):
            parts = p.relative_to(ROOT).parts
            name = ".".join(parts[:-1] + (parts[-1].split(".")[0],))
            out.setdefault(name.removesuffix(".__init__"), p)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Import statements anywhere in a file (functions included), except under TYPE_CHECKING."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _imports(name: str, path: Path, modules: dict[str, Path]) -> dict[str, int]:
    """The project's modules a module imports, each with the line of its first import.
    `from a.b import c` names the module a.b.c when there is one, else a.b."""
    is_package = path.name == "__init__.py"
    out: dict[str, int] = {}

    def add(target: str, line: int) -> None:
        out.setdefault(target, line)

    if path.suffix != ".py":
        return out
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, node.lineno)
            continue
        base = name if is_package else name.rpartition(".")[0]
        if node.level:
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            module = f"{base}.{node.module}" if node.module else base
        else:
            module = node.module or ""
        for alias in node.names:
            sub = f"{module}.{alias.name}"
            add(sub if sub in modules else module, node.lineno)
    return {m: line for m, line in out.items() if m.split(".")[0] in PACKAGES}


@pytest.fixture(scope="module")
def graph() -> dict[str, dict[str, int]]:
    mods = _modules()
    return {m: _imports(m, p, mods) for m, p in mods.items()}


def _in(module: str, packages) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _where(module: str, line: int) -> str:
    return f"{_modules()[module].relative_to(ROOT)}:{line}"


def test_streams_import_nothing_of_the_project(graph):
    bad = [f"{_where(m, line)} imports {t}" for m, targets in graph.items() if _in(m, ("streams",))
           for t, line in targets.items() if not _in(t, ("streams",))]
    assert "streams.stream" in graph
    assert not bad, "\n".join(bad)


def test_parsers_never_import_rpfs(graph):
    bad = [f"{_where(m, line)} imports {t}" for m, targets in graph.items() if _in(m, PARSERS)
           for t, line in targets.items() if _in(t, ("rpfs",))]
    assert "formats.vhdx.reader" in graph and "ntfs_reader" in graph
    assert not bad, "\n".join(bad)


# rpfs's own layers, bottom up (docs/architecture.md); helpers used everywhere (progress,
# once, live, ratelimit, sniff, sizes, nspath) sit outside them
RPFS_LAYERS = (
    ("the store", ("rpfs.store",)),
    ("nodes and tree", ("rpfs.node", "rpfs.entry_node", "rpfs.tree", "rpfs.ntfs_nodes",
                        "rpfs.posix_nodes")),
    ("index, backup, restore", ("rpfs.index", "rpfs.backup", "rpfs.restore", "rpfs.analysis")),
    ("front ends", ("rpfs.source", "rpfs.cli", "rpfs.fuse", "rpfs.fuse_loop", "rpfs.web",
                    "rpfs.ops")),
)


def _layer(module: str) -> int | None:
    return next((i for i, (_, prefixes) in enumerate(RPFS_LAYERS) if _in(module, prefixes)), None)


def test_rpfs_layers_import_only_downwards(graph):
    assert _layer("rpfs.index.versions") == 2 and _layer("rpfs.tree") == 1
    bad = []
    for m, targets in graph.items():
        low = _layer(m)
        for t, line in targets.items():
            high = _layer(t)
            if low is not None and high is not None and high > low:
                bad.append(f"{_where(m, line)}: {RPFS_LAYERS[low][0]} imports {t} "
                           f"({RPFS_LAYERS[high][0]})")
    assert not bad, "\n".join(bad)


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Each strongly connected group of modules (Tarjan's algorithm, iterative: the graph has
    hundreds of modules), as one cycle through it (a -> b -> ... -> a) then the group's other
    members, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[set[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1 or node in graph[node]:
                        groups.append(group)
    return [(c := _a_cycle(graph, g)) + sorted(g - set(c)) for g in groups]


def _a_cycle(graph: dict[str, dict[str, int]], group: set[str]) -> list[str]:
    """The shortest cycle through the group's first module (breadth first, inside the group)."""
    start = min(group)
    parents = {start: None}
    frontier = [start]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child == start:
                    path = [node]
                    while parents[path[-1]] is not None:
                        path.append(parents[path[-1]])
                    return path[::-1] + [start]
                if child in group and child not in parents:
                    parents[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group has one


def test_the_cycle_finder_finds_cycles():
    """The check below can fail: a made-up graph with two cycles and a self-import."""
    g = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}, "e": {"f": 1},
         "f": {"e": 1}, "s": {"s": 1}}
    g["d"] = {"b": 1}
    assert sorted(map(tuple, _cycles(g))) == [("a", "b", "c", "a", "d"), ("e", "f", "e"), ("s", "s")]


def _show(graph, group: list[str]) -> str:
    end = group.index(group[0], 1)
    cycle, rest = group[:end + 1], group[end + 1:]
    text = " -> ".join(f"{m} ({_where(m, graph[m][n])})" for m, n in zip(cycle, cycle[1:]))
    return text + f" -> {cycle[0]}" + (f"; also in the loop: {', '.join(rest)}" if rest else "")


def test_no_import_cycle(graph):
    cycles = _cycles(graph)
    if cycles:
        pytest.fail("import cycles:\n" + "\n".join(_show(graph, c) for c in cycles), pytrace=False)


def test_store_never_reads_the_environment():
    for p in (ROOT / "rpfs" / "store").rglob("*.py"):
        assert "os.environ" not in p.read_text(), p.relative_to(ROOT)
