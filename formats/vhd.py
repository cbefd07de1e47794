"""VHD (Virtual PC / Hyper-V gen 1) reader: fixed, dynamic and differencing disks.

Layout (Microsoft "Virtual Hard Disk Image Format Specification" 1.0, all big-endian):
a 512-byte footer at the end of the file (dynamic/differencing disks keep a copy at 0),
for sparse disks a 1 KiB dynamic header ("cxsparse") pointing at the block allocation
table (BAT: one u32 sector number per block, 0xFFFFFFFF = absent) and, per block, a sector
bitmap followed by the block's data.

Deliberate choices (tested in tests/test_vhd.py):

- Size = the footer's *current size*, as Hyper-V, libvhdi and VirtualBox read it. qemu
  instead uses the CHS geometry for creators other than "win ", "qem2", "d2v ", "CTXS",
  "tap" unless ``force_size_calc=current_size``; the CHS size is never larger, so reading
  the current size never hides data. ``chs_size`` exposes the other reading.
- The sector bitmap is honoured in dynamic disks too, as the spec says and libvhdi does: a
  clear bit is a sector never written, read as zeros (qemu ignores the bitmap of dynamic
  disks; the two agree whenever the unwritten sectors hold zeros, which is what writers
  leave there). In differencing disks a clear bit sends the read to the parent.
- A damaged footer at the end falls back to the copy at offset 0 (dynamic/differencing).
"""

from __future__ import annotations

import re
import uuid
from array import array
from functools import lru_cache
from typing import Iterator

from construct import Bytes, Int8ub, Int16ub, Int32ub, Int64ub, Padding, Struct, StreamError

from formats.disk import Disk, ParentRef
from streams.errors import ChainError, FormatError, UnsupportedError
from streams.stream import DATA, ZERO, Extent, Stream, merge_extents

SECTOR = 512
FOOTER_COOKIE = b"conectix"
HEADER_COOKIE = b"cxsparse"
NO_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF
UNALLOCATED = 0xFFFFFFFF
TYPE_FIXED, TYPE_DYNAMIC, TYPE_DIFFERENCING = 2, 3, 4
MAX_BLOCK_SIZE = 1 << 28          # far above anything real (Hyper-V: 2 MiB, VPC: 512 KiB)
MAX_LOCATOR_BYTES = 1 << 16       # a UTF-16 Windows path is at most 32767 units
MAX_CHS_SECTORS = 65535 * 16 * 255
# Creators whose images qemu sizes by the footer's current size (block/vpc.c).
CURRENT_SIZE_CREATORS = (b"win ", b"qem2", b"d2v ", b"CTXS", b"tap\0")
_ABSENT_RUN = re.compile(rb"(?:\xff\xff\xff\xff)*")

FOOTER = Struct(
    "cookie" / Bytes(8),
    "features" / Int32ub,
    "version" / Int32ub,
    "data_offset" / Int64ub,
    "timestamp" / Int32ub,
    "creator_app" / Bytes(4),
    "creator_version" / Int32ub,
    "creator_host" / Bytes(4),
    "original_size" / Int64ub,
    "current_size" / Int64ub,
    "cylinders" / Int16ub,
    "heads" / Int8ub,
    "sectors_per_track" / Int8ub,
    "disk_type" / Int32ub,
    "checksum" / Int32ub,
    "unique_id" / Bytes(16),
    "saved_state" / Int8ub,
    Padding(427),
)
assert FOOTER.sizeof() == 512

LOCATOR = Struct(
    "code" / Bytes(4),
    "data_space" / Int32ub,
    "data_length" / Int32ub,
    "reserved" / Int32ub,
    "data_offset" / Int64ub,
)

DYNAMIC_HEADER = Struct(
    "cookie" / Bytes(8),
    "data_offset" / Int64ub,
    "table_offset" / Int64ub,
    "version" / Int32ub,
    "max_table_entries" / Int32ub,
    "block_size" / Int32ub,
    "checksum" / Int32ub,
    "parent_unique_id" / Bytes(16),
    "parent_timestamp" / Int32ub,
    "reserved" / Int32ub,
    "parent_name" / Bytes(512),
    "locators" / LOCATOR[8],
    Padding(256),
)
assert DYNAMIC_HEADER.sizeof() == 1024


def vhd_checksum(data: bytes, at: int) -> int:
    """One's complement of the byte sum, the 4 checksum bytes at ``at`` counted as zero."""
    return ~(sum(data) - sum(data[at : at + 4])) & 0xFFFFFFFF


def chs_geometry(size: int) -> tuple[int, int, int]:
    """Cylinders, heads, sectors per track for ``size`` bytes (the spec's algorithm)."""
    total = min(size // SECTOR, MAX_CHS_SECTORS)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def _parse(struct, data: bytes, source: str, structure: str, offset: int):
    try:
        return struct.parse(data)
    except StreamError as e:  # truncated
        raise FormatError(f"truncated ({len(data)} bytes)", source=source,
                          structure=structure, offset=offset) from e


class VhdDisk(Disk):
    """A VHD file as a disk. Opening reads the footer and the dynamic header only."""

    format = "vhd"

    def __init__(self, stream: Stream):
        self.source = stream
        self.name = stream.name
        self.warnings: list[str] = []
        self.footer = self._read_footer()
        f = self.footer
        self.identity = uuid.UUID(bytes=bytes(f.unique_id))
        self.creator_app = bytes(f.creator_app)
        self.creator_host = bytes(f.creator_host)
        self.timestamp = f.timestamp
        self.size = f.current_size
        self.chs_size = f.cylinders * f.heads * f.sectors_per_track * SECTOR
        self.logical_sector_size = self.physical_sector_size = SECTOR
        self.header = None
        self.block_size = 0
        if f.disk_type == TYPE_FIXED:
            self.kind = "fixed"
            if self.size > stream.size - SECTOR:
                raise FormatError(
                    f"fixed disk of {self.size} bytes needs {self.size + SECTOR} bytes of file, "
                    f"file has {stream.size}", source=self.name, structure="VHD footer",
                    offset=stream.size - SECTOR)
        elif f.disk_type in (TYPE_DYNAMIC, TYPE_DIFFERENCING):
            self.kind = "dynamic" if f.disk_type == TYPE_DYNAMIC else "differencing"
            self._read_dynamic_header()
        else:
            raise FormatError(f"unknown disk type {f.disk_type}", source=self.name,
                              structure="VHD footer", offset=self._footer_offset)

    # -- structures ------------------------------------------------------------------

    @property
    def qemu_size(self) -> int:
        """The size qemu reports without ``force_size_calc`` (CHS for Virtual PC creators)."""
        max_chs = self.footer.cylinders == 65535 and self.footer.heads == 16 \
            and self.footer.sectors_per_track == 255
        if self.creator_app in CURRENT_SIZE_CREATORS or max_chs:
            return self.size
        return self.chs_size

    def _check_footer(self, data: bytes, offset: int) -> tuple[object | None, str]:
        if len(data) < SECTOR or data[:8] != FOOTER_COOKIE:
            return None, "no 'conectix' cookie"
        f = FOOTER.parse(data)
        want = vhd_checksum(data, 64)
        if f.checksum != want:
            return None, f"checksum {f.checksum:#010x} != computed {want:#010x}"
        return f, ""

    def _read_footer(self):
        size = self.source.size
        if size < SECTOR:
            raise FormatError(f"file of {size} bytes is too small for a VHD", source=self.name,
                              structure="VHD footer", offset=0)
        tail_at = size - SECTOR
        tail, why = self._check_footer(self.source.read(tail_at, SECTOR), tail_at)
        if tail is not None:
            self._footer_offset = tail_at
            return tail
        head, why0 = self._check_footer(self.source.read(0, SECTOR), 0)
        if head is not None and head.disk_type in (TYPE_DYNAMIC, TYPE_DIFFERENCING):
            self._footer_offset = 0
            self.warnings.append(f"footer at {tail_at:#x} unusable ({why}); using the copy at 0")
            return head
        raise FormatError(why, source=self.name, structure="VHD footer", offset=tail_at)

    def _read_dynamic_header(self) -> None:
        f = self.footer
        at = f.data_offset
        if at == NO_DATA_OFFSET or at + 1024 > self.source.size:
            raise FormatError(f"dynamic header offset {at:#x} outside the file",
                              source=self.name, structure="VHD footer data offset",
                              offset=self._footer_offset + 16)
        raw = self.source.read(at, 1024)
        h = _parse(DYNAMIC_HEADER, raw, self.name, "VHD dynamic header", at)
        if h.cookie != HEADER_COOKIE:
            raise FormatError("no 'cxsparse' cookie", source=self.name,
                              structure="VHD dynamic header", offset=at)
        want = vhd_checksum(raw, 36)
        if h.checksum != want:
            raise FormatError(f"checksum {h.checksum:#010x} != computed {want:#010x}",
                              source=self.name, structure="VHD dynamic header", offset=at)
        bs = h.block_size
        if bs < SECTOR or bs > MAX_BLOCK_SIZE or bs & (bs - 1):
            raise FormatError(f"block size {bs} is not a power of two in [512, 256 MiB]",
                              source=self.name, structure="VHD dynamic header", offset=at + 32)
        needed = -(-self.size // bs)
        if h.max_table_entries < needed:
            raise FormatError(f"BAT has {h.max_table_entries} entries, disk needs {needed}",
                              source=self.name, structure="VHD dynamic header", offset=at + 28)
        if h.table_offset + needed * 4 > self.source.size:
            raise FormatError(f"BAT of {needed} entries at {h.table_offset:#x} runs past the "
                              f"end of the file ({self.source.size} bytes)",
                              source=self.name, structure="VHD BAT", offset=h.table_offset)
        self.header = h
        self.header_offset = at
        self.block_size = bs
        self.block_count = needed
        self.bitmap_size = -(-(bs // SECTOR) // 8 // SECTOR) * SECTOR  # whole sectors
        self._bat: array | None = None
        self._bitmap = lru_cache(maxsize=1024)(self._read_bitmap)
        if self.kind == "differencing":
            self.parent_ref = self._parent_ref(h)

    def _parent_ref(self, h) -> ParentRef:
        relative, absolute, other = [], [], []
        locators = []
        for i, loc in enumerate(h.locators):
            code = bytes(loc.code)
            if code == b"\0\0\0\0" or loc.data_length == 0:
                continue
            where = self.header_offset + 576 + 24 * i
            if loc.data_length > MAX_LOCATOR_BYTES or \
                    loc.data_offset + loc.data_length > self.source.size:
                raise FormatError(
                    f"parent locator {code!r} of {loc.data_length} bytes at "
                    f"{loc.data_offset:#x} lies outside the file", source=self.name,
                    structure=f"VHD parent locator {i}", offset=where)
            raw = self.source.read(loc.data_offset, loc.data_length)
            if code in (b"W2ru", b"W2ku"):
                text = raw.decode("utf-16-le", "replace")
            elif code == b"MacX":
                text = raw.decode("utf-8", "replace")
                if text.startswith("file://"):
                    text = text[7:]
            else:  # Wi2r / Wi2k (deprecated, ANSI) and Mac alias records
                text = raw.decode("latin-1")
            text = text.rstrip("\0")
            locators.append((code.decode("latin-1"), text))
            if not text:
                continue
            (relative if code in (b"W2ru", b"Wi2r") else
             absolute if code in (b"W2ku", b"Wi2k", b"MacX") else other).append(text)
        name = bytes(h.parent_name).decode("utf-16-be", "replace").split("\0", 1)[0]
        paths = [p for p in relative + absolute + other]
        if name and name not in paths:
            paths.append(name)
        return ParentRef(paths=tuple(paths),
                         identity=uuid.UUID(bytes=bytes(h.parent_unique_id)),
                         extra={"parent_name": name, "locators": locators,
                                "parent_timestamp": h.parent_timestamp})

    def set_parent(self, parent: Disk) -> None:
        """Link the parent, refusing one whose unique id is not the one this child expects."""
        want = self.parent_ref.identity if self.parent_ref else None
        if want is not None and parent.identity is not None and parent.identity != want:
            raise ChainError(f"parent {parent.name} has identity {parent.identity}, "
                             f"this disk expects {want}", source=self.name,
                             structure="VHD parent unique id")
        self.parent = parent

    # -- block map -------------------------------------------------------------------

    @property
    def bat(self) -> array:
        """The BAT as native u32 sector numbers (read on first use)."""
        if self._bat is None:
            raw = self.source.read(self.header.table_offset, self.block_count * 4)
            self._bat_raw = raw
            bat = array("I")
            bat.frombytes(raw)
            if bat.itemsize != 4:  # pragma: no cover - exotic platforms
                raise UnsupportedError("array('I') is not 32-bit here")
            import sys
            if sys.byteorder == "little":
                bat.byteswap()
            self._bat = bat
        return self._bat

    def _absent_run(self, index: int) -> int:
        """How many blocks from ``index`` on are absent (a C-speed scan of the raw BAT)."""
        _ = self.bat
        m = _ABSENT_RUN.match(self._bat_raw, index * 4)
        return (m.end() - index * 4) // 4

    def _block_file_offset(self, index: int) -> int | None:
        """File offset of block ``index``'s bitmap, None when absent (validated)."""
        entry = self.bat[index]
        if entry == UNALLOCATED:
            return None
        start = entry * SECTOR
        end = start + self.bitmap_size + min(self.block_size, self.size - index * self.block_size)
        if end > self.source.size:
            raise FormatError(
                f"block {index} at {start:#x} runs past the end of the file "
                f"({self.source.size} bytes)", source=self.name, structure="VHD BAT entry",
                offset=self.header.table_offset + 4 * index)
        return start

    def _read_bitmap(self, index: int) -> bytes:
        start = self._block_file_offset(index)
        return self.source.read(start, self.bitmap_size)

    def _sector_runs(self, index: int, first: int, last: int) -> Iterator[tuple[bool, int, int]]:
        """(in_file, first_sector, count) runs for sectors [first, last) of block ``index``."""
        bitmap = self._bitmap(index)
        span = bitmap[first >> 3 : (last + 7) >> 3]
        if span.count(0xFF) == len(span):  # the usual cases: all written / none written
            yield True, first, last - first
            return
        if not any(span):
            yield False, first, last - first
            return
        s = first
        while s < last:
            cur = (bitmap[s >> 3] >> (7 - (s & 7))) & 1
            e = s + 1
            while e < last:
                if not e & 7 and e + 8 <= last and bitmap[e >> 3] == (0xFF if cur else 0):
                    e += 8  # whole byte of the same bit
                elif (bitmap[e >> 3] >> (7 - (e & 7))) & 1 == cur:
                    e += 1
                else:
                    break
            yield bool(cur), s, e - s
            s = e

    def _plan(self, offset: int, length: int) -> list[tuple[str, int, int]]:
        """Pieces ("file", file_offset, n) / ("parent", disk_offset, n) / ("zero", 0, n)."""
        plan: list[list] = []

        def add(kind: str, where: int, n: int) -> None:
            if plan and plan[-1][0] == kind and (kind == "zero" or
                                                 plan[-1][1] + plan[-1][2] == where):
                plan[-1][2] += n
            else:
                plan.append([kind, where, n])

        bs = self.block_size
        diff = self.kind == "differencing"
        pos, end = offset, offset + length
        while pos < end:
            index, within = divmod(pos, bs)
            n = min(bs - within, end - pos)
            start = self._block_file_offset(index)
            if start is None:
                add("parent" if diff else "zero", pos, n)
            else:
                first, last = within // SECTOR, -(-(within + n) // SECTOR)
                for in_file, s, count in self._sector_runs(index, first, last):
                    a = max(s * SECTOR, within)
                    b = min((s + count) * SECTOR, within + n)
                    if in_file:
                        add("file", start + self.bitmap_size + a, b - a)
                    else:
                        add("parent" if diff else "zero", index * bs + a, b - a)
            pos += n
        return [tuple(p) for p in plan]

    # -- Stream ----------------------------------------------------------------------

    def _read(self, offset: int, length: int) -> bytes:
        if self.kind == "fixed":
            return self.source.read(offset, length)
        buf = bytearray(length)
        self._fill(offset, memoryview(buf))
        return bytes(buf)

    def _readinto(self, offset: int, view: memoryview) -> None:
        if self.kind == "fixed":
            got = self.source.readinto(offset, view)
            if got != len(view):
                raise FormatError(f"short read of {len(view)} bytes", source=self.name,
                                  structure="VHD fixed data", offset=offset + got)
            return
        self._fill(offset, view)

    def _fill(self, offset: int, view: memoryview) -> None:
        """Fill ``view`` with the disk bytes at ``offset`` (``view`` starts zeroed or not)."""
        at = 0
        for kind, where, n in self._plan(offset, len(view)):
            part = view[at : at + n]
            if kind == "zero":
                part[:] = bytes(n)
            elif kind == "file":
                got = self.source.readinto(where, part)
                if got != n:
                    raise FormatError(f"short read of {n} bytes", source=self.name,
                                      structure="VHD block data", offset=where)
            else:
                self._read_parent(where, part)
            at += n

    def _pieces_into(self, offset: int, length: int, out) -> bool:
        """A fixed disk's bytes are its file's; a dynamic one's present sectors too (the
        block's sector bitmap is read, its data not), absent ones zeros or the parent's."""
        if self.kind == "fixed":
            return self.source.pieces(offset, length, out)
        for kind, where, n in self._plan(offset, length):
            if kind == "zero":
                out.append(("Z", n))
            elif kind == "file":
                if not self.source.pieces(where, n, out):
                    return False
            else:
                if self.parent is None:
                    return False
                avail = max(0, min(n, self.parent.size - where))
                if avail and not self.parent.pieces(where, avail, out):
                    return False
                if avail < n:
                    out.append(("Z", n - avail))
        return True

    def _read_parent(self, offset: int, part: memoryview) -> None:
        parent = self.parent
        if parent is None:
            raise ChainError(
                "differencing disk read before its parent was found "
                f"(parent {self.parent_ref.paths[0] if self.parent_ref.paths else '?'})",
                source=self.name, structure="VHD parent", offset=None)
        n = len(part)
        avail = max(0, min(n, parent.size - offset))
        if avail:
            got = parent.readinto(offset, part[:avail])
            if got != avail:
                raise FormatError(f"parent gave {got} of {avail} bytes", source=parent.name,
                                  structure="VHD parent read", offset=offset)
        if avail < n:
            part[avail:] = bytes(n - avail)

    def _extents(self, offset: int, end: int) -> Iterator[Extent]:
        if self.kind == "fixed":
            yield from merge_extents(self.source.extents(offset, end - offset))
            return
        yield from merge_extents(self._block_extents(offset, end))

    def _block_extents(self, offset: int, end: int) -> Iterator[Extent]:
        diff = self.kind == "differencing"
        bs = self.block_size
        pos = offset
        absent_from = None
        while pos < end:
            index, within = divmod(pos, bs)
            n = min(bs - within, end - pos)
            start = self._block_file_offset(index)
            if start is None:
                if absent_from is None:
                    absent_from = pos
                pos = min(end, (index + max(1, self._absent_run(index))) * bs)
                continue
            if absent_from is not None:
                yield from self._absent(absent_from, pos, diff)
                absent_from = None
            first, last = within // SECTOR, -(-(within + n) // SECTOR)
            for in_file, s, count in self._sector_runs(index, first, last):
                a = index * bs + max(s * SECTOR, within)
                b = index * bs + min((s + count) * SECTOR, within + n)
                if in_file:
                    yield Extent(a, b - a, DATA)
                else:
                    yield from self._absent(a, b, diff)
            pos += n
        if absent_from is not None:
            yield from self._absent(absent_from, end, diff)

    def _absent(self, a: int, b: int, diff: bool) -> Iterator[Extent]:
        if not diff:
            yield Extent(a, b - a, ZERO)
            return
        if self.parent is None:  # unknown yet: must be read (and will raise there)
            yield Extent(a, b - a, DATA)
            return
        top = min(b, self.parent.size)
        if a < top:
            yield from self.parent.extents(a, top - a)
        if top < b:
            yield Extent(max(a, top), b - max(a, top), ZERO)
