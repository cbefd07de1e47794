"""Inodes and how their logical blocks map to the volume: extent trees, indirect blocks,
inline data (layouts from fs/ext4/ext4.h and ext4_extents.h).

A file's map is a sorted list of runs (logical block, physical block, count, unwritten);
what no run covers is a hole and reads as zeros (so do unwritten extents), and the file's
stream reports both as ZERO extents.
"""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

from ext4_reader.checksum import crc32c_raw
from streams.errors import FormatError, UnsupportedError
from streams.filekinds import kind_of_mode
from streams.stream import DATA, ZERO, Extent, Stream

EXTENTS_FL = 0x80000
INLINE_DATA_FL = 0x10000000
INDEX_FL = 0x1000
HUGE_FILE_FL = 0x40000
ENCRYPT_FL = 0x800
EA_INODE_FL = 0x200000
EXTENT_MAGIC = 0xF30A
MAX_EXTENT_DEPTH = 5
INLINE_SIZE = 60

_INODE = struct.Struct("<HHIIIIIHHII4x60sIIIIHHHHH2x")
_EXTRA = struct.Struct("<5I")     # i_ctime_extra, i_mtime_extra, i_atime_extra, i_crtime, i_crtime_extra


def _time(base: int, extra: int | None) -> int:
    """ns since the epoch from a 32-bit signed time and its ``_extra`` (epoch bits, ns)."""
    secs = base - (1 << 32) if base >= 1 << 31 else base
    if extra is None:
        return secs * 1_000_000_000
    secs += (extra & 3) << 32
    return secs * 1_000_000_000 + (extra >> 2)


@dataclass(slots=True)
class Inode:
    ino: int
    mode: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    ctime_ns: int
    mtime_ns: int
    crtime_ns: int | None
    nlink: int
    blocks: int           # 512-byte units (already scaled for huge files)
    flags: int
    block: bytes          # i_block, 60 bytes
    generation: int
    file_acl: int
    extra: bytes          # the in-inode space after i_extra_isize (in-inode xattrs)
    dtime: int

    @property
    def kind(self) -> str:
        kind = kind_of_mode(self.mode)
        if kind is None:
            raise FormatError(f"unknown file type {self.mode:#o} (a free or damaged inode)",
                              structure=f"ext4 inode {self.ino}")
        return kind

    @property
    def rdev(self) -> int:
        """Device number of a device node, as ``os.makedev`` gives it."""
        import os

        old, new = struct.unpack_from("<II", self.block)
        if old:
            return os.makedev((old >> 8) & 0xFF, old & 0xFF)
        return os.makedev((new >> 8) & 0xFFF, (new & 0xFF) | ((new >> 12) & 0xFFF00))


def parse_inode(raw: bytes, ino: int, *, inode_size: int, huge_file: bool, csum_seed: int | None,
                source: str, offset: int, block_size: int) -> Inode:
    """One inode from its on-disk bytes; with ``csum_seed`` (metadata_csum) the checksum
    is checked first."""
    structure = f"ext4 inode {ino}"
    if len(raw) < 128:
        raise FormatError("truncated", source=source, structure=structure, offset=offset)
    (mode, uid_lo, size_lo, atime, ctime, mtime, dtime, gid_lo, links, blocks_lo, flags, block,
     generation, acl_lo, size_hi, _faddr, blocks_hi, acl_hi, uid_hi, gid_hi,
     csum_lo) = _INODE.unpack_from(raw)
    extra_isize = 0
    if inode_size > 128:
        (extra_isize,) = struct.unpack_from("<H", raw, 128)
        if extra_isize & 3 or 128 + extra_isize > inode_size:
            raise FormatError(f"i_extra_isize {extra_isize} does not fit an inode of "
                              f"{inode_size} bytes", source=source, structure=structure,
                              offset=offset + 128)
    if csum_seed is not None:
        has_hi = extra_isize >= 4
        crc = crc32c_raw(csum_seed, struct.pack("<II", ino, generation))
        crc = crc32c_raw(crc, raw[:124])
        crc = crc32c_raw(crc, b"\0\0")            # i_checksum_lo, zeroed
        stored = csum_lo
        if has_hi:
            crc = crc32c_raw(crc, raw[126:130])
            crc = crc32c_raw(crc, b"\0\0")        # i_checksum_hi, zeroed
            calc = crc32c_raw(crc, raw[132:inode_size])
            stored |= struct.unpack_from("<H", raw, 130)[0] << 16
        else:
            calc = crc32c_raw(crc, raw[126:inode_size]) & 0xFFFF
        if calc != stored and any(raw[:inode_size]):
            raise FormatError(f"checksum {stored:#x} does not match {calc:#x}", source=source,
                              structure=structure, offset=offset)

    if extra_isize >= 24:     # up to i_crtime_extra: every time field (the common case)
        c_x, m_x, a_x, cr, cr_x = _EXTRA.unpack_from(raw, 132)
        crtime = _time(cr, cr_x)
    else:
        def field(off: int) -> int | None:
            return struct.unpack_from("<I", raw, off)[0] if extra_isize >= off - 128 + 4 else None
        c_x, m_x, a_x, cr = field(132), field(136), field(140), field(144)
        crtime = None if cr is None else _time(cr, field(148))
    blocks = blocks_lo | blocks_hi << 32
    if huge_file and flags & HUGE_FILE_FL:
        blocks *= block_size // 512
    return Inode(
        ino=ino, mode=mode, uid=uid_lo | uid_hi << 16, gid=gid_lo | gid_hi << 16,
        size=size_lo | size_hi << 32,
        atime_ns=_time(atime, a_x), ctime_ns=_time(ctime, c_x),
        mtime_ns=_time(mtime, m_x), crtime_ns=crtime, nlink=links, blocks=blocks,
        flags=flags, block=block, generation=generation, file_acl=acl_lo | acl_hi << 32,
        extra=bytes(raw[128 + extra_isize:inode_size]) if inode_size > 128 else b"",
        dtime=dtime)


# -- block maps --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Run:
    logical: int
    physical: int
    count: int
    unwritten: bool = False


class BlockMap:
    """A file's runs, sorted by logical block, found by bisect."""

    def __init__(self, runs: list[Run]):
        self.runs = runs
        self.starts = [r.logical for r in runs]

    def find(self, logical: int) -> tuple[Run | None, int]:
        """The run holding ``logical``, or (None, first logical block of the next run)."""
        i = bisect.bisect_right(self.starts, logical) - 1
        if i >= 0:
            r = self.runs[i]
            if logical < r.logical + r.count:
                return r, 0
        nxt = self.runs[i + 1].logical if i + 1 < len(self.runs) else 1 << 64
        return None, nxt


def extent_runs(volume, inode: Inode) -> list[Run]:
    """Walk an extent tree (the root is in i_block); every tree block is visited once."""
    runs: list[Run] = []
    seen: set[int] = set()
    structure = f"ext4 extent tree of inode {inode.ino}"

    def bad(msg: str, block: int | None) -> FormatError:
        return FormatError(msg, source=volume.name, structure=structure,
                           offset=None if block is None else block * volume.block_size)

    def node(data: bytes, depth_expected: int | None, block: int | None) -> None:
        if len(data) < 12:
            raise bad("truncated node", block)
        magic, entries, maximum, depth, _gen = struct.unpack_from("<HHHHI", data)
        if magic != EXTENT_MAGIC:
            raise bad(f"bad extent header magic {magic:#06x}", block)
        if depth > MAX_EXTENT_DEPTH or (depth_expected is not None and depth != depth_expected):
            raise bad(f"depth {depth} where {depth_expected} was expected", block)
        if entries > maximum or 12 + 12 * maximum > len(data):
            raise bad(f"{entries} of {maximum} entries do not fit", block)
        if block is not None and volume.sb.metadata_csum:
            tail = 12 + 12 * maximum
            if tail + 4 <= len(data):
                (stored,) = struct.unpack_from("<I", data, tail)
                calc = crc32c_raw(volume.inode_seed(inode), data[:tail])
                if calc != stored:
                    raise bad(f"checksum {stored:#010x} does not match {calc:#010x}", block)
        last = -1
        for k in range(entries):
            off = 12 + 12 * k
            if depth == 0:
                lblk, length, hi, lo = struct.unpack_from("<IHHI", data, off)
                unwritten = length > 32768
                if unwritten:
                    length -= 32768
                if length == 0:
                    continue
                if lblk <= last:
                    raise bad(f"extent at logical block {lblk} out of order", block)
                runs.append(Run(lblk, lo | hi << 32, length, unwritten))
                last = lblk + length - 1
            else:
                lblk, lo, hi = struct.unpack_from("<IIH", data, off)
                if lblk <= last and k:
                    raise bad(f"index at logical block {lblk} out of order", block)
                last = lblk
                child = lo | hi << 32
                if child in seen:
                    raise bad(f"tree block {child} is referenced twice", block)
                if child >= volume.sb.blocks_count:
                    raise bad(f"tree block {child} is past the end of the volume", block)
                seen.add(child)
                node(volume.read_block(child), depth - 1, child)

    node(inode.block, None, None)
    runs.sort(key=lambda r: r.logical)
    for a, b in zip(runs, runs[1:]):
        if a.logical + a.count > b.logical:
            raise bad(f"extents overlap at logical block {b.logical}", None)
    return runs


def indirect_runs(volume, inode: Inode) -> list[Run]:
    """ext2/ext3 block pointers: 12 direct, then single, double and triple indirect."""
    bs = volume.block_size
    per = bs // 4
    nblocks = -(-inode.size // bs)
    ptrs = struct.unpack_from("<15I", inode.block)
    runs: list[Run] = []
    total = volume.sb.blocks_count

    def add(logical: int, physical: int) -> None:
        if physical == 0:
            return
        if physical >= total:
            raise FormatError(f"block pointer {physical} past the end of the volume",
                              source=volume.name, structure=f"ext4 block map of inode {inode.ino}")
        if runs and runs[-1].logical + runs[-1].count == logical and \
                runs[-1].physical + runs[-1].count == physical:
            last = runs[-1]
            runs[-1] = Run(last.logical, last.physical, last.count + 1)
        else:
            runs.append(Run(logical, physical, 1))

    for i in range(min(12, nblocks)):
        add(i, ptrs[i])

    def walk(block: int, level: int, first: int) -> None:
        """Pointers in indirect ``block`` (``level`` 1 = points at data) from ``first``."""
        if block == 0 or first >= nblocks:
            return
        if block >= total:
            raise FormatError(f"indirect block {block} past the end of the volume",
                              source=volume.name, structure=f"ext4 block map of inode {inode.ino}")
        entries = struct.unpack(f"<{per}I", volume.read_block(block))
        span = per ** (level - 1)
        for k, p in enumerate(entries):
            start = first + k * span
            if start >= nblocks:
                break
            if level == 1:
                add(start, p)
            else:
                walk(p, level - 1, start)

    walk(ptrs[12], 1, 12)
    walk(ptrs[13], 2, 12 + per)
    walk(ptrs[14], 3, 12 + per + per * per)
    return runs


class FileStream(Stream):
    """A regular file's (or slow symlink's, or directory's) bytes: runs read through the
    volume (journal-replayed blocks included); holes and unwritten extents are ZERO."""

    def __init__(self, volume, inode: Inode, bmap: BlockMap, name: str):
        self.volume = volume
        self.inode = inode
        self.map = bmap
        self.size = inode.size
        self.name = name

    def _readinto(self, offset: int, view: memoryview) -> None:
        bs = self.volume.block_size
        pos, end = offset, offset + len(view)
        while pos < end:
            lblock, within = divmod(pos, bs)
            run, nxt = self.map.find(lblock)
            if run is None or run.unwritten:
                stop = min(end, nxt * bs) if run is None else min(end, (run.logical + run.count) * bs)
                view[pos - offset:stop - offset] = bytes(stop - pos)
                pos = stop
                continue
            stop = min(end, (run.logical + run.count) * bs)
            phys = (run.physical + lblock - run.logical) * bs + within
            self.volume.read_into(phys, view[pos - offset:stop - offset])
            pos = stop

    def _extents(self, offset: int, end: int):
        bs = self.volume.block_size
        pos = offset
        while pos < end:
            run, nxt = self.map.find(pos // bs)
            if run is None or run.unwritten:
                stop = min(end, nxt * bs) if run is None else min(end, (run.logical + run.count) * bs)
                yield Extent(pos, stop - pos, ZERO)
            else:
                stop = min(end, (run.logical + run.count) * bs)
                yield Extent(pos, stop - pos, DATA)
            pos = stop


def check_supported(inode: Inode, source: str) -> None:
    if inode.flags & ENCRYPT_FL:
        raise UnsupportedError(f"inode {inode.ino} is encrypted (fscrypt): cannot be read here",
                               source=source, structure=f"ext4 inode {inode.ino}")
