"""The FUSE front end: a thin pyfuse3 adapter over the node contract (rpfs/node.py), read-only.

All errno mapping happens here (``_errors``): a typed rpfs error becomes its ``errno``
(EIO for damage, logged once) for that object only; anything unexpected is logged and
becomes EIO.

**Fast path.** Whatever is already known is answered on the trio loop, with no thread
hand-off: a cached listing (names and the kinds the NTFS index gives), a lookup of a listed
name, attributes a node has already computed (``Node.attr_if_known``), a cached xattr name
list or small value, an xattr name the node can never have (``Node.may_have_xattr``: ``ls
-l`` asks ``security.selinux`` and ``system.posix_acl_access`` of every file), an opened
stream, a small file's bytes. Only real parsing and I/O go to worker threads
(``trio.to_thread`` behind one CapacityLimiter), so one slow chunk stalls no other reader.

**Listings without MFT records.** A big directory (``NAMES_ONLY_FROM`` entries or more)
is listed with readdirplus (the kernel caches every entry) from its index alone: a child
whose attributes are not known yet is sent with its kind and ``attr_timeout=0``, so a
names-only ``ls -f`` or ``find`` never reads its children's MFT records, while the first
``stat`` still asks ``getattr`` and shows $STANDARD_INFORMATION's times as ntfs-3g does.
That ``getattr`` computes the attributes of the next ``ATTR_BATCH`` listed siblings in the
same worker call (``ls -l`` stats in listing order) and marks the listing: from then on
readdirplus computes the attributes of what it sends (one worker call per batch) and
sends them with the node's cache time, so ``ls -l`` and walks that stat cost one request
per entry less (a round trip through the kernel costs more than parsing an MFT record).
Smaller directories are listed with their attributes from the start.

**Bounded memory.** A node's inode number is a hash of its key (``stable_inode``), so nodes
with the same key (hard links) share one, and a file the kernel let go of comes back under
the same number: ``cp -r`` compares a file's inode before and after opening it, and a walk
past ``INODE_LIMIT`` (which asks the kernel to let go, see ``_shed``) must not look like a
file replaced under it. Two keys on one number (a 62-bit hash; practically never) give the
second a number of its own from a counter below 2**32. The kernel's lookup count of each
inode is kept (lookup replies and readdirplus entries); when ``forget`` brings it to zero
the inode, its node and everything cached for it are dropped. Listings, streams and xattrs
are bounded LRUs.

Immutable nodes (``Node.immutable``: everything inside a recovery point) are kept by the
kernel for ``Node.cache_seconds`` with ``keep_cache``; the repository root, VM directories
and ``latest`` say they are not.
"""

from __future__ import annotations

import errno
import hashlib
import functools
import gc
import itertools
import logging
import os
import stat
from collections import OrderedDict
from typing import Callable

import pyfuse3
import trio

from rpfs import fuse_loop
from streams.errors import RpfsError, UsageError
from streams.lru import LRU
from rpfs.node import MODES, Attr, Node, report_once
from rpfs.tree import Tree, lookup_child

log = logging.getLogger(__name__)

WORKER_THREADS = 16
LISTING_CACHE_ENTRIES = 60_000  # entries kept with their nodes (NTFS: 1.3 KB each, 1.8 KB with attributes)
INODE_LIMIT = 50_000  # inodes held for the kernel before it is asked to let go of the oldest
                       # files (env RPFS_MOUNT_INODES; ~1.7 KB each for NTFS files)
ATTR_BATCH = 512  # listed siblings whose attributes one getattr miss computes
NAMES_ONLY_FROM = 2048  # a directory this big is listed without attributes until one is asked
STREAM_CACHE = 65536  # opened streams of immutable files, by inode (~600 B each)
SMALL_FILE = 128 * 1024  # read whole in the open's worker call: one thread hop, not two
XATTR_CACHE = 16384  # xattr name lists (by inode) and values (by inode and name)
XATTR_VALUE_MAX = 4096  # larger values (alternate data streams) are read each time
MAX_READ = 1 << 20  # largest read request the kernel may send (1 MiB; libfuse's limit too)
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
            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ENODATA, errno.E2BIG):
                report_once(e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except OSError as e:
            log.warning("%s: %s", fn.__name__, e)
            raise pyfuse3.FUSEError(e.errno or errno.EIO) from None
        except Exception:
            log.exception("unexpected error in %s", fn.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


class _Listing:
    """One directory's children in listing order: (name bytes, node); ``sent``: what
    readdirplus last sent for each (a warm listing reuses it while the inode is known).
    ``stat_wanted``: someone asked a child's attributes, so readdirplus computes them."""

    __slots__ = ("entries", "_pos", "stat_wanted", "sent")

    def __init__(self, entries: list[tuple[bytes, Node]]):
        self.entries = entries
        self._pos: dict[bytes, int] | None = None
        self.sent: list[pyfuse3.EntryAttributes | None] = [None] * len(entries)
        # small directories: attributes right away (a walk stats them, and a stub costs a
        # getattr round trip each); big ones: names first (ls -f, find)
        self.stat_wanted = len(entries) < NAMES_ONLY_FROM

    def position(self, name: bytes) -> int | None:
        if self._pos is None:  # built on the first lookup, not for a plain listing
            self._pos = {n: i for i, (n, _) in enumerate(self.entries)}
        return self._pos.get(name)

    def find(self, name: bytes) -> Node | None:
        i = self.position(name)
        return None if i is None else self.entries[i][1]


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
        self.drop(ino)
        if len(listing.entries) > self.max_entries:
            return
        self._data[ino] = listing
        self._total += len(listing.entries)
        while self._total > self.max_entries:
            _, gone = self._data.popitem(last=False)
            self._total -= len(gone.entries)

    def drop(self, ino: int) -> None:
        old = self._data.pop(ino, None)
        if old is not None:
            self._total -= len(old.entries)

    def __len__(self) -> int:
        return self._total


class _Handle:
    """An open file: its stream, and the whole content when it was small enough."""

    __slots__ = ("stream", "data")

    def __init__(self, stream, data: bytes | None = None):
        self.stream = stream
        self.data = data


class Operations(pyfuse3.Operations):
    """pyfuse3 operations over a Tree. Every table here is touched on the trio loop only;
    worker threads get nodes and return values."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False  # (with it the kernel would cache "no ACL", but forgets it on every readdirplus)

    def __init__(self, tree: Tree):
        super().__init__()
        self.tree = tree
        root = pyfuse3.ROOT_INODE
        self._next_ino = itertools.count(root + 1)
        self._ino_by_key: dict[tuple, int] = {tree.root.key: root}
        self._node: dict[int, Node] = {root: tree.root}
        self._lookups: dict[int, int] = {}  # the kernel's lookup count of each inode
        self._parent: dict[int, int] = {root: root}
        self._attrs: dict[int, pyfuse3.EntryAttributes] = {}  # complete, of immutable nodes
        self._stubs: dict[int, pyfuse3.EntryAttributes] = {}  # kind only, until attrs known
        self._links: dict[int, bytes] = {}  # symlink targets of immutable nodes
        self._handles: dict[int, object] = {}
        self._let_go: set[int] = set()  # inodes the kernel was asked to forget (see _shed)
        self.inode_limit = 1 << 62  # a mount sets INODE_LIMIT: shedding needs the kernel
        self._next_fh = itertools.count(1)
        self._limiter = trio.CapacityLimiter(WORKER_THREADS)
        self._listings = _Listings(LISTING_CACHE_ENTRIES)
        self._streams = LRU(STREAM_CACHE)
        self._xattr_names = LRU(XATTR_CACHE)
        self._xattr_values = LRU(XATTR_CACHE)
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.worker_calls = 0  # for tests: what went to a thread
        self.after_init: Callable[[], None] | None = None  # runs once the kernel has our INIT

    def init(self) -> None:
        if self.after_init is not None:  # INIT's reply is written when this returns
            async def later():
                self.after_init()
            trio.lowlevel.spawn_system_task(later)

    # -- helpers ------------------------------------------------------------------------

    async def _run(self, fn, *args):
        self.worker_calls += 1
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)

    def _inode(self, node: Node, parent: int) -> int:
        ino = self._ino_by_key.get(node.key)
        if ino is None:
            ino = stable_inode(node.key)
            if ino in self._node:  # held by another key: a number of its own
                ino = next(self._next_ino)
            self._ino_by_key[node.key] = ino
            self._node[ino] = node
            self._parent[ino] = parent
        return ino

    def _looked_up(self, ino: int) -> None:
        self._lookups[ino] = self._lookups.get(ino, 0) + 1

    def _get(self, ino: int) -> Node:
        try:
            return self._node[ino]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ENOENT) from None

    def _entry(self, node: Node, ino: int, a: Attr | None) -> pyfuse3.EntryAttributes:
        """The kernel's view of a node; without ``a`` only its kind, to be asked again."""
        e = self._attrs.get(ino)
        if e is not None:
            return e
        e = pyfuse3.EntryAttributes()
        e.st_ino = ino
        e.entry_timeout = node.cache_seconds
        e.st_uid = self.uid
        e.st_gid = self.gid
        e.st_blksize = 128 * 1024
        if a is None:
            e.attr_timeout = 0
            e.st_mode = MODES[node.kind]
            e.st_nlink = 1
            if node.immutable:
                self._stubs[ino] = e
            return e
        e.attr_timeout = node.cache_seconds
        e.st_mode = a.mode
        if a.uid is not None:   # a POSIX volume: owner, group and device as the guest had them
            e.st_uid, e.st_gid, e.st_rdev = a.uid, a.gid, a.rdev
        e.st_nlink = a.nlink
        e.st_size = a.size
        e.st_blocks = -(-(a.allocated if a.allocated is not None else a.size) // 512)
        e.st_atime_ns = _clamp_ns(a.atime_ns)
        e.st_mtime_ns = _clamp_ns(a.mtime_ns)
        e.st_ctime_ns = _clamp_ns(a.ctime_ns)
        if node.immutable:
            self._attrs[ino] = e
            self._stubs.pop(ino, None)
        return e

    def _reply_entry(self, node: Node, parent: int, a: Attr | None) -> pyfuse3.EntryAttributes:
        """A lookup's answer: the inode now counts one more kernel reference."""
        ino = self._inode(node, parent)
        self._looked_up(ino)
        if len(self._node) > self.inode_limit:
            self._shed()
        return self._entry(node, ino, a)

    # -- metadata -----------------------------------------------------------------------

    @_errors
    async def lookup(self, parent_inode, name, ctx=None):
        if name in (b".", b".."):
            ino = parent_inode if name == b"." else self._parent.get(parent_inode,
                                                                     pyfuse3.ROOT_INODE)
            e = await self.getattr(ino)
            self._looked_up(ino)
            return e
        parent = self._get(parent_inode)
        if parent.kind != "dir":
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        listing = self._listings.get(parent_inode)
        node = listing.find(name) if listing is not None else None
        if node is not None:
            return self._reply_entry(node, parent_inode, node.attr_if_known())

        def work():
            child = lookup_child(parent, os.fsdecode(name))
            child.kind  # noqa: B018  (an NTFS child may need its record to know it)
            return child, child.attr_if_known()

        node, a = await self._run(work)
        return self._reply_entry(node, parent_inode, a)

    @_errors
    async def getattr(self, inode, ctx=None):
        e = self._attrs.get(inode)
        if e is not None:
            return e
        node = self._get(inode)
        a = node.attr_if_known()
        if a is None:
            listing, i = self._place(node, inode)
            batch = []
            if listing is not None:
                listing.stat_wanted = True
                batch = self._unknown(listing, i + 1, i + ATTR_BATCH)
            a = await self._run(_attrs_of, node, batch)
        return self._entry(node, inode, a)

    def _place(self, node: Node, inode: int) -> tuple[_Listing | None, int]:
        """The cached listing ``node`` was listed in, and its position there."""
        listing = self._listings.get(self._parent.get(inode, 0))
        if listing is None:
            return None, 0
        i = listing.position(os.fsencode(node.name))
        return (None, 0) if i is None else (listing, i)

    def _unknown(self, listing: _Listing, start: int, end: int) -> list[Node]:
        """Listed children in ``[start, end)`` whose attributes are not known yet (``ls -l``
        asks for them next, in this order); for a child the kernel knows, its node."""
        out = []
        for _, n in listing.entries[start:end]:
            ino = self._ino_by_key.get(n.key)
            if ino is not None:
                if ino in self._attrs:
                    continue
                n = self._node[ino]
            if n.attr_if_known() is None:
                out.append(n)
        return out

    @_errors
    async def readlink(self, inode, ctx):
        target = self._links.get(inode)
        if target is None:
            node = self._get(inode)
            target = os.fsencode(await self._run(node.readlink))
            if node.immutable:
                self._links[inode] = target
        return target

    @_errors
    async def opendir(self, inode, ctx):
        node = self._get(inode)
        if node.kind != "dir":
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        listing = self._listings.get(inode) if node.immutable else None
        if listing is None:
            listing = await self._run(_list, node)
            if node.immutable:
                self._listings.put(inode, listing)
        fh = next(self._next_fh)
        self._handles[fh] = (inode, listing)
        return fh

    @_errors
    async def readdir(self, fh, start_id, token):
        parent, listing = self._handles[fh]
        entries = listing.entries
        stop = len(entries)
        if listing.stat_wanted and start_id < len(entries):
            # whoever lists this directory stats its children too (ls -l, du, a walk):
            # send complete attributes, one worker call per batch, not a getattr each;
            # the reply ends with the batch (the kernel's buffer holds ~800 entries: past
            # the batch it would get stubs, and one getattr round trip each)
            batch = self._unknown(listing, start_id, start_id + ATTR_BATCH)
            if batch:
                await self._run(_attrs_of, None, batch)
                stop = min(stop, start_id + ATTR_BATCH)
        by_key, attrs, stubs, lookups = self._ino_by_key, self._attrs, self._stubs, self._lookups
        nodes, sent, reply = self._node, listing.sent, pyfuse3.readdir_reply
        upgrade = listing.stat_wanted  # else no child's attributes were computed
        for i in range(start_id, stop):  # the hot loop of a warm listing
            e = sent[i]
            if e is not None and e.st_ino in nodes:  # sent before, its inode still known
                ino = e.st_ino
                if upgrade and not e.attr_timeout:  # a stub then: complete now?
                    full = attrs.get(ino)
                    if full is None:
                        a = nodes[ino].attr_if_known()
                        if a is not None:
                            full = self._entry(nodes[ino], ino, a)
                    if full is not None:
                        e = sent[i] = full
                if not reply(token, entries[i][0], e, i + 1):
                    return
                lookups[ino] = lookups.get(ino, 0) + 1
                continue
            name, node = entries[i]
            ino = by_key.get(node.key)
            known = ino is not None
            if not known:
                ino = self._inode(node, parent)
            e = attrs.get(ino)
            if e is None:
                node = self._node[ino]  # a hard link's first name may have been listed
                a = node.attr_if_known()
                e = stubs.get(ino) if a is None else None
                if e is None:
                    e = self._entry(node, ino, a)
            if not reply(token, name, e, i + 1):
                if not known:
                    self._drop(ino)
                break
            lookups[ino] = lookups.get(ino, 0) + 1
            sent[i] = e
        if len(nodes) > self.inode_limit:
            self._shed()

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
            if node.immutable:
                self._xattr_names.put(inode, names)
        return names

    @_errors
    async def getxattr(self, inode, name, ctx):
        # The kernel keeps no xattrs for FUSE; `ls -l` asks two per file and `cp -a` about
        # fourteen: answer what is known without a worker call.
        value = self._xattr_values.get((inode, name))
        if value is not None:
            return value
        names = self._xattr_names.get(inode)
        node = self._get(inode)
        if names is not None and name not in names or not node.may_have_xattr(os.fsdecode(name)):
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        try:
            value = await self._run(node.getxattr, os.fsdecode(name))
        except RpfsError as e:
            if e.errno == errno.ENOENT:
                raise pyfuse3.FUSEError(pyfuse3.ENOATTR) from None
            raise
        if len(value) <= XATTR_VALUE_MAX and node.immutable:
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
            if node.immutable:
                self._streams.put(inode, handle.stream)
        fh = next(self._next_fh)
        self._handles[fh] = handle
        return pyfuse3.FileInfo(fh=fh, keep_cache=node.immutable, direct_io=False)

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
        """The kernel let go of these references: an inode nobody holds is dropped."""
        for ino, n in inode_list:
            left = self._lookups.get(ino, 0) - n
            if left > 0:
                self._lookups[ino] = left
            else:
                self._drop(ino)

    def _drop(self, ino: int) -> None:
        if ino == pyfuse3.ROOT_INODE:
            return
        self._lookups.pop(ino, None)
        self._let_go.discard(ino)
        node = self._node.pop(ino, None)
        if node is not None and self._ino_by_key.get(node.key) == ino:
            del self._ino_by_key[node.key]
        self._parent.pop(ino, None)
        self._attrs.pop(ino, None)
        self._stubs.pop(ino, None)
        self._links.pop(ino, None)
        self._listings.drop(ino)
        self._streams.pop(ino)
        self._xattr_names.pop(ino)

    def _shed(self) -> None:
        """The kernel keeps every entry it was given until memory runs short, and each one
        holds a node here (a walk of a million files would hold a million). Past
        ``inode_limit``, ask it to drop the entries of the oldest files (directories stay:
        a walker inside one must keep seeing the same inode); it then forgets them, and
        ``forget`` drops them here. One looked up again gets its number back."""
        excess = len(self._node) - len(self._let_go) - self.inode_limit
        if excess <= 0:
            return
        excess += self.inode_limit // 10      # not again at the next entry
        for ino, node in self._node.items():
            if excess <= 0:
                break
            sent = self._attrs.get(ino) or self._stubs.get(ino)  # immutable nodes only
            if sent is None or stat.S_ISDIR(sent.st_mode) or ino in self._let_go \
                    or ino not in self._lookups:
                continue
            self._let_go.add(ino)
            excess -= 1
            pyfuse3.invalidate_entry_async(self._parent[ino], os.fsencode(node.name),
                                           ignore_enoent=True)

    def stats(self) -> dict:
        """How much is held (tests and benchmarks look at it)."""
        return {"inodes": len(self._node), "keys": len(self._ino_by_key),
                "attrs": len(self._attrs), "listed": len(self._listings),
                "streams": len(self._streams), "xattr_names": len(self._xattr_names)}

    # -- everything that would write ----------------------------------------------------

    async def _erofs(self, *args, **kw):
        raise pyfuse3.FUSEError(errno.EROFS)

    setattr = mknod = mkdir = unlink = rmdir = symlink = rename = link = _erofs
    write = create = setxattr = removexattr = _erofs


def _list(node: Node) -> _Listing:
    """A directory's children (one worker call: the index parsing is the cost). Kinds are
    settled here, so the loop never parses; attributes are not asked for."""
    entries = []
    for child in node.iterdir():
        child.kind  # noqa: B018  (an NTFS child the index cannot type reads its record)
        entries.append((os.fsencode(child.name), child))
    return _Listing(entries)


def _attrs_of(node: Node | None, siblings: list[Node]) -> Attr | None:
    """``node.attr()``, and the siblings' on the way (their errors are theirs to raise)."""
    a = node.attr() if node is not None else None
    for n in siblings:
        try:
            n.attr()
        except RpfsError:
            pass
    return a


def _open_small(node: Node) -> _Handle:
    stream = node.open()
    data = None
    if stream.size <= SMALL_FILE:
        try:
            data = stream.read(0, stream.size)
        except RpfsError:
            pass  # damaged data: open still succeeds, and read() answers EIO as before
    return _Handle(stream, data)


def stable_inode(key: tuple) -> int:
    """The inode number of a node key: the same for the same key for the mount's lifetime,
    in [2**32, 2**62) so it never meets the counter used on a collision or the root."""
    h = int.from_bytes(hashlib.blake2b(repr(key).encode("utf-8", "surrogatepass"),
                                       digest_size=8).digest(), "little")
    return (h & ((1 << 62) - 1)) | (1 << 32)


def _clamp_ns(ns: int) -> int:
    """NTFS times reach year 60056; the kernel's stop at int64 nanoseconds (year 2262)."""
    return max(-(1 << 63), min(ns, (1 << 63) - 1))


def _raise_readahead(real_mountpoint: str) -> None:
    """Let the kernel read ahead MAX_READ at a time (1 MiB requests: libfuse already allows
    256 pages per request), not 128 KiB: the kernel offers FUSE only its default read-ahead
    and sets it again from INIT's reply, after which root may raise it for this mount's
    bdi. Best effort: other users keep 128 KiB.

    The device number comes from /proc/self/mountinfo: a stat of the mount point would ask
    this very process, which does not serve requests yet."""
    escaped = real_mountpoint  # as mountinfo writes it
    for c in "\\ \t\n":
        escaped = escaped.replace(c, f"\\{ord(c):03o}")
    try:
        with open("/proc/self/mountinfo") as f:
            devs = [line.split()[2] for line in f if line.split()[4] == escaped]
        if devs:
            with open(f"/sys/class/bdi/{devs[-1]}/read_ahead_kb", "w") as f:
                f.write(str(MAX_READ // 1024))
    except (OSError, IndexError):
        pass


def mount(tree: Tree, mountpoint: str, *, allow_other: bool = False, debug: bool = False,
          ready: Callable[[], None] | None = None) -> None:
    """Serve ``tree`` at ``mountpoint`` until unmounted (blocks)."""
    ops = Operations(tree)
    limit = os.environ.get("RPFS_MOUNT_INODES") or INODE_LIMIT
    try:
        ops.inode_limit = max(1000, int(limit))
    except ValueError:
        raise UsageError(f"RPFS_MOUNT_INODES={limit!r} is not a number") from None
    options = set(pyfuse3.default_options)
    # No max_read option: pyfuse3 cannot set the matching conn->max_read, and without one
    # libfuse (3.14) already lets the kernel send MAX_READ (max_pages = 256).
    options |= {"fsname=rpfs", "subtype=rpfs", "ro", "default_permissions", "nosuid", "nodev"}
    if allow_other:
        options.add("allow_other")
    if debug:
        options.add("debug")
    real = os.path.realpath(mountpoint)  # not after init: that would ask this process
    ops.after_init = functools.partial(_raise_readahead, real)
    pyfuse3.init(ops, mountpoint, options)
    gc.set_threshold(*GC_THRESHOLDS)  # this process only serves the mount
    fuse_loop.install(lambda: ops._limiter.borrowed_tokens > 0)
    if ready:
        ready()
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)
