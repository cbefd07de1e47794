"""A directory of cached object pieces, bounded in bytes (least recently used go first).

The S3 backend keeps the pack blocks it fetched here, so a second read of the same data is
a local file read. Entries are immutable (pack objects never change) and every chunk read
from them is still checked against its id, so a damaged entry costs a refetch, not bad data.
Several processes may share the directory; each keeps its own account of it, so the bound
holds per process (a file another process removed is simply a miss).
"""

from __future__ import annotations

import os
import threading

from streams.lru import LRU


class DiskCache:
    def __init__(self, directory: str, max_bytes: int):
        self.dir = directory
        self.max_bytes = max_bytes
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        # name -> size of the entries this process knows of; evicting one removes its file
        self._sizes = LRU(max_bytes, weight=lambda size: size, evicted=self._unlink)
        os.makedirs(directory, mode=0o700, exist_ok=True)
        found = []
        for e in os.scandir(directory):
            if e.name.endswith(".tmp"):
                continue
            try:
                st = e.stat()
            except FileNotFoundError:
                continue
            found.append((st.st_mtime, e.name, st.st_size))
        for _, name, size in sorted(found):   # oldest first: they go first
            if size > max_bytes:
                self._unlink(name)
            else:
                self._sizes.put(name, size)

    def get(self, key: str, offset: int = 0, length: int = -1) -> bytes | None:
        """The entry (or ``length`` bytes of it from ``offset``; -1: to its end), None if absent."""
        try:
            fd = os.open(os.path.join(self.dir, key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            with self._lock:
                self.misses += 1
            self._sizes.pop(key)
            return None
        try:
            if length < 0:
                length = os.fstat(fd).st_size - offset
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        with self._lock:
            self.hits += 1
        self._sizes.get(key)                # refreshes its place
        return data

    def __contains__(self, key: str) -> bool:
        if key in self._sizes:
            return True
        return os.path.exists(os.path.join(self.dir, key))

    def put(self, key: str, data: bytes) -> None:
        if len(data) > self.max_bytes:
            return
        p = os.path.join(self.dir, key)
        tmp = f"{p}.{os.getpid()}.{threading.get_ident()}.tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, p)
        self._sizes.put(key, len(data))

    def discard(self, key: str) -> None:
        self._sizes.pop(key)
        self._unlink(key)

    @property
    def bytes(self) -> int:
        return self._sizes.total

    def _unlink(self, name: str, _size: int = 0) -> None:
        try:
            os.unlink(os.path.join(self.dir, name))
        except FileNotFoundError:
            pass
