"""Questions answered from the index: ``find_entries`` and ``file_history`` (the CLI and
the web UI call these), with a walk of the volumes for recovery points not indexed yet.

Glob patterns are case-insensitive like Windows; ``*`` and ``?`` stay within one path
component (``**`` crosses them); a pattern with a ``/`` is matched against the path inside
the volume, otherwise against the name. Candidate names come from the trigram index
(substrings of three characters or more that the pattern requires); the pattern itself is
then applied to each candidate. Results stream: nothing is loaded whole.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import re
from pathlib import Path
from typing import Callable, Iterator

from streams.errors import NotFoundError, RpfsError, UsageError
from rpfs import nspath
from rpfs.index import db as dbm
from rpfs.index.diff import _COLS, _row, group_versions, row_of
from streams.stream import Stream
from rpfs.sizes import parse_size
from rpfs.tree import RepoRecoveryPoint, is_posix_volume
from streams.times import datetime_to_nt, nt_to_iso, parse_time_text, unix_ns_to_nt
from rpfs.log import get_logger

log = get_logger(__name__)

KINDS = {"f": "file", "d": "dir", "l": "symlink", "file": "file", "dir": "dir",
         "symlink": "symlink"}
ROWS_PER_DIR = 64   # what one directory is guessed to hold (choosing how to search)


def to_nt(when) -> int:
    """A datetime or ISO 8601 text -> NT ticks (naive times are UTC)."""
    return datetime_to_nt(parse_time(when, "time"))


def parse_time(when, what: str) -> dt.datetime:
    if isinstance(when, dt.datetime):
        t = when
    else:
        text = str(when).strip()
        t = parse_time_text(text)
        if t is None:
            raise UsageError(f"{what}: not an ISO 8601 date: {text}")
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def parse_size_filter(size) -> Callable[[int], bool]:
    """``+1M`` more than, ``-10K`` less than, ``4096`` exactly (binary units); an int is
    an exact size."""
    if isinstance(size, int):
        return lambda n: n == size
    text = str(size).strip()
    sign = text[:1] if text[:1] in "+-" else ""
    try:
        limit = parse_size(text[len(sign):])
    except ValueError:
        raise UsageError(f"--size: not a size: {size!r} (e.g. +1M, -10K, 4096)") from None
    if sign == "+":
        return lambda n: n > limit
    if sign == "-":
        return lambda n: n < limit
    return lambda n: n == limit


def glob_regex(pattern: str) -> re.Pattern:
    """A glob as a case-insensitive regular expression (see the module docstring)."""
    out, i, n = [], 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pattern.find("]", i + 2 if pattern.startswith("[!", i) else i + 1 + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:j]
                neg = body.startswith("!")
                body = re.escape(body[1:] if neg else body).replace(r"\-", "-")
                out.append(f"[{'^' if neg else ''}{body}]")
                i = j + 1
                continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("(?s:" + "".join(out) + r")\Z", re.IGNORECASE)


def glob_literals(pattern: str) -> list[str]:
    """Runs of plain ASCII text (3 characters or more) every match must contain."""
    runs = re.split(r"\*|\?|\[[^\]]*\]", pattern)
    return [r for r in runs if len(r) >= 3 and r.isascii()]


class _Matcher:
    """What a pattern requires of a name (for the trigram search) and of a path."""

    def __init__(self, pattern: str, regex: bool):
        if not pattern:
            raise UsageError("empty pattern")
        self.by_path = "/" in pattern
        if regex:
            try:
                self.rx = re.compile(pattern, re.IGNORECASE)
            except re.error as e:
                raise UsageError(f"--regex {pattern!r}: {e}") from None
            self.match = self.rx.search
            self.name_match = None if self.by_path else self.rx.search
            self.literals = []
            self.dir_match = None
        else:
            self.rx = glob_regex(pattern)
            self.match = self.rx.match
            head, _, last = pattern.rpartition("/")
            self.dir_match = None
            if self.by_path and "**" in last:
                self.name_match, self.literals = None, []
            else:
                self.name_match = glob_regex(last).match
                self.literals = glob_literals(last)
                if self.by_path:
                    self.dir_match = glob_regex(head).match

    def subject(self, dir_path: str, name: str) -> str:
        return f"{dir_path}/{name}" if self.by_path else name


def _live_rps(repo, vm, since, until):
    """The catalog's recovery points that pass the filters, oldest first per VM."""
    vms = [vm] if vm else repo.vms()
    lo = parse_time(since, "--since") if since is not None else None
    hi = parse_time(until, "--until") if until is not None else None
    out = []
    for v in vms:
        for rp in repo.recovery_points(v):
            if (lo is None or rp.time >= lo) and (hi is None or rp.time <= hi):
                out.append(rp)
    return out


def find_entries(tree, pattern: str, *, regex: bool = False, vm: str | None = None,
                 since=None, until=None, size=None, modified_after=None, modified_before=None,
                 type: str | None = None,
                 notice: Callable[[str], None] | None = None) -> Iterator[dict]:
    """Every entry whose name (or path, if the pattern has a ``/``) matches, once per
    recovery point holding it: dicts with ``vm``, ``recovery_point``, ``volume``, ``path``
    (inside the volume), ``size``, ``modified`` (ISO 8601) and ``type`` ("file", "dir",
    "symlink"). Recovery points without an index are walked instead, and ``notice`` (default:
    a logged warning) is told so once."""
    m = _Matcher(pattern, regex)
    size_ok = parse_size_filter(size) if size is not None else None
    lo = to_nt(modified_after) if modified_after is not None else None
    hi = to_nt(modified_before) if modified_before is not None else None
    kind = None
    if type is not None:
        kind = KINDS.get(type)
        if kind is None:
            raise UsageError(f"--type: {type!r} is not one of f, d, l")
    say = notice or (lambda text: log.warning("%s", text))

    def keep(k: str, sz: int, modified: int) -> bool:
        return ((kind is None or k == kind) and (size_ok is None or size_ok(sz))
                and (lo is None or modified >= lo) and (hi is None or modified <= hi))

    repo = tree.repo
    if repo is None:
        rp = tree.recovery_point
        if rp is None:
            raise UsageError("this source has no volumes to search")
        say("a disk image or VM folder has no index: walking its volumes")
        yield from _walk_rp(rp, None, None, m, keep)
        return
    live = _live_rps(repo, vm, since, until)
    db = dbm.connect(dbm.index_path(repo))
    try:
        indexed = {}
        if db is not None:
            indexed = {cid: (rid, seq) for cid, rid, seq in
                       db.execute("SELECT catalog_id, id, seq FROM rps")}
        todo = [rp for rp in live if rp.id not in indexed]
        done = {indexed[rp.id][0]: rp for rp in live if rp.id in indexed}
        if todo:
            say(f"{len(todo)} of {len(live)} recovery points are not indexed: walking their"
                " volumes (slow; `rpfs index REPO` builds the index)")
        if done:
            yield from _find_indexed(db, done, m, keep)
    finally:
        if db is not None:
            db.close()
    for rp in todo:
        yield from _walk_rp(RepoRecoveryPoint(repo, rp), rp.vm, rp.name, m, keep)


def _candidate_names(db, m: _Matcher) -> Iterator[tuple[int, str]]:
    if m.literals:
        q = " AND ".join('"' + lit.replace('"', '""') + '"' for lit in m.literals)
        rows = db.execute("SELECT n.id, n.name FROM names_fts f JOIN names n ON n.id = f.rowid"
                          " WHERE names_fts MATCH ?", (q,))
    else:
        rows = db.execute("SELECT id, name FROM names")
    for nid, name in rows:
        name = dbm.from_text(name)
        if m.name_match is None or m.name_match(name):
            yield nid, name


def _find_indexed(db, rps: dict, m: _Matcher, keep) -> Iterator[dict]:
    """Candidates by name (trigram search, or every name) or, for a path pattern, by
    directory, whichever promises fewer rows (a directory counted as ROWS_PER_DIR names;
    the name candidates are read only up to that bound); then the pattern and filters."""
    ids, column = None, "e.dir_id"
    if m.dir_match is not None:
        ids = [i for i, path in db.execute("SELECT id, path FROM dirs")
               if m.dir_match(dbm.from_text(path))]
    if ids is None or m.literals:
        bound = None if ids is None else len(ids) * ROWS_PER_DIR
        names = []
        for nid, _ in _candidate_names(db, m):
            names.append(nid)
            if bound is not None and len(names) > bound:
                break
        else:
            ids, column = names, "e.name_id"
    for k in range(0, len(ids), 50_000):
        part = json.dumps(ids[k:k + 50_000])
        rows = db.execute(
            "SELECT vr.rp_id, v.name, d.path, n.name, e.kind, e.size, e.modified"
            f" FROM json_each(?) c JOIN entries e ON {column} = c.value"
            " JOIN names n ON n.id = e.name_id JOIN dirs d ON d.id = e.dir_id"
            " JOIN volumes v ON v.id = e.volume_id"
            " JOIN volume_rps vr ON vr.volume_id = e.volume_id AND vr.seq BETWEEN e.first AND e.last"
            " ORDER BY v.vm, vr.seq, v.name, d.path, n.name", (part,))
        for rp_id, vol, dpath, name, kind, size, modified in rows:
            rp = rps.get(rp_id)
            if rp is None or not keep(kind, size, modified):
                continue
            path = dbm.from_text(f"{dpath}/{name}")
            if m.by_path and not m.match(path):
                continue
            yield {"vm": rp.vm, "recovery_point": rp.name, "volume": vol, "path": path,
                   "size": size, "modified": nt_to_iso(modified), "type": kind}


def _walk_rp(rp, vm, rp_name, m: _Matcher, keep) -> Iterator[dict]:
    """The same answers from one recovery point's volumes, walked (no index)."""
    from rpfs.index import scan  # the NTFS reader: only when a volume is walked


    for vol_name, vol in sorted({**rp.volumes, **rp.shadow_volumes}.items()):
        if isinstance(vol, Exception):
            log.warning("%s", vol)
            continue
        if is_posix_volume(vol):
            yield from _walk_posix(vol, vm, rp_name, vol_name, m, keep)
            continue
        try:
            for path, e in vol.walk():
                d, _, name = path.rpartition("/")
                if not m.match(m.subject(d, name)):
                    continue
                try:
                    fa = vol.file(e.ref)
                    info = scan.file_info(vol, fa.record, fa.attrs)
                except RpfsError as err:
                    log.warning("%s: %s", path, err)
                    continue
                if info is None or not keep(info.kind, info.size, info.modified):
                    continue
                yield {"vm": vm, "recovery_point": rp_name, "volume": vol_name, "path": path,
                       "size": info.size, "modified": nt_to_iso(info.modified), "type": info.kind}
        except RpfsError as err:
            log.warning("%s: %s", vol_name, err)


def _walk_posix(vol, vm, rp_name, vol_name, m: _Matcher, keep) -> Iterator[dict]:
    """A POSIX volume (ext4, XFS, Btrfs) walked through its reader's entries."""
    root = vol.root
    stack = [("", root)]
    seen = {root.ino}          # a damaged volume may link a directory below itself
    while stack:
        d, entry = stack.pop()
        try:
            children = list(entry.iterdir())
        except RpfsError as err:
            log.warning("%s: %s%s: %s", vol_name, d, "/", err)
            continue
        for child in children:
            path = f"{d}/{child.name}"
            try:
                kind = child.kind
                if kind == "dir" and child.ino not in seen:
                    seen.add(child.ino)
                    stack.append((path, child))
                if not m.match(m.subject(d, child.name)):
                    continue
                size, modified = child.size, unix_ns_to_nt(child.mtime_ns)
            except RpfsError as err:
                log.warning("%s: %s", path, err)
                continue
            if kind not in ("file", "dir", "symlink"):
                kind = "file"
            if not keep(kind, size, modified):
                continue
            yield {"vm": vm, "recovery_point": rp_name, "volume": vol_name, "path": path,
                   "size": size, "modified": nt_to_iso(modified), "type": kind}


# -- history -----------------------------------------------------------------------------


def split_path(tree, path: str) -> tuple[str | None, str, str]:
    """``/<vm>/<rp>/volumes/<vol>/<inner>`` (or ``volumes/<vol>/<inner>`` for an image or
    folder) -> (vm, volume, inner path); ``..`` goes up as in ``Tree.resolve`` (never above
    the root)."""
    n = nspath.volume_file(path, repository=tree.repo is not None)
    return n.vm, n.volume, n.inner


def file_history(tree, path: str, *, verify: bool = False,
                 notice: Callable[[str], None] | None = None) -> dict:
    """Every distinct version (content) of one file across the recovery points of its VM.

    ``versions``: oldest first, ``{"recovery_points": [...], "size", "modified", "path",
    "type", "metadata": [...]}``. A version is one content: a new one only where the data
    changed (decided from the index where it can be, else by comparing the data, diff.py);
    a recovery point where only times or attributes changed is listed in ``metadata``
    (``{"recovery_point", "modified"}``) under its version, and a content that comes back
    joins its old version. ``verify`` hashes every recovery point's content instead
    (``blake2b``); ``absent``: the recovery points where the path does not exist."""

    vm, volume, inner = split_path(tree, path)
    say = notice or (lambda text: log.warning("%s", text))
    repo = tree.repo
    if repo is None:        # an image or folder: its one recovery point, never indexed
        one = tree.recovery_point
        points = [(getattr(one, "path", Path("")).name, None, lambda: one)]
    else:
        points = [(rp.name, rp.id, functools.partial(RepoRecoveryPoint, repo, rp,
                                                     tree.keys))
                  for rp in repo.recovery_points(vm)]
    points = _with_shadow_copies(points, volume)
    indexed: dict = {}
    db = dbm.connect(dbm.index_path(repo)) if repo is not None else None
    if db is not None:
        try:
            indexed = _history_indexed(db, vm, volume, inner, {cid for _, cid, _ in points})
        finally:
            db.close()
    found: list[tuple] = []       # (recovery point, Row, opener)
    absent: list[str] = []
    walked = 0
    for name, cid, open_rp in points:
        if cid in indexed:
            hit = indexed[cid]
        else:
            walked += cid is not None   # shadow copies are never indexed: not counted
            hit = _history_lookup(open_rp(), volume, inner)
        if hit is None:
            absent.append(name)
        else:
            found.append((name, hit, open_rp))
    if walked and repo is not None:
        say(f"{walked} of {sum(c is not None for _, c, _ in points)} recovery points are not indexed: looked the file up in"
            " each (`rpfs index REPO` builds the index)")
    if verify:
        hashes = [_content_hash(tree, vm, name, volume, row.path) for name, row, _ in found]
        groups: dict[str, list[int]] = {}
        for i, h in enumerate(hashes):
            groups.setdefault(h, []).append(i)
        members = list(groups.values())
    else:
        openers = {name: op for name, _, op in found}
        members = group_versions([(name, row) for name, row, _ in found], volume,
                                 lambda name: openers[name]())
    versions = []
    for idx in members:
        name, row, _ = found[idx[0]]
        v = {"recovery_points": [found[i][0] for i in idx], "size": row.size,
             "modified": nt_to_iso(row.modified), "path": row.path, "type": row.kind,
             "metadata": []}
        for prev, i in zip(idx, idx[1:]):
            a, b = found[prev][1], found[i][1]
            if a.metadata_key() != b.metadata_key():
                v["metadata"].append({"recovery_point": found[i][0], "modified": nt_to_iso(b.modified)})
        if verify:
            v["blake2b"] = hashes[idx[0]]
        versions.append(v)
    if not versions:
        raise NotFoundError(f"{path}: in no recovery point")
    return {"vm": vm, "volume": volume, "path": inner, "versions": versions, "absent": absent}


class ShadowPoint:
    """One in-guest shadow copy of ``volume`` as a recovery point for history: its only
    volume is the store's NTFS tree (``volumes``, as ``rpfs.tree.RecoveryPoint`` has)."""

    def __init__(self, copies, store, volume: str):
        from ntfs_reader import Volume

        self.volumes = {volume: Volume(copies.open(store))}
        self.volume_streams: dict = {}


def _with_shadow_copies(points: list[tuple], volume: str) -> list[tuple]:
    """``points`` with, before each recovery point, the shadow copies of ``volume`` that it
    holds and no earlier one did (a store is the same in every backup that has it), named
    ``<recovery point>/<volume>.vss/<creation time>``; a damaged store is left out."""
    from formats import vss

    out: list[tuple] = []
    seen: set[str] = set()
    for name, cid, open_rp in points:
        try:
            stream = open_rp().volume_streams.get(volume)
            copies = vss.ShadowCopies(stream) if isinstance(stream, Stream) and \
                vss.probe(stream) else None
        except RpfsError as e:
            log.info("%s: shadow copies of %s not read: %s", name, volume, e)
            copies = None
        for store in copies.stores if copies is not None else ():
            if store.store_id in seen:
                continue
            seen.add(store.store_id)
            try:
                point = ShadowPoint(copies, store, volume)
            except RpfsError as e:
                log.info("%s: shadow copy %s not read: %s", name, store.name, e)
                continue
            out.append((f"{name}/{volume}.vss/{store.name}" if name else
                        f"{volume}.vss/{store.name}", None, lambda p=point: p))
        out.append((name, cid, open_rp))
    return out


def _history_indexed(db, vm, volume, inner, live: set) -> dict:
    """catalog id -> the file's diff.Row, or None where the path is absent, for the indexed
    recovery points; exact case preferred over other cases."""

    d, _, name = inner.rpartition("/")
    out: dict = {}
    for (cid,) in db.execute("SELECT catalog_id FROM rps WHERE vm = ?", (vm,)):
        if cid in live:
            out[cid] = None
    exact: set = set()
    rows = db.execute(
        f"SELECT r.catalog_id, {_COLS}"
        # CROSS JOIN fixes the order: by path first (the planner has no statistics)
        " FROM dirs d CROSS JOIN names n CROSS JOIN entries e ON e.dir_id = d.id"
        " AND e.name_id = n.id JOIN volumes v ON v.id = e.volume_id"
        " JOIN volume_rps vr ON vr.volume_id = e.volume_id AND vr.seq BETWEEN e.first AND e.last"
        " JOIN rps r ON r.id = vr.rp_id"
        " WHERE d.fold = ? AND n.fold = ? AND v.vm = ? AND v.name = ?",
        (dbm.to_text(d).lower(), dbm.to_text(name).lower(), vm, volume))
    for r in rows:
        cid = r[0]
        if cid not in out or cid in exact:
            continue
        row = _row(r[1:])
        if out[cid] is None or row.path == inner:
            out[cid] = row
            if row.path == inner:
                exact.add(cid)
    return out


def _history_lookup(rp, volume: str, inner: str):
    from rpfs.index import scan  # the NTFS reader: only when a volume is opened


    vol = rp.volumes.get(volume)
    if vol is None or isinstance(vol, Exception):
        return None
    if is_posix_volume(vol):
        return _posix_history_lookup(vol, inner)
    try:
        e = vol.lookup(inner)
        fa = vol.file(e.ref)
        info = scan.file_info(vol, fa.record, fa.attrs)
    except (NotFoundError, RpfsError):
        return None
    if info is None:
        return None
    return row_of(info, inner)


def _posix_history_lookup(vol, inner: str):
    """(version key, path) of ``inner`` on a POSIX volume: kind, size, mtime and a
    fingerprint of where its data lives (inode number, ctime), or None if absent."""
    try:
        e = vol.lookup(inner)
        kind = e.kind if e.kind in ("file", "dir", "symlink") else "file"
        fp = hashlib.blake2b(f"{e.ino}:{e.ctime_ns}:{e.size}".encode(), digest_size=16)
        return ((kind, e.size, unix_ns_to_nt(e.mtime_ns), fp.hexdigest()), inner)
    except RpfsError:
        return None


def _content_hash(tree, vm, rp_name, volume, inner) -> str:
    rp_name, sep, store = rp_name.partition(f"/{volume}.vss/")  # a shadow copy's point
    prefix = f"/{vm}/{rp_name}" if vm else ""
    where = f"{volume}.vss/{store}" if sep else volume
    node = tree.resolve(f"{prefix}/volumes/{where}{inner}", follow=False)
    if node.kind != "file":
        return ""
    s = node.open()
    h = hashlib.blake2b(digest_size=16)
    for off in range(0, s.size, 4 << 20):
        h.update(s.read(off, min(4 << 20, s.size - off)))
    return h.hexdigest()
