"""The mount's request loop on trio: reader tasks take requests from a libfuse session
(rpfs/_fusell.c) and hand each to the adapter, which answers it on the loop or in a worker.

One task reads at a time (``ReadLock``) and then handles what it read; when it is about to
handle a request and no other task is waiting to read, it starts another reader (up to
``MAX_TASKS``), so a request waiting for a worker thread never holds up the next one.

Waiting for a request costs a trip through trio's scheduler and an epoll re-registration:
about half of what a request answered from memory costs (`ls -l` of 50,000 files is
~150,000 requests). So the lock is taken at once when it is free, and a /dev/fuse that
already holds a request (a zero-timeout poll) is read at once; every ``YIELD_EVERY``
requests the task still goes through trio's wait, so worker-thread completions and other
tasks run. An idle mount waits in trio. Unmounting ends the loop (the read fails with
ENODEV and libfuse marks the session exited), and so do SIGTERM and SIGINT.

When no worker thread is busy, the loop also polls /dev/fuse for up to ``SPIN`` seconds
before sleeping in epoll: a program asking one thing after another (``ls -l``, ``stat``
of each file) sends its next request a few microseconds after our answer, and a thread
that went to sleep in between pays the CPU's wake-up from idle, which on this machine
cost more than the answer itself (an idle machine's `ls -l` of 50,000 files: 8.1 s without,
4.4 s with). Not while workers run: the spin would hold the GIL they need.
"""

from __future__ import annotations

import select
import signal
import time
from typing import Awaitable, Callable

import trio

YIELD_EVERY = 8
SPIN = 50e-6
MAX_TASKS = 64  # requests handled at once (each waits for at most one worker thread)


class ReadLock:
    """``async with`` like ``trio.Lock``, with no checkpoint when the lock is free. A release hands the lock to the first parked task, like trio's."""

    def __init__(self):
        self._held = False
        self._lot = trio.lowlevel.ParkingLot()

    async def __aenter__(self) -> None:
        if not self._held:
            self._held = True
            return
        await self._lot.park()   # woken by __aexit__, which passes the lock on

    async def __aexit__(self, *exc) -> None:
        if self._lot:
            self._lot.unpark()
        else:
            self._held = False


class _Ready:
    """Whether a fd can be read without blocking (one ``poll`` with no timeout)."""

    def __init__(self):
        self._polls: dict[int, select.poll] = {}
        self.fast = 0   # reads that did not go through trio's wait (counted for tests)

    def __call__(self, fd: int) -> bool:
        p = self._polls.get(fd)
        if p is None:
            p = self._polls[fd] = select.poll()
            p.register(fd, select.POLLIN)
        return bool(p.poll(0))


ready = _Ready()
_streak = 0
busy = bool   # () -> whether worker threads are running (set by install)


def _arrives(fd: int) -> bool:
    """A request is there, or comes within SPIN seconds (only polled while nothing else
    needs this process's GIL)."""
    if ready(fd):
        return True
    if busy():
        return False
    end = time.perf_counter() + SPIN
    while time.perf_counter() < end:
        if ready(fd):
            return True
    return False


async def wait_readable(fd: int) -> None:
    global _streak
    if _streak < YIELD_EVERY and _arrives(fd):
        _streak += 1
        ready.fast += 1
        return
    _streak = 0
    await trio.lowlevel.wait_readable(fd)


class _Readers:
    """How many reader tasks there are and how many are free to read."""

    def __init__(self):
        self.tasks = 0
        self.free = 0


async def serve(session, handle: Callable[[tuple], Awaitable[None]],
                workers_busy: Callable[[], bool] = bool) -> None:
    """Serve ``session`` until it is unmounted or the process gets SIGTERM/SIGINT: every
    request ``session.process()`` returns goes to ``handle``, which answers it."""
    global busy
    busy = workers_busy
    lock, readers = ReadLock(), _Readers()
    async with trio.open_nursery() as nursery:
        async def stop_on_signal():
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for _ in signals:
                    session.exit()
                    nursery.cancel_scope.cancel()

        async def reader():
            fd = session.fd
            while True:
                async with lock:
                    await wait_readable(fd)
                    request = session.process()
                if request is None:
                    if session.exited:
                        nursery.cancel_scope.cancel()
                        return
                    continue
                readers.free -= 1
                if readers.free == 0 and readers.tasks < MAX_TASKS:
                    readers.tasks += 1
                    readers.free += 1
                    nursery.start_soon(reader)
                try:
                    await handle(request)
                finally:
                    readers.free += 1

        nursery.start_soon(stop_on_signal)
        readers.tasks = readers.free = 1
        nursery.start_soon(reader)
