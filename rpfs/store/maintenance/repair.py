"""``rpfs repair``: a lost or damaged catalog rebuilt from the repository's own objects
(sync.py does the import). Nothing in the repository is deleted but what an interrupted
prune had already decided to forget (forget.py), which repair finishes first."""

from __future__ import annotations

import os
import time

from streams.errors import FormatError, IntegrityError
import rpfs.store.catalog as catalog
import rpfs.store.maintenance.forget as forget
from rpfs.store.backend import LocalBackend
from rpfs.store.config import Config
from rpfs.store.maintenance.sync import RebuildResult, sync, write_missing_objects
from rpfs.store.options import StoreOptions, is_s3
from rpfs.store.packs import FRAMED
from rpfs.store.repository import ChunkLoc, Repository


def repair(address: str, options: StoreOptions | None = None) -> RebuildResult:
    """Rebuild the catalog of the repository at ``address`` from its objects.

    A directory: a missing or unreadable catalog is moved aside (``catalog.sqlite.old-*``)
    and rebuilt; a readable one gains what the objects have and it lacks, and objects are
    written for what it has and they lack. s3://: the cached catalog is rebuilt from scratch."""
    t0 = time.monotonic()
    res = RebuildResult()
    if is_s3(address):
        repo = Repository.open(address, options, register=False)
        try:
            with repo.writer_lock("repair"):
                catalog.remove(repo.catalog_path)
                catalog.create(repo.catalog_path, repo.config.id)
                forget.finish_all(repo)
                _rebuild(repo, res)
        finally:
            repo.close()
    else:
        path = os.path.abspath(address)
        backend = LocalBackend(path)
        cfg = Config.loads(backend.read_config(), path)
        cat = catalog.path_in(path)
        try:
            if os.path.exists(cat):
                catalog.check(cat)
                db = catalog.connect(cat)
                try:
                    bad = [r[0] for r in db.execute("PRAGMA integrity_check").fetchall()] != ["ok"]
                finally:
                    db.close()
                if bad:
                    raise FormatError("integrity check failed", source=cat, structure="catalog")
        except (FormatError, OSError):
            res.catalog_moved_to = catalog.discard(cat)
        if not os.path.exists(cat):
            catalog.create(cat, cfg.id)
        repo = Repository.open(path, options, register=False)
        try:
            with repo.writer_lock("repair"):
                forget.finish_all(repo)   # before objects are written for catalog rows
                _rebuild(repo, res)
                write_missing_objects(repo, res)
        finally:
            repo.close()
    res.seconds = time.monotonic() - t0
    return res


def _rebuild(repo, res: RebuildResult) -> None:
    r = sync(repo, drop_missing=False, quiet=True)
    for k in ("recovery_points", "imported", "files", "packs_read", "indexes_read", "chunks_added"):
        setattr(res, k, getattr(r, k))
    res.lost.extend(r.lost)
    res.frame_tables = fill_frame_tables(repo)


def fill_frame_tables(repo, batch: int = 500) -> int:
    """Copy into the catalog the frame table of every framed chunk whose row has none
    (stored by an rpfs without the column, or imported from objects), so a small read of it
    is one read: one small read per chunk, in pack order. A table that fails its check is
    left out (the read then fails as it would; ``rpfs verify`` names it). Returns how many
    were copied."""
    db = repo.writer
    rows = db.execute(
        "SELECT c.id, p.name, c.offset, c.csize, c.usize, c.hash FROM chunks c JOIN packs p"
        " ON p.id = c.pack_id WHERE c.codec = ? AND c.frames IS NULL AND p.name != ?"
        " ORDER BY p.name, c.offset", (FRAMED, catalog.LOST_PACK)).fetchall()
    done = 0
    for k in range(0, len(rows), batch):
        found = []
        for cid, pack, off, csize, usize, h in rows[k:k + batch]:
            try:
                found.append((repo.stored_table(ChunkLoc(pack, off, csize, usize, FRAMED, h, cid))[0], cid))
            except (IntegrityError, OSError):
                continue
        with catalog.transaction(db):
            db.executemany("UPDATE chunks SET frames = ? WHERE id = ? AND frames IS NULL", found)
        done += len(found)
    return done
