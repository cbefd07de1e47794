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
        written at ``offset``."""
        view = memoryview(data)
        if not view.readonly and not (self._scratch and view.obj is self._scratch[self._current].obj):
            view = memoryview(bytes(view))   # a buffer the caller may reuse: keep a copy
            self.copied += len(view)
        n = len(view)
        if not n:
            return
        with self._lock:
            while self._queued and self._queued + n > self.limit and self._error is None:
                self._room.wait()
            if self._error is not None:
                raise self._error
            self._queue.append((view, offset))
            self._queued += n
            self._sequence += 1
            if self._scratch and view.obj is self._scratch[self._current].obj:
                self._dirty[self._current] = self._sequence
            self._work.notify()

    def _wait_written(self, sequence: int) -> None:
        with self._lock:
            while self._written < sequence and self._error is None:
                self._room.wait()
            if self._error is not None:
                raise self._error

    def flush(self) -> None:
        """Wait until every queued write is made; raise the writer's error if there was one."""
        with self._lock:
            sequence = self._sequence
        self._wait_written(sequence)

    def _run(self) -> None:
        fd = self.fd
        while True:
            with self._lock:
                while not self._queue and not self._stop:
                    self._work.wait()
                if not self._queue:
                    return
                view, offset = self._queue.popleft()
            n = len(view)
            try:
                while view:
                    done = os.pwrite(fd, view, offset)
                    self.writes += 1
                    view, offset = view[done:], offset + done
            except BaseException as e:   # kept for the exporting thread to raise
                with self._lock:
                    self._error = e
                    self._queue.clear()
                    self._room.notify_all()
                return
            with self._lock:
                self._queued -= n
                self._written += 1
                self._room.notify_all()

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
