"""The node contract every part of the namespace implements and every front end consumes.

A node is one name in the tree (DESIGN.md, "The namespace"). Besides what it is (``kind``,
``attr()``, ``iterdir()``, ``open()``...) each node says how far its answers can be trusted
over time, so the FUSE adapter never guesses from key prefixes:

- ``immutable``: attributes, listing, data and extended attributes never change once seen
  (everything inside a recovery point); the repository root and VM directories are not,
  since new recovery points appear while a mount is up.
- ``cache_seconds``: how long the kernel may keep its entry and attributes.

Two methods let a front end answer without parsing:

- ``attr_if_known()``: the attributes if they cost nothing more to produce (an NTFS entry
  listed from its directory index has not read its MFT record yet: None);
- ``may_have_xattr(name)``: False for extended attribute names the node can never have
  (``security.selinux`` on NTFS), so ``ls -l`` asking for them needs no I/O at all;
  ``xattr_namespace``, the same as data, ``(prefixes, names)`` (None: only
  ``may_have_xattr`` can tell), the same for every numbered node of one volume, so the
  mount's C side answers every other name without calling Python.

Capabilities only some nodes have are declared here too, each with a default meaning "not
this node", so a front end asks the node instead of probing it with ``hasattr``:

- ``stream_node(name)``: the alternate data stream ``file:name`` (NTFS files); NotFoundError
  elsewhere. ``Tree.resolve`` uses it for a final ``name:stream``.
- ``volume_stream``: on a volume's root directory (and on the BrokenNode of a volume whose
  file system cannot be read), the volume's bytes as the guest sees them, decrypted, or the
  error opening them (``export --format raw``); None on every other node.
- ``detail()``: what a detailed listing shows besides ``attr()`` (NTFS: ``attributes``, the
  FILE_ATTRIBUTE_* flags, and ``streams``, {name: size}); {} where there is nothing more.

A damaged object is a ``BrokenNode`` (or a node that remembers its error): listed, and
raising the same error whenever it is used, without parsing again; front ends log it once
(``report_once``), the CLI prints it as its one line.
"""

from __future__ import annotations

import os
import stat as statmod
import threading
import time
from collections.abc import Callable, Iterable, Iterator

from streams.errors import NotFoundError, RpfsError, UsageError
from streams.lru import LRU
from streams.record import Record
from streams.stream import Stream
from rpfs.log import get_logger

log = get_logger("rpfs.tree")

IMMUTABLE_CACHE_SECONDS = 3600.0  # recovery point contents never change
REFRESH_SECONDS = 2.0             # repository root and VM directories gain recovery points
XATTR_SIZE_MAX = 65536            # Linux's largest extended attribute value (XATTR_SIZE_MAX)


_reported = LRU(4096)


def report_once(error: RpfsError) -> None:
    """Log a damaged object's error the first time it is seen (not on every access)."""
    text = str(error)
    if _reported.get(text) is None:
        _reported.put(text, True)
        log.warning("%s", text)


class Attr(Record):
    """What ``stat`` says about a node. Times are ns since the Unix epoch. ``kind``: "dir",
    "file", "symlink"; on POSIX volumes also a SPECIAL_KINDS name. POSIX file systems (ext4,
    XFS, Btrfs) give the guest's own ``posix_mode`` (the full st_mode), ``uid``, ``gid`` and
    ``rdev``; None: the front end's defaults (MODES, the mounting user)."""

    __slots__ = _fields = ("kind", "size", "mtime_ns", "atime_ns", "ctime_ns", "crtime_ns",
                           "nlink", "allocated", "posix_mode", "uid", "gid", "rdev")

    def __init__(self, kind: str, size: int = 0, mtime_ns: int = 0, atime_ns: int = 0,
                 ctime_ns: int = 0, crtime_ns: int | None = None, nlink: int = 1,
                 allocated: int | None = None, posix_mode: int | None = None,
                 uid: int | None = None, gid: int | None = None, rdev: int = 0):
        self.kind = kind
        self.size = size
        self.mtime_ns = mtime_ns
        self.atime_ns = atime_ns
        self.ctime_ns = ctime_ns
        self.crtime_ns = crtime_ns
        self.nlink = nlink
        self.allocated = allocated
        self.posix_mode = posix_mode
        self.uid = uid
        self.gid = gid
        self.rdev = rdev

    @property
    def mode(self) -> int:
        return MODES[self.kind] if self.posix_mode is None else self.posix_mode


MODES = {"dir": statmod.S_IFDIR | 0o555, "symlink": statmod.S_IFLNK | 0o777,
         "file": statmod.S_IFREG | 0o444,
         # special files exist only on POSIX volumes; nothing is read through them
         "chardev": statmod.S_IFCHR | 0o444, "blockdev": statmod.S_IFBLK | 0o444,
         "fifo": statmod.S_IFIFO | 0o444, "socket": statmod.S_IFSOCK | 0o444}
SPECIAL_KINDS = frozenset({"chardev", "blockdev", "fifo", "socket"})


class Node:
    """A name in the tree. ``key`` is stable and unique: hard links share it."""

    __slots__ = ()  # subclasses that exist by the hundred thousand can be slotted
    kind = "file"
    name: str = ""
    key: tuple = ()
    immutable = True
    cache_seconds = IMMUTABLE_CACHE_SECONDS
    # A node of a big file system that can be made again from a number alone (its MFT
    # record): ``key == volume_key + (number,)`` and ``by_number(number)`` rebuilds it, so
    # a front end need not keep one object per name the kernel holds. None: keep the node.
    number: int | None = None
    # Its attributes would open something big (a volume's file system: tree.VolumeDir): a
    # listing of its directory sends it without them, and only a stat of it opens it.
    attr_opens = False

    def by_number(self, number: int) -> "Node":
        """The node numbered ``number`` on this node's volume, made again (reads it)."""
        raise NotImplementedError

    def attr(self) -> Attr:
        raise NotImplementedError

    def attr_if_known(self) -> Attr | None:
        """``attr()`` when it needs no I/O or parsing; None otherwise."""
        return self.attr()

    # directories
    def iterdir(self) -> Iterator["Node"]:
        raise UsageError(f"{self.name}: not a directory")

    def listing(self) -> "Listing":
        """The children in listing order, kinds settled: what a directory listing serves
        (rpfs/listing.py). A subclass may build it faster than ``iterdir``, and without a
        node per child (NTFS: arrays; nodes made only on ``listing.node(i)``)."""
        from rpfs.listing import NodesListing
        children = list(self.iterdir())
        for child in children:
            child.kind  # noqa: B018  (an NTFS child the index cannot type reads its record)
        return NodesListing(children)

    def will_walk(self) -> None:
        """A walk of this whole subtree begins (a restore): a file system whose metadata
        lies in one place (NTFS's $MFT) may have it decoded ahead (``Volume.will_walk``).
        A hint only; the default does nothing."""

    def plain_files(self, listing: "Listing", max_size: int):
        """For a restore: ``(PlainFiles, volume stream)`` for ``listing`` (this directory's
        listing), telling which children are plain files up to ``max_size`` bytes and where
        their bytes lie (ntfs_reader/plain.py), so they are written without a node each;
        None (the default): every child goes through its node."""
        return None

    def child(self, name: str) -> "Node":
        for node in self.iterdir():
            if node.name == name:
                return node
        raise NotFoundError(f"{name}: no such file or directory")

    # files
    def open(self) -> Stream:
        raise UsageError(f"{self.name}: is a directory")

    # symlinks
    def readlink(self) -> str:
        raise UsageError(f"{self.name}: not a symbolic link")

    def xattr_names(self) -> list[str]:
        """Names of the extended attributes (values are read only when asked for)."""
        return []

    # the extended attribute names this node can have at all: those starting with one of
    # the prefixes, and the names; None: ask may_have_xattr (it agrees with this otherwise)
    xattr_namespace: tuple[tuple[str, ...], frozenset[str]] | None = ((), frozenset())

    def may_have_xattr(self, name: str) -> bool:
        """False if this node can never have an attribute called ``name`` (no I/O)."""
        return False

    def getxattr(self, name: str) -> bytes:
        raise NotFoundError(f"{self.name}: no attribute {name}")

    def info(self) -> dict:
        """What this object is, for ``rpfs info`` (JSON-able)."""
        a = self.attr()
        return {"name": self.name, "type": self.kind, "size": a.size}

    # capabilities some nodes have (the module docstring lists them); defaults: not this one
    volume_stream: Stream | RpfsError | None = None

    def stream_node(self, stream: str) -> "Node":
        """The alternate data stream ``stream`` of this file, as a file node."""
        raise NotFoundError(f"{self.name}:{stream}: no such file or directory")

    def detail(self) -> dict:
        """What a detailed listing shows besides ``attr()`` (JSON-able)."""
        return {}


class Later:
    """A child of a ``StaticDir`` made when it is first looked up or listed: ``make(arg)``
    gives its node, whose name and key are these. A VM directory's recovery points are
    these: a lookup of ``latest`` and of the recovery point it names makes two nodes, not
    one per recovery point (1,000 in the bench: 2/3 of the instructions from a mount's
    first lookup of the VM to its ``readlink latest``)."""

    __slots__ = ("name", "key", "_make", "_arg")

    def __init__(self, name: str, key: tuple, make: Callable[[object], Node], arg):
        self.name = name
        self.key = key
        self._make = make
        self._arg = arg

    def node(self) -> Node:
        return self._make(self._arg)


class StaticDir(Node):
    """A directory whose children are computed by a function: once (immutable), or again
    when older than ``ttl`` seconds (then it is not immutable). The function may give
    ``Later`` children: they are made into nodes on first use, and kept.

    ``lookup(name)``, if given, answers a lookup while the directory is not listed (or its
    listing is stale) with that one child (a node or a ``Later``), or None to let the
    listing answer: a VM directory finds ``latest`` and a recovery point by one catalog row
    each instead of reading its 1,000. What it found is kept as long as a listing would be,
    and becomes the listed child when the listing comes (the same node for the same key)."""

    kind = "dir"

    def __init__(self, name: str, key: tuple, make_children: Callable[[], Iterable[Node]],
                 mtime_ns: int = 0, info: dict | Callable[[], dict] | None = None,
                 ttl: float | None = None,
                 lookup: Callable[[str], Node | Later | None] | None = None):
        self.name = name
        self.key = key
        self._make = make_children
        self._lookup = lookup
        self._early: dict[str, tuple[float, Node]] = {}   # name -> (when, node) by lookup
        self._children: dict[str, Node] | None = None
        self._loaded_at = 0.0
        self._ttl = ttl  # None: computed once (immutable); else recomputed when older
        if ttl is not None:
            self.immutable = False
            self.cache_seconds = min(ttl, 1.0)
        self._lock = threading.Lock()
        self._mtime = mtime_ns
        self._info = info or {}

    def _load(self) -> dict[str, Node]:
        with self._lock:
            now = time.monotonic()
            stale = self._ttl is not None and now - self._loaded_at > self._ttl
            if self._children is None or stale:
                old = {**(self._children or {}), **{k: n for k, (_, n) in self._early.items()}}
                self._early.clear()
                fresh = {}
                for n in self._make():
                    keep = old.get(n.name)
                    # Keep nodes that did not change so their caches survive a refresh.
                    fresh[n.name] = keep if keep is not None and keep.key == n.key else n
                self._children = fresh
                self._loaded_at = now
            return self._children

    def iterdir(self) -> Iterator[Node]:
        return iter([self._made(n) if n.__class__ is Later else n
                     for n in list(self._load().values())])

    def child(self, name: str) -> Node:
        if self._lookup is not None:
            n = self._found_early(name)
            if n is not None:
                return n
        try:
            n = self._load()[name]
        except KeyError:
            raise NotFoundError(f"{name}: no such file or directory") from None
        return self._made(n) if n.__class__ is Later else n

    def _found_early(self, name: str) -> Node | None:
        """``name``'s node by ``lookup`` while no fresh listing exists, else None."""
        now = time.monotonic()
        with self._lock:
            fresh = self._children is not None and not (
                self._ttl is not None and now - self._loaded_at > self._ttl)
            if fresh:
                return None
            hit = self._early.get(name)
            if hit is not None and (self._ttl is None or now - hit[0] <= self._ttl):
                return hit[1]
        n = self._lookup(name)
        if n is None:
            return None
        with self._lock:   # a node this name had, for the same key, stays the node
            kept = self._early.get(name)
            kept = kept[1] if kept is not None else (self._children or {}).get(name)
            if kept is not None and kept.__class__ is not Later and kept.key == n.key:
                n = kept
        if n.__class__ is Later:
            n = n.node()
        with self._lock:   # whichever thread made it first
            first = self._early.get(name)
            if first is not None and first[1].key == n.key:
                n = first[1]
            self._early[name] = (now, n)
        return n

    def _made(self, later: Later) -> Node:
        """``later``'s node, kept in its place (one node per child, whichever thread made it)."""
        node = later.node()
        with self._lock:
            children = self._children or {}
            now = children.get(later.name)
            if now is later:
                children[later.name] = node
            elif now is not None and now.__class__ is not Later and now.key == later.key:
                node = now
        return node

    def attr(self) -> Attr:
        return Attr("dir", mtime_ns=self._mtime, atime_ns=self._mtime, ctime_ns=self._mtime, nlink=2)

    def info(self) -> dict:
        info = self._info() if callable(self._info) else self._info
        return {"name": self.name, "type": "dir", **info}


class StreamFile(Node):
    """A file whose bytes come from a stream opened on first use."""

    kind = "file"

    def __init__(self, name: str, key: tuple, size: int, opener: Callable[[], Stream],
                 mtime_ns: int = 0, info: Callable[[], dict] | None = None):
        self.name = name
        self.key = key
        self.size = size
        self._opener = opener
        self._mtime = mtime_ns
        self._info = info

    def attr(self) -> Attr:
        return Attr("file", size=self.size, mtime_ns=self._mtime, atime_ns=self._mtime,
                    ctime_ns=self._mtime)

    def open(self) -> Stream:
        return self._opener()

    def info(self) -> dict:
        base = {"name": self.name, "type": "file", "size": self.size}
        if self._info:
            base.update(self._info())
        return base


class Symlink(Node):
    """A symbolic link with a fixed target. ``immutable=False`` for one that moves (``latest``)."""

    kind = "symlink"

    def __init__(self, name: str, key: tuple, target: str, mtime_ns: int = 0,
                 immutable: bool = True):
        self.name = name
        self.key = key
        self.target = target
        self._mtime = mtime_ns
        if not immutable:
            self.immutable = False
            self.cache_seconds = 1.0

    def attr(self) -> Attr:
        return Attr("symlink", size=len(os.fsencode(self.target)), mtime_ns=self._mtime,
                    atime_ns=self._mtime, ctime_ns=self._mtime)

    def readlink(self) -> str:
        return self.target


class BrokenNode(Node):
    """An object that exists but cannot be read: listing shows it, using it raises its
    error (which front ends log once: ``report_once``). ``volume_stream``: for a volume whose
    file system cannot be read, its bytes (still exported raw)."""

    def __init__(self, name: str, key: tuple, error: RpfsError, kind: str = "file",
                 volume_stream: Stream | RpfsError | None = None):
        self.name = name
        self.key = key
        self.error = error
        self.kind = kind
        self.volume_stream = volume_stream

    def attr(self) -> Attr:
        return Attr(self.kind, nlink=2 if self.kind == "dir" else 1)

    def _fail(self):
        raise self.error

    def iterdir(self):
        self._fail()

    def child(self, name):
        self._fail()

    def open(self):
        self._fail()

    def readlink(self):
        self._fail()

    def info(self) -> dict:
        return {"name": self.name, "type": self.kind, "error": str(self.error)}
