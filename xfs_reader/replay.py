"""Log recovery in memory: the committed transactions between the log's tail and head
replayed onto an overlay of the volume, as the kernel would at mount, nothing written.

What is replayed: buffer items (metadata blocks, logged as 128-byte chunks; cancelled
buffers skipped up to their cancel record; inode buffers, which only carry unlinked-list
pointers, and quota buffers skipped) and inode items (the core, logged in the host's byte
order, turned back into the big-endian dinode, and the forks as logged). v5 checksums of
replayed blocks and inodes are recomputed, as the kernel does when it writes them home.
Intent items (extent frees, reverse mappings, ...) change only free-space metadata, which
the reader does not use, and are not replayed.
"""

from __future__ import annotations

import bisect
import struct
from typing import TYPE_CHECKING, Iterator

from streams.errors import FormatError
from streams.stream import Stream

from .checksum import crc_of
from .inode import CORE_V2, CORE_V3, FLAGS2_BIGTIME, FLAGS2_NREXT64
from .log import BB, Log

if TYPE_CHECKING:
    from .volume import Volume

START, COMMIT, CONTINUE, WAS_CONT, END, UNMOUNT = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
TRANS_MAGIC = 0x5452414E
LI_INODE, LI_BUF = 0x123B, 0x123C
BLF_INODE_BUF, BLF_CANCEL = 1 << 0, 1 << 1
BLF_QUOTA = (1 << 2) | (1 << 3) | (1 << 4)
CHUNK = 128
ILOG_DDATA, ILOG_DEXT, ILOG_DBROOT, ILOG_DEV = 0x2, 0x4, 0x8, 0x10
ILOG_ADATA, ILOG_AEXT, ILOG_ABROOT = 0x40, 0x80, 0x100
MAX_REGIONS = 1 << 16


class Overlay(Stream):
    """The volume with replayed 512-byte blocks on top."""

    def __init__(self, base: Stream):
        self.base = base
        self.size = base.size
        self.name = base.name
        self.blocks: dict[int, bytes] = {}
        self.keys: list[int] = []

    def put(self, at: int, data: bytes) -> None:
        end = at + len(data)
        for bb in range(at // BB, (end + BB - 1) // BB):
            lo, hi = max(at, bb * BB), min(end, (bb + 1) * BB)
            cur = self.blocks.get(bb)
            if cur is None:
                cur = self.base.read(bb * BB, BB)
                bisect.insort(self.keys, bb)
            if len(cur) < BB:
                raise FormatError("replayed block past the end of the volume",
                                  source=self.name, structure="XFS log replay", offset=bb * BB)
            buf = bytearray(cur)
            buf[lo - bb * BB:hi - bb * BB] = data[lo - at:hi - at]
            self.blocks[bb] = bytes(buf)

    def _readinto(self, offset: int, view: memoryview) -> None:
        got = self.base.readinto(offset, view)
        if got != len(view):
            raise self._short(offset, len(view), got)
        end = offset + len(view)
        i = bisect.bisect_left(self.keys, offset // BB)
        while i < len(self.keys) and self.keys[i] * BB < end:
            bb = self.keys[i]
            lo, hi = max(offset, bb * BB), min(end, (bb + 1) * BB)
            view[lo - offset:hi - offset] = self.blocks[bb][lo - bb * BB:hi - bb * BB]
            i += 1

    def _extents(self, offset: int, end: int):
        return self.base.extents(offset, end - offset)


def transactions(log: Log, tail: int, head: int) -> Iterator[list[bytes]]:
    """The regions of each transaction committed between ``tail`` and ``head``."""
    open_: dict[int, list[bytearray]] = {}
    for rec in log.records(tail, head):
        pos, data = 0, rec.data
        for _ in range(rec.num_ops):
            if pos + 12 > len(data):
                raise FormatError("operation header past its record", source=log.vol.name,
                                  structure=f"XFS log record at block {rec.block}")
            tid, length = struct.unpack_from(">II", data, pos)
            flags = data[pos + 9]
            body = data[pos + 12:pos + 12 + length]
            if len(body) != length:
                raise FormatError("operation past its record", source=log.vol.name,
                                  structure=f"XFS log record at block {rec.block}")
            pos += 12 + length
            if flags & UNMOUNT:
                continue
            if flags & START:
                open_[tid] = []
                continue
            trans = open_.get(tid)
            if trans is None:
                continue              # began before the tail: already on disk
            if flags & COMMIT:
                yield [bytes(r) for r in open_.pop(tid)]
                continue
            if flags & WAS_CONT and trans:
                trans[-1] += body
            else:
                if len(trans) >= MAX_REGIONS:
                    raise FormatError("transaction of too many regions", source=log.vol.name,
                                      structure="XFS log")
                trans.append(bytearray(body))


def _items(regions: list[bytes], vol) -> Iterator[tuple[int, list[bytes]]]:
    if not regions or len(regions[0]) < 4 or \
            struct.unpack_from("<I", regions[0], 0)[0] != TRANS_MAGIC:
        raise FormatError("transaction without its header", source=vol.name,
                          structure="XFS log transaction")
    i = 1
    while i < len(regions):
        r = regions[i]
        if len(r) < 4:
            raise FormatError("log item too short", source=vol.name, structure="XFS log item")
        typ, size = struct.unpack_from("<HH", r, 0)
        if size < 1:
            raise FormatError("log item of no regions", source=vol.name, structure="XFS log item")
        yield typ, regions[i:i + size]
        i += size


def replay(vol: "Volume", log: Log, last) -> tuple[Overlay, int, int]:
    """(overlay, transactions replayed, blocks changed) from the tail named by ``last``."""
    tail = last.tail_lsn & 0xFFFFFFFF
    head = (last.block + log.size_of(last)) % log.nbb
    committed = list(transactions(log, tail, head))
    cancels: dict[int, int] = {}              # blkno -> index of its last cancel record
    for n, regions in enumerate(committed):
        for typ, item in _items(regions, vol):
            if typ == LI_BUF and len(item[0]) >= 20:
                flags, = struct.unpack_from("<H", item[0], 4)
                if flags & BLF_CANCEL:
                    cancels[struct.unpack_from("<q", item[0], 8)[0]] = n
    ov = Overlay(vol.base)
    buffers: list[tuple[int, int]] = []
    for n, regions in enumerate(committed):
        for typ, item in _items(regions, vol):
            if typ == LI_BUF:
                buffers += _buffer(vol, ov, item, cancels, n)
            elif typ == LI_INODE:
                _inode(vol, ov, item)
    _fix_crcs(vol, ov, buffers)
    return ov, len(committed), len(ov.keys)


def _buffer(vol, ov: Overlay, item: list[bytes], cancels: dict, n: int) -> list[tuple[int, int]]:
    """Replays one buffer item; returns [(byte offset, length)] of the buffer if replayed."""
    f = item[0]
    if len(f) < 20:
        raise FormatError("buffer log item too short", source=vol.name, structure="XFS log item")
    flags, length = struct.unpack_from("<HH", f, 4)
    blkno, = struct.unpack_from("<q", f, 8)
    map_size, = struct.unpack_from("<I", f, 16)
    if flags & (BLF_CANCEL | BLF_INODE_BUF | BLF_QUOTA) or cancels.get(blkno, -1) >= n:
        return []
    if blkno < 0 or map_size > 1024 or 20 + 4 * map_size > len(f) or length == 0:
        raise FormatError(f"buffer log item for block {blkno}", source=vol.name,
                          structure="XFS log item")
    words = struct.unpack_from(f"<{map_size}I", f, 20)
    bits = [i for i in range(map_size * 32) if words[i // 32] >> (i % 32) & 1]
    nchunks = length * BB // CHUNK
    runs: list[tuple[int, int]] = []
    for b in bits:
        if b >= nchunks:
            break
        if runs and runs[-1][0] + runs[-1][1] == b:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((b, 1))
    base = blkno * BB
    for (first, count), data in zip(runs, item[1:]):
        ov.put(base + first * CHUNK, data[:count * CHUNK])
    return [(base, length * BB)]


def _swap(raw: bytes, fields) -> bytearray:
    out = bytearray(raw)
    for off, n in fields:
        out[off:off + n] = raw[off:off + n][::-1]
    return out


def _log_dinode_to_disk(core: bytes, v3: bool) -> bytearray:
    """xfs_log_dinode (host order, little-endian here) -> the on-disk big-endian core."""
    fields = [(0, 2), (2, 2), (6, 2), (8, 4), (12, 4), (16, 4), (20, 2), (22, 2),
              (56, 8), (64, 8), (72, 4), (76, 4), (80, 2), (84, 4), (88, 2), (90, 2), (92, 4),
              (96, 4)]
    flags2 = struct.unpack_from("<Q", core, 120)[0] if v3 else 0
    fields += [(24, 8)] if flags2 & FLAGS2_NREXT64 else [(30, 2)]
    stamps = [32, 40, 48] + ([144] if v3 else [])
    for at in stamps:
        fields += [(at, 8)] if flags2 & FLAGS2_BIGTIME else [(at, 4), (at + 4, 4)]
    if v3:
        fields += [(104, 8), (112, 8), (120, 8), (128, 4), (152, 8)]
    return _swap(core, fields)


def _bmdr(vol, broot: bytes, fork_size: int) -> bytes:
    """An in-core bmbt root (long btree block header) -> the inode's bmdr form."""
    hdr = 72 if vol.sb.crc else 24
    if len(broot) < hdr:
        raise FormatError("logged bmbt root too short", source=vol.name, structure="XFS log item")
    level, numrecs = struct.unpack_from(">HH", broot, 4)
    inmax = (len(broot) - hdr) // 16
    dmax = (fork_size - 4) // 16
    if numrecs > inmax or numrecs > dmax:
        raise FormatError(f"logged bmbt root of {numrecs} records", source=vol.name,
                          structure="XFS log item")
    out = bytearray(fork_size)
    struct.pack_into(">HH", out, 0, level, numrecs)
    out[4:4 + numrecs * 8] = broot[hdr:hdr + numrecs * 8]
    out[4 + dmax * 8:4 + dmax * 8 + numrecs * 8] = broot[hdr + inmax * 8:hdr + inmax * 8 + numrecs * 8]
    return bytes(out)


def _inode(vol, ov: Overlay, item: list[bytes]) -> None:
    f = item[0]
    if len(f) < 56 or len(item) < 2:
        raise FormatError("inode log item too short", source=vol.name, structure="XFS log item")
    fields, = struct.unpack_from("<I", f, 4)
    ino, = struct.unpack_from("<Q", f, 16)
    rdev, = struct.unpack_from("<I", f, 24)
    at = vol.inode_offset(ino)
    isize = vol.sb.inode_size
    core_raw = item[1]
    v3 = len(core_raw) >= CORE_V3
    core_size = CORE_V3 if v3 else CORE_V2
    if len(core_raw) < core_size:
        raise FormatError(f"logged inode core of {len(core_raw)} bytes", source=vol.name,
                          structure=f"XFS log item for inode {ino}")
    core = _log_dinode_to_disk(core_raw[:core_size], v3)
    cur = bytearray(ov.read(at, isize))
    cur[:core_size] = core
    forkoff = core[82]
    lit = isize - core_size
    dsize = forkoff * 8 if forkoff else lit
    rest = item[2:]
    if fields & (ILOG_DDATA | ILOG_DEXT | ILOG_DBROOT) and rest:
        d = rest.pop(0)
        if fields & ILOG_DBROOT:
            d = _bmdr(vol, d, dsize)
        cur[core_size:core_size + dsize] = (d[:dsize] + bytes(dsize))[:dsize]
    elif fields & ILOG_DEV:
        cur[core_size:core_size + 4] = struct.pack(">I", rdev)
    if fields & (ILOG_ADATA | ILOG_AEXT | ILOG_ABROOT) and rest and forkoff:
        a = rest.pop(0)
        asize = lit - forkoff * 8
        if fields & ILOG_ABROOT:
            a = _bmdr(vol, a, asize)
        start = core_size + forkoff * 8
        cur[start:start + asize] = (a[:asize] + bytes(asize))[:asize]
    if v3:
        cur[100:104] = struct.pack("<I", crc_of(bytes(cur), 100))
    ov.put(at, bytes(cur))


CRC_AT_0 = {b"XDB3": 4, b"XDD3": 4, b"XDF3": 4, b"BMA3": 64}
CRC_AT_8 = {0x3DF1: 12, 0x3DFF: 12, 0x3EBE: 12, 0x3BEE: 12}
PER_BLOCK = {b"XSLM": 12, b"XARM": 12}


def _fix_crcs(vol, ov: Overlay, buffers: list[tuple[int, int]]) -> None:
    """Replayed v5 blocks get their checksums back, as a write home would give them."""
    if not vol.sb.crc:
        return
    bs = vol.sb.block_size
    for base, length in sorted(set(buffers)):
        buf = bytearray(ov.read(base, length))
        magic = bytes(buf[:4])
        if magic in CRC_AT_0:
            off = CRC_AT_0[magic]
            buf[off:off + 4] = struct.pack("<I", crc_of(bytes(buf), off))
        elif magic in PER_BLOCK:
            for b in range(0, length, bs):
                blk = buf[b:b + bs]
                if blk[:4] in PER_BLOCK:
                    blk[12:16] = struct.pack("<I", crc_of(bytes(blk), 12))
                    buf[b:b + bs] = blk
        elif len(buf) >= 16 and struct.unpack_from(">H", buf, 8)[0] in CRC_AT_8:
            buf[12:16] = struct.pack("<I", crc_of(bytes(buf), 12))
        else:
            continue
        ov.put(base, bytes(buf))
