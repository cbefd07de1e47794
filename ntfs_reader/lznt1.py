"""LZNT1 decompression of one NTFS compression unit.

NTFS stores a compressed file in compression units (16 clusters). A unit with a sparse tail
holds LZNT1 data; a unit with every cluster allocated is stored raw and a fully sparse one
reads as zeros (the caller tells them apart from the runlist). LZNT1 data is chunks with a
16-bit header (bit 15 = compressed, bits 12..14 = signature 3, bits 0..11 = bytes after the
header - 1; a header of 0 ends the unit), each standing for 4096 bytes of output. A
compressed chunk is groups of a flag byte and eight tokens: a clear bit is a literal, a set
bit a 16-bit back-reference whose offset/length split grows with the output produced so far
in the chunk ([MS-XCA] 2.5). Pass all the unit's allocated clusters: ntfs-3g lets the last
unit's data run into clusters past the file's data size.

``decompress`` runs the C decoder in ``_lznt1`` (built by setup.py; ~900 MB/s of output per
core, releases the GIL) and falls back, with a warning, to the pure-Python ``decompress_py``
(~20 MB/s) when the extension was not built. Both behave identically, errors included.

Semantics (those of ntfs-3g's ``ntfs_decompress``, except as noted):
- a chunk that decodes to fewer than 4096 bytes and is followed by another chunk is
  zero-filled to 4096, so later chunks land where they belong;
- the result is NOT padded at the end: it stops after the last chunk's own bytes, and the
  caller supplies zeros up to the unit size (or the file size) itself;
- decoding stops at a zero header, at the end of ``data``, or once ``unit_size`` bytes of
  output are reached (the rest of ``data`` is then ignored; ntfs-3g requires unit_size to
  be a multiple of 4096, here a chunk is cut where the unit ends);
- uncompressed chunks are copied as stored (normally 4096 bytes; shorter ones are accepted,
  where ntfs-3g refuses them); a nonzero header without signature 3 is an error (ntfs-3g
  ignores the signature).
"""

from __future__ import annotations

import warnings

from streams.errors import FormatError

__all__ = ["decompress", "decompress_py", "NATIVE"]

CHUNK = 4096
STRUCTURE = "LZNT1 chunk"

try:
    from ntfs_reader import _lznt1
except ImportError:  # pragma: no cover - depends on the build
    _lznt1 = None
else:
    from streams.builds import check
    check(_lznt1)

NATIVE = _lznt1 is not None
_warned = False


def decompress(data: bytes | bytearray | memoryview, unit_size: int, *,
               source: str | None = None) -> bytes:
    """Decompress one compression unit; at most ``unit_size`` bytes, tail not padded.

    Corrupt input raises ``FormatError(structure="LZNT1 chunk", offset=<offset in data>)``
    with ``source`` as given.
    """
    if _lznt1 is None:
        _warn_fallback()
        return decompress_py(data, unit_size, source=source)
    try:
        return _lznt1.decompress(data, unit_size)
    except _lznt1.Error as e:
        raise FormatError(e.args[0], source=source, structure=STRUCTURE, offset=e.args[1]) from None


def _warn_fallback() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn("ntfs_reader._lznt1 is not built: compressed NTFS files are read with the "
                      "slow pure-Python LZNT1 decoder (reinstall with gcc and python3-dev)",
                      RuntimeWarning, stacklevel=3)


def _offset_bits_table() -> bytes:
    """For each position 1..4096 in a chunk, how many bits a back-reference's offset takes."""
    table = bytearray(CHUNK + 1)
    for pos in range(1, CHUNK + 1):
        bits, x = 4, pos - 1
        while x >= 16:
            x >>= 1
            bits += 1
        table[pos] = bits
    return bytes(table)


_OFFSET_BITS = _offset_bits_table()


def decompress_py(data: bytes | bytearray | memoryview, unit_size: int, *,
                  source: str | None = None) -> bytes:
    """Pure-Python twin of the C decoder (same results, same errors and offsets)."""
    if unit_size < 0:
        raise ValueError("unit_size must not be negative")

    def fail(message: str, offset: int) -> FormatError:
        return FormatError(message, source=source, structure=STRUCTURE, offset=offset)

    src = bytes(data)
    n = len(src)
    out = bytearray()
    sp = 0      # next chunk header
    base = 0    # where the next chunk's output starts
    while base < unit_size:
        if n - sp < 2:
            if sp >= n or src[sp] == 0:
                break
            raise fail("chunk header truncated by the end of data", sp)
        hdr = src[sp] | src[sp + 1] << 8
        if hdr == 0:
            break
        if hdr & 0x7000 != 0x3000:
            raise fail("bad chunk signature", sp)
        size = (hdr & 0x0FFF) + 1
        if size > n - sp - 2:
            raise fail("chunk size past the end of data", sp)
        sp += 2
        if len(out) < base:
            out += bytes(base - len(out))
        room = min(CHUNK, unit_size - base)
        if not hdr & 0x8000:
            out += src[sp:sp + min(size, room)]
            if size > room:
                break
        else:
            chunk, clipped = _decode_chunk(src, sp, sp + size, room, fail)
            out += chunk
            if clipped:
                break
        sp += size
        base += CHUNK
    return bytes(out)


def _decode_chunk(src: bytes, i: int, end: int, room: int, fail) -> tuple[bytearray, bool]:
    """Decode the compressed chunk ``src[i:end]``; returns (bytes, unit ended inside it)."""
    out = bytearray()
    bits_for = _OFFSET_BITS
    while i < end:
        tag = src[i]
        i += 1
        if tag == 0 and end - i >= 8 and room - len(out) >= 8:
            out += src[i:i + 8]
            i += 8
            continue
        for _ in range(8):
            if i >= end:
                break
            if not tag & 1:
                if len(out) >= room:
                    if room < CHUNK:
                        return out, True
                    raise fail("literal past 4096 bytes of chunk output", i)
                out.append(src[i])
                i += 1
            else:
                if end - i < 2:
                    raise fail("back-reference truncated by the end of the chunk", i)
                tok = src[i] | src[i + 1] << 8
                pos = len(out)
                if pos == 0:
                    raise fail("back-reference before the start of the chunk", i)
                shift = bits_for[pos]
                off = (tok >> (16 - shift)) + 1
                length = (tok & (0xFFFF >> shift)) + 3
                if off > pos:
                    raise fail("back-reference before the start of the chunk", i)
                clipped = False
                if pos + length > room:
                    if room < CHUNK and pos + length <= CHUNK:
                        length = room - pos
                        clipped = True
                    else:
                        raise fail("back-reference past 4096 bytes of chunk output", i)
                if off >= length:
                    out += out[pos - off:pos - off + length]
                else:
                    out += (out[pos - off:] * (length // off + 1))[:length]
                if clipped:
                    return out, True
                i += 2
            tag >>= 1
    return out, False
