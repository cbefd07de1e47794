"""The markers of the optional volume layers (LVM2, Windows dynamic disks, VSS), tested
without importing the layers: a recovery point opens ``formats.lvm``, ``formats.ldm`` or
``formats.vss`` only when one of its disks or volumes carries the marker (importing the three
cost 3-4 ms on every mount's first listing). Each layer's own ``probe`` is the function here.
"""

from __future__ import annotations

import struct

from streams.errors import RpfsError
from streams.stream import Stream

SECTOR = 512

# LVM2: the label, in one of the first four sectors
LVM_LABEL_ID = b"LABELONE"
LVM_LABEL_TYPE = b"LVM2 001"

# Windows dynamic disks: the partition that holds the LDM database
LDM_GPT_METADATA = "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3"
LDM_MBR_TYPE = "0x42"

# VSS: the volume header at 0x1e00 (GUID 3808876b-c176-4e48-b7ae-04046e6cc752, little-endian)
VSS_IDENTIFIER = bytes.fromhex("6b87083876c1484eb7ae04046e6cc752")
VSS_HEADER_OFFSET = 0x1E00
VSS_HEADER = struct.Struct("<16sII QQQQQ 16s16s")      # volume header, first 96 bytes


def lvm_label_sector(stream: Stream) -> int | None:
    """The sector (0-3) holding an LVM2 label, or None."""
    if stream.size < 4 * SECTOR:
        return None
    head = stream.read(0, 4 * SECTOR)
    for n in range(4):
        s = head[n * SECTOR:(n + 1) * SECTOR]
        if s[:8] == LVM_LABEL_ID and s[24:32] == LVM_LABEL_TYPE:
            return n
    return None


def ldm_privhead_offset(disk: Stream) -> int | None:
    """Byte offset of the PRIVHEAD on ``disk``, None if it is not a dynamic disk."""
    import formats

    try:
        table = formats.read_partitions(disk)
    except RpfsError:
        return None
    for p in table.partitions:
        if table.scheme == "mbr" and p.type_id == LDM_MBR_TYPE:
            return 6 * SECTOR
        if table.scheme == "gpt" and p.type_id == LDM_GPT_METADATA and p.size >= SECTOR:
            ss = getattr(disk, "logical_sector_size", SECTOR) or SECTOR
            return p.offset + p.size - ss
    return None


def vss_probe(volume: Stream) -> bool:
    """True when the volume header at 0x1e00 carries the VSS identifier and a catalog."""
    if volume.size < VSS_HEADER_OFFSET + VSS_HEADER.size:
        return False
    head = volume.read(VSS_HEADER_OFFSET, VSS_HEADER.size)
    return head[:16] == VSS_IDENTIFIER and VSS_HEADER.unpack(head)[6] != 0
