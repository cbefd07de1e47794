"""Export a disk as a flat image with holes: ZERO extents and all-zero chunks are skipped.

The output is created at its full size with ``ftruncate`` and only non-zero data is written,
so a 100 GiB mostly-empty disk costs the time and space of its data. Output goes to a
temporary name next to ``dest`` and is renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import os

from formats.writebehind import WriteBehind
from streams.stream import ZERO, Stream, buffers, is_zero, merge_extents

CHUNK = 8 << 20  # bytes asked of the source at a time (the VHDX writer's piece too): one
# walk down the layers and one read-ahead call per 8 MiB; asked 1 MiB at a time, an export of
# the bench disk to raw made 4x the context switches of one to VHDX (2,000 against 500) and
# spent ~0.1 s more system time, the exporting thread and the decoding pool trading the GIL
# and the loader's lock once per MiB
GRAIN = 64 << 10  # zero runs this long inside data are left as holes too


@contextlib.contextmanager
def atomic_output(dest: str | os.PathLike):
    """An fd for a temporary file beside ``dest``; renamed to ``dest`` on success, removed on
    failure, so a cancelled export never leaves a half-written image under the final name."""
    dest = os.fspath(dest)
    tmp = os.path.join(os.path.dirname(os.path.abspath(dest)),
                       f".{os.path.basename(dest)}.part-{os.getpid()}")
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
    try:
        yield fd
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, dest)


def pwrite_all(fd: int, data, offset: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def data_chunks(source: Stream, chunk: int = CHUNK, scratch=None):
    """(offset, memoryview) for every non-zero run of ``source`` (in ``chunk``-aligned pieces
    of its DATA extents), plus (offset, None) markers so callers can report progress. A piece
    that lies in a stored file's decoded chunk is that chunk's own buffer (``buffers``:
    no copy); others are read into ``scratch`` (at least ``chunk`` bytes, or a function
    that gives it when needed; by default one reused buffer)."""
    if scratch is None:
        scratch = memoryview(bytearray(chunk))
    for ext in merge_extents(source.extents()):
        if ext.kind == ZERO:
            yield ext.end, None
            continue
        pos = ext.offset
        while pos < ext.end:
            n = min(chunk - pos % chunk, ext.end - pos)
            for at, view in buffers(source, pos, n, scratch):
                yield from nonzero_runs(view, at)
            pos += n
            yield pos, None


def nonzero_runs(view: memoryview, offset: int, grain: int = GRAIN):
    """(offset, view) for the runs of ``view`` not made of all-zero ``grain``-sized pieces."""
    if is_zero(view):
        return
    start = None
    for a in range(0, len(view), grain):
        if is_zero(view[a : a + grain]):
            if start is not None:
                yield offset + start, view[start:a]
                start = None
        elif start is None:
            start = a
    if start is not None:
        yield offset + start, view[start:]


def write_raw(source: Stream, dest: str | os.PathLike, *, progress=None) -> None:
    """Write ``source`` to ``dest`` as a sparse flat image; ``progress(done, total)``. The
    writes are made by a thread of their own (``WriteBehind``)."""
    total = source.size
    with atomic_output(dest) as fd:
        os.ftruncate(fd, total)
        with WriteBehind(fd, CHUNK) as out:
            for pos, view in data_chunks(source, scratch=out.scratch):
                if view is not None:
                    out.write(view, pos)
                elif progress:
                    progress(pos, total)
    if progress:
        progress(total, total)
