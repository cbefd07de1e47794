"""``/<vm>/.versions/<volume>/<path>/``: every distinct version of a file, served from the
index. Directories list every name that existed below them in any recovery point; a file
is a directory holding one entry per version (distinct content, as ``rpfs history`` counts
them), named by the recovery point that first had it, whose bytes are read from it. Nothing here opens a volume until a
version is read. Listings refresh like the VM directories (new recovery points appear).
"""

from __future__ import annotations

import functools
import threading

from rpfs.index import db as dbm
from rpfs.tree import REFRESH_SECONDS, RepoRecoveryPoint, StaticDir, StreamFile, store_names
from streams.times import nt_to_unix_ns

NAME = ".versions"


class _Reader:
    """Read-only index connections, one per thread (FUSE workers are threads)."""

    def __init__(self, path: str):
        self.path = path
        self._tls = threading.local()

    def db(self):
        conn = getattr(self._tls, "db", None)
        if conn is None:
            conn = dbm.connect(self.path)
            self._tls.db = conn
        return conn


def _reader(tree) -> _Reader:
    r = tree.__dict__.get("_index_reader")
    if r is None:
        r = tree._index_reader = _Reader(dbm.index_path(tree.repo))
    return r


def versions_dir(tree, vm: str) -> list:
    """``[.versions]`` for a VM that has an index, else ``[]``."""
    db = _reader(tree).db()
    if db is None or not db.execute("SELECT 1 FROM volumes WHERE vm = ? LIMIT 1", (vm,)).fetchone():
        return []
    key = ("versions", vm)
    return [StaticDir(NAME, key, functools.partial(_volumes, tree, vm), ttl=REFRESH_SECONDS)]


def _live(tree, vm: str) -> set[int]:
    return {rp.id for rp in tree.repo.recovery_points(vm)}


def _volumes(tree, vm: str) -> list:
    db = _reader(tree).db()
    return [_dir(tree, vm, vol, "") for (vol,) in
            db.execute("SELECT name FROM volumes WHERE vm = ? ORDER BY name", (vm,))
            if "/" not in vol]   # shadow copies (<volume>.vss/<time>) join their volume's


def _dir(tree, vm: str, volume: str, path: str) -> StaticDir:
    name = path.rsplit("/", 1)[-1] if path else volume
    return StaticDir(name, ("versions", vm, volume, path),
                     functools.partial(_children, tree, vm, volume, path), ttl=REFRESH_SECONDS)


# entries are reached by directory (and name), never by volume: "+e.volume_id" keeps the
# planner, which has no statistics, off the index that would scan a whole volume
_ROWS = (" JOIN names n ON n.id = e.name_id JOIN volumes v ON v.id = +e.volume_id"
         " JOIN volume_rps vr ON vr.volume_id = e.volume_id AND vr.seq BETWEEN e.first AND e.last"
         " JOIN rps r ON r.id = vr.rp_id")


def _children(tree, vm: str, volume: str, path: str) -> list:
    db = _reader(tree).db()
    live = _live(tree, vm)
    row = db.execute("SELECT id FROM dirs WHERE path = ?", (dbm.to_text(path),)).fetchone()
    if row is None:
        return []
    kinds: dict[str, str] = {}
    for name, kind, cid in db.execute(
            "SELECT n.name, e.kind, r.catalog_id FROM entries e" + _ROWS +
            " WHERE e.dir_id = ? AND v.vm = ? AND (v.name = ? OR v.name LIKE ? ESCAPE '\\')",
            (row[0], vm, volume, _stores_like(volume))):
        name = dbm.from_text(name)
        if cid in live and kinds.get(name) != "dir":
            kinds[name] = kind
    out = []
    for name, kind in sorted(kinds.items()):
        child = f"{path}/{name}"
        if kind == "dir":
            out.append(_dir(tree, vm, volume, child))
        elif kind == "file":
            out.append(StaticDir(name, ("versions", vm, volume, child),
                                 functools.partial(_versions, tree, vm, volume, child),
                                 ttl=REFRESH_SECONDS))
    return out


def _versions(tree, vm: str, volume: str, path: str) -> list:
    """One file per distinct content (diff.group_versions: the meaning ``rpfs history``
    gives a version), named by the first recovery point that had it; a version first seen
    in an in-guest shadow copy is named ``<rp>.vss-<creation time>`` (the recovery point
    that first held that store), and listed before that recovery point's own."""
    # the index's readers are loaded only when a version is listed: a mount shows
    # ``.versions`` without them (tests/test_startup.py)
    from rpfs.index.diff import _COLS, _row, group_versions
    from rpfs.index.query import ShadowPoint

    db = _reader(tree).db()
    live = _live(tree, vm)
    d, _, name = path.rpartition("/")
    stores = _stores_like(volume)
    found = []
    seen_stores: set[str] = set()
    for r in db.execute(
            f"SELECT r.seq, v.name, r.name, r.catalog_id, {_COLS}"
            " FROM dirs d CROSS JOIN entries e ON e.dir_id = d.id" + _ROWS +
            " WHERE d.path = ? AND n.name = ? AND v.vm = ?"
            " AND (v.name = ? OR v.name LIKE ? ESCAPE '\\') AND e.kind = 'file'"
            " ORDER BY r.seq", (dbm.to_text(d), dbm.to_text(name), vm, volume, stores)):
        seq, vol, rp_name, cid = r[:4]
        if cid not in live:
            continue
        if vol != volume:           # a shadow copy: once, where it first appears
            if vol in seen_stores:
                continue
            seen_stores.add(vol)
        found.append(((seq, vol == volume, vol), rp_name, vol, _row(r[4:])))
    found.sort(key=lambda f: f[0])
    items, where = [], {}
    for _, rp_name, vol, row in found:
        key = rp_name if vol == volume else f"{rp_name}.vss-{vol.rsplit('/', 1)[1]}"
        items.append((key, row))
        where[key] = (rp_name, vol)

    def opener(key: str):
        rp_name, vol = where[key]
        rp = RepoRecoveryPoint(tree.repo, tree.repo.recovery_point(vm, rp_name),
                               tree.keys)
        if vol == volume:
            return rp
        copies = rp.shadow_copies[volume]
        store = dict(store_names(copies))[vol.rsplit("/", 1)[1]]
        return ShadowPoint(copies, store, volume)

    out = []
    for group in group_versions(items, volume, opener):
        key, row = items[group[0]]
        rp_name, vol = where[key]
        source = f"/{vm}/{rp_name}/volumes/{vol}{path}"
        out.append(StreamFile(key, ("versions", vm, volume, path, key), row.size,
                              functools.partial(_open, tree, source),
                              nt_to_unix_ns(row.modified)))
    return out


def _stores_like(volume: str) -> str:
    """A LIKE pattern for the index's names of ``volume``'s shadow copies."""
    return volume.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ".vss/%"


def _open(tree, source: str):
    return tree.resolve(source).open()
