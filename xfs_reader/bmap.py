"""Block maps: a fork's extent list, read straight from the inode or down a bmbt B+tree,
and the stream of a file's bytes over it (holes and unwritten extents read as zeros).

An extent record is 128 bits: unwritten flag, 54-bit file offset, 52-bit start block
(AG number in the high bits), 21-bit length, all in file-system blocks.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

from streams.errors import FormatError
from streams.extentmap import ExtentMapStream

from .checksum import verify_crc
from .inode import FMT_BTREE, FMT_EXTENTS, Inode

if TYPE_CHECKING:
    from .volume import Volume

BMAP_MAGIC_V4, BMAP_MAGIC_V5 = b"BMAP", b"BMA3"
MAX_LEVELS = 10


@dataclass(frozen=True)
class Mapping:
    startoff: int      # file block
    startblock: int    # fs block (agno << agblklog | agbno)
    count: int
    unwritten: bool


def _unpack_records(buf: bytes, at: int, n: int) -> list[Mapping]:
    out = []
    for i in range(n):
        hi, lo = struct.unpack_from(">QQ", buf, at + 16 * i)
        out.append(Mapping(startoff=(hi >> 9) & ((1 << 54) - 1),
                           startblock=((hi & 0x1FF) << 43) | (lo >> 21),
                           count=lo & 0x1FFFFF, unwritten=bool(hi >> 63)))
    return out


def fork_map(vol: "Volume", inode: Inode, attr: bool = False) -> list[Mapping]:
    """The fork's extents sorted by file offset, each checked against the volume."""
    fork = inode.attr_fork if attr else inode.data_fork
    fmt = inode.aformat if attr else inode.format
    count = inode.anextents if attr else inode.nextents
    what = f"XFS inode {inode.ino} {'attribute' if attr else 'data'} fork"
    if fork is None:
        return []
    if fmt == FMT_EXTENTS:
        if count * 16 > len(fork):
            raise FormatError(f"{count} extents do not fit in {len(fork)} bytes",
                              source=vol.name, structure=what, offset=inode.offset)
        maps = _unpack_records(fork, 0, count)
    elif fmt == FMT_BTREE:
        maps = _walk_btree(vol, inode, fork, what)
    else:
        raise FormatError(f"fork format {fmt} has no extents", source=vol.name,
                          structure=what, offset=inode.offset)
    return _checked(vol, maps, what, inode.offset)


def _checked(vol: "Volume", maps: list[Mapping], what: str, at: int) -> list[Mapping]:
    sb = vol.sb
    end = 0
    for m in maps:
        if m.count == 0 or m.startoff < end or not sb.fsb_valid(m.startblock, m.count):
            raise FormatError(f"extent at file block {m.startoff} (block {m.startblock:#x}, "
                              f"{m.count} blocks) out of order or outside the volume",
                              source=vol.name, structure=what, offset=at)
        end = m.startoff + m.count
    return maps


def _walk_btree(vol: "Volume", inode: Inode, root: bytes, what: str) -> list[Mapping]:
    sb = vol.sb
    if len(root) < 4:
        raise FormatError("bmbt root too small", source=vol.name, structure=what,
                          offset=inode.offset)
    level, numrecs = struct.unpack_from(">HH", root, 0)
    maxrecs = (len(root) - 4) // 16
    if level == 0 or level > MAX_LEVELS or numrecs > maxrecs:
        raise FormatError(f"bmbt root level {level} with {numrecs} records", source=vol.name,
                          structure=what, offset=inode.offset)
    ptrs = struct.unpack_from(f">{numrecs}Q", root, 4 + maxrecs * 8)
    hdr = 72 if sb.crc else 24
    magic = BMAP_MAGIC_V5 if sb.crc else BMAP_MAGIC_V4
    seen: set[int] = set()
    out: list[Mapping] = []

    def visit(fsb: int, want_level: int) -> None:
        structure = f"{what} bmbt block {fsb:#x}"
        if fsb in seen or not sb.fsb_valid(fsb):
            raise FormatError("bmbt pointer loops or leaves the volume", source=vol.name,
                              structure=structure, offset=inode.offset)
        seen.add(fsb)
        at = sb.fsb_to_byte(fsb)
        blk = vol.read_meta(at, sb.block_size, structure)
        if blk[:4] != magic:
            raise FormatError("bad bmbt block magic", source=vol.name, structure=structure,
                              offset=at)
        if sb.crc:
            verify_crc(blk, 64, vol.name, structure, at)
            owner = struct.unpack_from(">Q", blk, 56)[0]
            if owner != inode.ino:
                raise FormatError(f"bmbt block owned by inode {owner}", source=vol.name,
                                  structure=structure, offset=at)
        lvl, n = struct.unpack_from(">HH", blk, 4)
        cap = (sb.block_size - hdr) // 16     # 16-byte records, or 8-byte key + 8-byte pointer
        if lvl != want_level or n > cap:
            raise FormatError(f"bmbt block level {lvl} (expected {want_level}), {n} records",
                              source=vol.name, structure=structure, offset=at)
        if lvl == 0:
            out.extend(_unpack_records(blk, hdr, n))
            return
        for p in struct.unpack_from(f">{n}Q", blk, hdr + cap * 8):
            visit(p, lvl - 1)

    for p in ptrs:
        visit(p, level - 1)
    return out


class FileStream(ExtentMapStream):
    """A regular file's bytes: mapped blocks read from the volume, the rest zeros."""

    def __init__(self, vol: "Volume", maps: list[Mapping], size: int, name: str):
        self.vol = vol
        self.maps = maps
        self.starts = [m.startoff for m in maps]
        self.size = size
        self.name = name
        self.bs = vol.sb.block_size

    def _map(self, offset: int, end: int) -> Iterator[tuple[int, int, Mapping | None]]:
        """(offset, length, mapping or None for zeros) covering [offset, end)."""
        bs = self.bs
        i = max(0, bisect.bisect_right(self.starts, offset // bs) - 1)
        pos = offset
        while pos < end:
            m = self.maps[i] if i < len(self.maps) else None
            if m is None:
                yield pos, end - pos, None
                return
            mstart, mend = m.startoff * bs, (m.startoff + m.count) * bs
            if pos < mstart:
                n = min(end, mstart) - pos
                yield pos, n, None
                pos += n
                continue
            if pos >= mend:
                i += 1
                continue
            n = min(end, mend) - pos
            yield pos, n, (None if m.unwritten else m)
            pos += n
            i += 1

    def _fill(self, m: Mapping, pos: int, dst: memoryview) -> None:
        phys = self.vol.sb.fsb_to_byte(m.startblock) + pos - m.startoff * self.bs
        self.vol.read_data_into(phys, dst, self.name)


def read_logical(vol: "Volume", maps: list[Mapping], starts: list[int], lblock: int,
                 nblocks: int, structure: str) -> bytes | None:
    """``nblocks`` fork blocks from ``lblock`` (a directory or attribute block), or None
    when any of them is a hole."""
    sb = vol.sb
    parts = []
    b = lblock
    while b < lblock + nblocks:
        i = bisect.bisect_right(starts, b) - 1
        if i < 0:
            return None
        m = maps[i]
        if b >= m.startoff + m.count:
            return None
        n = min(lblock + nblocks, m.startoff + m.count) - b
        at = sb.fsb_to_byte(m.startblock + (b - m.startoff))
        parts.append(vol.read_meta(at, n * sb.block_size, structure))
        b += n
    return b"".join(parts)
