"""An XFS volume over a stream: the superblock at open, everything else on demand."""

from __future__ import annotations

import struct
import threading
from functools import cached_property

from streams.errors import FormatError, NotFoundError
from streams.lru import LRU
from streams.stream import Stream

from . import inode as inodes
from . import superblock
from .entry import Entry
from .log import log_state
from .replay import replay

INODE_CACHE = 4096
DIR_CACHE = 64          # name tables of recently looked-in directories
INODE_CLUSTER = 16384   # inodes are read this many bytes at a time (a chunk holds 64)
CLUSTER_CACHE = 256     # clusters kept: 4 MiB


class Volume:
    fs_type = "xfs"

    def __init__(self, stream: Stream):
        self.base = stream           # the volume as stored; ``stream`` adds the replayed log
        self.name = stream.name
        head = stream.read(0, 512)
        if len(head) < 512:
            raise FormatError("volume smaller than a superblock", source=self.name,
                              structure="XFS superblock", offset=0)
        sect = struct.unpack_from(">H", head, 102)[0] if head[:4] == superblock.MAGIC else 512
        if 512 < sect <= 32768:
            head = stream.read(0, sect)
        self.sb = superblock.parse(head, self.name)
        self.label = self.sb.label
        self.uuid = self.sb.uuid
        self.block_size = self.sb.block_size
        self.size = self.sb.dblocks * self.sb.block_size
        self._inodes = LRU(INODE_CACHE)
        self._dirs = LRU(DIR_CACHE)
        self._clusters = LRU(CLUSTER_CACHE)
        self._warnings: list[str] = []
        self._lock = threading.Lock()
        if stream.size < self.size:
            self._warnings.append(f"the volume is {stream.size} bytes but its superblock "
                                  f"says {self.size}: data past the end is unreadable")

    # -- the log -----------------------------------------------------------------------

    @property
    def stream(self) -> Stream:
        """The volume as the kernel would see it after log recovery (replayed in memory on
        first use; the stored volume itself when the log is clean or cannot be replayed)."""
        got = self.__dict__.get("_stream")
        if got is None:
            with self._lock:
                got = self.__dict__.get("_stream")
                if got is None:
                    got = self._recover()
                    self.__dict__["_stream"] = got
        return got

    def _recover(self) -> Stream:
        try:
            state, log, last = log_state(self)
        except FormatError as e:
            self._state = f"log unreadable ({e})"
            return self.base
        self._state = state
        if state != "needs log recovery" or last is None:
            return self.base
        try:
            overlay, transactions, blocks = replay(self, log, last)
        except FormatError as e:
            self._state = f"needs log recovery (not replayed: {e})"
            return self.base
        self._state = (f"needs log recovery (replayed in memory: {transactions} transactions, "
                       f"{blocks} blocks)")
        return overlay

    @property
    def state(self) -> str:
        self.stream  # noqa: B018 - the state is known once the log was looked at
        return self._state

    # -- raw reads ---------------------------------------------------------------------

    def read_meta(self, at: int, n: int, structure: str) -> bytes:
        if at < 0 or at + n > min(self.size, self.stream.size):
            raise FormatError(f"{n} bytes at {at:#x} lie outside the volume", source=self.name,
                              structure=structure, offset=at)
        return self.stream.read(at, n)

    def read_data_into(self, at: int, view: memoryview, what: str) -> None:
        if at < 0 or at + len(view) > min(self.size, self.stream.size):
            raise FormatError(f"data at {at:#x} lies outside the volume", source=self.name,
                              structure=what, offset=at)
        self.stream.readinto(at, view)

    # -- inodes ------------------------------------------------------------------------

    def inode_offset(self, ino: int) -> int:
        sb = self.sb
        agno = ino >> (sb.agblklog + sb.inopblog)
        agbno = (ino >> sb.inopblog) & ((1 << sb.agblklog) - 1)
        slot = ino & ((1 << sb.inopblog) - 1)
        if agno >= sb.agcount or agbno >= sb.agblocks or ino <= 0:
            raise FormatError(f"inode number {ino} outside the volume", source=self.name,
                              structure="XFS inode number")
        return (agno * sb.agblocks + agbno) * sb.block_size + slot * sb.inode_size

    def _inode_bytes(self, at: int, n: int, ino: int) -> bytes:
        """An inode's bytes from its cluster (a listing stats neighbours next: one read of
        16 KiB instead of 32 or 64 small ones, which matters over a repository)."""
        start = at - at % INODE_CLUSTER
        cluster = self._clusters.get(start)
        if cluster is None:
            end = min(start + INODE_CLUSTER, self.size, self.stream.size)
            if at + n > end:
                return self.read_meta(at, n, f"XFS inode {ino}")
            cluster = self.read_meta(start, end - start, f"XFS inode {ino}")
            self._clusters.put(start, cluster)
        return cluster[at - start:at - start + n]

    def inode(self, ino: int) -> inodes.Inode:
        got = self._inodes.get(ino)
        if got is not None:
            return got
        sb = self.sb
        at = self.inode_offset(ino)
        raw = self._inode_bytes(at, sb.inode_size, ino)
        got = inodes.parse(raw, ino, sb, self.name, at)
        self._inodes.put(ino, got)
        return got

    def name_table(self, directory: Entry) -> dict[str, tuple[int, str | None]]:
        table = self._dirs.get(directory.ino)
        if table is None:
            table = {e.name: (e.ino, e._kind) for e in directory.iterdir()}
            self._dirs.put(directory.ino, table)
        return table

    def entry(self, ino: int, name: str = "") -> Entry:
        return Entry(self, ino, name)

    @cached_property
    def root(self) -> Entry:
        root = self.entry(self.sb.rootino, "/")
        if not root.is_dir:
            raise FormatError("the root inode is not a directory", source=self.name,
                              structure=f"XFS inode {self.sb.rootino}")
        return root

    def lookup(self, path: str) -> Entry:
        node = self.root
        for part in [p for p in path.split("/") if p]:
            if not node.is_dir:
                raise NotFoundError(f"{path}: {node.name} is not a directory")
            node = node.child(part)
        return node

    # -- description -------------------------------------------------------------------

    @property
    def warnings(self) -> list[str]:
        out = list(self._warnings)
        if self.state != "clean" and not self.state.startswith(("external", "log never")):
            out.append(f"XFS log: {self.state}")
        return out

    def describe(self) -> dict:
        sb = self.sb
        return {"filesystem": "xfs", "version": f"v{sb.version}" + (" (CRC)" if sb.crc else ""),
                "label": self.label, "uuid": self.uuid, "size": self.size,
                "block_size": self.block_size, "inode_size": sb.inode_size,
                "directory_block_size": sb.dir_block_size,
                "allocation_groups": sb.agcount, "big_time": sb.bigtime,
                "state": self.state}


__all__ = ["Volume"]
