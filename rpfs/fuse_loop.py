"""pyfuse3's request loop on trio with fewer trips through the scheduler.

pyfuse3 takes what it needs from trio through its module attribute ``pyfuse3.trio`` (its
``pyfuse3.asyncio`` swaps that attribute the same way). Before reading each request, a
pyfuse3 task takes a ``trio.Lock`` and waits for /dev/fuse to be readable: two scheduling
points and an epoll re-registration per request, about half of the ~40 us a request cost
the loop when it is answered from memory (`ls -l` of 50,000 files is ~150,000 requests).

Here, the lock is taken at once when it is free, and a /dev/fuse that already holds a
request (a zero-timeout poll) is read at once; every ``YIELD_EVERY`` requests the task
still goes through trio's wait, so worker-thread completions and other tasks run. An idle
mount waits in trio exactly as before, and unmounting still ends the loop (the read then
fails with ENODEV, which ends pyfuse3's session).

When no worker thread is busy, the loop also polls /dev/fuse for up to ``SPIN`` seconds
before sleeping in epoll: a program asking one thing after another (``ls -l``, ``stat``
of each file) sends its next request a few microseconds after our answer, and a thread
that went to sleep in between pays the CPU's wake-up from idle, which on this machine
cost more than the answer itself (an idle machine's `ls -l` of 50,000 files: 8.1 s without,
4.4 s with). Not while workers run: the spin would hold the GIL they need.
"""

from __future__ import annotations

import select
import time
import types

import trio

YIELD_EVERY = 8
SPIN = 50e-6


class ReadLock:
    """The part of ``trio.Lock`` pyfuse3 uses (``async with``), with no checkpoint when the
    lock is free. A release hands the lock to the first parked task, like trio's."""

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


class _Namespace(types.SimpleNamespace):
    """``base``'s attributes, except those given."""

    def __init__(self, base, **overrides):
        super().__init__(**overrides)
        self._base = base

    def __getattr__(self, name):
        return getattr(self._base, name)


def install(workers_busy=bool) -> None:
    """Make pyfuse3 use this loop (before ``pyfuse3.main``); ``workers_busy()`` says
    whether worker threads are running."""
    import pyfuse3

    global busy
    busy = workers_busy
    pyfuse3.trio = _Namespace(trio, Lock=ReadLock,
                              lowlevel=_Namespace(trio.lowlevel, wait_readable=wait_readable))
