"""Extended attributes: in the inode's spare space and in one shared block (fs/ext4/xattr.h).

Names get their full prefix back (``user.``, ``trusted.``, ``security.``, ``system.``);
POSIX ACLs are stored in ext4's compact form and are given in the kernel's xattr format
(``posix_acl_xattr``, version 2), so ``getfacl`` on a restored copy reads them.
"""

from __future__ import annotations

import struct

from ext4_reader.checksum import crc32c_raw
from streams.errors import FormatError

MAGIC = 0xEA020000
PREFIXES = {1: "user.", 2: "system.posix_acl_access", 3: "system.posix_acl_default",
            4: "trusted.", 6: "security.", 7: "system.", 8: "system.richacl"}
ACL_TAGS_WITH_ID = (0x02, 0x08)      # ACL_USER, ACL_GROUP
ACL_UNDEFINED_ID = 0xFFFFFFFF
MAX_VALUE = 64 << 20                 # an EA inode value larger than this is refused


def _entries(data: bytes, start: int, value_base: int, end: int, where: str, source: str,
             offset: int, read_ea_inode) -> dict[str, bytes]:
    """Entries from ``start`` until the 4 zero bytes that end them; values at
    ``value_base + e_value_offs`` (or in an EA inode)."""
    out: dict[str, bytes] = {}
    pos = start
    while pos + 4 <= end:
        if struct.unpack_from("<I", data, pos)[0] == 0:
            break
        if pos + 16 > end:
            raise FormatError("entry runs past the end", source=source, structure=where,
                              offset=offset + pos)
        name_len, index, voffs, vinum, vsize, _hash = struct.unpack_from("<BBHIII", data, pos)
        name_end = pos + 16 + name_len
        if name_end > end:
            raise FormatError("name runs past the end", source=source, structure=where,
                              offset=offset + pos)
        suffix = data[pos + 16:name_end].decode("utf-8", "surrogateescape")
        prefix = PREFIXES.get(index)
        if prefix is None:
            pos = (name_end + 3) & ~3
            continue     # an index this reader does not name (e.g. Lustre's): left out
        name = prefix + suffix if index not in (2, 3) else prefix
        if vinum:
            if vsize > MAX_VALUE:
                raise FormatError(f"value of {vsize} bytes", source=source, structure=where,
                                  offset=offset + pos)
            value = read_ea_inode(vinum, vsize)
        else:
            vstart = value_base + voffs
            if vstart + vsize > len(data) or vstart < value_base:
                raise FormatError(f"value of {name} ({vsize} bytes at {voffs}) outside",
                                  source=source, structure=where, offset=offset + pos)
            value = data[vstart:vstart + vsize]
        if index in (2, 3):
            value = acl_to_xattr(value, source, where)
        out[name] = bytes(value)
        pos = (name_end + 3) & ~3
    return out


def inode_xattrs(extra: bytes, source: str, offset: int, ino: int, read_ea_inode) -> dict[str, bytes]:
    """The attributes after i_extra_isize (``extra``): magic, then entries; values are
    relative to the first entry."""
    if len(extra) < 4 or struct.unpack_from("<I", extra)[0] != MAGIC:
        return {}
    return _entries(extra, 4, 4, len(extra), f"ext4 in-inode xattrs of inode {ino}", source,
                    offset, read_ea_inode)


def block_xattrs(data: bytes, block: int, source: str, csum_seed: int | None,
                 read_ea_inode) -> dict[str, bytes]:
    """The attributes in an xattr block (header of 32 bytes, entries, values at the end)."""
    where = f"ext4 xattr block {block}"
    offset = block * len(data)
    magic, _refcount, nblocks, _hash, stored = struct.unpack_from("<5I", data)
    if magic != MAGIC or nblocks != 1:
        raise FormatError(f"bad xattr block header (magic {magic:#x}, {nblocks} blocks)",
                          source=source, structure=where, offset=offset)
    if csum_seed is not None:
        calc = crc32c_raw(csum_seed, struct.pack("<Q", block) + data[:16] + b"\0\0\0\0"
                          + data[20:])
        if calc != stored:
            raise FormatError(f"checksum {stored:#010x} does not match {calc:#010x}",
                              source=source, structure=where, offset=offset + 16)
    return _entries(data, 32, 0, len(data), where, source, offset, read_ea_inode)


def acl_to_xattr(value: bytes, source: str, where: str) -> bytes:
    """ext4's ACL (version 1; short entries without an id) -> the kernel's xattr form."""
    if len(value) < 4 or struct.unpack_from("<I", value)[0] != 1:
        raise FormatError("bad POSIX ACL header", source=source, structure=where)
    out = [struct.pack("<I", 2)]
    pos = 4
    while pos < len(value):
        if pos + 4 > len(value):
            raise FormatError("truncated POSIX ACL entry", source=source, structure=where)
        tag, perm = struct.unpack_from("<HH", value, pos)
        if tag in ACL_TAGS_WITH_ID:
            if pos + 8 > len(value):
                raise FormatError("truncated POSIX ACL entry", source=source, structure=where)
            (ident,) = struct.unpack_from("<I", value, pos + 4)
            pos += 8
        else:
            ident = ACL_UNDEFINED_ID
            pos += 4
        out.append(struct.pack("<HHI", tag, perm, ident))
    return b"".join(out)
