"""The mount's request loop: one thread reads requests from a libfuse session
(rpfs/_fusell.c) and runs each one's handler, a coroutine, until it answers or hands its
parsing or I/O to a worker thread (``await in_worker(fn, *args)``); the loop goes on reading
and resumes the coroutine with the worker's result when it comes.

Why a loop of our own and not trio (which this was until issue 17's loop session): trio was
61% of the instructions the mount imports (517 M of 702 M, valgrind), and its scheduler cost
about 20 µs per request. A request answered from memory costs here one ``process()`` call
(read and decode in C), one coroutine started, and its reply; nothing is scheduled.

Why one thread and coroutines, not handlers on several threads that each read /dev/fuse
(libfuse's multithreaded shape): every table of the adapter (inodes, lookup counts,
listings, caches) is touched by the loop thread only, so none needs a lock, and most
requests (``ls -l`` is three per file) are answered from those tables with no thread
hand-off and no GIL hand-off at all. Only parsing and I/O pay a hand-off, to one of
``WORKERS`` threads; a slow chunk holds its own worker and no other request. A READ's
worker also sends the answer itself (``answered_in_worker``): the data leaves from the
thread that read it, and the hand-off back to the loop is off the request's path.

Waiting: when nothing is there and no worker runs, the loop polls /dev/fuse for up to
``SPIN`` seconds before it sleeps in poll(2) (not while the last ``SPIN_MISSES`` spins
all caught nothing: see ``_spin``). A program asking one thing after another
(``ls -l``, ``stat`` of each file) sends its next request a few microseconds after our
answer, and a thread that went to sleep in between pays the CPU's wake-up from idle, which
on this machine cost more than the answer itself (an idle machine's `ls -l` of 50,000 files:
8.1 s without, 4.4 s with). Not while workers run: the spin would hold the GIL they need.
A worker's completion wakes the loop through a pipe, and so does SIGTERM or SIGINT
(``signal.set_wakeup_fd``); a worker that sent its request's answer itself does not wake
it (the rest of that handler waits for the loop's next wake-up, which comes before the
next request is read).

Ending: an unmount makes the read fail with ENODEV and libfuse marks the session exited;
SIGTERM/SIGINT mark it exited too. Handlers still waiting for a worker then get
``Cancelled`` thrown in (the adapter answers EINTR); workers still running finish on their
own and their results are dropped.
"""

from __future__ import annotations

import collections
import os
import queue
import select
import signal
import threading
import time
from collections.abc import Callable, Coroutine

from rpfs.log import get_logger

log = get_logger(__name__)

SPIN = 50e-6
SPIN_MISSES = 8   # spins in a row that caught no request, after which the loop stops spinning
SPIN_RETRY = 32   # ... but for one wait in this many (has the reader become quick again?)
WORKERS = 16  # parsing and I/O calls at once (a slow chunk holds one)


class Cancelled(BaseException):
    """Thrown into a handler waiting for a worker when the mount ends: answer, then end."""


class _Job:
    """What a handler awaits: ``fn(*args)`` in a worker thread (its value, or its exception
    raised at the ``await``). With ``req``, the worker also answers that request (see
    ``answered_in_worker``); ``sent``: it has."""

    __slots__ = ("fn", "args", "req", "sent")

    def __init__(self, fn: Callable, args: tuple, req=None):
        self.fn, self.args, self.req, self.sent = fn, args, req, False

    def __await__(self):
        return (yield self)


def in_worker(fn: Callable, *args) -> _Job:
    """``await in_worker(fn, *args)``: run ``fn`` in a worker thread, not on the loop."""
    return _Job(fn, args)


def answered_in_worker(req, fn: Callable, *args) -> _Job:
    """``await answered_in_worker(req, fn, *args)``: ``fn(*args)`` returns ``(value, reply,
    *reply_args)``; the worker sends ``reply(req, *reply_args)`` itself and the await gives
    ``value``. A cold READ's data then leaves from the thread that read it, with no hand-off
    back to the loop before the answer. If ``fn`` or the reply raises, nothing was sent and
    the exception is raised at the await (the handler answers); once the mount has ended,
    no worker sends anything (``Cancelled`` is raised at the await instead)."""
    return _Job(fn, args, req)


class Workers:
    """Worker threads started as jobs need them (up to ``limit``: the first after
    ``heap.limit_arenas``, since the mount starts none before its first request). A finished
    job goes to ``done`` and writes a byte to ``wake_fd`` (the loop may be asleep in poll)."""

    def __init__(self, limit: int, wake_fd: int):
        self.limit = limit
        self.running = 0   # submitted, not resumed yet (the loop thread's count)
        self.threads = 0
        self.done: collections.deque = collections.deque()   # (coroutine, ok, value)
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_fd = wake_fd
        self._wake_lock = threading.Lock()   # the fd is not written after close()
        self._closed = False
        self._replies = threading.Lock()   # no worker replies once the loop has ended
        self._replying = True

    def submit(self, coro: Coroutine, job: _Job) -> None:
        """Queue ``job`` (a thread is started if every one is busy; if none can be and
        none runs, the error is raised here and nothing is queued)."""
        if self.threads < min(self.running + 1, self.limit):
            try:
                threading.Thread(target=self._work, name=f"fuse-worker-{self.threads + 1}",
                                 daemon=True).start()
                self.threads += 1
            except RuntimeError:   # "can't start new thread": the ones there will do
                if not self.threads:
                    raise
        self.running += 1
        self._jobs.put((coro, job))

    def _work(self) -> None:
        jobs, done = self._jobs, self.done
        while True:
            item = jobs.get()
            if item is None:
                return
            coro, job = item
            value = None
            answered = False
            try:
                value = job.fn(*job.args)
                if job.req is not None:
                    value = self._answer(job, *value)
                    answered = True
                out = (coro, True, value)
            except BaseException as e:  # noqa: BLE001  (raised in the handler, at its await)
                out = (coro, False, e)
            item = job = value = None   # nothing of the request stays alive here
            done.append(out)
            del out
            if answered:
                # the answer is out and nobody waits for the rest of the handler (it keeps
                # the stream): the loop resumes it when it next wakes, for the reader's next
                # request most likely. Not waking it here spares a pipe write and the loop
                # taking the GIL between this reply and our next job (cp -r of 4,000 small
                # files: one write and one wake-up per file)
                continue
            with self._wake_lock:
                if self._closed:
                    return
                try:
                    os.write(self._wake_fd, b"\0")
                except BlockingIOError:   # the pipe is full: the loop is awake anyway
                    pass

    def _answer(self, job: _Job, value, reply, *args):
        with self._replies:
            if not self._replying:
                raise Cancelled()
            reply(job.req, *args)
            job.sent = True
        return value

    def stop_replies(self) -> None:
        """From now on no worker answers a request (the session is about to end)."""
        with self._replies:
            self._replying = False

    def close(self) -> list:
        """Stop the threads (a running job finishes first); the jobs never started."""
        self.stop_replies()
        with self._wake_lock:
            self._closed = True
        dropped = []
        while True:
            try:
                dropped.append(self._jobs.get_nowait())
            except queue.Empty:
                break
        for _ in range(self.threads):
            self._jobs.put(None)
        return dropped


class Loop:
    """Serves one session (see the module's docstring); ``run()`` blocks until it ends."""

    def __init__(self, session, handle: Callable[[tuple], Coroutine], workers: int = WORKERS):
        self.session, self.handle = session, handle
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.workers = Workers(workers, self._wake_w)
        self.stopping = False
        self.requests = 0   # counted for tests and benchmarks
        self.sleeps = 0     # times the loop slept in poll(2)
        self.spins = 0      # times it spun (_spin)
        self._missed = 0    # spins in a row that caught nothing
        self._waits = 0     # waits since it stopped spinning
        self._waiting: dict = {}   # coroutine -> its job, with a worker

    def run(self) -> None:
        session, handle, done = self.session, self.handle, self.workers.done
        process, step = session.process, self._step
        fd = session.fd
        sleep = select.poll()
        sleep.register(fd, select.POLLIN)
        sleep.register(self._wake_r, select.POLLIN)
        look = select.poll()
        look.register(fd, select.POLLIN)
        old = self._catch_signals()
        try:
            while not self.stopping:
                while done:
                    coro, ok, value = done.popleft()
                    self._waiting.pop(coro, None)
                    self.workers.running -= 1
                    if ok:
                        step(coro, value)
                    else:
                        step(coro, None, value)
                    del coro, value
                request = process()
                if request is not None:
                    self.requests += 1
                    step(handle(request))
                    del request   # one its handler dropped unanswered is answered EIO now
                    continue
                if session.exited:
                    break
                if done or (not self.workers.running and self._spin(look)):
                    continue
                self.sleeps += 1
                sleep.poll()
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
        finally:
            self._restore_signals(old)
            self._end()

    def _spin(self, look) -> bool:
        """Whether a request came within SPIN seconds. A reader whose next request comes
        later than that, again and again, is not spun for (``cp -r``: its next READ came
        after the spin in 92% of the files, which cost the daemon 50 µs of CPU each), except
        once in ``SPIN_RETRY`` waits, which starts spinning again if it catches one."""
        if self._missed >= SPIN_MISSES:
            self._waits += 1
            if self._waits % SPIN_RETRY:
                return False
        self.spins += 1
        if self._spin_caught(look):
            self._missed = self._waits = 0
            return True
        self._missed += 1
        return False

    def _spin_caught(self, look) -> bool:
        end = time.perf_counter() + SPIN
        while True:
            if look.poll(0):
                return True
            if time.perf_counter() >= end:
                return False

    def _step(self, coro: Coroutine, value=None, error: BaseException | None = None) -> None:
        """Run ``coro`` until it finishes or waits for a worker."""
        while True:
            try:
                job = coro.send(value) if error is None else coro.throw(error)
            except (StopIteration, Cancelled):
                return
            except Exception as e:  # noqa: BLE001  (the adapter answers its own errors: a bug)
                log.error("request handler failed", exc_info=e)
                return
            if type(job) is not _Job:
                value, error = None, TypeError(f"a handler awaited {job!r}, not in_worker()")
                continue
            try:
                self.workers.submit(coro, job)
            except RuntimeError as e:   # no worker thread at all: this request fails alone
                value, error = None, e
                continue
            self._waiting[coro] = job
            return

    def _catch_signals(self):
        def stop(signum, frame):
            self.stopping = True

        try:
            wake = signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
            return wake, signal.signal(signal.SIGTERM, stop), signal.signal(signal.SIGINT, stop)
        except ValueError:   # not the main thread (a test's mount): no signals to catch
            return None

    def _restore_signals(self, old) -> None:
        if old is not None:
            signal.set_wakeup_fd(old[0])
            signal.signal(signal.SIGTERM, old[1])
            signal.signal(signal.SIGINT, old[2])

    def _end(self) -> None:
        """Mark the session exited, answer what finished, cancel what waits (a handler
        whose worker answered already is closed: its request must not be answered twice)."""
        self.session.exit()
        self.workers.close()   # no worker answers anything after this
        done = self.workers.done
        while done:
            coro, ok, value = done.popleft()
            job = self._waiting.pop(coro, None)
            self._cancel(coro, job)
        for coro, job in list(self._waiting.items()):
            self._cancel(coro, job)
        self._waiting.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def _cancel(self, coro: Coroutine, job: _Job | None) -> None:
        if job is not None and job.sent:
            coro.close()
            return
        try:
            coro.throw(Cancelled())
        except (StopIteration, Cancelled):
            pass
        except Exception as e:  # noqa: BLE001
            log.error("request handler failed while the mount ended", exc_info=e)


def serve(session, handle: Callable[[tuple], Coroutine], workers: int = WORKERS) -> Loop:
    """Serve ``session`` until it is unmounted or the process gets SIGTERM/SIGINT: every
    request ``session.process()`` returns goes to ``handle`` (a coroutine function), which
    answers it. Returns the ended loop (its counts)."""
    loop = Loop(session, handle, workers)
    loop.run()
    return loop


def run_inline(coro: Coroutine):
    """Run a handler coroutine to its end in this thread, its worker jobs too (tests and
    tools that call the adapter in process)."""
    value, error = None, None
    while True:
        try:
            job = coro.send(value) if error is None else coro.throw(error)
        except StopIteration as e:
            return e.value
        value, error = None, None
        try:
            value = job.fn(*job.args)
            if job.req is not None:
                value, reply, *args = value
                reply(job.req, *args)
        except BaseException as e:  # noqa: BLE001  (raised in the coroutine at its await)
            error = e
