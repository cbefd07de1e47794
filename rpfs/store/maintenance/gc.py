"""Garbage collection: mark chunks from the catalog, sweep the rest, repack wasteful packs.

Run by a writer holding the repository lock exclusively (prune, or ``rpfs prune`` with no
rule): no backup is running anywhere, so every pack is either committed or a killed run's.
Steps:

1. mark: decode every stored file's chunk map; every chunk id seen is live;
2. pack files the catalog does not know are deleted: a killed backup's (renamed but never
   committed), or, in an s3:// cache, another machine's copies of chunks this catalog has
   in its own packs (two backups that raced both uploaded them: one copy is kept);
3. per pack: no live chunk -> retire it; live fraction below ``repack_threshold`` -> copy its
   live chunks (payload checked against its hash first) into new packs, then retire it;
4. one transaction: bump ``epoch`` to E, point moved chunks at their new packs, delete dead
   chunk rows, mark retired packs ``retired_epoch = E``;
5. delete the objects of retired packs once no registered reader is older than their
   ``retired_epoch`` (a reader resolves locations only after it registers, so a reader whose
   epoch is >= E never saw the old locations). Others stay "pending delete" for the next gc.
"""

from __future__ import annotations

import time
from array import array
from dataclasses import asdict, dataclass

from streams.errors import FormatError, IntegrityError
import rpfs.store.catalog as catalog
import rpfs.store.objects as objects
from rpfs.store.maintenance.marks import mark
from rpfs.store.maintenance.sync import sync
from rpfs.store.packs import ENTRY_HEADER_SIZE, TABLE_ENTRY_SIZE, PackWriter
from rpfs.store.repository import ChunkLoc

INDEX_GROUP = 100_000    # new pack entries per index object a repack writes


@dataclass
class GcResult:
    chunks_live: int = 0
    chunks_deleted: int = 0
    packs_repacked: int = 0
    packs_retired: int = 0
    packs_deleted: int = 0
    packs_pending: int = 0
    orphan_packs_deleted: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    chunks_moved: int = 0
    damaged_chunks: int = 0
    maps_deleted: int = 0
    dry_run: bool = False

    @property
    def bytes_reclaimed(self) -> int:
        return self.bytes_before - self.bytes_after

    def as_dict(self) -> dict:
        d = asdict(self)
        d["bytes_reclaimed"] = self.bytes_reclaimed
        return d


def gc(repo, *, dry_run: bool = False, exclude: set[int] = frozenset()) -> GcResult:
    """Caller holds ``repo.lock(exclusive=True)``. ``exclude``: RPs a dry run pretends are gone."""
    res = GcResult(dry_run=dry_run)
    db = repo.writer
    sync(repo)   # a recovery point whose object exists keeps its chunks
    live = mark(repo, exclude)
    res.chunks_live = len(live)

    packs = {pid: (name, size, retired) for pid, name, size, retired in
             db.execute("SELECT id, name, size, retired_epoch FROM packs")}
    known = {v[0] for v in packs.values()}
    stored = dict(repo.backend.list())
    res.bytes_before = sum(stored.values())
    for name in stored:
        if name not in known:
            res.orphan_packs_deleted += 1
            if not dry_run:
                repo.backend.delete(name)

    # per live pack: live payload bytes and which rows are dead (the rows themselves are
    # read again only for the packs repacked: holding every live row would take ~150 bytes
    # per chunk, 1.5 GB at 10 million chunks)
    # A chunk's bytes in its pack are its payload, the header in front of it and its index
    # entry: counting the payload alone, a pack of small, well-compressed chunks (a 4 KiB
    # chunk of a mostly empty page is ~20 bytes, its header and entry 100) looked mostly
    # dead with every chunk live, and every gc repacked every such pack again.
    per_chunk = ENTRY_HEADER_SIZE + TABLE_ENTRY_SIZE
    live_bytes: dict[int, int] = {pid: 0 for pid, v in packs.items() if v[2] is None}
    dead = array("q")
    for cid, pid, csize in db.execute("SELECT id, pack_id, csize FROM chunks"):
        if cid in live:
            live_bytes[pid] = live_bytes.get(pid, 0) + csize + per_chunk
        else:
            dead.append(cid)
    res.chunks_deleted = len(dead)

    threshold = repo.config.repack_threshold
    retire: list[int] = []
    repack: list[int] = []
    for pid, lb in live_bytes.items():
        name, size, retired = packs[pid]
        if lb == 0:
            retire.append(pid)
        elif size > 0 and lb / size < threshold:
            repack.append(pid)

    # What a repack holds until its transaction is 24 bytes per moved chunk (three arrays),
    # not a tuple per chunk and every new pack's entries (~250 bytes per chunk, 2.5 GB when
    # a gc moves 10 million chunks): a new pack's entries go into an index object once
    # INDEX_GROUP entries are waiting, and are dropped then.
    new_packs: list[tuple[str, int, int]] = []          # name, size, entry count
    moved_id, moved_off, moved_pack = array("q"), array("q"), array("q")
    if not dry_run and (repack or retire or dead):
        writer: PackWriter | None = None
        unindexed: list[tuple[str, int, list]] = []

        def finish(w: PackWriter) -> None:
            size = w.finish()
            new_packs.append((w.name, size, len(w.entries)))
            unindexed.append((w.name, size, w.entries))
            if sum(len(e) for _, _, e in unindexed) >= INDEX_GROUP:
                objects.put_pack_manifest(repo, unindexed)
                unindexed.clear()

        for pid in repack:
            name = packs[pid][0]
            ok = True
            staged = []
            for cid, off, csize, usize, codec, h in db.execute(
                    "SELECT id, offset, csize, usize, codec, hash FROM chunks WHERE pack_id = ?"
                    " ORDER BY offset", (pid,)).fetchall():
                if cid not in live:
                    continue
                try:
                    payload = repo.fetch_chunk(ChunkLoc(name, off, csize, usize, codec, h))[0]
                except (IntegrityError, OSError):
                    ok = False   # leave a damaged pack where it is: verify will name it
                    res.damaged_chunks += 1
                    continue
                staged.append((cid, codec, payload, usize, h))
            if not ok:
                continue
            for cid, codec, payload, usize, h in staged:
                if writer is None:
                    writer = PackWriter(repo.backend)
                e = writer.add(h, codec, payload, usize)
                moved_id.append(cid)
                moved_off.append(e.offset)
                moved_pack.append(len(new_packs))    # the slot this writer takes when finished
                if writer.size >= repo.config.pack_size:
                    finish(writer)
                    writer = None
            retire.append(pid)
            res.packs_repacked += 1
            res.chunks_moved += len(staged)
        if writer is not None:
            finish(writer)
        if unindexed:
            objects.put_pack_manifest(repo, unindexed)
        with catalog.transaction(db):
            epoch = catalog.get_epoch(db) + 1
            pack_ids = [db.execute("INSERT INTO packs (name, size, chunk_count, created)"
                                   " VALUES (?,?,?,?)", (n, size, count, time.time())).lastrowid
                        for n, size, count in new_packs]
            db.executemany("UPDATE chunks SET pack_id = ?, offset = ? WHERE id = ?",
                           ((pack_ids[moved_pack[i]], moved_off[i], moved_id[i])
                            for i in range(len(moved_id))))
            for k in range(0, len(dead), 500):
                part = dead[k:k + 500].tolist()
                db.execute(f"DELETE FROM chunks WHERE id IN ({','.join('?' * len(part))})", part)
            db.executemany("UPDATE packs SET retired_epoch = ? WHERE id = ?", [(epoch, p) for p in retire])
            db.execute("UPDATE meta SET value = ? WHERE key = 'epoch'", (epoch,))
        res.packs_retired = len(retire)
    elif dry_run:
        res.packs_retired = len(retire) + len(repack)

    if not dry_run:
        delete_retired(repo, res)
        res.maps_deleted = delete_unused_maps(repo)
    stored = dict(repo.backend.list())
    res.bytes_after = sum(stored.values())
    return res


def delete_retired(repo, res: GcResult) -> None:
    """Delete retired packs no live reader can still be using."""
    db = repo.writer
    readers = repo.live_reader_epochs()
    oldest = min(readers) if readers else None
    for pid, name, retired in db.execute(
            "SELECT id, name, retired_epoch FROM packs WHERE retired_epoch IS NOT NULL").fetchall():
        if oldest is not None and oldest < retired:
            res.packs_pending += 1
            continue
        if db.execute("SELECT 1 FROM chunks WHERE pack_id = ? LIMIT 1", (pid,)).fetchone():
            raise FormatError(f"retired pack {name} still has chunks", source=repo.catalog_path,
                              structure="packs")
        repo.backend.delete(name)
        db.execute("DELETE FROM packs WHERE id = ?", (pid,))
        res.packs_deleted += 1


def delete_unused_maps(repo) -> int:
    """Chunk map objects no recovery point names any more."""
    live = {m for (m,) in repo.writer.execute("SELECT DISTINCT map_object FROM files")}
    n = 0
    for name in list(repo.backend.list_objects(objects.MAPS)):
        if name not in live:
            repo.backend.delete_object(f"{objects.MAPS}/{name}")
            n += 1
    return n
