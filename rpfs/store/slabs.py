"""Memory for decoded chunks in huge pages, for a reader that keeps many of them (a restore).

zstd writes each decoded chunk into a newly allocated buffer; a restore keeps every chunk
in its cache, so nothing freed is reused and each 1 MiB chunk first touches 256 fresh
4 KiB pages: ~19,000 page faults for the bench's 4,000 small files (64% of its restore
phase's faults), about 2 us each here. ``Slabs`` hands out each chunk's buffer from a
16 MiB anonymous mapping advised as transparent huge pages (``MADV_HUGEPAGE``; the kernel
aligns such a mapping to 2 MiB): 8 faults per slab, and the kernel zeroes 2 MiB at a time
(64 MiB touched: 16,900 faults and ~40 ms of CPU in 4 KiB pages, 32 faults and 10-17 ms in
huge pages on this VM).

A slab is never written again once handed out: each buffer is a fresh part of it, and the
slab goes back to the system when the last view of any of its buffers is gone (a cached
chunk, or a view a reader still holds). So a slab may outlive most of its chunks; at
most one slab per cached chunk, in practice a few beyond what the cache holds, since a
cache evicts in about the order chunks were decoded.
"""

from __future__ import annotations

import mmap
import threading

SLAB = 16 << 20


class Slabs:
    """Bump allocation of writable buffers from huge-page slabs (thread-safe)."""

    def __init__(self, slab: int = SLAB):
        self.slab = slab
        self._view: memoryview | None = None
        self._at = 0
        self._lock = threading.Lock()
        self.mapped = 0          # slabs mapped (counted for tests)

    def take(self, size: int) -> memoryview | None:
        """A writable buffer of ``size`` bytes nobody else uses; None when ``size`` is
        more than a slab, or no memory can be mapped (the caller allocates as before)."""
        if not 0 < size <= self.slab:
            return None
        with self._lock:
            if self._view is None or self._at + size > self.slab:
                try:
                    m = mmap.mmap(-1, self.slab, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
                except OSError:
                    return None
                try:
                    m.madvise(mmap.MADV_HUGEPAGE)
                except (OSError, AttributeError):
                    pass   # no transparent huge pages: still one mapping per 16 chunks
                self._view, self._at = memoryview(m), 0
                self.mapped += 1
            at = self._at
            self._at = at + ((size + 4095) & ~4095)
            return self._view[at:at + size]
