"""The SQLite catalog: VMs, recovery points, stored files with compact chunk maps, chunks, packs.

Schema (version in ``PRAGMA user_version``; ``migrate`` brings any older catalog forward):

- ``meta(key, value)``: ``epoch`` — bumped by every gc that retires packs (see gc.py);
  ``repository`` — the config's ``id`` (v3; tells a cache which repository it holds).
- ``vms(id, name)``.
- ``packs(id, name, size, chunk_count, created, retired_epoch)``: one row per pack object.
  ``retired_epoch`` NULL = live; otherwise no chunk points into it since that epoch and the
  object is deleted once no reader registered before that epoch is alive ("pending delete").
- ``chunks(id, hash, pack_id, offset, csize, usize, codec)``: one row per stored chunk;
  ``hash`` is UNIQUE (B-tree: lookup by hash is O(log n)); ``offset`` is the payload offset
  in the pack. Ids come from AUTOINCREMENT and are never reused; id 0 means "all zeros".
  ``frames`` (added in place, see ``add_columns``): a framed chunk's head and frame table,
  the bytes its payload starts with (frames.py), so a small read of a chunk not read before
  is one read of its frames (the copy is checked like the pack's: table digest or AEAD,
  bound to the chunk id). NULL for unframed chunks, chunks stored by an rpfs without the
  column and rows imported from objects: the read takes the table from the pack, and
  ``rpfs repair`` fills them in.
- ``recovery_points(id, vm_id, name, time, logical_size, stored_size, file_count,
  new_chunks, chunk_size, created)``: ``name`` is the UTC time ``YYYY-MM-DDTHHMMSSZ``,
  unique per VM; ``stored_size`` = compressed bytes of chunks this RP added.
- ``files(id, rp_id, path, size, chunk_map, mtime_ns, ctime_ns, inode, dev)``: one row per
  stored file per RP; ``chunk_map`` is the file's chunk ids in order, encoded by
  ``encode_map`` (not one row per chunk); the last four (v2) identify the source file as it
  was stat'ed before reading (NULL before v2); ``map_object`` (v3) names the repository
  object ``maps/<name>`` holding the same map as chunk ids (NULL: none written, e.g. a file
  stored before v3; ``rpfs repair`` writes the missing ones).

A recovery point is its ``recovery_points`` row plus ``files`` rows, inserted in one
transaction after every pack they reference is durable and its objects are written
(objects.py): the catalog can always be rebuilt from the repository (rebuild.py).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import time
from array import array
from itertools import accumulate

from streams.errors import FormatError
import rpfs.store.zstd as zstd

CATALOG_NAME = "catalog.sqlite"
# the ``packs`` row of chunks a rebuild found named by a chunk map but in no pack: reading
# them fails (the pack does not exist), verify names their files, and a backup that meets
# the same data again points the row at its new pack, which heals every file that uses it
LOST_PACK = "0" * 32
SCHEMA_VERSION = 3


def path_in(directory: str) -> str:
    """The catalog of a repository (or s3:// cache) directory."""
    return os.path.join(directory, CATALOG_NAME)


def exists(path: str) -> bool:
    return os.path.exists(path)


def _run(db: sqlite3.Connection, script: str) -> None:
    """Statements one by one (executescript would commit the migration's transaction)."""
    for stmt in script.split(";"):
        if stmt.strip():
            db.execute(stmt)


def _v1(db: sqlite3.Connection) -> None:
    _run(db, """
        CREATE TABLE meta (key TEXT PRIMARY KEY, value);
        INSERT INTO meta VALUES ('epoch', 1);
        CREATE TABLE vms (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
        CREATE TABLE packs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            name TEXT NOT NULL UNIQUE,
            size INTEGER NOT NULL,
            chunk_count INTEGER NOT NULL,
            created REAL NOT NULL,
            retired_epoch INTEGER);
        CREATE TABLE chunks (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            hash BLOB NOT NULL UNIQUE,
            pack_id INTEGER NOT NULL REFERENCES packs(id),
            offset INTEGER NOT NULL,
            csize INTEGER NOT NULL,
            usize INTEGER NOT NULL,
            codec INTEGER NOT NULL);
        CREATE INDEX chunks_pack ON chunks(pack_id);
        CREATE TABLE recovery_points (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            vm_id INTEGER NOT NULL REFERENCES vms(id),
            name TEXT NOT NULL,
            time INTEGER NOT NULL,
            logical_size INTEGER NOT NULL,
            stored_size INTEGER NOT NULL,
            file_count INTEGER NOT NULL,
            new_chunks INTEGER NOT NULL,
            chunk_size INTEGER NOT NULL,
            created REAL NOT NULL,
            UNIQUE (vm_id, name));
        CREATE TABLE files (
            id INTEGER PRIMARY KEY,
            rp_id INTEGER NOT NULL REFERENCES recovery_points(id) ON DELETE CASCADE,
            path TEXT NOT NULL,
            size INTEGER NOT NULL,
            chunk_map BLOB NOT NULL,
            UNIQUE (rp_id, path));
    """)


def _v2(db: sqlite3.Connection) -> None:
    """The source file's identity when it was read (size is already there), so the next
    backup can reuse the map of a file whose size, mtime, ctime, inode and device are all
    unchanged without reading it. NULL for files stored before v2 (never skipped)."""
    _run(db, """
        ALTER TABLE files ADD COLUMN mtime_ns INTEGER;
        ALTER TABLE files ADD COLUMN ctime_ns INTEGER;
        ALTER TABLE files ADD COLUMN inode INTEGER;
        ALTER TABLE files ADD COLUMN dev INTEGER
    """)


def _v3(db: sqlite3.Connection) -> None:
    """The chunk map's repository object, so gc knows which ``maps/`` objects are live and an
    unchanged file reuses its map object without rebuilding it."""
    _run(db, "ALTER TABLE files ADD COLUMN map_object TEXT")


MIGRATIONS = {1: _v1, 2: _v2, 3: _v3}  # version n: function bringing version n-1 to n

# Columns an older rpfs can ignore are added in place, without a new version: a version it
# does not know makes an older rpfs refuse the whole catalog (a shared repository, a cache).
# chunks.frames: a framed chunk's frame table beside its location (a cold small read is one
# read of its frames, not two).
EXTRA_COLUMNS = {"chunks": {"frames": "BLOB"}}


def add_columns(db: sqlite3.Connection) -> None:
    """Add the ``EXTRA_COLUMNS`` a catalog lacks (a read-only catalog is left as it is: its
    readers do without them)."""
    for table, cols in EXTRA_COLUMNS.items():
        if not set(cols) - columns(db, table):
            continue
        try:
            with transaction(db):
                for name in sorted(set(cols) - columns(db, table)):   # again, under the lock
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {cols[name]}")
        except sqlite3.OperationalError as e:
            if "readonly" not in str(e):
                raise


def columns(db: sqlite3.Connection, table: str) -> set[str]:
    return {r[1] for r in db.execute(f"PRAGMA table_info({table})")}


@contextlib.contextmanager
def transaction(db: sqlite3.Connection):
    """The one way to write: ``BEGIN IMMEDIATE`` (the write lock up front, so no deadlock
    between two upgrading readers), COMMIT on success, ROLLBACK on any exception (a failed
    COMMIT included) unless SQLite has already rolled back itself (SQLITE_FULL, IOERR)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


@contextlib.contextmanager
def page_cache(db: sqlite3.Connection, mib: int):
    """A larger page cache for one bulk write (SQLite's default is 2 MiB; pages are
    allocated only as they are used, so a small catalog costs no more)."""
    before = db.execute("PRAGMA cache_size").fetchone()[0]
    db.execute(f"PRAGMA cache_size = {-1024 * int(mib)}")
    try:
        yield db
    finally:
        db.execute(f"PRAGMA cache_size = {int(before)}")


def migrate(db: sqlite3.Connection, source: str = CATALOG_NAME) -> int:
    """Apply every missing migration, each in its own transaction. Returns the version."""
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise FormatError(f"catalog schema {version} is newer than this rpfs ({SCHEMA_VERSION})",
                          source=source, structure="catalog")
    while version < SCHEMA_VERSION:
        version += 1
        with transaction(db):
            MIGRATIONS[version](db)
            db.execute(f"PRAGMA user_version = {version}")
    return version


def connect(path: str, *, write: bool = False) -> sqlite3.Connection:
    """Autocommit connection (explicit BEGIN for writes): every read is its own short txn."""
    db = sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)
    db.execute("PRAGMA busy_timeout = 60000")
    db.execute("PRAGMA foreign_keys = ON")
    if write:
        db.execute("PRAGMA synchronous = FULL")   # WAL + FULL: a commit survives power loss
    else:
        db.execute("PRAGMA query_only = 1")
    return db


def create(path: str, repository_id: str = "") -> None:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise FormatError(f"cannot enable WAL (got {mode})", source=path, structure="catalog")
        migrate(db, path)
        add_columns(db)
        with transaction(db):
            db.execute("INSERT OR REPLACE INTO meta VALUES ('repository', ?)", (repository_id,))
    finally:
        db.close()


def check(path: str) -> None:
    """Readable, and at this schema version (older ones are migrated in place)."""
    checked(path).close()


def checked(path: str) -> sqlite3.Connection:
    """A reading connection (``connect``) to a catalog that is readable and at this schema
    version: an older one is first migrated in place through a writing connection of its
    own. Opening a repository keeps it as its opening thread's connection, so the catalog
    is opened once (a second connection, closed before the first reader's, removed and made
    again the -wal and -shm files on every open)."""
    try:
        db = connect(path)
        try:
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION \
                    or any(set(cols) - columns(db, table) for table, cols in EXTRA_COLUMNS.items()):
                w = sqlite3.connect(path, isolation_level=None, timeout=60)
                try:
                    if w.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                        migrate(w, path)
                    add_columns(w)
                finally:
                    w.close()
        except BaseException:
            db.close()
            raise
        return db
    except sqlite3.DatabaseError as e:
        st = os.statvfs(os.path.dirname(path) or ".")  # "disk I/O error" when -shm cannot grow
        if st.f_bavail == 0 or st.f_favail == 0:
            raise OSError(errno.ENOSPC, f"No space left on device (catalog: {e})", path) from None
        raise FormatError(f"catalog unreadable: {e} (rpfs repair rebuilds it)", source=path,
                          structure="catalog") from None


def repository_id(path: str) -> str | None:
    """The repository a catalog belongs to (None: unreadable, or written before v3)."""
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, timeout=60)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'repository'").fetchone()
        finally:
            db.close()
    except sqlite3.DatabaseError:
        return None
    return row[0] if row else None


def remove(path: str) -> None:
    """Delete a catalog that is only a cache (s3://: the bucket holds the truth)."""
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(path + suffix)
        except FileNotFoundError:
            pass


def discard(path: str) -> str:
    """Move a catalog (and its WAL) aside, never deleting it; returns the new name."""
    aside = f"{path}.old-{time.strftime('%Y%m%dT%H%M%S')}"
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.replace(path + suffix, aside + suffix)
    return aside


# --- chunk maps -------------------------------------------------------------------------
# "M1" + zstd(little-endian int64 deltas of the id sequence). New chunks get consecutive ids
# and unchanged files repeat the same ids, so a 100 GiB disk's map of 102400 ids shrinks
# from 800 KiB to a few KiB.

_MAP_MAGIC = b"M1"


def encode_map(ids) -> bytes:
    a = array("q", ids)
    if not a:
        return _MAP_MAGIC
    d = array("q", [a[0]])
    d.extend(a[i] - a[i - 1] for i in range(1, len(a)))
    if d.itemsize != 8:
        raise RuntimeError("int64 arrays required")
    if array("q", [1]).tobytes()[0] != 1:
        d.byteswap()
    import zstandard   # here: reading a map needs only rpfs.store.zstd

    return _MAP_MAGIC + zstandard.ZstdCompressor(level=3).compress(d.tobytes())


def decode_map(blob: bytes, count: int, source: str = "chunk map") -> array:
    """The ``count`` chunk ids of a file; a damaged blob raises FormatError."""
    if not isinstance(blob, (bytes, bytearray)) or blob[:2] != _MAP_MAGIC:
        raise FormatError("bad chunk map header", source=source, structure="chunk map", offset=0)
    if count == 0:
        if len(blob) != 2:
            raise FormatError("chunk map not empty", source=source, structure="chunk map", offset=0)
        return array("q")
    need = count * 8
    body = memoryview(blob)[2:]
    try:
        declared = zstd.content_size(body)
        if declared == need:   # ours declare it: one allocation of the size asked for
            data = zstd.decompress(body, need)
        elif declared == -1:   # streamed in bounded pieces: a hostile size cannot make us
            data = _map_streamed(body, need)   # allocate more than the blob decompresses to
        else:
            data = b""
    except zstd.Error as e:
        raise FormatError(f"chunk map undecodable: {e}", source=source, structure="chunk map",
                          offset=2) from None
    if len(data) != need:
        raise FormatError(f"chunk map does not hold {count} entries", source=source,
                          structure="chunk map", offset=2)
    d = array("q")
    d.frombytes(data)
    if array("q", [1]).tobytes()[0] != 1:
        d.byteswap()
    try:
        ids = array("q", accumulate(d))
    except OverflowError:
        raise FormatError("chunk id out of range", source=source, structure="chunk map",
                          offset=2) from None
    if min(ids) < 0:
        raise FormatError("negative chunk id", source=source, structure="chunk map", offset=2)
    return ids


def _map_streamed(body, need: int) -> bytes:
    """A map frame that does not declare its size: up to ``need + 1`` bytes of it, read in
    pieces of at most 8 MiB (the zstandard package's stream reader)."""
    import zstandard

    parts, got = [], 0
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(bytes(body))
        while got <= need:
            piece = reader.read(min(8 << 20, need + 1 - got))
            if not piece:
                break
            parts.append(piece)
            got += len(piece)
    except zstandard.ZstdError as e:
        raise zstd.Error(str(e)) from None
    return b"".join(parts)


def drop_recovery_points(db: sqlite3.Connection, rps, still=None) -> int:
    """Delete the rows of the recovery points ``rps`` (VM, name) and their files, in one
    transaction; returns how many there were. ``still``: asked inside the transaction
    (the write lock held), nothing is dropped unless it says True (the reason to drop them
    still holds: no recovery point of the same name can be committed meanwhile)."""
    find = ("SELECT r.id FROM recovery_points r JOIN vms v ON v.id = r.vm_id"
            " WHERE v.name = ? AND r.name = ?")
    if not any(db.execute(find, rp).fetchone() for rp in rps):
        return 0
    with transaction(db):
        ids = [row for row in (db.execute(find, rp).fetchone() for rp in rps) if row]
        if still is not None and not still():
            return 0
        db.executemany("DELETE FROM files WHERE rp_id = ?", ids)
        db.executemany("DELETE FROM recovery_points WHERE id = ?", ids)
    return len(ids)


def get_epoch(db: sqlite3.Connection) -> int:
    return int(db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()[0])
