"""Container formats: VHDX, VHD, raw; differencing chains; MBR/GPT; writers for export.

Public API (docs/architecture.md): ``open_image``, ``open_path``, ``resolve_chains``,
``read_partitions``, ``write_image`` and the ``Disk``/``ParentRef`` types. VHDX lives in
``formats.vhdx`` and is imported lazily so the rest works without it.
"""

from __future__ import annotations

import os

from formats.chain import Resolution, open_path, resolve_all, resolve_chains
from formats.detect import detect_format, open_image
from formats.disk import Disk, ParentRef, RawDisk
from formats.partitions import Partition, PartitionTable, read_partitions
from rpfs.errors import UsageError
from rpfs.stream import Stream

__all__ = ["Disk", "ParentRef", "RawDisk", "Partition", "PartitionTable", "detect_format",
           "open_image", "open_path", "read_partitions", "resolve_all", "resolve_chains",
           "Resolution", "write_image"]

FORMATS = ("vhdx", "vhd", "raw")


def write_image(disk: Stream, dest: str | os.PathLike, format: str, *,
                block_size: int | None = None, fixed: bool = False, progress=None) -> None:
    """Export ``disk`` (a differencing leaf exports merged) to ``dest`` as vhdx/vhd/raw.

    Holes (``disk.extents()`` ZERO ranges and all-zero blocks) are neither read twice nor
    written; ``progress(done, total)`` is called as bytes of the disk are covered.
    """
    fmt = (format or "").lower()
    if fmt == "raw":
        from formats.raw_writer import write_raw
        return write_raw(disk, dest, progress=progress)
    if fmt == "vhd":
        from formats.vhd_writer import DEFAULT_BLOCK_SIZE, write_vhd
        return write_vhd(disk, dest, fixed=fixed, block_size=block_size or DEFAULT_BLOCK_SIZE,
                         progress=progress)
    if fmt == "vhdx":
        from formats.vhdx import write_vhdx  # another engineer's package, loaded lazily
        kwargs = {}
        if block_size:
            kwargs["block_size"] = block_size
        return write_vhdx(disk, dest, fixed=fixed, progress=progress,
                          logical_sector_size=getattr(disk, "logical_sector_size", 512),
                          physical_sector_size=getattr(disk, "physical_sector_size", 512),
                          parent=None, **kwargs)
    raise UsageError(f"unknown image format {format!r}: choose one of {', '.join(FORMATS)}")
