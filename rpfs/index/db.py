"""The metadata index: ``index.sqlite`` beside the catalog (a cache: delete it and
``rpfs index`` rebuilds it from the recovery points).

Rows are shared by consecutive recovery points. Each VM's indexed recovery points get
ordinals (``rps.seq``) in time order; an entry row is present in every recovery point whose
ordinal lies in ``[first, last]`` and in which its volume was indexed (``volume_rps``);
``last = OPEN`` means "still present in the newest indexed one". Indexing the next
recovery point therefore writes only what changed: new rows, and ``last`` of the rows
that ended.

Schema (version in ``PRAGMA user_version``):

- ``rps(id, vm, name, time, catalog_id, seq)``: the indexed recovery points;
  ``catalog_id`` is the catalog's id (never reused), so a recovery point pruned and made
  again under the same name is not mistaken for the old one.
- ``volumes(id, vm, name, state_seq)``: one NTFS volume (``<disk>-p<N>``) of a VM, across
  time; ``state_seq``: the ordinal whose state the open rows describe (it stays when that
  recovery point is pruned).
- ``volume_rps(volume_id, seq, rp_id, entries, orphans)``: the volume was indexed in that
  recovery point (``entries``: how many rows it holds there; ``orphans``: at most how many
  records in use had no path — a damaged or unreachable parent — and so no row: when a
  directory appears later, their rows may have to appear too, which build.py does by
  reading every record of that recovery point's volume).
- ``dirs(id, path, fold)``: distinct directory paths inside volumes ('' is the root);
  ``fold`` is the lower-case path (case-insensitive lookups, like Windows).
- ``names(id, name, fold)`` and ``names_fts`` (FTS5 trigram over ``name``): distinct file
  names, searched by substring before a glob or regex is applied to the candidates.
- ``entries(id, volume_id, first, last, dir_id, name_id, ref, rseq, parent, kind, size,
  allocated, created, modified, changed, accessed, attributes, reparse_tag, ads,
  fingerprint)``: one row per name (hard links: one per link) per run of recovery points in
  which nothing about it changed. Times are NT ticks; ``ads`` is ``name:size`` joined by
  ``/``; ``fingerprint`` 16 bytes over the data attributes (scan.py).
- ``blocks(volume_id, block, first, last, hash, token)``: the hash of each 16 KiB block of
  ``$MFT`` and, where the layers below can tell (provenance.py), a hash of the stored
  chunks it comes from, with the same interval rule: the next recovery point does not
  read a block whose token is unchanged, and parses only records of blocks whose hash
  differs.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3

from streams.errors import FormatError
from rpfs.index.place import INDEX_NAME, index_path  # noqa: F401  (where it lives)

LOCK_NAME = "index.lock"
PENDING_DIR = "index.pending"   # one file per recovery point (catalog id) whose index waits
SCHEMA_VERSION = 1
OPEN = 1 << 62

SCHEMA = """
CREATE TABLE IF NOT EXISTS rps (
    id INTEGER PRIMARY KEY, vm TEXT NOT NULL, name TEXT NOT NULL, time INTEGER NOT NULL,
    catalog_id INTEGER NOT NULL UNIQUE, seq INTEGER NOT NULL, UNIQUE (vm, seq));
CREATE TABLE IF NOT EXISTS volumes (
    id INTEGER PRIMARY KEY, vm TEXT NOT NULL, name TEXT NOT NULL, state_seq INTEGER,
    UNIQUE (vm, name));
CREATE TABLE IF NOT EXISTS volume_rps (
    volume_id INTEGER NOT NULL, seq INTEGER NOT NULL, rp_id INTEGER NOT NULL,
    entries INTEGER NOT NULL, orphans INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (volume_id, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dirs (id INTEGER PRIMARY KEY, path TEXT NOT NULL UNIQUE,
    fold TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS names (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,
    fold TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS names_fts USING fts5 (
    name, content='names', content_rowid='id', tokenize='trigram');
CREATE TABLE IF NOT EXISTS entries (
    id INTEGER PRIMARY KEY, volume_id INTEGER NOT NULL, first INTEGER NOT NULL,
    last INTEGER NOT NULL, dir_id INTEGER NOT NULL, name_id INTEGER NOT NULL,
    ref INTEGER NOT NULL, rseq INTEGER NOT NULL, parent INTEGER NOT NULL,
    kind TEXT NOT NULL, size INTEGER NOT NULL, allocated INTEGER NOT NULL,
    created INTEGER NOT NULL, modified INTEGER NOT NULL, changed INTEGER NOT NULL,
    accessed INTEGER NOT NULL, attributes INTEGER NOT NULL, reparse_tag INTEGER NOT NULL,
    ads TEXT, fingerprint BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS blocks (
    volume_id INTEGER NOT NULL, block INTEGER NOT NULL, first INTEGER NOT NULL,
    last INTEGER NOT NULL, hash BLOB NOT NULL, token BLOB,
    PRIMARY KEY (volume_id, block, first)) WITHOUT ROWID;
"""

# The secondary indexes, apart from SCHEMA: a first indexing drops them and creates them
# after its rows are in (bulk_load), which costs a third of what updating them per row does.
INDEXES = {
    "dirs_fold": "CREATE INDEX IF NOT EXISTS dirs_fold ON dirs (fold)",
    "names_fold": "CREATE INDEX IF NOT EXISTS names_fold ON names (fold)",
    "entries_name": "CREATE INDEX IF NOT EXISTS entries_name ON entries (name_id)",
    "entries_dir": "CREATE INDEX IF NOT EXISTS entries_dir ON entries (dir_id, name_id)",
    "entries_ref": "CREATE INDEX IF NOT EXISTS entries_ref ON entries (volume_id, ref, last)",
}


def bulk_load(db) -> bool:
    """Inside the transaction of a first indexing (no entry rows yet): drop the secondary
    indexes, to be made by ``create_indexes`` before that transaction commits (a rollback
    brings them back). False (nothing dropped) if the index already holds entries."""
    if db.execute("SELECT 1 FROM entries LIMIT 1").fetchone() is not None:
        return False
    for name in INDEXES:
        db.execute(f"DROP INDEX IF EXISTS {name}")
    return True


def create_indexes(db) -> None:
    for stmt in INDEXES.values():
        db.execute(stmt)


# Names may hold surrogate escapes (ntfs_reader.names: unpaired surrogates, '/' and NUL),
# which SQLite text cannot: they are stored as U+E000 followed by U+E100 + the escaped byte,
# and U+E000 itself as U+E000 U+E000, so every name maps to one text and back.
_ESC = "\ue000"


def to_text(s: str) -> str:
    """A Linux name or path -> what the index stores (the same unless it needs escaping)."""
    try:
        s.encode("utf-8")
        if _ESC not in s:
            return s
    except UnicodeEncodeError:
        pass
    out = []
    for c in s:
        if c == _ESC:
            out.append(_ESC + _ESC)
        elif "\udc80" <= c <= "\udcff":
            out.append(_ESC + chr(0xE100 + ord(c) - 0xDC80 + 0x80))
        else:
            out.append(c)
    return "".join(out)


def from_text(t: str) -> str:
    """The inverse of ``to_text``."""
    if _ESC not in t:
        return t
    out, i = [], 0
    while i < len(t):
        c = t[i]
        if c == _ESC and i + 1 < len(t):
            n = t[i + 1]
            out.append(_ESC if n == _ESC else chr(0xDC80 + ord(n) - 0xE100 - 0x80))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def pending_dir(repo) -> str:
    """Where the marks of deferred indexes live (background.py makes and reads them)."""
    return os.path.join(os.path.dirname(repo.catalog_path), PENDING_DIR)


def clear_pending(repo, rp_id: int) -> None:
    """Recovery point ``rp_id``'s index is committed (build.py, after each one)."""
    try:
        os.unlink(os.path.join(pending_dir(repo), str(int(rp_id))))
    except FileNotFoundError:
        pass


def connect(path: str, *, write: bool = False) -> sqlite3.Connection | None:
    """A connection to the index (None if there is none and ``write`` is false)."""
    if not write and not os.path.exists(path):
        return None
    if write and not os.path.exists(path):  # private like the catalog (its -wal/-shm follow)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    try:
        db = sqlite3.connect(path, isolation_level=None, timeout=60, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 60000")
        if write:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")   # a cache: a lost commit is re-indexed
            db.execute("PRAGMA cache_size = -65536")    # 64 MiB: a first indexing's B-trees
            db.execute("PRAGMA temp_store = MEMORY")    # (CREATE INDEX sorts in memory)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise FormatError(f"index schema {version} is newer than this rpfs",
                                  source=path, structure="index")
            if version < SCHEMA_VERSION:
                db.execute("BEGIN IMMEDIATE")
                for stmt in SCHEMA.split(";"):
                    if stmt.strip():
                        db.execute(stmt)
                create_indexes(db)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                db.execute("COMMIT")
        else:
            if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                db.close()
                return None
            db.execute("PRAGMA query_only = 1")
        return db
    except sqlite3.DatabaseError as e:
        raise FormatError(f"index unreadable: {e}", source=path, structure="index") from None


class WriteLock:
    """One indexer at a time per repository (an flock on ``index.lock``)."""

    def __init__(self, directory: str):
        self.path = os.path.join(directory, LOCK_NAME)
        self.fd = None

    def __enter__(self):
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        os.close(self.fd)
        self.fd = None

    def held(self) -> bool:
        """Does another process hold the lock now? (A probe: takes and drops it if free.)"""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False
