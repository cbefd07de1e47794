"""Checksums of Btrfs metadata: the first 32 bytes of a superblock or tree block hold the
checksum of everything after them, by the algorithm the superblock names."""

from __future__ import annotations

import hashlib
import struct

from streams import crc32c as _crc32c

from streams.errors import FormatError, UnsupportedError

# The fuzz targets turn this off so that mutations reach the parsers behind the checks.
ENFORCE = True
CRC32C, XXHASH, SHA256, BLAKE2 = 0, 1, 2, 3
NAMES = {CRC32C: "crc32c", XXHASH: "xxhash64", SHA256: "sha256", BLAKE2: "blake2b"}


def check_type(csum_type: int, source: str) -> None:
    if csum_type not in (CRC32C, SHA256, BLAKE2):
        raise UnsupportedError(f"Btrfs checksum {NAMES.get(csum_type, csum_type)}",
                               source=source, structure="Btrfs superblock", offset=0x10000)


def digest(csum_type: int, data: bytes) -> bytes:
    if csum_type == CRC32C:
        return struct.pack("<I", _crc32c.crc32c(data))
    if csum_type == SHA256:
        return hashlib.sha256(data).digest()
    return hashlib.blake2b(data, digest_size=32).digest()


def verify(csum_type: int, block: bytes, source: str, structure: str, offset: int) -> None:
    if not ENFORCE:
        return
    want = digest(csum_type, block[32:])
    if block[:len(want)] != want:
        raise FormatError(f"{NAMES[csum_type]} checksum mismatch", source=source,
                          structure=structure, offset=offset)


def name_hash(name: bytes) -> int:
    """btrfs_name_hash: CRC32C seeded with ~1 and not inverted at the end (DIR_ITEM keys)."""
    return ~_crc32c.crc32c(name, 1) & 0xFFFFFFFF
