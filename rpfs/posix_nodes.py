"""Entries of a Linux file system (ext2/3/4, XFS, Btrfs) as namespace nodes.

Works over any Volume that follows docs/filesystems.md (the reader contract): mode, owner,
group, link count, device number and nanosecond times are the guest's own, so the mount
shows what the guest's kernel showed; hard links share one key (the inode number); extended
attributes are the on-disk ones under their full names (``user.*``, ``security.*``,
``trusted.*``, ``system.posix_acl_*`` in the kernel's format).

A node is made from its directory entry; the inode is read on the first ``attr()`` (the
kind is usually known from the directory entry already). A damaged inode is remembered:
its error is raised again without re-reading.
"""

from __future__ import annotations

import os

from streams.errors import NotFoundError, RpfsError, UsageError
from rpfs.entry_node import EntryNode
from rpfs.node import SPECIAL_KINDS, Attr, BrokenNode, Node
from streams.times import ns_to_iso
from streams.stream import Stream


class PosixNode(EntryNode):
    """One entry (file, directory, symlink, device, FIFO or socket) of a POSIX volume."""

    __slots__ = ("key", "_xattrs")

    def __init__(self, entry, volume_key: tuple, name: str | None = None):
        self.entry = entry
        self.volume_key = volume_key
        self.name = entry.name if name is None else name
        self.key = volume_key + (entry.ino,)
        self._kind: str | None = None
        self._attr: Attr | None = None
        self._error: RpfsError | None = None
        self._xattrs: dict[str, bytes] | None = None

    def _read_kind(self) -> str:
        return self.entry.kind

    def _read_attr(self) -> Attr:
        e = self.entry
        a = Attr(self.kind, size=e.size, mtime_ns=e.mtime_ns, atime_ns=e.atime_ns,
                 ctime_ns=e.ctime_ns, crtime_ns=e.crtime_ns, nlink=e.nlink,
                 allocated=getattr(e, "allocated", None),
                 posix_mode=e.mode, uid=e.uid, gid=e.gid, rdev=e.rdev)
        if self._xattrs is None and getattr(e, "has_xattrs", True) is False:
            self._xattrs = {}       # known without I/O: ls -l's getxattr costs nothing
        return a

    def iterdir(self):
        self._check()
        if self.kind != "dir":
            return super().iterdir()
        vk = self.volume_key
        try:
            nodes = [PosixNode(child, vk) for child in self.entry.iterdir()]
        except RpfsError as err:
            raise self._damaged(err) from None
        return iter(nodes)

    def child(self, name: str) -> Node:
        self._check()
        if self.kind != "dir":
            raise NotFoundError(f"{self.name}: not a directory")
        return PosixNode(self.entry.child(name), self.volume_key)

    def open(self) -> Stream:
        self._check()
        kind = self.kind
        if kind == "dir":
            raise UsageError(f"{self.name}: is a directory")
        if kind in SPECIAL_KINDS:
            raise UsageError(f"{self.name}: a {kind} holds no data")
        try:
            return self.entry.open()
        except RpfsError as err:
            raise self._damaged(err) from None

    def readlink(self) -> str:
        self._check()
        if self.kind != "symlink":
            return super().readlink()
        return self.entry.readlink()

    # -- extended attributes ---------------------------------------------------------------

    def _all_xattrs(self) -> dict[str, bytes]:
        if self._xattrs is None:
            self._check()
            try:
                self._xattrs = dict(self.entry.xattrs())
            except RpfsError as err:
                raise self._damaged(err) from None
        return self._xattrs

    def xattr_names(self) -> list[str]:
        return list(self._all_xattrs())

    xattr_namespace = None   # whatever the guest set: only reading the inode tells

    def may_have_xattr(self, name: str) -> bool:
        if self._xattrs is not None:
            return name in self._xattrs
        return True

    def getxattr(self, name: str) -> bytes:
        try:
            return self._all_xattrs()[name]
        except KeyError:
            raise NotFoundError(f"{self.name}: no attribute {name}") from None

    def info(self) -> dict:
        a = self.attr()
        out = {
            "name": self.name, "type": self.kind, "inode": self.entry.ino, "size": a.size,
            "mode": f"{a.mode:o}", "uid": a.uid, "gid": a.gid, "nlink": a.nlink,
            "times": {"created": ns_to_iso(a.crtime_ns), "modified": ns_to_iso(a.mtime_ns),
                      "changed": ns_to_iso(a.ctime_ns), "accessed": ns_to_iso(a.atime_ns)},
        }
        if a.kind in ("chardev", "blockdev"):
            out["rdev"] = f"{os.major(a.rdev)}:{os.minor(a.rdev)}"
        if self.kind == "symlink":
            out["target"] = self.readlink()
        try:
            out["xattrs"] = sorted(self._all_xattrs())
        except RpfsError as e:
            out["xattrs_error"] = str(e)
        return out


class PosixVolumeRoot(PosixNode):
    """The root directory of a POSIX volume; ``info()`` describes the file system.
    ``volume_stream``: the volume's bytes (``export --format raw``)."""

    __slots__ = ("volume", "volume_stream")

    def __init__(self, volume, name: str, key: tuple, volume_stream=None):
        self.volume = volume
        self.volume_stream = volume_stream
        super().__init__(volume.root, key, name=name)
        self.key = key

    def info(self) -> dict:
        from formats.lvm import LogicalVolume

        v = self.volume
        out = {"name": self.name, "type": "dir", **v.describe(), "warnings": list(v.warnings)}
        if isinstance(self.volume_stream, LogicalVolume):   # its LVM layout
            out.update(self.volume_stream.describe())
        return out


def volume_root(volume, name: str, key: tuple, volume_stream=None) -> Node:
    """A volume's root directory, or a BrokenNode that still has the volume's bytes."""
    try:
        return PosixVolumeRoot(volume, name, key, volume_stream)
    except RpfsError as e:
        return BrokenNode(name, key, e, kind="dir", volume_stream=volume_stream)
