"""Plain LZ77 + Huffman ("XPRESS Huffman", [MS-XCA] 2.2), as used by WOF's XPRESS4K,
XPRESS8K and XPRESS16K: one chunk of at most 64 KiB, decoded to a known output size.

The decoder stops at the output size it is given rather than at the end of the input, which
matters: the last bits of a chunk are padding, not symbols. Hostile input (bad code lengths,
matches reaching before the start, input running out) is a FormatError.
"""

from __future__ import annotations

from rpfs.errors import FormatError

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
