"""A directory's children in listing order, as ``Node.listing()`` gives them: names, kinds
and numbers without a node per child, and the child's node made only when asked for.

Every listing is a ``Listing``; a front end uses only this interface (see
/work/wt/notes/listing-api.md, docs/architecture.md):

- ``len(listing)``; ``name(i)`` -> the name as bytes (what ``os.fsencode(node.name)`` is);
- ``kind(i)`` -> "file", "dir", "symlink", ... (settled: never None, never a parse);
- ``number(i)`` -> the child's ``Node.number`` (its MFT record) or None; when not None the
  child's node is ``volume_key + (number,)`` keyed and a front end can name it (an inode:
  ``NUMBERED | slot << SLOT_SHIFT | number``) without making it;
- ``volume_key``: the volume every numbered child belongs to (None: no numbered children);
- ``key(i)`` -> the child's ``Node.key`` (without making it when it is numbered);
- ``node(i)`` -> the child's Node, made on first ask and kept (its attributes, once read,
  stay with it); ``listing[i]`` is ``(name(i), node(i))``; ``made(i)`` -> that node if it
  is made already, else None (a front end sends a child never made by its number);
  ``let_go(i)``: the front end needs that node no more (a numbered listing drops it and
  makes it again if asked);
- iterating gives ``(name, node)`` pairs for a walk that visits each child once (a
  restore): each node is made then and not kept by the listing; ``walk_node(i)`` is that
  node for one child;
- ``position(name)`` -> i or None (a dict built on the first call);
- ``stat(indexes)`` -> {i: Attr} of those children whose attributes the file system gives
  without making their nodes (NTFS: a plain file's or directory's record summary); the
  others are asked through their nodes.

``NodesListing`` holds nodes already made (small trees: VMs, disks, POSIX volumes);
``NumberedListing`` holds ntfs_reader.listing.Listing arrays (an NTFS directory of 50,000
names is ~3 MB of arrays instead of 50,000 nodes, entries and file-name tuples).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

NUMBERED_KINDS = (None, "file", "dir", "symlink")   # NumberedListing.kinds codes
SYMLINK = 3


class Listing:
    """The interface (see the module docstring)."""

    __slots__ = ("_pos",)
    volume_key: tuple | None = None

    def __len__(self) -> int:
        raise NotImplementedError

    def name(self, i: int) -> bytes:
        raise NotImplementedError

    def kind(self, i: int) -> str:
        raise NotImplementedError

    def number(self, i: int) -> int | None:
        return None

    def node(self, i: int):
        raise NotImplementedError

    def made(self, i: int):
        return self.node(i)

    def let_go(self, i: int) -> None:
        """The front end needs child i's node no more (its complete attributes went out):
        a listing that can make it again from its arrays drops it."""

    def stat(self, indexes) -> dict:
        """{i: Attr} for those of children ``indexes`` whose attributes the file system
        gives without making their nodes (a listing's children stat'ed in a batch); a child
        left out is asked through its node (which also raises its errors)."""
        return {}

    def key(self, i: int) -> tuple:
        return self.node(i).key

    def _walk_node(self, i: int):
        return self.node(i)

    def walk_node(self, i: int):
        """Child i's node for a walk that visits it once (not kept when not made yet)."""
        return self._walk_node(i)

    def __getitem__(self, i: int) -> tuple:
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.name(i), self.node(i)

    def __iter__(self) -> Iterator[tuple]:
        for i in range(len(self)):
            yield self.name(i), self._walk_node(i)

    def names(self) -> Iterator[bytes]:
        return (self.name(i) for i in range(len(self)))

    def position(self, name: bytes) -> int | None:
        pos = getattr(self, "_pos", None)
        if pos is None:
            pos = self._pos = {self.name(i): i for i in range(len(self))}
        return pos.get(name)


class NodesListing(Listing):
    """A listing over nodes already made (kinds settled by the caller)."""

    __slots__ = ("_names", "_nodes")

    def __init__(self, nodes) -> None:
        self._nodes = list(nodes)
        self._names = [os.fsencode(n.name) for n in self._nodes]
        self._pos = None

    def __len__(self) -> int:
        return len(self._nodes)

    def name(self, i: int) -> bytes:
        return self._names[i]

    def kind(self, i: int) -> str:
        return self._nodes[i].kind

    def number(self, i: int) -> int | None:
        return self._nodes[i].number

    def node(self, i: int):
        return self._nodes[i]


class NumberedListing(Listing):
    """A listing over the arrays of ntfs_reader.listing.Listing. ``make(i)`` makes child
    i's node; ``kinds``: NUMBERED_KINDS codes, with every UNKNOWN settled at construction
    (its node made then, and kept: a reparse point or system file reads its record)."""

    __slots__ = ("arrays", "kinds", "volume_key", "_make", "_stat", "_nodes", "_settled")

    def __init__(self, arrays, volume_key: tuple, make: Callable[[int], object],
                 stat: Callable | None = None) -> None:
        self.arrays = arrays
        self.volume_key = volume_key
        self._make = make
        self._stat = stat   # (indexes, kinds) -> {i: Attr} (``stat``), from the file system
        self._nodes: list | None = None   # child i's node once made (one list, on first ask)
        self._pos = None
        self._settled: set[int] = set()   # children whose node settled their kind: kept
        kinds = self.kinds = arrays.kinds
        if 0 in kinds:
            kinds = self.kinds = kinds[:]   # the arrays stay the index's own
            i = kinds.index(0)
            while True:
                node = self.node(i)
                self._settled.add(i)
                kinds[i] = NUMBERED_KINDS.index(node.kind) if node.kind in NUMBERED_KINDS else 1
                try:
                    i = kinds.index(0, i + 1)
                except ValueError:
                    break

    def __len__(self) -> int:
        return len(self.kinds)

    def name(self, i: int) -> bytes:
        a = self.arrays
        return a.names[a.offsets[i]:a.offsets[i + 1]]

    def names(self) -> Iterator[bytes]:
        names, offsets = self.arrays.names, self.arrays.offsets
        return (names[offsets[i]:offsets[i + 1]] for i in range(len(self.kinds)))

    def kind(self, i: int) -> str:
        return NUMBERED_KINDS[self.kinds[i]]

    def number(self, i: int) -> int:
        return self.arrays.numbers[i]

    def key(self, i: int) -> tuple:
        return self.volume_key + (self.arrays.numbers[i],)

    def _walk_node(self, i: int):
        node = self._nodes[i] if self._nodes is not None else None
        return node if node is not None else self._make(i)

    def made(self, i: int):
        nodes = self._nodes
        return None if nodes is None else nodes[i]

    def let_go(self, i: int) -> None:
        """Drop child i's node (a walk's listings would keep every node they made, ~0.5 KB
        each); one whose kind came from its record stays (that record is not read twice)."""
        if self._nodes is not None and i not in self._settled:
            self._nodes[i] = None

    def stat(self, indexes) -> dict:
        """Children whose node is made (or whose kind came from their record) are left to
        their node: it may know its attributes, or its error, already."""
        if self._stat is None:
            return {}
        nodes, settled = self._nodes, self._settled
        if nodes is not None or settled:
            indexes = [i for i in indexes
                       if (nodes is None or nodes[i] is None) and i not in settled]
        return self._stat(indexes, self.kinds)

    def node(self, i: int):
        nodes = self._nodes
        if nodes is None:
            nodes = self._nodes = [None] * len(self.kinds)
        node = nodes[i]
        if node is None:
            node = nodes[i] = self._make(i)
        return node
