"""CRC32C of v5 metadata blocks: the field itself counts as zero, stored little-endian."""

from __future__ import annotations

import struct

from streams import crc32c as _crc32c

from streams.errors import FormatError

# The fuzz targets turn this off for inputs whose checksums they did not fix up, so that
# mutations reach the parsers behind the checks; nothing else changes it.
ENFORCE = True


def crc_of(block: bytes, crc_offset: int) -> int:
    crc = _crc32c.crc32c(block[:crc_offset])
    crc = _crc32c.crc32c(b"\0\0\0\0", crc)
    return _crc32c.crc32c(block[crc_offset + 4:], crc)


def verify_crc(block: bytes, crc_offset: int, source: str, structure: str, offset: int) -> None:
    stored = struct.unpack_from("<I", block, crc_offset)[0]
    if ENFORCE and crc_of(block, crc_offset) != stored:
        raise FormatError(f"CRC32C mismatch (stored {stored:#010x})", source=source,
                          structure=structure, offset=offset)
