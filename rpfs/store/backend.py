"""Where pack objects live: a narrow interface so object storage can replace a directory.

A backend stores immutable named objects. ``put`` makes an object durable and visible
atomically (never a half-written object under its final name); ``get`` reads a byte range
positionlessly; ``list``/``size``/``delete`` serve gc and verify. Temporary files are written
in ``staging`` first (local disk for every backend).
"""

from __future__ import annotations

import collections
import os
import re
import threading
from typing import Iterator

from rpfs.errors import IntegrityError

_NAME = re.compile(r"^[0-9a-f]{32}$")


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Backend:
    """Interface; names are 32 lowercase hex digits."""

    staging: str

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

    def close(self) -> None:
        pass


class LocalBackend(Backend):
    """Packs as files ``packs/<2 hex>/<name>.pack``; reads via a small LRU of open fds."""

    def __init__(self, root: str, max_fds: int = 64):
        self.root = root
        self.staging = os.path.join(root, "tmp")
        self._fds: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._max_fds = max_fds
        self._closing: collections.deque[int] = collections.deque()
        self._lock = threading.Lock()

    @staticmethod
    def create(root: str) -> None:
        os.makedirs(os.path.join(root, "tmp"), mode=0o700, exist_ok=True)

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

    def _fd(self, name: str) -> int:
        with self._lock:
            fd = self._fds.get(name)
            if fd is not None:
                self._fds.move_to_end(name)
                return fd
        fd = os.open(self.path(name), os.O_RDONLY | os.O_CLOEXEC)
        with self._lock:
            old = self._fds.get(name)
            if old is not None:  # another thread won the race
                os.close(fd)
                return old
            self._fds[name] = fd
            while len(self._fds) > self._max_fds:
                _, victim = self._fds.popitem(last=False)
                # a concurrent pread on victim may still run: close it a little later
                self._closing.append(victim)
            while len(self._closing) > self._max_fds:
                os.close(self._closing.popleft())
        return fd

    def get(self, name: str, offset: int, length: int) -> bytes:
        try:
            fd = self._fd(name)
        except FileNotFoundError:
            raise IntegrityError(f"pack {name} is missing") from None
        data = os.pread(fd, length, offset)
        while len(data) < length:
            more = os.pread(fd, length - len(data), offset + len(data))
            if not more:
                break
            data += more
        return data

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
        with self._lock:
            fd = self._fds.pop(name, None)
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(self.path(name))
        except FileNotFoundError:
            pass

    def forget(self, name: str) -> None:
        """Drop a cached fd (the pack may have been replaced); closed later, never under a reader."""
        with self._lock:
            fd = self._fds.pop(name, None)
            if fd is not None:
                self._closing.append(fd)

    def clean_staging(self) -> int:
        """Remove temp files a killed writer left (caller holds the writer lock)."""
        n = 0
        for fn in os.listdir(self.staging):
            try:
                os.unlink(os.path.join(self.staging, fn))
                n += 1
            except (FileNotFoundError, IsADirectoryError):
                pass
        return n

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()
            while self._closing:
                os.close(self._closing.popleft())
