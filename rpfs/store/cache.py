"""A bounded, thread-safe LRU of decompressed chunks, measured in bytes.

Keyed by chunk hash (content address: a key never goes stale). A chunk bigger than the
whole bound is simply not cached. Bound 0 disables caching.
"""

from __future__ import annotations

import threading
from collections import OrderedDict


class ChunkCache:
    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._d: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> bytes | None:
        with self._lock:
            v = self._d.get(key)
            if v is None:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return v

    def put(self, key: bytes, value: bytes) -> None:
        n = len(value)
        if n > self.max_bytes:
            return
        with self._lock:
            old = self._d.pop(key, None)
            if old is not None:
                self.bytes -= len(old)
            self._d[key] = value
            self.bytes += n
            while self.bytes > self.max_bytes:
                _, v = self._d.popitem(last=False)
                self.bytes -= len(v)

    def __contains__(self, key: bytes) -> bool:
        """Cached? (without counting a hit or refreshing its place)"""
        return key in self._d

    def clear(self) -> None:
        with self._lock:
            self._d.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._d)
