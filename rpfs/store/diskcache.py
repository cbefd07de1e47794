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
from collections import OrderedDict


class DiskCache:
    def __init__(self, directory: str, max_bytes: int):
        self.dir = directory
        self.max_bytes = max_bytes
        self.hits = self.misses = 0
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self.bytes = 0
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
        for _, name, size in sorted(found):
            self._sizes[name] = size
            self.bytes += size
        self._evict()

    def get(self, key: str, offset: int = 0, length: int = -1) -> bytes | None:
        """The entry (or ``length`` bytes of it from ``offset``; -1: to its end), None if absent."""
        try:
            fd = os.open(os.path.join(self.dir, key), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            with self._lock:
                self.misses += 1
                if key in self._sizes:
                    self.bytes -= self._sizes.pop(key)
            return None
        try:
            if length < 0:
                length = os.fstat(fd).st_size - offset
            data = os.pread(fd, length, offset)
        finally:
            os.close(fd)
        with self._lock:
            self.hits += 1
            if key in self._sizes:
                self._sizes.move_to_end(key)
        return data

    def __contains__(self, key: str) -> bool:
        with self._lock:
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
        with self._lock:
            self.bytes -= self._sizes.pop(key, 0)
            self._sizes[key] = len(data)
            self.bytes += len(data)
            self._evict()

    def discard(self, key: str) -> None:
        with self._lock:
            self.bytes -= self._sizes.pop(key, 0)
        try:
            os.unlink(os.path.join(self.dir, key))
        except FileNotFoundError:
            pass

    def _evict(self) -> None:
        """Caller holds the lock (or is the constructor)."""
        while self.bytes > self.max_bytes and self._sizes:
            name, size = self._sizes.popitem(last=False)
            self.bytes -= size
            try:
                os.unlink(os.path.join(self.dir, name))
            except FileNotFoundError:
                pass
