"""Streams described by an extent map: a file system's file (btrfs EXTENT_DATA items, XFS
bmap records, an NTFS runlist) is a list of pieces, each either data somewhere or zeros.

A subclass yields the pieces covering a range from ``_map``; reading (zeros for holes, the
subclass's ``_fill`` for data) and the data/zero ``extents`` are written once here.
"""

from __future__ import annotations

from collections.abc import Iterator

from streams.stream import DATA, ZERO, Extent, Stream


class ExtentMapStream(Stream):
    """Subclasses implement ``_map(offset, end)`` -> (offset, length, where) pieces covering
    ``[offset, end)`` in order, ``where`` None for zeros, and ``_fill(where, offset, dst)``
    to read one data piece into ``dst``."""

    def _map(self, offset: int, end: int) -> Iterator[tuple[int, int, object]]:
        raise NotImplementedError

    def _fill(self, where, offset: int, dst: memoryview) -> None:
        raise NotImplementedError

    def _readinto(self, offset: int, view: memoryview) -> None:
        for pos, n, where in self._map(offset, offset + len(view)):
            dst = view[pos - offset:pos - offset + n]
            if where is None:
                dst[:] = bytes(n)
            else:
                self._fill(where, pos, dst)

    def _extents(self, offset: int, end: int) -> Iterator[Extent]:
        pending = None
        for pos, n, where in self._map(offset, end):
            kind = ZERO if where is None else DATA
            if pending and pending.kind == kind:
                pending = Extent(pending.offset, pending.length + n, kind)
                continue
            if pending:
                yield pending
            pending = Extent(pos, n, kind)
        if pending:
            yield pending
