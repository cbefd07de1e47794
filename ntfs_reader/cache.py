"""Every cache size of the NTFS reader in one place, and the small thread-safe LRU they use.

The FUSE layer calls from many worker threads at once; parsed objects are immutable once
built, so a lock around the dictionary is all the sharing needs. Two threads may parse the
same record at the same moment; both results are equal and the second one wins.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

RECORD_CACHE = 8192          # parsed MFT records (about 1-4 KiB of bytes each)
MFT_BLOCK = 64 << 10         # $MFT is read in blocks this size (64 records of 1 KiB)
MFT_BLOCK_CACHE = 64         # raw $MFT blocks kept (4 MiB): a directory's children sit together
ENTRY_ATTRS_CACHE = 4096     # merged attribute sets of files (base + extension records)
INDEX_NODE_CACHE = 1024      # parsed INDX records (4 KiB each)
# Decoded runlists live in their parsed attribute, so RECORD_CACHE bounds them too.
COMPRESSED_UNIT_CACHE = 64   # decompressed compression units (64 KiB each typically)
SECURITY_CACHE = 1024        # security descriptors by security id

MAX_INDEX_DEPTH = 64         # B+tree depth bound (a real tree of 2^32 names is < 10 deep)
MAX_EXTENSION_RECORDS = 4096 # extension records one file may have through its attribute list
MAX_RESIDENT_READ = 1 << 20  # bound on metadata we read whole (attribute lists, reparse data)
MAX_COMPRESSION_UNIT = 1 << 20  # bytes; NTFS writes 16 clusters of <= 4 KiB (64 KiB)


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

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)
