"""A directory's listing as parallel arrays: what ``ls -f``, a readdir or a restore walk
needs of every child, with no Python object per child.

``list_directory(index, is_root)`` gives a ``Listing``: the children in ``Entry.iterdir``
order, with the rules of ``Entry.listing`` (DOS 8.3 aliases skipped; at the root the
metadata files ``$...`` below record 16 and the root's own entry hidden; names as
``names.from_raw`` then ``os.fsencode`` give them: unpaired surrogates as generalised
UTF-8, ``/``, NUL, ``.``/``..`` escaped, long names shortened; an entry naming record 5
elsewhere is called ``""`` as ``Entry.name`` calls it; duplicate names are kept, in index
order). The C parser (``_ntfsparse.list_index``) builds it when it can; ``listing_python``
is its reference twin and what raises the typed error for a bad index (a cycle, a record
marked free, bad fixups or a bad key: the whole listing fails, as ``Entry.listing`` does).
"""

from __future__ import annotations

import os
from array import array

from streams.errors import FormatError

from . import names, native
from .attrs import FILE_ATTRIBUTE_REPARSE_POINT, FILE_ATTRIBUTE_SYSTEM, FILE_NAME_INDEX_PRESENT, NS_DOS, parse_file_name
from .cache import INDEX_READ_CHUNK, INDEX_WHOLE_READ

FILE_ROOT = 5

# kinds as the index's $FILE_NAME flags tell them (Entry.index_kind); UNKNOWN: a reparse
# point or a system file, whose record must be read
UNKNOWN, FILE, DIR = 0, 1, 2
KIND_NAMES = (None, "file", "dir")


class Listing:
    """Children ``0 .. len-1``. ``names[offsets[i]:offsets[i + 1]]`` is child i's name as
    bytes; ``numbers[i]`` its MFT record number, ``sequences[i]`` the sequence number the
    index holds for it, ``kinds[i]`` UNKNOWN/FILE/DIR; ``flags``, ``sizes``, ``allocated``
    and ``times`` (4 per child: created, modified, changed, accessed, NT time) are the
    index's copy of its $FILE_NAME, which NTFS does not keep in step with the file: for
    display hints only (attributes come from the record)."""

    __slots__ = ("names", "offsets", "numbers", "sequences", "kinds", "flags", "sizes",
                 "allocated", "times")

    def __init__(self, names: bytes, offsets: array, numbers: array, sequences: array,
                 kinds: array, flags: array, sizes: array, allocated: array, times: array):
        self.names, self.offsets, self.numbers, self.sequences = names, offsets, numbers, sequences
        self.kinds, self.flags, self.sizes, self.allocated, self.times = (kinds, flags, sizes,
                                                                          allocated, times)

    @classmethod
    def from_native(cls, parts: tuple) -> "Listing":
        arrays = []
        for code, data in zip("IQHBIqqQ", parts[1:]):
            a = array(code)
            a.frombytes(data)
            arrays.append(a)
        return cls(parts[0], *arrays)

    def __len__(self) -> int:
        return len(self.numbers)

    def name(self, i: int) -> bytes:
        return self.names[self.offsets[i]:self.offsets[i + 1]]

    def as_tuple(self) -> tuple:
        """Every field, for comparing two listings."""
        return tuple(getattr(self, f) for f in self.__slots__)

    def __eq__(self, other) -> bool:
        return isinstance(other, Listing) and self.as_tuple() == other.as_tuple()

    def __repr__(self) -> str:
        shown = [self.name(i) for i in range(min(len(self), 5))]
        return f"<Listing of {len(self)}: {shown}{'...' if len(self) > 5 else ''}>"


def list_directory(index, is_root: bool, where: dict) -> Listing:
    """The listing of the directory whose $I30 is ``index`` (ntfs_reader.index.Index)."""
    # None also for an extension built before list_index (a checkout not rebuilt)
    list_index = getattr(native.parser, "list_index", None)
    if list_index is not None:
        whole = _whole(index)
        if whole is not False:
            parts = list_index(index.root_value, whole, index.bitmap, index.cluster_size,
                               is_root)
            if parts is not None:
                return Listing.from_native(parts)
    return listing_python(index, is_root, where)


def _whole(index):
    """The whole $INDEX_ALLOCATION as bytes, None if there is none, False when the twin
    must walk it record by record (too big to read at once, or damaged somewhere)."""
    a = index.allocation
    if a is None:
        return None
    if a.size > INDEX_WHOLE_READ:
        return False
    try:
        return b"".join(a.read(off, min(INDEX_READ_CHUNK, a.size - off))
                        for off in range(0, a.size, INDEX_READ_CHUNK))
    except FormatError:
        return False


def listing_python(index, is_root: bool, where: dict) -> Listing:
    """The reference twin of the C listing (and what reports a bad index)."""
    out = bytearray()
    offsets, numbers, sequences = array("I", [0]), array("Q"), array("H")
    kinds, flags, sizes, allocated, times = array("B"), array("I"), array("q"), array("q"), array("Q")
    fsencode, from_raw = os.fsencode, names.from_raw
    for e in index:
        fn = parse_file_name(e.key, where)
        if fn.namespace == NS_DOS:
            continue
        num = e.ref & 0xFFFFFFFFFFFF
        raw = fn.raw_name
        if is_root and (num < 16 and raw[:2] == b"$\x00" or num == FILE_ROOT):
            continue
        out += b"" if num == FILE_ROOT else fsencode(from_raw(raw))
        offsets.append(len(out))
        numbers.append(num)
        sequences.append(e.ref >> 48)
        kinds.append(_kind(fn.flags))
        flags.append(fn.flags)
        sizes.append(fn.data_size)
        allocated.append(fn.allocated_size)
        times.extend(fn.times)
    return Listing(bytes(out), offsets, numbers, sequences, kinds, flags, sizes, allocated, times)


def _kind(flags: int) -> int:
    """Entry._index_kind as a number."""
    if flags & FILE_ATTRIBUTE_REPARSE_POINT:
        return UNKNOWN
    if flags & FILE_NAME_INDEX_PRESENT:
        return DIR
    return UNKNOWN if flags & FILE_ATTRIBUTE_SYSTEM else FILE
