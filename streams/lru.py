"""A small bounded mapping with least-recently-used eviction, safe across threads.

Shared by the NTFS reader's caches and the FUSE adapter's.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

_MISSING = object()


class LRU:
    """A bounded mapping with least-recently-used eviction, safe across threads."""

    __slots__ = ("maxsize", "_data", "_lock", "hits", "misses")

    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key, default=None):
        with self._lock:
            value = self._data.get(key, _MISSING)  # misses are the norm in a cold walk
            if value is _MISSING:
                self.misses += 1
                return default
            self._data.move_to_end(key)
            self.hits += 1
            return value

    def put(self, key, value) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def pop(self, key, default=None):
        with self._lock:
            return self._data.pop(key, default)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
