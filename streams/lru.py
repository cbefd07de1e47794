"""The one bounded mapping with least-recently-used eviction, safe across threads.

Every cache in the readers and in rpfs is one of these: bounded by entries (the default)
or by a weight of each value (bytes of a chunk, entries of a listing), optionally told of
what it evicts (to close a file descriptor, remove a cached file).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

_MISSING = object()


class LRU:
    """A bounded mapping with least-recently-used eviction, safe across threads.

    ``weight(value)`` (default: 1 an entry) counts against ``maxsize``; a value heavier than
    ``maxsize`` is not kept. ``evicted(key, value)`` is called, under the lock, for each entry
    pushed out by the bound (not for ``pop``/``clear``)."""

    __slots__ = ("maxsize", "total", "hits", "misses", "_data", "_lock", "_weight", "_evicted")

    def __init__(self, maxsize: int, *, weight: Callable[[object], int] | None = None,
                 evicted: Callable[[object, object], None] | None = None):
        self.maxsize = maxsize
        self.total = 0              # sum of the weights held
        self.hits = 0
        self.misses = 0
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._weight = weight
        self._evicted = evicted

    def _w(self, value) -> int:
        return 1 if self._weight is None else self._weight(value)

    def get(self, key, default=None):
        # Without the lock: each OrderedDict call is atomic under the GIL, and a lookup
        # racing a ``put`` or an eviction can only miss (the caller then reads), never see
        # a torn entry. A mount's READ answered from the chunk cache makes three of these:
        # the lock was half of each one's cost. (The counts are for tests and benchmarks.)
        data = self._data
        value = data.get(key, _MISSING)  # misses are the norm in a cold walk
        if value is _MISSING:
            self.misses += 1
            return default
        try:
            data.move_to_end(key)
        except KeyError:   # evicted by another thread between the two calls
            pass
        self.hits += 1
        return value

    def put(self, key, value) -> None:
        w = self._w(value)
        with self._lock:
            old = self._data.pop(key, _MISSING)
            if old is not _MISSING:
                self.total -= self._w(old)
            if w > self.maxsize:
                return
            self._data[key] = value
            self.total += w
            self._shrink()

    def shrink(self) -> None:
        """Evict until the bound holds again (after ``maxsize`` was lowered)."""
        with self._lock:
            self._shrink()

    def _shrink(self) -> None:
        while self.total > self.maxsize and self._data:
            key, value = self._data.popitem(last=False)
            self.total -= self._w(value)
            if self._evicted is not None:
                self._evicted(key, value)

    def pop(self, key, default=None):
        with self._lock:
            value = self._data.pop(key, _MISSING)
            if value is _MISSING:
                return default
            self.total -= self._w(value)
            return value

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.total = 0

    def values(self) -> list:
        """A snapshot of the values held, least recently used first."""
        with self._lock:
            return list(self._data.values())

    def __contains__(self, key) -> bool:
        """Held? (without counting a hit or refreshing its place)"""
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)
