"""rpfs/fuse_loop.py: the mount's request loop, on a stand-in session whose requests are
datagrams of a socket pair (one ``recv`` is one request, as one read of /dev/fuse is). The
real mounts of test_fusell / test_fuse_ops / test_mount run on it too."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from rpfs import fuse_loop
from rpfs.fuse_loop import Cancelled, answered_in_worker, in_worker


class Session:
    """What the loop needs of ``_fusell.Session``: ``fd``, ``process()``, ``exited``,
    ``exit()``. Closing the peer is the unmount."""

    def __init__(self):
        self.ours, self.kernel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ours.setblocking(False)
        self.fd = self.ours.fileno()
        self.exited = False

    def process(self):
        if self.exited:
            return None
        try:
            data = self.ours.recv(4096)
        except BlockingIOError:
            return None
        if not data:
            self.exited = True
            return None
        return tuple(data.decode().split())

    def exit(self):
        self.exited = True

    def send(self, *requests: str) -> None:
        for r in requests:
            self.kernel.send(r.encode())

    def unmount(self) -> None:
        self.kernel.close()

    def close(self) -> None:   # what ``Session.close`` does after the loop
        self.kernel.close()
        self.ours.close()


def until(cond) -> None:
    """Poll until ``cond()`` holds (a hang is ended by pytest-timeout, the suite's guard:
    no clock here)."""
    while not cond():
        time.sleep(0.002)


class Handler:
    """Answers: ``fast N`` at once, ``work N`` after a worker call, ``slow N`` after a worker
    waits for ``release``, ``fail N`` with the worker's exception."""

    def __init__(self):
        self.answers: list[tuple] = []
        self.release = threading.Event()

    async def __call__(self, request):
        op, n = request
        try:
            if op == "work":
                await in_worker(lambda: None)
            elif op == "slow":
                await in_worker(self.release.wait, 60)
            elif op == "fail":
                await in_worker(int, "not a number")
        except ValueError as e:
            self.answers.append((n, "error", type(e).__name__))
            return
        except Cancelled:
            self.answers.append((n, "cancelled"))
            raise
        self.answers.append((n, "ok"))


def serve_in_thread(session, handler, **kw):
    out = {}

    def run():
        out["loop"] = fuse_loop.serve(session, handler, **kw)

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_every_request_is_answered_once_and_a_slow_one_holds_up_no_other():
    s, h = Session(), Handler()
    t, out = serve_in_thread(s, h)
    try:
        s.send("slow 1", "fast 2", "work 3", "fail 4", "fast 5")
        until(lambda: len(h.answers) == 4)
        assert sorted(h.answers) == [("2", "ok"), ("3", "ok"), ("4", "error", "ValueError"),
                                     ("5", "ok")]   # while 1 still waits for its worker
        h.release.set()
        until(lambda: len(h.answers) == 5)
        assert h.answers[-1] == ("1", "ok")
    finally:
        h.release.set()
        s.unmount()
        t.join(30)
        s.close()
    assert not t.is_alive()
    assert out["loop"].requests == 5


def test_the_loop_sleeps_rather_than_spins_while_a_worker_runs(monkeypatch):
    monkeypatch.setattr(fuse_loop, "SPIN", 600.0)   # a spin now would outlast the test
    s, h = Session(), Handler()
    t, out = serve_in_thread(s, h)
    try:
        s.send("slow 1")
        until(lambda: _loop_slept(t))   # in poll(2), not spinning
        h.release.set()
        until(lambda: h.answers)
    finally:
        h.release.set()
        s.unmount()
        t.join(30)
        s.close()
    assert h.answers == [("1", "ok")]


def _loop_slept(t) -> bool:
    """The loop thread is blocked in poll(2) (its state in /proc is S, not R)."""
    try:
        with open(f"/proc/self/task/{t.native_id}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "S"
    except OSError:
        return False


def test_unmounting_cancels_handlers_still_waiting_for_a_worker():
    s, h = Session(), Handler()
    t, out = serve_in_thread(s, h)
    try:
        s.send("slow 1", "fast 2")
        until(lambda: ("2", "ok") in h.answers)
        s.unmount()
        t.join(30)
        assert not t.is_alive()
        assert h.answers == [("2", "ok"), ("1", "cancelled")]   # answered once: EINTR
        assert out["loop"].workers.running == 1   # its worker still waits; its result is dropped
    finally:
        h.release.set()
        s.close()


def test_sigterm_and_sigint_end_the_loop_and_their_handlers_come_back():
    for sig in (signal.SIGTERM, signal.SIGINT):
        before = signal.getsignal(sig)
        s, h = Session(), Handler()
        timer = threading.Timer(0.2, lambda: (s.send("fast 1"), time.sleep(0.1),
                                              os.kill(os.getpid(), sig)))
        timer.start()
        loop = fuse_loop.serve(s, h)   # the main thread: signals reach it
        timer.join()
        assert s.exited and loop.requests == 1 and h.answers == [("1", "ok")]
        assert signal.getsignal(sig) is before
        s.close()


def test_a_worker_answers_its_request_itself_once():
    """``answered_in_worker``: the reply leaves from the worker thread; a failure before it
    is raised at the await with nothing sent (the handler answers)."""
    s, sent, answers = Session(), [], []

    def reply(req, data):
        sent.append((req, data, threading.get_ident()))

    def broken_reply(req, data):
        raise TypeError("refused")   # a reply function refuses its arguments: nothing sent

    jobs = {"ok": lambda: ("value", reply, "data"), "fails": lambda: int("x"),
            "refused": lambda: ("value", broken_reply, "data")}

    async def handler(request):
        op, n = request
        try:
            answers.append((n, await answered_in_worker(n, jobs[op])))
        except (ValueError, TypeError) as e:
            answers.append((n, type(e).__name__))

    t, out = serve_in_thread(s, handler)
    try:
        s.send("ok 1", "fails 2", "refused 3")
        until(lambda: len(answers) == 3)
    finally:
        s.unmount()
        t.join(30)
        s.close()
    assert sorted(answers) == [("1", "value"), ("2", "ValueError"), ("3", "TypeError")]
    assert [(r, d) for r, d, _ in sent] == [("1", "data")]
    assert sent[0][2] not in (t.ident, threading.get_ident())   # a worker sent it


def test_a_worker_that_answered_does_not_wake_the_loop():
    """The rest of a handler whose worker sent the answer waits for the loop's next
    wake-up (the next request), and runs before that request is handled."""
    s, sent, answers = Session(), [], []

    def reply(req, data):
        sent.append(req)

    def work():   # answers once the loop went to sleep (else it might see the job done first)
        until(lambda: loop.sleeps > slept)
        return "value", reply, "data"

    async def handler(request):
        op, n = request
        answers.append((n, await answered_in_worker(n, work)))

    loop = fuse_loop.Loop(s, handler)
    slept = 0
    t = threading.Thread(target=loop.run)
    t.start()
    until(lambda: loop.sleeps > 0)   # waiting for the first request
    slept = loop.sleeps
    try:
        s.send("read 1")
        until(lambda: sent == ["1"])
        time.sleep(0.2)   # a wake-up would have resumed the handler by now
        assert answers == []
        s.send("read 2")
        until(lambda: len(sent) == 2 and answers)   # read 1's handler ran before read 2
    finally:
        s.unmount()
        t.join(30)
        s.close()
    # read 2's handler runs at the unmount's wake-up; each request was answered once
    assert answers in ([("1", "value")], [("1", "value"), ("2", "value")])
    assert sent == ["1", "2"]


def test_a_request_its_worker_answered_is_not_answered_again_when_the_mount_ends():
    s, sent, answers = Session(), [], []
    in_reply, go_on = threading.Event(), threading.Event()

    def reply(req, data):
        sent.append(req)
        in_reply.set()
        go_on.wait(30)   # the mount ends while this answer is being sent

    async def handler(request):
        op, n = request
        try:
            answers.append((n, await answered_in_worker(n, lambda: ("value", reply, "data"))))
        except Cancelled:
            answers.append((n, "cancelled"))   # would answer EINTR: a second answer
            raise

    t, out = serve_in_thread(s, handler)
    try:
        s.send("read 1")
        assert in_reply.wait(30)
        s.unmount()
        until(lambda: s.exited)
        time.sleep(0.05)
    finally:
        go_on.set()
        t.join(30)
        s.close()
    assert not t.is_alive()
    assert sent == ["1"] and answers == []   # answered once, by the worker


def test_no_worker_thread_fails_that_request_alone(monkeypatch):
    """A thread that cannot start (the process's limit) is that request's error; the loop
    and the requests answered from memory go on."""
    start = threading.Thread.start

    def refuse(self):
        if self.name.startswith("fuse-worker"):
            raise RuntimeError("can't start new thread")
        start(self)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    s, answers = Session(), []

    async def handler(request):
        op, n = request
        try:
            if op == "work":
                await in_worker(lambda: None)
            answers.append((n, "ok"))
        except RuntimeError:
            answers.append((n, "EIO"))

    t, out = serve_in_thread(s, handler)
    try:
        s.send("work 1", "fast 2")
        until(lambda: len(answers) == 2)
    finally:
        s.unmount()
        t.join(30)
        s.close()
    assert answers == [("1", "EIO"), ("2", "ok")] and out["loop"].workers.running == 0


class _Look:
    """Stands in for the loop's zero-timeout poll: not ready for the first ``after`` polls."""

    def __init__(self, after: int):
        self.after, self.calls = after, 0

    def poll(self, timeout):
        self.calls += 1
        return [(0, 1)] if self.calls > self.after else []


def test_waits_for_the_next_request_briefly(monkeypatch):
    monkeypatch.setattr(fuse_loop, "SPIN", 60.0)   # generous: the fake arrives after 5 polls
    s = Session()
    loop = fuse_loop.Loop(s, Handler())
    look = _Look(after=5)
    assert loop._spin(look) and look.calls == 6        # polled until it came
    monkeypatch.setattr(fuse_loop, "SPIN", 0.0)
    look = _Look(after=5)
    assert not loop._spin(look) and look.calls == 1    # one look, then poll(2)'s wait
    loop._end()
    s.close()


def test_the_loop_stops_spinning_for_a_reader_that_is_never_quick(monkeypatch):
    """Count looks, not time (``SPIN`` 0: one look per spin): a reader whose requests never
    come within the spin (``cp -r``: it writes each file out before its next READ) is spun
    for ``SPIN_MISSES`` times, then once in ``SPIN_RETRY`` waits; one that is quick again
    is caught by such a retry and spun for at every wait from then on."""
    monkeypatch.setattr(fuse_loop, "SPIN", 0.0)
    s = Session()
    loop = fuse_loop.Loop(s, Handler())
    slow = _Look(after=10**9)
    waits = fuse_loop.SPIN_MISSES + 10 * fuse_loop.SPIN_RETRY
    assert not any(loop._spin(slow) for _ in range(waits))
    assert slow.calls == fuse_loop.SPIN_MISSES + 10 == loop.spins   # was one look per wait
    quick = _Look(after=0)
    caught = [loop._spin(quick) for _ in range(fuse_loop.SPIN_RETRY + 5)]
    assert caught == [False] * (fuse_loop.SPIN_RETRY - 1) + [True] * 6   # the retry caught it
    loop._end()
    s.close()


def test_run_inline_runs_worker_jobs_in_this_thread():
    async def handler():
        a = await in_worker(threading.get_ident)
        with pytest.raises(ValueError):
            await in_worker(int, "x")
        return a

    assert fuse_loop.run_inline(handler()) == threading.get_ident()
