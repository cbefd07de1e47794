"""The FUSE front end: a thin pyfuse3 adapter over ``rpfs.tree`` (read-only).

All errno mapping happens here (``_errors``): a typed rpfs error becomes its ``errno``
(EIO for damage) for that object only; anything unexpected is logged once and becomes EIO.
Parsing and decompression run in worker threads (``trio.to_thread`` behind one
CapacityLimiter), never on the trio loop, so one slow chunk does not stall other readers.
Recovery points never change, so attributes and data are cached by the kernel for long
(``keep_cache``, long timeouts); only the repository root and VM directories, which gain
recovery points while a backup runs, use short timeouts.

The kernel does not keep directory contents: every ``opendir`` lists again, and pyfuse3
always answers with readdirplus, i.e. with every child's attributes (one MFT record each on
NTFS). So an immutable directory's listing is kept here, names and attributes ready to
send (``_Listings``, bounded by entries): a second ``ls``/walk/``find`` and a ``lookup`` of
a listed name cost no worker thread and no parsing (tools/bench_mount.py, docs/benchmarks.md).
Opened streams are kept too (positionless, so handles share them): opening a file again
costs no worker call, and a small file's bytes come back with its first open. Extended
attribute names and small values are kept, since the kernel caches none for FUSE.
"""

from __future__ import annotations

import errno
import functools
import gc
import itertools
import logging
import os
import stat as statmod
import threading
from collections import OrderedDict
from typing import Callable

import pyfuse3
import trio

from rpfs.errors import RpfsError
from rpfs.kernel_readahead import raise_read_ahead_when_served
from rpfs.lru import LRU
from rpfs.tree import Node, Tree, lookup_child

log = logging.getLogger(__name__)

LONG_TIMEOUT = 3600.0   # immutable recovery point contents
SHORT_TIMEOUT = 1.0     # repository root and VM directories
WORKER_THREADS = 16
LISTING_CACHE_ENTRIES = 400_000  # directory entries kept with their attributes (~300 B each)
STREAM_CACHE = 65536  # opened streams of immutable files, by inode (~600 B each)
SMALL_FILE = 128 * 1024  # read whole in the open's worker call: one thread hop, not two
XATTR_CACHE = 16384  # xattr name lists (by inode) and values (by inode and name)
XATTR_VALUE_MAX = 4096  # larger values (alternate data streams) are read each time
# A listing allocates a few objects per entry while the caches hold hundreds of thousands:
# with Python's default (700, 10, 10) the cyclic collector ran so often that it took more
# than half of listing a 50,000-entry directory (4.2 s -> 2.1 s with these). Parsed NTFS
# objects are acyclic and freed by reference counting; cycles still get collected.
GC_THRESHOLDS = (100_000, 50, 100)


def _errors(fn: Callable) -> Callable:
    """Only FUSEError may leave a handler: map our errors, log bugs as EIO."""

    @functools.wraps(fn)
    async def wrapper(*args, **kw):
        try:
            return await fn(*args, **kw)
        except pyfuse3.FUSEError:
            raise
        except RpfsError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ENODATA):
                log.warning("%s", e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except OSError as e:
            log.warning("%s: %s", fn.__name__, e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class _Listing:
    """One directory's children as readdir sends them: (name bytes, attributes) in order."""

    __slots__ = ("entries", "broken", "_by_name")

    def __init__(self, entries: list[tuple[bytes, pyfuse3.EntryAttributes]],
                 broken: set[bytes] = frozenset()):
        self.entries = entries
        self.broken = broken  # listed, but a lookup must ask the tree (and get its error)
        self._by_name: dict[bytes, pyfuse3.EntryAttributes] | None = None

    def find(self, name: bytes) -> pyfuse3.EntryAttributes | None:
        if self._by_name is None:  # built on the first lookup, not for a plain listing
            self._by_name = {n: a for n, a in self.entries if n not in self.broken}
        return self._by_name.get(name)


class _Listings:
    """Listings of immutable directories by inode, least recently used out first once they
    hold more than ``max_entries`` entries in all."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._data: OrderedDict[int, _Listing] = OrderedDict()
        self._total = 0

    def get(self, ino: int) -> _Listing | None:
        listing = self._data.get(ino)
        if listing is not None:
            self._data.move_to_end(ino)
        return listing

    def put(self, ino: int, listing: _Listing) -> None:
        old = self._data.pop(ino, None)
        if old is not None:
            self._total -= len(old.entries)
        if len(listing.entries) > self.max_entries:
            return
        self._data[ino] = listing
        self._total += len(listing.entries)
        while self._total > self.max_entries:
            _, gone = self._data.popitem(last=False)
            self._total -= len(gone.entries)


class _Handle:
    """An open file: its stream, and the whole content when it was small enough."""

    __slots__ = ("stream", "data")

    def __init__(self, stream, data: bytes | None = None):
        self.stream = stream
        self.data = data


class Operations(pyfuse3.Operations):
    """pyfuse3 operations over a Tree. Inodes come from a counter and are never reused;
    nodes with the same key (hard links) share an inode."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, tree: Tree):
        super().__init__()
        self.tree = tree
        self._lock = threading.Lock()
        self._next_ino = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._ino_by_key: dict[tuple, int] = {tree.root.key: pyfuse3.ROOT_INODE}
        self._node: dict[int, Node] = {pyfuse3.ROOT_INODE: tree.root}
        self._parent: dict[int, int] = {pyfuse3.ROOT_INODE: pyfuse3.ROOT_INODE}
        self._handles: dict[int, object] = {}
        self._next_fh = itertools.count(1)
        self._limiter = trio.CapacityLimiter(WORKER_THREADS)
        self._listings = _Listings(LISTING_CACHE_ENTRIES)  # used on the trio loop only
        self._streams = LRU(STREAM_CACHE)  # likewise
        self._xattr_names = LRU(XATTR_CACHE)
        self._xattr_values = LRU(XATTR_CACHE)
        self.uid = os.getuid()
        self.gid = os.getgid()

    # -- helpers ------------------------------------------------------------------------

    async def _run(self, fn, *args):
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _inode(self, node: Node, parent: int) -> int:
        with self._lock:
            ino = self._ino_by_key.get(node.key)
            if ino is None:
                ino = next(self._next_ino)
                self._ino_by_key[node.key] = ino
                self._parent[ino] = parent
            self._node.setdefault(ino, node)
            return ino

    def _get(self, ino: int) -> Node:
        try:
            return self._node[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    @staticmethod
    def _immutable(node: Node) -> bool:
        key = node.key
        return not (key and key[0] in ("repo", "vm", "latest"))

    def _timeout(self, node: Node) -> float:
        return LONG_TIMEOUT if self._immutable(node) else SHORT_TIMEOUT

    def _entry(self, node: Node, ino: int) -> pyfuse3.EntryAttributes:
        a = node.attr()
        e = pyfuse3.EntryAttributes()
        e.st_ino = ino
        e.generation = 0
        timeout = self._timeout(node)
        e.entry_timeout = timeout
        e.attr_timeout = timeout
        e.st_mode = a.mode
        e.st_nlink = a.nlink
        e.st_uid = self.uid
        e.st_gid = self.gid
        e.st_rdev = 0
        e.st_size = a.size
        e.st_blksize = 128 * 1024
        e.st_blocks = -(-(a.allocated if a.allocated is not None else a.size) // 512)
        e.st_atime_ns = _clamp_ns(a.atime_ns)
        e.st_mtime_ns = _clamp_ns(a.mtime_ns)
        e.st_ctime_ns = _clamp_ns(a.ctime_ns)
        return e

    def _entry_sync(self, node: Node, parent: int) -> pyfuse3.EntryAttributes:
        return self._entry(node, self._inode(node, parent))

    # -- metadata -----------------------------------------------------------------------

    @_errors
    async def lookup(self, parent_inode, name, ctx=None):
        if name == b".":
            return await self.getattr(parent_inode)
        if name == b"..":
            return await self.getattr(self._parent.get(parent_inode, pyfuse3.ROOT_INODE))
        parent = self._get(parent_inode)
        if parent.kind != "dir":
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        listing = self._listings.get(parent_inode)
        if listing is not None:
            attr = listing.find(name)
            if attr is not None:
                return attr

        def work():
            node = lookup_child(parent, os.fsdecode(name))
            return self._entry_sync(node, parent_inode)

        return await self._run(work)

    @_errors
    async def getattr(self, inode, ctx=None):
        node = self._get(inode)
        return await self._run(self._entry, node, inode)

    @_errors
    async def readlink(self, inode, ctx):
        node = self._get(inode)
        target = await self._run(node.readlink)
        return os.fsencode(target)

    @_errors
    async def opendir(self, inode, ctx):
        node = self._get(inode)
        if node.kind != "dir":
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        immutable = self._immutable(node)
        listing = self._listings.get(inode) if immutable else None
        if listing is None:
            listing = await self._run(self._list, node, inode)
            if immutable:
                self._listings.put(inode, listing)
        fh = next(self._next_fh)
        self._handles[fh] = listing
        return fh

    def _list(self, node: Node, inode: int) -> _Listing:
        """Every child with its attributes, in one worker call (the parsing is the cost)."""
        entries, broken = [], set()
        for child in node.iterdir():
            name = os.fsencode(child.name)
            try:
                attr = self._entry_sync(child, inode)
            except RpfsError as e:  # a damaged entry is listed, and answers EIO on use
                log.warning("%s", e)
                attr = pyfuse3.EntryAttributes()
                attr.st_ino = self._inode(child, inode)
                attr.st_mode = statmod.S_IFREG | 0o444
                broken.add(name)
            entries.append((name, attr))
        return _Listing(entries, broken)

    @_errors
    async def readdir(self, fh, start_id, token):
        entries = self._handles[fh].entries
        for i in range(start_id, len(entries)):
            name, attr = entries[i]
            if not pyfuse3.readdir_reply(token, name, attr, i + 1):
                return

    @_errors
    async def releasedir(self, fh):
        self._handles.pop(fh, None)

    @_errors
    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        s.f_bsize = 4096
        s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 0
        s.f_files = len(self._node)
        s.f_ffree = s.f_favail = 0
        s.f_namemax = 1024
        return s

    @_errors
    async def listxattr(self, inode, ctx):
        names = self._xattr_names.get(inode)
        if names is None:
            node = self._get(inode)
            names = [os.fsencode(n) for n in await self._run(node.xattr_names)]
            if self._immutable(node):
                self._xattr_names.put(inode, names)
        return names

    @_errors
    async def getxattr(self, inode, name, ctx):
        # The kernel keeps no xattrs for FUSE and `cp -a` asks for each twice (size, then
        # value) plus POSIX ACLs: answer what is known without a worker call.
        value = self._xattr_values.get((inode, name))
        if value is not None:
            return value
        names = self._xattr_names.get(inode)
        if names is not None and name not in names:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        node = self._get(inode)
        try:
            value = await self._run(node.getxattr, os.fsdecode(name))
        except RpfsError as e:
            if e.errno == errno.ENOENT:
                raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None
            raise
        if len(value) <= XATTR_VALUE_MAX and self._immutable(node):
            self._xattr_values.put((inode, name), value)
        return value

    # -- data ---------------------------------------------------------------------------

    @_errors
    async def open(self, inode, flags, ctx):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_TRUNC):
            raise pyfuse3.FUSEError(errno.EROFS)
        node = self._get(inode)
        if node.kind == "dir":
            raise pyfuse3.FUSEError(errno.EISDIR)
        stream = self._streams.get(inode)
        if stream is not None:  # opened before: the kernel's page cache has or gets the data
            handle = _Handle(stream)
        else:
            handle = await self._run(_open_small, node)
            if self._immutable(node):
                self._streams.put(inode, handle.stream)
        fh = next(self._next_fh)
        self._handles[fh] = handle
        return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=False)

    @_errors
    async def read(self, fh, off, size):
        handle = self._handles[fh]
        if handle.data is not None:
            return handle.data[off:off + size]
        return await self._run(handle.stream.read_buffer, off, size)  # one copy less than read

    @_errors
    async def release(self, fh):
        self._handles.pop(fh, None)

    async def forget(self, inode_list):
        pass  # inodes are never reused; nodes stay cached (they are cheap and lazy)

    # -- everything that would write ----------------------------------------------------

    async def _erofs(self, *args, **kw):
        raise pyfuse3.FUSEError(errno.EROFS)

    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _erofs
    write = create = setxattr = removexattr = _erofs


def _open_small(node: Node) -> _Handle:
    stream = node.open()
    data = None
    if stream.size <= SMALL_FILE:
        try:
            data = stream.read(0, stream.size)
        except RpfsError:
            pass  # damaged data: open still succeeds, and read() answers EIO as before
    return _Handle(stream, data)


def _clamp_ns(ns: int) -> int:
    """NTFS times reach year 60056; the kernel's stop at int64 nanoseconds (year 2262)."""
    return max(-(1 << 63), min(ns, (1 << 63) - 1))


def mount(tree: Tree, mountpoint: str, *, allow_other: bool = False, debug: bool = False,
          ready: Callable[[], None] | None = None) -> None:
    """Serve ``tree`` at ``mountpoint`` until unmounted (blocks)."""
    ops = Operations(tree)
    options = set(pyfuse3.default_options)
    options |= {"fsname=rpfs", "subtype=rpfs", "ro", "default_permissions"}
    if allow_other:
        options.add("allow_other")
    if debug:
        options.add("debug")
    pyfuse3.init(ops, mountpoint, options)
    raise_read_ahead_when_served(mountpoint)  # 1 MiB requests for sequential readers (root only)
    gc.set_threshold(*GC_THRESHOLDS)  # this process only serves the mount
    if ready:
        ready()
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)
