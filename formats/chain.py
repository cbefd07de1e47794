"""Differencing chains: link every child disk in a set of files to its parent, find the leaves.

Hyper-V writes a child's parent as paths (relative, then absolute Windows paths) plus the
parent's identity. Inside a recovery point or a copied VM folder the absolute paths point at
the original host, so the parent is looked up in the set itself:

1. each locator path resolved against the child's directory (backslashes -> slashes,
   case-insensitive, ``..`` allowed),
2. then the file name of any locator path, same directory first,
3. then the expected identity (VHDX DataWriteGuid / VHD unique id) among all disks.

A candidate found by path or name whose identity differs from the expected one is only used
if nothing matches by identity; otherwise ``ChainError`` names both files.

Result: one disk per chain, keyed by the stem of the chain's base file (stable across
recovery points while checkpoints come and go). When several leaves share a base (branched
checkpoints), the leaf with the deepest chain wins, ties broken by the greatest path, so the
choice is deterministic; the others stay reachable through ``Resolution.leaves``.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Mapping

from formats.detect import open_image
from formats.disk import Disk, RawDisk
from streams.errors import ChainError, RpfsError
from streams.record import Record
from streams.stream import FileStream, Stream

DISK_EXTENSIONS = (".vhdx", ".avhdx", ".vhd", ".avhd")
RAW_EXTENSIONS = (".img", ".raw")
IGNORED_EXTENSIONS = (".mrt", ".rct")
MAX_DEPTH = 256
_WINDOWS_ABS = re.compile(r"^(?:[a-zA-Z]:|\\\\|//|/)")


def is_disk_file(path: str) -> bool:
    return path.lower().endswith(DISK_EXTENSIONS + RAW_EXTENSIONS)


def _stem(path: str) -> str:
    base = posixpath.basename(path)
    return base.rsplit(".", 1)[0] if "." in base else base


class Resolution(Record):
    """Everything ``resolve_chains`` found: the chosen disk per base, every leaf, errors."""

    __slots__ = _fields = ("disks", "leaves", "opened", "paths", "errors", "failed")

    def __init__(self):
        self.disks: dict[str, Disk] = {}          # key -> chosen leaf
        self.leaves: dict[str, list[Disk]] = {}   # key -> all leaves
        self.opened: dict[str, Disk] = {}         # path -> disk
        self.paths: dict[int, str] = {}           # id(disk) -> path
        self.errors: dict[str, RpfsError] = {}    # path -> what went wrong
        self.failed: dict[str, RpfsError] = {}    # key -> why no disk


def _open(path: str, stream: Stream) -> Disk:
    if path.lower().endswith(RAW_EXTENSIONS):
        return RawDisk(stream)
    return open_image(stream)


def _normalise(p: str) -> str:
    p = p.replace("\\", "/")
    if p.startswith("//?/") or p.startswith("//./"):
        p = p[4:]
    return p


def _find_parent(child_path: str, child: Disk, index: Mapping[str, str],
                 opened: Mapping[str, Disk]) -> tuple[str, Disk]:
    ref = child.parent_ref
    want = ref.identity
    accepted = {want, ref.extra.get("identity2")} - {None}  # VHDX parent_linkage2 also counts
    folder = posixpath.dirname(child_path)
    by_path: list[str] = []
    for p in ref.paths:
        p = _normalise(p)
        if not p or _WINDOWS_ABS.match(p):
            continue
        full = posixpath.normpath(posixpath.join(folder, p))
        hit = index.get(full.lower())
        if hit is not None and hit not in by_path:
            by_path.append(hit)
    names = {posixpath.basename(_normalise(p)).lower() for p in ref.paths if p}
    names.discard("")
    by_name = sorted((path for path in opened if posixpath.basename(path).lower() in names),
                     key=lambda path: (posixpath.dirname(path) != folder, path))
    mismatched = None
    for candidate in by_path + [n for n in by_name if n not in by_path]:
        if candidate == child_path:
            continue
        disk = opened[candidate]
        if want is None or disk.identity is None or disk.identity in accepted:
            return candidate, disk
        mismatched = mismatched or candidate
    if want is not None:
        same = sorted(p for p, d in opened.items()
                      if d.identity is not None and d.identity in accepted and p != child_path)
        if same:
            return same[0], opened[same[0]]
    if mismatched is not None:
        raise ChainError(
            f"parent {mismatched} has identity {opened[mismatched].identity}, "
            f"but {child_path} expects {want}", source=child_path, structure="parent link")
    raise ChainError(f"parent of {child_path} not found among the files "
                     f"(looked for {', '.join(ref.paths) or 'no path'}; identity {want})",
                     source=child_path, structure="parent link")


def resolve_all(files: Mapping[str, Stream], include: frozenset = frozenset()) -> Resolution:
    """Open and link every disk in ``files``; failures are collected in ``errors``.

    ``include`` names paths to open whatever their extension (a file the user named).
    """
    res = Resolution()
    for path in sorted(files):
        if not is_disk_file(path) and path not in include:
            continue
        try:
            disk = _open(path, files[path])
        except RpfsError as e:
            res.errors[path] = e
            continue
        res.opened[path] = disk
        res.paths[id(disk)] = path
    index = {p.lower(): p for p in res.opened}
    parent_of: dict[str, str] = {}
    for path, disk in res.opened.items():
        if disk.kind != "differencing" or disk.parent_ref is None:
            continue
        try:
            ppath, parent = _find_parent(path, disk, index, res.opened)
        except ChainError as e:
            res.errors[path] = e
            continue
        parent_of[path] = ppath
        disk.set_parent(parent)
    # propagate failures down the chains, find roots, refuse cycles
    broken: set[str] = set(res.errors)
    root_of: dict[str, str] = {}
    depth_of: dict[str, int] = {}
    for path in res.opened:
        seen = [path]
        p = path
        while p in parent_of:
            p = parent_of[p]
            if p in seen or len(seen) > MAX_DEPTH:
                err = ChainError(f"differencing chain of {path} loops through {p}",
                                 source=path, structure="parent link")
                res.errors.setdefault(path, err)
                broken.add(path)
                break
            seen.append(p)
        if any(s in broken for s in seen):
            if path not in res.errors:
                bad = next(s for s in seen if s in broken)
                res.errors[path] = ChainError(f"chain of {path} is broken at {bad}: "
                                              f"{res.errors[bad]}", source=path,
                                              structure="parent link")
            broken.add(path)
            continue
        root_of[path] = seen[-1]
        depth_of[path] = len(seen)
    has_child = set(parent_of.values())
    roots = sorted(set(root_of.values()))
    keys = _keys(roots)
    for path in sorted(root_of):
        if path in has_child:
            continue
        res.leaves.setdefault(keys[root_of[path]], []).append(res.opened[path])
    for key, leaves in res.leaves.items():
        leaves.sort(key=lambda d: (depth_of[res.paths[id(d)]], res.paths[id(d)]), reverse=True)
        res.disks[key] = leaves[0]
    # Chains that could not be completed, keyed as their disk would have been.
    for path in sorted(res.errors):
        if path in has_child:
            continue
        top, seen = path, {path}
        while top in parent_of and parent_of[top] not in seen:
            top = parent_of[top]
            seen.add(top)
        key = _base_stem(top)
        if key not in res.disks:
            res.failed.setdefault(key, res.errors[path])
    return res


_HYPERV_CHILD = re.compile(r"^(.*)_[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                           r"[0-9a-fA-F]{12}$")


def _base_stem(path: str) -> str:
    """Stem of the base a file belongs to: Hyper-V names checkpoints <base>_<GUID>.avhdx."""
    stem = _stem(path)
    m = _HYPERV_CHILD.match(stem)
    return m.group(1) if m and path.lower().endswith((".avhdx", ".avhd")) else stem


def _keys(roots: list[str]) -> dict[str, str]:
    """Stem of each base file; bases sharing a stem keep the stem plus their extension, then
    their relative path, so every key is unique and stable."""
    by_stem: dict[str, list[str]] = {}
    for r in roots:
        by_stem.setdefault(_stem(r), []).append(r)
    out: dict[str, str] = {}
    for stem, group in by_stem.items():
        if len(group) == 1:
            out[group[0]] = stem
            continue
        names = [posixpath.basename(g) for g in group]
        for g in group:
            base = posixpath.basename(g)
            out[g] = base if names.count(base) == 1 else g.replace("/", "_")
    return out


def resolve_chains(files: Mapping[str, Stream],
                   errors: dict[str, RpfsError] | None = None) -> dict[str, Disk]:
    """Leaf disk of every chain in ``files``, keyed by the stem of the chain's base file.

    Raises the first error (``ChainError`` for a missing/mismatched parent, ``FormatError``
    for a damaged image). With ``errors`` (a dict), nothing is raised: the good chains are
    returned and each chain that failed is added to ``errors`` under the key its disk would
    have had (the base's stem; for an orphaned Hyper-V checkpoint ``<base>_<GUID>.avhdx``,
    ``<base>``), so one broken chain hides nothing else.
    """
    res = resolve_all(files)
    if errors is not None:
        errors.update(res.failed)
        return res.disks
    if res.errors:
        raise res.errors[sorted(res.errors)[0]]
    return res.disks


def _on_disk(folder: str, rel: str) -> str | None:
    """``rel`` (POSIX, may start with ..) as it is spelled on disk, matching each component
    case-insensitively as Windows would; None if there is no such file."""
    parts = rel.split("/")
    here = folder
    out = []
    for i, part in enumerate(parts):
        if part in ("", ".", ".."):
            here = os.path.normpath(os.path.join(here, part or "."))
            out.append(part)
            continue
        exact = os.path.join(here, part)
        if not os.path.exists(exact):
            try:
                match = [n for n in sorted(os.listdir(here)) if n.lower() == part.lower()]
            except OSError:
                return None
            if not match:
                return None
            part, exact = match[0], os.path.join(here, match[0])
        here = exact
        out.append(part)
    return posixpath.normpath("/".join(out)) if os.path.isfile(here) else None


def open_path(path: str | os.PathLike) -> dict[str, Disk]:
    """A disk image or a VM folder on the local filesystem, chains resolved.

    A file gives {stem of its base: that file's disk}, its parents looked up among its
    siblings and along its locators' relative paths. A folder gives ``resolve_chains`` over
    every file under it.
    """
    path = os.fspath(path)
    if os.path.isdir(path):
        files: dict[str, Stream] = {}
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames.sort()
            for fn in sorted(filenames):
                full = os.path.join(dirpath, fn)
                rel = os.path.relpath(full, path).replace(os.sep, "/")
                if is_disk_file(rel) and os.path.isfile(full):
                    files[rel] = FileStream(full, name=full)
        return resolve_chains(files)
    if not os.path.isfile(path):
        from streams.errors import NotFoundError
        raise NotFoundError(f"{path}: no such file or directory")
    folder = os.path.dirname(os.path.abspath(path))
    me = os.path.basename(path)
    files = {}
    for fn in sorted(os.listdir(folder)):
        full = os.path.join(folder, fn)
        if (fn == me or is_disk_file(fn)) and os.path.isfile(full):
            files[fn] = FileStream(full, name=full)
    # parents outside the folder, reachable by relative locator paths
    pending = [me]
    while pending:
        rel = pending.pop()
        try:
            disk = _open(rel, files[rel])
        except RpfsError:
            continue
        if disk.kind != "differencing" or disk.parent_ref is None:
            continue
        for p in disk.parent_ref.paths:
            p = _normalise(p)
            if not p or _WINDOWS_ABS.match(p):
                continue
            cand = posixpath.normpath(posixpath.join(posixpath.dirname(rel), p))
            cand = _on_disk(folder, cand)
            if cand is not None and cand not in files:
                full = os.path.normpath(os.path.join(folder, cand))
                files[cand] = FileStream(full, name=full)
                pending.append(cand)
    res = resolve_all(files, include=frozenset([me]))
    if me in res.errors:
        raise res.errors[me]
    disk = res.opened[me]
    root_path = res.paths.get(id(disk.chain[-1]), me)
    return {_stem(root_path): disk}
