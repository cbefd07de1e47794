"""A name in a Btrfs tree, to the reader contract shared by the Linux readers.

An entry is (tree, objectid): a subvolume's root directory is objectid 256 of its own
tree. ``ino`` is the objectid in the top-level tree and ``tree << 40 | objectid``
elsewhere, so inode numbers are unique across subvolumes and hard links share one.
"""

from __future__ import annotations

import os
import stat
from typing import Iterator

from streams.errors import FormatError, NotFoundError, UsageError
from streams.filekinds import FT_KINDS, kind_of_mode
from streams.stream import Stream

from . import items
from .checksum import name_hash
from .filedata import FileStream, check_extents

SYMLINK_MAX = 4096
EMPTY_DIR = items.InodeItem(size=0, nbytes=0, nlink=1, uid=0, gid=0, mode=stat.S_IFDIR | 0o755,
                            rdev=0, flags=0, atime_ns=0, ctime_ns=0, mtime_ns=0, otime_ns=0)


class Entry:
    __slots__ = ("vol", "tree", "objectid", "name", "_item", "_kind")

    def __init__(self, vol, tree: int, objectid: int, name: str, ftype: int = 0):
        self.vol = vol
        self.tree = tree
        self.objectid = objectid
        self.name = name
        self._item = None
        self._kind = FT_KINDS.get(ftype)

    @property
    def ino(self) -> int:
        return self.objectid if self.tree == items.FS_TREE else (self.tree << 40) | self.objectid

    @property
    def item(self) -> items.InodeItem:
        if self._item is None:
            if self.objectid == items.EMPTY_SUBVOL_DIR:
                self._item = EMPTY_DIR   # a subvolume's stale entry inside a snapshot
            else:
                self._item = self.vol.inode_item(self.tree, self.objectid)
        return self._item

    mode = property(lambda self: self.item.mode)
    is_dir = property(lambda self: self.kind == "dir")
    is_symlink = property(lambda self: self.kind == "symlink")

    @property
    def kind(self) -> str:
        if self._item is None and self._kind is not None:
            return self._kind
        return kind_of_mode(self.item.mode) or "unknown"
    size = property(lambda self: self.item.size)
    uid = property(lambda self: self.item.uid)
    gid = property(lambda self: self.item.gid)
    nlink = property(lambda self: self.item.nlink)
    atime_ns = property(lambda self: self.item.atime_ns)
    mtime_ns = property(lambda self: self.item.mtime_ns)
    ctime_ns = property(lambda self: self.item.ctime_ns)
    crtime_ns = property(lambda self: self.item.otime_ns)

    @property
    def allocated(self) -> int:
        """Bytes of extents the inode holds, rounded up to sectors as the kernel's
        st_blocks counts them."""
        sector = self.vol.block_size
        return -(-self.item.nbytes // sector) * sector

    @property
    def rdev(self) -> int:
        r = self.item.rdev
        return os.makedev((r >> 20) & 0xFFF, r & 0xFFFFF) if r else 0   # the kernel's dev_t

    def _where(self) -> str:
        return f"Btrfs tree {self.tree} inode {self.objectid}"

    # -- directories -------------------------------------------------------------------

    def _entry_for(self, d: items.DirEntry) -> "Entry":
        name = d.name.decode("utf-8", "surrogateescape")
        loc = d.location
        if loc.type == items.ROOT_ITEM:
            if self.vol.subvolume_linked(self.tree, loc.objectid):
                return Entry(self.vol, loc.objectid, items.FIRST_FREE, name)
            return Entry(self.vol, self.tree, items.EMPTY_SUBVOL_DIR, name)
        if loc.type != items.INODE_ITEM:
            raise FormatError(f"directory entry {name!r} points at item type {loc.type}",
                              source=self.vol.name, structure=self._where())
        return Entry(self.vol, self.tree, loc.objectid, name, d.type)

    def iterdir(self) -> Iterator["Entry"]:
        if not self.is_dir:
            raise UsageError(f"{self.name}: not a directory")
        if self.objectid == items.EMPTY_SUBVOL_DIR:
            return
        tree = self.vol.fs_tree(self.tree)
        for _key, data in tree.range(self.objectid, items.DIR_INDEX):
            for d in items.dir_entries(data, self._where() + " DIR_INDEX", self.vol.name):
                yield self._entry_for(d)

    def child(self, name: str) -> "Entry":
        if not self.is_dir:
            raise UsageError(f"{self.name}: not a directory")
        raw = name.encode("utf-8", "surrogateescape")
        if self.objectid != items.EMPTY_SUBVOL_DIR:
            data = self.vol.fs_tree(self.tree).get(
                items.Key(self.objectid, items.DIR_ITEM, name_hash(raw)))
            if data is not None:
                for d in items.dir_entries(data, self._where() + " DIR_ITEM", self.vol.name):
                    if d.name == raw:
                        return self._entry_for(d)
        raise NotFoundError(f"{name}: no such file in {self.name}")

    # -- contents ----------------------------------------------------------------------

    def _extents(self) -> list[items.FileExtent]:
        tree = self.vol.fs_tree(self.tree)
        where = self._where() + " EXTENT_DATA"
        out = [items.file_extent(k, d, where, self.vol.name)
               for k, d in tree.range(self.objectid, items.EXTENT_DATA)]
        return check_extents(out, self.vol.name, where)

    def open(self) -> Stream:
        if not stat.S_ISREG(self.mode):
            raise UsageError(f"{self.name}: not a regular file")
        return FileStream(self.vol, self._extents(), self.size,
                          f"{self.vol.name}: {self._where()}")

    def readlink(self) -> str:
        if not stat.S_ISLNK(self.mode):
            raise UsageError(f"{self.name}: not a symbolic link")
        if not 0 < self.size <= SYMLINK_MAX:
            raise FormatError(f"symlink of {self.size} bytes", source=self.vol.name,
                              structure=self._where())
        stream = FileStream(self.vol, self._extents(), self.size,
                            f"{self.vol.name}: {self._where()}")
        return stream.read(0, self.size).decode("utf-8", "surrogateescape")

    @property
    def has_xattrs(self) -> bool:
        """Whether any XATTR_ITEM follows the inode item (its leaf is read already): the
        mount then answers ``ls -l``'s getxattr of the others from memory."""
        if self.objectid == items.EMPTY_SUBVOL_DIR:
            return False
        tree = self.vol.fs_tree(self.tree)
        return next(iter(tree.range(self.objectid, items.XATTR_ITEM)), None) is not None

    def xattrs(self) -> dict[str, bytes]:
        if self.objectid == items.EMPTY_SUBVOL_DIR:
            return {}
        out = {}
        tree = self.vol.fs_tree(self.tree)
        for _k, data in tree.range(self.objectid, items.XATTR_ITEM):
            for d in items.dir_entries(data, self._where() + " XATTR_ITEM", self.vol.name):
                out[d.name.decode("utf-8", "surrogateescape")] = d.data
        return out

    def __repr__(self) -> str:
        return f"<btrfs Entry {self.name!r} tree={self.tree} objectid={self.objectid}>"
