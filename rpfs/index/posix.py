"""What the index knows about a POSIX volume (ext4, XFS, Btrfs), from a walk of its tree.

The index was made for NTFS, where a changed file is found by hashing blocks of $MFT
(scan.py). A Linux file system has no such table to hash, so the volume is walked through
its reader (docs/filesystems.md) and each inode becomes one "block" of the index whose
hash covers everything its rows hold (kind, size, times, mode, links): the writer then
keeps the rows of unchanged inodes open, closes those of inodes that are gone, and
rewrites only what changed, exactly as for $MFT blocks. The walk reads every inode, but
no file data; a volume whose disk files did not change is not walked at all (build.py).

Inode numbers become index refs: the root is NTFS's root record (5), every other inode
``ino + FIRST_USER_RECORD`` (so no inode lands on the numbers NTFS reserves); a volume with
inode numbers past 2^48 is not indexed (find and history walk it instead).
"""

from __future__ import annotations

import hashlib

from streams.errors import RpfsError, UnsupportedError
from streams.times import unix_ns_to_nt
from rpfs.index.scan import BLOCK, FILE_ROOT, FIRST_USER_RECORD, FileInfo
from rpfs.log import get_logger

log = get_logger(__name__)

MAX_REF = 1 << 48
KINDS = {"file": "file", "dir": "dir", "symlink": "symlink"}   # special files count as files


def ticks(ns: int | None) -> int:
    """ns since the Unix epoch -> NT ticks (what the index's time columns hold)."""
    return 0 if ns is None else unix_ns_to_nt(ns)


class PosixScan:
    """The same interface as MftScan (``hashes``, ``changed``, ``dirs``, ``record_size``,
    ``records()``, ``bytes_read``), from one walk. ``old``: ref -> (hash, token) of the
    previous indexed state (None: first time); ``everything``: report every inode."""

    record_size = BLOCK          # one inode per "block": the writer's blocks are refs
    bytes_read = 0

    def __init__(self, volume, old: dict[int, tuple] | None, everything: bool = False):
        self.volume = volume
        root = volume.root
        self.root_ino = root.ino
        infos: dict[int, dict] = {}
        links: dict[int, list] = {}
        stack = [root]
        seen_dirs = {root.ino}
        while stack:
            d = stack.pop()
            pref = self.ref(d.ino)
            try:
                children = list(d.iterdir())
            except RpfsError as e:
                log.info("index: %s: %s", getattr(volume, "name", "?"), e)
                continue
            for c in children:
                try:
                    kind = c.kind
                    ino = c.ino
                    if ino not in infos:
                        infos[ino] = {"kind": KINDS.get(kind, "file"), "size": c.size,
                                      "allocated": getattr(c, "allocated", None) or 0,
                                      "created": ticks(c.crtime_ns), "modified": ticks(c.mtime_ns),
                                      "changed": ticks(c.ctime_ns), "accessed": ticks(c.atime_ns),
                                      "mode": c.mode}
                except RpfsError as e:
                    log.info("index: %s: %s", c.name, e)
                    continue
                links.setdefault(ino, []).append((pref, 0, c.name))
                if kind == "dir" and ino not in seen_dirs:
                    seen_dirs.add(ino)
                    stack.append(c)
        self.infos: dict[int, FileInfo] = {}
        self.hashes: dict[int, tuple] = {FILE_ROOT: (b"root", None)}
        for ino, f in infos.items():
            ref = self.ref(ino)
            ls = tuple(sorted(links[ino]))
            fp = hashlib.blake2b(f"{ino}:{f['size']}:{f['modified']}:{f['changed']}".encode(),
                                 digest_size=16).digest()
            info = FileInfo(ref=ref, seq=0, kind=f["kind"], links=ls, size=f["size"],
                            allocated=f["allocated"], created=f["created"],
                            modified=f["modified"], changed=f["changed"],
                            accessed=f["accessed"], attributes=f["mode"], reparse_tag=0,
                            ads=None, fingerprint=fp)
            self.infos[ref] = info
            h = hashlib.blake2b(repr((info.kind, ls, info.size, info.allocated, info.created,
                                      info.modified, info.changed, info.attributes,
                                      fp)).encode(), digest_size=16).digest()
            self.hashes[ref] = (h, None)
        if everything or old is None:
            self.changed = set(self.infos)
        else:
            self.changed = {r for r, h in self.hashes.items() if old.get(r) != h and r in self.infos}
        self.dirs = {r: i for r, i in self.infos.items() if i.kind == "dir"}

    def ref(self, ino: int) -> int:
        if ino == self.root_ino:
            return FILE_ROOT
        ref = ino + FIRST_USER_RECORD
        if ref >= MAX_REF:
            raise UnsupportedError(f"inode number {ino} is too large for the index")
        return ref

    def records(self):
        for ref in sorted(self.changed):
            yield ref, self.infos.get(ref)
