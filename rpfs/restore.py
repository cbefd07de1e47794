"""Copy-out (item-level and alternate-location recovery) from any node of the namespace.

Nothing is ever written outside the destination: every file and directory is created
relative to an open directory descriptor with ``O_NOFOLLOW``/``O_EXCL``, names from the
image are made safe (no ``/``, ``\\``, NUL, ``.`` or ``..``), and symlinks found in the image are
recreated as links but never followed while writing.

Files are copied by a small pool of threads while the tree is walked: on Linux creating a
file costs the kernel more CPU than copying a small file's bytes, and system calls release
the GIL, so many small files go out about as fast as the cores can create them. A
directory's permissions and times are set once every file in it is written.

Small files are not read one by one: the walk notes where each one's bytes lie on the
stream below it (``Stream.span``: a file in one run of its volume) or takes its bytes when
they are already in memory (resident data), and every few thousand files those are read in
volume order, neighbours with one read, and written by the pool. Reading a 4 KiB file
through the layers (runlist, partition, container, repository) cost more than creating it.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import itertools
import operator
import os
import stat
import threading
from collections.abc import Callable   # not typing: 1.6 ms of every restore's start-up

from streams.errors import FormatError, RpfsError, TooLargeError, UsageError
from rpfs.node import SPECIAL_KINDS
from streams.stream import ZERO, BytesStream, Stream, bottom
from rpfs.tree import Node
from rpfs.log import get_logger
from rpfs.workers import Job, Pool

try:   # small files written in one call per batch, the GIL released once
    from rpfs import _writeout
except ImportError:   # not built (no compiler): each file written from Python, _write_whole
    _writeout = None
else:
    from streams.builds import check
    check(_writeout)

log = get_logger(__name__)

COPY_BLOCK = 4 << 20
WORKERS = 4          # files being written at once (creation is kernel CPU, done without the GIL)
WRITERS = 2          # _writeout.Writer threads making the small files (two cores here)
SMALL_FILE = 256 << 10   # files up to this size are read with their neighbours
BATCH_FILES = 4096       # small files gathered before they are read and written ...
BATCH_BYTES = 64 << 20   # ... or this many of their bytes ...
DIRS_AHEAD = 8           # subdirectories whose indexes are decoded ahead of the walk (will_walk)
BATCH_DIRS = 256         # ... or this many walked directories waiting for them (open fds)
WINDOW = 1 << 20         # the most one read of the stream below covers
GAP = 64 << 10           # unneeded bytes between two files read through rather than skipped


class _Small:
    """A small file found by the walk, waiting to be read with its neighbours. A plain NTFS
    file (Node.plain_files) has no node yet: ``listing.walk_node(index)`` makes it if it is
    needed after all (a name in the way, a failed shared read). (A plain class: a dataclass
    is compiled at import, ~0.5 ms each, on every restore's start-up.)"""

    __slots__ = ("node", "listing", "index", "size", "mode", "direct", "times", "dirfd",
                 "bname", "parent", "below", "at", "data", "stream")

    def __init__(self, node: Node | None, listing, index: int, size: int, mode: int,
                 direct: bool, times: tuple | None, dirfd: int, bname: bytes, parent: str,
                 below: Stream | None, at: int, data=b"", stream: Stream | None = None):
        self.node = node
        self.listing = listing   # with ``index``: where the node comes from when ``node`` is None
        self.index = index
        self.size = size
        self.mode = mode         # created with this mode ...
        self.direct = direct     # ... and nothing else to set but times (Restorer._mode)
        self.times = times       # (atime, mtime) ns, or None
        self.dirfd = dirfd
        self.bname = bname
        self.parent = parent     # the directory's path as shown (errors)
        self.below = below       # the stream its bytes are read from (None: ``data`` holds them)
        self.at = at             # their offset there
        self.data = data
        self.stream = stream

    @property
    def path(self) -> str:
        return f"{self.parent}/{os.fsdecode(self.bname)}"

    def the_node(self) -> Node:
        if self.node is None:
            self.node = self.listing.walk_node(self.index)
        return self.node

    def the_stream(self) -> Stream:
        if self.stream is None:
            self.stream = self.the_node().open()
        return self.stream


class _Walked:
    """A directory whose walk has ended: its permissions and times are set once the files
    in it are written (after the next batch), children before parents."""

    __slots__ = ("node", "fd", "parent_fd", "bname", "path", "pending")

    def __init__(self, node: Node, fd: int, parent_fd: int, bname: bytes, path: str,
                 pending: list):
        self.node, self.fd, self.parent_fd = node, fd, parent_fd
        self.bname, self.path, self.pending = bname, path, pending


class RestoreResult:
    """What a restore did: counts, bytes, and each error or skip as one line."""

    def __init__(self):
        self.files = 0
        self.dirs = 0
        self.symlinks = 0
        self.hardlinks = 0
        self.special = 0                    # device nodes and FIFOs made (--devices)
        self.bytes = 0
        self.errors: list[str] = []
        self.planned: list[str] = []
        self.skipped: list[str] = []        # "path (kind)": not restored

    def as_dict(self) -> dict:
        return {"files": self.files, "dirs": self.dirs, "symlinks": self.symlinks,
                "hardlinks": self.hardlinks, "special": self.special, "bytes": self.bytes,
                "errors": self.errors, "skipped": self.skipped}

    def __repr__(self) -> str:
        return f"RestoreResult({self.as_dict()})"


def safe_name(name: str) -> str:
    """A name that can only ever mean one entry inside its directory, here and on Windows
    (a backslash is a separator there: zips made from the same names are unpacked there).
    Reversible: ``%`` itself is escaped."""
    if name in ("", ".", ".."):
        return {"": "%00", ".": "%2E", "..": "%2E%2E"}[name]
    out = name
    if "%" in name or "/" in name or "\\" in name or "\0" in name:
        out = (name.replace("%", "%25").replace("/", "%2F").replace("\\", "%5C")
               .replace("\0", "%00"))
    # A name longer than the filesystem allows is shortened, keeping it distinct.
    raw = fsname(out)
    if len(raw) > 255:
        import hashlib

        digest = hashlib.sha256(raw).hexdigest()[:16]
        out = raw[:200].decode("utf-8", "ignore") + "~" + digest
    return out


def fsname(name: str) -> bytes:
    """``name`` as bytes for the OS; names with escaped surrogates kept reversible."""
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogatepass")


class Restorer:
    def __init__(self, dest: str, *, xattrs: bool = False, dry_run: bool = False,
                 overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
                 workers: int = WORKERS, devices: bool = False):
        self.dest = dest
        self.devices = devices
        self.as_root = os.geteuid() == 0     # owners, groups, trusted.*/security.* xattrs
        self.workers = workers
        self.xattrs = xattrs
        self.dry_run = dry_run
        self.overwrite = overwrite
        self.progress = progress
        self.result = RestoreResult()
        # key of a file with several links -> (its copy job, dup of its directory fd, name)
        self._links: dict[tuple, tuple[Job | None, int, bytes]] = {}
        self._lock = threading.Lock()      # result counters and progress, updated by workers
        self._pool: Pool | None = None
        self._ancestors: set[tuple] = set()  # keys of the directories being walked (cycles)
        self._umask = current_umask()
        self._small: list[_Small] = []       # small files waiting to be read (walk order)
        self._small_bytes = 0
        self._walked: list[_Walked] = []     # directories waiting for them (post-order)
        self._writers: list | None = None    # _writeout.Writer threads, made at the first batch

    def run(self, node: Node, name: str | None = None) -> RestoreResult:
        if self.dry_run:
            self._plan(node, safe_name(name or node.name or "restore"))
            return self.result
        os.makedirs(self.dest, exist_ok=True)
        fd = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY)
        pending: list[Job] = []
        try:
            _will_walk(node)   # e.g. the $MFT decoded in the background while we walk
            with Pool(self.workers, "rpfs-restore") as pool:
                self._pool = pool
                try:
                    self._restore(node, fd, safe_name(name or node.name or "restore"),
                                  self.dest, pending)
                finally:
                    self._flush()
                    for job in pending:
                        job.result()
        finally:
            self._pool = None
            for w in self._writers or ():
                w.close()
            self._writers = None
            os.close(fd)
        return self.result

    # -- dry run ------------------------------------------------------------------------

    def _plan(self, node: Node, rel: str) -> None:
        try:
            if node.kind == "dir":
                self.result.dirs += 1
                self.result.planned.append(rel + "/")
                with self._entered(node, rel):
                    for child in node.iterdir():
                        self._plan(child, rel + "/" + safe_name(child.name))
            elif node.kind == "symlink":
                self.result.symlinks += 1
                self.result.planned.append(f"{rel} -> {node.readlink()}")
            elif node.kind in SPECIAL_KINDS:
                if self._makes(node.kind):
                    self.result.special += 1
                    self.result.planned.append(f"{rel} ({node.kind})")
                else:
                    self.result.skipped.append(f"{rel} ({node.kind})")
            else:
                if node.key in self._links:
                    self.result.hardlinks += 1
                else:
                    self._links[node.key] = (None, -1, b"")
                    self.result.files += 1
                    self.result.bytes += node.attr().size
                self.result.planned.append(rel)
        except RpfsError as e:
            self.result.errors.append(f"{rel}: {e}")

    # -- real restore -------------------------------------------------------------------

    def _restore(self, node: Node, dirfd: int, name: str, shown: str,
                 pending: list[Job]) -> None:
        """Restore ``node`` as ``name`` in ``dirfd``; a file's copy is queued in ``pending``."""
        path = f"{shown}/{name}"
        bname = fsname(name)
        try:
            if node.kind == "dir":
                self._restore_dir(node, dirfd, bname, path)
            elif node.kind == "symlink":
                self._remove_existing(dirfd, bname)
                os.symlink(fsname(node.readlink()), bname, dir_fd=dirfd)
                self._set_owner(node.attr(), bname, dirfd)
                self._set_times(node, dirfd, bname)
                with self._lock:
                    self.result.symlinks += 1
            elif node.kind in SPECIAL_KINDS:
                self._restore_special(node, dirfd, bname, path)
            else:
                linked = self._links.get(node.key) if node.key else None
                if linked is not None and self._link(linked, dirfd, bname):
                    return
                attr = node.attr()
                stream = None
                if attr.nlink <= 1 and attr.size <= SMALL_FILE:
                    stream = node.open()  # before creating anything: a broken file leaves none
                    if self._gather(node, attr, stream, dirfd, bname, path):
                        return
                job = self._pool.submit(self._copy_file, node, attr, dirfd, bname, path,
                                        stream)
                pending.append(job)
                if node.key and linked is None and attr.nlink > 1:
                    self._links[node.key] = (job, os.dup(dirfd), bname)
        except (RpfsError, OSError) as e:
            self._error(path, e)

    @contextlib.contextmanager
    def _entered(self, node: Node, path: str):
        """Walk into directory ``node``, unless it is one of its own ancestors (a damaged
        file system can link a directory below itself: that would never end)."""
        key = node.key
        if key and key in self._ancestors:
            raise FormatError("a directory that contains itself (cycle in the file system): "
                              "not followed")
        if key:
            self._ancestors.add(key)
        try:
            yield
        finally:
            self._ancestors.discard(key)

    def _makes(self, kind: str) -> bool:
        return self.devices and kind in ("chardev", "blockdev", "fifo")

    def _restore_special(self, node: Node, dirfd: int, bname: bytes, path: str) -> None:
        """A device node or FIFO (only with ``devices``); a socket is never made."""
        if not self._makes(node.kind):
            with self._lock:
                self.result.skipped.append(f"{path} ({node.kind})")
            return
        a = node.attr()
        self._remove_existing(dirfd, bname)
        os.mknod(bname, a.mode, a.rdev, dir_fd=dirfd)
        self._set_owner(a, bname, dirfd)
        os.chmod(bname, a.mode & 0o7777, dir_fd=dirfd)
        if self.xattrs:
            fd = os.open(bname, os.O_PATH | os.O_NOFOLLOW, dir_fd=dirfd)
            try:
                self._copy_xattrs(node, f"/proc/self/fd/{fd}", path)
            finally:
                os.close(fd)
        self._set_times(node, dirfd, bname)
        with self._lock:
            self.result.special += 1

    def _set_owner(self, a, bname: bytes, dirfd: int) -> None:
        """The guest's owner and group (POSIX volumes, when run as root)."""
        if self.as_root and a.uid is not None:
            os.chown(bname, a.uid, a.gid, dir_fd=dirfd, follow_symlinks=False)

    def _error(self, path: str, e: Exception) -> None:
        msg = str(e) if isinstance(e, RpfsError) else (getattr(e, "strerror", None) or str(e))
        with self._lock:
            self.result.errors.append(f"{path}: {msg}")
        log.error("%s: %s", path, msg)

    def _link(self, linked, dirfd: int, bname: bytes) -> bool:
        """Hard-link to the first copy of the same file; False if that copy failed."""
        job, src_fd, src_name = linked
        if job is not None and not job.result():
            return False
        self._remove_existing(dirfd, bname)
        os.link(src_name, bname, src_dir_fd=src_fd, dst_dir_fd=dirfd, follow_symlinks=False)
        with self._lock:
            self.result.hardlinks += 1
        return True

    def _copy_file(self, node: Node, attr, dirfd: int, bname: bytes, path: str,
                   stream: Stream | None = None) -> bool:
        """(In a worker.) Errors are recorded against ``path``; True if the file is written."""
        try:
            self._restore_file(node, attr, dirfd, bname, path, stream)
            return True
        except (RpfsError, OSError) as e:
            self._error(path, e)
            return False

    def _restore_dir(self, node: Node, dirfd: int, bname: bytes, path: str) -> None:
        try:
            os.mkdir(bname, 0o700, dir_fd=dirfd)
        except FileExistsError:
            pass
        fd = os.open(bname, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dirfd)
        walked = _Walked(node, fd, dirfd, bname, path, [])
        try:
            with self._lock:
                self.result.dirs += 1
            with self._entered(node, path):
                listing = node.listing()   # C-built for NTFS: nodes made one by one
                plain = None if self.xattrs else node.plain_files(listing, SMALL_FILE)
                if plain is None:
                    for _, child in listing:
                        self._restore(child, fd, safe_name(child.name), path, walked.pending)
                else:
                    self._restore_plain(listing, *plain, fd, path, walked.pending)
        finally:
            # the files in fd are written before fd closes: after the next batch
            self._walked.append(walked)
            if len(self._walked) >= BATCH_DIRS:
                self._flush()

    def _restore_plain(self, listing, plain, volume: Stream, fd: int, path: str,
                       pending: list[Job]) -> None:
        """A directory's children, its plain files (``Node.plain_files``: one C call for
        the directory) queued for the next batch straight from the arrays, without a node,
        an attribute object or a stream each; every other child through its node."""
        status, sizes, at, times, data = plain
        data = memoryview(data)
        mode, _, direct = self._mode(_PLAIN_ATTR)
        kinds = listing.kinds
        names, name_at = listing.arrays.names, listing.arrays.offsets
        # the other children's nodes first; the next DIRS_AHEAD directories among them are
        # told they will be walked (``Node.will_walk``: their indexes decoded in the
        # background meanwhile), one more each time the walk enters one
        others = {i: listing.walk_node(i) for i in range(len(listing))
                  if not status[i] or kinds[i] != _FILE}
        dirs = [child for i, child in others.items() if kinds[i] == _DIR]
        for child in dirs[:DIRS_AHEAD]:
            _will_walk(child)
        told = DIRS_AHEAD
        small = self._small
        for i in range(len(listing)):
            child = others.get(i)
            if child is not None:
                if kinds[i] == _DIR and told < len(dirs):
                    _will_walk(dirs[told])
                    told += 1
                self._restore(child, fd, safe_name(child.name), path, pending)
                continue
            st = status[i]
            bname = names[name_at[i]:name_at[i + 1]]   # listing.name(i), without a call
            if (not bname or bname in (b".", b"..") or len(bname) > 255
                    or len(bname.translate(None, _UNSAFE)) != len(bname)):
                bname = fsname(safe_name(os.fsdecode(bname)))
            size = sizes[i]
            atime, mtime = times[2 * i], times[2 * i + 1]
            t = (atime, mtime) if atime or mtime else None
            if st == _BYTES:
                item = _Small(None, listing, i, size, mode, direct, t, fd, bname, path, None,
                              0, data[at[i]:at[i] + size])
            else:
                item = _Small(None, listing, i, size, mode, direct, t, fd, bname, path,
                              volume, at[i])
            small.append(item)
            self._small_bytes += size
            if len(small) >= BATCH_FILES or self._small_bytes >= BATCH_BYTES:
                self._flush()
                small = self._small

    def _finish_dir(self, w: _Walked) -> None:
        """A walked directory's files are written: its owner, mode, xattrs and times."""
        try:
            for job in w.pending:
                job.result()
            try:
                a = w.node.attr()
                if self.as_root and a.uid is not None:
                    os.fchown(w.fd, a.uid, a.gid)
                os.chmod(w.fd, 0o755 if a.posix_mode is None else a.posix_mode & 0o7777)
                if self.xattrs:
                    self._copy_xattrs(w.node, w.fd, w.path)
            finally:
                os.close(w.fd)
            self._set_times(w.node, w.parent_fd, w.bname)
        except (RpfsError, OSError) as e:
            self._error(w.path, e)

    # -- small files, read in volume order --------------------------------------------

    def _gather(self, node: Node, a, stream: Stream, dirfd: int, bname: bytes,
                path: str) -> bool:
        """Queue a small file for the next batch; False when it is read on its own (its
        bytes are not in one piece of one stream below: holes, compression)."""
        size = stream.size
        mode, _, direct = self._mode(a)
        parent = path[:path.rindex("/")]
        if size == 0 or isinstance(stream, BytesStream) and _one_extent(stream):
            item = _Small(node, None, 0, size, mode, direct, _times(a), dirfd, bname, parent,
                          None, 0, stream.read(0, size) if size else b"", stream)
        else:
            where = stream.span(0, size)
            if where is None:
                return False
            item = _Small(node, None, 0, size, mode, direct, _times(a), dirfd, bname, parent,
                          where[0], where[1], stream=stream)
        self._small.append(item)
        self._small_bytes += size
        if len(self._small) >= BATCH_FILES or self._small_bytes >= BATCH_BYTES:
            self._flush()
        return True

    def _flush(self) -> None:
        """Read and write the gathered small files, then finish the walked directories.
        With _writeout: this thread slices each window's files out of the decoded chunks
        and the writers' threads, which never take the GIL, make them meanwhile (WRITERS
        of them, windows dealt in turn); without it the pool reads and writes windows."""
        small, self._small, self._small_bytes = self._small, [], 0
        walked, self._walked = self._walked, []
        if _writeout is not None and not self.xattrs and hasattr(_writeout, "Writer"):
            if self._writers is None:   # (a build older than Writer: the pool, as before)
                self._writers = [_writeout.Writer() for _ in range(WRITERS)]
            sent = []
            for k, items in enumerate(_windows(small)):
                files, owners = self._slices(items)
                if files:
                    try:
                        w = self._writers[k % WRITERS]
                        sent.append((w, w.submit(files), files, owners))
                    except (ValueError, TypeError) as e:  # refused whole (a bug above)
                        self._one_by_one(files, owners, e)
            for w, ticket, files, owners in sent:   # each writer's batches in order
                self._written(files, owners, [f[1:] for f in w.wait(ticket)])
        else:
            jobs = [self._pool.submit(self._write_window, w) for w in _windows(small)]
            for job in jobs:
                job.result()
        for w in walked:          # post-order: a directory after its subdirectories
            self._finish_dir(w)

    def _write_window(self, items: list[_Small]) -> None:
        """(In a worker.) One window's files sliced out and written by one C call."""
        files, owners = self._slices(items)
        if files:
            self._write_batch(files, owners)

    def _slices(self, items: list[_Small]) -> tuple[list[tuple], list[_Small]]:
        """One read of the stream below for neighbouring files, then each file's bytes
        sliced out of it; if that read fails, each file is read on its own so the error is
        reported against the file that has it. Returns the files the batch writer makes
        (write_files' items) and whose each is; the others are written here (_write_whole).
        Per file only a slice and the batch writer's tuple are made: no call of a Python
        function (a window is ~70 files)."""
        first = items[0]
        start = first.at
        pieces = None
        if first.below is not None:
            end = max([i.at + i.size for i in items])
            try:
                pieces = _window(first.below, start, end - start)
            except RpfsError:
                pieces = None
        if pieces is not None:
            views, ends = pieces.views, pieces.ends
            k = 0      # the buffer the file starts in (the files come in offset order)
        batched = _writeout is not None and not self.xattrs
        files, owners = [], []    # written by _writeout in one call, and whose each is
        for i in items:
            try:
                if i.below is None:
                    data = i.data
                elif pieces is not None:
                    off = i.at - start
                    while off >= ends[k]:
                        k += 1
                    at = off - ends[k] + len(views[k])
                    if at + i.size <= len(views[k]):
                        data = views[k][at:at + i.size]
                    else:         # across two buffers: copied into one
                        data = pieces.slice(off, i.size)
                else:
                    data = i.the_stream().read(0, i.size)
                if batched and i.direct:
                    files.append((i.dirfd, i.bname, i.mode, data if i.size else None, i.times))
                    owners.append(i)
                else:
                    node = i.the_node()
                    self._write_whole(node, node.attr(), i.dirfd, i.bname, i.path, data)
            except (RpfsError, OSError) as e:
                self._error(i.path, e)
        return files, owners

    def _write_batch(self, files: list[tuple], owners: list[_Small]) -> None:
        """(In a worker.) Files created with their final mode and no owner or xattrs to set,
        written by one C call: per file openat (O_EXCL|O_NOFOLLOW at its directory's fd),
        pwrite, futimens, close, the GIL released once for all of them. ``files`` are
        write_files' items, ``owners`` the _Small each one is."""
        try:
            failed = _writeout.write_files(files)
        except (ValueError, TypeError) as e:   # refused whole: a name that is not one
            self._one_by_one(files, owners, e)
            return
        self._written(files, owners, failed)

    def _one_by_one(self, files: list[tuple], owners: list[_Small], e: Exception) -> None:
        """A batch the C writer refused whole (a name that is not one component reached
        it: a bug above): each file again, its name made safe."""
        log.warning("batch of %d files written one by one: %s", len(files), e)
        for i, f in zip(owners, files):
            try:
                node = i.the_node()
                bname = fsname(safe_name(os.fsdecode(i.bname)))
                self._write_whole(node, node.attr(), i.dirfd, bname, i.path, f[3] or b"")
            except (RpfsError, OSError) as e2:
                self._error(i.path, e2)

    def _written(self, files: list[tuple], owners: list[_Small], failed: list) -> None:
        """Count a written batch; ``failed``: its (index, stage, errno). A name that exists
        goes through _write_whole (which refuses it, or replaces it with --overwrite); only
        the files that failed are looked at one by one."""
        written = len(files)
        nbytes = sum([len(f[3]) for f in files if f[3] is not None])
        for k, stage, err in failed:
            i, data = owners[k], files[k][3] or b""
            if stage == _writeout.STAGE_TIMES:      # out-of-range times on some filesystems
                log.info("times of %r not set: %s", i.bname, os.strerror(err))
                continue
            written -= 1
            nbytes -= len(data)
            try:
                if stage == _writeout.STAGE_OPEN and err == errno.EEXIST:
                    node = i.the_node()
                    self._write_whole(node, node.attr(), i.dirfd, i.bname, i.path, data)
                else:
                    raise OSError(err, os.strerror(err))
            except (RpfsError, OSError) as e:
                self._error(i.path, e)
        with self._lock:
            self.result.files += written
            self.result.bytes += nbytes
            if self.progress:
                self.progress(self.result.bytes, 0)

    def _write_whole(self, node: Node, a, dirfd: int, bname: bytes, path: str, data) -> None:
        """A file whose bytes are all in ``data``: create, write, owner/mode/xattrs/times."""
        fd, direct, chown, mode = self._create(a, dirfd, bname)
        try:
            if len(data):
                _pwrite_all(fd, memoryview(data), 0)
            self._finish_file(fd, node, a, direct, chown, mode, bname, path)
        finally:
            os.close(fd)
        with self._lock:
            self.result.files += 1
            self.result.bytes += len(data)
            if self.progress:
                self.progress(self.result.bytes, 0)

    def _create(self, a, dirfd: int, bname: bytes) -> tuple[int, bool, bool, int]:
        """The new file, opened for writing: (fd, created with its final mode, to chown,
        mode)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        mode, chown, direct = self._mode(a)
        create = mode if direct else 0o600
        try:
            fd = os.open(bname, flags, create, dir_fd=dirfd)
        except FileExistsError:
            self._remove_existing(dirfd, bname)
            fd = os.open(bname, flags, create, dir_fd=dirfd)
        return fd, direct, chown, mode

    def _mode(self, a) -> tuple[int, bool, bool]:
        """(mode, to chown, created with its final mode and nothing more to set but times)."""
        mode = 0o644 if a.posix_mode is None else a.posix_mode & 0o7777
        chown = self.as_root and a.uid is not None
        # Created with its final mode when the umask leaves that mode whole (one system
        # call less per file); set-id bits and a chown (which clears them) take fchmod.
        direct = not chown and not mode & 0o7000 and not mode & self._umask
        return mode, chown, direct

    def _finish_file(self, fd: int, node: Node, a, direct: bool, chown: bool, mode: int,
                     bname: bytes, path: str) -> None:
        if chown:
            os.fchown(fd, a.uid, a.gid)      # before the mode: chown clears set-id bits
        if not direct:
            os.fchmod(fd, mode)
        if self.xattrs:
            self._copy_xattrs(node, fd, path)
        times = _times(a)
        if times is not None:
            try:
                os.utime(fd, ns=times)
            except OSError as e:  # out-of-range times on some filesystems
                log.info("times of %r not set: %s", bname, e)

    def _remove_existing(self, dirfd: int, bname: bytes) -> None:
        try:
            st = os.stat(bname, dir_fd=dirfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if not self.overwrite:
            raise FileExistsError(errno.EEXIST, "exists (use --overwrite)")
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, "a directory is in the way")
        os.unlink(bname, dir_fd=dirfd)

    def _restore_file(self, node: Node, a, dirfd: int, bname: bytes, path: str,
                      stream: Stream | None = None) -> None:
        if stream is None:   # opened before creating anything: a broken file leaves none
            stream = node.open()
        fd, direct, chown, mode = self._create(a, dirfd, bname)
        try:
            buf = bytearray(min(COPY_BLOCK, max(1, stream.size)))
            view = memoryview(buf)
            written = 0   # end of the last byte written: a new file's size is that already
            for ext in stream.extents():
                if ext.kind == ZERO:
                    continue  # a hole: ftruncate below leaves it sparse
                pos, end = ext.offset, ext.end
                while pos < end:
                    n = stream.readinto(pos, view[: min(len(buf), end - pos)])
                    if n <= 0:
                        raise RpfsError(f"unexpected end of data at offset {pos}")
                    _pwrite_all(fd, view[:n], pos)
                    pos += n
                    written = pos
                    self._count(n)
            if written != stream.size:   # a trailing hole (or an empty file's 0: a no-op)
                os.ftruncate(fd, stream.size)
            self._finish_file(fd, node, a, direct, chown, mode, bname, path)
        finally:
            os.close(fd)
        with self._lock:
            self.result.files += 1

    def _count(self, n: int) -> None:
        with self._lock:
            self.result.bytes += n
            if self.progress:
                self.progress(self.result.bytes, 0)

    def _copy_xattrs(self, node: Node, fd, path: str) -> None:
        for name in node.xattr_names():
            if not self._settable(name):
                continue
            try:
                value = node.getxattr(name)  # its size is checked before anything is read
            except TooLargeError as e:  # not an xattr on any Linux filesystem: the file is
                log.warning("%s: %s", path, e)  # restored, the stream stays readable
                continue
            except RpfsError as e:
                with self._lock:
                    self.result.errors.append(f"{path}: xattr {name}: {e}")
                log.error("%s: xattr %s: %s", path, name, e)
                continue
            try:
                os.setxattr(fd, name, value)
            except OSError as e:
                with self._lock:
                    self.result.errors.append(f"{node.name}: xattr {name}: {e.strerror}")

    def _settable(self, name: str) -> bool:
        """user.* and POSIX ACLs always; security.*/trusted.* as root; never
        system.ntfs_* (NTFS metadata no Linux file system takes)."""
        if name.startswith("user.") or name in ("system.posix_acl_access",
                                                "system.posix_acl_default"):
            return True
        return self.as_root and name.startswith(("security.", "trusted."))

    def _set_times(self, node: Node, dirfd: int, bname: bytes) -> None:
        a = node.attr()
        if a.mtime_ns or a.atime_ns or a.posix_mode is not None:   # 0 is a time on POSIX
            try:
                os.utime(bname, ns=(a.atime_ns, a.mtime_ns), dir_fd=dirfd, follow_symlinks=False)
            except OSError as e:  # out-of-range times on some filesystems
                log.info("times of %r not set: %s", bname, e)

    def close(self) -> None:
        for _, fd, _ in self._links.values():
            if fd >= 0:
                os.close(fd)
        self._links.clear()


def current_umask() -> int:
    """The process's umask, read without changing it (os.umask would, for every thread);
    0o777 where /proc does not say it (every file then gets an fchmod)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o777


class _PlainAttr:
    """What restore's mode rule reads of a plain NTFS file (Node.plain_files): no POSIX
    mode, no owner."""
    posix_mode = None
    uid = None


_PLAIN_ATTR = _PlainAttr()
_FILE = 1                  # rpfs.listing.NUMBERED_KINDS.index("file")
_DIR = 2                   # rpfs.listing.NUMBERED_KINDS.index("dir")
# bytes of a name that ``safe_name`` rewrites: found by one ``translate`` per name (``x in
# bytes`` with a bytes ``x`` first tries it as an integer and formats a TypeError: four such
# tests per file cost 34 M instructions for 4,000 files)
_UNSAFE = b"%/\\\0"
_BYTES = 1                 # ntfs_reader.plain.BYTES: the bytes are in the arrays' data
_AT = operator.attrgetter("at")


def _times(a) -> tuple[int, int] | None:
    """(atime, mtime) in ns to set, or None: no times known (0 is a time on POSIX)."""
    if a.mtime_ns or a.atime_ns or a.posix_mode is not None:
        return a.atime_ns, a.mtime_ns
    return None


def _will_walk(node: Node) -> None:
    """``Node.will_walk``: a hint, so whatever it cannot tell is the walk's to report."""
    try:
        node.will_walk()
    except (RpfsError, OSError):
        pass


def _one_extent(stream: Stream) -> bool:
    """No hole in it (a hole is left a hole: written whole, it would take space)."""
    extents = list(stream.extents())
    return len(extents) == 1 and extents[0].kind != ZERO


def _windows(small: list[_Small]):
    """The gathered files in groups read with one read each: in-memory ones in groups of
    64, the others by the stream below and their offset on it, neighbours (at most GAP
    apart) together up to WINDOW bytes."""
    held = [i for i in small if i.below is None]
    for k in range(0, len(held), 64):
        yield held[k:k + 64]
    placed = [i for i in small if i.below is not None]
    if len({id(i.below) for i in placed}) == 1:
        placed.sort(key=_AT)    # one stream below (a volume): ints compared in C, no call each
    else:
        placed.sort(key=lambda i: (id(i.below), i.at))
    group: list[_Small] = []
    start = end = 0
    for i in placed:
        stop = i.at + i.size
        if group and (i.below is not group[0].below or i.at > end + GAP
                      or max(end, stop) - start > WINDOW):
            yield group
            group = []
        if not group:
            start, end = i.at, stop
        group.append(i)
        end = max(end, stop)
    if group:
        yield group


class _Pieces:
    """A window's bytes as the buffers that hold them in order (decoded chunks handed out
    without a copy, or one buffer read into)."""

    __slots__ = ("views", "ends")

    def __init__(self, views: list):
        self.views = views
        self.ends = list(itertools.accumulate(map(len, views)))

    def slice(self, offset: int, size: int):
        """Bytes [offset, offset+size) of the window: a view of the one buffer that holds
        them, or their copy when they straddle two."""
        ends = self.ends
        k = bisect.bisect_right(ends, offset)
        v = self.views[k]
        at = offset - (ends[k] - len(v))
        if at + size <= len(v):
            return v[at:at + size]
        out = bytearray(size)
        pos = 0
        while pos < size:
            v = self.views[k]
            take = min(len(v) - at, size - pos)
            out[pos:pos + take] = v[at:at + take]
            pos += take
            k += 1
            at = 0
        return out


def _window(stream: Stream, start: int, n: int) -> _Pieces | None:
    """``n`` bytes at ``start`` of ``stream``: the decoded chunks themselves when the layers
    below hand them out (``Stream.views``: no buffer to fill and no copy), else one read."""
    below, at = bottom(stream, start, n)
    views = below.views(at, n)
    if views is not None:
        got = list(views)
        if sum(map(len, got)) == n:
            return _Pieces(got)
    buf = bytearray(n)
    if stream.readinto(start, buf) != n:
        return None
    return _Pieces([memoryview(buf)])


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        n = os.pwrite(fd, data, offset)
        data = data[n:]
        offset += n


def restore(node: Node, dest: str, **kw) -> RestoreResult:
    if node is None:
        raise UsageError("nothing to restore")
    r = Restorer(dest, **kw)
    try:
        return r.run(node)
    finally:
        r.close()
