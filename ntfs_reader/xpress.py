"""Plain LZ77 + Huffman ("XPRESS Huffman", [MS-XCA] 2.2), as used by WOF's XPRESS4K,
XPRESS8K and XPRESS16K: one chunk of at most 64 KiB, decoded to a known output size.

The decoder stops at the output size it is given rather than at the end of the input, which
matters: the last bits of a chunk are padding, not symbols. Hostile input (bad code lengths,
matches reaching before the start, input running out) is a FormatError.

``decompress`` runs the C decoder in ``_wofdecomp`` (built by setup.py, releases the GIL)
and falls back, with one warning, to the pure-Python twin ``decompress_py`` when the
extension was not built. Both give the same bytes, or the same error at the same offset.
"""

from __future__ import annotations

import warnings

from streams.errors import FormatError

try:
    from ntfs_reader import _wofdecomp
except ImportError:  # pragma: no cover - depends on the build
    _wofdecomp = None
else:
    from streams.builds import check
    check(_wofdecomp)

NATIVE = _wofdecomp is not None
_warned = False

_TABLE_BITS = 15


def _table(lengths: bytes) -> list:
    """512 code lengths -> a 2**15 lookup of (symbol << 4 | length), canonical order."""
    order = sorted((n, sym) for sym, n in enumerate(lengths) if n)
    if not order:
        raise FormatError("empty Huffman table", structure="XPRESS Huffman table")
    table = [-1] * (1 << _TABLE_BITS)
    code = 0
    prev = order[0][0]
    for n, sym in order:
        code <<= n - prev
        prev = n
        shift = _TABLE_BITS - n
        start = code << shift
        span = 1 << shift
        if start + span > len(table):
            raise FormatError("Huffman code lengths oversubscribed",
                              structure="XPRESS Huffman table")
        table[start:start + span] = [sym << 4 | n] * span
        code += 1
    return table


def decompress(data: bytes, size: int) -> bytes:
    """One XPRESS Huffman block (``size`` <= 65536 bytes of output)."""
    if _wofdecomp is None:
        warn_fallback()
        return decompress_py(data, size)
    try:
        return _wofdecomp.xpress(data, size)
    except _wofdecomp.Error as e:
        raise FormatError(e.args[0], structure=e.args[1], offset=e.args[2]) from None


def warn_fallback() -> None:
    """One RuntimeWarning per process for both WOF codecs (lzx.py calls this too)."""
    global _warned
    if not _warned:
        _warned = True
        warnings.warn("ntfs_reader._wofdecomp is not built: WOF-compressed files are read "
                      "with the slow pure-Python XPRESS/LZX decoders (reinstall with gcc "
                      "and python3-dev)", RuntimeWarning, stacklevel=3)


def decompress_py(data: bytes, size: int) -> bytes:
    """Pure-Python twin of the C decoder (same results, same errors and offsets)."""
    if size > 65536 or size < 0:
        raise FormatError(f"XPRESS Huffman chunk of {size} bytes", structure="XPRESS chunk")
    if size == 0:
        return b""
    if len(data) < 260:
        raise FormatError(f"XPRESS Huffman chunk of {len(data)} bytes is too short",
                          structure="XPRESS chunk")
    lengths = bytearray(512)
    for i in range(256):
        b = data[i]
        lengths[2 * i] = b & 15
        lengths[2 * i + 1] = b >> 4
    table = _table(bytes(lengths))
    end = len(data)
    # 8 zero bytes of padding: the last refills may read a little past the input (the
    # encoder's final bits); running further is an IndexError, turned into a FormatError
    src = bytes(data) + bytes(8)
    try:
        return _decode(src, end, table, size)
    except IndexError:
        raise FormatError("XPRESS Huffman input ran out", structure="XPRESS chunk",
                          offset=end) from None


def _decode(src: bytes, end: int, table: list, size: int) -> bytes:
    bits = (src[256] | src[257] << 8) << 16 | (src[258] | src[259] << 8)
    pos = 260
    extra = 16
    out = bytearray()
    append = out.append
    n_out = 0
    while n_out < size:
        entry = table[bits >> 17]
        if entry < 0:
            raise FormatError("invalid Huffman code", structure="XPRESS chunk", offset=pos)
        n = entry & 15
        bits = (bits << n) & 0xFFFFFFFF
        extra -= n
        if extra < 0:
            bits |= (src[pos] | src[pos + 1] << 8) << -extra
            pos += 2
            extra += 16
        symbol = entry >> 4
        if symbol < 256:
            append(symbol)
            n_out += 1
            continue
        symbol -= 256
        length = symbol & 15
        obits = symbol >> 4
        if length == 15:
            if pos >= end:
                raise FormatError("XPRESS match length past the input",
                                  structure="XPRESS chunk", offset=pos)
            length = src[pos]
            pos += 1
            if length == 255:
                if pos + 2 > end:
                    raise FormatError("XPRESS match length past the input",
                                      structure="XPRESS chunk", offset=pos)
                length = src[pos] | src[pos + 1] << 8
                pos += 2
                if length == 0:
                    if pos + 4 > end:
                        raise FormatError("XPRESS match length past the input",
                                          structure="XPRESS chunk", offset=pos)
                    length = int.from_bytes(src[pos:pos + 4], "little")
                    pos += 4
                if length < 15:
                    raise FormatError("XPRESS match length below 15",
                                      structure="XPRESS chunk", offset=pos)
                length -= 15
            length += 15
        length += 3
        offset = ((bits >> (32 - obits)) if obits else 0) | (1 << obits)
        bits = (bits << obits) & 0xFFFFFFFF
        extra -= obits
        if extra < 0:
            bits |= (src[pos] | src[pos + 1] << 8) << -extra
            pos += 2
            extra += 16
        start = n_out - offset
        if start < 0:
            raise FormatError(f"XPRESS match {offset} bytes back at output {n_out}",
                              structure="XPRESS chunk", offset=pos)
        length = min(length, size - n_out)
        if offset >= length:
            out += out[start:start + length]
        else:  # overlapping copy repeats the last ``offset`` bytes
            out += (out[start:] * (length // offset + 1))[:length]
        n_out += length
    return bytes(out)
