"""Locks and reader registrations as files in one local directory (flock-held while alive).

A directory repository keeps them in its own directory; an s3:// repository in its local
cache directory (for the processes of this machine; s3.py adds the objects that other
machines see). Nothing here knows about catalogs or packs.

- ``lock``: the repository lock. Shared for backups (any number at once), exclusive for
  prune, gc and repair. Each holder also leaves ``writers/<pid>-<rand>`` saying what it is,
  so a refusal can name who holds the lock.
- ``catalog.lock``: serialises the short catalog catch-ups (sync, following a gc elsewhere)
  of the processes sharing one catalog; never held across a backup.
- ``readers/e<epoch>-<pid>-<rand>.lock``: one per reader, carrying the catalog epoch it
  resolved chunk locations at; gc keeps packs retired after the oldest live one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator

from streams.errors import RpfsError

LOCK_NAME = "lock"
CATALOG_LOCK = "catalog.lock"
WRITERS_DIR = "writers"
READERS_DIR = "readers"
WAIT_POLL = 0.5          # seconds between tries of a lock being waited for


class RepositoryBusy(RpfsError):
    """The lock is held in a way that excludes us (a backup during a prune, or the reverse)."""

    exit_code = 75  # EX_TEMPFAIL


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class LocalLocks:
    """The lock files of one directory."""

    def __init__(self, directory: str):
        self.dir = directory

    # --- the repository lock -----------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, what: str, *, exclusive: bool, wait: bool, name: str) -> Iterator[None]:
        """``name``: the repository, for the refusal. ``wait``: block until it is free."""
        fd = os.open(os.path.join(self.dir, LOCK_NAME), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not wait:
                        raise RepositoryBusy(f"repository {name} is busy ({self.holders() or 'another writer'})") from None
                    time.sleep(WAIT_POLL)
            me = self._announce(what)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(me)
        finally:
            os.close(fd)

    def _announce(self, what: str) -> str:
        d = os.path.join(self.dir, WRITERS_DIR)
        os.makedirs(d, mode=0o700, exist_ok=True)
        p = os.path.join(d, f"{os.getpid()}-{os.urandom(4).hex()}")
        with open(p, "w") as f:
            f.write(f"{what} pid {os.getpid()}")
        return p

    def holders(self) -> str:
        """Who holds the lock, as "backup pid 12, backup pid 13" (dead holders' notes removed)."""
        d = os.path.join(self.dir, WRITERS_DIR)
        out = []
        for fn in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            try:
                pid = int(fn.split("-", 1)[0])
                with open(os.path.join(d, fn)) as f:
                    text = f.read(200).strip()
            except (ValueError, OSError):
                continue
            if not _alive(pid):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(d, fn))
                continue
            out.append(text)
        return ", ".join(out)

    @contextlib.contextmanager
    def catalog_mutex(self) -> Iterator[None]:
        fd = os.open(os.path.join(self.dir, CATALOG_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    # --- readers -----------------------------------------------------------------------
    def register_reader(self, epoch: int) -> "Registration | None":
        d = os.path.join(self.dir, READERS_DIR)
        os.makedirs(d, mode=0o700, exist_ok=True)
        return Registration.create(d, epoch)

    def live_reader_epochs(self, own: set[str]) -> list[int]:
        """Epochs of live readers (``own``: registration names to leave out); the files of
        readers that died are removed."""
        d = os.path.join(self.dir, READERS_DIR)
        os.makedirs(d, mode=0o700, exist_ok=True)
        out = []
        for fn in os.listdir(d):
            if fn.startswith(".tmp-"):   # a reader between create and rename, or one that died there
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - os.stat(os.path.join(d, fn)).st_mtime > 3600:
                        os.unlink(os.path.join(d, fn))
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


class Registration:
    """One reader lock file ``readers/e<epoch>-<pid>-<rand>.lock``, flock-held while alive."""

    def __init__(self, path: str, name: str, fd: int, epoch: int):
        self.path, self.name, self.fd, self.epoch = path, name, fd, epoch
        self._lock = threading.Lock()

    @classmethod
    def create(cls, d: str, epoch: int) -> "Registration | None":
        name = f"e{epoch:012d}-{os.getpid()}-{os.urandom(4).hex()}.lock"
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
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

