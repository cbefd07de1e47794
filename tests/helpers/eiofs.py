"""A read-only FUSE passthrough of a directory that fails chosen reads with EIO, the way a
disk with a bad sector does: ``python -m tests.helpers.eiofs SOURCE MOUNTPOINT``.

Reads of a file whose name is listed in ``SOURCE/.eio`` (one ``name start end`` per line,
byte offsets) fail with EIO where they touch ``[start, end)``; the list is re-read on every
open, so a test can break a file after the mount is up. Everything else reads through.
"""

from __future__ import annotations

import errno
import os
import stat
import sys

import pyfuse3
import trio


class EioFS(pyfuse3.Operations):
    def __init__(self, source: str):
        super().__init__()
        self.source = source
        self.paths = {pyfuse3.ROOT_INODE: source}
        self.inodes = {source: pyfuse3.ROOT_INODE}
        self.next_inode = pyfuse3.ROOT_INODE + 1
        self.fds: dict[int, tuple[int, list[tuple[int, int]]]] = {}

    def _inode(self, path: str) -> int:
        if path not in self.inodes:
            self.inodes[path] = self.next_inode
            self.paths[self.next_inode] = path
            self.next_inode += 1
        return self.inodes[path]

    def _attr(self, path: str) -> pyfuse3.EntryAttributes:
        try:
            st = os.lstat(path)
        except OSError as e:
            raise pyfuse3.FUSEError(e.errno) from None
        a = pyfuse3.EntryAttributes()
        a.st_ino = self._inode(path)
        a.st_mode = st.st_mode & ~0o222  # read-only
        a.st_nlink, a.st_uid, a.st_gid = st.st_nlink, st.st_uid, st.st_gid
        a.st_size = st.st_size
        a.st_atime_ns = st.st_atime_ns
        a.st_mtime_ns = st.st_mtime_ns
        a.st_ctime_ns = st.st_ctime_ns
        a.st_blksize, a.st_blocks = 4096, st.st_blocks
        a.entry_timeout = a.attr_timeout = 0
        return a

    async def lookup(self, parent_inode, name, ctx=None):
        return self._attr(os.path.join(self.paths[parent_inode], os.fsdecode(name)))

    async def getattr(self, inode, ctx=None):
        return self._attr(self.paths[inode])

    async def opendir(self, inode, ctx):
        return inode

    async def readdir(self, fh, start_id, token):
        names = sorted(os.listdir(self.paths[fh]))
        for i, name in enumerate(names[start_id:], start_id):
            attr = self._attr(os.path.join(self.paths[fh], name))
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attr, i + 1):
                break

    async def releasedir(self, fh):
        pass

    def _bad_ranges(self, path: str) -> list[tuple[int, int]]:
        try:
            with open(os.path.join(self.source, ".eio")) as f:
                lines = [line.split() for line in f if line.strip()]
        except FileNotFoundError:
            return []
        name = os.path.basename(path)
        return [(int(a), int(b)) for n, a, b in lines if n == name]

    async def open(self, inode, flags, ctx):
        if flags & (os.O_WRONLY | os.O_RDWR):
            raise pyfuse3.FUSEError(errno.EROFS)
        path = self.paths[inode]
        fd = os.open(path, os.O_RDONLY)
        self.fds[fd] = (fd, self._bad_ranges(path))
        fi = pyfuse3.FileInfo(fh=fd)
        fi.keep_cache = False
        fi.direct_io = True  # every read reaches us: no page cache hides the bad range
        return fi

    async def read(self, fh, off, size):
        _, bad = self.fds[fh]
        if any(off < b and a < off + size for a, b in bad):
            raise pyfuse3.FUSEError(errno.EIO)
        return os.pread(fh, size, off)

    async def release(self, fh):
        self.fds.pop(fh, None)
        os.close(fh)

    async def statfs(self, ctx):
        s = pyfuse3.StatvfsData()
        v = os.statvfs(self.source)
        for k in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                  "f_ffree", "f_favail", "f_namemax"):
            setattr(s, k, getattr(v, k))
        return s


def main() -> None:
    source, mountpoint = os.path.abspath(sys.argv[1]), sys.argv[2]
    if not stat.S_ISDIR(os.stat(source).st_mode):
        sys.exit(f"{source}: not a directory")
    pyfuse3.init(EioFS(source), mountpoint, {"fsname=eiofs", "ro", "default_permissions"})
    try:
        print("ready", flush=True)
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
