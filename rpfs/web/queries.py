"""Search and version history for the web page, behind the signatures of ``rpfs.index``.

These walk the tree (streaming: results leave as they are found, the caller stops when it
has enough). When the metadata index lands, their bodies become calls to
``rpfs.index.find_entries`` / ``rpfs.index.file_history`` with the same arguments.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import re
from typing import Iterator

from rpfs.errors import NotFoundError, RpfsError, UsageError
from rpfs.tree import Node, Tree, ns_to_iso

TYPES = {"f": "file", "d": "dir", "l": "symlink",
         "file": "file", "dir": "dir", "symlink": "symlink"}
SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def rp_time(name: str) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(name, "%Y-%m-%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return None


def recovery_points(tree: Tree, vm: str | None = None
                    ) -> Iterator[tuple[str | None, str | None, Node]]:
    """``(vm, rp, node)`` for every recovery point (one, unnamed, for an image or folder)."""
    if tree.kind != "repository":
        yield None, None, tree.root
        return
    for vm_node in sorted(tree.root.iterdir(), key=lambda n: n.name):
        if vm and vm_node.name != vm:
            continue
        for rp in sorted(vm_node.iterdir(), key=lambda n: n.name):
            if rp.kind == "dir" and rp_time(rp.name):  # not ``latest`` nor a view like .versions
                yield vm_node.name, rp.name, rp


def _size_test(size) -> "callable":
    """``find``-style size filter: ``N`` exactly, ``+N`` more, ``-N`` less; k/M/G/T suffixes."""
    if size is None:
        return lambda n: True
    if isinstance(size, int):
        return lambda n: n == size
    m = re.fullmatch(r"([+-]?)(\d+)([kmgt]?)i?b?", str(size).strip().lower())
    if not m:
        raise UsageError(f"size: not a size: {size}")
    limit = int(m.group(2)) * SIZE_UNITS[m.group(3)]
    sign = m.group(1)
    return {"+": lambda n: n > limit, "-": lambda n: n < limit, "": lambda n: n == limit}[sign]


def _time_arg(value, what: str) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    try:
        t = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"{what}: not an ISO 8601 date: {value}") from None
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def literal_dirs(pattern: str) -> list[str]:
    """The directories a path pattern names literally before its first wildcard:
    ``/Users/*/Documents/*.docx`` -> ``["Users"]``."""
    parts = pattern.split("/")
    if parts[0] != "":
        return []  # a path pattern is matched from the volume's root: it starts with / or *
    out = []
    for part in parts[1:-1]:
        if any(c in part for c in "*?["):
            break
        out.append(part)
    return out


def _start(vol: Node, pattern: str) -> tuple[Node, str] | None:
    """Where a walk for ``pattern`` begins: its literal leading directories are looked up
    (``/Users/*/Documents/*.docx`` walks only ``/Users``)."""
    node, path = vol, ""
    for part in literal_dirs(pattern):
        try:
            node = node.child(part)
        except RpfsError:
            return None
        if node.kind != "dir":
            return None
        path += "/" + node.name
    return node, path


def _walk(node: Node, path: str) -> Iterator[tuple[Node, str]]:
    """Depth first, one directory listing held per level; unreadable directories skipped."""
    stack = [(node, path)]
    while stack:
        d, dpath = stack.pop()
        try:
            children = sorted(d.iterdir(), key=lambda n: n.name)
        except RpfsError:
            continue
        for child in reversed(children):
            cpath = f"{dpath}/{child.name}"
            if child.kind == "dir":
                stack.append((child, cpath))
        for child in children:
            yield child, f"{dpath}/{child.name}"


def find_entries(tree: Tree, pattern: str, *, regex: bool = False, vm: str | None = None,
                 since=None, until=None, size=None, modified_after=None,
                 modified_before=None, type: str | None = None) -> Iterator[dict]:
    """Entries of every NTFS volume whose name (or path inside the volume, when the pattern
    has a ``/``) matches ``pattern``: a case-insensitive glob, or a regular expression."""
    if regex:
        try:
            rx = re.compile(pattern, re.IGNORECASE)
        except re.error as e:
            raise UsageError(f"pattern: not a regular expression: {e}") from None
        match = rx.search
    else:
        glob = pattern.lower()
        match = lambda s: fnmatch.fnmatchcase(s.lower(), glob)  # noqa: E731
    by_path = "/" in pattern
    want_type = TYPES.get(type) if type else None
    if type and want_type is None:
        raise UsageError(f"type: one of f, d, l: {type}")
    size_ok = _size_test(size)
    since, until = _time_arg(since, "since"), _time_arg(until, "until")
    after = _time_arg(modified_after, "modified after")
    before = _time_arg(modified_before, "modified before")
    for vm_name, rp_name, rp in recovery_points(tree, vm):
        t = rp_time(rp_name) if rp_name else None
        if t and ((since and t < since) or (until and t > until)):
            continue
        try:
            volumes = list(rp.child("volumes").iterdir())
        except RpfsError:
            continue
        for vol in sorted(volumes, key=lambda n: n.name):
            start = _start(vol, pattern if by_path and not regex else "")
            if start is None:
                continue  # the pattern's leading directories are not in this volume
            for node, inner in _walk(*start):
                if not match(inner if by_path else node.name):
                    continue
                if want_type and node.kind != want_type:
                    continue
                try:
                    a = node.attr()
                except RpfsError:
                    continue
                if not size_ok(a.size):
                    continue
                modified = ns_to_iso(a.mtime_ns)
                mtime = dt.datetime.fromtimestamp(a.mtime_ns / 1e9, dt.timezone.utc)
                if (after and mtime < after) or (before and mtime > before):
                    continue
                yield {"vm": vm_name, "recovery_point": rp_name, "volume": vol.name,
                       "path": inner, "size": a.size, "modified": modified, "type": node.kind}


def file_history(tree: Tree, path: str, *, verify: bool = False) -> dict:
    """Every distinct version of the file at ``path`` (``/<vm>/<rp>/...``; ``latest`` too)
    across the VM's recovery points, oldest first, and the recovery points without it.

    Versions are told apart by size and modification time (and content with ``verify``);
    a version that comes back later is the same version."""
    if tree.kind != "repository":
        raise UsageError("history needs a repository (this source has one recovery point)")
    parts = [p for p in path.split("/") if p]
    if len(parts) < 3:
        raise UsageError(f"{path}: not a path inside a recovery point (/<vm>/<rp>/...)")
    vm, rest = parts[0], "/".join(parts[2:])
    node = tree.resolve(path)
    if node.kind != "file":
        raise UsageError(f"{path}: not a file")
    versions: dict[tuple, dict] = {}
    absent: list[str] = []
    for _, rp_name, rp in recovery_points(tree, vm):
        try:
            node = tree.resolve(f"/{vm}/{rp_name}/{rest}")
            if node.kind != "file":
                raise NotFoundError(f"{rest}: not a file")
            a = node.attr()
            key = (a.size, a.mtime_ns) + ((_digest(node),) if verify else ())
        except NotFoundError:
            absent.append(rp_name)
            continue
        v = versions.get(key)
        if v is None:
            v = versions[key] = {"recovery_points": [], "size": a.size,
                                 "modified": ns_to_iso(a.mtime_ns),
                                 "path": f"/{vm}/{rp_name}/{rest}"}
        v["recovery_points"].append(rp_name)
    return {"versions": list(versions.values()), "absent": absent}


def _digest(node: Node) -> str:
    h = hashlib.sha256()
    stream = node.open()
    pos = 0
    while pos < stream.size:
        data = stream.read(pos, min(1 << 20, stream.size - pos))
        h.update(data)
        pos += len(data)
    return h.hexdigest()
