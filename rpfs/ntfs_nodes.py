"""NTFS entries as namespace nodes, following ntfs-3g's conventions (DESIGN.md).

Timestamps come from $STANDARD_INFORMATION; hard links share one key (the MFT record);
symlinks and junctions are symlinks with targets already translated into the volume;
alternate data streams are reachable as ``name:stream`` and listed as ``user.<stream>``
extended attributes; ``system.ntfs_*`` attributes carry the raw NTFS metadata.
"""

from __future__ import annotations

import os
import struct

from ntfs_reader.entry import quick_stat
from streams.errors import NotFoundError, RpfsError, TooLargeError
from rpfs.entry_node import EntryNode
from rpfs.listing import NUMBERED_KINDS, Listing, NumberedListing
from rpfs.node import XATTR_SIZE_MAX, Attr, BrokenNode, Node
from streams.stream import Stream
from streams.times import NT_EPOCH_OFFSET, ns_to_iso, nt_to_unix_ns

FILE_ATTRIBUTE_READONLY = 0x1
SYSTEM_XATTRS = frozenset({"system.ntfs_attrib", "system.ntfs_attrib_be", "system.ntfs_times",
                           "system.ntfs_crtime", "system.ntfs_acl", "system.ntfs_reparse_data"})


def nt_to_ns(ticks: int | None) -> int:
    return 0 if ticks is None else nt_to_unix_ns(ticks)


def _times_ns(t) -> tuple[int, int, int, int]:
    """An Attr's four times (mtime, atime, ctime, crtime, as its arguments go) from NTFS
    times ``t``; equal times share one int object (a file written once has all four equal:
    144 bytes less per node kept). Worked out inline: a listing's stats make one per entry."""
    modified, accessed, changed, created = t.modified, t.accessed, t.changed, t.created
    m = 0 if modified is None else (modified - NT_EPOCH_OFFSET) * 100
    a = m if accessed == modified else 0 if accessed is None else (accessed - NT_EPOCH_OFFSET) * 100
    c = m if changed == modified else 0 if changed is None else (changed - NT_EPOCH_OFFSET) * 100
    cr = m if created == modified else c if created == changed else nt_to_ns(created)
    return m, a, c, cr


def _quick_attr(kind: str, q: tuple) -> Attr:
    """The Attr of a plain file or directory of kind ``kind`` (as its index entry says)
    from its record's ``quick_stat``."""
    is_dir, size, t, nlink, allocated = q
    return Attr(kind, 0 if is_dir else size, *_times_ns(t), 2 if is_dir else nlink, allocated)


class NtfsNode(EntryNode):
    """One NTFS entry (a file, directory, symlink or junction) under a volume root.

    Made from a directory index entry without reading the child's MFT record: the kind
    comes from the index's $FILE_NAME where it can tell (``Entry.index_kind``), the
    attributes from the record on first ``attr()``, after which the parsed record is let
    go (nodes live as long as the kernel remembers them). A damaged record is remembered:
    its error is raised again without re-parsing.
    """

    __slots__ = ()

    def __init__(self, entry, volume_key: tuple, name: str | None = None,
                 index_kind: str | None = None):
        self.entry = entry
        self.volume_key = volume_key
        self.name = entry.name if name is None else name
        self._kind = index_kind or entry.index_kind
        # the index's $FILE_NAME gave the name and the kind: let it go (with its times, about
        # 400 of a listed node's 1,000 bytes); the record has them all if asked again
        entry._fn = None
        self._attr: Attr | None = None
        self._error: RpfsError | None = None

    @property
    def number(self) -> int:
        return self.entry.ref

    @property
    def key(self) -> tuple:
        """``volume_key + (MFT record,)``: made when asked, not kept (a node of a walk is
        kept by the thousand; the tuple was 64 of its bytes)."""
        return self.volume_key + (self.entry.ref,)

    def by_number(self, number: int) -> Node:
        node = NtfsNode(self.entry.volume.entry(number), self.volume_key)
        # the kind from the record, not from its own $FILE_NAME: only the index's copy of
        # the flags is kept in step (a junction's record copy says "directory")
        node._kind = None
        return node

    def _read_kind(self) -> str:
        e = self.entry
        return "symlink" if e.is_symlink else "dir" if e.is_dir else "file"

    def _attr_read(self) -> None:
        self.entry.release()   # the attributes are kept: the parsed record may go

    def _read_attr(self) -> Attr:
        e = self.entry
        if self._kind in ("file", "dir"):  # known from the index: no reparse point
            q = e.quick_stat()
            if q is not None:
                return _quick_attr(self._kind, q)
        kind = self.kind
        if self._error is not None:
            raise self._error
        t = e.times
        return Attr(
            kind,
            len(self.readlink().encode("utf-8", "surrogateescape")) if kind == "symlink" else (0 if e.is_dir else e.size),
            *_times_ns(t),   # mtime, atime, ctime, crtime
            nlink=2 if e.is_dir else max(1, e.nlink),
            allocated=getattr(e, "allocated_size", None),
        )

    xattr_namespace = (("user.",), SYSTEM_XATTRS)   # alternate streams and ntfs-3g's

    def may_have_xattr(self, name: str) -> bool:
        return name.startswith("user.") or name in SYSTEM_XATTRS

    def iterdir(self):
        if self.kind != "dir":
            return super().iterdir()
        return (NtfsNode(child, self.volume_key) for child in self.entry.iterdir())

    def listing(self) -> Listing:
        """The children as arrays from one pass over the index (names, records and kinds
        from its $FILE_NAMEs; built in C): a child's node is made only when asked for
        (rpfs/listing.py)."""
        if self.kind != "dir":
            return super().listing()
        arrays = self.entry.listing_arrays()
        entry_type, volume, key = type(self.entry), self.entry.volume, self.volume_key
        numbers, sequences, kinds = arrays.numbers, arrays.sequences, arrays.kinds
        names, offsets = arrays.names, arrays.offsets

        def make(i: int) -> NtfsNode:
            return NtfsNode(entry_type(volume, numbers[i], None, sequences[i]), key,
                            os.fsdecode(names[offsets[i]:offsets[i + 1]]),
                            NUMBERED_KINDS[kinds[i]])

        def stat(indexes, kinds) -> dict:
            # what _read_attr gives child i's node, for the plain files and directories
            # (``kinds``: the listing's, settled; passed in, so this closure holds no
            # reference to the listing: a cycle would keep every dropped listing's arrays
            # until a full collection, +65 MiB in the million-entry walk)
            want = [i for i in indexes if kinds[i] == 1 or kinds[i] == 2]
            out = {}
            for i, q in zip(want, volume.stat_summaries([numbers[i] for i in want])):
                q = quick_stat(q, sequences[i])
                if q is not None:
                    out[i] = _quick_attr(NUMBERED_KINDS[kinds[i]], q)
            return out

        return NumberedListing(arrays, key, make, stat)

    def will_walk(self) -> None:
        if self.kind == "dir":
            volume = self.entry.volume
            volume.will_walk()
            volume.will_list(self.entry.ref, self.entry.sequence)

    def plain_files(self, listing: Listing, max_size: int):
        if not isinstance(listing, NumberedListing):
            return None
        volume = self.entry.volume
        plain = volume.plain_files(listing.arrays.numbers, listing.arrays.sequences, max_size)
        return None if plain is None else (plain, volume.stream)

    def child(self, name: str) -> Node:
        if self.kind != "dir":
            raise NotFoundError(f"{self.name}: not a directory")
        return NtfsNode(self.entry.child(name), self.volume_key)

    def open(self) -> Stream:
        return self.entry.open("")

    def readlink(self) -> str:
        return self.entry.readlink()

    def stream_node(self, stream: str) -> Node:
        """The alternate data stream ``stream`` of this entry, as a file node."""
        names = {s.name if hasattr(s, "name") else s[0]: s for s in self.entry.streams()}
        if stream not in names:
            raise NotFoundError(f"{self.name}:{stream}: no such stream")
        return AdsNode(self, stream)

    def detail(self) -> dict:
        """The FILE_ATTRIBUTE_* flags and the alternate data streams (name: size)."""
        e = self.entry
        return {"attributes": e.attributes,
                "streams": {_stream_name(s): _stream_size(s) for s in e.streams() if _stream_name(s)}}

    def xattr_names(self) -> list[str]:
        names = [f"user.{_stream_name(s)}" for s in self.entry.streams() if _stream_name(s)]
        names += ["system.ntfs_attrib", "system.ntfs_attrib_be", "system.ntfs_times",
                  "system.ntfs_crtime", "system.ntfs_acl"]
        if getattr(self.entry, "reparse_tag", None):
            names.append("system.ntfs_reparse_data")
        return names

    def getxattr(self, name: str) -> bytes:
        e = self.entry
        if name.startswith("user."):
            stream = name[5:]
            s = e.open(stream)
            if s.size > XATTR_SIZE_MAX:  # checked before reading: a stream may be 50 GiB
                raise TooLargeError(f"{self.name}: stream {stream} is {s.size} bytes, more than "
                                    f"an extended attribute holds (read it as "
                                    f"{self.name}:{stream})")
            return s.read(0, s.size)
        if name == "system.ntfs_attrib":
            return struct.pack("<I", e.attributes)
        if name == "system.ntfs_attrib_be":
            return struct.pack(">I", e.attributes)
        if name == "system.ntfs_times":  # ntfs-3g's order, checked against ntfs-3g
            t = e.times
            return struct.pack("<4Q", t.created, t.modified, t.accessed, t.changed)
        if name == "system.ntfs_crtime":  # NT time, as ntfs-3g gives it
            return struct.pack("<Q", e.times.created)
        if name == "system.ntfs_acl":
            sd = e.security_descriptor()
            if sd:
                return sd
        if name == "system.ntfs_reparse_data":
            data = e.reparse_data()
            if data:
                return data
        raise NotFoundError(f"{self.name}: no attribute {name}")

    def info(self) -> dict:
        e = self.entry
        a = self.attr()
        out = {
            "name": self.name, "type": self.kind, "mft_record": e.ref, "size": a.size,
            "allocated_size": a.allocated, "nlink": a.nlink, "attributes": f"{e.attributes:#x}",
            "times": {"created": ns_to_iso(a.crtime_ns), "modified": ns_to_iso(a.mtime_ns),
                      "changed": ns_to_iso(a.ctime_ns), "accessed": ns_to_iso(a.atime_ns)},
            "streams": {_stream_name(s): _stream_size(s) for s in e.streams() if _stream_name(s)},
        }
        if getattr(e, "reparse_tag", None):
            out["reparse_tag"] = getattr(e, "reparse_tag_name", None) or f"{e.reparse_tag:#010x}"
        if self.kind == "symlink":
            out["target"] = self.readlink()
        return out


class AdsNode(Node):
    """``file:stream`` — an alternate data stream, read like a file."""

    kind = "file"

    def __init__(self, owner: NtfsNode, stream: str):
        self.owner = owner
        self.stream = stream
        self.name = f"{owner.name}:{stream}"
        self.key = owner.key + (":" + stream,)

    def attr_if_known(self) -> Attr | None:
        return None  # the size is the stream's: opening it reads the record

    def attr(self) -> Attr:
        a = self.owner.attr()
        size = self.open().size
        return Attr("file", size=size, mtime_ns=a.mtime_ns, atime_ns=a.atime_ns,
                    ctime_ns=a.ctime_ns, crtime_ns=a.crtime_ns)

    def open(self) -> Stream:
        return self.owner.entry.open(self.stream)


def _stream_name(s) -> str:
    return s.name if hasattr(s, "name") else s[0]


def _stream_size(s) -> int:
    return s.size if hasattr(s, "size") else s[1]


class VolumeRoot(NtfsNode):
    """The root directory of a volume, which also answers ``rpfs info`` for the volume.
    ``volume_stream``: the volume's bytes as Windows presents them (``export --format raw``);
    ``shadow_copies``: formats.vss.ShadowCopies (or its error) when the volume holds stores."""

    __slots__ = ("volume", "volume_stream", "shadow_copies", "_root_key")
    number = None  # its key is the volume's own: kept, not made again from record 5

    def __init__(self, volume, name: str, key: tuple, volume_stream=None, shadow_copies=None):
        self.volume = volume
        self.volume_stream = volume_stream
        self.shadow_copies = shadow_copies
        self._root_key = key
        super().__init__(volume.root, key, name=name)

    @property
    def key(self) -> tuple:
        return self._root_key

    def info(self) -> dict:
        v = self.volume
        out = {
            "name": self.name, "type": "dir", "filesystem": "ntfs",
            "label": v.label, "serial": f"{v.serial:016X}" if isinstance(v.serial, int) else v.serial,
            "version": v.version, "dirty": v.dirty, "cluster_size": v.cluster_size,
            "mft_record_size": v.record_size, "size": getattr(v, "size", None),
            "warnings": list(v.warnings),
            **_dynamic_layout(v.stream),  # a BitLocker volume in a dynamic (LDM) volume
            **v.stream.describe(),  # BitLocker: what encrypts the volume; a shadow copy
        }
        copies = self.shadow_copies
        if isinstance(copies, Exception):
            out["shadow_copies_error"] = str(copies)
        elif copies is not None:
            out["shadow_copies"] = [s.describe() for s in copies.stores]
        return out


def _dynamic_layout(stream) -> dict:
    """The LDM layout under a BitLocker volume whose bytes come from a dynamic volume."""
    from formats.ldm import LdmVolume

    base = getattr(stream, "base", None)
    return base.describe() if isinstance(base, LdmVolume) else {}


def volume_root(volume, name: str, key: tuple, volume_stream=None, shadow_copies=None) -> Node:
    """A volume's root directory (``volume_stream``, ``shadow_copies``: see VolumeRoot), or
    a BrokenNode that still has the volume's bytes."""
    try:
        return VolumeRoot(volume, name, key, volume_stream, shadow_copies)
    except RpfsError as e:
        return BrokenNode(name, key, e, kind="dir", volume_stream=volume_stream)
