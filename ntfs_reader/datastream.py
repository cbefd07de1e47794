"""Streams over attribute contents: non-resident (runlists, sparse, valid data length) and
LZNT1-compressed.

Physically adjacent runs are coalesced once, so a contiguous file is one ``readinto`` on
the volume whatever its runlist looks like. Sparse runs and bytes past the initialized
size (valid data length) read as zeros and are reported as ZERO extents.
"""

from __future__ import annotations

from bisect import bisect_right

from streams.errors import FormatError, UnsupportedError
from streams.extentmap import ExtentMapStream
from streams.stream import DATA, ZERO, Extent, Stream

from .cache import COMPRESSED_UNIT_CACHE, LRU, MAX_COMPRESSION_UNIT


def coalesce(runs: list) -> list:
    """Joins runs that continue each other on disk (or are both sparse)."""
    out: list = []
    for vcn, length, lcn in runs:
        if out:
            pv, pl, plcn = out[-1]
            if pv + pl == vcn and ((plcn is None and lcn is None)
                                   or (plcn is not None and lcn is not None and plcn + pl == lcn)):
                out[-1] = (pv, pl + length, plcn)
                continue
        out.append((vcn, length, lcn))
    return out


class RunlistStream(ExtentMapStream):
    """``size`` bytes of a non-resident attribute on ``volume`` (a Stream)."""

    def __init__(self, volume: Stream, cluster_size: int, runs: list, size: int,
                 initialized_size: int, name: str):
        self.volume = volume
        self.cs = cluster_size
        self.runs = coalesce(runs)
        self.starts = [r[0] for r in self.runs]
        self.size = size
        self.init = min(initialized_size, size)
        self.name = name
        self.mapped = (self.runs[-1][0] + self.runs[-1][1]) * cluster_size if self.runs else 0

    def _map(self, offset: int, end: int):
        """(offset, length, disk offset | None) pieces covering [offset, end)."""
        cs = self.cs
        pos = offset
        while pos < end:
            if pos >= self.init:
                yield pos, end - pos, None
                return
            stop = min(end, self.init)
            i = bisect_right(self.starts, pos // cs) - 1
            if i < 0 or pos >= self.mapped:
                raise FormatError(f"offset {pos} is not mapped by the runlist",
                                  source=self.name, structure="runlist", offset=pos)
            vcn, length, lcn = self.runs[i]
            run_end = (vcn + length) * cs
            if pos >= run_end:
                raise FormatError(f"offset {pos} falls in a gap of the runlist",
                                  source=self.name, structure="runlist", offset=pos)
            n = min(stop, run_end) - pos
            yield pos, n, (None if lcn is None else lcn * cs + (pos - vcn * cs))
            pos += n

    def _pieces_into(self, offset: int, length: int, out) -> bool:
        for _, n, disk in self._map(offset, offset + length):
            if disk is None:
                out.append(("Z", n))
            elif not self.volume.pieces(disk, n, out):
                return False
        return True

    def _span(self, offset: int, length: int):
        end = offset + length
        if end > self.init:
            return None   # past the valid data length: zeros, not the volume's bytes
        cs = self.cs
        i = bisect_right(self.starts, offset // cs) - 1
        if i < 0:
            return None
        vcn, n, lcn = self.runs[i]
        if lcn is None or end > (vcn + n) * cs:
            return None
        return self.volume, lcn * cs + offset - vcn * cs

    def _read(self, offset: int, length: int) -> bytes:
        end = offset + length
        if end <= self.init:  # fast path: inside one allocated run (MFT records, INDX)
            cs = self.cs
            i = bisect_right(self.starts, offset // cs) - 1
            if i >= 0:
                vcn, n, lcn = self.runs[i]
                if lcn is not None and end <= (vcn + n) * cs:
                    data = self.volume.read(lcn * cs + offset - vcn * cs, length)
                    if len(data) == length:
                        return data
        buf = bytearray(length)
        self._readinto(offset, memoryview(buf))
        return bytes(buf)

    def _fill(self, disk: int, pos: int, dst: memoryview) -> None:
        got = self.volume.readinto(disk, dst)
        if got != len(dst):
            raise FormatError(f"run at volume offset {disk:#x} is past the end of "
                              f"the volume", source=self.name, structure="runlist",
                              offset=pos)


class CompressedStream(Stream):
    """An LZNT1-compressed attribute, decoded one compression unit at a time.

    In each unit (``2**compression_unit`` clusters, 16 typically): all clusters sparse ->
    zeros; all allocated -> stored uncompressed; otherwise the allocated clusters hold the
    compressed unit and the sparse tail is just padding.
    """

    def __init__(self, volume: Stream, cluster_size: int, runs: list, size: int,
                 initialized_size: int, compression_unit: int, name: str):
        if cluster_size << compression_unit > MAX_COMPRESSION_UNIT:
            raise FormatError(f"compression unit of {cluster_size << compression_unit} bytes "
                              f"(2**{compression_unit} clusters)", source=name,
                              structure="compressed attribute")
        self.raw = RunlistStream(volume, cluster_size, runs, 1 << 62, 1 << 62, name)
        self.cs = cluster_size
        self.unit_clusters = 1 << compression_unit
        self.unit = cluster_size << compression_unit
        self.size = size
        self.init = min(initialized_size, size)
        self.name = name
        self._cache = LRU(COMPRESSED_UNIT_CACHE)

    def _unit_pieces(self, index: int) -> list:
        """[(vcn, count, lcn|None)] covering the unit, clipped to it."""
        first = index * self.unit_clusters
        last = first + self.unit_clusters
        runs = self.raw.runs
        i = bisect_right(self.raw.starts, first) - 1
        out = []
        vcn = first
        while vcn < last:
            if i < 0 or i >= len(runs) or runs[i][0] + runs[i][1] <= vcn:
                if i + 1 < len(runs) and runs[i + 1][0] <= vcn:
                    i += 1
                    continue
                break  # unmapped tail (beyond the runlist): treated as sparse
            rv, rl, lcn = runs[i]
            n = min(last, rv + rl) - vcn
            out.append((vcn, n, None if lcn is None else lcn + (vcn - rv)))
            vcn += n
            i += 1
        if vcn < last:
            out.append((vcn, last - vcn, None))
        return out

    def _load_unit(self, index: int) -> bytes:
        data = self._cache.get(index)
        if data is not None:
            return data
        pieces = self._unit_pieces(index)
        allocated = [p for p in pieces if p[2] is not None]
        if not allocated:
            data = bytes(self.unit)
        else:
            raw = bytearray()
            for vcn, n, lcn in allocated:
                chunk = self.raw.volume.read(lcn * self.cs, n * self.cs)
                if len(chunk) != n * self.cs:
                    raise FormatError("compressed run past the end of the volume",
                                      source=self.name, structure="compression unit",
                                      offset=index * self.unit)
                raw += chunk
            if len(allocated) == len(pieces) and sum(p[1] for p in pieces) == self.unit_clusters:
                data = bytes(raw)
            else:
                data = _decompress(bytes(raw), self.unit, self.name, index * self.unit)
                if len(data) < self.unit:
                    data += bytes(self.unit - len(data))
        self._cache.put(index, data)
        return data

    def _read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        end = offset + length
        pos = offset
        while pos < end:
            index = pos // self.unit
            ustart = index * self.unit
            n = min(end, ustart + self.unit) - pos
            if pos >= self.init:
                out += bytes(end - pos)
                break
            n = min(n, self.init - pos)
            unit = self._load_unit(index)
            out += unit[pos - ustart:pos - ustart + n]
            pos += n
        return bytes(out)

    def _extents(self, offset: int, end: int):
        pos = offset
        pend = None
        while pos < end:
            index = pos // self.unit
            n = min(end, (index + 1) * self.unit) - pos
            zero = pos >= self.init or all(p[2] is None for p in self._unit_pieces(index))
            kind = ZERO if zero else DATA
            if pend and pend.kind == kind:
                pend = Extent(pend.offset, pend.length + n, kind)
            else:
                if pend:
                    yield pend
                pend = Extent(pos, n, kind)
            pos += n
        if pend:
            yield pend


def _decompress(data: bytes, unit_size: int, name: str, offset: int) -> bytes:
    try:
        from . import lznt1
    except ImportError:
        raise UnsupportedError("LZNT1-compressed data, and the decompressor "
                               "(ntfs_reader.lznt1) is not available", source=name,
                               structure="compression unit", offset=offset) from None
    try:
        return lznt1.decompress(data, unit_size)
    except FormatError as exc:
        raise FormatError(exc.message, source=name, structure="LZNT1 compression unit",
                          offset=offset) from None
    except (ValueError, IndexError) as exc:
        raise FormatError(f"corrupt LZNT1 data ({exc})", source=name,
                          structure="LZNT1 compression unit", offset=offset) from None
