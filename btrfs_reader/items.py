"""Item values in the file system and root trees: inodes, directory entries, extents,
root items. Each parser checks lengths against the item and raises FormatError."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from streams.errors import FormatError

from .tree import Key

INODE_ITEM, INODE_REF, INODE_EXTREF = 1, 12, 13
XATTR_ITEM, DIR_ITEM, DIR_INDEX, EXTENT_DATA = 24, 84, 96, 108
ROOT_ITEM, ROOT_BACKREF, ROOT_REF = 132, 144, 156
FS_TREE, ROOT_TREE_DIR, FIRST_FREE, EMPTY_SUBVOL_DIR = 5, 6, 256, 2
FILE_EXTENT_INLINE, FILE_EXTENT_REG, FILE_EXTENT_PREALLOC = 0, 1, 2


@dataclass(frozen=True)
class InodeItem:
    size: int
    nbytes: int
    nlink: int
    uid: int
    gid: int
    mode: int
    rdev: int
    flags: int
    atime_ns: int
    ctime_ns: int
    mtime_ns: int
    otime_ns: int


# size nbytes block_group nlink uid gid mode rdev flags (16-71), then the four timestamps
_INODE = struct.Struct("<QQQIIIIQQ")
_TIMES = struct.Struct("<qIqIqIqI")


def inode_item(data: bytes, where: str, source: str) -> InodeItem:
    if len(data) < 160:
        raise FormatError(f"inode item of {len(data)} bytes", source=source, structure=where)
    size, nbytes, _bg, nlink, uid, gid, mode, rdev, flags = _INODE.unpack_from(data, 16)
    a, an, c, cn, m, mn, o, on = _TIMES.unpack_from(data, 112)
    g = 1_000_000_000
    return InodeItem(size=size, nbytes=nbytes, nlink=nlink, uid=uid, gid=gid, mode=mode,
                     rdev=rdev, flags=flags, atime_ns=a * g + min(an, g - 1),
                     ctime_ns=c * g + min(cn, g - 1), mtime_ns=m * g + min(mn, g - 1),
                     otime_ns=o * g + min(on, g - 1))


_DIR = struct.Struct("<QBQQHHB")


@dataclass(frozen=True)
class DirEntry:
    location: Key
    type: int
    name: bytes
    data: bytes


def dir_entries(data: bytes, where: str, source: str) -> list[DirEntry]:
    """A DIR_ITEM / DIR_INDEX / XATTR_ITEM value: one or more packed entries."""
    out = []
    pos = 0
    while pos < len(data):
        if pos + 30 > len(data):
            raise FormatError("directory item truncated", source=source, structure=where)
        oid, typ, off, _transid, data_len, name_len, ftype = _DIR.unpack_from(data, pos)
        end = pos + 30 + name_len + data_len
        if end > len(data):
            raise FormatError("directory item name past its end", source=source, structure=where)
        name = data[pos + 30:pos + 30 + name_len]
        out.append(DirEntry(Key(oid, typ, off), ftype, name, data[pos + 30 + name_len:end]))
        pos = end
    return out


@dataclass(frozen=True)
class FileExtent:
    offset: int           # in the file (the key's offset)
    ram_bytes: int
    compression: int
    type: int
    inline: bytes | None
    disk_bytenr: int = 0
    disk_num_bytes: int = 0
    extent_offset: int = 0
    num_bytes: int = 0

    @property
    def length(self) -> int:
        return len(self.inline) if self.inline is not None and not self.compression \
            else self.ram_bytes if self.inline is not None else self.num_bytes


def file_extent(key: Key, data: bytes, where: str, source: str) -> FileExtent:
    if len(data) < 21:
        raise FormatError("file extent item truncated", source=source, structure=where)
    _gen, ram_bytes = struct.unpack_from("<QQ", data, 0)
    compression, encryption, other, typ = struct.unpack_from("<BBHB", data, 16)
    if encryption or other:
        raise FormatError("encrypted or encoded file extent", source=source, structure=where)
    if typ == FILE_EXTENT_INLINE:
        return FileExtent(key.offset, ram_bytes, compression, typ, data[21:])
    if typ not in (FILE_EXTENT_REG, FILE_EXTENT_PREALLOC) or len(data) < 53:
        raise FormatError(f"file extent type {typ} of {len(data)} bytes", source=source,
                          structure=where)
    bytenr, disk_num, eoff, num = struct.unpack_from("<QQQQ", data, 21)
    return FileExtent(key.offset, ram_bytes, compression, typ, None, bytenr, disk_num, eoff, num)


@dataclass(frozen=True)
class RootItem:
    bytenr: int
    level: int
    root_dirid: int
    flags: int


def root_item(data: bytes, where: str, source: str) -> RootItem:
    if len(data) < 239:
        raise FormatError(f"root item of {len(data)} bytes", source=source, structure=where)
    root_dirid, bytenr = struct.unpack_from("<QQ", data, 168)
    flags, = struct.unpack_from("<Q", data, 208)
    return RootItem(bytenr=bytenr, level=data[238], root_dirid=root_dirid, flags=flags)
