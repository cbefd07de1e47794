"""Read-ahead for stored files: a sequential reader finds its next chunks already decoded.

Reading a stored chunk is a pack read, a zstd decompression and a blake3 check. Done on the
reader's thread, one chunk at a time, that work adds up to the whole cost of a sequential
read, while the second core sits idle. Both zstd and blake3 release the GIL, so here a
small pool decodes the chunks just ahead of each sequential reader into the repository's
chunk cache, and the reader copies from there.

- ``ChunkLoader`` (one per repository) loads each chunk once however many readers and
  read-ahead jobs want it at the same time (a load in flight is waited on, not repeated),
  and runs read-ahead jobs on its pool. A read-ahead job that fails is dropped silently: the
  error reaches a reader only if it reads that chunk itself (and then names where).
- ``ReadAhead`` wraps one stored file: it remembers where the last few sequential runs of
  reads ended (several readers of one file, e.g. a VHDX served to a mount, interleave), and
  when a read continues one of them it schedules the chunks of the next ``window`` bytes.
  ``readinto`` copies straight from the cached chunks into the caller's buffer.

Random readers pay (almost) nothing: read-ahead starts only once three reads in a row each
began where the one before ended (give or take one chunk), the run spans a whole chunk
(small tables read in a row, as opening a file system does, are not followed) and its
reads cover at least half of that span (4 KiB reads at random that land near each other
are not a run: 1,000 of them over a 384 MiB file set off 16 MiB of read-ahead, read from
disk between their own reads), and a small read of a framed
chunk that is neither cached nor being decoded takes only its frames (``StoredFile.part``).
"""

from __future__ import annotations

import threading

from streams.errors import UsageError
from streams.stream import Stream
from rpfs.workers import Outcome, Pool

WORKERS = 2                 # this machine class has two cores; zstd and blake3 release the GIL
WINDOW = 16 << 20           # bytes decoded ahead of a sequential reader
RUNS = 8                    # sequential runs remembered per file
EXPORT_WINDOW = 4 << 20    # bytes decoded ahead of an export (``views(sequential=True)``): it
# writes each chunk once, so what is decoded ahead is only waiting; kept small, the chunks
# are still in the CPU's caches when written out (bench disk to raw with the write queue at
# 4 MiB: 0.67 -> 0.52 s of CPU against a 16 MiB window; formats/writebehind.py LIMIT)
SEQUENTIAL = 3              # reads in a row that make a run sequential (random reads rarely do)
# ... and they must span a whole chunk: opening a file system reads small tables in a row
# ($UpCase: 128 KiB); decoding 16 MiB ahead of those cost a mount's first listing 26 chunk
# decodes instead of 2 (46-73 ms instead of 14-16, 1,000-recovery-point bench repository)


class _Load(Outcome):
    """One chunk load in flight: whoever else wants that chunk waits for its result."""

    __slots__ = ("started",)

    def __init__(self, started: bool = True):
        super().__init__()
        self.started = started   # a read-ahead job sets it when it begins (under the loader's lock)


class ChunkLoader:
    """Single-flight chunk loads and a pool that decodes chunks ahead of readers."""

    def __init__(self, load, cache, workers: int = WORKERS):
        self._load = load            # ChunkLoc -> bytes (cache-aware, verifies the hash)
        self.cache = cache
        self.workers = workers
        self._inflight: dict[bytes, _Load] = {}
        self._lock = threading.Lock()
        self._pool = None                # an rpfs.workers.Pool once read-ahead starts
        self._closed = False
        self.prefetched = 0          # read-ahead jobs started   } counted for tests and
        self.loaded = 0              # chunk loads that missed  } benchmarks
        self.taken = 0               # read-ahead jobs a reader took over before they began

    def get(self, loc) -> bytes:
        """The chunk's data, decoded once even if several threads ask at the same time."""
        data = self.cache.get(loc.hash)
        if data is not None:
            return data
        with self._lock:
            fut = self._inflight.get(loc.hash)
            owner = fut is None
            if owner:
                fut = self._inflight[loc.hash] = _Load()
            elif not fut.started:
                # queued for read-ahead but not begun: decode it here rather than wait
                # behind the queue (a walk wants its hinted chunks in its own order)
                fut.started = owner = True
                self.taken += 1
        if not owner:
            return fut.result()
        return self._run(loc, fut)

    def _run(self, loc, fut: _Load) -> bytes:
        try:
            # another load may have finished between our cache miss and taking the slot
            data = self.cache.get(loc.hash)
            if data is None:
                with self._lock:
                    self.loaded += 1
                data = self._load(loc)
        except BaseException as e:
            fut.set_exception(e)
            raise
        else:
            fut.set_result(data)
            return data
        finally:
            with self._lock:
                self._inflight.pop(loc.hash, None)

    def pending(self) -> int:
        """Chunk loads queued or running now."""
        return len(self._inflight)

    def has(self, h: bytes) -> bool:
        """Decoded whole already, or being decoded now."""
        return h in self.cache or h in self._inflight

    def prefetch(self, locs) -> None:
        """Decode these chunks into the cache in the background (those not cached or in flight)."""
        for loc in locs:
            if loc.hash in self.cache:
                continue
            with self._lock:
                if self._closed or loc.hash in self._inflight:
                    continue
                fut = self._inflight[loc.hash] = _Load(started=False)
                if self._pool is None:
                    self._pool = Pool(self.workers, "rpfs-readahead")
                self.prefetched += 1
                self._pool.submit(self._background, loc, fut)

    def _background(self, loc, fut) -> None:
        with self._lock:
            if fut.started:   # a reader took it over (``get``)
                return
            fut.started = True
        try:
            self._run(loc, fut)
        except BaseException:
            pass  # nobody asked for it yet: a reader that does will load it and see the error

    def close(self) -> None:
        """Stop read-ahead; a load cancelled here fails for whoever waits on it (no hang)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel=True)
        with self._lock:
            left, self._inflight = self._inflight, {}
        for fut in left.values():
            if not fut.done():
                fut.set_exception(UsageError("the repository was closed"))


class ReadAhead(Stream):
    """A stored file whose sequential readers get the next chunks decoded ahead of them.

    Everything but reading (``ids``, ``locs``, ``chunk``, ``rp``, ``path``, ...) is the
    stored file's own."""

    def __init__(self, file, loader: ChunkLoader, window: int = WINDOW):
        self.file = file
        self.loader = loader
        self.size = file.size
        self.name = file.name
        self.chunk_size = file.chunk_size
        # chunks to keep decoded ahead: at least two, and never more than a quarter of the
        # cache (read-ahead must not evict what it is about to hand out)
        fit = loader.cache.max_bytes // 4 // self.chunk_size
        self.ahead = min(max(2, window // self.chunk_size), fit)
        self.ahead_export = min(max(2, EXPORT_WINDOW // self.chunk_size), self.ahead)
        self._runs: list[list[int]] = []   # [end, last chunk scheduled, reads, start, bytes], newest last
        self._scheduled = (0, -1)          # chunks [lo, hi] the last sequential ``views`` scheduled
        self._lock = threading.Lock()

    def __getattr__(self, name):
        if name == "file":   # not set yet: no recursion
            raise AttributeError(name)
        return getattr(self.file, name)

    def _note(self, offset: int, length: int) -> None:
        """Track sequential runs; schedule read-ahead for the one this read continues."""
        if self.ahead <= 0:
            return
        cs = self.chunk_size
        end = offset + length
        last = (end - 1) // cs
        want = None
        with self._lock:
            for i, run in enumerate(self._runs):
                if run[0] - cs <= offset <= run[0] + cs:
                    del self._runs[i]
                    run[2] += 1
                    run[4] += length
                    start = max(run[1] + 1, last + 1)
                    stop = min(last + self.ahead, (self.size - 1) // cs)
                    span = end - run[3]
                    if run[2] >= SEQUENTIAL and span >= cs and 2 * run[4] >= span and start <= stop:
                        want = range(start, stop + 1)
                        run[1] = stop
                    run[0] = end
                    self._runs.append(run)
                    break
            else:
                self._runs.append([end, last, 1, offset, length])
                if len(self._runs) > RUNS:
                    del self._runs[0]
        if want:
            ids, locs = self.file.ids, self.file.locs
            self.loader.prefetch(locs[ids[i]] for i in want if ids[i] and ids[i] in locs)

    def _read(self, offset: int, length: int) -> bytes:
        self._note(offset, length)
        return self.file._read(offset, length)

    def _pieces_into(self, offset: int, length: int, out) -> bool:
        return self.file.pieces(offset, length, out)

    def _readinto(self, offset: int, view: memoryview) -> None:
        """Copies each chunk's bytes once, straight into ``view`` (bounds checked by
        ``Stream.readinto``)."""
        self._note(offset, len(view))
        pos = 0
        for piece in self._views(offset, len(view)):
            view[pos:pos + len(piece)] = piece
            pos += len(piece)

    def views(self, offset: int, length: int, sequential: bool = False):
        """The cached chunks' bytes themselves, read-only (a chunk is ``bytes`` or a
        read-only view), one per chunk the range touches: an export writes them out with
        no copy in between. Zero chunks are views of a shared zero buffer. ``sequential``
        (an export, which reads on in order past holes): as each chunk is reached, the next
        ``ahead_export`` are being decoded in the background, without waiting for a run of
        reads to show it, and each chunk handed out to its end leaves the cache (read once:
        its memory then serves the chunks decoded next)."""
        if offset < 0 or length <= 0 or offset + length > self.size:
            return None
        if sequential:
            # no cache (ahead 0): chunks decoded ahead could not be kept
            return self._views(offset, length, once=True, ahead=self.ahead > 0)
        self._note(offset, length)
        return self._views(offset, length)

    def cached_views(self, offset: int, length: int):
        """``views`` when every chunk (or, for a small part of a framed chunk, every frame)
        the range touches is decoded in the cache now, else None: never reads or decodes
        (``StoredFile.cached_part``). Not noted as a sequential run (``_note``): a reader
        served from memory needs no read-ahead (the mount's loop asks, for small files; it
        cost a third of such a READ's instructions)."""
        if offset < 0 or length <= 0 or offset + length > self.size:
            return None
        cs, part = self.chunk_size, self.file.cached_part
        if offset // cs == (offset + length - 1) // cs:   # the usual: inside one chunk
            i = offset // cs
            got = part(i, offset - i * cs, offset + length - i * cs)
            if got is False:
                return None
            if got is None:
                return [memoryview(_ZEROS)[:length] if length <= len(_ZEROS) else memoryview(bytes(length))]
            data, at = got
            return [memoryview(data)[at:at + length].toreadonly()]
        out = []
        pos, end = offset, offset + length
        while pos < end:
            i = pos // cs
            take = min(end, (i + 1) * cs) - pos
            start = pos - i * cs
            got = part(i, start, start + take)
            if got is False:
                return None
            if got is None:
                out.append(memoryview(_ZEROS)[:take] if take <= len(_ZEROS) else memoryview(bytes(take)))
            else:
                data, at = got
                out.append(memoryview(data)[at:at + take].toreadonly())
            pos += take
        return out

    def _ahead(self, offset: int, length: int) -> None:
        """Schedule the range's other chunks and the next ``ahead_export``: only those past
        what the previous call scheduled when this read starts inside that (an export
        reading on), so each chunk is offered to the loader once, not ``ahead`` times."""
        cs = self.chunk_size
        first, last = offset // cs, (offset + length - 1) // cs
        stop = min(last + self.ahead_export, (self.size - 1) // cs)
        lo, hi = self._scheduled
        start = hi + 1 if lo <= first <= hi else first + 1
        self._scheduled = (first, max(stop, hi) if lo <= first <= hi else stop)
        if start > stop:
            return
        ids, locs = self.file.ids, self.file.locs
        self.loader.prefetch(locs[ids[i]] for i in range(start, stop + 1) if ids[i] and ids[i] in locs)

    def _will_need(self, offset: int, length: int) -> int:
        """``Stream.will_need``: the chunks that hold the range are decoded whole by the pool
        now, so the small reads that follow (an NTFS walk's $MFT blocks) find them decoded,
        or wait for them, instead of each decoding its frames on the reader's thread."""
        # never more queued than the read-ahead window (a quarter of the cache): chunks
        # decoded far ahead of a walk would be evicted before it reaches them
        room = self.ahead - self.loader.pending()
        if room <= 0:
            return 0
        cs = self.chunk_size
        ids, locs = self.file.ids, self.file.locs
        first, last = offset // cs, (offset + length - 1) // cs
        last = min(last, first + room - 1)
        self.loader.prefetch(locs[ids[i]] for i in range(first, last + 1) if ids[i] and ids[i] in locs)
        return min(offset + length, (last + 1) * cs) - offset

    def _views(self, offset: int, length: int, once: bool = False, ahead: bool = False):
        """``once``: a chunk handed out to its end leaves the cache (an export reads each
        chunk once; the view handed out keeps its bytes until they are written). ``ahead``:
        the chunks after each one are scheduled as it is reached (a VHDX export asks 8 MiB
        at a time: not all of them at once)."""
        cs = self.chunk_size
        pos, end = offset, offset + length
        while pos < end:
            i = pos // cs
            take = min(end, (i + 1) * cs) - pos
            start = pos - i * cs
            if ahead:
                self._ahead(pos, take)
            got = self.file.part(i, start, start + take)
            if once and got is not None and start + take == min(cs, self.size - i * cs):
                self.loader.cache.pop(self.file.locs[self.file.ids[i]].hash)
            if got is None:
                yield memoryview(_ZEROS)[:take] if take <= len(_ZEROS) else memoryview(bytes(take))
            else:
                data, at = got
                yield memoryview(data)[at:at + take].toreadonly()
            pos += take

    def extents(self, offset: int = 0, length: int | None = None):
        return self.file.extents(offset, length)


_ZEROS = bytes(1 << 20)
