"""An export's writes, made on a thread of their own while the exporting thread reads on.

Writing an exported disk costs the kernel as much as reading and decoding it: the bench
disk's 820 MiB went into a tmpfs file in 0.42 s of system time (a page allocated, charged
and copied per 4 KiB), while the two read-ahead workers decoded and checked the repository's
chunks in 0.2 s each. Made by the exporting thread itself, that write time was the export's
critical path, one core writing while the other mostly waited; ``qemu-img convert`` hands
its writes to a thread pool. Here one writer thread takes them in order from a bounded
queue; the exporting thread only looks for data and queues it.

What is queued must not change until written. A stored file's decoded chunks never do
(``bytes`` or read-only views, ``Stream.views``' contract: the queue keeps a chunk alive
after the cache lets it go); a read-only view is taken to be such a view.
Other sources are read into ``scratch()`` buffers: a scratch that holds queued writes is not
handed out again until they are done. Any other writable buffer is copied when queued.

With the queue full, an exporting thread whose writes are decoded chunks waits for the
writer: the read-ahead workers need the other core, and had it made the oldest writes
itself (as it still does with scratch writes, whose reading is cheap), it did three
quarters of them on top of its own loop: the longest thread, 61-66% of the process's CPU
(perf, bench disk from the repository to raw), against 50-52% when it waits.
"""

from __future__ import annotations

import os
import threading
from collections import deque

LIMIT = 4 << 20     # bytes queued and not yet written (chunks kept alive past the cache):
# what an export decodes and has not written yet should stay in the caches of the CPU. The
# bench disk from the repository to raw (SCHED_FIFO, medians of 12): 16 MiB queued took
# 0.67 s of CPU and 28,000 page faults, 4 MiB 0.52 s and 7,700 (the kernel's copy into the
# output file read each chunk back from memory instead of the cache: tmpfs writes 0.44 ->
# 0.31 s of system time); 8 MiB 10,000 faults; 2 MiB no better than 4
SCRATCHES = 2       # read buffers: one is read into while the other's writes are made
BATCH = 64          # writes end to end made with one pwritev (IOV_MAX is 1024) ...
BATCH_BYTES = 1 << 20  # ... up to about this many bytes (a batch is freed at once: 8 MiB
# or more went past the heap's trim threshold now and then and was faulted in again; with
# the 4 MiB queue, 1 MiB batches let the exporting thread queue on while the writer writes)


class WriteBehind:
    """``write(data, offset)`` queues a pwrite on ``fd`` for the writer thread; ``close()``
    waits for them all and raises the first error met (a write error also fails the next
    ``write``). With the queue full, the exporting thread waits for the writer (scratch
    writes: makes the oldest writes itself). Use as a context manager: leaving it with an exception drops what is
    still queued."""

    def __init__(self, fd: int, scratch_size: int = 0, limit: int = LIMIT):
        self.fd = fd
        self.limit = limit
        # writes from the scratches: their memory is the scratches', bounded by them already;
        # they may fill both (reading one while the other's writes are made)
        self.scratch_limit = max(limit, SCRATCHES * scratch_size)
        self.scratch_size = scratch_size
        self._scratch: list[memoryview] = []
        self._pending: list[int] = []  # per scratch: its writes queued or being made
        self._current = 0
        self._queue: deque = deque()   # (view, offset, scratch number or -1)
        self._queued = 0               # bytes queued or being written
        self._error: BaseException | None = None
        self._until: tuple | None = None   # what the waiting exporting thread waits for
        self._stop = False
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)   # the writer waits for writes
        self._room = threading.Condition(self._lock)   # the exporting thread waits for room
        self._thread = threading.Thread(target=self._run, name="rpfs-write", daemon=True)
        self._thread.start()
        self.writes = 0        # pwrite calls made } counted for tests
        self.copied = 0        # bytes copied because their buffer could change }

    def scratch(self) -> memoryview:
        """A buffer of ``scratch_size`` bytes to read into: the last one handed out if no
        write from it is queued, else the next one once its own writes are done."""
        if not self._scratch or self._pending[self._current]:
            if len(self._scratch) < SCRATCHES:
                self._scratch.append(memoryview(bytearray(self.scratch_size)))
                self._pending.append(0)
                self._current = len(self._scratch) - 1
            else:
                self._current = (self._current + 1) % SCRATCHES
                with self._lock:
                    if self._pending[self._current]:
                        self._wait(-1, self._current)
                    if self._error is not None:
                        raise self._error
        return self._scratch[self._current]

    def write(self, data, offset: int) -> None:
        """Queue ``data`` (bytes, a read-only view, or a view of a ``scratch`` buffer) to be
        written at ``offset``."""
        view = memoryview(data)
        slot = -1
        if self._scratch and view.obj is self._scratch[self._current].obj:
            slot = self._current
        elif not view.readonly:
            view = memoryview(bytes(view))   # a buffer the caller may reuse: keep a copy
            self.copied += len(view)
        n = len(view)
        if not n:
            return
        scratch = slot >= 0
        limit = self.scratch_limit if scratch else self.limit
        with self._lock:
            while self._queued and self._queued + n > limit and self._error is None:
                if self._queue and scratch:   # full: make the oldest writes here
                    self._write_batch(self._take())
                else:   # the writer makes them: wait until it has made half
                    self._wait(self._queued // 2, None)
            if self._error is not None:
                raise self._error
            self._queue.append((view, offset, slot))
            self._queued += n
            if slot >= 0:
                self._pending[slot] += 1
            self._work.notify()

    def _wait(self, queued: int, slot: int | None) -> None:
        """Under the lock: wait until at most ``queued`` bytes are queued or being
        written, or (``slot``) that scratch has no write left, or a write failed."""
        self._until = (queued, slot)
        try:
            while self._error is None and self._queued > queued and \
                    (slot is None or self._pending[slot]):
                self._room.wait()
        finally:
            self._until = None

    def flush(self) -> None:
        """Wait until every queued write is made; raise the first write error if any."""
        with self._lock:
            if self._queued:
                self._wait(0, None)
            if self._error is not None:
                raise self._error

    def _take(self) -> tuple:
        """Under the lock: the oldest queued writes that lie end to end (a stored disk's
        chunks do), to be made in one call."""
        queue = self._queue
        views, slots, offset = [], [], queue[0][1]
        end = offset
        while queue and queue[0][1] == end and len(views) < BATCH and end - offset < BATCH_BYTES:
            view, _, slot = queue.popleft()
            views.append(view)
            slots.append(slot)
            end += len(view)
        return views, offset, end - offset, slots

    def _write_batch(self, batch: tuple) -> None:
        """Called and returns with the lock held; writes without it."""
        views, offset, total, slots = batch
        self._lock.release()
        try:
            calls = self._write(views, offset, total)
        except BaseException as e:
            self._lock.acquire()
            if self._error is None:
                self._error = e
            self._queue.clear()
            self._room.notify_all()
            return
        self._lock.acquire()
        self.writes += calls
        self._queued -= total
        for slot in slots:
            if slot >= 0:
                self._pending[slot] -= 1
        until = self._until
        if until is not None and (self._queued <= until[0] or
                                  (until[1] is not None and not self._pending[until[1]])):
            self._room.notify()

    def _run(self) -> None:
        with self._lock:
            while True:
                while not self._queue and not self._stop and self._error is None:
                    self._work.wait()
                if not self._queue or self._error is not None:
                    return
                self._write_batch(self._take())

    def _write(self, views: list, offset: int, total: int) -> int:
        """The calls it took."""
        fd = self.fd
        done = os.pwrite(fd, views[0], offset) if len(views) == 1 else os.pwritev(fd, views, offset)
        calls = 1
        if done == total:
            return calls
        for view in views:   # short: the rest one piece at a time
            if done >= len(view):
                done -= len(view)
                offset += len(view)
                continue
            view, offset, done = view[done:], offset + done, 0
            while view:
                n = os.pwrite(fd, view, offset)
                calls += 1
                view, offset = view[n:], offset + n
        return calls

    def close(self) -> None:
        """Make every queued write, stop the writer; raise the first write error if any."""
        try:
            self.flush()
        finally:
            self._halt()

    def _halt(self) -> None:
        with self._lock:
            self._stop = True
            self._work.notify()
        self._thread.join()

    def __enter__(self) -> "WriteBehind":
        return self

    def __exit__(self, kind, error, tb) -> None:
        if kind is None:
            self.close()
            return
        with self._lock:   # failing already: what is queued is not wanted
            self._queue.clear()
        self._halt()
