"""Btrfs B-trees: tree blocks (checksummed, self-locating), and an in-order walk of the
items from a key onwards. Every tree (chunk, root, file system trees) is read this way.

Keys are (objectid, type, offset) compared as a tuple. A node's children must sit exactly
one level below it, so a walk can neither loop nor go deeper than the root's level.
"""

from __future__ import annotations

import bisect
import struct
from typing import TYPE_CHECKING, Iterator, NamedTuple

from streams.errors import FormatError

from . import checksum

if TYPE_CHECKING:
    from .volume import Volume

HEADER = 101
ITEM = 25
KEY_PTR = 33
MAX_LEVEL = 7
_ITEM = struct.Struct("<QBQII")
_KEY_PTR = struct.Struct("<QBQQQ")


class Key(NamedTuple):
    objectid: int
    type: int
    offset: int


class Block:
    """One parsed tree block: its keys, and for a leaf the items' data, for a node the
    children's logical addresses."""

    __slots__ = ("bytenr", "level", "owner", "keys", "data", "ptrs")

    def __init__(self, raw: bytes, bytenr: int, vol: "Volume", structure: str):
        sb = vol.sb
        checksum.verify(sb.csum_type, raw, vol.name, structure, bytenr)
        if raw[32:48] != sb.metadata_uuid:
            raise FormatError("tree block of another file system", source=vol.name,
                              structure=structure, offset=bytenr)
        at, = struct.unpack_from("<Q", raw, 48)
        if at != bytenr:
            raise FormatError(f"tree block says it is at {at:#x}", source=vol.name,
                              structure=structure, offset=bytenr)
        self.bytenr = bytenr
        self.owner, nritems, self.level = struct.unpack_from("<QIB", raw, 88)
        if self.level > MAX_LEVEL:
            raise FormatError(f"tree block level {self.level}", source=vol.name,
                              structure=structure, offset=bytenr)
        room = len(raw) - HEADER
        self.keys: list[Key] = []
        self.data: list[bytes] = []
        self.ptrs: list[int] = []
        if self.level == 0:
            if nritems * ITEM > room:
                raise FormatError(f"{nritems} items do not fit", source=vol.name,
                                  structure=structure, offset=bytenr)
            keys, data = self.keys, self.data
            low = nritems * ITEM
            for i, (oid, typ, off, doff, dsize) in enumerate(
                    _ITEM.iter_unpack(raw[HEADER:HEADER + low])):
                if doff + dsize > room or doff < low:
                    raise FormatError(f"item {i} data outside the block", source=vol.name,
                                      structure=structure, offset=bytenr)
                keys.append(Key(oid, typ, off))
                data.append(raw[HEADER + doff:HEADER + doff + dsize])
        else:
            if nritems * KEY_PTR > room or nritems == 0:
                raise FormatError(f"node of {nritems} pointers", source=vol.name,
                                  structure=structure, offset=bytenr)
            for oid, typ, off, ptr, _gen in _KEY_PTR.iter_unpack(
                    raw[HEADER:HEADER + nritems * KEY_PTR]):
                self.keys.append(Key(oid, typ, off))
                self.ptrs.append(ptr)
        for a, b in zip(self.keys, self.keys[1:]):
            if b < a:
                raise FormatError("keys out of order", source=vol.name, structure=structure,
                                  offset=bytenr)


class Tree:
    """A tree by its root block's logical address and level."""

    def __init__(self, vol: "Volume", bytenr: int, level: int, name: str):
        self.vol = vol
        self.bytenr = bytenr
        self.level = level
        self.name = name

    def _block(self, bytenr: int, level: int) -> Block:
        blk = self.vol.tree_block(bytenr, f"{self.name} tree block")
        if blk.level != level:
            raise FormatError(f"tree block at level {blk.level}, its parent expects {level}",
                              source=self.vol.name, structure=f"{self.name} tree block",
                              offset=bytenr)
        return blk

    def items(self, start: Key, end: Key | None = None) -> Iterator[tuple[Key, bytes]]:
        """Items with start <= key (< end when given), in key order."""
        if self.level > MAX_LEVEL:
            raise FormatError(f"tree root level {self.level}", source=self.vol.name,
                              structure=f"{self.name} tree")
        yield from self._walk(self.bytenr, self.level, start, end)

    def _walk(self, bytenr: int, level: int, start: Key, end: Key | None):
        blk = self._block(bytenr, level)
        if level == 0:
            i = bisect.bisect_left(blk.keys, start)
            for k, d in zip(blk.keys[i:], blk.data[i:]):
                if end is not None and k >= end:
                    return
                yield k, d
            return
        i = max(0, bisect.bisect_right(blk.keys, start) - 1)
        for j in range(i, len(blk.keys)):
            if end is not None and blk.keys[j] >= end:
                return
            yield from self._walk(blk.ptrs[j], level - 1, start, end)

    def get(self, key: Key) -> bytes | None:
        for k, d in self.items(key, Key(key.objectid, key.type, key.offset + 1)):
            return d
        return None

    def range(self, objectid: int, typ: int, lo: int = 0, hi: int = 1 << 64):
        """Items (objectid, typ, lo <= offset < hi)."""
        end = Key(objectid, typ, hi) if hi < 1 << 64 else Key(objectid, typ + 1, 0)
        return self.items(Key(objectid, typ, lo), end)
