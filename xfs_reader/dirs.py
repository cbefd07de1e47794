"""Directories: short-form (in the inode), and block, leaf, node and B+tree forms, which
all keep their entries in data blocks in the first 32 GiB of the directory's block space.
Listing reads just those data blocks; the hash index (leaf/node blocks above) is not
needed to enumerate, and a lookup is answered from the listing.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Iterator

from streams.errors import FormatError

from .bmap import fork_map, read_logical
from .checksum import verify_crc
from .inode import FMT_BTREE, FMT_EXTENTS, FMT_LOCAL, Inode

if TYPE_CHECKING:
    from .volume import Volume

LEAF_OFFSET = 32 << 30          # byte offset in the directory where hash blocks start
DATA_MAGICS_V4 = {b"XD2B": True, b"XD2D": False}     # magic -> is single-block form
DATA_MAGICS_V5 = {b"XDB3": True, b"XDD3": False}
FREE_TAG = 0xFFFF


def entries(vol: "Volume", inode: Inode) -> Iterator[tuple[bytes, int, int]]:
    """(name, inode number, file type or 0) of every entry but '.' and '..'."""
    if inode.format == FMT_LOCAL:
        yield from _shortform(vol, inode)
    elif inode.format in (FMT_EXTENTS, FMT_BTREE):
        yield from _blocks(vol, inode)
    else:
        raise FormatError(f"directory fork format {inode.format}", source=vol.name,
                          structure=f"XFS directory inode {inode.ino}", offset=inode.offset)


def _shortform(vol: "Volume", inode: Inode) -> Iterator[tuple[bytes, int, int]]:
    buf = inode.data_fork
    structure = f"XFS short-form directory inode {inode.ino}"

    def bad(msg: str) -> FormatError:
        return FormatError(msg, source=vol.name, structure=structure, offset=inode.offset)

    if len(buf) < 6:
        raise bad("too small")
    count, i8 = buf[0], buf[1]
    isize = 8 if i8 else 4
    pos = 2 + isize
    ftype = vol.sb.has_ftype
    end = min(len(buf), inode.size)
    for _ in range(count):
        if pos + 3 > end:
            raise bad("entry past the end of the directory")
        namelen = buf[pos]
        name = buf[pos + 3:pos + 3 + namelen]
        pos += 3 + namelen
        ft = 0
        if ftype:
            ft = buf[pos] if pos < end else 0
            pos += 1
        if namelen == 0 or pos + isize > end:
            raise bad("entry past the end of the directory")
        ino = int.from_bytes(buf[pos:pos + isize], "big")
        pos += isize
        yield name, ino, ft


def _blocks(vol: "Volume", inode: Inode) -> Iterator[tuple[bytes, int, int]]:
    sb = vol.sb
    maps = fork_map(vol, inode)
    starts = [m.startoff for m in maps]
    per = 1 << sb.dirblklog
    limit = LEAF_OFFSET // sb.block_size
    magics = DATA_MAGICS_V5 if sb.crc else DATA_MAGICS_V4
    hdr = 64 if sb.crc else 16
    ftype = sb.has_ftype
    dbs = sb.dir_block_size
    done: set[int] = set()
    for m in maps:
        if m.startoff >= limit:
            break
        first = m.startoff - m.startoff % per
        for lb in range(first, min(m.startoff + m.count, limit), per):
            if lb in done:
                continue
            done.add(lb)
            structure = f"XFS directory inode {inode.ino} block {lb}"
            blk = read_logical(vol, maps, starts, lb, per, structure)
            if blk is None:
                continue
            single = magics.get(blk[:4])
            at = sb.fsb_to_byte(m.startblock + max(0, lb - m.startoff))
            if single is None:
                raise FormatError("bad directory data block magic", source=vol.name,
                                  structure=structure, offset=at)
            if sb.crc:
                verify_crc(blk, 4, vol.name, structure, at)
                owner = struct.unpack_from(">Q", blk, 40)[0]
                if owner != inode.ino:
                    raise FormatError(f"block owned by inode {owner}", source=vol.name,
                                      structure=structure, offset=at)
            end = dbs
            if single:
                count = struct.unpack_from(">I", blk, dbs - 8)[0]
                end = dbs - 8 - count * 8
                if end < hdr:
                    raise FormatError(f"{count} leaf entries do not fit", source=vol.name,
                                      structure=structure, offset=at)
            yield from _data_entries(vol, blk, hdr, end, ftype, structure, at)


def _data_entries(vol, blk: bytes, pos: int, end: int, ftype: bool, structure: str,
                  at: int) -> Iterator[tuple[bytes, int, int]]:
    while pos < end:
        if pos + 8 > end:
            raise FormatError("entry crosses the end of the block", source=vol.name,
                              structure=structure, offset=at + pos)
        tag, length = struct.unpack_from(">HH", blk, pos)
        if tag == FREE_TAG:
            if length < 8 or length % 8 or pos + length > end:
                raise FormatError(f"free space of {length} bytes", source=vol.name,
                                  structure=structure, offset=at + pos)
            pos += length
            continue
        ino = struct.unpack_from(">Q", blk, pos)[0]
        namelen = blk[pos + 8]
        size = (8 + 1 + namelen + (1 if ftype else 0) + 2 + 7) & ~7
        if namelen == 0 or pos + size > end:
            raise FormatError("entry crosses the end of the block", source=vol.name,
                              structure=structure, offset=at + pos)
        name = blk[pos + 9:pos + 9 + namelen]
        ft = blk[pos + 9 + namelen] if ftype else 0
        pos += size
        if name in (b".", b".."):
            continue
        yield name, ino, ft
