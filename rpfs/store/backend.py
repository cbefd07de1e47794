"""Where a repository lives: the one place that knows a directory from object storage.

A backend stores immutable named objects of two sorts. **Packs** (names: 32 hex digits):
``put`` makes one durable and visible atomically (never a half-written object under its
final name); ``get`` reads a byte range positionlessly; ``list``/``size``/``delete`` serve gc
and verify. **Small objects** under a key ``<kind>/<name>`` (the key file, recovery points,
chunk maps: what rebuilds the catalog): ``put_object`` is write-once (False if the key
already exists), ``get_object`` returns the whole object or None. Temporary files are
written in ``staging`` first (local disk for every backend).

It also owns what differs between the two beyond objects (restic's ``Backend``): where the
config is kept, where the local directory holding the catalog is (``local``: the repository
itself, or a cache directory for s3://) and whether that catalog is only a cache; the
repository lock (shared for backups, exclusive for prune/gc/repair) and reader
registrations, as files in ``local`` (locks.py) and, for s3://, as objects other machines
see. ``LocalBackend`` is a directory; ``S3Backend`` (s3.py) a bucket prefix.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Iterator

from streams.errors import FormatError, IntegrityError, NotFoundError, UsageError
from streams.lru import LRU
from rpfs.store.config import CONFIG_NAME
from rpfs.store.locks import LocalLocks

_NAME = re.compile(r"^[0-9a-f]{32}$")
_KEY = re.compile(r"^[a-z]+(/[0-9a-z.-]+)?$")


def check_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"bad object key {key!r}")
    return key


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PackMissing(IntegrityError):
    """The pack object a chunk row names does not exist (damage, or, in an s3:// cache, a
    gc on another machine that moved its chunks and deleted it)."""


class Backend:
    """Interface; names are 32 lowercase hex digits."""

    staging: str
    local: str              # the local directory: catalog, lock files, readers
    locks: LocalLocks
    catalog_is_cache = False   # True: the catalog is rebuilt from the objects whenever needed
    parallel_puts = 1      # packs a writer publishes at once

    # --- packs ---------------------------------------------------------------------------
    def put(self, name: str, local_path: str) -> None:
        raise NotImplementedError

    def get(self, name: str, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def size(self, name: str) -> int | None:
        raise NotImplementedError

    def list(self) -> Iterator[tuple[str, int]]:
        raise NotImplementedError

    def delete(self, name: str) -> None:
        raise NotImplementedError

    # --- small objects -------------------------------------------------------------------
    def put_object(self, key: str, data: bytes) -> bool:
        raise NotImplementedError

    def get_object(self, key: str) -> bytes | None:
        raise NotImplementedError

    def list_objects(self, kind: str) -> Iterator[str]:
        """Names of the objects ``<kind>/<name>``."""
        raise NotImplementedError

    def delete_object(self, key: str) -> None:
        raise NotImplementedError

    # --- the repository as a whole -------------------------------------------------------
    def create(self, config: bytes, key_file: bytes | None) -> None:
        """Make a new repository here (refused where one, or anything else, already is);
        the config is written last: it is what marks a repository."""
        raise NotImplementedError

    def read_config(self) -> bytes:
        """The config's bytes; NotFoundError/FormatError where there is no repository."""
        raise NotImplementedError

    def check_permissions(self) -> None:
        """Refuse a repository others could change (a directory writable by other users)."""

    # --- locks and readers ---------------------------------------------------------------
    def lock(self, what: str, *, exclusive: bool, wait: bool, name: str):
        """Context manager: the repository lock (RepositoryBusy if taken in a conflicting
        way and not ``wait``). Shared: any number of backups; exclusive: nobody else."""
        return self.locks.lock(what, exclusive=exclusive, wait=wait, name=name)

    def catalog_mutex(self):
        """Context manager: one catalog catch-up at a time among the processes sharing it."""
        return self.locks.catalog_mutex()

    def register_reader(self, epoch: int):
        return self.locks.register_reader(epoch)

    def live_reader_epochs(self, own: set[str]) -> list[int]:
        return self.locks.live_reader_epochs(own)

    def hold(self, names: list[str]) -> None:
        """Say that this process reads files of the recovery points ``names`` (``vm/rp``),
        for a prune on another machine; a directory has no other machine to tell."""

    def live_holds(self) -> dict[str, str]:
        """``vm/rp`` -> who reads it, of readers on other machines (see ``hold``)."""
        return {}

    def clean_staging(self) -> int:
        """Remove temp files a killed writer left (caller holds the exclusive lock)."""
        n = 0
        for fn in os.listdir(self.staging):
            try:
                os.unlink(os.path.join(self.staging, fn))
                n += 1
            except (FileNotFoundError, IsADirectoryError):
                pass
        return n

    def get_direct(self, name: str, offset: int, length: int) -> bytes:
        """``get`` around any cache (pack indexes: small reads nobody repeats)."""
        return self.get(name, offset, length)

    def get_part(self, name: str, offset: int, length: int) -> bytes:
        """A small read at random (a framed chunk's table or frames): object storage fetches
        just this range rather than the block around it; a directory reads it as ``get``."""
        return self.get(name, offset, length)

    def discard_cached(self, name: str, offset: int, length: int) -> bool:
        """Forget any local copy of a pack range; False when there is none to forget."""
        return False

    def close(self) -> None:
        pass


class _Fd:
    """An open pack file shared by readers; closed once evicted and no read is using it
    (closing under a running pread could hand its fd number to another file)."""

    __slots__ = ("fd", "users", "evicted")

    def __init__(self, fd: int):
        self.fd, self.users, self.evicted = fd, 0, False


PACKS_DIR = "packs"


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


class LocalBackend(Backend):
    """A directory ``path``: ``config.json``, the catalog, lock files, packs as files
    ``packs/<2 hex>/<name>.pack`` (read via a small LRU of open fds) and small objects as
    files ``<kind>/<name>``."""

    def __init__(self, path: str, max_fds: int = 64):
        self.directory = self.local = self.objects_root = os.path.abspath(path)
        self.root = os.path.join(self.directory, PACKS_DIR)
        self.staging = os.path.join(self.root, "tmp")
        self.locks = LocalLocks(self.directory)
        # open pack fds; one pushed out is closed once its last reader lets go (self._lock held)
        self._fds = LRU(max_fds, evicted=lambda _name, e: self._evict(e))
        self._lock = threading.Lock()

    def create(self, config: bytes, key_file: bytes | None) -> None:
        path = self.directory
        if os.path.exists(path) and not os.path.isdir(path):
            raise UsageError(f"{path}: exists and is not a directory")
        if os.path.exists(path) and os.listdir(path):
            raise UsageError(f"{path}: directory is not empty; refusing to create a repository")
        with private_files():
            if not os.path.exists(path):
                os.makedirs(path, mode=0o700)
            os.chmod(path, 0o700)
            tmp = os.path.join(path, CONFIG_NAME + ".tmp")
            with open(tmp, "wb") as f:
                f.write(config)
                f.flush()
                os.fsync(f.fileno())
            os.makedirs(self.staging, mode=0o700, exist_ok=True)
            if key_file is not None:
                self.put_object("keys/default", key_file)
            os.rename(tmp, os.path.join(path, CONFIG_NAME))  # config last: it marks a repository
            fsync_dir(path)

    def read_config(self) -> bytes:
        if not os.path.isdir(self.directory):
            raise NotFoundError(f"{self.directory}: no such repository")
        try:
            with open(os.path.join(self.directory, CONFIG_NAME), "rb") as f:
                return f.read(1 << 16)
        except FileNotFoundError:
            raise FormatError("not an rpfs repository (no config.json)", source=self.directory) from None

    def check_permissions(self) -> None:
        """Anyone who can write the repository can change what a restore brings back: refuse
        one whose directory, catalog, config or packs directory other users may write."""
        path = self.directory
        for p in [path] + [os.path.join(path, n) for n in ("catalog.sqlite", CONFIG_NAME, PACKS_DIR)]:
            try:
                st = os.stat(p)  # a symlinked part is judged by what it points to
            except FileNotFoundError:
                continue
            if st.st_mode & 0o022:
                raise UsageError(f"{p} is writable by other users (mode {st.st_mode & 0o777:o}): "
                                 f"anyone who can write a repository can change what it restores; "
                                 f"fix with `chmod -R go-w {path}`")

    def path(self, name: str) -> str:
        if not _NAME.match(name):
            raise ValueError(f"bad pack name {name!r}")
        return os.path.join(self.root, name[:2], name + ".pack")

    def put(self, name: str, local_path: str) -> None:
        """``local_path`` must already be fsynced; rename is the commit point."""
        dest = self.path(name)
        d = os.path.dirname(dest)
        if not os.path.isdir(d):
            os.makedirs(d, mode=0o700, exist_ok=True)
            fsync_dir(self.root)
        os.rename(local_path, dest)
        fsync_dir(d)

    def _evict(self, entry: _Fd) -> None:
        """Caller holds the lock."""
        entry.evicted = True
        if entry.users == 0 and entry.fd >= 0:
            os.close(entry.fd)
            entry.fd = -1

    def _acquire(self, name: str) -> _Fd:
        with self._lock:
            e = self._fds.get(name)
            if e is not None:
                e.users += 1
                return e
        fd = os.open(self.path(name), os.O_RDONLY | os.O_CLOEXEC)
        with self._lock:
            e = self._fds.get(name)
            if e is not None:          # another thread opened it meanwhile
                os.close(fd)
            else:
                e = _Fd(fd)
                self._fds.put(name, e)
            e.users += 1
            return e

    def _release(self, e: _Fd) -> None:
        with self._lock:
            e.users -= 1
            if e.evicted and e.users == 0 and e.fd >= 0:
                os.close(e.fd)
                e.fd = -1

    def get(self, name: str, offset: int, length: int) -> bytes:
        try:
            e = self._acquire(name)
        except FileNotFoundError:
            raise PackMissing(f"pack {name} is missing") from None
        try:
            data = os.pread(e.fd, length, offset)
            while len(data) < length:
                more = os.pread(e.fd, length - len(data), offset + len(data))
                if not more:
                    break
                data += more
            return data
        finally:
            self._release(e)

    def size(self, name: str) -> int | None:
        try:
            return os.stat(self.path(name)).st_size
        except FileNotFoundError:
            return None

    def list(self) -> Iterator[tuple[str, int]]:
        for sub in sorted(os.listdir(self.root)):
            d = os.path.join(self.root, sub)
            if len(sub) != 2 or not os.path.isdir(d):
                continue
            for fn in sorted(os.listdir(d)):
                if fn.endswith(".pack") and _NAME.match(fn[:-5]):
                    try:
                        yield fn[:-5], os.stat(os.path.join(d, fn)).st_size
                    except FileNotFoundError:
                        continue

    def delete(self, name: str) -> None:
        self.forget(name)
        try:
            os.unlink(self.path(name))
        except FileNotFoundError:
            pass

    def _object_path(self, key: str) -> str:
        return os.path.join(self.objects_root, *check_key(key).split("/"))

    def put_object(self, key: str, data: bytes) -> bool:
        """Durable, then linked under its name (link never replaces an existing file)."""
        dest = self._object_path(key)
        d = os.path.dirname(dest)
        if not os.path.isdir(d):
            os.makedirs(d, mode=0o700, exist_ok=True)
            fsync_dir(os.path.dirname(d))
        tmp = os.path.join(self.staging, f"obj-{os.getpid()}-{threading.get_ident()}.tmp")
        # 0600 whatever the umask: scans and job records are written after a backup's
        # private_files() has ended, and by commands that never enter it (rpfs scan)
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, dest)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        fsync_dir(d)
        return True

    def get_object(self, key: str) -> bytes | None:
        try:
            with open(self._object_path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def list_objects(self, kind: str) -> Iterator[str]:
        try:
            names = sorted(os.listdir(self._object_path(kind)))
        except FileNotFoundError:
            return
        yield from (n for n in names if _KEY.match(f"{kind}/{n}"))

    def delete_object(self, key: str) -> None:
        try:
            os.unlink(self._object_path(key))
        except FileNotFoundError:
            pass

    def forget(self, name: str) -> None:
        """Drop a cached fd (the pack may have been replaced); closed later, never under a reader."""
        with self._lock:
            e = self._fds.pop(name)
            if e is not None:
                self._evict(e)

    def close(self) -> None:
        with self._lock:
            for e in self._fds.values():
                self._evict(e)
            self._fds.clear()
