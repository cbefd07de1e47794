"""A bounded, thread-safe LRU of decompressed chunks, measured in bytes.

Keyed by chunk hash (content address: a key never goes stale). A chunk bigger than the
whole bound is simply not cached. Bound 0 disables caching.

A mount keeps a small cache (its file data lives in the kernel's page cache), but a plain
LRU smaller than a reader's working set misses every time when that set is read again in
the same order: ``cp -r`` of the bench volume's ``small/`` reads its 40 directories one
after the other, and each directory's files lie all over the volume, so every directory
touches the same ~700 frames (46 MiB) and a 16 MiB LRU decoded 3,817 frames for 4,000
files (713 at 64 MiB). ``grow_to`` lets the bound grow, by a sixteenth (or the entry's
weight) at a time, when an entry evicted recently (a key still remembered in ``ghosts``) is
put again: only a reader that comes back to what it just lost pays memory for it (813
frames decoded for those files); a one-pass walk (the million-entry ``find``) never does.
"""

from __future__ import annotations

from collections import OrderedDict

from streams.lru import LRU

GHOSTS = 4096   # keys of evicted entries remembered (~100 bytes each)


class ChunkCache(LRU):
    """``streams.lru.LRU`` weighed in bytes; ``max_bytes``/``bytes`` name its bound and fill.
    ``grow_to`` (> ``max_bytes``): how far the bound may grow on re-reads (see the module)."""

    __slots__ = ("grow_to", "grown", "_ghosts")

    def __init__(self, max_bytes: int, grow_to: int = 0):
        self.grow_to = grow_to
        self.grown = 0    # times the bound grew (counted for tests)
        self._ghosts: OrderedDict = OrderedDict()
        super().__init__(max_bytes, weight=len, evicted=self._remember)

    @property
    def max_bytes(self) -> int:
        return self.maxsize

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        self.maxsize = value

    @property
    def bytes(self) -> int:
        return self.total

    def _remember(self, key, value) -> None:   # under the lock
        if self.grow_to > self.maxsize:
            self._ghosts[key] = None
            if len(self._ghosts) > GHOSTS:
                self._ghosts.popitem(last=False)

    def put(self, key, value) -> None:
        if self._ghosts and key in self._ghosts:   # lost recently and wanted again
            with self._lock:
                if self._ghosts.pop(key, 0) is None and self.grow_to > self.maxsize:
                    # a step of a sixteenth: a cycle over 3x the bound fits after ~30 re-reads
                    self.maxsize = min(self.grow_to, self.maxsize + max(len(value), self.maxsize >> 4))
                    self.grown += 1
                    if self.maxsize >= self.grow_to:
                        self._ghosts.clear()
        super().put(key, value)
