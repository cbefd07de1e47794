"""Building the index: one recovery point at a time, each volume written as the changes
from the previous indexed recovery point of the same VM (db.py explains the intervals).

For each volume: the $MFT blocks whose hash changed are parsed (scan.py); each changed
record's rows are compared with its open rows, which are kept, closed or replaced; when a
directory was renamed, moved or deleted, the rows below it get their new paths. A
recovery point is indexed in one transaction, so a killed indexer leaves the index as it
was. Recovery points are indexed oldest first; indexing one older than some already
indexed (``rpfs index`` after upgrading) first forgets the newer ones and redoes them,
which costs little since each is only its changes.
"""

from __future__ import annotations

import os
import time
from typing import Callable

from streams.errors import RpfsError
from rpfs.index import db as dbm
from rpfs.index.db import OPEN, clear_pending
from rpfs.index.scan import BLOCK, FILE_EXTEND, FILE_ROOT, FIRST_USER_RECORD, FileInfo, MftScan
from rpfs.tree import RepoRecoveryPoint, is_posix_volume
from rpfs.log import get_logger

log = get_logger(__name__)

REF_SHIFT = 48
_ROW = ("rseq, parent, kind, size, allocated, created, modified, changed, accessed, "
        "attributes, reparse_tag, ads, fingerprint")


def _i64(v: int) -> int:
    """An unsigned 64-bit value as SQLite's signed INTEGER (the same bits)."""
    return v - (1 << 64) if v >= 1 << 63 else v


def _parent(stored: int) -> tuple[int, int]:
    """(record number, sequence) of a stored parent reference."""
    return stored & ((1 << REF_SHIFT) - 1), (stored >> REF_SHIFT) & 0xFFFF


def _fields(info: FileInfo, parent: int) -> tuple:
    return (info.seq, _i64(parent), info.kind, info.size, info.allocated, _i64(info.created),
            _i64(info.modified), _i64(info.changed), _i64(info.accessed), info.attributes,
            info.reparse_tag, info.ads, info.fingerprint)


class Ids:
    """Ids of directory paths and names, created on first use (cached). ``resolve`` takes
    many at once: one statement per 500 instead of three per name."""

    def __init__(self, db):
        self.db = db
        self.dirs: dict[str, int] = {}
        self.names: dict[str, int] = {}

    def resolve(self, table: str, values: set[str]) -> dict[str, int]:
        cache = self.dirs if table == "dirs" else self.names
        col = "path" if table == "dirs" else "name"
        want = {dbm.to_text(v): v for v in values if v not in cache}
        if want:
            top = self.db.execute(f"SELECT max(id) FROM {table}").fetchone()[0] or 0
            self.db.executemany(f"INSERT OR IGNORE INTO {table} ({col}, fold) VALUES (?, ?)",
                                ((t, t.lower()) for t in want))
            texts = list(want)
            for k in range(0, len(texts), 500):
                part = texts[k:k + 500]
                cache.update((want[t], i) for t, i in self.db.execute(
                    f"SELECT {col}, id FROM {table} WHERE {col} IN ({','.join('?' * len(part))})",
                    part))
            if table == "names":
                self.db.execute("INSERT INTO names_fts (rowid, name) SELECT id, name FROM names"
                                " WHERE id > ?", (top,))
        return cache


class ChangeSet:
    """Changes given record by record (what MftScan finds on a volume): for synthetic
    volumes (tests, tools/bench_find.py). ``infos``: record number -> FileInfo or None."""

    def __init__(self, hashes: dict[int, bytes], infos: dict[int, FileInfo | None],
                 record_size: int = 1024):
        self.hashes = {b: (h, None) for b, h in hashes.items()}
        self.record_size, self._infos = record_size, infos
        self.changed = set(infos)
        self.dirs = {n: i for n, i in infos.items() if i is not None and i.kind == "dir"}

    def records(self):
        return iter(self._infos.items())


class VolumeWriter:
    """Writes one volume's state in the recovery point with ordinal ``seq``."""

    def __init__(self, db, ids: Ids, volume_id: int, seq: int):
        self.db, self.ids, self.vid, self.seq = db, ids, volume_id, seq
        row = db.execute("SELECT max(seq) FROM volume_rps WHERE volume_id = ? AND seq < ?",
                         (volume_id, seq)).fetchone()
        self.prev = row[0]
        self.count = 0
        if self.prev is not None:
            self.count = db.execute("SELECT entries FROM volume_rps WHERE volume_id = ? AND seq = ?",
                                    (volume_id, self.prev)).fetchone()[0]
        self.inserted = self.closed = 0
        self.orphans = 0           # records in use that got no row (no path)
        self.appeared = 0          # directories with a row now and none before
        self._rows: list[tuple] = []      # (ref, dir path, name, fields) to insert
        self._closes: list[int] = []

    def old_hashes(self) -> dict[int, tuple] | None:
        """block -> (hash, token) in the state the open rows describe."""
        if self.prev is None:
            return None
        return {b: (h, t) for b, h, t in self.db.execute(
            "SELECT block, hash, token FROM blocks WHERE volume_id = ? AND last = ?",
            (self.vid, OPEN))}

    # -- paths ----------------------------------------------------------------------

    def _open_dir(self, num: int):
        """(parent ref, name, sequence) of directory ``num`` in the previous state."""
        return self.db.execute(
            "SELECT e.parent, n.name, e.rseq FROM entries e JOIN names n ON n.id = e.name_id"
            " WHERE e.volume_id = ? AND e.ref = ? AND e.last = ? AND e.kind = 'dir' LIMIT 1",
            (self.vid, num, OPEN)).fetchone()

    def dir_path(self, num: int, seq: int) -> str | None:
        """The path of directory ``num`` in the new state ('' = root; None = not in the
        namespace: deleted, a stale reference, under $Extend, or in a cycle)."""
        chain = []                    # (num, seq wanted, name) from here up
        n, s = num, seq
        path = None
        while True:
            if n == FILE_ROOT:
                path = ""
                break
            if n in self._memo:
                p, have = self._memo[n]
                path = p if (not s or have == s) else None
                break
            if n == FILE_EXTEND or n < FIRST_USER_RECORD or len(chain) > 4096 or \
                    any(c[0] == n for c in chain):
                break
            if n in self._changed:
                info = self._dirs.get(n)
                link = info.links[0] if info is not None else None
                have = info.seq if info is not None else 0
            elif self.prev is not None:
                row = self._open_dir(n)
                link = (_parent(row[0]) + (dbm.from_text(row[1]),)) if row else None
                have = row[2] if row else 0
            else:
                link = None
            if link is None or (s and have != s):
                if link is None:
                    self._memo[n] = (None, 0)
                break
            chain.append((n, have, link[2]))
            n, s = link[0], link[1]
        for cn, have, name in reversed(chain):
            path = None if path is None else f"{path}/{name}"
            self._memo[cn] = (path, have)
        return path

    # -- applying -------------------------------------------------------------------

    def apply(self, scan, old: dict[int, tuple] | None) -> None:
        """Write the changes ``scan`` (an MftScan, or anything with its ``hashes``,
        ``changed``, ``dirs``, ``record_size`` and ``records()``) found since ``old``."""
        db, seq, prev = self.db, self.seq, self.prev
        hashes = scan.hashes
        per_block = max(1, BLOCK // scan.record_size)
        gone_blocks = set(old) - set(hashes) if old else set()
        self._changed = set(scan.changed)
        for block in gone_blocks:                    # $MFT shrank
            self._changed.update(range(block * per_block, (block + 1) * per_block))
        self._dirs = scan.dirs
        self._memo: dict[int, tuple] = {}
        moved: list[str] = []          # old paths of directories renamed, moved or gone

        def records():
            yield from scan.records()
            for block in gone_blocks:
                for num in range(block * per_block, (block + 1) * per_block):
                    yield num, None

        for num, info in records():
            new: dict[tuple, tuple] = {}
            if info is not None:
                for pnum, pseq, name in info.links:
                    dp = self.dir_path(pnum, pseq)
                    if dp is not None:
                        new[(dp, name)] = _fields(info, pnum | (pseq << REF_SHIFT))
                if not new:
                    self.orphans += 1
            if prev is not None:
                rows = db.execute(
                    f"SELECT e.id, d.path, n.name, {_ROW} FROM entries e"
                    " JOIN dirs d ON d.id = e.dir_id JOIN names n ON n.id = e.name_id"
                    " WHERE e.volume_id = ? AND e.ref = ? AND e.last = ?",
                    (self.vid, num, OPEN)).fetchall()
                if not rows and new and info.kind == "dir":
                    self.appeared += 1
                for row in rows:
                    key = (dbm.from_text(row[1]), dbm.from_text(row[2]))
                    if new.get(key) == tuple(row[3:]):
                        del new[key]                  # unchanged: the row stays open
                        continue
                    self._close(row[0])
                    if row[5] == "dir" and key not in new:
                        moved.append(f"{row[1]}/{row[2]}")   # as stored
            for (dp, name), fields in new.items():
                self._insert(num, dp, name, fields)
            if len(self._rows) >= 20_000:
                self._flush()
        self._flush()
        for old_path in moved:
            self._follow(old_path)
        self._flush()
        # block hashes
        if old is None:
            db.executemany("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?)",
                           ((self.vid, b, seq, OPEN, h, t) for b, (h, t) in hashes.items()))
        else:
            gone = [b for b, ht in old.items() if hashes.get(b) != ht]
            db.executemany("UPDATE blocks SET last = ? WHERE volume_id = ? AND block = ? AND last = ?",
                           ((prev, self.vid, b, OPEN) for b in gone))
            db.executemany("INSERT INTO blocks VALUES (?, ?, ?, ?, ?, ?)",
                           ((self.vid, b, seq, OPEN, h, t) for b, (h, t) in hashes.items()
                            if old.get(b) != (h, t)))
        self.count += self.inserted - self.closed

    def _close(self, row_id: int) -> None:
        self._closes.append(row_id)

    def _insert(self, ref: int, dir_path: str, name: str, fields: tuple) -> None:
        self._rows.append((ref, dir_path, name, fields))

    def _flush(self) -> None:
        db = self.db
        db.executemany("UPDATE entries SET last = ? WHERE id = ?",
                       ((self.prev, i) for i in self._closes))
        self.closed += len(self._closes)
        self._closes = []
        if not self._rows:
            return
        dirs = self.ids.resolve("dirs", {r[1] for r in self._rows})
        names = self.ids.resolve("names", {r[2] for r in self._rows})
        db.executemany(
            f"INSERT INTO entries (volume_id, first, last, dir_id, name_id, ref, {_ROW})"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            ((self.vid, self.seq, OPEN, dirs[d], names[n], ref) + fields
             for ref, d, n, fields in self._rows))
        self.inserted += len(self._rows)
        self._rows = []

    def _follow(self, old_path: str) -> None:
        """Rows below a directory that was renamed, moved or deleted, whose own records
        did not change: each gets its path in the new state (or ends). ``old_path`` is
        as stored (db.to_text)."""
        dirs = self.db.execute("SELECT id, path FROM dirs WHERE path = ? OR (path >= ? AND path < ?)",
                               (old_path, old_path + "/", old_path + "0")).fetchall()
        for dir_id, _ in dirs:
            for row in self.db.execute(
                    f"SELECT e.id, e.ref, n.name, {_ROW} FROM entries e"
                    " JOIN names n ON n.id = e.name_id"
                    " WHERE e.dir_id = ? AND +e.volume_id = ? AND e.last = ?",
                    (dir_id, self.vid, OPEN)).fetchall():
                if row[1] in self._changed:
                    continue
                dp = self.dir_path(*_parent(row[4]))
                self._close(row[0])
                if dp is not None:
                    self._insert(row[1], dp, dbm.from_text(row[2]), tuple(row[3:]))


# -- recovery points ---------------------------------------------------------------------


def truncate(db, vm: str, seq: int) -> None:
    """Forget what the VM's recovery points with ordinal >= ``seq`` added to the index."""
    db.execute("DELETE FROM rps WHERE vm = ? AND seq >= ?", (vm, seq))
    for (vid,) in db.execute("SELECT id FROM volumes WHERE vm = ?", (vm,)).fetchall():
        db.execute("DELETE FROM volume_rps WHERE volume_id = ? AND seq >= ?", (vid, seq))
        m = db.execute("SELECT max(seq) FROM volume_rps WHERE volume_id = ?", (vid,)).fetchone()[0]
        db.execute("UPDATE volumes SET state_seq = ? WHERE id = ?", (m, vid))
        for table in ("entries", "blocks"):
            if m is None:
                db.execute(f"DELETE FROM {table} WHERE volume_id = ?", (vid,))
            else:
                db.execute(f"DELETE FROM {table} WHERE volume_id = ? AND first > ?", (vid, m))
                db.execute(f"UPDATE {table} SET last = ? WHERE volume_id = ? AND last >= ?"
                           f" AND last < ?", (OPEN, vid, m, OPEN))


def _scan(vol, old, everything: bool):
    """$MFT's changed blocks for NTFS; a walk for a POSIX volume (posix.py)."""

    if is_posix_volume(vol):
        from rpfs.index.posix import PosixScan

        return PosixScan(vol, old, everything)
    return MftScan(vol, old, everything)


def _index_volume(db, ids: Ids, vid: int, seq: int, vol):
    """Write one volume's changes (inside a savepoint: all or nothing). If directories
    appeared while the previous state had records without a path, those records may now
    have one though their blocks did not change: then every record is read again."""
    for everything in (False, True):
        w = VolumeWriter(db, ids, vid, seq)
        old = w.old_hashes()
        before = 0
        if w.prev is not None:
            before = db.execute("SELECT orphans FROM volume_rps WHERE volume_id = ? AND seq = ?",
                                (vid, w.prev)).fetchone()[0]
        db.execute("SAVEPOINT volume")
        try:
            scan = _scan(vol, old, everything)
            w.apply(scan, old)
        except BaseException:
            db.execute("ROLLBACK TO volume")
            db.execute("RELEASE volume")
            raise
        if everything or not (before and w.appeared):
            if not everything and old is not None:
                w.orphans += before      # an upper bound until the next full read
            db.execute("RELEASE volume")
            return w, scan
        db.execute("ROLLBACK TO volume")
        db.execute("RELEASE volume")
        ids.dirs.clear()
        ids.names.clear()
    raise AssertionError("unreachable")


def index_recovery_point(db, ids: Ids, vm: str, rp, volumes: dict, seq: int,
                         unchanged=None) -> dict:
    """Index every volume (NTFS or POSIX) of one recovery point as ordinal ``seq`` (caller commits).

    ``unchanged(volume name, catalog id of the recovery point it was last indexed in)``
    may say the volume's bytes are the same there (its disk files have the same chunks):
    then its open rows simply stay open, and nothing is read."""
    out = {"volumes": 0, "entries": 0, "changed_records": 0, "unchanged_volumes": 0,
           "mft_bytes_read": 0, "errors": []}
    for name, vol in sorted(volumes.items()):
        if isinstance(vol, Exception):
            out["errors"].append(f"{vm}/{rp.name}/volumes/{name}: {vol}")
            continue
        row = db.execute("SELECT id FROM volumes WHERE vm = ? AND name = ?", (vm, name)).fetchone()
        vid = row[0] if row else db.execute("INSERT INTO volumes (vm, name) VALUES (?, ?)",
                                            (vm, name)).lastrowid
        prev = db.execute("SELECT vr.entries, vr.orphans, r.catalog_id FROM volume_rps vr"
                          " JOIN rps r ON r.id = vr.rp_id JOIN volumes v ON v.id = vr.volume_id"
                          " WHERE vr.volume_id = ? AND vr.seq = v.state_seq", (vid,)).fetchone()
        if prev is not None and unchanged is not None and unchanged(name, prev[2]):
            count, orphans, changed = prev[0], prev[1], 0
            out["unchanged_volumes"] += 1
        else:
            try:
                w, scan = _index_volume(db, ids, vid, seq, vol)
            except RpfsError as e:   # this volume is left out of this recovery point's index
                out["errors"].append(f"{vm}/{rp.name}/volumes/{name}: {e}")
                continue
            count, orphans, changed = w.count, w.orphans, len(scan.changed)
            out["mft_bytes_read"] += scan.bytes_read
        db.execute("INSERT INTO volume_rps VALUES (?, ?, ?, ?, ?)", (vid, seq, 0, count, orphans))
        db.execute("UPDATE volumes SET state_seq = ? WHERE id = ?", (seq, vid))
        out["volumes"] += 1
        out["entries"] += count
        out["changed_records"] += changed
    return out


def same_disk_files(repo, rrp):
    """For ``index_recovery_point``: does a volume of ``rrp`` come from disk files stored
    with exactly the same chunks as in the recovery point with that catalog id?"""
    def unchanged(volume: str, other_id: int) -> bool:
        if ".vss/" in volume:   # a shadow copy indexed before: stores never change
            return True
        disk = rrp.disks.get(volume.rsplit("-p", 1)[0])
        if disk is None or isinstance(disk, Exception):
            return False
        paths = [d.name for d in disk.chain]
        try:
            rows = repo.query(
                "SELECT rp_id, path, size, chunk_map FROM files WHERE rp_id IN (?, ?)"
                f" AND path IN ({','.join('?' * len(paths))})", [rrp.rp.id, other_id] + paths)
        except RpfsError:     # cannot tell: read the volume
            return False
        mine = {p: (size, bytes(m)) for r, p, size, m in rows if r == rrp.rp.id}
        theirs = {p: (size, bytes(m)) for r, p, size, m in rows if r == other_id}
        return len(mine) == len(paths) and mine == theirs
    return unchanged


def update_index(repo, vm: str | None = None, *, only=None,
                 progress: Callable[[str, int, int], None] | None = None, keys=None) -> dict:
    """Index every recovery point of ``vm`` (all VMs if None) that is not indexed yet
    (``keys``: a ``formats.bitlocker.KeyRing`` for BitLocker volumes).

    ``only``: a recovery point name; just that one (and, if older ones of its VM are not
    indexed, nothing else: they come with the next ``rpfs index``). Returns counts."""

    directory = os.path.dirname(repo.catalog_path)
    summary = {"indexed": 0, "volumes": 0, "entries": 0, "changed_records": 0,
               "unchanged_volumes": 0, "mft_bytes_read": 0, "errors": [], "seconds": 0.0}
    t0 = time.monotonic()
    with dbm.WriteLock(directory):
        db = dbm.connect(dbm.index_path(repo), write=True)
        try:
            vms = [vm] if vm else repo.vms()
            for v in vms:
                live = repo.recovery_points(v)
                forget_pruned(db, v, {rp.id for rp in live})
                todo = _todo(db, v, live, only)
                for i, rp in enumerate(todo):
                    if progress:
                        progress(f"{v}/{rp.name}", i, len(todo))
                    rrp = RepoRecoveryPoint(repo, rp, keys)
                    db.execute("BEGIN IMMEDIATE")
                    try:
                        seq = (db.execute("SELECT max(seq) FROM rps WHERE vm = ?",
                                          (v,)).fetchone()[0] or 0) + 1
                        ids = Ids(db)
                        bulk = dbm.bulk_load(db)
                        r = index_recovery_point(db, ids, v, rp,
                                                 {**rrp.volumes, **rrp.shadow_volumes}, seq,
                                                 same_disk_files(repo, rrp))
                        if bulk:
                            dbm.create_indexes(db)
                        rid = db.execute("INSERT INTO rps (vm, name, time, catalog_id, seq)"
                                         " VALUES (?,?,?,?,?)",
                                         (v, rp.name, int(rp.time.timestamp()), rp.id,
                                          seq)).lastrowid
                        db.execute("UPDATE volume_rps SET rp_id = ? WHERE rp_id = 0", (rid,))
                        db.execute("COMMIT")
                    except BaseException:
                        db.execute("ROLLBACK")
                        raise
                    clear_pending(repo, rp.id)
                    summary["indexed"] += 1
                    for k in ("volumes", "entries", "changed_records", "unchanged_volumes",
                              "mft_bytes_read"):
                        summary[k] += r[k]
                    summary["errors"] += r["errors"]
                if progress and todo:
                    progress(v, len(todo), len(todo))
        finally:
            db.close()
    summary["seconds"] = time.monotonic() - t0
    return summary


def forget_pruned(db, vm: str, live: set[int]) -> None:
    """Drop what only recovery points no longer in the catalog (pruned) still use.

    Their ordinals disappear from ``volume_rps``; the open rows still describe the newest
    indexed state, so the next recovery point is compared with them as before (a row it
    closes at an older ordinal than its ``first`` was only ever in pruned ones)."""
    gone = [(rid, seq) for rid, cid, seq in
            db.execute("SELECT id, catalog_id, seq FROM rps WHERE vm = ?", (vm,)) if cid not in live]
    if not gone:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        for rid, seq in gone:
            db.execute("DELETE FROM rps WHERE id = ?", (rid,))
            db.execute("DELETE FROM volume_rps WHERE rp_id = ?", (rid,))
        for (vid,) in db.execute("SELECT id FROM volumes WHERE vm = ?", (vm,)).fetchall():
            db.execute("DELETE FROM entries WHERE volume_id = ? AND last != ? AND NOT EXISTS"
                       " (SELECT 1 FROM volume_rps vr WHERE vr.volume_id = entries.volume_id"
                       " AND vr.seq BETWEEN entries.first AND entries.last)", (vid, OPEN))
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _todo(db, vm: str, live: list, only: str | None) -> list:
    """The live recovery points to index, oldest first, after forgetting indexed ones
    newer than the oldest of them (so ordinals stay in time order)."""
    indexed = {cid: (t, s) for cid, t, s in
               db.execute("SELECT catalog_id, time, seq FROM rps WHERE vm = ?", (vm,))}
    todo = [rp for rp in live if rp.id not in indexed]
    if only is not None:
        todo = [rp for rp in todo if rp.name == only]
    if not todo:
        return []
    oldest = min(int(rp.time.timestamp()) for rp in todo)
    newer = [s for t, s in indexed.values() if t > oldest]
    if newer:
        db.execute("BEGIN IMMEDIATE")
        try:
            truncate(db, vm, min(newer))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        again = {cid for cid, t, s in db.execute("SELECT catalog_id, time, seq FROM rps WHERE vm = ?",
                                                 (vm,))}
        todo = [rp for rp in live if rp.id not in again and (only is None or rp.name == only
                                                             or int(rp.time.timestamp()) > oldest)]
    return sorted(todo, key=lambda r: (r.time, r.name))
