"""``Repository``: the store's API for the layers above (docs/architecture.md "Store").

Readers never block the writer: each thread reads through its own autocommit connection
(WAL, short read transactions). A reader registers a lock file under ``readers/`` carrying
the catalog epoch it started at; gc deletes a retired pack only once no live reader is older
than the pack's retirement (see docs/store.md "Readers and gc"). One writer at a time
(backup, prune) holds ``lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import secrets
import sqlite3
import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterator

from rpfs.errors import FormatError, IntegrityError, NotFoundError, RpfsError, UsageError
from rpfs.store import catalog
from rpfs.store.backend import Backend, LocalBackend, PackMissing, fsync_dir
from rpfs.store.cache import ChunkCache
from rpfs.store.config import CONFIG_NAME, Config
from rpfs.store.crypto import KEY_OBJECT, Plain, new_key_file, open_key_file, passphrase
from rpfs.store.diskcache import DiskCache
from rpfs.store.packs import decompress
from rpfs.store.readahead import ChunkLoader, ReadAhead
from rpfs.store.s3 import S3Backend, is_s3
from rpfs.stream import DATA, ZERO, Extent, Stream, merge_extents

PACKS_DIR = "packs"
READERS_DIR = "readers"
FOLLOW_SECONDS = 10     # s3://: how often a reader may list the bucket's packs to follow a gc elsewhere
LOCK_NAME = "lock"
RP_FORMAT = "%Y-%m-%dT%H%M%SZ"


class RepositoryBusy(RpfsError):
    """Another writer (backup, prune) holds the repository lock."""

    exit_code = 75  # EX_TEMPFAIL


@dataclass(frozen=True)
class RecoveryPoint:
    vm: str
    name: str                 # UTC time YYYY-MM-DDTHHMMSSZ
    time: datetime            # aware, UTC
    logical_size: int         # sum of file sizes
    stored_size: int          # compressed bytes of chunks this RP added
    file_count: int
    id: int
    new_chunks: int = 0


def default_cache_dir(address: str) -> str:
    """``$RPFS_CACHE_DIR`` (the CLI's ``--cache-dir``), else ~/.cache/rpfs/<hash of address>."""
    if os.environ.get("RPFS_CACHE_DIR"):
        return os.environ["RPFS_CACHE_DIR"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rpfs", hashlib.sha256(address.rstrip("/").encode()).hexdigest()[:16])


def disk_cache_bytes() -> int:
    """Bound of the block cache of an s3:// repository: ``$RPFS_CACHE_SIZE`` (the CLI's
    ``--cache-size``), default 2 GiB."""
    env = os.environ.get("RPFS_CACHE_SIZE")
    if not env:
        return 2 << 30
    t = env.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    try:
        return int(t.rstrip("KMG")) * mult
    except ValueError:
        raise UsageError(f"RPFS_CACHE_SIZE={env!r} is not a size") from None


def load_crypto(backend: Backend, cfg: Config, where: str) -> Plain:
    if cfg.encryption == "none":
        return Plain()
    raw = backend.get_object(KEY_OBJECT)
    if raw is None:
        raise FormatError("encrypted, but its key file is missing", source=where, structure="repository")
    return open_key_file(raw, passphrase(where), where)


def rp_name(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime(RP_FORMAT)


@dataclass(frozen=True, slots=True)
class ChunkLoc:
    pack: str
    offset: int
    csize: int
    usize: int
    codec: int
    hash: bytes


@contextlib.contextmanager
def private_files() -> Iterator[None]:
    """Files and directories made meanwhile are 0600/0700 (packs, catalog and its WAL, the
    config): a repository holds whole disks, readable by nobody else. The umask is the
    process's: only writers (init, backup, prune) use this, never a mount serving readers."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def refuse_if_writable_by_others(path: str) -> None:
    """Anyone who can write the repository can change what a restore brings back: refuse
    one whose directory, catalog, config or packs directory other users may write."""
    for p in [path] + [os.path.join(path, n) for n in (catalog.CATALOG_NAME, CONFIG_NAME, PACKS_DIR)]:
        try:
            st = os.stat(p)  # a symlinked part is judged by what it points to
        except FileNotFoundError:
            continue
        if st.st_mode & 0o022:
            raise UsageError(f"{p} is writable by other users (mode {st.st_mode & 0o777:o}): "
                             f"anyone who can write a repository can change what it restores; "
                             f"fix with `chmod -R go-w {path}`")


class Repository:
    """A repository at ``address``: a directory, or ``s3://BUCKET/PREFIX`` whose catalog,
    reader and writer locks and block cache live in a local cache directory."""

    def __init__(self, address: str, local: str, config: Config, backend: Backend,
                 crypto: Plain, *, register: bool = True):
        self.path = address        # as the user names it (absolute for a directory)
        self.local = local         # the directory holding catalog, lock, readers
        self.remote = is_s3(address)
        self.config = config
        self.chunk_size = config.chunk_size
        self.backend = backend
        self.crypto = crypto
        self.cache = ChunkCache(config.cache_bytes())
        self.loader = ChunkLoader(self.load_chunk, self.cache)   # single-flight + read-ahead
        self.catalog_path = os.path.join(local, catalog.CATALOG_NAME)
        self._tls = threading.local()
        # holders, not connections (those cannot be weakly referenced): a worker thread that
        # exits drops its holder, which closes its connection, so a mount served by
        # short-lived threads does not collect open connections for days
        self._conns: "weakref.WeakSet[_Conn]" = weakref.WeakSet()
        self._conns_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None
        self._register = register
        self._reg: _Registration | None = None          # the newest registration
        self._regs: "weakref.WeakSet[_Registration]" = weakref.WeakSet()
        self._reg_lock = threading.Lock()
        self.epoch = 0
        self._follow_lock = threading.Lock()
        self._followed = -FOLLOW_SECONDS
        self._holds: set[str] = set()    # s3://: vm/rp of the files opened (published in the bucket)
        self.closed = False
        if register:
            self._register_reader()

    # --- lifecycle ---------------------------------------------------------------------
    @classmethod
    def init(cls, address: str, *, encrypt: bool | None = None, cache_dir: str | None = None,
             endpoint: str | None = None, **settings) -> "Repository":
        """A new, empty repository. ``encrypt`` defaults to on for s3://, off for a directory;
        the passphrase comes from ``crypto.passphrase`` (environment or prompt)."""
        cfg = Config.from_kwargs(**settings)
        address = str(address)
        remote = is_s3(address)
        if not remote:
            address = os.path.abspath(address)
        cfg.id = secrets.token_hex(16)
        crypto: Plain = Plain()
        key_file = None
        if encrypt is None:
            encrypt = remote
        backend = None
        if remote:
            local = cache_dir or default_cache_dir(address)
            backend = S3Backend(address, os.path.join(local, "tmp"), endpoint=endpoint)
            backend.ensure_bucket()
            if backend.get_object("config") is not None:
                backend.close()
                raise UsageError(f"{address}: already holds a repository")
        elif os.path.exists(address) and not os.path.isdir(address):
            raise UsageError(f"{address}: exists and is not a directory")
        elif os.path.exists(address) and os.listdir(address):
            raise UsageError(f"{address}: directory is not empty; refusing to create a repository")
        if encrypt:
            cfg.encryption = "aes-256-gcm"
            key_file, crypto = new_key_file(passphrase(address, new=True))
        if backend is not None:
            if key_file is not None:
                backend.put_object(KEY_OBJECT, key_file)
            if not backend.put_object("config", cfg.dumps().encode()):   # config last: it marks a repository
                raise UsageError(f"{address}: already holds a repository")
            backend.close()
            return cls.open(address, cache_dir=cache_dir, endpoint=endpoint, _crypto=crypto)
        path = address
        with private_files():
            if not os.path.exists(path):
                os.makedirs(path, mode=0o700)
            os.chmod(path, 0o700)
            tmp = os.path.join(path, CONFIG_NAME + ".tmp")
            with open(tmp, "w") as f:
                f.write(cfg.dumps())
                f.flush()
                os.fsync(f.fileno())
            catalog.create(os.path.join(path, catalog.CATALOG_NAME), cfg.id)
            LocalBackend.create(os.path.join(path, PACKS_DIR))
            if key_file is not None:
                LocalBackend(os.path.join(path, PACKS_DIR)).put_object(KEY_OBJECT, key_file)
            os.makedirs(os.path.join(path, READERS_DIR), mode=0o700, exist_ok=True)
            open(os.path.join(path, LOCK_NAME), "a").close()
            os.rename(tmp, os.path.join(path, CONFIG_NAME))  # config last: it marks a repository
            fsync_dir(path)
        return cls.open(path, _crypto=crypto)

    @classmethod
    def open(cls, address: str | os.PathLike, *, register: bool = True, cache_dir: str | None = None,
             endpoint: str | None = None, sync: bool = True, _crypto: Plain | None = None) -> "Repository":
        """Open a repository. For s3:// the local catalog is a cache: created and filled
        from the repository's objects when missing, brought up to date when it is not."""
        address = str(address)
        if is_s3(address):
            return cls._open_s3(address, register, cache_dir, endpoint, sync, _crypto)
        path = os.path.abspath(address)
        if not os.path.isdir(path):
            raise NotFoundError(f"{path}: no such repository")
        refuse_if_writable_by_others(path)
        cfg = Config.load(path)
        cat = os.path.join(path, catalog.CATALOG_NAME)
        if not os.path.exists(cat):
            raise FormatError("catalog.sqlite is missing (rpfs repair rebuilds it)", source=path,
                              structure="repository")
        catalog.check(cat)
        backend = LocalBackend(os.path.join(path, PACKS_DIR))
        crypto = _crypto or load_crypto(backend, cfg, path)
        return cls(path, path, cfg, backend, crypto, register=register)

    @staticmethod
    def is_encrypted(address: str, *, endpoint: str | None = None) -> bool:
        """Whether opening ``address`` will need a passphrase (False: not a repository)."""
        address = str(address)
        try:
            if is_s3(address):
                backend = S3Backend(address, os.path.join(default_cache_dir(address), "tmp"),
                                    endpoint=endpoint)
                try:
                    raw = backend.get_object("config")
                finally:
                    backend.close()
                return raw is not None and Config.loads(raw, address).encryption != "none"
            if not os.path.exists(os.path.join(address, CONFIG_NAME)):
                return False
            return Config.load(address).encryption != "none"
        except (FormatError, OSError):
            return False

    @classmethod
    def _open_s3(cls, address, register, cache_dir, endpoint, sync, crypto) -> "Repository":
        local = cache_dir or default_cache_dir(address)
        os.makedirs(local, mode=0o700, exist_ok=True)
        backend = S3Backend(address, os.path.join(local, "tmp"), endpoint=endpoint,
                            cache=DiskCache(os.path.join(local, "blocks"), disk_cache_bytes()))
        try:
            raw = backend.get_object("config")
            if raw is None:
                raise NotFoundError(f"{address}: no rpfs repository there")
            cfg = Config.loads(raw, f"{address}/config")
            crypto = crypto or load_crypto(backend, cfg, address)
            os.makedirs(os.path.join(local, READERS_DIR), mode=0o700, exist_ok=True)
            open(os.path.join(local, LOCK_NAME), "a").close()
            cat = os.path.join(local, catalog.CATALOG_NAME)
            if os.path.exists(cat) and catalog.repository_id(cat) != cfg.id:
                catalog.remove(cat)    # a cache of another repository (or a damaged one)
            if not os.path.exists(cat):
                catalog.create(cat, cfg.id)
            catalog.check(cat)
        except BaseException:
            backend.close()
            raise
        repo = cls(address, local, cfg, backend, crypto, register=register)
        if sync:
            from rpfs.store.rebuild import sync as sync_catalog
            try:
                sync_catalog(repo)
            except BaseException:
                repo.close()
                raise
        return repo

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
    def writer_lock(self, what: str = "writer", *, clean: bool = True) -> Iterator[None]:
        """Exclusive: one backup/prune at a time (s3://: on any machine, through a lock
        object). Cleans up what a killed writer left. ``clean=False``: only the local
        catalog is written (catching it up), so only the local lock is taken."""
        fd = os.open(os.path.join(self.local, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
                raise RepositoryBusy(f"repository {self.path} is busy ({holder or 'another writer'})") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{what} pid {os.getpid()}".encode(), 0)
            remote = clean and self.remote
            if remote:
                holder = self.backend.lock(what)
                if holder:
                    raise RepositoryBusy(f"repository {self.path} is busy ({holder})")
            try:
                if clean:
                    self.backend.clean_staging()
                with private_files():
                    yield
            finally:
                if remote:
                    self.backend.unlock()
        finally:
            os.close(fd)

    # --- reader registration -----------------------------------------------------------
    def _current_epoch(self) -> int:
        rows = self.query("SELECT value FROM meta WHERE key = 'epoch'")
        if not rows or not isinstance(rows[0][0], int):
            raise FormatError("no epoch in meta", source=self.catalog_path, structure="catalog")
        return rows[0][0]

    def _register_reader(self) -> None:
        epoch = self._current_epoch()
        reg = _Registration.create(os.path.join(self.local, READERS_DIR), epoch)
        if reg is not None:
            self._reg = reg
            self._regs.add(reg)
        self.epoch = epoch

    def _registration_for_open(self) -> "_Registration | None":
        """Before resolving locations: if a gc retired packs since we registered, register
        anew at the current epoch. Files opened earlier keep the old registration alive; when
        the last of them is gone it is released, so a long-lived mount does not pin packs."""
        if not self._register:
            return None
        with self._reg_lock:
            if self._reg is not None and self._current_epoch() > self._reg.epoch:
                self._register_reader()
            return self._reg

    def _hold(self, rp: RecoveryPoint) -> None:
        """s3://: readers on other machines are not in our ``readers/`` directory, so the
        recovery points this process reads are published in the bucket, and a prune on any
        machine keeps them while we live (``S3Backend.publish_reader``)."""
        name = f"{rp.vm}/{rp.name}"
        if not self._register or not self.remote or name in self._holds:
            return
        with self._reg_lock:
            if name not in self._holds:
                self._holds.add(name)
                self.backend.publish_reader(sorted(self._holds))

    @property
    def reader_files(self) -> set[str]:
        return {r.name for r in list(self._regs) if r.fd is not None}

    def live_reader_epochs(self) -> list[int]:
        """Epochs of readers still alive (ours excluded); stale lock files are removed."""
        d = os.path.join(self.local, READERS_DIR)
        os.makedirs(d, mode=0o700, exist_ok=True)
        own = self.reader_files
        out = []
        for fn in os.listdir(d):
            if fn.startswith(".tmp-"):   # a reader between create and rename, or one that died there
                try:
                    if time.time() - os.stat(os.path.join(d, fn)).st_mtime > 3600:
                        os.unlink(os.path.join(d, fn))
                except FileNotFoundError:
                    pass
                continue
            if fn in own or not fn.endswith(".lock"):
                continue
            p = os.path.join(d, fn)
            try:
                fd = os.open(p, os.O_RDWR | os.O_CLOEXEC)
            except FileNotFoundError:
                continue
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    try:
                        out.append(int(fn[1:].split("-", 1)[0]))
                    except ValueError:
                        out.append(0)
                    continue
                os.unlink(p)   # its owner died without cleaning up
            finally:
                os.close(fd)
        return out

    # --- browsing ----------------------------------------------------------------------
    def vms(self) -> list[str]:
        return [r[0] for r in self.query(
            "SELECT name FROM vms WHERE id IN (SELECT vm_id FROM recovery_points) ORDER BY name")]

    _RP_SQL = ("SELECT v.name, r.name, r.time, r.logical_size, r.stored_size, r.file_count, r.id,"
               " r.new_chunks FROM recovery_points r JOIN vms v ON v.id = r.vm_id")

    @staticmethod
    def _rp(row) -> RecoveryPoint:
        return RecoveryPoint(vm=row[0], name=row[1],
                             time=datetime.fromtimestamp(row[2], timezone.utc),
                             logical_size=row[3], stored_size=row[4], file_count=row[5],
                             id=row[6], new_chunks=row[7])

    def recovery_points(self, vm: str) -> list[RecoveryPoint]:
        """Oldest first. Unknown VM: NotFoundError."""
        rows = self.query(self._RP_SQL + " WHERE v.name = ? ORDER BY r.time, r.name", (vm,))
        if not rows:
            raise NotFoundError(f"{self.path}: no VM named {vm!r}")
        return [self._rp(r) for r in rows]

    def recovery_point(self, vm: str, name: str) -> RecoveryPoint:
        rows = self.query(self._RP_SQL + " WHERE v.name = ? AND r.name = ?", (vm, name))
        if not rows:
            raise NotFoundError(f"{self.path}: VM {vm!r} has no recovery point {name}")
        return self._rp(rows[0])

    def all_recovery_points(self) -> list[RecoveryPoint]:
        return [self._rp(r) for r in self.query(self._RP_SQL + " ORDER BY v.name, r.time")]

    def files(self, rp: RecoveryPoint) -> dict[str, int]:
        rows = self.query("SELECT path, size FROM files WHERE rp_id = ? ORDER BY path", (rp.id,))
        if not rows and not self.query("SELECT 1 FROM recovery_points WHERE id = ?", (rp.id,)):
            raise NotFoundError(f"{self.path}: recovery point {rp.vm}/{rp.name} no longer exists")
        return {p: s for p, s in rows}

    def open_file(self, rp: RecoveryPoint, path: str) -> "ReadAhead":
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
                out[cid] = ChunkLoc(names.setdefault(pack, pack), off, csize, usize, codec, h)
        return out

    def load_chunk(self, loc: ChunkLoc) -> bytes:
        """Decompressed, hash-checked chunk data (cached); raises IntegrityError (reason only)."""
        data = self.cache.get(loc.hash)
        if data is not None:
            return data
        data = self.fetch_chunk(loc)[1]
        self.cache.put(loc.hash, data)
        return data

    def fetch_chunk(self, loc: ChunkLoc) -> tuple[bytes, bytes]:
        """The one way a chunk is read: (stored payload, data), the data decrypted,
        decompressed and checked against the chunk's id. A check that fails on a cached copy
        of the pack is retried once from the repository itself; a chunk whose pack a gc on
        another machine deleted is read where that gc moved it. IntegrityError otherwise."""
        try:
            return self._fetch_chunk(loc)
        except PackMissing:
            moved = self._moved(loc)
            if moved is None:
                raise
            return self._fetch_chunk(moved)

    def _moved(self, loc: ChunkLoc) -> ChunkLoc | None:
        """s3://: where a chunk whose pack is gone is now, once the catalog cache has followed
        what a gc elsewhere did (``rebuild.follow_gc``, at most every FOLLOW_SECONDS: one
        listing of the bucket's packs); None if it is nowhere else (the pack was lost)."""
        if not self.remote:
            return None
        with self._follow_lock:
            if time.monotonic() - self._followed > FOLLOW_SECONDS:
                from rpfs.store.rebuild import RebuildResult, follow_gc
                try:
                    with self.writer_lock("sync", clean=False):
                        follow_gc(self, RebuildResult())
                except RepositoryBusy:
                    pass   # a writer of this machine holds it and catches the catalog up
                self._followed = time.monotonic()
        rows = self.query("SELECT p.name, c.offset, c.csize, c.usize, c.codec FROM chunks c"
                          " JOIN packs p ON p.id = c.pack_id WHERE c.hash = ?", (loc.hash,))
        if not rows or rows[0][0] == loc.pack:
            return None
        return ChunkLoc(*rows[0], loc.hash)

    def _fetch_chunk(self, loc: ChunkLoc) -> tuple[bytes, bytes]:
        for attempt in (0, 1):
            stored = self.backend.get(loc.pack, loc.offset, loc.csize)
            try:
                if len(stored) != loc.csize:
                    raise IntegrityError(f"pack {loc.pack} truncated at {loc.offset + len(stored):#x}")
                data = decompress(loc.codec, self.crypto.open_chunk(stored, loc.hash), loc.usize)
                if self.crypto.chunk_id(data) != loc.hash:
                    raise IntegrityError(f"chunk {loc.hash.hex()[:16]} in pack {loc.pack} at"
                                         f" {loc.offset:#x} fails its hash check")
                return stored, data
            except IntegrityError:
                if attempt or not self.backend.discard_cached(loc.pack, loc.offset, loc.csize):
                    raise
        raise AssertionError("unreachable")


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


class _Registration:
    """One reader lock file ``readers/e<epoch>-<pid>-<rand>.lock``, flock-held while alive."""

    def __init__(self, path: str, name: str, fd: int, epoch: int):
        self.path, self.name, self.fd, self.epoch = path, name, fd, epoch
        self._lock = threading.Lock()

    @classmethod
    def create(cls, d: str, epoch: int) -> "_Registration | None":
        name = f"e{epoch:012d}-{os.getpid()}-{secrets.token_hex(4)}.lock"
        tmp = os.path.join(d, ".tmp-" + name)
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError:  # read-only medium: nobody can gc it either
            return None
        # locked before it gets a name gc looks at, so gc never mistakes it for a dead reader
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.rename(tmp, os.path.join(d, name))
        return cls(os.path.join(d, name), name, fd, epoch)

    def close(self) -> None:
        with self._lock:
            if self.fd is None:
                return
            try:
                os.unlink(self.path)
            except OSError:
                pass
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class StoredFile(Stream):
    """A stored file as a Stream. Locations are resolved once at open, so a concurrent
    prune/gc cannot take data away from it (the packs it points to outlive this reader)."""

    def __init__(self, repo: Repository, rp: RecoveryPoint, path: str, size: int,
                 chunk_size: int, blob: bytes, registration: "_Registration | None" = None):
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

    def chunk(self, index: int) -> bytes | None:
        """Chunk ``index`` (None = all zeros); IntegrityError names where it belongs."""
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
        try:
            return self.repo.loader.get(loc)
        except IntegrityError as e:
            raise IntegrityError(f"{self._where(start)}: {e}") from None
        except OSError as e:
            raise IntegrityError(f"{self._where(start)}: {e}") from None

    def _read(self, offset: int, length: int) -> bytes:
        cs = self.chunk_size
        end = offset + length
        parts = []
        i = offset // cs
        while offset < end:
            cstart = i * cs
            cend = min(cstart + cs, self.size)
            take_end = min(end, cend)
            data = self.chunk(i)
            if data is None:
                parts.append(bytes(take_end - offset))
            elif offset == cstart and take_end == cend:
                parts.append(data)
            else:
                parts.append(data[offset - cstart:take_end - cstart])
            offset = take_end
            i += 1
        return parts[0] if len(parts) == 1 else b"".join(parts)

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
