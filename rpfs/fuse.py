"""The FUSE front end: a thin adapter over the node contract (rpfs/node.py), read-only, on
rpfs's own binding of libfuse's low-level API (rpfs/_fusell.c, loop in rpfs/fuse_loop.py:
one thread reads requests and runs each handler, a coroutine, until it answers or awaits a
worker thread).

**Round trips.** OPEN is answered ENOSYS: the kernel then never sends OPEN, RELEASE or
FLUSH again, keeps every file's data in its page cache (its default in that mode), and
READ names the inode, so a ``cp -r`` costs one READ per small file and nothing else. OPENDIR
is still answered (a directory of the repository or ``.versions`` changes while its mtime
stays, and the kernel's no-opendir mode would cache every listing): an immutable
directory's reply asks the kernel to keep its listing (``cache_readdir``) once it carries
attributes (see below).

All errno mapping happens here (``_errors``): a typed rpfs error becomes its ``errno``
(EIO for damage, logged once) for that object only; anything unexpected is logged and
becomes EIO. ``handle`` answers every request exactly once.

**In C.** Some requests never reach Python (rpfs/_fusell.c): GETATTR of an inode whose
complete attributes were sent (``_attrs``, the session's ``AttrTable``: immutable nodes
only, dropped on forget, so a mutable node's timeout is never overstayed), GETXATTR of a
name the inode's xattr class rules out (``Node.xattr_namespace``: ``ls -l`` asks
``security.selinux`` and ``system.posix_acl_access`` of every file, which no NTFS file can
have), LISTXATTR of an inode that can have none, OPEN (ENOSYS). A numbered listing's
READDIRPLUS reply is built in one C call from its arrays (``fill_numbered``).

**Fast path.** Whatever else is already known is answered on the loop thread, with no thread
hand-off: a cached listing (names and the kinds the NTFS index gives), a lookup of a listed
name, attributes a node has already computed (``Node.attr_if_known``), a cached xattr name
list or small value, an xattr name the node can never have (``Node.may_have_xattr``: ``ls
-l`` asks ``security.selinux`` and ``system.posix_acl_access`` of every file), an opened
stream, and the READ of a plain small file whose bytes the store holds decoded
(``_plain_cached``: a ``cp -r`` sends one READ per file, most of them for frames an earlier
file's READ decoded; where the file lies below its volume comes from ``streams.stream.Spans``,
which follows the layers once per MiB of the volume). Only real parsing and I/O go to worker
threads (``fuse_loop.in_worker``, at most ``WORKER_THREADS``), so one slow chunk stalls no
other reader.

**Listings without MFT records.** A big directory (``NAMES_ONLY_FROM`` entries or more)
is listed with readdirplus from its index alone: a child whose attributes are not known
yet is sent with its kind and ``attr_timeout=0``, so a names-only ``ls -f`` or ``find``
never reads its children's MFT records. Past the first reply, while no child was stat'ed,
its entries go with node id 0 (name, inode number and kind; the kernel makes no inode for
them), so the kernel's work for a names-only listing is that of a plain READDIR. A child whose
node is not made yet is sent from the listing's arrays alone (``Listing.name``, ``kind``,
``number``: its numbered inode), so no node is made per entry either; a getattr of it
finds its node in the listing that sent it (``_listed``, made then, no I/O). The first
``stat`` still asks ``getattr`` and shows $STANDARD_INFORMATION's times as ntfs-3g does.
That ``getattr`` computes the attributes of the next ``ATTR_BATCH`` listed siblings in the
same worker call (``ls -l`` stats in listing order) and marks the listing: from then on
readdirplus computes the attributes of what it sends (one worker call per batch) and
sends them with the node's cache time, so ``ls -l`` and walks that stat cost one request
per entry less (a round trip through the kernel costs more than parsing an MFT record).
Smaller directories are listed with their attributes from the start, the first batch
computed by the worker call that lists them (OPENDIR). A batch asks the listing for its
children's attributes (``Listing.stat``: NTFS gives a plain file's or directory's from its
record summary, no node made) and makes a node only for a child it does not cover.

**Bounded memory.** An NTFS entry's inode number is its volume's slot and MFT record
(``Node.number``): only the ``live_nodes`` most recently used keep their node, any other is
made again from its number (``Node.by_number``) when the kernel asks, so nothing is kept per
inode the kernel holds (a walk of a million entries holds the kernel's million inodes and
a bounded number of objects here). Every other node is held: its inode number is a hash of
its key (``stable_inode``), so a file the kernel let go of comes back under the same number
(``cp -r`` compares a file's inode before and after opening it); two keys on one number (a
62-bit hash; practically never) give the second a number of its own from a counter below
2**32. The kernel's lookup count of each held inode is kept (lookup replies and
readdirplus entries); when ``forget`` brings it to zero the inode, its node and everything
cached for it are dropped, and past ``INODE_LIMIT`` held inodes the kernel is asked to let
go of the oldest files (``_shed``). Listings, attributes, streams and xattrs are bounded
LRUs.

Immutable nodes (``Node.immutable``: everything inside a recovery point) are kept by the
kernel for ``Node.cache_seconds`` with ``keep_cache``; the repository root, VM directories
and ``latest`` say they are not.
"""

from __future__ import annotations

import errno
import functools
import gc
import itertools
import os
import queue
import stat
import threading
from collections.abc import Callable

from rpfs import _fusell as ll

try:  # hashlib's own blake2b: importing hashlib also loads OpenSSL (~2.5 ms of every mount)
    from _blake2 import blake2b
except ImportError:  # a Python built without its own blake2
    from hashlib import blake2b
from rpfs import fuse_loop
from streams.errors import RpfsError, UsageError
from streams.lru import LRU
from rpfs.node import IMMUTABLE_CACHE_SECONDS, MODES, Attr, BrokenNode, Node, report_once
from rpfs.listing import NUMBERED_KINDS, Listing
from rpfs.tree import Tree, lookup_child
from streams.stream import Spans
from rpfs.log import get_logger

BYTES, VOLUME = 1, 2  # ntfs_reader.plain's statuses (that module loads with the NTFS reader)

log = get_logger(__name__)

WORKER_THREADS = 16
LISTING_CACHE_ENTRIES = 60_000  # entries of cached listings (NTFS: ~90 B each, + nodes not let go)
LIVE_NODES = 16_384  # node objects of numbered inodes kept (env RPFS_MOUNT_INODES; ~0.5 KB
                     # each for NTFS files): a child of a cached listing is made again from it
INODE_LIMIT = 50_000  # held (unnumbered) inodes before the kernel is asked to let go of the
                      # oldest files: entries of POSIX volumes (numbered NTFS entries need not)
ATTR_CACHE = 65_536  # complete attributes as sent, by inode (the C table: 120 B each)
NUMBERED = 1 << 63  # inode numbers with this bit are (volume slot << SLOT_SHIFT) | number
SLOT_SHIFT = 48  # NTFS record numbers are 48 bits
MAX_SLOTS = 1 << (63 - SLOT_SHIFT)
RECENT_BY_NUMBER = 8  # directories searched for a child sent by number (_listed)
ATTR_BATCH = 512  # listed siblings whose attributes one getattr miss computes
NAMES_ONLY_FROM = 2048  # a directory this big is listed without attributes until one is asked
STREAM_CACHE = 65536  # opened streams of immutable files, by inode (~600 B each)
XATTR_CACHE = 16384  # xattr name lists (by inode) and values (by inode and name)
XATTR_VALUE_MAX = 4096  # larger values (alternate data streams) are read each time
MAX_READ = 1 << 20  # largest read request the kernel may send (1 MiB; libfuse's limit too)
PLAIN_FILE_MAX = 1 << 20  # files up to this size are read by where they lie (_plain_read_reply)
PLAIN_LISTING_MAX = 4096  # ... in directories of up to this many entries (one C call each)
# A listing allocates a few objects per entry while the caches hold hundreds of thousands:
# with Python's default (700, 10, 10) the cyclic collector ran so often that it took more
# than half of listing a 50,000-entry directory (4.2 s -> 2.1 s with these). Parsed NTFS
# objects are acyclic and freed by reference counting; cycles still get collected.
GC_THRESHOLDS = (100_000, 50, 100)
ROOT_INODE = 1
ENOATTR = errno.ENODATA  # what getxattr answers for a name a file does not have
EntryAttributes = ll.EntryAttributes
KIND_MODES = tuple(MODES.get(k, 0) for k in NUMBERED_KINDS)  # by NumberedListing.kinds code
FILE_KIND = NUMBERED_KINDS.index("file")


class FUSEError(Exception):
    """Answer the request with this errno."""

    def __init__(self, errno_: int):
        super().__init__(errno_)
        self.errno = errno_


def _errors(fn: Callable) -> Callable:
    """Only FUSEError may leave a handler: map our errors, log bugs as EIO."""

    @functools.wraps(fn)
    async def wrapper(*args, **kw):
        try:
            return await fn(*args, **kw)
        except FUSEError:
            raise
        except RpfsError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ENODATA, errno.E2BIG):
                report_once(e)
            raise FUSEError(e.errno or errno.EIO) from None
        except OSError as e:
            log.warning("%s: %s", fn.__name__, e)
            raise FUSEError(e.errno or errno.EIO) from None
        except Exception as e:
            _bug_once(fn.__name__, e)
            raise FUSEError(errno.EIO) from None

    return wrapper


_bugs = LRU(1024)


def _bug_once(where: str, e: Exception) -> None:
    """Log an unexpected error with its traceback the first time it is seen (a broken
    object is used again and again: once is enough to find the bug)."""
    key = (where, type(e).__name__, str(e))
    if _bugs.get(key) is None:
        _bugs.put(key, True)
        log.error("unexpected error in %s", where, exc_info=e)


class _Listing:
    """One directory's children in listing order (``Node.listing()``: ``entries[i]`` is
    (name bytes, node), the node made on first ask); ``sent``: what readdirplus last sent
    for each child of a listing that is not numbered (a warm listing reuses it while the
    inode is known; a numbered one is sent from its arrays and ``_attrs`` alone).
    ``stat_wanted``: someone asked a child's attributes, so readdirplus computes them.
    ``linked``: of a numbered listing, 1 for each child sent linked with complete
    attributes (a re-listing sends it unlinked: the kernel has it)."""

    __slots__ = ("entries", "stat_wanted", "sent", "linked", "_by_number", "plain", "early")

    def __init__(self, entries: Listing):
        self.entries = entries
        self.sent: list[EntryAttributes | None] | None = None  # made by the first readdir
        # small directories: attributes right away (a walk stats them, and a stub costs a
        # getattr round trip each); big ones: names first (ls -f, find)
        self.stat_wanted = len(entries) < NAMES_ONLY_FROM
        self.linked: bytearray | None = None   # made by the first numbered readdir
        self._by_number: dict[int, int] | None = None
        # ``Node.plain_files`` of the children, (PlainFiles, volume stream, its Spans),
        # made by the first READ of a child (in a worker); False: none can be read that way
        self.plain = None
        # a small numbered directory's first children's attributes, computed by the worker
        # call that listed it (``_list``): {i: Attr}, taken by the first readdir
        self.early: dict | None = None

    def sent_list(self) -> list[EntryAttributes | None]:
        if self.sent is None:
            self.sent = [None] * len(self.entries)
        return self.sent

    def position(self, name: bytes) -> int | None:
        return self.entries.position(name)   # its dict is built on the first lookup

    def index_of(self, number: int) -> int | None:
        """Where the child numbered ``number`` is listed (a dict built on the first ask:
        a getattr of a child sent by its number alone)."""
        if self._by_number is None:
            entries = self.entries
            n = len(entries)
            self._by_number = dict(zip(map(entries.number, range(n)), range(n)))
        return self._by_number.get(number)

    def find(self, name: bytes) -> Node | None:
        i = self.position(name)
        return None if i is None else self.entries.node(i)


class Operations:
    """The file system's operations over a Tree. Every table here is touched on the loop thread only;
    worker threads get nodes and return values.

    Two kinds of inode. A *numbered* one (an NTFS entry, ``Node.number``: ``NUMBERED |
    slot << SLOT_SHIFT | record``, the slot naming its volume) is made again from its number
    (``Node.by_number``, in a worker) whenever its node is not among the ``live_nodes``
    most recently used: nothing is kept per inode the kernel holds, and ``forget`` only
    lets go of caches. A *held* one (the repository, VMs, disks, volume roots, alternate
    streams, POSIX entries) keeps its node until the kernel's lookup count of it, kept
    here, drops to zero."""

    def __init__(self, tree: Tree, live_nodes: int = LIVE_NODES):
        self.tree = tree
        root = ROOT_INODE
        self._next_ino = itertools.count(root + 1)
        self._ino_by_key: dict[tuple, int] = {tree.root.key: root}  # held inodes only
        self._node: dict[int, Node] = {root: tree.root}  # held inodes
        self._lookups: dict[int, int] = {}  # the kernel's lookup count of each held inode
        self._parent: dict[int, int] = {root: root}  # of held inodes
        self._slots: dict[tuple, int] = {}  # volume key -> slot of its numbered inodes
        self._anchors: list[Node] = []  # slot -> a node of that volume (rebuilds the others)
        self._volumes: list[tuple] = []  # slot -> that volume's key (a READ looks it up)
        self._live = LRU(live_nodes)  # numbered inode -> (node, parent inode or 0)
        self._numbered_refs = 0  # the kernel's references to numbered inodes, in all
        # directories whose last readdir sent children by number alone (the last few): a
        # getattr of such a child finds its node, and its parent, in their listings
        self._sent_by_number: list[int] = []
        # complete attributes of immutable nodes, as sent: the session answers GETATTR of
        # them, and GETXATTR of names their xattr class rules out, without calling Python
        self._attrs = ll.AttrTable(ATTR_CACHE)
        self._xclasses: dict[tuple, int] = {}  # Node.xattr_namespace -> its class in _attrs
        self._links = LRU(XATTR_CACHE)  # symlink targets of immutable nodes
        self._handles: dict[int, tuple[int, _Listing]] = {}  # open directories
        self._let_go: set[int] = set()  # held inodes the kernel was asked to forget (_shed)
        self.inode_limit = 1 << 62  # a mount sets INODE_LIMIT: shedding needs the kernel
        self._next_fh = itertools.count(1)
        # listings of immutable directories by inode, bounded by the entries they hold in all
        self._listings = LRU(LISTING_CACHE_ENTRIES, weight=lambda listing: len(listing.entries))
        self._streams = LRU(STREAM_CACHE)
        self._xattr_names = LRU(XATTR_CACHE)
        self._xattr_values = LRU(XATTR_CACHE)
        self.uid = os.getuid()
        self.gid = os.getgid()
        self._stub_entry = self._stub(0, "file")  # fill_numbered's template for a stub
        self.worker_calls = 0  # for tests: what went to a thread
        self.loop_reads = 0  # READs answered on the loop from memory (_plain_cached)
        # volume key -> streams.stream.Spans of that volume's stream (plain READs)
        self._spans: dict[tuple, Spans] = {}
        self.after_init: Callable[[], None] | None = None  # runs once the kernel has our INIT
        # asks the kernel to drop an entry (_shed): the mount sets it; a call may block
        self.invalidate: Callable[[int, bytes], None] = lambda parent, name: None

    # -- requests -----------------------------------------------------------------------

    async def handle(self, r: tuple) -> None:
        """Answer request ``r`` (a tuple from ``Session.process``) exactly once: a reply,
        or its errno; anything unexpected, in the handler or the reply, is EIO."""
        op, req = r[0], r[1]
        # (op, req, inode, size, offset); a file with a stream of its own (not a plain small
        # file) is read through it: ``read`` takes it at once, without looking for a place
        if op == ll.READ and r[2] & NUMBERED and req and r[2] not in self._streams:
            data = self._read_from_memory(r[2], r[4], r[3])
            if data is not None:
                try:
                    ll.reply_buffers(req, data)
                except Exception as e:  # refused: nothing was sent yet
                    _bug_once("reply to a READ from memory", e)
                    ll.reply_err(req, errno.EIO)
                return
        try:
            reply, *args = await self._answer(op, r)
        except FUSEError as e:
            reply, args = ll.reply_err, [e.errno]
        except fuse_loop.Cancelled:   # the mount is ending: answer, then let the loop end
            if req:
                ll.reply_err(req, errno.EINTR)
            raise
        except Exception as e:
            _bug_once(f"request {op}", e)
            reply, args = ll.reply_err, [errno.EIO]
        if reply is None or not req:
            return  # FORGET and INIT: answered already
        try:
            reply(req, *args)
        except Exception as e:  # the reply's arguments were refused: nothing was sent yet
            _bug_once(f"reply to request {op}", e)
            if req:   # still unanswered
                ll.reply_err(req, errno.EIO)

    async def _answer(self, op: int, r: tuple) -> tuple:
        """(reply function, its arguments after the request) for request ``r``."""
        if op == ll.GETATTR:
            return ll.reply_attr, await self.getattr(r[2])
        if op == ll.LOOKUP:
            return ll.reply_entry, await self.lookup(r[2], r[3])
        if op == ll.READDIR:  # (op, req, inode, size, offset, fh)
            buf = ll.DirBuffer(r[1], r[3])
            await self.readdir(r[5], r[4], buf)
            return ll.reply_dir, buf
        if op == ll.READ:  # (op, req, inode, size, offset): answered by the worker that reads
            await self.read(r[2], r[4], r[3], r[1])   # (handle answered one in memory)
            return (None,)
        if op == ll.GETXATTR:  # (op, req, inode, name, size)
            return _sized(await self.getxattr(r[2], r[3]), r[4])
        if op == ll.LISTXATTR:  # (op, req, inode, size)
            names = await self.listxattr(r[2])
            return _sized(b"".join(n + b"\0" for n in names), r[3])
        if op == ll.OPENDIR:
            return ll.reply_open, *await self.opendir(r[2])
        if op == ll.RELEASEDIR:  # (op, req, inode, fh)
            await self.releasedir(r[3])
            return ll.reply_err, 0
        if op == ll.READLINK:
            return ll.reply_readlink, await self.readlink(r[2])
        if op == ll.STATFS:
            return ll.reply_statfs, await self.statfs()
        if op == ll.FORGET:  # (op, 0, 0, [(inode, count), ...]): already answered
            await self.forget(r[3])
            return (None,)
        if op == ll.INIT:
            self.init()
            return (None,)
        raise FUSEError(errno.ENOSYS)

    def init(self) -> None:
        """INIT's reply is written: the mount is live."""
        if self.after_init is not None:
            self.after_init()

    # -- inodes -------------------------------------------------------------------------

    async def _run(self, fn, *args):
        self.worker_calls += 1
        return await fuse_loop.in_worker(fn, *args)

    def _inode(self, node: Node, parent: int) -> int:
        """The inode number of ``node`` (listed or looked up in ``parent``), registered."""
        num = node.number
        if num is not None and 0 <= num < 1 << SLOT_SHIFT:
            slot = self._slots.get(node.key[:-1])
            if slot is None and len(self._anchors) < MAX_SLOTS:
                slot = self._slots[node.key[:-1]] = len(self._anchors)
                self._anchors.append(node)
                self._volumes.append(node.key[:-1])
                self._attrs.set_volume_class(slot, self._xclass(node))
            if slot is not None:  # the node named last is kept (one LRU step, not two)
                ino = NUMBERED | slot << SLOT_SHIFT | num
                self._live.put(ino, (node, parent))
                return ino
        ino = self._ino_by_key.get(node.key)
        if ino is None:
            ino = stable_inode(node.key)
            if ino in self._node:  # held by another key: a number of its own
                ino = next(self._next_ino)
            self._ino_by_key[node.key] = ino
            self._node[ino] = node
            self._parent[ino] = parent
        return ino

    def _known(self, ino: int) -> Node | None:
        """The node of ``ino`` if it is in memory (no I/O)."""
        if ino & NUMBERED:
            v = self._live.get(ino)
            return None if v is None else v[0]
        return self._node.get(ino)

    async def _get(self, ino: int) -> Node:
        """The node of ``ino``; a numbered one not in memory is made again in a worker."""
        if ino & NUMBERED:
            v = self._live.get(ino)
            if v is not None:
                return v[0]
            slot, num = (ino ^ NUMBERED) >> SLOT_SHIFT, ino & ((1 << SLOT_SHIFT) - 1)
            if slot >= len(self._anchors):
                raise FUSEError(errno.ENOENT)
            node = self._listed(ino, slot, num)
            if node is not None:
                return node
            node = await self._run(_rebuild, self._anchors[slot], num)
            self._live.put(ino, (node, 0))
            return node
        try:
            return self._node[ino]
        except KeyError:
            raise FUSEError(errno.ENOENT) from None

    def _listed(self, ino: int, slot: int, num: int) -> Node | None:
        """The node of numbered ``ino`` from a listing that sent it by number (readdir
        makes no node): made there (no I/O), kept by that listing, with its parent."""
        volume = self._anchors[slot].key[:-1]
        for parent in reversed(self._sent_by_number):
            listing = self._listings.get(parent)
            if listing is None or listing.entries.volume_key != volume:
                continue
            i = listing.index_of(num)
            if i is not None:
                node = listing.entries.node(i)
                self._live.put(ino, (node, parent))
                return node
        return None

    def _read_from_memory(self, ino: int, off: int, size: int) -> list | None:
        """A READ of numbered ``ino`` answered from memory on the loop, with no coroutine
        of its own and no worker hand-off: a plain small file whose bytes the store holds
        decoded (``_plain_cached``: most of a ``cp -r`` once the chunk cache has grown);
        None: ``read`` does it. Nothing here reads, parses or raises a typed error."""
        try:
            where = self._child_place(ino)
            data = None if where is None else _plain_cached(*where, off, size)
        except Exception as e:   # a bug: the general path answers (and reports) it
            _bug_once("READ from memory", e)
            return None
        if data is not None:
            self.loop_reads += 1
        return data

    def _child_place(self, ino: int) -> tuple | None:
        """(listing, index, a node of its volume) of a numbered ``ino`` listed in a directory
        whose children were sent by number (cp -r reads them next), if a file there."""
        slot, num = (ino ^ NUMBERED) >> SLOT_SHIFT, ino & ((1 << SLOT_SHIFT) - 1)
        if slot >= len(self._anchors):
            return None
        volume = self._volumes[slot]
        for parent in reversed(self._sent_by_number):
            listing = self._listings.get(parent)
            if listing is None or listing.entries.volume_key != volume or listing.plain is False:
                continue
            by_number = listing._by_number   # (index_of, without its call once built)
            i = listing.index_of(num) if by_number is None else by_number.get(num)
            if i is not None:   # a numbered listing: kinds are NUMBERED_KINDS codes
                entries = listing.entries
                return (listing, i, self._anchors[slot]) if entries.kinds[i] == FILE_KIND else None
        return None

    def _parent_of(self, ino: int) -> int:
        """The directory ``ino`` was listed or looked up in (0: not known)."""
        if ino & NUMBERED:
            v = self._live.get(ino)
            return 0 if v is None else v[1]
        return self._parent.get(ino, 0)

    def _looked_up(self, ino: int) -> None:
        if ino & NUMBERED:
            self._numbered_refs += 1
        else:
            self._lookups[ino] = self._lookups.get(ino, 0) + 1

    def _entry(self, node: Node, ino: int, a: Attr | None) -> EntryAttributes:
        e = self._attrs.get(ino)
        return e if e is not None else self._new_entry(node, ino, a)

    def _new_entry(self, node: Node, ino: int, a: Attr | None) -> EntryAttributes:
        """The kernel's view of a node; without ``a`` only its kind, to be asked again."""
        e = EntryAttributes()
        e.st_ino = ino
        # a damaged file is listed, and looked up again (and fails) whenever it is used
        e.entry_timeout = 0 if type(node) is BrokenNode else node.cache_seconds
        e.st_uid = self.uid
        e.st_gid = self.gid
        e.st_blksize = 128 * 1024
        if a is None:
            e.attr_timeout = 0
            e.st_mode = MODES[node.kind]
            e.st_nlink = 1
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
            self._attrs.put(e, self._xclass(node))
        return e

    def _xclass(self, node: Node) -> int:
        """The xattr class (in ``_attrs``) of nodes like ``node``; 0: Python decides."""
        ns = node.xattr_namespace
        if ns is None:
            return 0
        c = self._xclasses.get(ns)
        if c is None:
            prefixes, names = ns
            c = self._xclasses[ns] = self._attrs.xattr_class(
                [os.fsencode(p) for p in prefixes], sorted(os.fsencode(n) for n in names))
        return c

    def _stub(self, ino: int, kind: str) -> EntryAttributes:
        """What ``_new_entry`` gives a listed NTFS child without attributes, from the
        listing's kind alone (no node): asked again by getattr (``attr_timeout`` 0)."""
        e = EntryAttributes()
        e.st_ino = ino
        e.entry_timeout = IMMUTABLE_CACHE_SECONDS
        e.st_uid = self.uid
        e.st_gid = self.gid
        e.st_blksize = 128 * 1024
        e.attr_timeout = 0
        e.st_mode = MODES[kind]
        e.st_nlink = 1
        return e

    def _reply_entry(self, node: Node, parent: int, a: Attr | None) -> EntryAttributes:
        """A lookup's answer: the inode now counts one more kernel reference. A damaged
        file fails here: no OPEN comes where it could fail (and an empty one gets no READ)."""
        if node.kind != "dir" and type(node) is BrokenNode:
            raise node.error
        ino = self._inode(node, parent)
        self._looked_up(ino)
        if len(self._node) > self.inode_limit:
            self._shed()
        return self._entry(node, ino, a)

    # -- metadata -----------------------------------------------------------------------

    @_errors
    async def lookup(self, parent_inode, name, ctx=None):
        if name in (b".", b".."):
            ino = parent_inode if name == b"." else (self._parent_of(parent_inode)
                                                     or ROOT_INODE)
            e = await self.getattr(ino)
            self._looked_up(ino)
            return e
        listing = self._listings.get(parent_inode)
        node = listing.find(name) if listing is not None else None
        if node is not None:
            return self._reply_entry(node, parent_inode, node.attr_if_known())
        parent = await self._get(parent_inode)
        if parent.kind != "dir":
            raise FUSEError(errno.ENOTDIR)

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
        node = await self._get(inode)
        a = node.attr_if_known()
        if a is None:
            listing, i = self._place(node, inode)
            if listing is not None and inode & NUMBERED and listing.entries.volume_key is not None:
                listing.stat_wanted = True
                wanted = self._missing_numbered(listing, i + 1, i + ATTR_BATCH)
                a, got = await self._run(_attrs_listed, node, listing.entries,
                                         [j for _, j in wanted])
                self._keep_listed(listing, wanted, got)
                return self._entry(node, inode, a)
            batch = []
            if listing is not None:
                listing.stat_wanted = True
                batch = self._missing(listing, i + 1, i + ATTR_BATCH)
            # the siblings' attributes go to _attrs too: their getattrs (ls -l asks them
            # next) are answered by the session without calling Python
            a = await self._run(_attrs_of, node, [n for _, n in batch
                                                  if n.attr_if_known() is None])
            self._keep_complete(batch)
        return self._entry(node, inode, a)

    def _place(self, node: Node, inode: int) -> tuple[_Listing | None, int]:
        """The cached listing ``node`` was listed in, and its position there."""
        listing = self._listings.get(self._parent_of(inode))
        if listing is None:
            return None, 0
        i = listing.position(os.fsencode(node.name))
        return (None, 0) if i is None else (listing, i)

    def _missing(self, listing: _Listing, start: int, end: int) -> list[tuple[int | None, Node]]:
        """Listed children in ``[start, end)`` whose complete attributes ``_attrs`` does not
        hold (``ls -l`` asks for them next, in this order): (inode, node), the inode None
        for a child of a listing that is not numbered and was never sent."""
        out = []
        entries, attrs = listing.entries, self._attrs
        end = min(end, len(entries))
        slot = self._slots.get(entries.volume_key) if entries.volume_key is not None else None
        if slot is not None:
            base, numbers = NUMBERED | slot << SLOT_SHIFT, entries.arrays.numbers
            for j in range(start, end):
                ino = base | numbers[j]
                if ino not in attrs:
                    out.append((ino, entries.node(j)))
            return out
        sent = listing.sent_list()
        for j in range(start, end):
            e = sent[j]
            if e is None:
                n = entries.node(j)
            elif not e.attr_timeout and e.st_ino not in attrs:
                n = self._known(e.st_ino) or entries.node(j)
            else:
                continue
            if n.attr_opens and n.attr_if_known() is None:
                continue   # a volume: its own stat opens it
            out.append((None if e is None else e.st_ino, n))
        return out

    def _missing_numbered(self, listing: _Listing, start: int, end: int) -> list[tuple[int, int]]:
        """(inode, index) of a numbered listing's children in ``[start, end)`` whose complete
        attributes ``_attrs`` does not hold (no node made)."""
        entries = listing.entries
        slot = self._slots.get(entries.volume_key)
        if slot is None:
            return []
        base, numbers, attrs = NUMBERED | slot << SLOT_SHIFT, entries.arrays.numbers, self._attrs
        out = []
        for j in range(start, min(end, len(entries))):
            ino = base | numbers[j]
            if ino not in attrs:
                out.append((ino, j))
        return out

    async def _complete_numbered(self, listing: _Listing, wanted: list[tuple[int, int]]) -> None:
        """``_complete`` for a numbered listing: the attributes of ``wanted``
        (``_missing_numbered``) in one worker call, unless the call that listed the
        directory computed them (``_Listing.early``)."""
        got, listing.early = listing.early, None
        todo = [j for _, j in wanted] if got is None else [j for _, j in wanted if j not in got]
        if todo:
            more = await self._run(_listed_attrs, listing.entries, todo)
            got = more if got is None else {**got, **more}
        self._keep_listed(listing, wanted, got or {})

    def _keep_listed(self, listing: _Listing, wanted: list[tuple[int, int]], got: dict) -> None:
        """Put the attributes ``got`` ({index: Attr}) of ``wanted``'s inodes in ``_attrs``;
        every numbered node of a volume is sent like its anchor (immutable, same cache
        time and xattr class), so no node is needed for it."""
        entries = listing.entries
        anchor = self._anchors[(wanted[0][0] ^ NUMBERED) >> SLOT_SHIFT] if wanted else None
        for ino, j in wanted:
            a = got.get(j)
            if a is not None:
                node = entries.made(j)
                self._new_entry(anchor if node is None else node, ino, a)

    async def _complete(self, missing: list[tuple[int | None, Node]]) -> bool:
        """Compute the attributes of ``missing`` (``_missing``) not known yet, in one
        worker call, and keep them in ``_attrs``; whether anything had to be computed."""
        unknown = [n for _, n in missing if n.attr_if_known() is None]
        if unknown:
            await self._run(_attrs_of, None, unknown)
        self._keep_complete(missing)
        return bool(unknown)

    def _keep_complete(self, batch: list[tuple[int | None, Node]]) -> None:
        """Put the complete attributes of ``batch``'s known inodes in ``_attrs``."""
        held = self._node
        for ino, node in batch:
            if ino is not None and (ino & NUMBERED or ino in held) and node.immutable:
                a = node.attr_if_known()
                if a is not None:
                    self._new_entry(node, ino, a)

    @_errors
    async def readlink(self, inode, ctx=None):
        target = self._links.get(inode)
        if target is None:
            node = await self._get(inode)
            target = os.fsencode(await self._run(node.readlink))
            if node.immutable:
                self._links.put(inode, target)
        return target

    @_errors
    async def opendir(self, inode, ctx=None) -> tuple[int, bool]:
        """(handle, whether the kernel may keep the listing): kept for an immutable
        directory once its listing sends attributes (a big one listed by names alone is
        listed again, with attributes, when someone stats a child)."""
        listing = self._listings.get(inode)  # immutable directories only
        keep = listing is not None
        if listing is None:
            node = await self._get(inode)
            if node.kind != "dir":
                raise FUSEError(errno.ENOTDIR)
            listing = await self._run(_list, node)
            keep = node.immutable
            if keep:
                self._listings.put(inode, listing)
        fh = next(self._next_fh)
        self._handles[fh] = (inode, listing)
        return fh, keep and listing.stat_wanted

    @_errors
    async def readdir(self, fh, start_id, token):
        parent, listing = self._handles[fh]
        entries = listing.entries
        slot = self._slot_of(entries, parent)
        if slot is not None:
            return await self._readdir_numbered(parent, listing, slot, start_id, token)
        stop = len(entries)
        if listing.stat_wanted and start_id < len(entries):
            # whoever lists this directory stats its children too (ls -l, du, a walk):
            # send complete attributes, one worker call per batch, not a getattr each;
            # the reply ends with the batch (past it the kernel would get stubs, and one
            # getattr round trip each)
            if await self._complete(self._missing(listing, start_id, start_id + ATTR_BATCH)):
                stop = min(stop, start_id + ATTR_BATCH)
        attrs, held, lookups = self._attrs, self._node, self._lookups
        sent, reply = listing.sent_list(), ll.readdir_reply
        upgrade = listing.stat_wanted  # else no child's attributes were computed
        numbered = 0
        for i in range(start_id, stop):  # the hot loop of a warm listing
            e = sent[i]
            if e is not None and (e.st_ino & NUMBERED or e.st_ino in held):
                ino = e.st_ino  # sent before, its inode still known
                if upgrade and not e.attr_timeout:  # a stub then: complete now?
                    full = attrs.get(ino)
                    if full is None:
                        node = self._known(ino) or entries.node(i)
                        a = node.attr_if_known()
                        if a is not None:
                            full = self._new_entry(node, ino, a)
                    if full is not None:
                        e = sent[i] = full
                if not reply(token, entries.name(i), e, i + 1):
                    break
            else:
                node = entries.node(i)
                ino = self._inode(node, parent)
                e = attrs.get(ino)
                if e is None:
                    if not ino & NUMBERED:
                        node = held[ino]  # a hard link's first name may be known
                    e = self._new_entry(node, ino, node.attr_if_known())
                if not reply(token, entries.name(i), e, i + 1):
                    if not ino & NUMBERED and ino not in lookups:
                        self._drop(ino)
                    break
                sent[i] = e
                if e.attr_timeout and ino & NUMBERED:
                    entries.let_go(i)  # sent complete: made again (no I/O) if ever asked
            if ino & NUMBERED:
                numbered += 1
            else:
                lookups[ino] = lookups.get(ino, 0) + 1
        self._numbered_refs += numbered
        if len(held) > self.inode_limit:
            self._shed()

    def _slot_of(self, entries: Listing, parent: int) -> int | None:
        """The slot of a numbered listing's volume (made with its first child's node if it
        has none yet); None: not a numbered listing, or no slot left."""
        key = entries.volume_key
        if key is None:
            return None
        slot = self._slots.get(key)
        if slot is None and len(entries) and len(self._anchors) < MAX_SLOTS:
            self._inode(entries.node(0), parent)
            slot = self._slots.get(key)
        return slot

    async def _readdir_numbered(self, parent: int, listing: _Listing, slot: int, start: int,
                                buf) -> None:
        """A numbered listing's children from its arrays, in one C call (``fill_numbered``):
        each by its number alone (no node made), with its complete attributes where
        ``_attrs`` has them, else its kind (``attr_timeout`` 0: getattr asks for them)."""
        entries = listing.entries
        stop = len(entries)
        base = NUMBERED | slot << SLOT_SHIFT
        if listing.stat_wanted and start < stop:
            # as in readdir: complete attributes, one worker call per batch (none for the
            # first batch of a small directory: ``_list`` computed it)
            wanted = self._missing_numbered(listing, start, start + ATTR_BATCH)
            if wanted:
                await self._complete_numbered(listing, wanted)
                stop = min(stop, start + ATTR_BATCH)
        a = entries.arrays
        # a names-only listing past its first reply: nobody stat'ed a child yet (else
        # stat_wanted), so the names go unlinked (node id 0) and the kernel makes no inode
        # each (a cold `ls -f` of 50,000 entries: 0.11 s of the lister's system time); the
        # first reply stays linked, so a lister that stats as it reads (ls -l) turns
        # stat_wanted on at once and gets complete attributes from then on
        buf.link = listing.stat_wanted or start == 0
        if listing.linked is None:
            listing.linked = bytearray(len(entries))
        sent = ll.fill_numbered(buf, a.names, a.offsets, a.numbers, entries.kinds, start, stop,
                                base, KIND_MODES, self._stub_entry, self._attrs, listing.linked)
        self._numbered_refs += buf.linked
        if listing.stat_wanted:   # nodes made for their attributes: sent complete, let go
            attrs, numbers = self._attrs, a.numbers
            for i in range(start, start + sent):
                if entries.made(i) is not None and base | numbers[i] in attrs:
                    entries.let_go(i)   # made again (no I/O) if ever asked
        if sent:
            recent = self._sent_by_number
            if parent in recent:
                recent.remove(parent)
            recent.append(parent)
            del recent[:-RECENT_BY_NUMBER]

    @_errors
    async def releasedir(self, fh):
        self._handles.pop(fh, None)

    @_errors
    async def statfs(self, ctx=None) -> tuple:
        """(bsize, frsize, blocks, bfree, bavail, files, ffree, favail, namemax); files:
        the inodes the kernel holds."""
        return (4096, 4096, 0, 0, 0, len(self._node) + max(0, self._numbered_refs), 0, 0, 1024)

    @_errors
    async def listxattr(self, inode, ctx=None):
        names = self._xattr_names.get(inode)
        if names is None:
            node = await self._get(inode)
            names = [os.fsencode(n) for n in await self._run(node.xattr_names)]
            if node.immutable:
                self._xattr_names.put(inode, names)
        return names

    @_errors
    async def getxattr(self, inode, name, ctx=None):
        # The kernel keeps no xattrs for FUSE; `ls -l` asks two per file and `cp -a` about
        # fourteen: answer what is known without a worker call.
        value = self._xattr_values.get((inode, name))
        if value is not None:
            return value
        names = self._xattr_names.get(inode)
        if names is not None and name not in names:
            raise FUSEError(ENOATTR)
        if inode & NUMBERED:  # every numbered node of a volume rules out the same names:
            slot = (inode ^ NUMBERED) >> SLOT_SHIFT  # ask its anchor, no node made
            if slot < len(self._anchors) and \
                    not self._anchors[slot].may_have_xattr(os.fsdecode(name)):
                raise FUSEError(ENOATTR)
        node = await self._get(inode)
        if not node.may_have_xattr(os.fsdecode(name)):
            raise FUSEError(ENOATTR)
        try:
            value = await self._run(node.getxattr, os.fsdecode(name))
        except RpfsError as e:
            if e.errno == errno.ENOENT:
                raise FUSEError(ENOATTR) from None
            raise
        if len(value) <= XATTR_VALUE_MAX and node.immutable:
            self._xattr_values.put((inode, name), value)
        return value

    # -- data ---------------------------------------------------------------------------

    @_errors
    async def read(self, inode, off, size, req=None):
        """No OPEN comes (it is answered ENOSYS): a file's stream is opened by its first
        read, in the same worker call, and kept for an immutable file. With ``req`` (a READ
        from the kernel) the worker that reads the data also sends it
        (``fuse_loop.answered_in_worker``: no hand-off back to the loop before the answer)
        and None is returned; without, the data. (``handle`` answers a READ whose bytes
        are in memory before it gets here: ``_read_from_memory``.)"""
        stream = self._streams.get(inode)  # files of immutable nodes only
        if stream is not None:
            if req is None:
                return await self._run(stream.read_buffer, off, size)  # one copy less than read
            self.worker_calls += 1
            await fuse_loop.answered_in_worker(req, _read_reply, stream, off, size)
            return None
        where = self._child_place(inode) if req is not None and inode & NUMBERED else None
        if where is not None:   # (handle tried _read_from_memory first)
            self.worker_calls += 1
            stream = await fuse_loop.answered_in_worker(req, _plain_read_reply, *where, off, size,
                                                        self._spans)
            if stream is not None:   # (nothing here may raise once the answer was sent)
                self._streams.put(inode, stream)
            return None
        node = await self._get(inode)
        if node.kind == "dir":
            raise FUSEError(errno.EISDIR)
        if req is None:
            stream, data = await self._run(_open_read, node, off, size)
        else:
            self.worker_calls += 1
            stream = await fuse_loop.answered_in_worker(req, _open_read_reply, node, off, size)
            data = None
        if node.immutable:   # (nothing here may raise once the answer was sent)
            self._streams.put(inode, stream)
        return data

    async def forget(self, inode_list):
        """The kernel let go of these references: a held inode nobody holds is dropped; a
        numbered one only leaves the caches (its number still finds it)."""
        for ino, n in inode_list:
            if ino & NUMBERED:
                self._numbered_refs -= n
                self._uncache(ino)
                continue
            left = self._lookups.get(ino, 0) - n
            if left > 0:
                self._lookups[ino] = left
            else:
                self._drop(ino)

    def _uncache(self, ino: int) -> None:
        self._live.pop(ino)
        self._attrs.pop(ino)
        self._links.pop(ino)
        self._listings.pop(ino)
        self._streams.pop(ino)
        self._xattr_names.pop(ino)

    def _drop(self, ino: int) -> None:
        if ino == ROOT_INODE:
            return
        self._lookups.pop(ino, None)
        self._let_go.discard(ino)
        node = self._node.pop(ino, None)
        if node is not None and self._ino_by_key.get(node.key) == ino:
            del self._ino_by_key[node.key]
        self._parent.pop(ino, None)
        self._uncache(ino)

    def _shed(self) -> None:
        """The kernel keeps every entry it was given until memory runs short, and each held
        inode holds a node here (a walk of a big POSIX volume would hold them all). Past
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
            if not node.immutable or node.kind == "dir" or ino in self._let_go \
                    or ino not in self._lookups:
                continue
            self._let_go.add(ino)
            excess -= 1
            self.invalidate(self._parent[ino], os.fsencode(node.name))

    def stats(self) -> dict:
        """How much is held (tests and benchmarks look at it): ``inodes`` held with their
        nodes, ``live`` nodes of numbered inodes, ``kernel_refs`` to numbered inodes."""
        return {"inodes": len(self._node), "keys": len(self._ino_by_key),
                "live": len(self._live), "kernel_refs": self._numbered_refs,
                "attrs": len(self._attrs), "listed": self._listings.total,
                "streams": len(self._streams), "xattr_names": len(self._xattr_names)}


def _list(node: Node) -> _Listing:
    """A directory's children (one worker call: the index parsing is the cost). Kinds are
    settled here, so the loop never parses. A small numbered directory's first
    ``ATTR_BATCH`` children get their attributes in the same call: its first readdirplus
    sends them complete (``stat_wanted``) and would otherwise be a second worker call
    (a walk or a ``cp -r`` opens each directory and reads its listing right away)."""
    listing = _Listing(node.listing())
    entries = listing.entries
    if listing.stat_wanted and entries.volume_key is not None:
        listing.early = _listed_attrs(entries, range(min(len(entries), ATTR_BATCH)))
    return listing


def _listed_attrs(entries: Listing, indexes) -> dict:
    """{i: Attr} of children ``indexes`` (a worker call): from ``Listing.stat`` where the
    file system gives them without a node, else through the child's node (made, kept by
    the listing; one that fails is left out: its getattr raises the error again)."""
    got = entries.stat(indexes)
    for i in indexes:
        if i not in got:
            try:
                got[i] = entries.node(i).attr()
            except RpfsError:
                pass
    return got


def _attrs_listed(node: Node, entries: Listing, indexes) -> tuple:
    """``node.attr()`` and ``_listed_attrs`` of its listed siblings (one worker call)."""
    return node.attr(), _listed_attrs(entries, indexes)


def _attrs_of(node: Node | None, siblings: list[Node]) -> Attr | None:
    """``node.attr()``, and the siblings' on the way (their errors are theirs to raise)."""
    a = node.attr() if node is not None else None
    for n in siblings:
        try:
            n.attr()
        except RpfsError:
            pass
    return a


def _rebuild(anchor: Node, number: int) -> Node:
    """The node numbered ``number`` on ``anchor``'s volume, its kind settled (a worker call)."""
    node = anchor.by_number(number)
    node.kind  # noqa: B018
    return node


def _open_read(node: Node, off: int, size: int):
    """A file's stream and its first read (one worker call)."""
    stream = node.open()
    return stream, stream.read_buffer(off, size)


def _read_reply(stream, off: int, size: int) -> tuple:
    """A READ's answer, for ``answered_in_worker``: (nothing, reply_buffers, the data as
    the decoded chunks' own buffers: a READ spanning two chunks is sent without a join)."""
    return None, ll.reply_buffers, stream.read_buffers(off, size)


def _open_read_reply(node: Node, off: int, size: int) -> tuple:
    """A file's first READ, for ``answered_in_worker``: (its stream, reply_buffers, the data)."""
    stream = node.open()
    return stream, ll.reply_buffers, stream.read_buffers(off, size)


def _plain_cached(listing: _Listing, i: int, anchor: Node, off: int, size: int) -> list | None:
    """The READ of child ``i`` of ``listing`` from memory alone, on the loop thread: a plain
    small file's resident bytes, or its bytes on the volume when the window they lie in was
    followed down the layers already (``Spans``) and the store has their frames decoded
    (``Stream.cached_views``); None when anything would have to be read, decoded or parsed
    (``_plain_read_reply`` does it in a worker)."""
    plain = listing.plain
    if not plain:
        return None
    files, volume, spans = plain
    status = files.status[i]
    if status != BYTES and status != VOLUME:
        return None
    n = max(0, min(size, files.sizes[i] - off))
    if n == 0:
        return [b""]
    at = files.at[i] + off
    if status == BYTES:
        return [memoryview(files.data)[at:at + n]]
    return spans.cached_views(at, n)


def _plain_read_reply(listing: _Listing, i: int, anchor: Node, off: int, size: int,
                      spans: dict) -> tuple:
    """A first READ of child ``i`` of ``listing``, for ``answered_in_worker``. A plain small
    file (``Node.plain_files``: one C call per directory over its $MFT blocks, made on the
    first READ there and kept with the listing) is read from where its bytes lie, resident
    bytes or one run of the volume, with no node, record parse or stream of its own: (None,
    reply_buffers, the data). The volume's ``Spans`` (in ``spans`` by volume key) follow
    the layers below once per window of it, not once per file. Any other child goes through
    its node as ``_open_read_reply`` (its stream is the value; a damaged one fails there,
    as it did at lookup)."""
    plain = listing.plain
    if plain is None:   # (a big directory's would read all its records for one file)
        found = len(listing.entries) <= PLAIN_LISTING_MAX and \
            anchor.plain_files(listing.entries, PLAIN_FILE_MAX)
        if found:
            files, volume = found
            key = listing.entries.volume_key
            plain = files, volume, spans.setdefault(key, Spans.on(volume))
        else:
            plain = False
        listing.plain = plain
    if plain:
        files, volume, volume_spans = plain
        status = files.status[i]
        if status == BYTES or status == VOLUME:
            n = max(0, min(size, files.sizes[i] - off))
            at = files.at[i] + off
            if n == 0:
                return None, ll.reply_buffers, [b""]
            if status == BYTES:
                return None, ll.reply_buffers, [memoryview(files.data)[at:at + n]]
            return None, ll.reply_buffers, volume_spans.read_buffers(at, n)
    node = listing.entries.node(i)
    stream, reply, data = _open_read_reply(node, off, size)
    return stream if node.immutable else None, reply, data


def _sized(value: bytes, size: int) -> tuple:
    """getxattr/listxattr's answer: the size when asked 0 bytes, ERANGE when it does not fit."""
    if size == 0:
        return ll.reply_xattr, len(value)
    if len(value) > size:
        raise FUSEError(errno.ERANGE)
    return ll.reply_data, value


def stable_inode(key: tuple) -> int:
    """The inode number of a node key: the same for the same key for the mount's lifetime,
    in [2**32, 2**62) so it never meets the counter used on a collision or the root."""
    h = int.from_bytes(blake2b(repr(key).encode("utf-8", "surrogatepass"),
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
    limit = os.environ.get("RPFS_MOUNT_INODES")
    try:
        limit = max(1000, int(limit)) if limit else None
    except ValueError:
        raise UsageError(f"RPFS_MOUNT_INODES={limit!r} is not a number") from None
    ops = Operations(tree, live_nodes=limit or LIVE_NODES)
    ops.inode_limit = limit or INODE_LIMIT
    # No max_read option: without one libfuse (3.14) already lets the kernel send MAX_READ
    # (max_pages = 256).
    options = ["fsname=rpfs", "subtype=rpfs", "ro", "default_permissions", "nosuid", "nodev"]
    if allow_other:
        options.append("allow_other")
    if debug:
        options.append("debug")   # libfuse prints every request on stderr
    real = os.path.realpath(mountpoint)  # not after init: that would ask this process
    ops.after_init = functools.partial(_raise_readahead, real)
    session = ll.Session(mountpoint, options)
    session.serve_from(ops._attrs)   # GETATTR of what was sent, xattrs never there: in C
    _count_on_signal(os.environ.get("RPFS_FUSE_COUNTS"))
    invalidator = _Invalidator(session)
    ops.invalidate = invalidator.put
    gc.set_threshold(*GC_THRESHOLDS)  # this process only serves the mount
    if ready:
        ready()
    try:
        fuse_loop.serve(session, ops.handle, WORKER_THREADS)
    finally:
        invalidator.close()
        session.close()   # unmounts (if still mounted) and ends the session


def _count_on_signal(path: str | None) -> None:
    """With RPFS_FUSE_COUNTS=FILE, SIGUSR1 writes the binding's request counts there as
    JSON, {opcode: [received, handed to Python]} (benchmarks count requests with it)."""
    if not path:
        return
    import json
    import signal

    def dump(signum, frame):
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(ll.counts(), f)
        os.replace(tmp, path)

    signal.signal(signal.SIGUSR1, dump)


class _Invalidator:
    """Sends the kernel's entry invalidations from a thread of their own: one waits for the
    directory's lock, which a request the loop has not answered yet may hold."""

    def __init__(self, session):
        self._session = session
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()   # held while a call is in libfuse
        self._closed = False

    def put(self, parent: int, name: bytes) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="fuse-invalidate", daemon=True)
            self._thread.start()
        self._queue.put((parent, name))

    def _run(self) -> None:
        while True:
            parent, name = self._queue.get()
            with self._lock:
                if self._closed:
                    return
                self._session.invalidate_entry(parent, name)   # ENOENT: already gone

    def close(self) -> None:
        """No call after this one returns (the session is destroyed next); an unmounted
        kernel answers a call at once, so the wait is short."""
        got = self._lock.acquire(timeout=5)
        self._closed = True
        if got:
            self._lock.release()
