"""Extended attributes: short-form (in the inode), leaf and node forms (attribute-fork
blocks; values in the leaf or in "remote" blocks). Names get the kernel's namespace
prefix; XFS's own ACL attributes become system.posix_acl_* in the kernel's xattr format.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from streams.errors import FormatError

from .bmap import fork_map, read_logical
from .checksum import verify_crc
from .inode import FMT_BTREE, FMT_EXTENTS, FMT_LOCAL, Inode

if TYPE_CHECKING:
    from .volume import Volume

ATTR_LOCAL, ATTR_ROOT, ATTR_SECURE, ATTR_PARENT, ATTR_INCOMPLETE = 1, 2, 4, 8, 0x80
LEAF_MAGICS = {0xFBEE: False, 0x3BEE: True}   # magic -> v5 header
NODE_MAGICS = {0xFEBE, 0x3EBE}
ACL_NAMES = {b"SGI_ACL_FILE": "system.posix_acl_access",
             b"SGI_ACL_DEFAULT": "system.posix_acl_default"}
ACL_USER, ACL_GROUP = 0x02, 0x08
MAX_ACL_ENTRIES = 8191


def _full_name(vol, name: bytes, flags: int, value: bytes) -> list[tuple[str, bytes]]:
    """The names the kernel lists for one attribute: an ACL shows both as the trusted
    attribute it is stored as and as the system.posix_acl_* name it serves."""
    if flags & (ATTR_INCOMPLETE | ATTR_PARENT):
        return []
    prefix = "trusted." if flags & ATTR_ROOT else "security." if flags & ATTR_SECURE else "user."
    out = [(prefix + name.decode("utf-8", "surrogateescape"), value)]
    if flags & ATTR_ROOT and name in ACL_NAMES:
        out.append((ACL_NAMES[name], _acl_to_posix(vol, value)))
    return out


def _acl_to_posix(vol, value: bytes) -> bytes:
    """XFS's big-endian ACL (count, then tag/id/perm) -> the kernel's posix_acl xattr."""
    if len(value) < 4:
        raise FormatError("ACL too short", source=vol.name, structure="XFS ACL attribute")
    n = struct.unpack_from(">I", value, 0)[0]
    if n > MAX_ACL_ENTRIES or 4 + 12 * n > len(value):
        raise FormatError(f"ACL of {n} entries in {len(value)} bytes", source=vol.name,
                          structure="XFS ACL attribute")
    out = [struct.pack("<I", 2)]
    for i in range(n):
        tag, ident, perm = struct.unpack_from(">IIH", value, 4 + 12 * i)
        if tag not in (ACL_USER, ACL_GROUP):
            ident = 0xFFFFFFFF
        out.append(struct.pack("<HHI", tag, perm, ident))
    return b"".join(out)


def xattrs(vol: "Volume", inode: Inode) -> dict[str, bytes]:
    fork = inode.attr_fork
    if fork is None:
        return {}
    out: dict[str, bytes] = {}
    if inode.aformat == FMT_LOCAL:
        _shortform(vol, inode, out)
    elif inode.aformat in (FMT_EXTENTS, FMT_BTREE):
        _blocks(vol, inode, out)
    else:
        raise FormatError(f"attribute fork format {inode.aformat}", source=vol.name,
                          structure=f"XFS inode {inode.ino} attributes", offset=inode.offset)
    return out


def _shortform(vol, inode: Inode, out: dict) -> None:
    buf = inode.attr_fork
    structure = f"XFS inode {inode.ino} short-form attributes"
    if len(buf) < 4:
        raise FormatError("too small", source=vol.name, structure=structure, offset=inode.offset)
    totsize, count = struct.unpack_from(">HB", buf, 0)
    end = min(totsize, len(buf))
    pos = 4
    for _ in range(count):
        if pos + 3 > end:
            raise FormatError("entry past the end", source=vol.name, structure=structure,
                              offset=inode.offset)
        namelen, valuelen, flags = buf[pos], buf[pos + 1], buf[pos + 2]
        if pos + 3 + namelen + valuelen > end:
            raise FormatError("entry past the end", source=vol.name, structure=structure,
                              offset=inode.offset)
        name = buf[pos + 3:pos + 3 + namelen]
        value = buf[pos + 3 + namelen:pos + 3 + namelen + valuelen]
        pos += 3 + namelen + valuelen
        out.update(_full_name(vol, name, flags, value))


def _blocks(vol, inode: Inode, out: dict) -> None:
    """Block 0 is a leaf, or the root of a dabtree whose leftmost leaf starts a chain of
    leaves linked by their forward pointers."""
    sb = vol.sb
    maps = fork_map(vol, inode, attr=True)
    if not maps:
        return
    starts = [m.startoff for m in maps]
    seen: set[int] = set()
    lb, depth = 0, 0
    while True:
        structure = f"XFS inode {inode.ino} attribute block {lb}"
        if lb in seen:
            raise FormatError("attribute block chain loops", source=vol.name,
                              structure=structure, offset=inode.offset)
        seen.add(lb)
        blk = read_logical(vol, maps, starts, lb, 1, structure)
        if blk is None:
            raise FormatError("attribute block not mapped", source=vol.name,
                              structure=structure, offset=inode.offset)
        magic = struct.unpack_from(">H", blk, 8)[0]
        if magic in NODE_MAGICS:
            v5 = magic == 0x3EBE
            if v5:
                verify_crc(blk, 12, vol.name, structure, inode.offset)
            count = struct.unpack_from(">H", blk, 56 if v5 else 12)[0]
            depth += 1
            if count == 0 or depth > 5:
                raise FormatError(f"attribute node with {count} entries at depth {depth}",
                                  source=vol.name, structure=structure, offset=inode.offset)
            lb = struct.unpack_from(">I", blk, (64 if v5 else 16) + 4)[0]
            continue
        v5 = LEAF_MAGICS.get(magic)
        if v5 is None:
            raise FormatError(f"bad attribute block magic {magic:#06x}", source=vol.name,
                              structure=structure, offset=inode.offset)
        _leaf(vol, blk, v5, maps, starts, structure, out)
        lb = struct.unpack_from(">I", blk, 0)[0]
        if lb == 0:
            return


def _leaf(vol, blk: bytes, v5: bool, maps, starts, structure: str, out: dict) -> None:
    if v5:
        verify_crc(blk, 12, vol.name, structure, 0)
    hdr = 80 if v5 else 32
    count = struct.unpack_from(">H", blk, 56 if v5 else 12)[0]
    if hdr + count * 8 > len(blk):
        raise FormatError(f"{count} entries do not fit", source=vol.name, structure=structure)
    for i in range(count):
        _hash, nameidx, flags = struct.unpack_from(">IHB", blk, hdr + 8 * i)
        out.update(_leaf_entry(vol, blk, nameidx, flags, maps, starts, structure, 0, v5))


def _leaf_entry(vol, blk: bytes, idx: int, flags: int, maps, starts, structure: str,
                at: int, v5: bool):
    bs = len(blk)

    def bad(msg: str) -> FormatError:
        return FormatError(msg, source=vol.name, structure=structure, offset=at + idx)

    if flags & ATTR_LOCAL:
        if idx + 3 > bs:
            raise bad("name index past the block")
        valuelen, namelen = struct.unpack_from(">HB", blk, idx)
        if idx + 3 + namelen + valuelen > bs:
            raise bad("entry past the block")
        name = blk[idx + 3:idx + 3 + namelen]
        value = blk[idx + 3 + namelen:idx + 3 + namelen + valuelen]
    else:
        if idx + 9 > bs:
            raise bad("name index past the block")
        valueblk, valuelen, namelen = struct.unpack_from(">IIB", blk, idx)
        if idx + 9 + namelen > bs or valuelen > 1 << 16:
            raise bad("remote entry out of range")
        name = blk[idx + 9:idx + 9 + namelen]
        value = _remote_value(vol, maps, starts, valueblk, valuelen, structure, v5)
    return _full_name(vol, name, flags, value)


def _remote_value(vol, maps, starts, valueblk: int, valuelen: int, structure: str,
                  v5: bool) -> bytes:
    bs = vol.sb.block_size
    per = bs - 56 if v5 else bs
    nblocks = (valuelen + per - 1) // per
    raw = read_logical(vol, maps, starts, valueblk, nblocks, structure + " remote value")
    if raw is None:
        raise FormatError(f"remote value at attribute block {valueblk} is not mapped",
                          source=vol.name, structure=structure)
    if not v5:
        return raw[:valuelen]
    parts = []
    left = valuelen
    for i in range(nblocks):
        blk = raw[i * bs:(i + 1) * bs]
        if blk[:4] != b"XARM":
            raise FormatError("bad remote attribute block magic", source=vol.name,
                              structure=structure + " remote value")
        verify_crc(blk, 12, vol.name, structure + " remote value", 0)
        n = min(left, per)
        parts.append(blk[56:56 + n])
        left -= n
    return b"".join(parts)
