"""The catalog from the repository's own objects: ``sync`` (an s3:// cache catching up, and
any writer before it changes anything), ``follow_gc`` (an s3:// cache after a gc on another
machine) and ``write_missing_objects`` (repair of an older repository). None deletes a
repository object. Recovery points named by a prune's outstanding intent (forget.py) count
as gone: their rows are dropped and their objects never imported.

Import of recovery point objects: fetch them and their chunk maps (in parallel); find the
chunks the catalog does not know from the index objects, and for packs none covers from the
pack's own index (one ranged read of its tail); then, in one transaction, insert packs, chunks, VMs,
recovery points and files. A file whose map cannot be read is left out; one whose chunks
are in no pack is imported with those chunks in ``catalog.LOST_PACK`` (so it reads except
there, and verify names it). Both are named in ``lost``.

Several processes may share one catalog (backups run at once): each catch-up runs under the
repository's catalog mutex, so two never import the same recovery point.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

from streams.errors import RpfsError
import rpfs.store.catalog as catalog
import rpfs.store.objects as objects
import rpfs.store.maintenance.forget as forget
from rpfs.store.maintenance.marks import mark
from rpfs.store.packs import read_entry_table
from rpfs.log import get_logger

WORKERS = 16
BATCH = 64              # recovery points imported per transaction (bounds a rebuild's memory)
IMPORT_GROUP = 500_000  # new chunk rows sorted by hash and inserted together (~120 bytes each)
# SQLite's page cache while importing, at most: the chunk hash index (~50 bytes per chunk,
# random keys) is read and written at random unless it fits, and then a rebuild's I/O grows
# faster than the repository. Pages are allocated as used: 10 MiB catalog, 10 MiB cache.
IMPORT_CACHE_MIB = 1024
FOLLOW_SECONDS = 10     # s3://: how often a reader may list the bucket's packs to follow a gc elsewhere
log = get_logger("rpfs.store")


@dataclass
class RebuildResult:
    recovery_points: int = 0        # objects in the repository
    imported: int = 0               # recovery points added to the catalog
    dropped: int = 0                # catalog recovery points whose object is gone (s3 cache)
    files: int = 0
    packs_read: int = 0             # packs whose own index was read (no index object had them)
    indexes_read: int = 0           # index objects read
    chunks_added: int = 0
    chunks_moved: int = 0           # s3 cache: rows pointed at the copy a gc elsewhere made
    packs_gone: int = 0             # s3 cache: packs a gc elsewhere deleted
    objects_written: int = 0        # repair: objects written for catalog entries that had none
    frame_tables: int = 0           # repair: framed chunks' tables copied into the catalog
    lost: list[str] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)   # vm/rp named by a prune's outstanding intent
    catalog_moved_to: str | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _pmap(fn, items):
    items = list(items)
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(min(WORKERS, len(items)), thread_name_prefix="rpfs-rebuild") as pool:
        return list(pool.map(fn, items))


def _catalog_objects(db, crypto) -> dict[str, int]:
    return {objects.rp_object_name(crypto, vm, name): rid for rid, vm, name in db.execute(
        "SELECT r.id, v.name, r.name FROM recovery_points r JOIN vms v ON v.id = r.vm_id")}


def sync(repo, *, drop_missing: bool | None = None, quiet: bool = False) -> RebuildResult:
    """Import recovery point objects the catalog lacks; for an s3:// cache (``drop_missing``)
    also forget catalog recovery points whose object is gone (pruned elsewhere) and follow
    chunks a gc elsewhere moved (``follow_gc``). Runs under the catalog mutex (a short wait
    if another process of this catalog is catching up). What it drops or cannot import is
    logged as a warning (unless ``quiet``)."""
    with repo.catalog_mutex():
        return _sync(repo, drop_missing, quiet)


def _sync(repo, drop_missing: bool | None, quiet: bool) -> RebuildResult:
    t0 = time.monotonic()
    res = RebuildResult()
    db = repo.writer
    # intents before objects: a prune that forgets and finishes between the two listings
    # has deleted the objects by the second (listed the other way, its intent could be
    # gone and its objects still listed)
    intents = forget.outstanding(repo)
    res.forgotten = sorted(f"{vm}/{rp}" for vm, rp in forget.named(intents))
    for i in intents:
        if i.error is not None:
            res.lost.append(f"forget intent {i.key} unreadable ({i.error}): the recovery points"
                            " an interrupted prune meant to forget are kept")
    for i in intents:
        if catalog.drop_recovery_points(db, i.rps, still=lambda k=i.key: repo.backend.get_object(k) is not None):
            log.info("%s: recovery points an interrupted prune forgot dropped from the catalog: %s",
                     repo.path, ", ".join(f"{vm}/{rp}" for vm, rp in i.rps))
    skip = {objects.rp_object_name(repo.crypto, vm, rp) for vm, rp in forget.named(intents)}
    names = set(repo.backend.list_objects(objects.RPS)) - skip
    res.recovery_points = len(names)
    have = _catalog_objects(db, repo.crypto)
    gone = [rid for n, rid in have.items() if n not in names]
    cache = repo.remote if drop_missing is None else drop_missing
    if gone and cache:
        if not quiet:
            for rid in gone:
                vm, name = db.execute("SELECT v.name, r.name FROM recovery_points r JOIN vms v"
                                      " ON v.id = r.vm_id WHERE r.id = ?", (rid,)).fetchone()
                log.warning("%s: recovery point %s/%s is no longer in the repository (pruned"
                            " elsewhere, or its object was deleted); dropped from the local catalog",
                            repo.path, vm, name)
        with catalog.transaction(db):
            db.executemany("DELETE FROM files WHERE rp_id = ?", [(i,) for i in gone])
            db.executemany("DELETE FROM recovery_points WHERE id = ?", [(i,) for i in gone])
        res.dropped = len(gone)
    if cache:
        follow_gc(repo, res)
    new = sorted(n for n in names if n not in have)
    if new:
        import_recovery_points(repo, new, res)
    if not quiet:
        for line in res.lost:
            log.warning("%s: %s", repo.path, line)
    res.seconds = time.monotonic() - t0
    return res


def import_recovery_points(repo, names: list[str], res: RebuildResult) -> None:
    """In batches of ``BATCH`` recovery points: a batch's objects and chunk maps are what is
    held in memory (32 bytes per chunk of each map), not the whole repository's (a rebuild
    of 10,000 recovery points of 10,000 chunks each would hold 3 GB of hashes at once). The
    packs no catalog row names are imported once, by the first batch that misses a chunk."""
    packs_done = False
    with catalog.page_cache(repo.writer, IMPORT_CACHE_MIB):   # each batch looks up its chunks by hash
        for k in range(0, len(names), BATCH):
            packs_done = _import_batch(repo, names[k:k + BATCH], res, packs_done)


def _import_batch(repo, names: list[str], res: RebuildResult, packs_done: bool) -> bool:
    db = repo.writer

    def fetch_rp(n):
        try:
            return n, objects.get_recovery_point(repo, n), None
        except (RpfsError, OSError) as e:
            return n, None, str(e)
    rps = []
    for n, d, err in _pmap(fetch_rp, names):
        if d is None:
            res.lost.append(f"recovery point object {n}: {err}")
        else:
            rps.append(d)

    map_names = sorted({f["map"] for d in rps for f in d["files"]})

    def fetch_map(n):
        try:
            return n, objects.get_map(repo, n), None
        except (RpfsError, OSError) as e:
            return n, None, str(e)
    maps, map_err = {}, {}
    for n, m, err in _pmap(fetch_map, map_names):
        if m is None:
            map_err[n] = err
        else:
            maps[n] = m

    needed = {h for m in maps.values() for h in m if h is not None}
    known = _chunk_ids(db, needed)
    missing = needed - known.keys()
    if missing and not packs_done:
        _import_packs(repo, res, known, missing)
        packs_done = True

    with catalog.transaction(db):
        for d in sorted(rps, key=lambda d: (d["vm"], d.get("time", 0), d["name"])):
            if db.execute("SELECT 1 FROM recovery_points r JOIN vms v ON v.id = r.vm_id"
                          " WHERE v.name = ? AND r.name = ?", (d["vm"], d["name"])).fetchone():
                continue
            db.execute("INSERT OR IGNORE INTO vms (name) VALUES (?)", (d["vm"],))
            vm_id = db.execute("SELECT id FROM vms WHERE name = ?", (d["vm"],)).fetchone()[0]
            cur = db.execute(
                "INSERT INTO recovery_points (vm_id, name, time, logical_size, stored_size, file_count,"
                " new_chunks, chunk_size, created) VALUES (?,?,?,?,?,?,?,?,?)",
                (vm_id, d["name"], int(d.get("time", 0)), int(d.get("logical_size", 0)),
                 int(d.get("stored_size", 0)), int(d.get("file_count", len(d["files"]))),
                 int(d.get("new_chunks", 0)), d["chunk_size"], float(d.get("created", 0))))
            rp_id = cur.lastrowid
            res.imported += 1
            cs = d["chunk_size"]
            for f in d["files"]:
                where = f"{d['vm']}/{d['name']}/files/{f['path']}"
                m = maps.get(f["map"])
                if m is None:
                    res.lost.append(f"{where}: {map_err.get(f['map'], 'chunk map unreadable')}")
                    continue
                if len(m) != (f["size"] + cs - 1) // cs:
                    res.lost.append(f"{where}: chunk map has {len(m)} chunks for {f['size']} bytes")
                    continue
                get = known.get    # one pass over the map (-1: in no pack), another only if so
                ids = [0 if h is None else get(h, -1) for h in m]
                if -1 in ids:
                    absent = [i for i, x in enumerate(ids) if x == -1]
                    res.lost.append(f"{where}: {len(absent)} of its {len(m)} chunks are in no pack"
                                    " (those ranges fail to read; a backup of the same data heals them)")
                    for i in absent:
                        if m[i] not in known:   # the same chunk twice in one file: one row
                            known[m[i]] = db.execute(
                                "INSERT INTO chunks (hash, pack_id, offset, csize, usize, codec)"
                                " VALUES (?,?,0,0,?,0)", (m[i], _lost_pack(db), min(cs, f["size"] - i * cs))).lastrowid
                        ids[i] = known[m[i]]
                db.execute("INSERT INTO files (rp_id, path, size, chunk_map, mtime_ns, ctime_ns,"
                           " inode, dev, map_object) VALUES (?,?,?,?,?,?,?,?,?)",
                           (rp_id, f["path"], f["size"], catalog.encode_map(ids), f.get("mtime_ns"),
                            f.get("ctime_ns"), f.get("inode"), f.get("dev"), f["map"]))
                res.files += 1
    return packs_done


def _lost_pack(db) -> int:
    row = db.execute("SELECT id FROM packs WHERE name = ?", (catalog.LOST_PACK,)).fetchone()
    if row:
        return row[0]
    return db.execute("INSERT INTO packs (name, size, chunk_count, created) VALUES (?, 0, 0, ?)",
                      (catalog.LOST_PACK, time.time())).lastrowid


def _chunk_ids(db, hashes) -> dict[bytes, int]:
    out = {}
    hs = list(hashes)
    for k in range(0, len(hs), 500):
        part = hs[k:k + 500]
        out.update(db.execute(f"SELECT hash, id FROM chunks WHERE hash IN ({','.join('?' * len(part))})",
                              part).fetchall())
    return out


def follow_gc(repo, res: RebuildResult) -> None:
    """An s3:// cache after a gc on another machine: packs that gc deleted are gone from the
    bucket, and the chunks of them that live on were first copied into new packs. Point this
    catalog's rows at the new copies (chunk ids unchanged, so every chunk map stays valid),
    drop rows of chunks no file here uses, and forget packs left with no chunk. A pack whose
    used chunks are in no other pack was lost, not collected: it stays, and reads and
    ``verify`` name it missing. (That case runs the mark step again at every open.)"""
    db = repo.writer
    # The catalog's packs before the bucket's: a backup on this catalog makes a pack
    # durable before its row, so every row read first is in the listing unless a gc
    # deleted it. Listed first, a pack uploaded and recorded in between looked gone, and
    # its chunks (no file of a running backup uses them yet) were dropped from the catalog.
    known = db.execute("SELECT id, name FROM packs WHERE name != ?", (catalog.LOST_PACK,)).fetchall()
    present = dict(repo.backend.list())
    gone = [pid for pid, n in known if n not in present]
    if not gone:
        return
    moved: dict[bytes, int] = {}
    for pid in gone:
        moved.update(db.execute("SELECT hash, id FROM chunks WHERE pack_id = ?", (pid,)))
    before = len(moved)
    _import_packs(repo, res, {}, set(), relocate=moved, listing=present)
    res.chunks_moved = before - len(moved)
    if moved:
        used = mark(repo)
        with catalog.transaction(db):
            db.executemany("DELETE FROM chunks WHERE id = ?",
                           [(cid,) for cid in moved.values() if cid not in used])
    with catalog.transaction(db):
        for pid in gone:
            if not db.execute("SELECT 1 FROM chunks WHERE pack_id = ? LIMIT 1", (pid,)).fetchone():
                db.execute("DELETE FROM packs WHERE id = ?", (pid,))
                res.packs_gone += 1


class GcFollower:
    """``StoreOptions.on_missing_pack`` of an s3:// cache: a read met a pack that is gone.
    Follows what a gc elsewhere did (``follow_gc``: one listing of the bucket's packs, at
    most every ``FOLLOW_SECONDS``) and answers where the chunk is now, or None (lost)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._followed = -FOLLOW_SECONDS

    def __call__(self, repo, loc):
        if not repo.remote:
            return None
        with self._lock:
            if time.monotonic() - self._followed > FOLLOW_SECONDS:
                with repo.catalog_mutex():
                    follow_gc(repo, RebuildResult())
                self._followed = time.monotonic()
        return repo.locate(loc.hash)


def _import_packs(repo, res: RebuildResult, known: dict[bytes, int], missing: set[bytes],
                  relocate: dict[bytes, int] | None = None,
                  listing: dict[str, int] | None = None) -> None:
    """Read the index of every pack the catalog does not know; add its packs and chunks.
    A chunk in ``relocate`` (hash -> id of a row whose pack is gone) has its row pointed at
    the new pack instead, and leaves ``relocate``. ``listing``: the backend's packs (name ->
    size), when the caller has just listed them."""
    relocate = {} if relocate is None else relocate
    db = repo.writer
    have = dict(db.execute("SELECT name, id FROM packs"))
    if listing is None:
        listing = dict(repo.backend.list())
    # Chunks to relocate may be in a pack the catalog already knows: two machines stored
    # the same chunk, this catalog kept its own copy's row, and a gc elsewhere kept the
    # other copy. Known packs are then read too, for relocation only.
    todo = {n: s for n, s in listing.items() if n not in have or relocate}

    def index_object(name):
        try:
            return objects.get_pack_manifest(repo, name)
        except (RpfsError, OSError) as e:
            log.warning("%s: index object %s unreadable (%s); its packs are read instead",
                        repo.path, name, e)
            return {}

    def pack_tail(item):
        n, s = item
        try:
            return n, s, read_entry_table(repo.backend, n, s), None
        except (RpfsError, OSError) as e:
            return n, s, None, str(e)

    def found():
        """(pack, size, entries or None, error) of every pack in ``todo``, a few index
        objects or pack tails at a time (only those are held in memory, not every entry of
        every pack: ~150 bytes per chunk)."""
        names = list(repo.backend.list_objects(objects.PACK_MANIFESTS)) if todo else []
        for k in range(0, len(names), WORKERS):
            for idx in _pmap(index_object, names[k:k + WORKERS]):
                res.indexes_read += 1
                for n, (size, entries) in idx.items():
                    if todo.get(n) == size:
                        del todo[n]
                        yield n, size, entries, None
        rest = list(todo.items())
        res.packs_read += len(rest)
        for k in range(0, len(rest), WORKERS):
            yield from _pmap(pack_tail, rest[k:k + WORKERS])

    group: list[tuple] = []     # new chunk rows waiting: (hash, id, pack, offset, csize, usize, codec)
    next_id = [db.execute("SELECT max(coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'chunks'), 0),"
                          " coalesce((SELECT max(id) FROM chunks), 0))").fetchone()[0] + 1]

    def insert_group():
        """The rows of a group in hash order, with ids given in pack order: the hash index
        (random keys) is then filled in one sweep per group instead of one random page per
        row, which with SQLite's small page cache read and rewrote ~4 KiB per chunk (1 M
        chunks: 4.6 GB read, 4.2 GB written, 16x the time of 100 k); and ids stay in pack
        order, so chunk maps (id deltas) stay small."""
        group.sort()
        rows, last = [], None
        for r in group:
            if r[0] != last:   # a chunk in two new packs: the first one's row
                rows.append(r)
                last = r[0]
        cur = db.executemany("INSERT INTO chunks (hash, id, pack_id, offset, csize, usize, codec)"
                             " VALUES (?,?,?,?,?,?,?) ON CONFLICT (hash) DO NOTHING", rows)
        res.chunks_added += cur.rowcount
        for r in rows:
            if r[0] in missing:   # only what the caller needs is remembered
                known[r[0]] = r[1]
                missing.discard(r[0])
        group.clear()

    with catalog.page_cache(db, IMPORT_CACHE_MIB), catalog.transaction(db):
        for n, s, entries, err in found():
            pid = have.get(n)
            if entries is None:
                if pid is None:
                    res.lost.append(f"pack {n}: index unreadable ({err}); its chunks are not used")
                continue
            if pid is None:
                pid = db.execute("INSERT INTO packs (name, size, chunk_count, created)"
                                 " VALUES (?,?,?,?)", (n, s, len(entries), time.time())).lastrowid
                added = True
            else:
                added = False
            for e in entries:
                cid = relocate.pop(e.hash, None)
                if cid is not None:
                    # another copy's frame table may differ (encryption nonces): NULL = read it there
                    db.execute("UPDATE chunks SET pack_id = ?, offset = ?, csize = ?, usize = ?,"
                               " codec = ?, frames = NULL WHERE id = ?",
                               (pid, e.offset, e.csize, e.usize, e.codec, cid))
                    known[e.hash] = cid
                    continue
                if not added:
                    continue   # a known pack, read only to relocate
                if e.hash in known:
                    continue   # also in another pack (a repack a gc had not finished deleting)
                # else, if the catalog has it in a pack still there, ON CONFLICT keeps that copy
                group.append((e.hash, next_id[0], pid, e.offset, e.csize, e.usize, e.codec))
                next_id[0] += 1
            if len(group) >= IMPORT_GROUP:
                insert_group()
        if group:
            insert_group()


def write_missing_objects(repo, res: RebuildResult) -> None:
    """Objects for catalog recovery points that have none (stored before rpfs wrote them)."""
    db = repo.writer
    names = set(repo.backend.list_objects(objects.RPS))
    maps = set(repo.backend.list_objects(objects.MAPS))
    for n, rid in _catalog_objects(db, repo.crypto).items():
        if n in names:
            continue
        vm, name, t, ls, ss, fc, nc, cs, created = db.execute(
            "SELECT v.name, r.name, r.time, r.logical_size, r.stored_size, r.file_count, r.new_chunks,"
            " r.chunk_size, r.created FROM recovery_points r JOIN vms v ON v.id = r.vm_id"
            " WHERE r.id = ?", (rid,)).fetchone()
        files = []
        for fid, path, size, blob, m, c, ino, dev, mo in db.execute(
                "SELECT id, path, size, chunk_map, mtime_ns, ctime_ns, inode, dev, map_object FROM files"
                " WHERE rp_id = ? ORDER BY path", (rid,)).fetchall():
            if mo is None or mo not in maps:
                ids = catalog.decode_map(blob, (size + cs - 1) // cs, f"{vm}/{name}/files/{path}")
                by_id = dict(db.execute(
                    "SELECT id, hash FROM chunks WHERE id IN (SELECT value FROM json_each(?))",
                    (f"[{','.join(map(str, set(ids) - {0}))}]",)).fetchall())
                if any(i and i not in by_id for i in ids):
                    res.lost.append(f"{vm}/{name}/files/{path}: chunks missing from the catalog;"
                                    " no map object written")
                    continue
                mo = objects.put_map(repo, [by_id[i] if i else None for i in ids])
                maps.add(mo)
                with catalog.transaction(db):
                    db.execute("UPDATE files SET map_object = ? WHERE id = ?", (mo, fid))
            files.append({"path": path, "size": size, "map": mo, "mtime_ns": m, "ctime_ns": c,
                          "inode": ino, "dev": dev})
        objects.put_recovery_point(repo, {"vm": vm, "name": name, "time": t, "logical_size": ls,
                                          "stored_size": ss, "file_count": fc, "new_chunks": nc,
                                          "chunk_size": cs, "created": created}, files)
        res.objects_written += 1
