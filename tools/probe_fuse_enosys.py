#!/usr/bin/env python3
"""What the kernel does when a FUSE file system answers ENOSYS to OPEN and OPENDIR, seen
through pyfuse3 (issue 17: can rpfs skip those round trips?).

    sudo .venv/bin/python tools/probe_fuse_enosys.py MOUNTPOINT

A two-file file system whose open/opendir raise ENOSYS reads ``a``, ``b``, ``a`` and lists
the root twice, then prints what its handlers were asked. On kernel 6.18 (2026-12-07):
one OPEN and one OPENDIR, never again; READ gets fh 0 for both files (pyfuse3's read()
has no inode, so the two reads cannot be told apart); the second read of ``a`` and the
second listing come from the kernel's caches (KEEP_CACHE and CACHE_DIR are implied); no
RELEASE or RELEASEDIR. So a binding that hands read()/readdir() the request's inode would
drop OPEN, RELEASE, OPENDIR and RELEASEDIR and repeated READDIRPLUS; pyfuse3 3.5 cannot.
"""
import errno
import os
import stat
import sys

import pyfuse3
import trio
DATA = b"hello\n" * 1000
LOG: list[tuple] = []


class Ops(pyfuse3.Operations):
    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        e.st_ino = ino
        e.entry_timeout = e.attr_timeout = 60
        if ino == pyfuse3.ROOT_INODE:
            e.st_mode, e.st_nlink = stat.S_IFDIR | 0o555, 2
        else:
            e.st_mode, e.st_nlink, e.st_size = stat.S_IFREG | 0o444, 1, len(DATA)
        return e

    async def getattr(self, ino, ctx=None):
        return self._attr(ino)

    async def lookup(self, parent, name, ctx=None):
        if name in (b"a", b"b"):
            return self._attr(2 if name == b"a" else 3)
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def open(self, ino, flags, ctx):
        LOG.append(("open", ino))
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def opendir(self, ino, ctx):
        LOG.append(("opendir", ino))
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def read(self, fh, off, size):
        LOG.append(("read", fh, off, size))
        return DATA[off:off + size]

    async def readdir(self, fh, start, token):
        LOG.append(("readdir", fh, start))
        for i, name in enumerate([b"a", b"b"][start:], start):
            if not pyfuse3.readdir_reply(token, name, self._attr(2 + i), i + 1):
                break

    async def release(self, fh):
        LOG.append(("release", fh))

    async def releasedir(self, fh):
        LOG.append(("releasedir", fh))


def main(mp: str) -> None:
    pyfuse3.init(Ops(), mp, {"fsname=enosys", "ro"})

    async def run():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pyfuse3.main)
            await trio.sleep(0.5)

            def work():
                out = []
                for name in ("a", "b", "a"):
                    with open(os.path.join(mp, name), "rb") as f:
                        out.append(len(f.read()))
                out += [sorted(os.listdir(mp)), sorted(os.listdir(mp))]
                return out

            print("results", await trio.to_thread.run_sync(work))
            print("asked", LOG)
            pyfuse3.terminate()

    try:
        trio.run(run)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main(sys.argv[1])
