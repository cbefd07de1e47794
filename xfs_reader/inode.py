"""On-disk inodes (xfs_dinode): the core fields, times and the two forks' raw bytes.

v1/v2 inodes have a 100-byte core, v3 (v5 file systems) a 176-byte core with a CRC, the
inode's own number, crtime and flags2 (big timestamps, 64-bit extent counters).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from streams.errors import FormatError

from .checksum import verify_crc
from .superblock import Superblock

FMT_DEV, FMT_LOCAL, FMT_EXTENTS, FMT_BTREE = 0, 1, 2, 3
FLAGS2_BIGTIME = 1 << 3
FLAGS2_NREXT64 = 1 << 4
DIFLAG_REALTIME = 1 << 0
BIGTIME_EPOCH_OFFSET = 1 << 31
CORE_V2, CORE_V3 = 100, 176


@dataclass
class Inode:
    ino: int
    mode: int
    version: int
    format: int
    uid: int
    gid: int
    nlink: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    crtime_ns: int | None
    size: int
    nblocks: int
    nextents: int
    anextents: int
    aformat: int
    flags: int
    flags2: int
    data_fork: bytes
    attr_fork: bytes | None
    offset: int           # byte offset of the inode in the volume

    @property
    def realtime(self) -> bool:
        return bool(self.flags & DIFLAG_REALTIME)


# magic mode version format onlink uid gid nlink (8-23), size nblocks (56-71), nextents
# anextents forkoff aformat (76-83), flags (90)
_HEAD = struct.Struct(">2sHBBHIII")
_SIZES = struct.Struct(">qQ")
_COUNTS = struct.Struct(">IHBB")
_LEGACY_TIMES = struct.Struct(">iIiIiI")


def _time_ns(raw: bytes, at: int, bigtime: bool) -> int:
    if bigtime:
        v = struct.unpack_from(">Q", raw, at)[0]
        return v - BIGTIME_EPOCH_OFFSET * 1_000_000_000
    sec, nsec = struct.unpack_from(">iI", raw, at)
    return sec * 1_000_000_000 + min(nsec, 999_999_999)


def parse(raw: bytes, ino: int, sb: Superblock, source: str, offset: int) -> Inode:
    structure = f"XFS inode {ino}"

    def bad(msg: str, at: int = 0) -> FormatError:
        return FormatError(msg, source=source, structure=structure, offset=offset + at)

    magic, mode, version, fmt, onlink, uid, gid, nlink = _HEAD.unpack_from(raw, 0)
    if magic != b"IN":
        raise bad("bad inode magic")
    if version == 1:
        nlink = onlink
    elif version not in (2, 3) or (version == 3) != sb.crc:
        raise bad(f"inode version {version} on a v{sb.version} file system", 4)
    core = CORE_V3 if version == 3 else CORE_V2
    flags2 = 0
    crtime = None
    if version == 3:
        verify_crc(raw, 100, source, structure, offset)
        stored_ino = struct.unpack_from(">Q", raw, 152)[0]
        if stored_ino != ino:
            raise bad(f"inode says it is number {stored_ino}", 152)
        flags2 = struct.unpack_from(">Q", raw, 120)[0]
    bigtime = bool(flags2 & FLAGS2_BIGTIME)
    if bigtime:
        atime, mtime, ctime = (_time_ns(raw, at, True) for at in (32, 40, 48))
    else:
        asec, ans, msec, mns, csec, cns = _LEGACY_TIMES.unpack_from(raw, 32)
        atime = asec * 1_000_000_000 + min(ans, 999_999_999)
        mtime = msec * 1_000_000_000 + min(mns, 999_999_999)
        ctime = csec * 1_000_000_000 + min(cns, 999_999_999)
    if version == 3:
        crtime = _time_ns(raw, 144, bigtime)
    size, nblocks = _SIZES.unpack_from(raw, 56)
    if size < 0:
        raise bad(f"negative size {size}", 56)
    nextents, anextents, forkoff, aformat = _COUNTS.unpack_from(raw, 76)
    if flags2 & FLAGS2_NREXT64:
        nextents = struct.unpack_from(">Q", raw, 24)[0]
        anextents = struct.unpack_from(">I", raw, 76)[0]
    flags = struct.unpack_from(">H", raw, 90)[0]
    litsize = len(raw) - core
    if forkoff:
        if forkoff * 8 >= litsize:
            raise bad(f"attribute fork offset {forkoff * 8} past the inode", 82)
        data_fork = raw[core:core + forkoff * 8]
        attr_fork = raw[core + forkoff * 8:]
    else:
        data_fork, attr_fork = raw[core:], None
    if fmt > FMT_BTREE:
        raise bad(f"data fork format {fmt}", 5)
    return Inode(ino=ino, mode=mode, version=version, format=fmt, uid=uid, gid=gid,
                 nlink=nlink, atime_ns=atime, mtime_ns=mtime, ctime_ns=ctime,
                 crtime_ns=crtime, size=size, nblocks=nblocks, nextents=nextents,
                 anextents=anextents, aformat=aformat, flags=flags, flags2=flags2,
                 data_fork=data_fork, attr_fork=attr_fork, offset=offset)
