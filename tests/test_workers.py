"""rpfs.workers.Pool: the restore's writers and the read-ahead pool without
concurrent.futures (which imports logging)."""

from __future__ import annotations

import threading

import pytest

from rpfs.workers import Cancelled, Pool


def test_jobs_run_on_at_most_the_pool_s_threads_and_give_their_results():
    seen = set()
    with Pool(3, "t-pool") as pool:
        jobs = [pool.submit(lambda x: (seen.add(threading.current_thread().name), x * x)[1], i)
                for i in range(200)]
        assert [j.result() for j in jobs] == [i * i for i in range(200)]
    assert seen and len(seen) <= 3 and all(n.startswith("t-pool_") for n in seen)
    assert all(j.done() for j in jobs)


def test_a_job_s_exception_is_raised_by_its_result_and_the_pool_goes_on():
    def boom():
        raise OSError(5, "bad")

    with Pool(2, "t-pool") as pool:
        bad, good = pool.submit(boom), pool.submit(lambda: 7)
        with pytest.raises(OSError):
            bad.result()
        assert good.result() == 7


def test_shutdown_runs_what_is_queued_unless_cancelled():
    gate = threading.Event()
    pool = Pool(1, "t-pool")
    first = pool.submit(gate.wait)
    queued = [pool.submit(lambda i=i: i) for i in range(5)]
    gate.set()
    pool.shutdown(wait=True)
    assert first.result() is True and [j.result() for j in queued] == list(range(5))
    with pytest.raises(RuntimeError):
        pool.submit(lambda: 1)

    gate.clear()
    started = threading.Event()
    pool = Pool(1, "t-pool")
    first = pool.submit(lambda: (started.set(), gate.wait())[1])
    queued = [pool.submit(lambda: 1) for _ in range(5)]
    started.wait()
    threading.Timer(0.05, gate.set).start()
    pool.shutdown(wait=True, cancel=True)     # the running job ends; the queued never run
    assert first.result() is True
    for j in queued:
        with pytest.raises(Cancelled):
            j.result()
