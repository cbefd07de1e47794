"""LZX as used by WOF (``compact /exe:lzx``) and WIM files: one independent chunk of at most
32 KiB, window 32 KiB (30 offset slots), E8 call translation with the fixed file size
12000000, block sizes of 32768 unless given.

Written from the LZX format description ([MS-PATCH] and the WIM variant's published
differences); the bit reader mirrors the reference decoder's word-at-a-time refill, which
matters where an uncompressed block realigns the stream. Corrupt or hostile input is a
FormatError, never an IndexError or a runaway loop.

``decompress`` runs the C decoder in ``_wofdecomp`` (built by setup.py, releases the GIL)
and falls back, with one warning (shared with xpress.py), to the pure-Python twin
``decompress_py``. Both give the same bytes, or the same error at the same offset.
"""

from __future__ import annotations

import struct

from streams.errors import FormatError

from .xpress import _wofdecomp, warn_fallback

NUM_CHARS = 256
MIN_MATCH = 2
NUM_PRIMARY_LENS = 7
NUM_LEN_HEADERS = 8
NUM_OFFSET_SLOTS = 30
MAIN_SYMBOLS = NUM_CHARS + NUM_OFFSET_SLOTS * NUM_LEN_HEADERS
LEN_SYMBOLS = 249
PRECODE_SYMBOLS = 20
ALIGNED_SYMBOLS = 8
DEFAULT_BLOCK = 32768
E8_FILE_SIZE = 12_000_000
MAX_CHUNK = 32768

SLOT_BASE = [0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768,
             1024, 1536, 2048, 3072, 4096, 6144, 8192, 12288, 16384, 24576]
EXTRA_BITS = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11,
              11, 12, 12, 13, 13]


def _bad(msg: str, pos: int | None = None) -> FormatError:
    return FormatError(msg, structure="LZX chunk", offset=pos)


class _Bits:
    """16-bit little-endian words, most significant bit first; refilled a word at a time."""

    __slots__ = ("data", "pos", "buf", "n", "end")

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.buf = 0
        self.n = 0
        self.end = len(data)

    def ensure(self, n: int) -> None:
        while self.n < n:
            p = self.pos
            if p + 2 <= self.end:
                word = self.data[p] | self.data[p + 1] << 8
            elif p >= self.end + 32:
                raise _bad("input ran out", p)
            else:
                word = 0  # the reference decoder reads zeros past the end
            self.pos = p + 2
            self.buf = (self.buf << 16) | word
            self.n += 16

    def bits(self, n: int) -> int:
        if n == 0:
            return 0
        self.ensure(n)
        self.n -= n
        v = self.buf >> self.n
        self.buf &= (1 << self.n) - 1
        return v

    def symbol(self, table, maxlen: int) -> int:
        self.ensure(maxlen)
        entry = table[0][(self.buf >> (self.n - maxlen)) & ((1 << maxlen) - 1)] \
            if self.n >= maxlen else -1
        if entry < 0:
            raise _bad("invalid Huffman code", self.pos)
        length = entry & 31
        self.n -= length
        self.buf &= (1 << self.n) - 1
        return entry >> 5

    def align(self) -> None:
        self.ensure(1)
        self.n = 0
        self.buf = 0

    def raw(self, n: int) -> bytes:
        p = self.pos
        if p + n > self.end:
            raise _bad("uncompressed block past the input", p)
        self.pos = p + n
        return self.data[p:p + n]


def _table(lengths, maxlen: int):
    """Canonical Huffman code -> (lookup of 2**bits entries, bits)."""
    order = sorted((n, s) for s, n in enumerate(lengths) if n)
    bits = max((n for n, _ in order), default=1)
    if bits > maxlen:
        raise _bad("codeword too long")
    table = [-1] * (1 << bits)
    code = 0
    prev = order[0][0] if order else 0
    for n, s in order:
        code <<= n - prev
        prev = n
        shift = bits - n
        start = code << shift
        if start + (1 << shift) > len(table):
            raise _bad("Huffman code lengths oversubscribed")
        table[start:start + (1 << shift)] = [s << 5 | n] * (1 << shift)
        code += 1
    return table, bits


def _sym(bits: _Bits, table) -> int:
    return bits.symbol(table, table[1])


def _read_lens(bits: _Bits, lens: list, start: int, count: int) -> None:
    """Codeword lengths, delta-coded against ``lens`` through a 20-symbol precode."""
    pre = _table([bits.bits(4) for _ in range(PRECODE_SYMBOLS)], 15)
    i = start
    end = start + count
    while i < end:
        p = _sym(bits, pre)
        if p < 17:
            lens[i] = (lens[i] - p) % 17
            i += 1
            continue
        if p == 17:
            run, value = 4 + bits.bits(4), 0
        elif p == 18:
            run, value = 20 + bits.bits(5), 0
        else:
            run = 4 + bits.bits(1)
            q = _sym(bits, pre)
            if q > 16:
                raise _bad("bad run in codeword lengths", bits.pos)
            value = (lens[i] - q) % 17
        run = min(run, end - i)  # an overrun would only spill into unused lengths
        lens[i:i + run] = [value] * run
        i += run


def decompress(data: bytes, size: int) -> bytes:
    """One LZX chunk of ``size`` (<= 32768) bytes."""
    if _wofdecomp is None:
        warn_fallback()
        return decompress_py(data, size)
    try:
        return _wofdecomp.lzx(data, size)
    except _wofdecomp.Error as e:
        raise FormatError(e.args[0], structure=e.args[1], offset=e.args[2]) from None


def decompress_py(data: bytes, size: int) -> bytes:
    """Pure-Python twin of the C decoder (same results, same errors and offsets)."""
    if not 0 <= size <= MAX_CHUNK:
        raise _bad(f"LZX chunk of {size} bytes")
    bits = _Bits(data)
    out = bytearray()
    main_lens = [0] * MAIN_SYMBOLS
    len_lens = [0] * LEN_SYMBOLS
    r = [1, 1, 1]
    e8 = False
    while len(out) < size:
        bits.ensure(4)
        btype = bits.bits(3)
        block = DEFAULT_BLOCK if bits.bits(1) else (bits.bits(8) << 8 | bits.bits(8))
        if block < 1 or block > size - len(out):
            raise _bad(f"block of {block} bytes at output {len(out)} of {size}", bits.pos)
        if btype == 3:
            bits.align()
            r = list(struct.unpack("<III", bits.raw(12)))
            if 0 in r:
                raise _bad("repeat offset 0 in an uncompressed block", bits.pos)
            out += bits.raw(block)
            if block & 1:
                bits.raw(1) if bits.pos < bits.end else None
            e8 = True
            continue
        if btype not in (1, 2):
            raise _bad(f"block type {btype}", bits.pos)
        aligned = None
        if btype == 2:
            aligned = _table([bits.bits(3) for _ in range(ALIGNED_SYMBOLS)], 7)
        _read_lens(bits, main_lens, 0, NUM_CHARS)
        _read_lens(bits, main_lens, NUM_CHARS, MAIN_SYMBOLS - NUM_CHARS)
        main = _table(main_lens, 16)
        _read_lens(bits, len_lens, 0, LEN_SYMBOLS)
        lengths = _table(len_lens, 16) if any(len_lens) else None
        e8 = e8 or bool(main_lens[0xE8])
        stop = len(out) + block
        while len(out) < stop:
            s = _sym(bits, main)
            if s < NUM_CHARS:
                out.append(s)
                continue
            s -= NUM_CHARS
            length = s & 7
            slot = s >> 3
            if length == NUM_PRIMARY_LENS:
                if lengths is None:
                    raise _bad("match length symbol with an empty length code", bits.pos)
                length += _sym(bits, lengths)
            length += MIN_MATCH
            if slot < 3:
                offset = r[slot]
                r[slot] = r[0]
                r[0] = offset
            else:
                extra = EXTRA_BITS[slot]
                offset = SLOT_BASE[slot]
                if aligned is not None and extra >= 3:
                    offset += bits.bits(extra - 3) << 3
                    offset += _sym(bits, aligned)
                else:
                    offset += bits.bits(extra)
                offset -= 2
                r[2] = r[1]
                r[1] = r[0]
                r[0] = offset
            n = len(out)
            if length > stop - n or offset > n or offset <= 0:
                raise _bad(f"match of {length} bytes {offset} back at output {n}", bits.pos)
            start = n - offset
            if offset >= length:
                out += out[start:start + length]
            else:
                out += (out[start:] * (length // offset + 1))[:length]
    if e8 and size > 10:
        _undo_e8(out, size)
    return bytes(out)


def _undo_e8(out: bytearray, size: int) -> None:
    """Undo the x86 CALL (E8) translation: absolute targets back to relative ones."""
    limit = size - 10
    i = out.find(0xE8, 0, limit)
    while i != -1:
        value = int.from_bytes(out[i + 1:i + 5], "little", signed=True)
        if 0 <= value < E8_FILE_SIZE:
            out[i + 1:i + 5] = ((value - i) & 0xFFFFFFFF).to_bytes(4, "little")
        elif value < 0 and value >= -i:
            out[i + 1:i + 5] = ((value + E8_FILE_SIZE) & 0xFFFFFFFF).to_bytes(4, "little")
        i = out.find(0xE8, i + 5, limit)
