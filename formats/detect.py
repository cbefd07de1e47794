"""Which container a stream holds, decided by signatures only (cheap: two small reads)."""

from __future__ import annotations

from streams.stream import Stream

VHDX_SIGNATURE = b"vhdxfile"
VHD_COOKIE = b"conectix"


def detect_format(stream: Stream) -> str:
    """"vhdx" ("vhdxfile" at 0), "vhd" ("conectix" footer at the end, or its copy at 0 for
    dynamic disks whose tail is damaged) or "raw" for anything else."""
    head = stream.read(0, 8)
    if head == VHDX_SIGNATURE:
        return "vhdx"
    if stream.size >= 512 and stream.read(stream.size - 512, 8) == VHD_COOKIE:
        return "vhd"
    if head == VHD_COOKIE:
        return "vhd"
    return "raw"


def open_image(stream: Stream):
    """The disk inside ``stream``: VHDX, VHD or, failing both signatures, raw."""
    kind = detect_format(stream)
    if kind == "vhdx":
        from formats.vhdx import VhdxDisk  # another package; imported only when needed
        return VhdxDisk(stream)
    if kind == "vhd":
        from formats.vhd import VhdDisk
        return VhdDisk(stream)
    from formats.disk import RawDisk
    return RawDisk(stream)
