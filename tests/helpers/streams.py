"""Checks of a stream against a flat copy, and a wrapper that counts what a layer reads.

Tests measure work by counting reads (and bytes read) through :class:`CountingStream`, never
by the clock: the test machine is shared and its speed says nothing about the code.
"""

from __future__ import annotations

import random
import threading

from streams.stream import DATA, ZERO, BytesStream, Stream, is_zero

MiB = 1 << 20


class CountingStream(Stream):
    """Passes reads through to ``base`` and counts them (``reads``, ``bytes_read``)."""

    def __init__(self, base: Stream):
        self.base = base
        self.size = base.size
        self.name = base.name
        self.reads = 0
        self.bytes_read = 0
        self._lock = threading.Lock()

    def _read(self, offset: int, length: int) -> bytes:
        with self._lock:
            self.reads += 1
            self.bytes_read += length
        return self.base.read(offset, length)

    def extents(self, offset: int = 0, length: int | None = None):
        return self.base.extents(offset, length)


def assert_same(disk, raw: bytes, rng: random.Random, count: int = 300) -> None:
    """Big reads straddling block boundaries, ``count`` random reads and one readinto past
    the end all return exactly the bytes of ``raw``."""
    assert disk.size == len(raw)
    step = 7 * MiB + 4096
    for off in range(0, len(raw), step):
        assert disk.read(off, step) == raw[off:off + step], off
    for _ in range(count):
        off = rng.randrange(len(raw))
        n = rng.choice([1, 511, 512, 4096, 65536, 1 << 20, 3 * MiB + 5])
        assert disk.read(off, n) == raw[off:off + n], (off, n)
    buf = bytearray(5 * MiB)
    off = max(0, len(raw) - 3 * MiB)
    assert disk.readinto(off, buf) == len(raw) - off
    assert bytes(buf[:len(raw) - off]) == raw[off:]


def assert_extents_honest(disk, raw: bytes, *, expect_holes: bool = True) -> None:
    """extents() tiles the stream, alternates kinds, and every ZERO extent reads as zeros;
    with ``expect_holes`` at least one hole was found (without reading the data)."""
    ext = list(disk.extents())
    if not raw:
        assert ext == []
        return
    assert ext[0].offset == 0 and sum(e.length for e in ext) == len(raw)
    for a, b in zip(ext, ext[1:]):
        assert a.end == b.offset and a.kind != b.kind
    for e in ext:
        if e.kind == ZERO:
            assert is_zero(raw[e.offset:e.end]), e
    if expect_holes:
        assert sum(e.length for e in ext if e.kind == DATA) < len(raw)


class LineCounter:
    """Counts the Python lines executed in the given source files while active (a context
    manager): the work a loop does, measured without a clock. A per-entry loop over two
    million BAT entries shows up as millions of lines; a bulk comparison as a handful."""

    def __init__(self, *modules):
        self.files = {m.__file__ for m in modules}
        self.lines = 0

    def _local(self, frame, event, arg):
        if event == "line":
            self.lines += 1
        return self._local

    def _global(self, frame, event, arg):
        return self._local if frame.f_code.co_filename in self.files else None

    def __enter__(self):
        import sys
        self._previous = sys.gettrace()
        sys.settrace(self._global)
        threading.settrace(self._global)
        return self

    def __exit__(self, *exc):
        import sys
        sys.settrace(self._previous)
        threading.settrace(self._previous)


class ShiftedLayer(Stream):
    """A stream over ``base`` shifted by ``shift`` bytes that says so (``span``), counting
    how often it is asked (``asked``): a partition or a VHDX over a stored file, as a test of
    ``streams.stream.Spans`` and ``bottom``. A range across ``edge`` is not one piece of the
    stream below (as a VHDX block edge)."""

    def __init__(self, base: Stream, shift: int, edge: int | None = None):
        self.base, self.shift, self.edge = base, shift, edge
        self.size, self.name = base.size - shift, "layer"
        self.asked = 0

    def _read(self, offset, length):
        return self.base.read(self.shift + offset, length)

    def _span(self, offset, length):
        self.asked += 1
        if self.edge is not None and offset < self.edge < offset + length:
            return None
        return self.base, self.shift + offset


class ViewBytes(BytesStream):
    """Bytes that hand out views, decoded in memory (as a stored file's cached chunks)."""

    def views(self, offset, length, sequential=False):
        return iter([memoryview(self._data)[offset:offset + length]])

    def cached_views(self, offset, length):
        return [memoryview(self._data)[offset:offset + length]]


def log_text(size: int) -> bytes:
    """``size`` bytes of numbered log lines (compressible, every chunk different)."""
    return b"".join(b"line %08d of a log\n" % i for i in range(size // 20 + 1))[:size]
