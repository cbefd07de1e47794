"""A file's bytes from its EXTENT_DATA items: inline data, regular extents (read through
the chunk map, decompressed whole when compressed), preallocated extents and holes (gaps
between items or a zero disk address) as zeros."""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING, Iterator

from streams.errors import FormatError
from streams.extentmap import ExtentMapStream

from .compression import decompress
from .items import FILE_EXTENT_PREALLOC, FileExtent

if TYPE_CHECKING:
    from .volume import Volume


class FileStream(ExtentMapStream):
    def __init__(self, vol: "Volume", extents: list[FileExtent], size: int, name: str):
        self.vol = vol
        self.exts = extents
        self.starts = [e.offset for e in extents]
        self.size = size
        self.name = name

    def _map(self, offset: int, end: int) -> Iterator[tuple[int, int, FileExtent | None]]:
        i = max(0, bisect.bisect_right(self.starts, offset) - 1)
        pos = offset
        while pos < end:
            e = self.exts[i] if i < len(self.exts) else None
            if e is None:
                yield pos, end - pos, None
                return
            estart, eend = e.offset, e.offset + e.length
            if pos < estart:
                n = min(end, estart) - pos
                yield pos, n, None
                pos += n
                continue
            if pos >= eend:
                i += 1
                continue
            n = min(end, eend) - pos
            zero = e.type == FILE_EXTENT_PREALLOC or (e.inline is None and e.disk_bytenr == 0)
            yield pos, n, None if zero else e
            pos += n
            i += 1

    def _bytes(self, e: FileExtent, at: int, n: int) -> bytes:
        """``n`` bytes from ``at`` bytes into extent ``e``'s part of the file."""
        vol = self.vol
        where = f"{self.name} extent at file offset {e.offset}"
        if e.inline is not None:
            data = e.inline if not e.compression else vol.decompressed(
                ("inline", self.name, e.offset), e.compression, e.inline, e.ram_bytes, where)
        elif not e.compression:
            return vol.read_logical(e.disk_bytenr + e.extent_offset + at, n, where)
        else:
            raw_key = ("disk", e.disk_bytenr)
            data = vol.cached_extent(raw_key)
            if data is None:
                raw = vol.read_logical(e.disk_bytenr, e.disk_num_bytes, where)
                data = vol.decompressed(raw_key, e.compression, raw, e.ram_bytes, where)
            at += e.extent_offset
        piece = data[at:at + n]
        return piece + bytes(n - len(piece)) if len(piece) < n else piece

    def _fill(self, e: FileExtent, pos: int, dst: memoryview) -> None:
        dst[:] = self._bytes(e, pos - e.offset, len(dst))


def check_extents(extents: list[FileExtent], source: str, where: str) -> list[FileExtent]:
    end = 0
    for e in extents:
        if e.offset < end or e.length < 0 or e.length > 1 << 50:
            raise FormatError(f"file extent at {e.offset} overlaps the one before or is huge",
                              source=source, structure=where)
        end = e.offset + e.length
    return extents


__all__ = ["FileStream", "check_extents", "decompress"]
