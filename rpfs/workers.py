"""A small pool of worker threads, for the restore's writers and the store's read-ahead.

``concurrent.futures`` imports logging, and with it traceback, linecache, tokenize, textwrap
and string: 26 M instructions of the 835 M a restore of 4,000 small files costs, all of
them on the way to its first file, for two pools that need no more than submitting a call,
waiting for its result and shutting down. ``Pool`` is that much: threads started as jobs
arrive (up to ``workers``), jobs run in the order submitted, a job's exception raised by
its ``result()``.
"""

from __future__ import annotations

import collections
import threading


class Cancelled(RuntimeError):
    """A job dropped by ``Pool.shutdown(cancel=True)`` before it ran."""


class Outcome:
    """A result to come: ``result()`` waits for it and returns its value or raises its
    exception (what ``concurrent.futures.Future`` is used for here)."""

    __slots__ = ("_done", "_value", "_error")

    def __init__(self):
        self._done = threading.Event()
        self._value = None
        self._error: BaseException | None = None

    def set_result(self, value) -> None:
        self._value = value
        self._done.set()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    def done(self) -> bool:
        return self._done.is_set()

    def result(self):
        self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value


class Job(Outcome):
    """One submitted call, its outcome."""

    __slots__ = ("_call",)

    def __init__(self, call):
        super().__init__()
        self._call = call

    def _run(self) -> None:
        call, self._call = self._call, None
        try:
            value = call()
        except BaseException as e:   # handed to whoever waits, as a Future does
            self.set_exception(e)
        else:
            self.set_result(value)

    def _cancel(self) -> None:
        self._call = None
        self.set_exception(Cancelled("the pool was shut down before this job ran"))


class Pool:
    """Up to ``workers`` threads named ``name_N`` running submitted calls in order."""

    def __init__(self, workers: int, name: str):
        if workers < 1:
            raise ValueError("a pool needs a worker")
        self.workers = workers
        self.name = name
        self._queue: collections.deque[Job] = collections.deque()
        self._cv = threading.Condition(threading.Lock())
        self._threads: list[threading.Thread] = []
        self._idle = 0           # workers waiting for a job
        self._closed = False

    def submit(self, fn, *args) -> Job:
        job = Job(lambda: fn(*args))
        with self._cv:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            self._queue.append(job)
            if len(self._queue) > self._idle and len(self._threads) < self.workers:
                t = threading.Thread(target=self._work, daemon=True,
                                     name=f"{self.name}_{len(self._threads)}")
                self._threads.append(t)
                t.start()
            else:
                self._cv.notify()
        return job

    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._closed:
                    self._idle += 1
                    self._cv.wait()
                    self._idle -= 1
                if not self._queue:
                    return           # shut down and nothing left
                job = self._queue.popleft()
            job._run()

    def shutdown(self, wait: bool = True, cancel: bool = False) -> None:
        """No more jobs; the queued ones still run unless ``cancel`` (then their
        ``result()`` raises Cancelled). ``wait``: until every worker has finished."""
        with self._cv:
            self._closed = True
            dropped = list(self._queue) if cancel else []
            if cancel:
                self._queue.clear()
            self._cv.notify_all()
        for job in dropped:
            job._cancel()
        if wait:
            for t in self._threads:
                if t is not threading.current_thread():
                    t.join()

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown(wait=True)
