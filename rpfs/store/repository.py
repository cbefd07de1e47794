"""``Repository``: reads and writes a repository's objects, packs and catalog (the store's
middle layer; docs/architecture.md "Store").

Everything that differs between a directory and s3:// is the ``Backend``'s (backend.py,
s3.py); catalog maintenance (sync, following a gc elsewhere, gc, repair, prune, verify) is
the maintenance layer's (maintenance/), which uses this module and is never imported by it:
it serves a repository through the callbacks of ``StoreOptions`` (a missing pack met during
a read, an s3:// catalog cache brought up to date at open).

Readers never block writers: each thread reads through its own autocommit connection (WAL,
short read transactions). A reader registers with the backend, carrying the catalog epoch it
started at; gc deletes a retired pack only once no live reader is older than the pack's
retirement (docs/store.md "Readers and gc"). Backups hold the repository lock shared, prune,
gc and repair exclusive (``lock``).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import weakref
from datetime import datetime, timezone
from collections.abc import Iterator

from streams.errors import FormatError, IntegrityError, NotFoundError, UsageError
import rpfs.store.catalog as catalog
from rpfs.store.backend import Backend, LocalBackend, PackMissing, private_files
from rpfs.store.cache import ChunkCache
from rpfs.store.config import Config
from rpfs.store.crypto import KEY_OBJECT, Plain, new_key_file, open_key_file
from rpfs.store.locks import Registration, RepositoryBusy  # noqa: F401  (RepositoryBusy: for callers)
from rpfs.store.options import StoreOptions, is_s3
import rpfs.store.frames as frames
from rpfs.store.packs import FRAMED, decompress
from rpfs.store.readahead import ChunkLoader, ReadAhead
from streams.lru import LRU
from streams.record import Value
from streams.stream import DATA, ZERO, Extent, Stream, merge_extents

TABLE_ROWS = 256  # catalog rows of frame tables fetched at once (neighbouring chunk ids)
PART_OF = 16     # a read of at most 1/PART_OF of a framed chunk (64 KiB of 1 MiB) decodes only its frames


class RecoveryPointRecord(Value):
    """A recovery point's row in the catalog (what it is called and counts); what it
    contains, parsed, is ``rpfs.tree.RecoveryPoint``."""

    __slots__ = _fields = ("vm", "name", "time", "logical_size", "stored_size", "file_count",
                           "id", "new_chunks")

    def __init__(self, vm: str, name: str, time: datetime, logical_size: int, stored_size: int,
                 file_count: int, id: int, new_chunks: int = 0):
        self.vm = vm
        self.name = name                  # UTC time YYYY-MM-DDTHHMMSSZ
        self.time = time                  # aware, UTC
        self.logical_size = logical_size  # sum of file sizes
        self.stored_size = stored_size    # compressed bytes of chunks this RP added
        self.file_count = file_count
        self.id = id
        self.new_chunks = new_chunks


class ChunkLoc(Value):
    """Where a chunk's stored bytes are: pack, offset, length."""

    __slots__ = _fields = ("pack", "offset", "csize", "usize", "codec", "hash", "id")

    def __init__(self, pack: str, offset: int, csize: int, usize: int, codec: int, hash: bytes,
                 id: int = 0):
        self.pack = pack
        self.offset = offset
        self.csize = csize
        self.usize = usize
        self.codec = codec
        self.hash = hash
        self.id = id      # the catalog row (0: not known), where a framed chunk's table is kept


def open_backend(address: str, options: StoreOptions, *, cache: bool = True) -> Backend:
    """The backend of ``address``: ``s3://BUCKET/PREFIX`` or a directory."""
    if is_s3(address):
        from rpfs.store.s3 import S3Backend
        return S3Backend(address, options, cache=cache)
    return LocalBackend(address)


def _passphrase(options: StoreOptions, where: str, new: bool = False) -> str:
    if options.passphrase is None:
        raise UsageError(f"{where} is encrypted: no passphrase given (the CLI takes it from"
                         " RPFS_PASSWORD, RPFS_PASSWORD_FILE or the terminal)")
    return options.passphrase(where, new)


def load_crypto(backend: Backend, cfg: Config, where: str, options: StoreOptions) -> Plain:
    if cfg.encryption == "none":
        return Plain()
    raw = backend.get_object(KEY_OBJECT)
    if raw is None:
        raise FormatError("encrypted, but its key file is missing", source=where, structure="repository")
    return open_key_file(raw, _passphrase(options, where), where)


def address_of(address) -> str:
    """As the repository is named: s3:// as given, a directory as an absolute path."""
    address = str(address)
    return address if is_s3(address) else os.path.abspath(address)


class Repository:
    """A repository at ``address``: a directory, or ``s3://BUCKET/PREFIX`` whose catalog,
    lock files, reader registrations and block cache live in a local cache directory."""

    def __init__(self, address: str, config: Config, backend: Backend, crypto: Plain,
                 options: StoreOptions, *, register: bool = True,
                 db: sqlite3.Connection | None = None):
        """``db``: a reading connection to the catalog already open (``catalog.checked``),
        kept as this thread's."""
        self.path = address        # as the user names it (absolute for a directory)
        self.backend = backend
        self.local = backend.local
        self.remote = backend.catalog_is_cache    # the catalog is a cache of the objects
        self.options = options
        self.config = config
        self.chunk_size = config.chunk_size
        self.crypto = crypto
        cache = config.cache_mb << 20 if options.chunk_cache_bytes is None else options.chunk_cache_bytes
        self.cache = ChunkCache(max(0, cache), options.chunk_cache_grow_to)
        self.loader = ChunkLoader(self.load_chunk, self.cache)   # single-flight + read-ahead
        # decoded chunks in huge-page slabs (store/slabs.py): a reader that keeps them all (restore)
        self.chunk_memory = None
        if options.huge_chunks:
            from rpfs.store.slabs import Slabs   # here: mmap is loaded by restore alone
            self.chunk_memory = Slabs()
        self.tables: LRU = LRU(1024)     # chunk id -> FrameTable (~2.8 KB each) of chunks read in part
        self.frames_decoded = 0          # frames a part read decompressed (counted for tests)
        self._frames_column: bool | None = None   # False: the catalog has no chunks.frames
        # chunk id -> (hash, offset, pack, stored table) of catalog rows, ~0.8 KB each
        self.catalog_tables: LRU = LRU(4 * TABLE_ROWS)
        self.catalog_path = catalog.path_in(self.local)
        self._tls = threading.local()
        # holders, not connections (those cannot be weakly referenced): a worker thread that
        # exits drops its holder, which closes its connection, so a mount served by
        # short-lived threads does not collect open connections for days
        self._conns: "weakref.WeakSet[_Conn]" = weakref.WeakSet()
        self._conns_lock = threading.Lock()
        if db is not None:
            self._tls.db = h = _Conn(db)
            self._conns.add(h)
        self._writer: sqlite3.Connection | None = None
        self._register = register
        self._reg: Registration | None = None          # the newest registration
        self._regs: "weakref.WeakSet[Registration]" = weakref.WeakSet()
        self._reg_lock = threading.Lock()
        self.epoch = 0
        self._holds: set[str] = set()    # vm/rp of the files opened (told to other machines)
        self.closed = False
        if register:
            self._register_reader()

    # --- lifecycle ---------------------------------------------------------------------
    @classmethod
    def init(cls, address: str, options: StoreOptions | None = None, *, encrypt: bool | None = None,
             cache_dir: str | None = None, endpoint: str | None = None, **settings) -> "Repository":
        """A new, empty repository. ``encrypt`` defaults to on for s3://, off for a directory;
        the passphrase comes from ``options.passphrase``."""
        options = _options(options, cache_dir, endpoint)
        cfg = Config.from_kwargs(**settings)
        address = address_of(address)
        cfg.id = os.urandom(16).hex()
        crypto: Plain = Plain()
        key_file = None
        if encrypt is None:
            encrypt = is_s3(address)
        if encrypt:
            cfg.encryption = "aes-256-gcm"
            key_file, crypto = new_key_file(_passphrase(options, address, new=True))
        backend = open_backend(address, options, cache=False)
        try:
            backend.create(cfg.dumps().encode(), key_file)
        finally:
            backend.close()
        if not backend.catalog_is_cache:
            with private_files():
                catalog.create(catalog.path_in(backend.local), cfg.id)
        return cls.open(address, options, _crypto=crypto)

    @classmethod
    def open(cls, address: str, options: StoreOptions | None = None, *, register: bool = True,
             cache_dir: str | None = None, endpoint: str | None = None,
             _crypto: Plain | None = None) -> "Repository":
        """Open a repository. For s3:// the local catalog is a cache: created when missing,
        and brought up to date by ``options.catch_up`` when given (the maintenance layer's
        ``open_repository`` gives it)."""
        options = _options(options, cache_dir, endpoint)
        address = address_of(address)
        backend = open_backend(address, options)
        try:
            backend.check_permissions()
            where = f"{address}/config" if backend.catalog_is_cache else address
            cfg = Config.loads(backend.read_config(), where)
            crypto = _crypto or load_crypto(backend, cfg, address, options)
            cat = catalog.path_in(backend.local)
            if backend.catalog_is_cache:
                if catalog.exists(cat) and catalog.repository_id(cat) != cfg.id:
                    catalog.remove(cat)    # a cache of another repository (or a damaged one)
                if not catalog.exists(cat):
                    catalog.create(cat, cfg.id)
            elif not catalog.exists(cat):
                raise FormatError("catalog.sqlite is missing (rpfs repair rebuilds it)", source=address,
                                  structure="repository")
            db = catalog.checked(cat)
        except BaseException:
            backend.close()
            raise
        repo = cls(address, cfg, backend, crypto, options, register=register, db=db)
        if not backend.catalog_is_cache:
            try:
                repo._apply_forgets()
            except BaseException:
                repo.close()
                raise
        if options.catch_up is not None and backend.catalog_is_cache:
            try:
                options.catch_up(repo)
            except BaseException:
                repo.close()
                raise
        return repo

    def _apply_forgets(self) -> None:
        """A directory's catalog without the recovery points a prune has decided to forget
        (``forget/`` objects, maintenance/forget.py), before anything is listed: a prune
        killed after its decision and before its catalog commit left their rows, and what
        anyone sees must be all it forgot or nothing. One listing of a directory that is
        absent or empty but for that moment. (An s3:// cache does the same in its catch-up.)"""
        names = list(self.backend.list_objects("forget"))   # objects.FORGET
        if not names:
            return
        import rpfs.store.objects as objects   # here: it loads zstandard, which a mount does without
        try:
            with self.catalog_mutex():
                for name in names:
                    try:
                        rps = objects.get_forget(self, name)
                    except (FormatError, IntegrityError, OSError):
                        continue   # unreadable: what it names stays (verify names it)
                    key = f"{objects.FORGET}/{name}"
                    catalog.drop_recovery_points(self.writer, rps or (),
                                                 still=lambda k=key: self.backend.get_object(k) is not None)
        except (sqlite3.OperationalError, OSError):
            pass   # a catalog this user cannot write (or a full disk): listed until a writer comes
        finally:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

    @staticmethod
    def is_encrypted(address: str, options: StoreOptions | None = None) -> bool:
        """Whether opening ``address`` will need a passphrase (False: not a repository)."""
        options = options or StoreOptions()
        try:
            backend = open_backend(address_of(address), options, cache=False)
            try:
                raw = backend.read_config()
            finally:
                backend.close()
            return Config.loads(raw, str(address)).encryption != "none"
        except (FormatError, NotFoundError, OSError):
            return False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        with self._conns_lock:
            for h in list(self._conns):
                h.close()
            self._conns.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self.loader.close()
        self.backend.close()
        for reg in list(self._regs):
            reg.close()
        self._reg = None

    def __enter__(self) -> "Repository":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Repository {self.path}>"

    # --- connections -------------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        """This thread's read-only connection (autocommit: each statement a short txn)."""
        h = getattr(self._tls, "db", None)
        if h is None or h.conn is None:
            if self.closed:
                raise UsageError(f"repository {self.path} is closed")
            h = _Conn(catalog.connect(self.catalog_path))
            self._tls.db = h
            with self._conns_lock:
                self._conns.add(h)
        return h.conn

    def query(self, sql: str, args=()) -> list:
        try:
            return self.db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as e:
            raise FormatError(f"catalog: {e}", source=self.catalog_path, structure="catalog") from None

    @property
    def writer(self) -> sqlite3.Connection:
        """The writer's connection; only use while holding ``writer_lock``."""
        if self._writer is None:
            self._writer = catalog.connect(self.catalog_path, write=True)
        return self._writer

    @contextlib.contextmanager
    def lock(self, what: str, *, exclusive: bool, wait: bool = False) -> Iterator[None]:
        """The repository lock: shared (``exclusive=False``) for backups, any number at once
        on any machine; exclusive for prune, gc and repair. RepositoryBusy in one line when
        taken the other way, unless ``wait``. The exclusive holder first removes what killed
        writers left in staging (nobody else can be writing)."""
        with self.backend.lock(what, exclusive=exclusive, wait=wait, name=self.path):
            if exclusive:
                self.backend.clean_staging()
            with private_files():
                yield

    def writer_lock(self, what: str = "writer", *, wait: bool = False):
        """The exclusive lock (prune, gc, repair)."""
        return self.lock(what, exclusive=True, wait=wait)

    def catalog_mutex(self):
        """One catalog catch-up at a time among the processes sharing this catalog."""
        return self.backend.catalog_mutex()

    # --- reader registration -----------------------------------------------------------
    def _current_epoch(self) -> int:
        rows = self.query("SELECT value FROM meta WHERE key = 'epoch'")
        if not rows or not isinstance(rows[0][0], int):
            raise FormatError("no epoch in meta", source=self.catalog_path, structure="catalog")
        return rows[0][0]

    def _register_reader(self) -> None:
        epoch = self._current_epoch()
        reg = self.backend.register_reader(epoch)
        if reg is not None:
            self._reg = reg
            self._regs.add(reg)
        self.epoch = epoch

    def _registration_for_open(self) -> "Registration | None":
        """Before resolving locations: if a gc retired packs since we registered, register
        anew at the current epoch. Files opened earlier keep the old registration alive; when
        the last of them is gone it is released, so a long-lived mount does not pin packs."""
        if not self._register:
            return None
        with self._reg_lock:
            if self._reg is not None and self._current_epoch() > self._reg.epoch:
                self._register_reader()
            return self._reg

    def _hold(self, rp: RecoveryPointRecord) -> None:
        """Readers on other machines are not in our reader registrations, so the recovery
        points this process reads are told to the backend, and a prune on any machine keeps
        them while we live (``Backend.hold``; a no-op for a directory)."""
        name = f"{rp.vm}/{rp.name}"
        if not self._register or not self.remote or name in self._holds:
            return
        with self._reg_lock:
            if name not in self._holds:
                self._holds.add(name)
                self.backend.hold(sorted(self._holds))

    @property
    def reader_files(self) -> set[str]:
        return {r.name for r in list(self._regs) if r.fd is not None}

    def live_reader_epochs(self) -> list[int]:
        """Epochs of readers still alive (ours excluded); stale registrations are removed."""
        return self.backend.live_reader_epochs(self.reader_files)

    # --- browsing ----------------------------------------------------------------------
    def vms(self) -> list[str]:
        return [r[0] for r in self.query(
            "SELECT name FROM vms WHERE id IN (SELECT vm_id FROM recovery_points) ORDER BY name")]

    _RP_SQL = ("SELECT v.name, r.name, r.time, r.logical_size, r.stored_size, r.file_count, r.id,"
               " r.new_chunks FROM recovery_points r JOIN vms v ON v.id = r.vm_id")

    @staticmethod
    def record(row) -> RecoveryPointRecord:
        """The record of a row of ``recovery_point_rows``."""
        return RecoveryPointRecord(row[0], row[1], datetime.fromtimestamp(row[2], timezone.utc),
                                   row[3], row[4], row[5], row[6], row[7])

    def recovery_point_rows(self, vm: str) -> list[tuple]:
        """What ``recovery_points(vm)`` makes its records of, oldest first: rows ``(vm, name,
        time in Unix seconds, ...)`` for ``record(row)``. A VM directory keeps these and
        makes a record only for a recovery point it opens. Unknown VM: NotFoundError."""
        rows = self.query(self._RP_SQL + " WHERE v.name = ? ORDER BY r.time, r.name", (vm,))
        if not rows:
            raise NotFoundError(f"{self.path}: no VM named {vm!r}")
        return rows

    def newest_recovery_point_row(self, vm: str) -> tuple | None:
        """The row of ``recovery_point_rows(vm)`` latest in time (of equal times the first
        by name, as ``max`` over them gives): one row read. None: no such VM."""
        rows = self.query(self._RP_SQL + " WHERE v.name = ? ORDER BY r.time DESC, r.name LIMIT 1",
                          (vm,))
        return rows[0] if rows else None

    def recovery_point_row(self, vm: str, name: str) -> tuple | None:
        """The row of ``recovery_point_rows(vm)`` named ``name``, or None."""
        rows = self.query(self._RP_SQL + " WHERE v.name = ? AND r.name = ?", (vm, name))
        return rows[0] if rows else None

    def recovery_points(self, vm: str) -> list[RecoveryPointRecord]:
        """Oldest first. Unknown VM: NotFoundError."""
        return [self.record(r) for r in self.recovery_point_rows(vm)]

    def recovery_point(self, vm: str, name: str) -> RecoveryPointRecord:
        rows = self.query(self._RP_SQL + " WHERE v.name = ? AND r.name = ?", (vm, name))
        if not rows:
            raise NotFoundError(f"{self.path}: VM {vm!r} has no recovery point {name}")
        return self.record(rows[0])

    def all_recovery_points(self) -> list[RecoveryPointRecord]:
        return [self.record(r) for r in self.query(self._RP_SQL + " ORDER BY v.name, r.time")]

    def files(self, rp: RecoveryPointRecord) -> dict[str, int]:
        rows = self.query("SELECT path, size FROM files WHERE rp_id = ? ORDER BY path", (rp.id,))
        if not rows and not self.query("SELECT 1 FROM recovery_points WHERE id = ?", (rp.id,)):
            raise NotFoundError(f"{self.path}: recovery point {rp.vm}/{rp.name} no longer exists")
        return {p: s for p, s in rows}

    def open_file(self, rp: RecoveryPointRecord, path: str) -> "ReadAhead":
        rows = self.query("SELECT f.size, f.chunk_map, r.chunk_size FROM files f JOIN recovery_points r"
                          " ON r.id = f.rp_id WHERE f.rp_id = ? AND f.path = ?", (rp.id, path))
        if not rows:
            raise NotFoundError(f"{rp.vm}/{rp.name}/files/{path}: no such stored file")
        size, blob, cs = rows[0]
        reg = self._registration_for_open()
        self._hold(rp)
        return ReadAhead(StoredFile(self, rp, path, size, cs, blob, reg), self.loader)

    # --- chunks ------------------------------------------------------------------------
    def resolve(self, ids) -> dict[int, ChunkLoc]:
        """Locations of the given chunk ids (ids absent from the catalog are left out)."""
        want = sorted({i for i in ids if i})
        out: dict[int, ChunkLoc] = {}
        names: dict[str, str] = {}      # one str object per pack, not per chunk
        for k in range(0, len(want), 500):
            part = want[k:k + 500]
            rows = self.query(
                "SELECT c.id, p.name, c.offset, c.csize, c.usize, c.codec, c.hash FROM chunks c"
                f" JOIN packs p ON p.id = c.pack_id WHERE c.id IN ({','.join('?' * len(part))})", part)
            for cid, pack, off, csize, usize, codec, h in rows:
                out[cid] = ChunkLoc(names.setdefault(pack, pack), off, csize, usize, codec, h, cid)
        return out

    def load_chunk(self, loc: ChunkLoc) -> bytes:
        """Decompressed, hash-checked chunk data (cached); raises IntegrityError (reason only)."""
        data = self.cache.get(loc.hash)
        if data is not None:
            return data
        data = self.fetch_chunk(loc)[1]
        self.cache.put(loc.hash, data)
        return data

    def fetch_chunk(self, loc: ChunkLoc, *, thorough: bool = False) -> tuple[bytes, bytes]:
        """The one way a chunk is read: (stored payload, data), the data decrypted,
        decompressed and checked against the chunk's id. A check that fails on a cached copy
        of the pack is retried once from the repository itself; a chunk whose pack is
        missing is handed to ``options.on_missing_pack`` (the maintenance layer follows a gc
        run on another machine), and read where it says the chunk is now. IntegrityError
        otherwise. ``thorough`` (verify): a framed chunk's frames are also checked one by
        one, as a small read checks them."""
        try:
            return self._fetch_chunk(loc, thorough)
        except PackMissing:
            found = self.options.on_missing_pack
            moved = found(self, loc) if found is not None else None
            if moved is None or moved.pack == loc.pack:
                raise
            return self._fetch_chunk(moved, thorough)

    def locate(self, h: bytes) -> ChunkLoc | None:
        """Where the catalog says the chunk with id ``h`` is now."""
        rows = self.query("SELECT p.name, c.offset, c.csize, c.usize, c.codec FROM chunks c"
                          " JOIN packs p ON p.id = c.pack_id WHERE c.hash = ?", (h,))
        return ChunkLoc(*rows[0], h) if rows else None

    def _fetch_chunk(self, loc: ChunkLoc, thorough: bool = False) -> tuple[bytes, bytes]:
        for attempt in (0, 1):
            stored = self.backend.get(loc.pack, loc.offset, loc.csize)
            try:
                if len(stored) != loc.csize:
                    raise IntegrityError(f"pack {loc.pack} truncated at {loc.offset + len(stored):#x}")
                if loc.codec == FRAMED:
                    data = frames.decode(self.crypto, stored, loc.usize, loc.hash, check_frames=thorough,
                                         memory=self.chunk_memory)
                else:
                    data = decompress(loc.codec, self.crypto.open_chunk(stored, loc.hash), loc.usize)
                if self.crypto.chunk_id(data) != loc.hash:
                    raise IntegrityError(f"chunk {loc.hash.hex()[:16]} in pack {loc.pack} at"
                                         f" {loc.offset:#x} fails its hash check")
                return stored, data
            except IntegrityError:
                if attempt or not self.backend.discard_cached(loc.pack, loc.offset, loc.csize):
                    raise
        raise AssertionError("unreachable")

    def read_part(self, loc: ChunkLoc, start: int, end: int) -> tuple[bytes, int]:
        """Bytes [start, end) of a framed chunk as (buffer, where they begin in it), reading,
        decompressing and checking only the frames that hold them (each cached under
        (chunk id, frame number)). IntegrityError names the chunk and the frame; the other
        frames of the chunk stay readable."""
        try:
            return self._read_part(loc, start, end)
        except PackMissing:
            found = self.options.on_missing_pack
            moved = found(self, loc) if found is not None else None
            if moved is None or moved.pack == loc.pack:
                raise
            return self._read_part(moved, start, end)

    def _table(self, loc: ChunkLoc) -> "frames.FrameTable":
        """The chunk's checked frame table: remembered, else the catalog's copy (no read of
        the pack), else read from the pack."""
        t = self.tables.get(loc.hash)
        if t is None:
            t = self._catalog_table(loc)
            if t is None:
                t = self._pack_table(loc)
            self.tables.put(loc.hash, t)
        return t

    def _catalog_table(self, loc: ChunkLoc) -> "frames.FrameTable | None":
        """The catalog's copy of the table, if its row still names the copy at ``loc`` and
        the copy passes its check (otherwise the pack's own table is read). Rows are fetched
        ``TABLE_ROWS`` ids at a time: a file's chunks have neighbouring ids, so a mount's
        first listing (a few dozen chunks) or 1,000 random reads of a 384 MiB file ask one
        or two statements, not one per chunk."""
        if not loc.id or self._frames_column is False:
            return None
        row = self.catalog_tables.get(loc.id)
        if row is None:
            lo = loc.id - loc.id % TABLE_ROWS
            try:
                rows = self.db.execute(
                    "SELECT c.id, c.hash, c.offset, p.name, c.frames FROM chunks c JOIN packs p"
                    " ON p.id = c.pack_id WHERE c.id BETWEEN ? AND ? AND c.frames IS NOT NULL",
                    (lo, lo + TABLE_ROWS - 1)).fetchall()
            except sqlite3.OperationalError as e:
                if "no such column" not in str(e):
                    raise FormatError(f"catalog: {e}", source=self.catalog_path, structure="catalog") from None
                self._frames_column = False   # a read-only catalog an older rpfs made
                return None
            except sqlite3.DatabaseError as e:
                raise FormatError(f"catalog: {e}", source=self.catalog_path, structure="catalog") from None
            found = {cid: (h, off, pack, blob) for cid, h, off, pack, blob in rows}
            for cid in range(lo, lo + TABLE_ROWS):   # () = no copy: not asked again
                self.catalog_tables.put(cid, found.get(cid, ()))
            row = found.get(loc.id, ())
        if row[:3] != (loc.hash, loc.offset, loc.pack):
            return None
        try:
            return frames.parse_table(self.crypto, row[3], loc.csize, loc.usize, loc.hash)
        except IntegrityError:
            return None

    def _pack_table(self, loc: ChunkLoc) -> "frames.FrameTable":
        return self.stored_table(loc)[1]

    def stored_table(self, loc: ChunkLoc) -> "tuple[bytes, frames.FrameTable]":
        """A framed chunk's head and table as its pack holds them (the payload's first
        4 KiB, more if the table is longer), and the table checked."""
        first = min(loc.csize, frames.FIRST_READ)
        for attempt in (0, 1):
            head = self.backend.get_part(loc.pack, loc.offset, first)
            need = first
            try:
                need = frames.table_length(head, loc.csize, loc.hash)
                if need > len(head):
                    head += self.backend.get_part(loc.pack, loc.offset + first, need - first)
                t = frames.parse_table(self.crypto, head, loc.csize, loc.usize, loc.hash)
                return bytes(head[:need]), t
            except IntegrityError as e:
                # forget the cached copies of what was read (the ranges get_part kept)
                dropped = self.backend.discard_cached(loc.pack, loc.offset, first)
                if need > first:
                    self.backend.discard_cached(loc.pack, loc.offset + first, need - first)
                if attempt or not dropped:
                    raise IntegrityError(f"{e} (pack {loc.pack} at {loc.offset:#x})") from None
        raise AssertionError("unreachable")

    def _read_part(self, loc: ChunkLoc, start: int, end: int) -> tuple[bytes, int]:
        t = self._table(loc)
        fs = t.frame_size
        first, last = start // fs, (end - 1) // fs
        if first == last:           # the usual small read: one frame, handed out as it is
            data = self.cache.get(loc.hash + first.to_bytes(4, "little"))
            if data is None:
                data = self._read_frames(loc, t, [first])[0]
            return data, start - first * fs
        keys = [loc.hash + i.to_bytes(4, "little") for i in range(first, last + 1)]
        got = [self.cache.get(k) for k in keys]
        missing = [first + j for j, d in enumerate(got) if d is None]
        if missing:
            for i, data in zip(missing, self._read_frames(loc, t, missing)):
                got[i - first] = data
        return _join_range(got, start - first * fs, end - last * fs), 0

    def cached_frames(self, loc: ChunkLoc, start: int, end: int) -> "tuple[bytes, int] | bool":
        """``read_part``'s answer when the range's frames are decoded in the cache now (and
        the chunk's table remembered), else False: never reads or decodes."""
        t = self.tables.get(loc.hash)
        if t is None:
            return False
        fs = t.frame_size
        first, last = start // fs, (end - 1) // fs
        get, h = self.cache.get, loc.hash
        if first == last:   # the usual small read
            data = get(h + _frame_no(first))
            return False if data is None else (data, start - first * fs)
        got = [get(h + _frame_no(i)) for i in range(first, last + 1)]
        if any(d is None for d in got):
            return False
        return _join_range(got, start - first * fs, end - last * fs), 0

    def _read_frames(self, loc: ChunkLoc, t: "frames.FrameTable", wanted: list) -> list:
        """Frames ``wanted`` (ascending) of a framed chunk, read in one ``get_part`` of the
        span they cover, each checked and put in the chunk cache."""
        lo, hi = wanted[0], wanted[-1]
        at, span = t.span(lo, hi)
        for attempt in (0, 1):
            raw = self.backend.get_part(loc.pack, loc.offset + at, span)
            try:
                if len(raw) != span:
                    raise IntegrityError(f"pack {loc.pack} truncated at {loc.offset + at + len(raw):#x}")
                if lo == hi:
                    # a frame read alone is all of ``raw``: a raw frame's plaintext is then
                    # that very object (open_frame's bytes() of bytes copies nothing)
                    out = [frames.open_frame(self.crypto, t, lo, raw, loc.hash)]
                else:
                    mv = memoryview(raw)
                    out = [frames.open_frame(self.crypto, t, i,
                                             mv[t.starts[i] - at:t.starts[i] - at + t.lens[i]], loc.hash)
                           for i in wanted]
                break
            except IntegrityError as e:
                if attempt or not self.backend.discard_cached(loc.pack, loc.offset + at, span):
                    raise IntegrityError(f"{e} (pack {loc.pack} at {loc.offset:#x})") from None
        self.frames_decoded += len(out)
        for i, data in zip(wanted, out):
            self.cache.put(loc.hash + i.to_bytes(4, "little"), data)
        return out


_FRAME_NOS = tuple(i.to_bytes(4, "little") for i in range(256))


def _frame_no(i: int) -> bytes:
    """Frame ``i``'s part of its cache key (after the chunk's hash), as ``_read_part`` and
    ``_read_frames`` make it."""
    return _FRAME_NOS[i] if i < 256 else i.to_bytes(4, "little")


def _join_range(frames_: list, head: int, tail: int) -> bytes:
    """The bytes from ``head`` in the first of ``frames_`` to ``tail`` in the last, joined
    (only those: a 4 KiB read across two 64 KiB frames copies 4 KiB, not 128)."""
    mid = frames_[1:-1]
    return b"".join([memoryview(frames_[0])[head:], *mid, memoryview(frames_[-1])[:tail]])


class _Conn:
    """Owns one thread's catalog connection; closes it when the thread is gone."""

    __slots__ = ("conn", "__weakref__")

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def close(self) -> None:
        c, self.conn = self.conn, None
        if c is not None:
            try:
                c.close()
            except Exception:
                pass

    def __del__(self):
        self.close()


class StoredFile(Stream):
    """A stored file as a Stream. Locations are resolved once at open, so a concurrent
    prune/gc cannot take data away from it (the packs it points to outlive this reader)."""

    def __init__(self, repo: Repository, rp: RecoveryPointRecord, path: str, size: int,
                 chunk_size: int, blob: bytes, registration: "Registration | None" = None):
        self.repo, self.rp, self.path = repo, rp, path
        self._registration = registration   # keeps the packs we resolve into alive
        self.size = size
        self.chunk_size = chunk_size
        self.name = f"{repo.path}:/{rp.vm}/{rp.name}/files/{path}"
        if chunk_size <= 0 or chunk_size & (chunk_size - 1):
            raise FormatError(f"bad chunk size {chunk_size}", source=self.name, structure="recovery point")
        n = (size + chunk_size - 1) // chunk_size
        self.ids = catalog.decode_map(blob, n, self.name)
        self.locs = repo.resolve(self.ids)

    def _where(self, offset: int) -> str:
        return (f"repository {self.repo.path}: vm {self.rp.vm}, recovery point {self.rp.name},"
                f" file {self.path}, offset {offset:#x}")

    def _loc(self, index: int) -> "ChunkLoc | None":
        """Where chunk ``index`` is (None = all zeros); IntegrityError names where it belongs."""
        cid = self.ids[index]
        if cid == 0:
            return None
        start = index * self.chunk_size
        loc = self.locs.get(cid)
        if loc is None:
            raise IntegrityError(f"{self._where(start)}: chunk {cid} missing from the catalog")
        want = min(self.chunk_size, self.size - start)
        if loc.usize != want:
            raise IntegrityError(f"{self._where(start)}: chunk {cid} holds {loc.usize} bytes, expected {want}")
        return loc

    def chunk(self, index: int) -> "bytes | memoryview | None":
        """Chunk ``index`` (None = all zeros), ``bytes`` or a read-only view;
        IntegrityError names where it belongs."""
        loc = self._loc(index)
        if loc is None:
            return None
        try:
            return self.repo.loader.get(loc)
        except (IntegrityError, OSError) as e:
            raise IntegrityError(f"{self._where(index * self.chunk_size)}: {e}") from None

    def part(self, index: int, start: int, end: int) -> "tuple[bytes, int] | None":
        """Bytes [start, end) of chunk ``index`` as (buffer, where they begin in it); None =
        zeros. A small part of a framed chunk that is not decoded whole already (or being
        decoded by read-ahead) reads only its frames (``Repository.read_part``)."""
        loc = self._loc(index)
        if loc is None:
            return None
        if loc.codec == FRAMED and end - start <= self.chunk_size // PART_OF and \
                not self.repo.loader.has(loc.hash):
            try:
                return self.repo.read_part(loc, start, end)
            except (IntegrityError, OSError) as e:
                raise IntegrityError(f"{self._where(index * self.chunk_size + start)}: {e}") from None
        return self.chunk(index), start

    def cached_part(self, index: int, start: int, end: int) -> "tuple[bytes, int] | None | bool":
        """``part``'s answer if it is decoded in the cache now, else False: never reads,
        decodes or waits for a load (any doubt, such as a location that ``part`` would
        refuse, is False: ``part`` says why)."""
        cid = self.ids[index]
        if cid == 0:
            return None
        loc = self.locs.get(cid)
        cs = self.chunk_size
        if loc is None or loc.usize != min(cs, self.size - index * cs):
            return False
        repo = self.repo
        data = repo.cache.get(loc.hash)
        if data is not None:
            return data, start
        if loc.codec != FRAMED or end - start > cs // PART_OF:
            return False
        return repo.cached_frames(loc, start, end)

    def _read(self, offset: int, length: int) -> bytes:
        cs = self.chunk_size
        end = offset + length
        parts = []
        i = offset // cs
        while offset < end:
            cstart = i * cs
            cend = min(cstart + cs, self.size)
            take_end = min(end, cend)
            got = self.part(i, offset - cstart, take_end - cstart)
            if got is None:
                parts.append(bytes(take_end - offset))
            else:
                data, at = got
                if at == 0 and len(data) == take_end - offset:
                    parts.append(data)
                else:
                    parts.append(data[at:at + take_end - offset])
            offset = take_end
            i += 1
        if len(parts) == 1:   # a chunk may be a read-only view (frames.decode): bytes out
            return parts[0] if type(parts[0]) is bytes else bytes(parts[0])
        return b"".join(parts)

    def _pieces_into(self, offset: int, length: int, out) -> bool:
        """The chunks (by id) that hold the range: the bottom of every chain of pieces."""
        cs = self.chunk_size
        pos, end = offset, offset + length
        while pos < end:
            i = pos // cs
            stop = min((i + 1) * cs, end)
            out.append(("C", self.ids[i], pos - i * cs, stop - pos))
            pos = stop
        return True

    def extents(self, offset: int = 0, length: int | None = None):
        end = self.size if length is None else min(self.size, offset + length)
        if offset >= end:
            return
        cs = self.chunk_size

        def gen():
            for i in range(offset // cs, (end + cs - 1) // cs):
                s, e = max(offset, i * cs), min(end, (i + 1) * cs)
                yield Extent(s, e - s, ZERO if self.ids[i] == 0 else DATA)
        yield from merge_extents(gen())


def _options(options: StoreOptions | None, cache_dir: str | None, endpoint: str | None) -> StoreOptions:
    """``options`` with the two settings callers used to pass one by one."""
    options = options or StoreOptions()
    if cache_dir:
        options = options.with_(cache_dir=str(cache_dir))
    if endpoint:
        options = options.with_(endpoint=endpoint)
    return options
