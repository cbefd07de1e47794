"""formats.writebehind: an export's writes made on a thread of their own. What is queued is
written exactly (also from the reused scratch buffers, which are never refilled before
their writes are made), a buffer the caller may change is copied, the queue stays within
its bound, and a write error reaches the exporting thread. Counted, never timed."""

from __future__ import annotations

import os
import random
import threading

import pytest

import formats.writebehind as writebehind
from formats.writebehind import WriteBehind

KiB = 1 << 10


@pytest.fixture
def out(tmp_path):
    fd = os.open(tmp_path / "out", os.O_RDWR | os.O_CREAT, 0o644)
    yield fd
    os.close(fd)


def _gate(monkeypatch) -> tuple[threading.Semaphore, threading.Event]:
    """pwrite and pwritev wait for a release of the returned semaphore (one per call); the
    event is set once a write waits there."""
    gate, waiting = threading.Semaphore(0), threading.Event()

    def gated(real):
        def call(fd, data, offset):
            waiting.set()
            gate.acquire()
            return real(fd, data, offset)
        return call

    monkeypatch.setattr(writebehind.os, "pwrite", gated(os.pwrite))
    monkeypatch.setattr(writebehind.os, "pwritev", gated(os.pwritev))
    return gate, waiting


def test_bytes_views_and_scratch_buffers_are_written_where_asked(out):
    rnd = random.Random(5)
    want = bytearray(64 * 64 * KiB)
    with WriteBehind(out, 64 * KiB) as wb:
        for i in rnd.sample(range(64), 64):
            data = rnd.randbytes(64 * KiB)
            want[i * 64 * KiB:(i + 1) * 64 * KiB] = data
            if i % 3 == 0:
                wb.write(data, i * 64 * KiB)                                  # bytes
            elif i % 3 == 1:
                wb.write(memoryview(data).toreadonly()[:1000], i * 64 * KiB)  # a read-only view
                wb.write(memoryview(data)[1000:], i * 64 * KiB + 1000)
            else:
                s = wb.scratch()
                s[:len(data)] = data
                wb.write(s[:len(data)], i * 64 * KiB)                         # a scratch buffer
    assert os.pread(out, len(want) + 1, 0) == want
    assert wb.copied == 0 and 0 < wb.writes <= 64 + 64 // 3


def test_a_scratch_buffer_is_not_refilled_before_its_writes_are_made(out, monkeypatch):
    """Two scratch buffers: the third ask waits until the first one's write is made. Were it
    handed out at once, the 'c' filled into it would be what that write wrote (the writes
    are held until a timer lets them go, well after the refill)."""
    gate, _ = _gate(monkeypatch)
    wb = WriteBehind(out, 4 * KiB)
    first = wb.scratch()
    first[:] = b"a" * (4 * KiB)
    wb.write(first, 0)
    second = wb.scratch()
    assert second.obj is not first.obj
    second[:] = b"b" * (4 * KiB)
    wb.write(second, 4 * KiB)
    timer = threading.Timer(0.3, lambda: [gate.release() for _ in range(10)])
    timer.start()
    try:
        third = wb.scratch()          # waits for the write from ``first``
        assert third.obj is first.obj
        third[:] = b"c" * (4 * KiB)
        wb.write(third, 8 * KiB)
        wb.close()
    finally:
        timer.join()
    assert os.pread(out, 12 * KiB, 0) == b"a" * (4 * KiB) + b"b" * (4 * KiB) + b"c" * (4 * KiB)


def test_a_buffer_the_caller_may_change_is_copied(out):
    buf = bytearray(b"x" * 1000)
    with WriteBehind(out) as wb:
        wb.write(buf, 0)
        buf[:] = b"y" * 1000          # the caller reuses its buffer at once
        wb.write(memoryview(buf)[:10], 1000)
    assert os.pread(out, 1010, 0) == b"x" * 1000 + b"y" * 10
    assert wb.copied == 1010


def _before_each_write(monkeypatch, note) -> None:
    """``note()`` runs before each pwrite and pwritev the write-behind makes."""
    def wrap(real):
        def call(fd, data, offset):
            note()
            return real(fd, data, offset)
        return call

    monkeypatch.setattr(writebehind.os, "pwrite", wrap(os.pwrite))
    monkeypatch.setattr(writebehind.os, "pwritev", wrap(os.pwritev))


def test_the_queue_keeps_within_its_bound_and_writes_end_to_end_at_once(out, monkeypatch):
    """Each write starts with at most ``limit`` bytes queued or being written; writes that
    lie end to end go out in one pwritev (here 40 writes of 64 KiB, with the exporting
    thread woken to refill only when the queue is half empty)."""
    seen = []
    _before_each_write(monkeypatch, lambda: seen.append(wb._queued))
    with WriteBehind(out, limit=256 * KiB) as wb:
        for i in range(40):
            wb.write(bytes([i]) * (64 * KiB), i * 64 * KiB)
        wb.write(b"x", 41 * 64 * KiB)                      # not end to end: a call of its own
    assert max(seen) <= 256 * KiB and len(seen) == wb.writes < 41
    assert os.pread(out, 64 * KiB, 39 * 64 * KiB) == bytes([39]) * (64 * KiB)
    assert os.pread(out, 2, 41 * 64 * KiB - 1) == b"\0x"


def test_a_write_error_reaches_the_exporting_thread(tmp_path):
    (tmp_path / "ro").write_bytes(b"")
    fd = os.open(tmp_path / "ro", os.O_RDONLY)
    try:
        wb = WriteBehind(fd)
        wb.write(b"x" * 100, 0)
        with pytest.raises(OSError):
            wb.flush()
        with pytest.raises(OSError):
            wb.write(b"y" * 100, 100)     # the next write says so too
        with pytest.raises(OSError):
            wb.close()
        assert not wb._thread.is_alive() and wb.writes == 0
    finally:
        os.close(fd)


def test_leaving_with_an_error_drops_what_is_queued(out, monkeypatch):
    """The first write is held (in pwrite) while the source fails: the second, still
    queued, is never made; the writer thread is gone once the block is left."""
    gate, waiting = _gate(monkeypatch)
    timer = threading.Timer(0.3, lambda: [gate.release() for _ in range(5)])
    with pytest.raises(KeyError):
        with WriteBehind(out) as wb:
            wb.write(b"a" * 100, 0)
            wb.write(b"b" * 100, 1000)   # not end to end: a call of its own
            waiting.wait()            # the first write is being made
            timer.start()
            raise KeyError("the source failed")
    timer.join()
    assert not wb._thread.is_alive() and wb.writes == 1
    assert os.pread(out, 200, 0) == b"a" * 100


def test_writes_from_the_scratches_may_fill_both_past_the_queue_bound(out, monkeypatch):
    """The bound is for buffers the queue keeps alive (decoded chunks: 4 MiB, so they are
    still in the CPU's caches when written); a scratch's memory is bounded by the scratches
    already. With the writes held until a timer lets them go, a second scratch's write is
    queued at once though both are over ``limit`` (bounded by it, it waited for the timer);
    a read-only view over the bound waits until the writes are let go."""
    gate, waiting = _gate(monkeypatch)
    released = threading.Event()
    timer = threading.Timer(1.0, lambda: (released.set(), [gate.release() for _ in range(10)]))
    timer.start()
    try:
        wb = WriteBehind(out, 8 * KiB, limit=4 * KiB)
        for i in range(2):
            s = wb.scratch()
            s[:] = bytes([65 + i]) * (8 * KiB)
            wb.write(s, i * 8 * KiB)
        assert not released.is_set()   # not waited for
        waiting.wait()
        assert wb._queued == 16 * KiB
        wb.write(memoryview(b"c" * (4 * KiB)).toreadonly(), 16 * KiB)
        assert released.is_set()       # it waited for room
        wb.close()
    finally:
        timer.join()
    assert os.pread(out, 20 * KiB, 0) == b"A" * (8 * KiB) + b"B" * (8 * KiB) + b"c" * (4 * KiB)


def test_decoded_chunks_are_written_by_the_writer_alone(out, monkeypatch):
    """With the queue full of read-only views (decoded chunks), the exporting thread waits
    for the writer instead of making the oldest writes itself: the read-ahead workers need
    the other core (it had made three quarters of an export's writes, the longest thread).
    Counted by the thread each write call is made on."""
    callers = []
    _before_each_write(monkeypatch, lambda: callers.append(threading.get_ident()))
    with WriteBehind(out, limit=256 * KiB) as wb:
        for i in range(200):
            wb.write(memoryview(bytes([i]) * (64 * KiB)).toreadonly(), i * 64 * KiB)
    assert callers and set(callers) == {wb._thread.ident}
    assert os.pread(out, 64 * KiB, 199 * 64 * KiB) == bytes([199]) * (64 * KiB)
