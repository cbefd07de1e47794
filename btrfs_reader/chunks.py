"""Logical to physical addresses: the system chunk array (in the superblock) maps the
chunk tree, whose CHUNK_ITEMs then map everything. One device is read; single, DUP and
the mirrored profiles (RAID1, RAID1C3/4) are read from any copy on this device."""

from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING

from streams.errors import FormatError, UnsupportedError

if TYPE_CHECKING:
    from .volume import Volume

CHUNK_ITEM = 228
CHUNK_HEADER = 48
STRIPE = 32
RAID0, RAID1, DUP, RAID10, RAID5, RAID6, RAID1C3, RAID1C4 = (
    1 << 3, 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8, 1 << 9, 1 << 10)
STRIPED = RAID0 | RAID10 | RAID5 | RAID6


@dataclass(frozen=True)
class Chunk:
    logical: int
    length: int
    type: int
    stripes: tuple[tuple[int, int], ...]   # (devid, physical offset)


def parse_chunk(key_offset: int, data: bytes, source: str, at: int) -> tuple[Chunk, int]:
    """A CHUNK_ITEM's value; returns the chunk and the bytes it took."""
    if len(data) < CHUNK_HEADER:
        raise FormatError("chunk item too short", source=source, structure="Btrfs chunk",
                          offset=at)
    length, _owner, _stripe_len, typ = struct.unpack_from("<QQQQ", data, 0)
    num_stripes, = struct.unpack_from("<H", data, 44)
    size = CHUNK_HEADER + STRIPE * num_stripes
    if num_stripes == 0 or len(data) < size or length == 0:
        raise FormatError(f"chunk of {num_stripes} stripes, {length} bytes", source=source,
                          structure="Btrfs chunk", offset=at)
    stripes = tuple(struct.unpack_from("<QQ", data, CHUNK_HEADER + STRIPE * i)
                    for i in range(num_stripes))
    return Chunk(key_offset, length, typ, stripes), size


class ChunkMap:
    def __init__(self, vol: "Volume"):
        self.vol = vol
        self.chunks: list[Chunk] = []
        self.starts: list[int] = []

    def add(self, c: Chunk) -> None:
        i = bisect.bisect_left(self.starts, c.logical)
        if i < len(self.starts) and self.starts[i] == c.logical:
            return
        self.starts.insert(i, c.logical)
        self.chunks.insert(i, c)

    def load_sys_array(self, array: bytes) -> None:
        pos = 0
        while pos < len(array):
            if pos + 17 > len(array):
                raise FormatError("system chunk array truncated", source=self.vol.name,
                                  structure="Btrfs system chunk array", offset=0x10000 + 811 + pos)
            _oid, typ, off = struct.unpack_from("<QBQ", array, pos)
            if typ != CHUNK_ITEM:
                raise FormatError(f"item type {typ} in the system chunk array",
                                  source=self.vol.name, structure="Btrfs system chunk array",
                                  offset=0x10000 + 811 + pos)
            chunk, used = parse_chunk(off, array[pos + 17:], self.vol.name, 0x10000 + 811 + pos)
            self.add(chunk)
            pos += 17 + used

    def physical(self, logical: int, length: int, what: str) -> int:
        """The byte offset on this device of ``length`` bytes at ``logical`` (one chunk)."""
        i = bisect.bisect_right(self.starts, logical) - 1
        if i < 0 or logical + length > self.chunks[i].logical + self.chunks[i].length:
            raise FormatError(f"logical address {logical:#x}+{length} is in no chunk",
                              source=self.vol.name, structure=what, offset=logical)
        c = self.chunks[i]
        if c.type & STRIPED:
            raise UnsupportedError(f"striped chunk profile {c.type:#x} at {c.logical:#x}",
                                   source=self.vol.name, structure=what, offset=logical)
        for devid, phys in c.stripes:
            if devid == self.vol.sb.devid:
                return phys + logical - c.logical
        raise UnsupportedError(f"chunk at {c.logical:#x} has no copy on this device",
                               source=self.vol.name, structure=what, offset=logical)
