"""Container formats: VHDX, VHD, raw; differencing chains; MBR/GPT; writers for export.

Public API (docs/architecture.md), plus what the layers above may rely on:

- ``open_image(stream) -> Disk``: VHDX ("vhdxfile" at 0), VHD ("conectix" footer at the end
  or its copy at 0), else raw. VHDX lives in ``formats.vhdx`` and is imported lazily.
- ``resolve_chains(files, errors=None) -> {key: leaf Disk}``; with an ``errors`` dict nothing
  is raised and each broken chain lands there under the key its disk would have had.
  ``resolve_all(files) -> Resolution`` gives every leaf, every opened file and every error.
- ``open_path(path)``: a local image (its chain found among its siblings and along relative
  locators) or a folder.
- ``read_partitions(disk) -> PartitionTable(scheme, partitions, disk_guid, warnings)``;
  ``Partition.type_id`` is the GPT type GUID in lower case or the MBR id as "0x07";
  ``reason`` says why ``readable`` is False or that the partition is cut at the disk end
  (``truncated``).
- ``write_image(disk, dest, "vhdx"|"vhd"|"raw", block_size=, fixed=, progress=)``.
"""

from __future__ import annotations

import os

from formats.chain import Resolution, open_path, resolve_all, resolve_chains
from formats.detect import detect_format, open_image
from formats.disk import Disk, ParentRef, RawDisk
from formats.partitions import Partition, PartitionTable, read_partitions
from streams.errors import UsageError
from streams.stream import Stream

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
