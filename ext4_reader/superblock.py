"""The ext2/3/4 superblock and block group descriptors (layouts from the kernel's
fs/ext4/ext4.h), with their checksums checked where the file system keeps them."""

from __future__ import annotations

import struct
import uuid as uuidmod
from dataclasses import dataclass

from ext4_reader.checksum import crc16, crc32c_raw
from streams.errors import FormatError, UnsupportedError

SUPERBLOCK_OFFSET = 1024
MAGIC = 0xEF53

# feature flags (ext4.h)
COMPAT_HAS_JOURNAL = 0x4
COMPAT_SPARSE_SUPER2 = 0x200
INCOMPAT_COMPRESSION = 0x1
INCOMPAT_FILETYPE = 0x2
INCOMPAT_RECOVER = 0x4
INCOMPAT_JOURNAL_DEV = 0x8
INCOMPAT_META_BG = 0x10
INCOMPAT_EXTENTS = 0x40
INCOMPAT_64BIT = 0x80
INCOMPAT_MMP = 0x100
INCOMPAT_FLEX_BG = 0x200
INCOMPAT_EA_INODE = 0x400
INCOMPAT_DIRDATA = 0x1000
INCOMPAT_CSUM_SEED = 0x2000
INCOMPAT_LARGEDIR = 0x4000
INCOMPAT_INLINE_DATA = 0x8000
INCOMPAT_ENCRYPT = 0x10000
INCOMPAT_CASEFOLD = 0x20000
RO_COMPAT_SPARSE_SUPER = 0x1
RO_COMPAT_LARGE_FILE = 0x2
RO_COMPAT_BTREE_DIR = 0x4
RO_COMPAT_HUGE_FILE = 0x8
RO_COMPAT_GDT_CSUM = 0x10
RO_COMPAT_BIGALLOC = 0x200
RO_COMPAT_METADATA_CSUM = 0x400

# What this reader understands; anything else in incompat cannot be read correctly.
KNOWN_INCOMPAT = (INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG | INCOMPAT_EXTENTS
                  | INCOMPAT_64BIT | INCOMPAT_MMP | INCOMPAT_FLEX_BG | INCOMPAT_EA_INODE
                  | INCOMPAT_CSUM_SEED | INCOMPAT_LARGEDIR | INCOMPAT_INLINE_DATA
                  | INCOMPAT_ENCRYPT | INCOMPAT_CASEFOLD)
INCOMPAT_NAMES = {INCOMPAT_COMPRESSION: "compression", INCOMPAT_JOURNAL_DEV: "journal_dev",
                  INCOMPAT_DIRDATA: "dirdata"}
# ext3 knows only these; more means ext4 (as blkid decides)
EXT3_INCOMPAT = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG
EXT3_RO_COMPAT = RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR

_SB = struct.Struct("<13I6H4I2HI")   # the fields up to s_first_ino


def probe(stream) -> bool:
    """Cheap check: the ext2/3/4 magic where the superblock belongs, and sane sizes."""
    if stream.size < 2048:
        return False
    head = stream.read(SUPERBLOCK_OFFSET, 128)
    if len(head) < 128 or struct.unpack_from("<H", head, 56)[0] != MAGIC:
        return False
    log_block = struct.unpack_from("<I", head, 24)[0]
    return log_block <= 6 and struct.unpack_from("<I", head, 40)[0] > 0


@dataclass
class Superblock:
    """The fields of the superblock this reader uses (raw: the 1024 bytes)."""

    raw: bytes
    inodes_count: int
    blocks_count: int
    first_data_block: int
    block_size: int
    blocks_per_group: int
    inodes_per_group: int
    mtime: int
    wtime: int
    state: int
    rev_level: int
    first_ino: int
    inode_size: int
    feature_compat: int
    feature_incompat: int
    feature_ro_compat: int
    uuid: bytes
    volume_name: bytes
    last_mounted: bytes
    journal_inum: int
    journal_dev: int
    hash_seed: tuple
    def_hash_version: int
    desc_size: int
    first_meta_bg: int
    mkfs_time: int
    min_extra_isize: int
    flags: int
    backup_bgs: tuple
    checksum_seed: int
    csum_seed: int

    @property
    def group_count(self) -> int:
        return -(-(self.blocks_count - self.first_data_block) // self.blocks_per_group)

    def has_incompat(self, flag: int) -> bool:
        return bool(self.feature_incompat & flag)

    def has_ro_compat(self, flag: int) -> bool:
        return bool(self.feature_ro_compat & flag)

    @property
    def metadata_csum(self) -> bool:
        return self.has_ro_compat(RO_COMPAT_METADATA_CSUM)

    @property
    def fs_type(self) -> str:
        if (self.feature_incompat & ~EXT3_INCOMPAT) or (self.feature_ro_compat & ~EXT3_RO_COMPAT):
            return "ext4"
        return "ext3" if self.feature_compat & COMPAT_HAS_JOURNAL else "ext2"

    @property
    def label(self) -> str:
        return self.volume_name.split(b"\0", 1)[0].decode("utf-8", "replace")

    @property
    def uuid_str(self) -> str:
        return str(uuidmod.UUID(bytes=self.uuid))

    def has_super(self, group: int) -> bool:
        """Does block group ``group`` hold a superblock backup (and descriptors)?"""
        if group == 0:
            return True
        if self.feature_compat & COMPAT_SPARSE_SUPER2:
            return group in self.backup_bgs
        if group <= 1 or not self.has_ro_compat(RO_COMPAT_SPARSE_SUPER):
            return True
        if group & 1 == 0:
            return False
        for base in (3, 5, 7):
            n = base
            while n < group:
                n *= base
            if n == group:
                return True
        return False


def parse_superblock(raw: bytes, source: str, *, verify: bool = True) -> Superblock:
    """The superblock from its 1024 bytes; FormatError if it is not sane."""
    def bad(msg: str, off: int = 0) -> FormatError:
        return FormatError(msg, source=source, structure="ext4 superblock",
                           offset=SUPERBLOCK_OFFSET + off)

    if len(raw) < 1024:
        raise bad("truncated")
    f = _SB.unpack_from(raw)
    (inodes_count, blocks_lo, _r, _fb, _fi, first_data_block, log_block, log_cluster,
     blocks_per_group, clusters_per_group, inodes_per_group, mtime, wtime) = f[:13]
    _mnt, _maxmnt, magic, state, _errors, _minor = f[13:19]
    _lastcheck, _interval, _os, rev_level = f[19:23]
    _resuid, _resgid = f[23:25]
    first_ino = f[25]
    if magic != MAGIC:
        raise bad("bad magic", 56)
    if log_block > 6:
        raise bad(f"block size 2^{10 + log_block} is not one ext4 allows", 24)
    block_size = 1024 << log_block
    (inode_size,) = struct.unpack_from("<H", raw, 88)
    compat, incompat, ro_compat = struct.unpack_from("<3I", raw, 92)
    uuid = raw[104:120]
    volume_name = raw[120:136]
    last_mounted = raw[136:200]
    journal_inum, journal_dev = struct.unpack_from("<2I", raw, 224)
    hash_seed = struct.unpack_from("<4I", raw, 236)
    def_hash_version = raw[252]
    (desc_size,) = struct.unpack_from("<H", raw, 254)
    (first_meta_bg, mkfs_time) = struct.unpack_from("<2I", raw, 260)
    (blocks_hi,) = struct.unpack_from("<I", raw, 336)
    (min_extra_isize,) = struct.unpack_from("<H", raw, 348)
    (flags,) = struct.unpack_from("<I", raw, 352)
    backup_bgs = struct.unpack_from("<2I", raw, 0x24C)
    (checksum_seed,) = struct.unpack_from("<I", raw, 0x270)
    (stored_csum,) = struct.unpack_from("<I", raw, 0x3FC)

    if rev_level == 0:
        inode_size, first_ino = 128, 11
    if not 128 <= inode_size <= block_size or inode_size & (inode_size - 1):
        raise bad(f"inode size {inode_size}", 88)
    blocks_count = blocks_lo | (blocks_hi << 32 if incompat & INCOMPAT_64BIT else 0)
    if incompat & INCOMPAT_64BIT:
        if not 32 <= desc_size <= 1024 or desc_size & (desc_size - 1):
            raise bad(f"group descriptor size {desc_size}", 254)
    else:
        desc_size = 32
    # bigalloc: the bitmap counts clusters, so a group may hold 2^n times more blocks
    ratio = 1 << (log_cluster - log_block) if ro_compat & RO_COMPAT_BIGALLOC and \
        log_block <= log_cluster <= log_block + 16 else 1
    if blocks_per_group == 0 or blocks_per_group > 8 * block_size * ratio:
        raise bad(f"{blocks_per_group} blocks per group", 32)
    if inodes_per_group == 0 or inodes_per_group > 8 * block_size:
        raise bad(f"{inodes_per_group} inodes per group", 40)
    if first_data_block >= max(blocks_count, 1) or blocks_count == 0:
        raise bad(f"{blocks_count} blocks, first data block {first_data_block}", 4)
    if inodes_count > inodes_per_group * -(-(blocks_count - first_data_block) // blocks_per_group):
        raise bad(f"{inodes_count} inodes do not fit the block groups", 0)
    unknown = incompat & ~KNOWN_INCOMPAT
    if unknown:
        names = [INCOMPAT_NAMES.get(1 << i, hex(1 << i)) for i in range(32) if unknown >> i & 1]
        raise UnsupportedError(f"ext4 feature(s) this reader does not know: {', '.join(names)}",
                               source=source, structure="ext4 superblock",
                               offset=SUPERBLOCK_OFFSET + 96)
    metadata_csum = bool(ro_compat & RO_COMPAT_METADATA_CSUM)
    if metadata_csum and verify:
        calc = crc32c_raw(0xFFFFFFFF, raw[:0x3FC])
        if calc != stored_csum:
            raise bad(f"checksum {stored_csum:#010x} does not match {calc:#010x}", 0x3FC)
    if incompat & INCOMPAT_CSUM_SEED:
        csum_seed = checksum_seed
    else:
        csum_seed = crc32c_raw(0xFFFFFFFF, uuid)
    return Superblock(
        raw=bytes(raw[:1024]), inodes_count=inodes_count, blocks_count=blocks_count,
        first_data_block=first_data_block, block_size=block_size,
        blocks_per_group=blocks_per_group, inodes_per_group=inodes_per_group, mtime=mtime,
        wtime=wtime, state=state, rev_level=rev_level, first_ino=first_ino,
        inode_size=inode_size, feature_compat=compat, feature_incompat=incompat,
        feature_ro_compat=ro_compat, uuid=uuid, volume_name=volume_name,
        last_mounted=last_mounted, journal_inum=journal_inum, journal_dev=journal_dev,
        hash_seed=hash_seed, def_hash_version=def_hash_version, desc_size=desc_size,
        first_meta_bg=first_meta_bg, mkfs_time=mkfs_time, min_extra_isize=min_extra_isize,
        flags=flags, backup_bgs=backup_bgs, checksum_seed=checksum_seed, csum_seed=csum_seed)


@dataclass(frozen=True, slots=True)
class GroupDesc:
    block_bitmap: int
    inode_bitmap: int
    inode_table: int
    flags: int
    itable_unused: int


def descriptor_block(sb: Superblock, index: int) -> int:
    """Where descriptor block ``index`` lives (the kernel's descriptor_loc, meta_bg too)."""
    per_block = sb.block_size // sb.desc_size
    if not sb.has_incompat(INCOMPAT_META_BG) or index < sb.first_meta_bg:
        return sb.first_data_block + 1 + index
    group = per_block * index
    has_super = 1 if sb.has_super(group) else 0
    if sb.block_size == 1024 and index == 0 and sb.first_data_block == 0:
        has_super += 1
    return sb.first_data_block + group * sb.blocks_per_group + has_super


def parse_descriptor(sb: Superblock, group: int, raw: bytes, source: str, offset: int,
                     verify: bool = True) -> GroupDesc:
    size = sb.desc_size
    d = raw[:size]
    if len(d) < size:
        raise FormatError("truncated", source=source, structure=f"ext4 group descriptor {group}",
                          offset=offset)
    bb, ib, it, _fb, _fi, _ud, flags, _ex, _bbc, _ibc, unused, csum = struct.unpack_from(
        "<3I4HI4H", d)
    if size >= 64:
        bbh, ibh, ith = struct.unpack_from("<3I", d, 32)
        bb, ib, it = bb | bbh << 32, ib | ibh << 32, it | ith << 32
        (unused_hi,) = struct.unpack_from("<H", d, 50)
        unused |= unused_hi << 16
    if verify and (sb.metadata_csum or sb.has_ro_compat(RO_COMPAT_GDT_CSUM)):
        zeroed = d[:30] + b"\0\0" + d[32:]
        if sb.metadata_csum:
            calc = crc32c_raw(sb.csum_seed, struct.pack("<I", group) + zeroed) & 0xFFFF
        else:
            calc = crc16(0xFFFF, sb.uuid + struct.pack("<I", group) + zeroed[:30])
            if size > 32:
                calc = crc16(calc, zeroed[32:])
        if calc != csum:
            raise FormatError(f"checksum {csum:#06x} does not match {calc:#06x}", source=source,
                              structure=f"ext4 group descriptor {group}", offset=offset + 30)
    return GroupDesc(bb, ib, it, flags, unused)
