"""The XFS superblock (sector 0 of allocation group 0): geometry, features, identity.

Every field is big-endian. v5 (CRC) superblocks carry a CRC32C over the first sector;
v4 superblocks have none. Only what the reader needs is parsed.
"""

from __future__ import annotations

import struct
import uuid as _uuid
from dataclasses import dataclass

from streams.errors import FormatError, UnsupportedError

from .checksum import verify_crc

MAGIC = b"XFSB"
VERSION_NUMBITS = 0x000F
VERSION_DIRV2BIT = 0x2000
VERSION_MOREBITSBIT = 0x8000
VERSION2_FTYPE = 0x00000200
INCOMPAT_FTYPE = 1 << 0
INCOMPAT_SPINODES = 1 << 1
INCOMPAT_META_UUID = 1 << 2
INCOMPAT_BIGTIME = 1 << 3
INCOMPAT_NEEDSREPAIR = 1 << 4
INCOMPAT_NREXT64 = 1 << 5
INCOMPAT_EXCHRANGE = 1 << 6
INCOMPAT_PARENT = 1 << 7
INCOMPAT_METADIR = 1 << 8
INCOMPAT_KNOWN = (INCOMPAT_FTYPE | INCOMPAT_SPINODES | INCOMPAT_META_UUID | INCOMPAT_BIGTIME
                  | INCOMPAT_NEEDSREPAIR | INCOMPAT_NREXT64 | INCOMPAT_EXCHRANGE | INCOMPAT_PARENT)
CRC_OFFSET = 224


@dataclass(frozen=True)
class Superblock:
    block_size: int
    dblocks: int
    uuid: str
    meta_uuid: bytes
    logstart: int
    rootino: int
    agblocks: int
    agcount: int
    logblocks: int
    version: int          # 4 or 5
    sector_size: int
    inode_size: int
    label: str
    agblklog: int
    inopblog: int
    dirblklog: int
    features2: int
    incompat: int
    rextents: int
    logsectsize: int

    @property
    def has_ftype(self) -> bool:
        return bool(self.incompat & INCOMPAT_FTYPE) if self.version == 5 else bool(
            self.features2 & VERSION2_FTYPE)

    @property
    def bigtime(self) -> bool:
        return bool(self.incompat & INCOMPAT_BIGTIME)

    @property
    def crc(self) -> bool:
        return self.version == 5

    @property
    def dir_block_size(self) -> int:
        return self.block_size << self.dirblklog

    def fsb_to_byte(self, fsb: int) -> int:
        """A file-system block number (AG number in the high bits) as a byte offset."""
        agno, agbno = fsb >> self.agblklog, fsb & ((1 << self.agblklog) - 1)
        return (agno * self.agblocks + agbno) * self.block_size

    def fsb_valid(self, fsb: int, count: int = 1) -> bool:
        agno, agbno = fsb >> self.agblklog, fsb & ((1 << self.agblklog) - 1)
        return agno < self.agcount and agbno + count <= self.agblocks \
            and agno * self.agblocks + agbno + count <= self.dblocks


def probe_bytes(data: bytes) -> bool:
    return len(data) >= 128 and data[:4] == MAGIC and \
        struct.unpack_from(">I", data, 4)[0] in (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)


def parse(data: bytes, source: str) -> Superblock:
    """``data`` is at least the first 512 bytes of the volume (more if the sector is larger)."""
    def bad(msg: str, off: int = 0) -> FormatError:
        return FormatError(msg, source=source, structure="XFS superblock", offset=off)

    if len(data) < 512 or data[:4] != MAGIC:
        raise bad("no XFS superblock magic")
    (blocksize, dblocks, rblocks, rextents) = struct.unpack_from(">IQQQ", data, 4)
    uid = data[32:48]
    logstart, rootino = struct.unpack_from(">QQ", data, 48)
    agblocks, agcount, _rbmblocks, logblocks = struct.unpack_from(">IIII", data, 84)
    versionnum, sectsize, inodesize, inopblock = struct.unpack_from(">HHHH", data, 100)
    fname = data[108:120].split(b"\0", 1)[0]
    blocklog, _sectlog, inodelog, inopblog, agblklog = data[120:125]
    dirblklog = data[192]
    logsectsize = struct.unpack_from(">H", data, 194)[0]
    features2 = struct.unpack_from(">I", data, 200)[0]
    version = versionnum & VERSION_NUMBITS
    if version not in (4, 5):
        raise UnsupportedError(f"XFS superblock version {version} (only 4 and 5 are read)",
                               source=source, structure="XFS superblock", offset=100)
    if blocksize != 1 << blocklog or not 512 <= blocksize <= 65536:
        raise bad(f"block size {blocksize} does not match its log {blocklog}", 4)
    if sectsize not in (512, 1024, 2048, 4096, 8192, 16384, 32768) or sectsize > blocksize:
        raise bad(f"sector size {sectsize}", 102)
    if inodesize != 1 << inodelog or not 256 <= inodesize <= 2048 or inodesize > blocksize:
        raise bad(f"inode size {inodesize}", 104)
    if inopblock != blocksize // inodesize or 1 << inopblog != inopblock:
        raise bad(f"inodes per block {inopblock}", 106)
    if not 1 <= agcount <= 1 << 24 or not 5 <= agblocks < 1 << 31 or \
            agblklog >= 32 or agblocks > 1 << agblklog or dirblklog > 8:
        raise bad(f"allocation groups: {agcount} x {agblocks} blocks", 84)
    if dblocks == 0 or dblocks > agcount * agblocks:
        raise bad(f"{dblocks} data blocks in {agcount} groups of {agblocks}", 8)
    if version == 4 and not versionnum & VERSION_DIRV2BIT:
        raise UnsupportedError("XFS version-1 directories", source=source,
                               structure="XFS superblock", offset=100)
    incompat = 0
    meta_uuid = uid
    if version == 5:
        verify_crc(data[:sectsize], CRC_OFFSET, source, "XFS superblock", 0)
        incompat = struct.unpack_from(">I", data, 216)[0]
        if incompat & ~INCOMPAT_KNOWN:
            raise UnsupportedError(f"XFS incompatible features {incompat & ~INCOMPAT_KNOWN:#x}",
                                   source=source, structure="XFS superblock", offset=216)
        if incompat & INCOMPAT_META_UUID:
            meta_uuid = data[248:264]
    return Superblock(
        block_size=blocksize, dblocks=dblocks, uuid=str(_uuid.UUID(bytes=uid)),
        meta_uuid=meta_uuid, logstart=logstart, rootino=rootino, agblocks=agblocks,
        agcount=agcount, logblocks=logblocks, version=version, sector_size=sectsize,
        inode_size=inodesize, label=fname.decode("utf-8", "surrogateescape"),
        agblklog=agblklog, inopblog=inopblog, dirblklog=dirblklog, features2=features2,
        incompat=incompat, rextents=rextents, logsectsize=logsectsize or 512)
