"""Random-access byte streams: the one interface between layers (DESIGN.md, "Layers").

A stream has a ``size``, a ``name`` (where it came from, for error messages) and
``read(offset, length) -> bytes``. Reads are positionless, so one stream can serve many
threads at once. A read returns exactly ``length`` bytes unless it reaches the end of the
stream; a layer that cannot produce bytes raises a typed error instead of returning fewer.

``extents(offset, length)`` says which ranges are data and which are known to read as zeros
(unallocated in a container, sparse in a file, not stored in the repository) without reading
them, so that export and the mount can skip holes. The default is "all data".

``pieces(offset, length, out)`` says, also without reading, which stored bytes a range comes
from: each layer that knows maps the range onto the stream below it (an NTFS runlist onto
the volume, a partition onto the disk, a VHDX block onto its file or its parent) until a
stored file names its chunks. Two ranges with the same pieces hold the same bytes (chunk ids
name immutable contents), so the index need not read an unchanged $MFT block again. The
default is "cannot tell": the caller reads the bytes.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator

from streams.errors import FormatError
from streams.record import Value

DATA = "data"
ZERO = "zero"
MAX_PIECES = 4096   # a range that needs more pieces than this is read instead
MAX_DEPTH = 300     # streams over streams followed at most (a chain of VHDX parents)


class Extent(Value):
    """``length`` bytes at ``offset`` that are either real data or known zeros."""

    __slots__ = _fields = ("offset", "length", "kind")

    def __init__(self, offset: int, length: int, kind: str):   # kind: DATA or ZERO
        self.offset = offset
        self.length = length
        self.kind = kind

    @property
    def end(self) -> int:
        return self.offset + self.length


class Pieces(list):
    """Where a range of bytes comes from, as ``Stream.pieces`` finds it: items are
    ``("C", chunk id, offset in the chunk, length)`` (stored bytes) or ``("Z", length)``
    (known zeros), in order."""

    depth = 0   # streams followed so far (bounded by MAX_DEPTH)


class Stream:
    """Base class: subclasses set ``size``/``name`` and implement ``_read`` or ``_readinto``
    (or both, when each has a faster path), ``_extents`` if they know their holes and
    ``_pieces_into`` if they know where their bytes come from.

    The public ``read``/``readinto``/``extents`` do the one bounds check every stream shares
    (negative offsets and lengths refused, reads clipped at ``size``, short results turned
    into a typed error), so the ``_`` methods are only called with
    ``0 <= offset < offset + length <= size`` and must produce exactly ``length`` bytes.
    """

    size: int = 0
    name: str = "<stream>"
    # where this stream's windows lie in the lowest stream below (``Spans.on``): set on a
    # volume, so that every file read of it (``bottom``) skips the layers below at once
    spans: "Spans | None" = None

    def _clip(self, offset: int, length: int) -> int:
        """How many of ``length`` bytes at ``offset`` exist (0 at or past the end)."""
        if offset < 0 or length < 0:
            raise ValueError(f"negative read {offset}+{length} on {self.name}")
        return max(0, min(length, self.size - offset))

    def read(self, offset: int, length: int) -> bytes:
        n = self._clip(offset, length)
        if n == 0:
            return b""
        data = self._read(offset, n)
        if len(data) != n:
            raise self._short(offset, n, len(data))
        return data

    def readinto(self, offset: int, buffer) -> int:
        """Fills the start of ``buffer`` with the bytes at ``offset``; returns how many (fewer
        than ``len(buffer)`` only at the end of the stream)."""
        view = memoryview(buffer).cast("B")
        n = self._clip(offset, len(view))
        if n:
            self._readinto(offset, view[:n])
        return n

    def read_buffer(self, offset: int, length: int) -> memoryview:
        """``read`` as a buffer, for consumers that take any buffer and only look at it (a
        FUSE reply): when the range is, down the layers (``span``), inside one decoded chunk
        of a stored file, that chunk's own read-only bytes (no copy at all); across several,
        their bytes joined (one copy); otherwise a buffer filled by ``readinto`` (one copy
        less than ``read`` through layers that implement ``readinto``)."""
        got = self.read_buffers(offset, length)
        if len(got) == 1:
            return got[0]
        return memoryview(b"".join(got))   # no zero-filled buffer first, as bytearray(n) is

    def read_buffers(self, offset: int, length: int) -> list:
        """``read_buffer`` as a list of read-only buffers that hold the range in order, for a
        consumer that can send several as one (a FUSE reply by ``fuse_reply_iov``): the
        decoded chunks' own bytes even when the range spans several of them (a 1 MiB READ
        of a file whose clusters do not start on a chunk boundary spans two), so nothing is
        copied; a single buffer filled by ``readinto`` when the layers end in a stream that
        reads its bytes (an image file)."""
        n = self._clip(offset, length)
        if n and not getattr(self, "_no_views", False):
            below, at = bottom(self, offset, n)
            views = below.views(at, n)
            if views is None and type(below).views is Stream.views and type(below)._span is Stream._span:
                # the layers end in a stream that reads its bytes (an image file): no view
                # will ever come, so later calls go straight to readinto
                try:
                    self._no_views = True
                except AttributeError:
                    pass
            if views is not None:
                got = list(views)
                if sum(map(len, got)) != n:
                    raise self._short(offset, n, sum(map(len, got)))
                return got
        buf = bytearray(n)
        got = self.readinto(offset, buf) if n else 0
        if got != n:
            raise self._short(offset, n, got)
        return [memoryview(buf)]

    def extents(self, offset: int = 0, length: int | None = None) -> Iterator[Extent]:
        """Data/zero extents covering ``[offset, offset+length)`` clipped to the size."""
        n = self._clip(offset, self.size if length is None else length)
        return self._extents(offset, offset + n) if n else iter(())

    def pieces(self, offset: int, length: int, out: Pieces) -> bool:
        """Append to ``out`` where the bytes at ``[offset, offset+length)`` come from, without
        reading them. False when this stream or one below it cannot tell, the range is not
        inside the stream, or it takes more than MAX_PIECES pieces: the caller reads."""
        if length <= 0:
            return True
        if (offset < 0 or offset + length > self.size or out.depth >= MAX_DEPTH
                or len(out) > MAX_PIECES):
            return False
        out.depth += 1
        try:
            return self._pieces_into(offset, length, out)
        finally:
            out.depth -= 1

    def span(self, offset: int, length: int) -> tuple["Stream", int] | None:
        """``(below, at)`` when ``[offset, offset+length)`` is, whole and in order, the bytes
        at ``at`` of the stream ``below`` this one reads from; None when it is not (holes,
        several pieces) or this stream cannot tell. A reader of many small files (restore)
        reads the neighbouring files of one volume with one call on ``below``."""
        if length <= 0 or offset < 0 or offset + length > self.size:
            return None
        return self._span(offset, length)

    def views(self, offset: int, length: int, sequential: bool = False) -> "Iterator[memoryview] | None":
        """Read-only views that hold, in order, the bytes at ``[offset, offset+length)``,
        handed out without a copy by a stream that keeps its bytes decoded in memory (a
        stored file's chunks); None when this stream cannot (the caller reads). What they
        show never changes (an export queues them to be written later: formats.writebehind). See
        ``buffers``. ``sequential``: the caller goes on reading in order (an export), so
        the stream may decode ahead at once."""
        return None

    def cached_views(self, offset: int, length: int) -> "list[memoryview] | None":
        """``views`` of ``[offset, offset+length)`` when this stream holds all of its bytes
        decoded in memory now, else None; never reads, decodes or waits (the mount's loop
        thread asks, and answers a READ itself when it gets them)."""
        return None

    def will_need(self, offset: int, length: int) -> int:
        """A hint: ``[offset, offset+length)`` will be read soon, in small pieces and from
        one thread (an NTFS walk reading its $MFT block by block). The range (or, when it is
        not one piece of one stream below, each 1 MiB window of it) is followed down the
        layers (``bottom``) to the stream that holds it, and one that
        decodes what it stores (a stored file) starts decoding it in the background now,
        while the reader goes on. Returns the bytes handed down (0: nothing below takes
        hints; nothing is read here)."""
        n = self._clip(offset, length)
        if not n:
            return 0
        below, at = bottom(self, offset, n)
        if below is not self or type(self)._will_need is not Stream._will_need:
            return below._will_need(at, n)   # the whole range in one stream below
        taken = 0
        pos, end = offset, offset + n
        while pos < end:
            take = min(end, (pos // Spans.WINDOW + 1) * Spans.WINDOW) - pos
            below, at = bottom(self, pos, take)
            taken += below._will_need(at, take)
            pos += take
        return taken

    def describe(self) -> dict:
        """What ``rpfs info`` says about how this stream makes its bytes (BitLocker, a shadow
        copy, LVM, LDM, a VHDX container); {} for a plain one."""
        return {}

    # -- what subclasses implement (each default is written in terms of the other) ----------

    def _read(self, offset: int, length: int) -> bytes:
        if type(self)._readinto is Stream._readinto:
            raise NotImplementedError(f"{type(self).__name__} implements neither _read nor _readinto")
        buf = bytearray(length)
        self._readinto(offset, memoryview(buf))
        return bytes(buf)

    def _readinto(self, offset: int, view: memoryview) -> None:
        data = self._read(offset, len(view))
        if len(data) != len(view):
            raise self._short(offset, len(view), len(data))
        view[:] = data

    def _extents(self, offset: int, end: int) -> Iterator[Extent]:
        yield Extent(offset, end - offset, DATA)

    def _pieces_into(self, offset: int, length: int, out: Pieces) -> bool:
        """Called with ``0 <= offset < offset + length <= size``: append pieces to ``out``
        (asking the stream below with its ``pieces``) or return False (cannot tell)."""
        return False

    def _span(self, offset: int, length: int) -> tuple["Stream", int] | None:
        """Called with ``0 <= offset < offset + length <= size``: see ``span``."""
        return None

    def _will_need(self, offset: int, length: int) -> int:
        """Called by ``will_need`` on the stream at the bottom of a window: start decoding
        that range in the background; the bytes it took (0: it keeps nothing decoded)."""
        return 0

    def _short(self, offset: int, wanted: int, got: int) -> FormatError:
        return FormatError(f"short read: wanted {wanted} bytes, got {got}",
                           source=self.name, structure="stream", offset=offset)

    def open(self) -> "StreamReader":
        """A buffered, seekable file object over the stream (for shutil, zipfile, ...)."""
        return io.BufferedReader(StreamReader(self), buffer_size=1 << 20)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} size={self.size}>"


class BytesStream(Stream):
    """A stream over bytes in memory (tests, small resident attributes)."""

    def __init__(self, data: bytes | bytearray | memoryview, name: str = "<bytes>"):
        self._data = bytes(data)
        self.size = len(self._data)
        self.name = name

    def _read(self, offset: int, length: int) -> bytes:
        return self._data[offset : offset + length]


class FileStream(Stream):
    """A stream over a file on disk, read with ``os.pread`` (thread-safe, no shared seek).

    Holes in the file (SEEK_DATA/SEEK_HOLE) are reported as zero extents.
    """

    def __init__(self, path: str | os.PathLike, name: str | None = None):
        self.path = os.fspath(path)
        self.name = name or self.path
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        self.size = os.fstat(self._fd).st_size

    def _read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) == length:
            return data
        parts = [data]  # pread may return less on some filesystems: keep going
        got = len(data)
        while got < length:
            more = os.pread(self._fd, length - got, offset + got)
            if not more:
                break
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def _readinto(self, offset: int, view: memoryview) -> None:
        got = 0
        while got < len(view):
            n = os.preadv(self._fd, [view[got:]], offset + got)
            if n <= 0:  # the file shrank under us
                raise self._short(offset, len(view), got)
            got += n

    def _extents(self, offset: int, end: int) -> Iterator[Extent]:
        pos = offset
        while pos < end:
            try:
                data = os.lseek(self._fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: only a hole remains
                data = end
            data = min(data, end)
            if data > pos:
                yield Extent(pos, data - pos, ZERO)
            if data >= end:
                return
            hole = min(os.lseek(self._fd, data, os.SEEK_HOLE), end)
            yield Extent(data, hole - data, DATA)
            pos = hole

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class SliceStream(Stream):
    """``size`` bytes of ``base`` starting at ``offset``: a partition on a disk, a file in a pack."""

    def __init__(self, base: Stream, offset: int, size: int, name: str | None = None):
        if offset < 0 or size < 0:
            raise ValueError("negative slice")
        self.base = base
        self.offset = offset
        self.size = max(0, min(size, base.size - offset))
        self.name = name or f"{base.name}[{offset:#x}+{size:#x}]"

    def _read(self, offset: int, length: int) -> bytes:
        return self.base.read(self.offset + offset, length)

    def _readinto(self, offset: int, view: memoryview) -> None:
        got = self.base.readinto(self.offset + offset, view)
        if got != len(view):
            raise self._short(offset, len(view), got)

    def _extents(self, offset: int, end: int) -> Iterator[Extent]:
        for e in self.base.extents(self.offset + offset, end - offset):
            yield Extent(e.offset - self.offset, e.length, e.kind)

    def _pieces_into(self, offset: int, length: int, out: Pieces) -> bool:
        return self.base.pieces(self.offset + offset, length, out)

    def _span(self, offset: int, length: int) -> tuple[Stream, int]:
        return self.base, self.offset + offset


class ZeroStream(Stream):
    """``size`` zero bytes: an absent parent, an empty attribute."""

    def __init__(self, size: int, name: str = "<zeros>"):
        self.size = size
        self.name = name

    def _read(self, offset: int, length: int) -> bytes:
        return bytes(length)

    def _readinto(self, offset: int, view: memoryview) -> None:
        view[:] = bytes(len(view))

    def _extents(self, offset: int, end: int) -> Iterator[Extent]:
        yield Extent(offset, end - offset, ZERO)

    def _pieces_into(self, offset: int, length: int, out: Pieces) -> bool:
        out.append(("Z", length))
        return True


class StreamReader(io.RawIOBase):
    """Adapts a stream to a seekable read-only raw file object."""

    def __init__(self, stream: Stream):
        self.stream = stream
        self.pos = 0
        self._lock = threading.Lock()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        with self._lock:
            if whence == io.SEEK_SET:
                self.pos = pos
            elif whence == io.SEEK_CUR:
                self.pos += pos
            else:
                self.pos = self.stream.size + pos
            return self.pos

    def tell(self) -> int:
        return self.pos

    def readinto(self, buffer) -> int:
        with self._lock:
            n = self.stream.readinto(self.pos, buffer)
            self.pos += n
            return n


def bottom(stream: Stream, offset: int, length: int) -> tuple[Stream, int]:
    """The lowest stream (and where in it) that holds ``[offset, offset+length)`` of
    ``stream`` whole and in order, following ``span`` down the layers; from a stream with
    remembered ``spans`` (a volume), one step from memory to the bottom (a random read of
    a big file: NTFS run -> stored file, not run -> partition -> VHDX -> stored file)."""
    below, at = stream, offset
    for _ in range(MAX_DEPTH):
        spans = below.spans
        if spans is not None:
            where = spans.learn(at, length)
            if where is not None:
                return where
        where = below.span(at, length)
        if where is None:
            break
        below, at = where
    return below, at


def _walk(stream: Stream, offset: int, length: int) -> tuple[Stream, int]:
    """``bottom`` without remembered spans (what ``Spans`` remembers)."""
    below, at = stream, offset
    for _ in range(MAX_DEPTH):
        where = below.span(at, length)
        if where is None:
            break
        below, at = where
    return below, at


class Spans:
    """Where aligned windows of ``stream`` lie in the lowest stream below them (``bottom``),
    remembered. Many small reads of one volume (``cp -r`` of small files) then follow the
    chain of layers (NTFS volume, partition, VHDX, stored file) once per window, not once
    per read, and a thread that must not read (the mount's loop) finds where a range lies
    from memory alone (``find``). A window is remembered only when it is, whole, one span
    of a stream that hands out views (a stored file); one that is not (a VHDX block edge,
    a hole, an image file below) is remembered as such and its reads go the general way."""

    WINDOW = 1 << 20     # volume bytes per window (partitions and VHDX blocks align to 1 MiB)
    LIMIT = 1 << 16      # windows remembered (64 GiB of volume); past it all are forgotten

    def __init__(self, stream: Stream, window: int = WINDOW, limit: int = LIMIT):
        self.stream = stream
        self.window = window
        self.limit = limit
        self._windows: dict[int, tuple[Stream, int] | None] = {}
        self.walks = 0   # windows followed down the layers (counted for tests)

    @classmethod
    def on(cls, stream: Stream) -> "Spans":
        """``stream``'s own Spans, made once and kept as ``stream.spans``: every reader of
        the volume (``bottom``, the mount's small-file READs) shares what it learns."""
        spans = stream.spans
        if spans is None:
            spans = cls(stream)
            try:
                stream.spans = spans
            except AttributeError:   # a stream with __slots__: its reads walk the layers
                pass
        return spans

    def find(self, offset: int, length: int) -> tuple[Stream, int] | None:
        """``(below, at)`` of a range inside a remembered window; None otherwise (no I/O)."""
        w = offset // self.window
        if length <= 0 or offset < 0 or (offset + length - 1) // self.window != w:
            return None
        got = self._windows.get(w)
        if got is None:
            return None
        return got[0], got[1] + offset - w * self.window

    def learn(self, offset: int, length: int) -> tuple[Stream, int] | None:
        """``find``, after following the range's window down the layers if it was not yet
        (which may read: a layer opened on first use, a VHDX sector bitmap)."""
        w = offset // self.window
        if length <= 0 or offset < 0 or offset + length > self.stream.size or \
                (offset + length - 1) // self.window != w:
            return None
        if w not in self._windows:
            start = w * self.window
            below, at = _walk(self.stream, start, min(self.window, self.stream.size - start))
            self.walks += 1
            if len(self._windows) >= self.limit:
                self._windows.clear()
            has_views = below is not self.stream and type(below).views is not Stream.views
            self._windows[w] = (below, at) if has_views else None
        return self.find(offset, length)

    def read_buffers(self, offset: int, length: int) -> list:
        """``stream.read_buffers(offset, length)``, through the remembered window."""
        where = self.learn(offset, length)
        if where is not None:
            views = where[0].views(where[1], length)
            if views is not None:
                got = list(views)
                if sum(map(len, got)) == length:
                    return got
        return self.stream.read_buffers(offset, length)

    def cached_views(self, offset: int, length: int) -> "list[memoryview] | None":
        """The range's bytes if a remembered window holds it and the stream below has them
        decoded in memory (``Stream.cached_views``); None otherwise. Never reads."""
        where = self.find(offset, length)
        return None if where is None else where[0].cached_views(where[1], length)


def buffers(stream: Stream, offset: int, length: int, scratch):
    """``(offset, buffer)`` pieces holding the bytes of ``stream`` at ``[offset,
    offset+length)`` in order, for a consumer that only looks at them (export writes them
    out). The range is followed down the layers while it is one piece of the stream below
    (``span``); a stream there that hands out ``views`` gives its decoded chunks without a
    copy, any other is read into ``scratch`` (at least ``length`` bytes; or a function
    that gives it, called only then) as ``readinto`` would. The caller is taken to read on
    in order (``views(sequential=True)``: a stored file decodes the chunks ahead at once,
    and lets each go from its cache once handed out whole)."""
    below, at = bottom(stream, offset, length)
    views = below.views(at, length, sequential=True)
    if views is None:
        view = (scratch() if callable(scratch) else scratch)[:length]
        got = stream.readinto(offset, view)
        if got != length:
            raise stream._short(offset, length, got)
        yield offset, view
        return
    pos = offset
    for v in views:
        yield pos, v
        pos += len(v)
    if pos != offset + length:
        raise stream._short(offset, length, pos - offset)


def merge_extents(extents: Iterator[Extent]) -> Iterator[Extent]:
    """Join adjacent extents of the same kind (layers emit them block by block)."""
    pending: Extent | None = None
    for e in extents:
        if e.length <= 0:
            continue
        if pending and pending.kind == e.kind and pending.end == e.offset:
            pending = Extent(pending.offset, pending.length + e.length, e.kind)
        else:
            if pending:
                yield pending
            pending = e
    if pending:
        yield pending


_ZEROS = bytes(1 << 20)


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """True if every byte is zero: one ``memcmp`` against a shared zero buffer per MiB.

    (``memoryview == bytes`` compared item by item: 3.6 ms for an all-zero MiB, against
    0.08 ms here, and ``bytes(n)`` allocated a fresh zero buffer for every call.)"""
    view = memoryview(data).cast("B") if not isinstance(data, (bytes, bytearray)) else data
    step = len(_ZEROS)
    if len(view) <= step:
        return _ZEROS.startswith(view)
    return all(_ZEROS.startswith(view[i:i + step]) for i in range(0, len(view), step))
