"""A Btrfs volume over a stream (one device): the superblock at open; the chunk tree,
root tree and file system trees when first needed.

The root directory is the top-level subvolume (id 5), as the kernel shows it with
``-o subvolid=5``: every subvolume and snapshot is a directory at the path where it was
created (``@``, ``@home``, ``@home/.snapshots/1/snapshot``). ``default_subvolume`` names
the one a plain ``mount`` would show.
"""

from __future__ import annotations

from functools import cached_property

from streams.errors import FormatError, NotFoundError
from streams.lru import LRU
from streams.stream import Stream

from . import items, superblock
from .chunks import CHUNK_ITEM, ChunkMap, parse_chunk
from .compression import decompress
from .entry import Entry
from .tree import Block, Key, Tree

BLOCK_CACHE = 512          # tree blocks (16 KiB each by default)
INODE_CACHE = 4096
EXTENT_CACHE = 64          # decompressed extents (128 KiB each at most)


class Volume:
    fs_type = "btrfs"

    def __init__(self, stream: Stream):
        self.stream = stream
        self.name = stream.name
        raw = stream.read(superblock.OFFSET, superblock.SIZE)
        if len(raw) < superblock.SIZE:
            raise FormatError("volume too small for a Btrfs superblock", source=self.name,
                              structure="Btrfs superblock", offset=superblock.OFFSET)
        self.sb = superblock.parse(raw, self.name)
        self.label = self.sb.label
        self.uuid = self.sb.uuid
        self.size = self.sb.total_bytes
        self.block_size = self.sb.sectorsize
        self._blocks = LRU(BLOCK_CACHE)
        self._inodes = LRU(INODE_CACHE)
        self._extents = LRU(EXTENT_CACHE)
        self._trees: dict[int, Tree] = {}
        self._sys_map = ChunkMap(self)
        self._sys_map.load_sys_array(self.sb.sys_chunk_array)
        self._map = self._sys_map      # until the chunk tree is read (root_tree reads it)
        self._warnings: list[str] = []
        if self.sb.num_devices > 1:
            self._warnings.append(f"one of {self.sb.num_devices} devices: data on the others "
                                  "is unreadable")

    # -- addresses and blocks ----------------------------------------------------------

    @cached_property
    def chunk_map(self) -> ChunkMap:
        full = ChunkMap(self)
        for c in self._sys_map.chunks:
            full.add(c)
        tree = Tree(self, self.sb.chunk_root, self.sb.chunk_root_level, "Btrfs chunk")
        for key, data in tree.items(Key(0, 0, 0)):
            if key.type == CHUNK_ITEM:
                full.add(parse_chunk(key.offset, data, self.name, key.offset)[0])
        self._map = full
        return full

    def read_logical(self, logical: int, n: int, what: str) -> bytes:
        phys = self._map.physical(logical, n, what)
        if phys + n > self.stream.size:
            raise FormatError(f"{n} bytes at {phys:#x} lie past the end of the device",
                              source=self.name, structure=what, offset=phys)
        return self.stream.read(phys, n)

    def tree_block(self, bytenr: int, structure: str) -> Block:
        blk = self._blocks.get(bytenr)
        if blk is None:
            raw = self.read_logical(bytenr, self.sb.nodesize, structure)
            blk = Block(raw, bytenr, self, structure)
            self._blocks.put(bytenr, blk)
        return blk

    # -- trees -------------------------------------------------------------------------

    @cached_property
    def root_tree(self) -> Tree:
        self.chunk_map  # noqa: B018 - the chunk tree first
        return Tree(self, self.sb.root, self.sb.root_level, "Btrfs root")

    def fs_tree(self, tree_id: int) -> Tree:
        t = self._trees.get(tree_id)
        if t is None:
            for key, data in self.root_tree.range(tree_id, items.ROOT_ITEM):
                ri = items.root_item(data, f"Btrfs root item {tree_id}", self.name)
                t = Tree(self, ri.bytenr, ri.level, f"Btrfs tree {tree_id}")
                break
            else:
                raise FormatError(f"subvolume {tree_id} has no root item", source=self.name,
                                  structure="Btrfs root tree")
            self._trees[tree_id] = t
        return t

    def subvolume_linked(self, parent: int, child: int) -> bool:
        """Whether ``child`` is a subvolume of tree ``parent`` (else the entry is a stale
        copy in a snapshot, which the kernel shows as an empty directory)."""
        return self.root_tree.get(Key(child, items.ROOT_BACKREF, parent)) is not None

    @cached_property
    def default_subvolume(self) -> int:
        for key, data in self.root_tree.range(items.ROOT_TREE_DIR, items.DIR_ITEM):
            for d in items.dir_entries(data, "Btrfs default subvolume item", self.name):
                if d.name == b"default":
                    return d.location.objectid
        return items.FS_TREE

    def subvolumes(self) -> dict[int, str]:
        """Every subvolume's id and path from the top level."""
        parents: dict[int, tuple[int, str]] = {}
        for key, data in self.root_tree.items(Key(0, 0, 0)):
            if key.type == items.ROOT_BACKREF and len(data) >= 18:
                n = int.from_bytes(data[16:18], "little")
                parents[key.objectid] = (key.offset, data[18:18 + n].decode("utf-8", "replace"))
        out = {}
        for sid in parents:
            parts, cur, hops = [], sid, 0
            while cur in parents and hops < 64:
                cur, name = parents[cur][0], parents[cur][1]
                parts.append(name)
                hops += 1
            out[sid] = "/".join(reversed(parts))
        return out

    # -- inodes and data ---------------------------------------------------------------

    def inode_item(self, tree: int, objectid: int) -> items.InodeItem:
        got = self._inodes.get((tree, objectid))
        if got is None:
            where = f"Btrfs tree {tree} inode {objectid}"
            data = self.fs_tree(tree).get(Key(objectid, items.INODE_ITEM, 0))
            if data is None:
                raise FormatError("inode item missing", source=self.name, structure=where)
            got = items.inode_item(data, where, self.name)
            self._inodes.put((tree, objectid), got)
        return got

    def cached_extent(self, key) -> bytes | None:
        return self._extents.get(key)

    def decompressed(self, key, kind: int, raw: bytes, ram_bytes: int, where: str) -> bytes:
        data = decompress(kind, raw, ram_bytes, self.sb.sectorsize, self.name, where, 0)
        self._extents.put(key, data)
        return data

    # -- the contract ------------------------------------------------------------------

    def entry(self, ino: int, name: str = "") -> Entry:
        tree, objectid = (ino >> 40, ino & ((1 << 40) - 1)) if ino >> 40 else (items.FS_TREE, ino)
        return Entry(self, tree, objectid, name)

    @cached_property
    def root(self) -> Entry:
        root = Entry(self, items.FS_TREE, items.FIRST_FREE, "/")
        if not root.is_dir:
            raise FormatError("the top-level directory is not a directory", source=self.name,
                              structure="Btrfs tree 5 inode 256")
        return root

    def lookup(self, path: str) -> Entry:
        node = self.root
        for part in [p for p in path.split("/") if p]:
            if not node.is_dir:
                raise NotFoundError(f"{path}: {node.name} is not a directory")
            node = node.child(part)
        return node

    @property
    def state(self) -> str:
        if self.sb.log_root:
            return "log tree present (changes fsync'd before the copy are not replayed)"
        return "clean"

    @property
    def warnings(self) -> list[str]:
        out = list(self._warnings)
        if self.sb.log_root:
            out.append(f"Btrfs: {self.state}")
        return out

    def describe(self) -> dict:
        try:
            subs = self.subvolumes()
            default = self.default_subvolume
        except FormatError as e:
            subs, default = {f"unreadable: {e}": ""}, None
        return {"filesystem": "btrfs", "label": self.label, "uuid": self.uuid,
                "size": self.size, "block_size": self.block_size,
                "node_size": self.sb.nodesize, "generation": self.sb.generation,
                "devices": self.sb.num_devices,
                "default_subvolume": "/" if default == items.FS_TREE else
                subs.get(default, str(default)),
                "subvolumes": sorted(v or k for k, v in subs.items()), "state": self.state}


__all__ = ["Volume"]
