"""A name in an XFS directory tree, to the reader contract shared by the Linux readers
(ino, name, kind, mode, owners, times, iterdir/child/open/readlink/xattrs)."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Iterator

from streams.errors import FormatError, NotFoundError, UnsupportedError, UsageError
from streams.filekinds import FT_KINDS, kind_of_mode
from streams.stream import BytesStream, Stream

from . import dirs, xattr
from .bmap import FileStream, fork_map, read_logical
from .checksum import verify_crc
from .inode import FMT_DEV, FMT_LOCAL, Inode

if TYPE_CHECKING:
    from .volume import Volume

SYMLINK_MAX = 1024
# the file type in a directory entry (XFS_DIR3_FT_*): a listing knows each kind without
# reading the inode


class Entry:
    __slots__ = ("vol", "ino", "name", "_inode", "_kind")

    def __init__(self, vol: "Volume", ino: int, name: str, ftype: int = 0):
        self.vol = vol
        self.ino = ino
        self.name = name
        self._inode = None
        self._kind = FT_KINDS.get(ftype)

    @property
    def inode(self) -> Inode:
        """Read on first use and kept (the volume's LRU shares it between entries)."""
        got = self._inode
        if got is None:
            got = self._inode = self.vol.inode(self.ino)
        return got

    @property
    def mode(self) -> int:
        return self.inode.mode

    @property
    def kind(self) -> str:
        if self._inode is None and self._kind is not None:
            return self._kind
        return kind_of_mode(self.mode) or "unknown"

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    @property
    def is_symlink(self) -> bool:
        return self.kind == "symlink"

    size = property(lambda self: self.inode.size)
    uid = property(lambda self: self.inode.uid)
    gid = property(lambda self: self.inode.gid)
    nlink = property(lambda self: self.inode.nlink)
    atime_ns = property(lambda self: self.inode.atime_ns)
    mtime_ns = property(lambda self: self.inode.mtime_ns)
    ctime_ns = property(lambda self: self.inode.ctime_ns)
    crtime_ns = property(lambda self: self.inode.crtime_ns)

    @property
    def allocated(self) -> int:
        """Bytes of blocks the inode holds (data, bmbt and attribute blocks: st_blocks)."""
        return self.inode.nblocks * self.vol.block_size

    @property
    def rdev(self) -> int:
        ino = self.inode
        if ino.format != FMT_DEV or len(ino.data_fork) < 4:
            return 0
        dev = int.from_bytes(ino.data_fork[:4], "big")     # XFS: 14-bit major, 18-bit minor
        return os.makedev(dev >> 18, dev & 0x3FFFF)

    def _name(self) -> str:
        return f"{self.vol.name}: XFS inode {self.ino}"

    # -- directories -------------------------------------------------------------------

    def iterdir(self) -> Iterator["Entry"]:
        if not self.is_dir:
            raise UsageError(f"{self.name}: not a directory")
        for name, ino, ft in dirs.entries(self.vol, self.inode):
            yield Entry(self.vol, ino, name.decode("utf-8", "surrogateescape"), ft)

    def child(self, name: str) -> "Entry":
        """Answered from the directory's name table, built from one listing and kept in
        the volume's small cache of recent directories."""
        got = self.vol.name_table(self).get(name)
        if got is None:
            raise NotFoundError(f"{name}: no such file in {self.name}")
        child = Entry(self.vol, got[0], name)
        child._kind = got[1]
        return child

    # -- contents ----------------------------------------------------------------------

    def open(self) -> Stream:
        ino = self.inode
        if not stat.S_ISREG(ino.mode):
            raise UsageError(f"{self.name}: not a regular file")
        if ino.realtime:
            raise UnsupportedError("file on the realtime device", source=self.vol.name,
                                   structure=f"XFS inode {self.ino}")
        if ino.format == FMT_LOCAL:
            return BytesStream(ino.data_fork[:ino.size], name=self._name())
        return FileStream(self.vol, fork_map(self.vol, ino), ino.size, self._name())

    def readlink(self) -> str:
        ino = self.inode
        if not stat.S_ISLNK(ino.mode):
            raise UsageError(f"{self.name}: not a symbolic link")
        if ino.size > SYMLINK_MAX or ino.size == 0:
            raise FormatError(f"symlink of {ino.size} bytes", source=self.vol.name,
                              structure=f"XFS inode {self.ino}", offset=ino.offset)
        if ino.format == FMT_LOCAL:
            raw = ino.data_fork[:ino.size]
        else:
            raw = self._remote_symlink(ino)
        return raw.decode("utf-8", "surrogateescape")

    def _remote_symlink(self, ino: Inode) -> bytes:
        vol, sb = self.vol, self.vol.sb
        maps = fork_map(vol, ino)
        starts = [m.startoff for m in maps]
        hdr = 56 if sb.crc else 0
        per = sb.block_size - hdr
        nblocks = -(-ino.size // per)
        structure = f"XFS inode {self.ino} symlink block"
        raw = read_logical(vol, maps, starts, 0, nblocks, structure)
        if raw is None:
            raise FormatError("symlink blocks not mapped", source=vol.name, structure=structure)
        if not sb.crc:
            return raw[:ino.size]
        out = []
        for i in range(nblocks):
            blk = raw[i * sb.block_size:(i + 1) * sb.block_size]
            if blk[:4] != b"XSLM":
                raise FormatError("bad symlink block magic", source=vol.name, structure=structure)
            verify_crc(blk, 12, vol.name, structure, 0)
            out.append(blk[hdr:])
        return b"".join(out)[:ino.size]

    @property
    def has_xattrs(self) -> bool:
        """False only when the inode alone shows it has none (no attribute fork, or one
        that is empty): ``ls -l``'s getxattr is then answered without reading more."""
        ino = self.inode
        if ino.attr_fork is None:
            return False
        if ino.aformat == FMT_LOCAL:
            return len(ino.attr_fork) >= 3 and ino.attr_fork[2] > 0
        return ino.anextents > 0 or ino.aformat != 2

    def xattrs(self) -> dict[str, bytes]:
        return xattr.xattrs(self.vol, self.inode)

    def __repr__(self) -> str:
        return f"<xfs Entry {self.name!r} ino={self.ino}>"
