"""An ext2/3/4 volume and its entries, per the reader contract (docs/filesystems.md).

Opening reads the superblock and, if the journal holds committed transactions not yet
written home, the journal's log (replayed in memory, journal.py); group descriptors,
inodes and directories are read when first needed and kept in small LRUs.
"""

from __future__ import annotations

import os
import struct
import threading
from typing import Iterator

from ext4_reader import dirs, journal, xattr
from ext4_reader.inode import (
    EXTENTS_FL, INLINE_DATA_FL, INLINE_SIZE, BlockMap, FileStream, Inode, Run, check_supported,
    extent_runs, indirect_runs, parse_inode,
)
from ext4_reader.superblock import (
    COMPAT_HAS_JOURNAL, INCOMPAT_64BIT, INCOMPAT_FILETYPE, INCOMPAT_INLINE_DATA, INCOMPAT_RECOVER,
    RO_COMPAT_HUGE_FILE, SUPERBLOCK_OFFSET, descriptor_block, parse_descriptor, parse_superblock,
)
from streams.errors import FormatError, NotFoundError, RpfsError, UsageError
from streams.filekinds import FT_KINDS
from streams.lru import LRU
from streams.stream import BytesStream, Stream

ROOT_INO = 2
MAX_SYMLINK = 4096
MAX_DIR_BYTES = 1 << 30      # a directory larger than this is refused (hostile size)


def open_volume(stream: Stream) -> "Volume":
    return Volume(stream)


class Volume:
    """One ext2/3/4 file system on ``stream`` (read-only; the journal replayed in memory)."""

    def __init__(self, stream: Stream):
        self.stream = stream
        self.name = getattr(stream, "name", "<ext4>")
        self.warnings: list[str] = []
        raw = stream.read(SUPERBLOCK_OFFSET, 1024)
        self.sb = parse_superblock(raw, self.name)
        self.block_size = self.sb.block_size
        self.size = self.sb.blocks_count * self.block_size
        if self.size > stream.size:
            self.warnings.append(f"the file system says {self.size} bytes, the volume holds "
                                 f"{stream.size} (truncated: blocks past the end read as errors)")
        self._lock = threading.Lock()
        self._descs = LRU(1024)
        self._inodes = LRU(8192)
        self._table_blocks = LRU(1024)  # raw inode table blocks (4 MiB at 4 KiB blocks)
        self._dirs = LRU(64)        # inode -> {name bytes: (ino, file type)} for lookups
        self._overlay: dict[int, tuple[int, bool]] = {}
        self._journal = None
        self.replayed_transactions = 0
        self.fs_type = self.sb.fs_type
        self.label = self.sb.label
        self.uuid = self.sb.uuid_str
        self._replay()
        self.state = self._state()

    # -- blocks ------------------------------------------------------------------------

    def read_into(self, offset: int, view: memoryview) -> None:
        """Volume bytes at ``offset`` into ``view``, with journal-replayed blocks in place."""
        n = len(view)
        if offset + n > self.stream.size:
            raise FormatError(f"read of {n} bytes past the end of the volume ({self.stream.size})",
                              source=self.name, structure="ext4 block", offset=offset)
        self.stream.readinto(offset, view)
        if self._overlay:
            bs = self.block_size
            first, last = offset // bs, (offset + n - 1) // bs
            if last - first < len(self._overlay):
                blocks = [b for b in range(first, last + 1) if b in self._overlay]
            else:
                blocks = sorted(b for b in self._overlay if first <= b <= last)
            for b in blocks:
                data = self._journal_block(b)
                lo = max(offset, b * bs)
                hi = min(offset + n, (b + 1) * bs)
                view[lo - offset:hi - offset] = data[lo - b * bs:hi - b * bs]

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)
        self.read_into(offset, memoryview(buf))
        return bytes(buf)

    def read_block(self, block: int) -> bytes:
        if block >= self.sb.blocks_count:
            raise FormatError(f"block {block} is past the end of the file system",
                              source=self.name, structure="ext4 block",
                              offset=block * self.block_size)
        return self.read(block * self.block_size, self.block_size)

    def _journal_block(self, block: int) -> bytes:
        jblock, escaped = self._overlay[block]
        data = self._journal.block(jblock)
        if escaped:
            data = struct.pack(">I", journal.MAGIC) + data[4:]
        return data

    # -- journal -----------------------------------------------------------------------

    def _replay(self) -> None:
        sb = self.sb
        if not sb.feature_compat & COMPAT_HAS_JOURNAL or not sb.feature_incompat & INCOMPAT_RECOVER:
            return
        if sb.journal_inum == 0:
            self.warnings.append("the journal is on another device: not replayed")
            return
        jinode = self.inode(sb.journal_inum)
        self._journal = journal.Journal(self._data_stream(jinode, "journal"), self.block_size,
                                        self.name)
        result = self._journal.replay()
        self.warnings += result.warnings
        if result.blocks:
            with self._lock:
                self._overlay = dict(result.blocks)
            self._inodes.clear()
            self._descs.clear()
            self._table_blocks.clear()
            # The superblock itself may be among the replayed blocks.
            raw = self.read(SUPERBLOCK_OFFSET, 1024)
            try:
                self.sb = parse_superblock(raw, self.name)
            except RpfsError as e:
                self.warnings.append(f"the journal's copy of the superblock is not used: {e}")
        self.replayed_transactions = result.transactions

    def _state(self) -> str:
        if self.replayed_transactions:
            return (f"needs journal recovery (replayed in memory: "
                    f"{self.replayed_transactions} transactions, {len(self._overlay)} blocks)")
        if self.sb.feature_incompat & INCOMPAT_RECOVER:
            return "needs journal recovery (the journal holds nothing to replay)"
        if self.sb.state & 2:
            return "errors"
        return "clean" if self.sb.state & 1 else "not clean"

    # -- inodes ------------------------------------------------------------------------

    def _desc(self, group: int):
        d = self._descs.get(group)
        if d is None:
            sb = self.sb
            per_block = self.block_size // sb.desc_size
            block = descriptor_block(sb, group // per_block)
            within = (group % per_block) * sb.desc_size
            raw = self.read(block * self.block_size + within, sb.desc_size)
            d = parse_descriptor(sb, group, raw, self.name, block * self.block_size + within)
            self._descs.put(group, d)
        return d

    def inode(self, ino: int) -> Inode:
        node = self._inodes.get(ino)
        if node is not None:
            return node
        sb = self.sb
        if not 1 <= ino <= sb.inodes_count:
            raise FormatError(f"inode number {ino} out of range (1..{sb.inodes_count})",
                              source=self.name, structure="ext4 inode")
        group, index = divmod(ino - 1, sb.inodes_per_group)
        d = self._desc(group)
        offset = d.inode_table * self.block_size + index * sb.inode_size
        if d.inode_table >= sb.blocks_count:
            raise FormatError(f"inode table of group {group} at block {d.inode_table} is past "
                              "the end", source=self.name, structure=f"ext4 group descriptor {group}")
        raw = self._table_bytes(offset, sb.inode_size)
        node = parse_inode(raw, ino, inode_size=sb.inode_size,
                           huge_file=sb.has_ro_compat(RO_COMPAT_HUGE_FILE),
                           csum_seed=sb.csum_seed if sb.metadata_csum else None,
                           source=self.name, offset=offset, block_size=self.block_size)
        self._inodes.put(ino, node)
        return node

    def _table_bytes(self, offset: int, length: int) -> bytes:
        """Inode table bytes, read a block at a time (a listing's inodes are neighbours)."""
        bs = self.block_size
        block, within = divmod(offset, bs)
        if within + length > bs:
            return self.read(offset, length)
        data = self._table_blocks.get(block)
        if data is None:
            data = self.read(block * bs, bs)
            self._table_blocks.put(block, data)
        return data[within:within + length]

    def inode_seed(self, inode: Inode) -> int:
        from ext4_reader.checksum import crc32c_raw

        return crc32c_raw(self.sb.csum_seed, struct.pack("<II", inode.ino, inode.generation))

    def block_map(self, inode: Inode) -> BlockMap:
        if inode.flags & EXTENTS_FL:
            return BlockMap(extent_runs(self, inode))
        return BlockMap(indirect_runs(self, inode))

    def _data_stream(self, inode: Inode, name: str) -> Stream:
        check_supported(inode, self.name)
        if inode.flags & INLINE_DATA_FL and self.sb.has_incompat(INCOMPAT_INLINE_DATA):
            data = self._inline(inode)
            if len(data) < inode.size:
                raise FormatError(f"inline data holds {len(data)} of {inode.size} bytes",
                                  source=self.name, structure=f"ext4 inode {inode.ino}")
            return BytesStream(data[:inode.size], name=name)
        return FileStream(self, inode, self.block_map(inode), name)

    def _inline(self, inode: Inode) -> bytes:
        extra = self.xattrs(inode, in_inode_only=True).get("system.data", b"")
        return inode.block + extra

    # -- xattrs ------------------------------------------------------------------------

    def xattrs(self, inode: Inode, in_inode_only: bool = False) -> dict[str, bytes]:
        sb = self.sb
        group, index = divmod(inode.ino - 1, sb.inodes_per_group)
        at = (self._desc(group).inode_table * self.block_size + (index + 1) * sb.inode_size
              - len(inode.extra))          # where the in-inode attributes start (errors)
        out = xattr.inode_xattrs(inode.extra, self.name, at, inode.ino, self._ea_inode)
        if in_inode_only or not inode.file_acl:
            return out
        if inode.file_acl >= sb.blocks_count:
            raise FormatError(f"xattr block {inode.file_acl} past the end", source=self.name,
                              structure=f"ext4 inode {inode.ino}")
        block = self.read_block(inode.file_acl)
        seed = sb.csum_seed if sb.metadata_csum else None
        for name, value in xattr.block_xattrs(block, inode.file_acl, self.name, seed,
                                              self._ea_inode).items():
            out.setdefault(name, value)
        return out

    def _ea_inode(self, ino: int, size: int) -> bytes:
        node = self.inode(ino)
        s = self._data_stream(node, f"xattr inode {ino}")
        data = s.read(0, size)
        if len(data) != size:
            raise FormatError(f"xattr inode {ino} holds {len(data)} of {size} bytes",
                              source=self.name, structure=f"ext4 inode {ino}")
        return data

    # -- directories -------------------------------------------------------------------

    def dir_entries(self, inode: Inode) -> list[tuple[bytes, int, int]]:
        """(name, inode, file type) of every entry but . and .., in on-disk order."""
        sb = self.sb
        if inode.size > MAX_DIR_BYTES:
            raise FormatError(f"directory of {inode.size} bytes", source=self.name,
                              structure=f"ext4 inode {inode.ino}")
        filetype = sb.has_incompat(INCOMPAT_FILETYPE)
        out: list = []
        where = f"ext4 directory inode {inode.ino}"
        if inode.flags & INLINE_DATA_FL and sb.has_incompat(INCOMPAT_INLINE_DATA):
            data = self._inline(inode)
            # 4 bytes of parent inode, then entries in i_block; more in system.data
            dirs.parse_block(data[:INLINE_SIZE], filetype=filetype, source=self.name,
                             where=where, offset=0, out=out, start=4)
            if len(data) > INLINE_SIZE:
                dirs.parse_block(data[INLINE_SIZE:], filetype=filetype, source=self.name,
                                 where=where, offset=0, out=out)
            return out
        stream = FileStream(self, inode, self.block_map(inode), where)
        bs = self.block_size
        seed = self.inode_seed(inode) if sb.metadata_csum else None
        for ext in stream.extents():
            if ext.kind != "data":
                continue
            for off in range(ext.offset, ext.end, bs):
                data = stream.read(off, bs)
                if len(data) < bs:
                    break
                dirs.parse_block(data, filetype=filetype, source=self.name,
                                 where=f"{where} block {off // bs}", offset=off, out=out,
                                 csum_seed=seed, first=off == 0)
        return out

    def dir_index(self, inode: Inode) -> dict[bytes, tuple[int, int]]:
        index = self._dirs.get(inode.ino)
        if index is None:
            index = {name: (ino, ft) for name, ino, ft in self.dir_entries(inode)}
            self._dirs.put(inode.ino, index)
        return index

    # -- the contract ------------------------------------------------------------------

    @property
    def root(self) -> "Entry":
        e = Entry(self, ROOT_INO, "", 2)
        if e.kind != "dir":
            raise FormatError("the root inode is not a directory", source=self.name,
                              structure=f"ext4 inode {ROOT_INO}")
        return e

    def entry(self, ino: int) -> "Entry":
        return Entry(self, ino, str(ino), 0)

    def lookup(self, path: str) -> "Entry":
        e = self.root
        for part in [p for p in path.split("/") if p]:
            e = e.child(part)
        return e

    def describe(self) -> dict:
        sb = self.sb
        return {
            "filesystem": self.fs_type, "label": self.label, "uuid": self.uuid,
            "size": self.size, "block_size": self.block_size, "state": self.state,
            "inodes": sb.inodes_count, "inode_size": sb.inode_size,
            "features": {"compat": f"{sb.feature_compat:#x}", "incompat": f"{sb.feature_incompat:#x}",
                         "ro_compat": f"{sb.feature_ro_compat:#x}"},
            "metadata_csum": sb.metadata_csum,
            "last_mounted": sb.last_mounted.split(b"\0", 1)[0].decode("utf-8", "replace"),
            "journal": ({"inode": sb.journal_inum,
                         "replayed_transactions": self.replayed_transactions,
                         "replayed_blocks": len(self._overlay)}
                        if sb.feature_compat & COMPAT_HAS_JOURNAL else None),
        }


class Entry:
    """A name in an ext4 directory; its inode is read on first use (kept in the volume's LRU)."""

    __slots__ = ("volume", "ino", "name", "_ftype", "_inode")

    def __init__(self, volume: Volume, ino: int, name: str, ftype: int):
        self.volume = volume
        self.ino = ino
        self.name = name
        self._ftype = ftype
        self._inode: Inode | None = None

    @property
    def inode(self) -> Inode:
        node = self._inode
        if node is None:
            node = self._inode = self.volume.inode(self.ino)
        return node

    @property
    def kind(self) -> str:
        kind = FT_KINDS.get(self._ftype)
        return kind if kind is not None else self.inode.kind

    @property
    def is_dir(self) -> bool:
        return self.kind == "dir"

    @property
    def is_symlink(self) -> bool:
        return self.kind == "symlink"

    @property
    def size(self) -> int:
        return self.inode.size

    @property
    def allocated(self) -> int:
        return self.inode.blocks * 512

    mode = property(lambda self: self.inode.mode)
    uid = property(lambda self: self.inode.uid)
    gid = property(lambda self: self.inode.gid)
    nlink = property(lambda self: self.inode.nlink)
    atime_ns = property(lambda self: self.inode.atime_ns)
    mtime_ns = property(lambda self: self.inode.mtime_ns)
    ctime_ns = property(lambda self: self.inode.ctime_ns)
    crtime_ns = property(lambda self: self.inode.crtime_ns)

    @property
    def rdev(self) -> int:
        node = self.inode
        return node.rdev if node.kind in ("chardev", "blockdev") else 0

    def iterdir(self) -> Iterator["Entry"]:
        node = self.inode
        if node.kind != "dir":
            raise UsageError(f"{self.name}: not a directory")
        vol = self.volume
        # In inode order, not hash order: whoever stats the entries next (ls -l, the
        # mount's readdirplus, the index) then reads each inode table block once.
        for name, ino, ft in sorted(vol.dir_entries(node), key=lambda e: e[1]):
            yield Entry(vol, ino, os.fsdecode(name), ft)

    def child(self, name: str) -> "Entry":
        node = self.inode
        if node.kind != "dir":
            raise NotFoundError(f"{self.name}: not a directory")
        hit = self.volume.dir_index(node).get(os.fsencode(name))
        if hit is None:
            raise NotFoundError(f"{name}: no such file or directory")
        return Entry(self.volume, hit[0], name, hit[1])

    def open(self) -> Stream:
        node = self.inode
        if node.kind == "dir":
            raise UsageError(f"{self.name}: is a directory")
        return self.volume._data_stream(node, f"{self.volume.name}:inode {self.ino}")

    def readlink(self) -> str:
        node = self.inode
        if node.kind != "symlink":
            raise UsageError(f"{self.name}: not a symbolic link")
        if node.size > MAX_SYMLINK:
            raise FormatError(f"symlink target of {node.size} bytes", source=self.volume.name,
                              structure=f"ext4 inode {self.ino}")
        ea_blocks = self.volume.block_size // 512 if node.file_acl else 0
        if not node.flags & INLINE_DATA_FL and node.blocks - ea_blocks <= 0:
            data = node.block[:node.size]     # a fast symlink: the target is in i_block
        else:
            s = self.volume._data_stream(node, f"symlink inode {self.ino}")
            data = s.read(0, node.size)
        return os.fsdecode(data.split(b"\0", 1)[0])

    @property
    def has_xattrs(self) -> bool:
        """False only when the inode certainly has none (no xattr block, no in-inode
        entries): answered from the inode alone, so ``ls -l`` asks the disk nothing more."""
        node = self.inode
        if node.file_acl:
            return True
        extra = node.extra
        return len(extra) >= 8 and extra[:4] == b"\x00\x00\x02\xea" and extra[4:8] != b"\0\0\0\0"

    def xattrs(self) -> dict[str, bytes]:
        out = self.volume.xattrs(self.inode)
        out.pop("system.data", None)     # inline data's continuation, not an attribute
        return out

    def __repr__(self) -> str:
        return f"<ext4 Entry {self.name!r} ino={self.ino}>"
