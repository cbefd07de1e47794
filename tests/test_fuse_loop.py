"""rpfs/fuse_loop.py: the lock and the readiness wait pyfuse3 gets instead of trio's.
(The real mounts of test_fuse_ops / test_mount run on it.)"""

from __future__ import annotations

import os

import trio
import trio.testing

from rpfs import fuse_loop


def test_free_lock_is_taken_without_a_checkpoint_and_handed_over_in_order():
    order = []

    async def main():
        lock = fuse_loop.ReadLock()
        ran = []

        async def other():
            ran.append("other")

        async with trio.open_nursery() as n:
            n.start_soon(other)
            async with lock:          # free: no scheduling point, so `other` has not run
                assert ran == []
            await trio.testing.wait_all_tasks_blocked()
            assert ran == ["other"]

            async def user(i):
                async with lock:
                    order.append(i)
                    await trio.sleep(0.01)   # holds it across a checkpoint

            for i in range(4):
                n.start_soon(user, i)
                await trio.sleep(0.001)      # parked in this order
    trio.run(main)
    assert order == [0, 1, 2, 3]


def test_a_ready_fd_is_read_at_once_but_trio_still_runs_every_few():
    async def main():
        r, w = os.pipe()
        try:
            os.write(w, b"x")
            fuse_loop._streak = 0
            before = fuse_loop.ready.fast
            for _ in range(3 * fuse_loop.YIELD_EVERY):
                await fuse_loop.wait_readable(r)
            fast = fuse_loop.ready.fast - before
            assert fast == 3 * fuse_loop.YIELD_EVERY - 2   # every ninth wait went through trio
            os.read(r, 1)

            async def later():
                await trio.sleep(0.05)
                os.write(w, b"y")
            async with trio.open_nursery() as n:   # nothing to read: waits in trio
                n.start_soon(later)
                with trio.fail_after(30):
                    await fuse_loop.wait_readable(r)
            assert os.read(r, 1) == b"y"
        finally:
            os.close(r)
            os.close(w)
    trio.run(main)


class _Polls:
    """Stands in for ``fuse_loop.ready``: not ready for the first ``after`` polls."""

    def __init__(self, after: int):
        self.after, self.calls, self.fast = after, 0, 0

    def __call__(self, fd: int) -> bool:
        self.calls += 1
        return self.calls > self.after


def test_waits_for_the_next_request_briefly_unless_workers_run(monkeypatch):
    monkeypatch.setattr(fuse_loop, "SPIN", 60.0)   # generous: the fake arrives after 5 polls
    polls = _Polls(after=5)
    monkeypatch.setattr(fuse_loop, "ready", polls)
    monkeypatch.setattr(fuse_loop, "busy", lambda: False)
    assert fuse_loop._arrives(0) and polls.calls == 6        # polled until it came
    polls = _Polls(after=5)
    monkeypatch.setattr(fuse_loop, "ready", polls)
    monkeypatch.setattr(fuse_loop, "busy", lambda: True)     # workers need the GIL
    assert not fuse_loop._arrives(0) and polls.calls == 1    # one look, then trio's wait
