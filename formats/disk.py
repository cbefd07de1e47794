"""What every opened disk image offers the layers above (docs/architecture.md)."""

from __future__ import annotations

import uuid

from streams.record import Value
from streams.stream import Stream


class ParentRef(Value):
    """Where a differencing disk says its parent is, and how to recognise it.

    ``paths`` are the locator's candidates in preference order, as written in the file
    (relative first, then absolute Win32 / volume paths; backslashes kept). ``identity`` is
    the parent's data-write GUID (VHDX) or unique id (VHD) the child expects. ``extra``
    (more the format says) is not compared.
    """

    __slots__ = ("paths", "identity", "extra")
    _fields = ("paths", "identity")

    def __init__(self, paths: tuple[str, ...], identity: uuid.UUID | None,
                 extra: dict | None = None):
        self.paths = paths
        self.identity = identity
        self.extra = {} if extra is None else extra

    def __repr__(self) -> str:
        return f"ParentRef(paths={self.paths!r}, identity={self.identity!r}, extra={self.extra!r})"


class Disk(Stream):
    """A virtual disk: a Stream of its virtual bytes plus what it is.

    Differencing disks read through their parent once ``set_parent`` was called; reading a
    differencing disk with no parent raises ``ChainError``.
    """

    format: str = "raw"          # "vhdx", "vhd", "raw"
    kind: str = "fixed"          # "fixed", "dynamic", "differencing"
    logical_sector_size: int = 512
    physical_sector_size: int = 512
    identity: uuid.UUID | None = None
    parent_ref: ParentRef | None = None
    parent: "Disk | None" = None
    source: Stream | None = None  # the file the disk was opened from

    def set_parent(self, parent: "Disk") -> None:
        self.parent = parent

    @property
    def chain(self) -> list["Disk"]:
        """This disk and its ancestors, leaf first (bounded against cycles)."""
        out: list[Disk] = []
        d: Disk | None = self
        while d is not None and len(out) < 256 and d not in out:
            out.append(d)
            d = d.parent
        return out


class RawDisk(Disk):
    """A flat image: the file is the disk."""

    format = "raw"
    kind = "fixed"

    def __init__(self, stream: Stream, logical_sector_size: int = 512):
        self.source = stream
        self.name = stream.name
        self.size = stream.size
        self.logical_sector_size = logical_sector_size
        self.physical_sector_size = logical_sector_size

    def _read(self, offset: int, length: int) -> bytes:
        return self.source.read(offset, length)

    def _readinto(self, offset: int, view: memoryview) -> None:
        got = self.source.readinto(offset, view)
        if got != len(view):
            raise self._short(offset, len(view), got)

    def _extents(self, offset: int, end: int):
        return self.source.extents(offset, end - offset)

    def _pieces_into(self, offset: int, length: int, out) -> bool:
        return self.source.pieces(offset, length, out)

    def _span(self, offset: int, length: int):
        return self.source, offset
