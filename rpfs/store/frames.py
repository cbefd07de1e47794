"""Framed chunks: a chunk's payload as independently compressed frames behind a frame table,
so a small read decompresses and checks only the frames it needs (issue 17).

A framed chunk is stored under codec ``FRAMED`` (packs.py); its id is the same as an
unframed chunk's (the plaintext's), so dedup against chunks stored either way still works.
Payload layout (little-endian)::

    head    "RPFF" u32 table_len                                             8 bytes
    table   sealed(u8 version u8 log2(frame_size) u16 0 u32 count,
                   count x (u32 stored_len u8 codec pad[3] [digest[32]]))    table_len bytes
    frames  count stored frames, back to back, in order

``sealed`` is the repository's crypto (crypto.py): without encryption the table is followed
by a BLAKE3 digest over (chunk id, table) and every entry carries the BLAKE3 of its frame's
plaintext; with encryption the table is one AES-256-GCM message bound to the chunk id and
every frame is its own message bound to (chunk id, frame number), so no entry needs a
digest. Either way the table is bound to its chunk and every frame to its place: a frame
read alone is checked as surely as a whole chunk is by its id.

The frame size is the chunk's own (``log2`` in its table): a chunk none of whose frames
compresses is cut again into smaller raw frames (``raw_frame_size``, 16 KiB by default), which
cost no space but per-frame digests, so a cold 4 KiB read of incompressible data (media,
encrypted or compressed files) reads and hashes 16 KiB, not 64 KiB. Readers need nothing new:
any table's frame size is read from the table.

Every size in a table is checked before anything is allocated or read: the frame size is a
power of two from 4 KiB to the chunk, the count is exactly what the chunk's size needs, the
frames fill the payload exactly. Anything else is an ``IntegrityError`` naming the chunk.
"""

from __future__ import annotations

import functools
import itertools
import struct

from streams.errors import IntegrityError
from streams.record import Value
from rpfs.store.packs import RAW, ZSTD, compress, decompress, decompress_frames

MAGIC = b"RPFF"
VERSION = 1
MIN_FRAME_LOG = 12              # 4 KiB
DIGEST = 32
_HEAD = struct.Struct("<4sI")
_TABLE = struct.Struct("<BBHI")
_ENTRY = struct.Struct("<IB3x")
HEAD_SIZE = _HEAD.size
_PLAIN_STEP = _ENTRY.size + DIGEST      # an unencrypted table's entry: length, codec, digest
FIRST_READ = 4096               # a read of a table starts with this much of the payload


class FrameTable(Value):
    """Where each frame of one stored chunk is: ``starts[i]`` (in the payload) and
    ``lens[i]`` of frame i, which holds plaintext [i * frame_size, min(usize, (i+1) * frame_size))."""

    __slots__ = _fields = ("frame_size", "usize", "starts", "lens", "codecs", "digests")

    def __init__(self, frame_size: int, usize: int, starts: tuple, lens: tuple, codecs: tuple,
                 digests: bytes):
        self.frame_size = frame_size
        self.usize = usize
        self.starts = starts
        self.lens = lens
        self.codecs = codecs
        self.digests = digests      # the opened table, whose entries hold each frame's plaintext
                                    # BLAKE3 (``digest``); b"" when frames are sealed

    @property
    def count(self) -> int:
        return len(self.starts)

    def digest(self, i: int) -> bytes:
        at = _TABLE.size + i * _PLAIN_STEP + _ENTRY.size
        return self.digests[at:at + DIGEST]

    def frame_usize(self, i: int) -> int:
        return min(self.frame_size, self.usize - i * self.frame_size)

    def span(self, first: int, last: int) -> tuple[int, int]:
        """(offset in the payload, length) of frames first..last (inclusive)."""
        start = self.starts[first]
        return start, self.starts[last] + self.lens[last] - start


def _name(chunk_id: bytes) -> str:
    return f"chunk {chunk_id.hex()[:16]}"


def encode(crypto, data, chunk_id: bytes, level: int, frame_size: int, raw_frame_size: int = 0) -> bytes:
    """The framed payload of ``data`` (whose id is ``chunk_id``): frames of ``frame_size``,
    or, when none of them compresses and ``raw_frame_size`` is smaller, raw frames of that."""
    n = max(1, (len(data) + frame_size - 1) // frame_size)
    mv = memoryview(data)
    cut = [compress(mv[i * frame_size:(i + 1) * frame_size], level) for i in range(n)]
    if 0 < raw_frame_size < frame_size and len(data) > raw_frame_size and \
            all(codec == RAW for codec, _ in cut):
        frame_size = raw_frame_size
        n = (len(data) + frame_size - 1) // frame_size
        cut = [(RAW, mv[i * frame_size:(i + 1) * frame_size]) for i in range(n)]
    digest = not crypto.encrypted
    entries, frames = [], []
    for i, (codec, payload) in enumerate(cut):
        stored = crypto.seal_frame(payload, chunk_id, i)
        entries.append(_ENTRY.pack(len(stored), codec))
        if digest:
            entries.append(crypto.frame_digest(mv[i * frame_size:(i + 1) * frame_size]))
        frames.append(stored)
    table = _TABLE.pack(VERSION, frame_size.bit_length() - 1, 0, n) + b"".join(entries)
    sealed = crypto.seal_table(table, chunk_id)
    return b"".join([_HEAD.pack(MAGIC, len(sealed)), sealed, *frames])


def table_length(head: bytes, csize: int, chunk_id: bytes) -> int:
    """How many bytes of the payload hold head and table (from its first 8 bytes)."""
    if len(head) < HEAD_SIZE:
        raise IntegrityError(f"{_name(chunk_id)}: framed payload of {csize} bytes too short")
    magic, tlen = _HEAD.unpack_from(head, 0)
    if magic != MAGIC:
        raise IntegrityError(f"{_name(chunk_id)}: no frame table (bad magic)")
    if tlen > csize - HEAD_SIZE:
        raise IntegrityError(f"{_name(chunk_id)}: frame table of {tlen} bytes past the payload's {csize}")
    return HEAD_SIZE + tlen


def stored_table(payload) -> bytes:
    """The head and table a framed payload starts with, as stored (the catalog keeps a copy)."""
    magic, tlen = _HEAD.unpack_from(payload, 0)
    if magic != MAGIC:
        raise ValueError("not a framed payload")
    return bytes(payload[:HEAD_SIZE + tlen])


def parse_table(crypto, head: bytes, csize: int, usize: int, chunk_id: bytes) -> FrameTable:
    """The checked frame table from the payload's first ``table_length`` bytes."""
    end = table_length(head, csize, chunk_id)
    if len(head) < end:
        raise IntegrityError(f"{_name(chunk_id)}: frame table truncated")
    table = crypto.open_table(bytes(head[HEAD_SIZE:end]), chunk_id)
    what = f"{_name(chunk_id)}: frame table"
    if len(table) < _TABLE.size:
        raise IntegrityError(f"{what} too short")
    version, log, _, count = _TABLE.unpack_from(table, 0)
    if version != VERSION:
        raise IntegrityError(f"{what} version {version} not supported")
    if not MIN_FRAME_LOG <= log <= 26:
        raise IntegrityError(f"{what}: frame size 2^{log} out of range")
    frame_size = 1 << log
    if count != max(1, (usize + frame_size - 1) // frame_size):
        raise IntegrityError(f"{what}: {count} frames cannot hold {usize} bytes of {frame_size}")
    digest = 0 if crypto.encrypted else DIGEST
    if len(table) != _TABLE.size + count * (_ENTRY.size + digest):
        raise IntegrityError(f"{what}: {len(table)} bytes for {count} frames")
    uniform = _uniform_raw(table, count, digest)
    if uniform is not None:   # every frame but the last raw, of one size: nothing to unpack
        lens, codecs = uniform
        starts = tuple(range(end, end + count * lens[0], lens[0]))
        if starts[-1] + lens[-1] != csize:
            raise IntegrityError(f"{what}: frames end at {starts[-1] + lens[-1]}, the payload at {csize}")
        return FrameTable(frame_size, usize, starts, lens, codecs, table if digest else b"")
    fields = _entries(count, digest).unpack_from(table, _TABLE.size)
    lens, codecs = fields[0::2], fields[1::2]
    if not set(codecs) <= _CODECS:
        i = next(i for i, c in enumerate(codecs) if c not in _CODECS)
        raise IntegrityError(f"{what}: frame {i} has unknown codec {codecs[i]}")
    starts = tuple(itertools.accumulate(lens[:-1], initial=end))
    if starts[-1] + lens[-1] != csize:
        raise IntegrityError(f"{what}: frames end at {starts[-1] + lens[-1]}, the payload at {csize}")
    return FrameTable(frame_size, usize, starts, lens, codecs, table if digest else b"")


_CODECS = frozenset((RAW, ZSTD))


def _uniform_raw(table: bytes, count: int, digest: int) -> "tuple[tuple, tuple] | None":
    """(lens, codecs) when every entry but the last is a raw frame stored in as many bytes
    as the first (an incompressible chunk cut into raw frames, sealed or not), checked with
    a few slice compares instead of unpacking ``count`` entries (a chunk's first small
    read parses its table); None otherwise (the general parse)."""
    if count < 2:
        return None
    step = _ENTRY.size + digest
    n = count - 1
    at = _TABLE.size
    stop = at + n * step
    entry = table[at:at + _ENTRY.size]
    length, codec = _ENTRY.unpack_from(entry)
    if codec != RAW or length == 0:
        return None
    if digest:   # entries interleaved with digests: each byte of an entry, strided
        for j, want in enumerate(_columns(entry, n)):
            if table[at + j:stop:step] != want:
                return None
    elif table[at:stop] != entry * n:
        return None
    last_len, last_codec = _ENTRY.unpack_from(table, stop)
    if last_codec not in _CODECS:
        return None   # the general parse names it
    return (length,) * n + (last_len,), (RAW,) * n + (last_codec,)


@functools.lru_cache(maxsize=32)
def _columns(entry: bytes, n: int) -> tuple:
    """Byte j of ``n`` copies of ``entry``, for each j."""
    return tuple(bytes([b]) * n for b in entry)


@functools.lru_cache(maxsize=32)
def _entries(count: int, digest: int) -> struct.Struct:
    """The lengths and codecs of all ``count`` entries as one struct (digests skipped: they
    are sliced from the table when a frame is checked): one C call parses a table."""
    return struct.Struct("<" + ("IB3x%dx" % digest if digest else "IB3x") * count)


def open_frame(crypto, table: FrameTable, i: int, stored, chunk_id: bytes) -> bytes:
    """Frame ``i``'s plaintext from its stored bytes, checked (digest or authentication);
    IntegrityError naming the chunk and the frame."""
    try:
        if len(stored) != table.lens[i]:
            raise IntegrityError(f"{len(stored)} bytes stored, expected {table.lens[i]}")
        data = bytes(decompress(table.codecs[i], crypto.open_frame(stored, chunk_id, i),
                                min(table.frame_size, table.usize - i * table.frame_size)))
        if table.digests and crypto.frame_digest(data) != table.digest(i):
            raise IntegrityError("fails its hash check")
    except IntegrityError as e:
        raise IntegrityError(f"{_name(chunk_id)} frame {i} of {table.count}: {e}") from None
    return data


def decode(crypto, payload: bytes, usize: int, chunk_id: bytes, *, check_frames: bool = False,
           memory=None):
    """The whole chunk from its framed payload: ``bytes``, or a read-only view of
    ``payload`` when every frame is stored raw and unsealed (incompressible data: its
    plaintext is the payload after the table, so nothing is copied). The caller checks the
    chunk id over the result; ``check_frames`` also checks each frame's own digest (verify:
    a table whose digests disagree with good data would fail only small reads). ``memory``
    (``rpfs.store.slabs.Slabs``): where compressed frames are decoded to, when it has room."""
    table = parse_table(crypto, payload, len(payload), usize, chunk_id)
    mv = memoryview(payload)
    last = table.count - 1
    if not check_frames and not crypto.encrypted and table.codecs.count(RAW) == table.count and \
            table.lens.count(table.frame_size) >= last and table.lens[last] == table.frame_usize(last):
        # every frame raw and holding exactly its share of the chunk (as decompress checks
        # each; parse_table checked that they fill the rest of the payload): the plaintext
        # is that rest. Anything else takes the loop below, which names the frame at fault.
        return mv[table.starts[0]:].toreadonly()
    if not check_frames and not crypto.encrypted and table.count > 1 and \
            table.codecs.count(ZSTD) == table.count:
        # every frame compressed (text): one streaming decode across the frames into the
        # result, no bytes per frame and no join; the chunk id is checked over it
        try:
            return decompress_frames(mv[table.starts[0]:], usize,
                                     None if memory is None else memory.take(usize))
        except IntegrityError as e:
            raise IntegrityError(f"{_name(chunk_id)} frames: {e}") from None
    pieces = []           # raw frames stay views of the payload: one copy, by the join
    for i in range(table.count):
        s = table.starts[i]
        stored = mv[s:s + table.lens[i]]
        if check_frames:
            pieces.append(open_frame(crypto, table, i, stored, chunk_id))
            continue
        try:
            pieces.append(decompress(table.codecs[i], crypto.open_frame(stored, chunk_id, i),
                                     table.frame_usize(i)))
        except IntegrityError as e:
            raise IntegrityError(f"{_name(chunk_id)} frame {i} of {table.count}: {e}") from None
    return b"".join(pieces)
