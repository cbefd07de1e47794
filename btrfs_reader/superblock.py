"""The Btrfs superblock (64 KiB into the device): tree roots, sizes, features, and the
system chunk array that maps the chunk tree's own blocks."""

from __future__ import annotations

import struct
import uuid as _uuid
from dataclasses import dataclass

from streams.errors import FormatError, UnsupportedError

from . import checksum

OFFSET = 0x10000
SIZE = 4096
MAGIC = b"_BHRfS_M"
INCOMPAT_MIXED_BACKREF = 1 << 0
INCOMPAT_DEFAULT_SUBVOL = 1 << 1
INCOMPAT_MIXED_GROUPS = 1 << 2
INCOMPAT_COMPRESS_LZO = 1 << 3
INCOMPAT_COMPRESS_ZSTD = 1 << 4
INCOMPAT_BIG_METADATA = 1 << 5
INCOMPAT_EXTENDED_IREF = 1 << 6
INCOMPAT_RAID56 = 1 << 7
INCOMPAT_SKINNY_METADATA = 1 << 8
INCOMPAT_NO_HOLES = 1 << 9
INCOMPAT_METADATA_UUID = 1 << 10
INCOMPAT_RAID1C34 = 1 << 11
INCOMPAT_ZONED = 1 << 12
INCOMPAT_EXTENT_TREE_V2 = 1 << 13
INCOMPAT_KNOWN = (INCOMPAT_MIXED_BACKREF | INCOMPAT_DEFAULT_SUBVOL | INCOMPAT_MIXED_GROUPS
                  | INCOMPAT_COMPRESS_LZO | INCOMPAT_COMPRESS_ZSTD | INCOMPAT_BIG_METADATA
                  | INCOMPAT_EXTENDED_IREF | INCOMPAT_RAID56 | INCOMPAT_SKINNY_METADATA
                  | INCOMPAT_NO_HOLES | INCOMPAT_METADATA_UUID | INCOMPAT_RAID1C34
                  | INCOMPAT_ZONED)


@dataclass(frozen=True)
class Superblock:
    fsid: bytes
    metadata_uuid: bytes
    generation: int
    root: int
    chunk_root: int
    log_root: int
    total_bytes: int
    bytes_used: int
    num_devices: int
    sectorsize: int
    nodesize: int
    root_level: int
    chunk_root_level: int
    csum_type: int
    incompat: int
    label: str
    devid: int
    sys_chunk_array: bytes

    @property
    def uuid(self) -> str:
        return str(_uuid.UUID(bytes=self.fsid))


def probe_bytes(data: bytes) -> bool:
    return len(data) >= 72 and data[64:72] == MAGIC


def parse(data: bytes, source: str) -> Superblock:
    def bad(msg: str, at: int = 0) -> FormatError:
        return FormatError(msg, source=source, structure="Btrfs superblock", offset=OFFSET + at)

    if len(data) < SIZE or data[64:72] != MAGIC:
        raise bad("no Btrfs superblock magic", 64)
    csum_type = struct.unpack_from("<H", data, 196)[0]
    checksum.check_type(csum_type, source)
    checksum.verify(csum_type, data[:SIZE], source, "Btrfs superblock", OFFSET)
    fsid = data[32:48]
    bytenr, = struct.unpack_from("<Q", data, 48)
    generation, root, chunk_root, log_root = struct.unpack_from("<QQQQ", data, 72)
    total_bytes, bytes_used, _rootdir, num_devices = struct.unpack_from("<QQQQ", data, 112)
    sectorsize, nodesize, _leafsize, _stripesize, sys_size = struct.unpack_from("<IIIII", data, 144)
    incompat, = struct.unpack_from("<Q", data, 188)
    root_level, chunk_root_level = data[198], data[199]
    devid, = struct.unpack_from("<Q", data, 201)
    label = data[299:299 + 256].split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    if bytenr != OFFSET:
        raise bad(f"superblock says it is at {bytenr:#x}", 48)
    if sectorsize not in (4096, 8192, 16384, 32768, 65536) or \
            nodesize not in (4096, 8192, 16384, 32768, 65536) or nodesize < sectorsize:
        raise bad(f"sector size {sectorsize}, node size {nodesize}", 144)
    if sys_size > 2048:
        raise bad(f"system chunk array of {sys_size} bytes", 160)
    if root_level > 7 or chunk_root_level > 7:
        raise bad("tree level above 7", 198)
    if incompat & ~INCOMPAT_KNOWN:
        raise UnsupportedError(f"Btrfs incompatible features {incompat & ~INCOMPAT_KNOWN:#x}",
                               source=source, structure="Btrfs superblock", offset=OFFSET + 188)
    metadata_uuid = data[571:587] if incompat & INCOMPAT_METADATA_UUID else fsid
    return Superblock(fsid=fsid, metadata_uuid=metadata_uuid, generation=generation, root=root,
                      chunk_root=chunk_root, log_root=log_root, total_bytes=total_bytes,
                      bytes_used=bytes_used, num_devices=num_devices, sectorsize=sectorsize,
                      nodesize=nodesize, root_level=root_level,
                      chunk_root_level=chunk_root_level, csum_type=csum_type,
                      incompat=incompat, label=label, devid=devid,
                      sys_chunk_array=data[811:811 + sys_size])
