"""An export's writes, made on a thread of their own while the exporting thread reads on.

Writing an exported disk costs the kernel as much as reading and decoding it: the bench
disk's 820 MiB went into a tmpfs file in 0.42 s of system time (a page allocated, charged
and copied per 4 KiB), while the two read-ahead workers decoded and checked the repository's
chunks in 0.2 s each. Made by the exporting thread itself, that write time was the export's
critical path, one core writing while the other mostly waited; ``qemu-img convert`` hands
its writes to a thread pool. Here one writer thread takes them in order from a bounded
queue; the exporting thread only looks for data and queues it.

What is queued must not change until written. A stored file's decoded chunks never do
(``bytes`` or read-only views: the queue keeps a chunk alive after the cache lets it go).
Other sources are read into ``scratch()`` buffers: a scratch that holds queued writes is not
handed out again until they are done. Any other writable buffer is copied when queued.
"""

from __future__ import annotations

import os
import threading
from collections import deque

LIMIT = 16 << 20    # bytes queued and not yet written (chunks kept alive past the cache;
# bench disk to raw: 32 MiB faulted in 24,000 pages, 16 MiB 15,000-20,000, 8 MiB 14,000-17,500)
SCRATCHES = 2       # read buffers: one is read into while the other's writes are made
BATCH = 64          # writes end to end made with one pwritev (IOV_MAX is 1024) ...
BATCH_BYTES = 4 << 20  # ... up to about this many bytes (a batch is freed at once: 8 MiB
# or more went past the heap's trim threshold now and then and was faulted in again)


class WriteBehind:
    """``write(data, offset)`` queues a pwrite on ``fd`` for the writer thread; ``close()``
    waits for them all and raises the first error the writer met (a write error also
    fails the next ``write``). Use as a context manager: leaving it with an exception
    drops what is still queued."""

    def __init__(self, fd: int, scratch_size: int = 0, limit: int = LIMIT):
        self.fd = fd
        self.limit = limit
        self.scratch_size = scratch_size
        self._scratch: list[memoryview] = []
        self._dirty: list[int] = []    # per scratch: writes queued from it (sequence number), 0: none
        self._current = 0
        self._queue: deque = deque()
        self._queued = 0               # bytes queued or being written
        self._sequence = 0             # writes queued so far
        self._written = 0              # writes done so far (in queue order)
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
        if not self._scratch:
            self._scratch.append(memoryview(bytearray(self.scratch_size)))
            self._dirty.append(0)
            return self._scratch[0]
        if not self._dirty[self._current]:
            return self._scratch[self._current]
        self._current = (self._current + 1) % SCRATCHES
        if self._current == len(self._scratch):
            self._scratch.append(memoryview(bytearray(self.scratch_size)))
            self._dirty.append(0)
        else:
            self._wait_written(self._dirty[self._current])
            self._dirty[self._current] = 0
        return self._scratch[self._current]

    def write(self, data, offset: int) -> None:
        """Queue ``data`` (bytes, a read-only view, or a view of a ``scratch`` buffer) to be
        written at ``offset``. With the queue full, waits until it is half empty (one wake-up
        per half a queue, not one per write)."""
        view = memoryview(data)
        if not view.readonly and not (self._scratch and view.obj is self._scratch[self._current].obj):
            view = memoryview(bytes(view))   # a buffer the caller may reuse: keep a copy
            self.copied += len(view)
        n = len(view)
        if not n:
            return
        with self._lock:
            if self._queued and self._queued + n > self.limit:
                self._wait(self.limit // 2, None)
            if self._error is not None:
                raise self._error
            self._queue.append((view, offset))
            self._queued += n
            self._sequence += 1
            if self._scratch and view.obj is self._scratch[self._current].obj:
                self._dirty[self._current] = self._sequence
            self._work.notify()

    def _wait(self, queued: int, written: int | None) -> None:
        """Under the lock: wait until at most ``queued`` bytes are queued, or ``written``
        writes are made, or the writer failed (the writer wakes us only then)."""
        self._until = (queued, written)
        try:
            while self._error is None and self._queued > queued and \
                    (written is None or self._written < written):
                self._room.wait()
        finally:
            self._until = None

    def _wait_written(self, sequence: int) -> None:
        with self._lock:
            if self._written < sequence:
                self._wait(-1, sequence)
            if self._error is not None:
                raise self._error

    def flush(self) -> None:
        """Wait until every queued write is made; raise the writer's error if there was one."""
        with self._lock:
            sequence = self._sequence
        self._wait_written(sequence)

    def _run(self) -> None:
        fd = self.fd
        queue = self._queue
        while True:
            with self._lock:
                while not queue and not self._stop:
                    self._work.wait()
                if not queue:
                    return
                # what lies end to end goes out in one call (a stored disk's chunks do)
                views, offset = [], queue[0][1]
                end = offset
                while queue and queue[0][1] == end and len(views) < BATCH and \
                        end - offset < BATCH_BYTES:
                    view = queue.popleft()[0]
                    views.append(view)
                    end += len(view)
            try:
                self._write(fd, views, offset, end - offset)
            except BaseException as e:   # kept for the exporting thread to raise
                with self._lock:
                    self._error = e
                    queue.clear()
                    self._room.notify_all()
                return
            with self._lock:
                self._queued -= end - offset
                self._written += len(views)
                until = self._until
                if until is not None and (self._queued <= until[0] or
                                          (until[1] is not None and self._written >= until[1])):
                    self._room.notify()

    def _write(self, fd: int, views: list, offset: int, total: int) -> None:
        if len(views) == 1:
            done = os.pwrite(fd, views[0], offset)
        else:
            done = os.pwritev(fd, views, offset)
        self.writes += 1
        if done == total:
            return
        # short: the rest one piece at a time
        for view in views:
            if done >= len(view):
                done -= len(view)
                offset += len(view)
                continue
            view, offset, done = view[done:], offset + done, 0
            while view:
                n = os.pwrite(fd, view, offset)
                self.writes += 1
                view, offset = view[n:], offset + n

    def close(self) -> None:
        """Make every queued write, stop the writer; raise its error if it met one."""
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
