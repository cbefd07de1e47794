"""Hyper-V checkpoints of a recovery point: ``/<vm>/<rp>/checkpoints/<name>/disks|volumes``.

Taking a checkpoint makes each of the VM's current disk files read-only and puts a new
AVHDX on top of it; the VM runs on from the new file. A checkpoint's disk state is therefore
the chain ending at the file that became read-only: ``base.vhdx <- a.avhdx <- b.avhdx <-
running.avhdx`` holds three checkpoints, ending at ``base``, ``a`` and ``b``.

Where they come from, in this order:

1. the checkpoints' own configurations, ``Snapshots/<id>.vmcx``: the checkpoint's name,
   id and creation time, and its drives, whose paths name the files that became read-only
   (matched to the stored files like the VM's own drives, by the longest path tail);
2. without any stored checkpoint configuration, the disk files themselves: every stored
   disk file that is another one's parent is a checkpoint's state, named by its file.

Directory names are the checkpoint's name made path-safe and unique (the creation time,
then the id, appended to names two checkpoints share). A checkpoint whose configuration is
damaged or names a disk that is not stored (or whose chain is broken) is listed and reads as
that one error (EIO in the mount); the other checkpoints still read.
"""

from __future__ import annotations

import posixpath
import re

from streams.errors import FormatError
from streams.record import Record
from streams.times import parse_time_text, point_name

MAX_CHECKPOINTS = 256          # checkpoint configurations read per recovery point
MAX_NAME = 200                 # bytes of a directory name before a uniqueness suffix
NOT_DISKS = ("ISO", "NONE")    # drive types that are no virtual hard disk
_UNSAFE = re.compile(r"[\x00-\x1f/\x7f]")


class Checkpoint(Record):
    """One checkpoint: what it is called, where it comes from, which stored file ends each
    of its disk chains (disk key -> stored path), or why it cannot be read."""

    __slots__ = _fields = ("title", "source", "id", "created", "config", "disks", "error",
                           "name")

    def __init__(self, title: str, source: str, id: str | None = None,
                 created: str | None = None, config: str | None = None,
                 disks: dict[str, str] | None = None, error: str | None = None,
                 name: str = ""):
        self.title = title              # as the configuration (or the file) names it
        self.source = source            # "configuration" or "disk chain"
        self.id = id
        self.created = created          # ISO 8601 UTC
        self.config = config            # the stored Snapshots/<id>.vmcx
        self.disks = {} if disks is None else disks   # disk key -> stored path
        self.error = error
        self.name = name                # the directory name (unique, path-safe)

    def describe(self, prefix: str = "checkpoints/") -> dict:
        out = {"name": self.title, "path": prefix + self.name, "source": self.source}
        for k in ("id", "created", "config"):
            if getattr(self, k):
                out[k] = getattr(self, k)
        out["disks"] = {k: v for k, v in sorted(self.disks.items())}
        if self.error:
            out["error"] = self.error
        return out


def is_snapshot_config(path: str) -> bool:
    """A checkpoint's configuration: a ``.vmcx`` in a ``Snapshots`` folder."""
    parts = path.lower().split("/")
    return parts[-1].endswith(".vmcx") and "snapshots" in parts[:-1]


def may_have_checkpoints(paths) -> bool:
    """Decided from file names only (listing a recovery point opens no disk): an AVHDX/AVHD
    or a checkpoint configuration is stored."""
    return any(p.lower().endswith((".avhdx", ".avhd")) or is_snapshot_config(p) for p in paths)


def find(rp) -> list[Checkpoint]:
    """The checkpoints of recovery point ``rp`` (a ``rpfs.tree.RecoveryPoint``, which shows
    them as ``checkpoints/``: ``rpfs.tree.checkpoints_node``), named."""
    res = rp.chains
    if res is None:
        return []
    stored = sorted(p for p in rp.file_sizes() if is_snapshot_config(p))
    snaps = stored[:MAX_CHECKPOINTS]   # more: the first (by path) are shown
    found = ([_from_config(rp, res, path) for path in snaps] if snaps
             else _from_chains(res))
    if snaps:
        found += _listed_not_stored(rp, {cp.id for cp in found if cp.id}, stored)
    _name(found)
    return found


def disk_keys(res) -> dict[str, str]:
    """Stored path -> the key (base stem) of the disk whose chain holds it."""
    out: dict[str, str] = {}
    for key, leaves in res.leaves.items():
        for leaf in leaves:
            for d in leaf.chain:
                out.setdefault(res.paths[id(d)], key)
    return out


def _from_config(rp, res, path: str) -> Checkpoint:
    stem = posixpath.basename(path).rsplit(".", 1)[0]
    cfg = rp._read_vmcx(path)
    if "error" in cfg:
        return Checkpoint(stem, "configuration", config=path, error=cfg["error"])
    cp = Checkpoint(cfg.get("name") or cfg.get("id") or stem, "configuration",
                    id=cfg.get("id"), created=cfg.get("created"), config=path)
    keys = disk_keys(res)
    stored = sorted(set(res.opened) | set(res.errors))
    problems = []
    for drive in cfg.get("drives", []):
        configured = drive.get("path") or ""
        if not configured or str(drive.get("type")).upper() in NOT_DISKS:
            continue
        hit = stored_match(configured, stored)
        if hit is None or posixpath.basename(hit).lower() != _basename(configured).lower():
            problems.append(f"its disk {configured} is not stored")
        elif hit in res.errors:
            problems.append(f"its disk {hit} cannot be read: {res.errors[hit]}")
        elif hit not in keys:
            problems.append(f"its disk {hit} is in no complete chain")
        elif keys[hit] in cp.disks:
            problems.append(f"two of its drives are disk {keys[hit]}")
        else:
            cp.disks[keys[hit]] = hit
    if problems:
        cp.error = f"checkpoint {cp.title!r} ({path}): " + "; ".join(problems)
    elif not cp.disks:
        cp.error = f"checkpoint {cp.title!r} ({path}): its configuration names no virtual disk"
    return cp


def _listed_not_stored(rp, known: set, snaps: list[str]) -> list[Checkpoint]:
    """Checkpoints the VM's configuration lists whose own configuration was not stored."""
    cfg = rp.hyperv_config or {}
    stems = {posixpath.basename(p).rsplit(".", 1)[0].lower() for p in snaps}
    out = []
    for cid in cfg.get("checkpoints", [])[:MAX_CHECKPOINTS]:
        if cid not in known and cid.lower() not in stems:
            out.append(Checkpoint(cid, "configuration", id=cid, error=(
                f"checkpoint {cid}: listed in {cfg.get('file')}, but its configuration "
                f"Snapshots/{cid}.vmcx is not stored")))
    return out


def _basename(windows_path: str) -> str:
    return windows_path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def _from_chains(res) -> list[Checkpoint]:
    """Without configurations: every stored disk file that is another one's parent."""
    keys = disk_keys(res)
    parents = {res.paths[id(d.parent)] for d in res.opened.values()
               if d.parent is not None and id(d.parent) in res.paths}
    out = []
    for path in sorted(parents, key=lambda p: (keys.get(p, ""), -len(res.opened[p].chain), p)):
        if path not in keys:   # in a broken chain: that disk says why, under disks/
            continue
        stem = posixpath.basename(path).rsplit(".", 1)[0]
        out.append(Checkpoint(stem, "disk chain", disks={keys[path]: path}))
    return out


def _safe(title: str) -> str:
    """``title`` as one path component: no ``/`` or control characters, at most MAX_NAME
    bytes of UTF-8 (a file name may have 255; the suffixes need the rest)."""
    name = _UNSAFE.sub("_", title).strip()
    name = name.encode()[:MAX_NAME].decode(errors="ignore").strip()
    return "checkpoint" if name in ("", ".", "..") else name


def _compact(iso: str | None) -> str | None:
    """2026-12-07T03:00:00.123+00:00 -> 2026-12-07T030000Z (as recovery points are named)."""
    t = parse_time_text(iso) if iso else None
    return point_name(t) if t else None


def _name(found: list[Checkpoint]) -> None:
    """Unique, path-safe directory names: the title; names shared get `` (<created>)``,
    then `` (<id>)``, then ``-<n>``."""
    base = [_safe(cp.title) for cp in found]
    names = list(base)
    for extra in (lambda cp: _compact(cp.created), lambda cp: cp.id):
        shared = {n for n in names if names.count(n) > 1}
        for i, cp in enumerate(found):
            if names[i] in shared and extra(cp):
                names[i] = f"{names[i]} ({_UNSAFE.sub('_', extra(cp))})"
    seen: dict[str, int] = {}
    for i, cp in enumerate(found):
        n = names[i]
        if n in seen:
            seen[n] += 1
            while f"{n}-{seen[n]}" in names or f"{n}-{seen[n]}" in seen:
                seen[n] += 1
            n = f"{n}-{seen[n]}"
        seen.setdefault(n, 0)
        cp.name = n


def error_of(cp: Checkpoint) -> FormatError:
    """The one-line error of a checkpoint that cannot be read (it names the file)."""
    return FormatError(cp.error)


def stored_match(configured: str, stored) -> str | None:
    """The stored file a configured (Windows) path names: the one sharing the longest tail
    of path components with it, compared case-insensitively; at least the file name."""
    want = [c.lower() for c in configured.replace("\\", "/").split("/") if c]
    best, best_len = None, 0
    for path in stored:
        have = [c.lower() for c in path.split("/") if c]
        n = 0
        while n < min(len(want), len(have)) and want[-1 - n] == have[-1 - n]:
            n += 1
        if n > best_len:
            best, best_len = path, n
    return best
