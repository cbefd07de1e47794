"""Decrypted blocks of a BitLocker volume, decrypted ahead of a reader that reads in order.

Decrypting is what an encrypted volume adds to a read: about 0.3 ms of CPU per MiB for
AES-CBC + Elephant. Done by the thread that answers a READ, it adds straight to that READ's
time while the other core idles. ``Blocks`` decrypts the volume in 1 MiB blocks instead:
when a read continues where a recent one ended, the blocks it covers are decrypted (once,
however many threads ask) and the next ``AHEAD`` are decrypted by a worker thread meanwhile
(one for every volume; at most ``TOTAL`` blocks are kept across volumes)
(the pread and the C pass release the GIL); the read is answered with read-only views of
the blocks (``Stream.views``), so the FUSE reply is gathered from them with no copy and no
zero-filled buffer (a block is a ``fvecrypt.blank`` buffer, written once, then only read).

Random reads pay nothing: a read that neither continues a recent one nor lies in blocks
already decrypted gets None and decrypts just its own sectors (``readinto``). A block is
filled by the volume's own ``readinto``, so it holds what a direct read gives; a block that
fails (sectors of unknown state, a truncated image) is dropped and the caller reads its own
range directly, which raises that range's own typed error if it has one.
"""

from __future__ import annotations

import concurrent.futures
import threading
import weakref
from collections import OrderedDict

from formats.bitlocker import fvecrypt

BLOCK = 1 << 20     # the kernel's largest READ: one READ spans at most two blocks
# Blocks ahead cost CPU as well as saving time: a block decrypted early is read back (by
# the reply) from L3 or memory, not from the L2 it was written in, and the block buffers in
# use are that much more memory to write through. In process, CPU per MiB of a 256 MiB
# Elephant file (best of 10, load 3): 0.31 ms decrypting into the caller's buffer, 0.32 in
# blocks with none ahead, 0.34 / 0.36 / 0.40 with 1 / 2 / 4 ahead. Two ahead keep a reader
# that asks 1 MiB per READ from waiting (a block takes about 0.35 ms).
AHEAD = 2           # blocks decrypted ahead of a reader that reads in order
KEEP = 4            # blocks kept (those being read and those ahead): 4 MiB per volume
RUNS = 4            # where the last reads ended (several readers at once)
TOTAL = 16          # blocks kept across all volumes (a mount may hold many: 16 MiB)

_pool: concurrent.futures.ThreadPoolExecutor | None = None   # one worker for every volume
_kept: OrderedDict = OrderedDict()   # (weakref to Blocks, block) -> None, oldest first
_lock = threading.Lock()


def _worker() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="rpfs-bitlocker-ahead")
        return _pool


def _kept_too(blocks: "Blocks", added: list[int]) -> None:
    """Note the blocks just added to ``blocks`` and drop the oldest of every volume's beyond
    TOTAL (called without any volume's lock held)."""
    victims = []
    with _lock:
        for k in added:
            _kept[(blocks._ref, k)] = None
        while len(_kept) > TOTAL:
            victims.append(_kept.popitem(last=False)[0])
    for ref, k in victims:
        owner = ref()
        if owner is not None:
            owner._forget(k)


class Blocks:
    """The decrypted blocks of ``volume`` (a ``BitLockerVolume``) that readers in order use."""

    def __init__(self, volume, block: int = BLOCK, ahead: int = AHEAD, keep: int = KEEP):
        self.volume = volume
        self.block, self.ahead, self.keep = block, ahead, max(keep, ahead + 2)
        self._lock = threading.Lock()
        self._blocks: OrderedDict[int, concurrent.futures.Future] = OrderedDict()
        self._ends: list[int] = []   # where recent reads ended
        self._ref = weakref.ref(self)
        self._added: list[int] = []  # blocks added under the lock, noted in _kept after it
        self.filled = 0              # blocks decrypted   } counted for tests
        self.prefetched = 0          # of those, ahead   } and benchmarks

    def views(self, offset: int, length: int, sequential: bool = False) -> list | None:
        """Read-only views holding the volume's bytes at ``[offset, offset+length)``, or None
        when this read is not one to serve from blocks (the caller reads it directly)."""
        size = self.volume.size
        if length <= 0 or offset < 0 or offset + length > size:
            return None
        b = self.block
        first, last = offset // b, (offset + length - 1) // b
        with self._lock:
            ends = self._ends
            follows = offset in ends
            if follows:
                ends.remove(offset)
            ends.append(offset + length)
            del ends[:-RUNS]
            if not (sequential or follows
                    or all(k in self._blocks for k in range(first, last + 1))):
                return None
            wanted = [self._take(k) for k in range(first, last + 1)]
            if sequential or follows:
                self._prefetch(last + 1, min(last + self.ahead, (size - 1) // b))
            added, self._added = self._added, []
        _kept_too(self, added)
        for k, (fut, mine) in zip(range(first, last + 1), wanted):
            if mine:   # every block this call took is filled, even after one has failed
                self._fill(k, fut)
        out = []
        for k, (fut, _) in zip(range(first, last + 1), wanted):
            try:
                buf = fut.result()
            except Exception:
                self._drop(k, fut)
                return None
            start = k * b
            lo, hi = max(offset, start) - start, min(offset + length, start + len(buf)) - start
            out.append(memoryview(buf)[lo:hi].toreadonly())
        return out

    def _take(self, k: int) -> tuple[concurrent.futures.Future, bool]:
        """(block k's future, True if the caller must fill it). Under the lock."""
        fut = self._blocks.get(k)
        if fut is not None:
            self._blocks.move_to_end(k)
            return fut, False
        fut = self._blocks[k] = concurrent.futures.Future()
        self._added.append(k)
        self._evict()
        return fut, True

    def _evict(self) -> None:
        while len(self._blocks) > self.keep:
            self._blocks.popitem(last=False)

    def _prefetch(self, first: int, last: int) -> None:
        """Decrypt blocks ``first..last`` on the worker (those not kept or in flight). Under
        the lock."""
        for k in range(first, last + 1):
            if k in self._blocks:
                continue
            fut = self._blocks[k] = concurrent.futures.Future()
            self._added.append(k)
            self._evict()
            self.prefetched += 1
            _worker().submit(self._fill, k, fut)

    def _fill(self, k: int, fut: concurrent.futures.Future) -> None:
        """Decrypt block ``k`` into a new buffer: ``fut``'s result, or its exception."""
        start = k * self.block
        n = min(self.block, self.volume.size - start)
        try:
            buf = fvecrypt.blank(n)
            got = self.volume.readinto(start, buf)
            if got != n:
                raise self.volume._short(start, n, got)
        except BaseException as e:
            fut.set_exception(e)
            return
        with self._lock:
            self.filled += 1
        fut.set_result(buf)

    def _forget(self, k: int) -> None:
        with self._lock:
            self._blocks.pop(k, None)

    def _drop(self, k: int, fut: concurrent.futures.Future) -> None:
        with self._lock:
            if self._blocks.get(k) is fut:
                del self._blocks[k]
