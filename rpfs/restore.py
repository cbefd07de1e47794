"""Copy-out (item-level and alternate-location recovery) from any node of the namespace.

Nothing is ever written outside the destination: every file and directory is created
relative to an open directory descriptor with ``O_NOFOLLOW``/``O_EXCL``, names from the
image are made safe (no ``/``, NUL, ``.`` or ``..``), and symlinks found in the image are
recreated as links but never followed while writing.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from dataclasses import dataclass, field
from typing import Callable

from rpfs.errors import RpfsError, UsageError
from rpfs.stream import ZERO
from rpfs.tree import Node

log = logging.getLogger(__name__)

COPY_BLOCK = 4 << 20


@dataclass
class RestoreResult:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"files": self.files, "dirs": self.dirs, "symlinks": self.symlinks,
                "hardlinks": self.hardlinks, "bytes": self.bytes, "errors": self.errors}


def safe_name(name: str) -> str:
    """A name that can only ever mean one entry inside its directory."""
    if name in ("", ".", ".."):
        return {"": "%00", ".": "%2E", "..": "%2E%2E"}[name]
    out = name.replace("%", "%25").replace("/", "%2F").replace("\0", "%00")
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
                 overwrite: bool = False, progress: Callable[[int, int], None] | None = None):
        self.dest = dest
        self.xattrs = xattrs
        self.dry_run = dry_run
        self.overwrite = overwrite
        self.progress = progress
        self.result = RestoreResult()
        self._links: dict[tuple, tuple[int, bytes]] = {}

    def run(self, node: Node, name: str | None = None) -> RestoreResult:
        if self.dry_run:
            self._plan(node, safe_name(name or node.name or "restore"))
            return self.result
        os.makedirs(self.dest, exist_ok=True)
        fd = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY)
        try:
            self._restore(node, fd, safe_name(name or node.name or "restore"), self.dest)
        finally:
            os.close(fd)
        return self.result

    # -- dry run ------------------------------------------------------------------------

    def _plan(self, node: Node, rel: str) -> None:
        try:
            if node.kind == "dir":
                self.result.dirs += 1
                self.result.planned.append(rel + "/")
                for child in node.iterdir():
                    self._plan(child, rel + "/" + safe_name(child.name))
            elif node.kind == "symlink":
                self.result.symlinks += 1
                self.result.planned.append(f"{rel} -> {node.readlink()}")
            else:
                if node.key in self._links:
                    self.result.hardlinks += 1
                else:
                    self._links[node.key] = (0, b"")
                    self.result.files += 1
                    self.result.bytes += node.attr().size
                self.result.planned.append(rel)
        except RpfsError as e:
            self.result.errors.append(f"{rel}: {e}")

    # -- real restore -------------------------------------------------------------------

    def _restore(self, node: Node, dirfd: int, name: str, shown: str) -> None:
        path = f"{shown}/{name}"
        bname = fsname(name)
        try:
            if node.kind == "dir":
                self._restore_dir(node, dirfd, bname, path)
            elif node.kind == "symlink":
                self._remove_existing(dirfd, bname)
                os.symlink(fsname(node.readlink()), bname, dir_fd=dirfd)
                self._set_times(node, dirfd, bname)
                self.result.symlinks += 1
            else:
                linked = self._links.get(node.key)
                if linked is not None and node.key:
                    self._remove_existing(dirfd, bname)
                    os.link(linked[1], bname, src_dir_fd=linked[0], dst_dir_fd=dirfd,
                            follow_symlinks=False)
                    self.result.hardlinks += 1
                    return
                self._restore_file(node, dirfd, bname)
                if node.attr().nlink > 1:
                    self._links[node.key] = (os.dup(dirfd), bname)
        except RpfsError as e:
            self.result.errors.append(f"{path}: {e}")
            log.error("%s: %s", path, e)
        except OSError as e:
            self.result.errors.append(f"{path}: {e.strerror or e}")
            log.error("%s: %s", path, e.strerror or e)

    def _restore_dir(self, node: Node, dirfd: int, bname: bytes, path: str) -> None:
        try:
            os.mkdir(bname, 0o700, dir_fd=dirfd)
        except FileExistsError:
            pass
        fd = os.open(bname, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dirfd)
        try:
            self.result.dirs += 1
            for child in node.iterdir():
                self._restore(child, fd, safe_name(child.name), path)
            os.chmod(fd, 0o755)
        finally:
            os.close(fd)
        self._set_times(node, dirfd, bname)

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

    def _restore_file(self, node: Node, dirfd: int, bname: bytes) -> None:
        stream = node.open()
        self._remove_existing(dirfd, bname)
        fd = os.open(bname, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                     dir_fd=dirfd)
        try:
            buf = bytearray(COPY_BLOCK)
            view = memoryview(buf)
            for ext in stream.extents():
                if ext.kind == ZERO:
                    continue  # a hole: ftruncate below leaves it sparse
                pos, end = ext.offset, ext.end
                while pos < end:
                    n = stream.readinto(pos, view[: min(COPY_BLOCK, end - pos)])
                    if n <= 0:
                        raise RpfsError(f"unexpected end of data at offset {pos}")
                    _pwrite_all(fd, view[:n], pos)
                    pos += n
                    self.result.bytes += n
                    if self.progress:
                        self.progress(self.result.bytes, 0)
            os.ftruncate(fd, stream.size)
            os.fchmod(fd, 0o644)
            if self.xattrs:
                self._copy_xattrs(node, fd)
        finally:
            os.close(fd)
        self._set_times(node, dirfd, bname)
        self.result.files += 1

    def _copy_xattrs(self, node: Node, fd: int) -> None:
        for name in node.xattr_names():
            if not name.startswith("user."):
                continue  # system.ntfs_* are not settable on Linux filesystems
            try:
                os.setxattr(fd, name, node.getxattr(name))
            except OSError as e:
                self.result.errors.append(f"{node.name}: xattr {name}: {e.strerror}")

    def _set_times(self, node: Node, dirfd: int, bname: bytes) -> None:
        a = node.attr()
        if a.mtime_ns or a.atime_ns:
            try:
                os.utime(bname, ns=(a.atime_ns, a.mtime_ns), dir_fd=dirfd, follow_symlinks=False)
            except OSError as e:  # out-of-range times on some filesystems
                log.info("times of %r not set: %s", bname, e)

    def close(self) -> None:
        for fd, _ in self._links.values():
            if fd:
                os.close(fd)
        self._links.clear()


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
