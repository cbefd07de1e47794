"""Btrfs compressed extents: zlib (a zlib stream), zstd (frames) and LZO in Btrfs's own
framing: a 4-byte total length, then segments of (4-byte length, LZO1X data) each giving
at most one sector, a segment header never straddling a sector boundary.

LZO1X itself is decompressed by lzallright (Rust, a port of lzokay; pure-Python LZO would
be ~100x slower and python-lzo needs liblzo2 headers at install). Every output is bounded
by the extent's declared size, so a hostile stream cannot inflate without limit.
"""

from __future__ import annotations

import struct
import zlib

import zstandard
from lzallright import LZOCompressor, LZOError

from streams.errors import FormatError, UnsupportedError

ZLIB, LZO, ZSTD = 1, 2, 3
MAX_RAM = 1 << 20             # Btrfs compresses at most 128 KiB per extent
ZSTD_FEED = 1024              # input bytes per step: a step inflates to 32 MiB at most


def decompress(kind: int, data: bytes, ram_bytes: int, sectorsize: int, source: str,
               structure: str, offset: int) -> bytes:
    """Up to ``ram_bytes`` bytes (shorter if the stream ends early; the caller zero-fills)."""
    if ram_bytes > MAX_RAM:
        raise FormatError(f"compressed extent claims {ram_bytes} bytes", source=source,
                          structure=structure, offset=offset)
    try:
        if kind == ZLIB:
            d = zlib.decompressobj()
            return d.decompress(data, ram_bytes)
        if kind == ZSTD:
            return _zstd(data, ram_bytes)
        if kind == LZO:
            return _lzo(data, ram_bytes, sectorsize, source, structure, offset)
    except (zlib.error, zstandard.ZstdError, LZOError) as e:
        raise FormatError(f"compressed data is damaged ({e})", source=source,
                          structure=structure, offset=offset) from None
    raise UnsupportedError(f"compression type {kind}", source=source, structure=structure,
                           offset=offset)


def _zstd(data: bytes, ram_bytes: int) -> bytes:
    """One frame, then zero padding to the sector. Fed in small pieces so the output
    stops near ``ram_bytes`` however well a hostile frame compresses."""
    obj = zstandard.ZstdDecompressor().decompressobj()
    out = bytearray()
    for at in range(0, len(data), ZSTD_FEED):
        out += obj.decompress(data[at:at + ZSTD_FEED])
        if obj.eof or len(out) >= ram_bytes:
            break
    return bytes(out[:ram_bytes])


def _lzo(data: bytes, ram_bytes: int, sectorsize: int, source: str, structure: str,
         offset: int) -> bytes:
    def bad(msg: str) -> FormatError:
        return FormatError(f"LZO: {msg}", source=source, structure=structure, offset=offset)

    if len(data) < 4:
        raise bad("no length header")
    total, = struct.unpack_from("<I", data, 0)
    if total > len(data) or total < 4:
        raise bad(f"total length {total} of {len(data)} bytes")
    out = []
    got = 0
    pos = 4
    while pos < total and got < ram_bytes:
        left = sectorsize - pos % sectorsize
        if left < 4:
            pos += left
        if pos + 4 > total:
            break
        seg, = struct.unpack_from("<I", data, pos)
        pos += 4
        if seg == 0 or pos + seg > total:
            raise bad(f"segment of {seg} bytes at {pos - 4}")
        piece = LZOCompressor.decompress(data[pos:pos + seg], output_size_hint=sectorsize)
        if len(piece) > sectorsize:
            raise bad(f"segment inflates to {len(piece)} bytes")
        out.append(piece)
        got += len(piece)
        pos += seg
    return b"".join(out)[:ram_bytes]
