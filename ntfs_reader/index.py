"""NTFS indexes ($I30 directories, $Secure:$SII): a B+tree of entries in $INDEX_ROOT and
INDX records of $INDEX_ALLOCATION, live records marked in $BITMAP.

Enumeration walks the tree in key order; lookup descends only into the nodes whose key
range can hold the key (O(log n) INDX reads). A visited set and a depth bound make cyclic
or absurdly deep trees a FormatError instead of a hang.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from collections.abc import Callable, Iterator

from streams.errors import FormatError
from streams.stream import Stream

from . import native
from .cache import INDEX_NODE_CACHE, INDEX_READ_CHUNK, INDEX_WHOLE_READ, LRU, MAX_INDEX_DEPTH
from .record import apply_fixups

# $INDEX_ROOT: attribute type, collation rule, block size, clusters per block, 3 bytes pad
INDEX_ROOT = struct.Struct("<IIIB3x")
# index header (at 16 in $INDEX_ROOT, 24 in an INDX record): entries offset, index length,
# allocated size, flags, 3 bytes pad. struct, not construct: one per INDX record read.
INDEX_HEADER = struct.Struct("<IIIB3x")

COLLATION_BINARY = 0x00
COLLATION_FILE_NAME = 0x01
COLLATION_NTOFS_ULONG = 0x10

ENTRY_HAS_CHILD = 0x01
ENTRY_LAST = 0x02

# Index entry: ref/data-offset Q, length H, key_length H, flags H, pad H, key..., [child VCN q]
_ENTRY = struct.Struct("<QHHH2x")


class IndexEntry(namedtuple("IndexEntry", "ref flags key raw child")):
    """One index entry (a named tuple: a big directory has one per name): ``ref`` the file
    reference ($I30; for view indexes data offset/length), ``flags``, ``key`` (bytes),
    ``raw`` the whole entry (view indexes keep their data in it), ``child`` the VCN of the
    subnode or None."""

    __slots__ = ()

    @property
    def is_last(self) -> bool:
        return bool(self.flags & ENTRY_LAST)

    def data(self) -> bytes:
        """View-index entry data (e.g. $SII's $SDS locator)."""
        off, length = struct.unpack_from("<HH", self.raw, 0)
        return self.raw[off:off + length]


def parse_entries(buf: bytes, start: int, end: int, where: dict) -> list[IndexEntry]:
    """Entries in ``buf[start:end]`` up to and including the end entry."""
    p = native.parser
    if p is not None:
        entries = p.parse_entries(buf, start, end)
        if entries is not None:
            return entries
    return parse_entries_python(buf, start, end, where)


def parse_entries_python(buf: bytes, start: int, end: int, where: dict) -> list[IndexEntry]:
    """The reference twin of parse_entries (and what reports a bad entry)."""
    out = []
    pos = start
    if end > len(buf):
        raise FormatError("index entries run past their buffer", **where)
    while True:
        if pos + 16 > end:
            raise FormatError(f"index entries not terminated (at {pos})", **where)
        ref, length, key_len, flags = _ENTRY.unpack_from(buf, pos)
        if length < 16 or length & 7 or pos + length > end or 16 + key_len > length:
            raise FormatError(f"index entry at {pos} has bad length {length}/{key_len}",
                              **where)
        child = None
        if flags & ENTRY_HAS_CHILD:
            if length < 24 + (key_len if not flags & ENTRY_LAST else 0):
                raise FormatError(f"index entry at {pos} too short for a child VCN", **where)
            child = struct.unpack_from("<q", buf, pos + length - 8)[0]
            if child < 0:
                raise FormatError(f"index entry at {pos} has child VCN {child}", **where)
        key = bytes(buf[pos + 16:pos + 16 + key_len]) if not flags & ENTRY_LAST else b""
        out.append(IndexEntry(ref, flags, key, bytes(buf[pos:pos + length]), child))
        if flags & ENTRY_LAST:
            return out
        pos += length


class Index:
    """One index of one file. ``allocation`` is the $INDEX_ALLOCATION stream or None."""

    def __init__(self, root_value: bytes, allocation: Stream | None, bitmap: bytes | None,
                 cluster_size: int, where: dict, cache: LRU | None = None,
                 cache_key=None):
        self.where = where
        self.root_value, self.cluster_size = root_value, cluster_size  # for the C listing
        if len(root_value) < 32:
            raise FormatError("$INDEX_ROOT too short", **where)
        self.attr_type, self.collation, self.block_size, _ = INDEX_ROOT.unpack_from(root_value, 0)
        entries_offset, index_length, _, _ = INDEX_HEADER.unpack_from(root_value, 16)
        if self.block_size < 256 or self.block_size > 65536 or self.block_size & (self.block_size - 1):
            raise FormatError(f"bad index block size {self.block_size}", **where)
        # VCNs count clusters when a block is at least a cluster, else 512-byte units
        self.vcn_size = cluster_size if cluster_size <= self.block_size else 512
        self.allocation = allocation
        self.bitmap = bitmap
        self.root = parse_entries(root_value, 16 + entries_offset, 16 + index_length, where)
        self._cache = cache if cache is not None else LRU(INDEX_NODE_CACHE)
        self._key = cache_key if cache_key is not None else id(self)
        self.node_reads = 0

    def node(self, vcn: int, whole: bytes | None = None) -> list[IndexEntry]:
        """The entries of the INDX record at ``vcn`` (cached); ``whole``: the whole
        $INDEX_ALLOCATION, already read."""
        key = (self._key, vcn)
        entries = self._cache.get(key)
        if entries is not None:
            return entries
        where = dict(self.where)
        where["structure"] = f"{where.get('structure', 'index')} INDX record VCN {vcn}"
        if self.allocation is None:
            raise FormatError("entry points into a missing $INDEX_ALLOCATION", **where)
        offset = vcn * self.vcn_size
        block = offset // self.block_size
        if self.bitmap is not None:
            if block // 8 >= len(self.bitmap) or not self.bitmap[block // 8] >> (block % 8) & 1:
                raise FormatError("entry points into an INDX record marked free", **where)
        if offset + self.block_size > self.allocation.size:
            raise FormatError("INDX record beyond the end of $INDEX_ALLOCATION", **where)
        self.node_reads += 1
        if whole is not None:
            buf = bytearray(whole[offset:offset + self.block_size])
        else:
            buf = bytearray(self.allocation.read(offset, self.block_size))
        apply_fixups(buf, b"INDX", where.get("source"), where["structure"], offset)
        if struct.unpack_from("<q", buf, 16)[0] != vcn:
            raise FormatError(f"INDX record says it is VCN {struct.unpack_from('<q', buf, 16)[0]}",
                              **where)
        entries_offset, index_length, _, _ = INDEX_HEADER.unpack_from(buf, 24)
        if index_length > self.block_size - 24 or entries_offset < 16:
            raise FormatError("bad INDX header", **where)
        entries = parse_entries(buf, 24 + entries_offset, 24 + index_length, where)
        self._cache.put(key, entries)
        return entries

    def __iter__(self) -> Iterator[IndexEntry]:
        """Every entry in collation order. The INDX records are visited in tree order,
        which is not their order on disk: a big index is read whole first, in large
        sequential reads (a cold listing of 50,000 names read 3,136 records one by one)."""
        return self._walk(self.root, 0, set(), self._whole())

    def _whole(self) -> bytes | None:
        a = self.allocation
        if a is None or a.size > INDEX_WHOLE_READ or a.size <= INDEX_READ_CHUNK:
            return None
        first = next((e.child for e in self.root if e.child is not None), None)
        if first is not None and self._cache.get((self._key, first)) is not None:
            return None  # listed a moment ago: its records are likely cached
        try:
            return b"".join(a.read(off, min(INDEX_READ_CHUNK, a.size - off))
                            for off in range(0, a.size, INDEX_READ_CHUNK))
        except FormatError:
            return None  # damage somewhere: read record by record, failing only there

    def _walk(self, entries, depth, visited, whole=None) -> Iterator[IndexEntry]:
        for e in entries:
            if e.child is not None:
                yield from self._walk(self._descend(e.child, depth, visited, whole),
                                      depth + 1, visited, whole)
            if not e.is_last:
                yield e

    def _descend(self, vcn: int, depth: int, visited: set, whole=None) -> list[IndexEntry]:
        if depth >= MAX_INDEX_DEPTH:
            raise FormatError(f"index deeper than {MAX_INDEX_DEPTH} levels", **self.where)
        if vcn in visited:
            raise FormatError(f"index cycle: VCN {vcn} reached twice", **self.where)
        visited.add(vcn)
        return self.node(vcn, whole)

    def iter_after(self, compare: Callable[[IndexEntry], int]) -> Iterator[IndexEntry]:
        """Entries that sort after a key (``compare(e) > 0``), in order, reading only the
        nodes on the way down to it and those after it: a paged readdir resumes in
        O(log n) instead of re-reading the directory from the start."""
        return self._after(self.root, 0, set(), compare)

    def _after(self, entries, depth, visited, compare) -> Iterator[IndexEntry]:
        seeking = True
        for e in entries:
            if seeking:
                c = 1 if e.is_last else compare(e)
                if c <= 0:
                    continue  # e and its left subtree sort at or before the key
                seeking = False
                if e.child is not None:
                    yield from self._after(self._descend(e.child, depth, visited), depth + 1,
                                           visited, compare)
            elif e.child is not None:
                yield from self._walk(self._descend(e.child, depth, visited), depth + 1,
                                      visited)
            if not e.is_last:
                yield e

    def find(self, compare: Callable[[IndexEntry], int]) -> list[IndexEntry]:
        """Entries whose key compares equal. ``compare(e)`` < 0 if e sorts before the key."""
        out: list[IndexEntry] = []
        self._find(self.root, 0, set(), compare, out)
        return out

    def _find(self, entries, depth, visited, compare, out) -> None:
        for e in entries:
            c = 1 if e.is_last else compare(e)
            if c >= 0 and e.child is not None:
                self._find(self._descend(e.child, depth, visited), depth + 1, visited,
                           compare, out)
            if c == 0:
                out.append(e)
            elif c > 0:
                return
