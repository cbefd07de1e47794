"""A bounded, thread-safe LRU of decompressed chunks, measured in bytes.

Keyed by chunk hash (content address: a key never goes stale). A chunk bigger than the
whole bound is simply not cached. Bound 0 disables caching.
"""

from __future__ import annotations

from streams.lru import LRU


class ChunkCache(LRU):
    """``streams.lru.LRU`` weighed in bytes; ``max_bytes``/``bytes`` name its bound and fill."""

    def __init__(self, max_bytes: int):
        super().__init__(max_bytes, weight=len)

    @property
    def max_bytes(self) -> int:
        return self.maxsize

    @max_bytes.setter
    def max_bytes(self, value: int) -> None:
        self.maxsize = value

    @property
    def bytes(self) -> int:
        return self.total
