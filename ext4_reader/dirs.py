"""Directory blocks (ext4_dir_entry_2), linear and hashed (htree) alike.

An htree directory's index blocks look to a linear reader like one empty entry spanning the
block (that is how ext2 stays able to read them), so every block is read in order and the
index is not needed to list; a lookup uses the listing, kept per directory by the volume.
With metadata_csum each leaf block ends in a 12-byte tail holding its checksum.
"""

from __future__ import annotations

import struct

from ext4_reader.checksum import crc32c_raw
from streams.errors import FormatError

TAIL_FT = 0xDE
_DIRENT = struct.Struct("<IHBB")


def parse_block(data: bytes, *, filetype: bool, source: str, where: str, offset: int,
                out: list, csum_seed: int | None = None, first: bool = False,
                start: int = 0) -> None:
    """Append (name bytes, inode, file type or 0) of every live entry in one block.

    ``csum_seed``: the directory inode's checksum seed (metadata_csum); the block's tail
    is checked unless it is an htree index block (those have their own tail, not checked:
    nothing reads them). ``first``: block 0, which may be an htree root."""
    size = len(data)
    if csum_seed is not None:
        index_block = _is_index_block(data, first)
        if not index_block:
            if size < 12:
                raise FormatError("block too small for its checksum tail", source=source,
                                  structure=where, offset=offset)
            ino, rec_len, name_len, ft = _DIRENT.unpack_from(data, size - 12)
            if ino == 0 and rec_len == 12 and name_len == 0 and ft == TAIL_FT:
                (stored,) = struct.unpack_from("<I", data, size - 4)
                calc = crc32c_raw(csum_seed, data[:size - 12])
                if calc != stored:
                    raise FormatError(f"checksum {stored:#010x} does not match {calc:#010x}",
                                      source=source, structure=where, offset=offset + size - 4)
                size -= 12
            else:
                raise FormatError("no checksum tail in a directory block of a file system "
                                  "with metadata_csum", source=source, structure=where,
                                  offset=offset + size - 12)
        else:
            return
    pos = start
    while pos < size:
        if pos + 8 > size:
            raise FormatError("entry header runs past the block", source=source,
                              structure=where, offset=offset + pos)
        ino, rec_len, name_len, ft = _DIRENT.unpack_from(data, pos)
        if rec_len == 0 or rec_len == 65535:
            rec_len = 1 << 16 if len(data) == 1 << 16 else rec_len
        if rec_len < 8 or rec_len & 3 or pos + rec_len > len(data) or 8 + name_len > rec_len:
            raise FormatError(f"bad entry (rec_len {rec_len}, name_len {name_len})",
                              source=source, structure=where, offset=offset + pos)
        if ino:
            name = data[pos + 8:pos + 8 + name_len]
            if name not in (b".", b".."):
                if not name or b"/" in name or b"\0" in name:
                    raise FormatError(f"bad name {name!r}", source=source, structure=where,
                                      offset=offset + pos)
                out.append((name, ino, ft if filetype else 0))
        pos += rec_len


def _is_index_block(data: bytes, first: bool) -> bool:
    """An htree node: one entry with inode 0 spanning the block (or, for block 0, "."
    and a ".." whose rec_len reaches the end, followed by dx_root_info)."""
    ino, rec_len, _nl, _ft = _DIRENT.unpack_from(data, 0)
    if ino == 0 and rec_len in (len(data), 0, 65535):
        return True
    if first and rec_len == 12 and len(data) >= 32:
        _i2, rec2, nl2, _f2 = _DIRENT.unpack_from(data, 12)
        if nl2 == 2 and data[20:22] == b".." and 12 + rec2 == len(data):
            reserved, _hv, info_len = struct.unpack_from("<IBB", data, 24)
            return reserved == 0 and info_len == 8
    return False
