"""Partition tables: GPT (with protective/hybrid MBR and backup fallback), MBR + EBR chains.

Numbering follows Linux so users see the names they know: GPT entries by index + 1;
MBR primaries by slot 1-4, logical partitions 5, 6, ... in chain order. Extended containers
are walked but not listed (they hold no volume). No table at all: one partition, number 0,
covering the whole disk. Windows dynamic disks (LDM) and Storage Spaces are listed with
``readable=False`` and a reason, never read as if they were plain volumes (LDM volumes are
assembled across disks by ``formats.ldm``).
"""

from __future__ import annotations

import uuid
import zlib

from streams.errors import FormatError
from streams.layout import Layout
from streams.record import Record
from streams.stream import SliceStream, Stream

MBR_ENTRY = Layout("MbrEntry", "<B3sB3sII", "status chs_first type chs_last lba_start sectors")

GPT_HEADER = Layout(
    "GptHeader", "<8sIIIIQQQQ16sQIII",
    "signature revision header_size header_crc reserved my_lba alternate_lba first_usable "
    "last_usable disk_guid entries_lba entry_count entry_size entries_crc")
GPT_HEADER_SIZE = GPT_HEADER.sizeof()  # 92

# last_lba is inclusive
GPT_ENTRY = Layout("GptEntry", "<16s16sQQQ72s",
                   "type_guid unique_guid first_lba last_lba attributes name")

MAX_GPT_ARRAY = 4 << 20   # bytes; 128 entries x 128 bytes is the norm (16 KiB)
MAX_LOGICAL = 256         # logical partitions followed along an EBR chain
EXTENDED_TYPES = {0x05, 0x0F, 0x85}

GPT_TYPES = {
    "c12a7328-f81f-11d2-ba4b-00a0c93ec93b": "EFI system",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac": "Windows recovery",
    "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3": "LDM metadata",
    "af9b60a0-1431-4f62-bc68-3311714a69ad": "LDM data",
    "e75caf8f-f680-4cee-afa3-b001e56efc2d": "Storage Spaces",
    "558d43c5-a1ac-43c0-aac8-d1472b2923d1": "Storage Replica",
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "21686148-6449-6e6f-744e-656564454649": "BIOS boot",
}
LDM_REASON = "Windows dynamic disk (LDM): its volumes are under volumes/ldm-<name>"
GPT_UNREADABLE = {
    "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3": "Windows dynamic disk (LDM) database",
    "af9b60a0-1431-4f62-bc68-3311714a69ad": LDM_REASON,
    "e75caf8f-f680-4cee-afa3-b001e56efc2d": "Storage Spaces pools are not supported",
}
MBR_TYPES = {
    0x01: "FAT12", 0x04: "FAT16 <32M", 0x05: "Extended", 0x06: "FAT16",
    0x07: "NTFS/exFAT", 0x0B: "FAT32", 0x0C: "FAT32 (LBA)", 0x0E: "FAT16 (LBA)",
    0x0F: "Extended (LBA)", 0x11: "Hidden FAT12", 0x12: "Compaq diagnostics",
    0x14: "Hidden FAT16 <32M", 0x16: "Hidden FAT16", 0x17: "Hidden NTFS/exFAT",
    0x1B: "Hidden FAT32", 0x1C: "Hidden FAT32 (LBA)", 0x27: "Windows recovery (hidden NTFS)",
    0x42: "LDM (Windows dynamic disk)", 0x82: "Linux swap", 0x83: "Linux",
    0x85: "Linux extended", 0x8E: "Linux LVM", 0xEE: "GPT protective", 0xEF: "EFI system",
    0xFD: "Linux RAID",
}
MBR_UNREADABLE = {0x42: LDM_REASON}


class Partition(Record):
    """One partition: where it is, what it is, and a stream of its bytes."""

    _fields = ("number", "offset", "size", "type_id", "type_name", "name", "readable", "stream",
               "reason", "guid", "attributes", "truncated")

    def __init__(self, number: int, offset: int, size: int, type_id: str, type_name: str,
                 name: str, readable: bool, stream: Stream, reason: str = "",
                 guid: str | None = None, attributes: int = 0, truncated: bool = False):
        self.number = number
        self.offset = offset
        self.size = size
        self.type_id = type_id        # GPT type GUID (lower case) or MBR id as "0x07"
        self.type_name = type_name
        self.name = name
        self.readable = readable
        self.stream = stream
        self.reason = reason          # why not readable / what is wrong (e.g. cut at the disk end)
        self.guid = guid              # GPT unique partition GUID
        self.attributes = attributes  # GPT attribute bits; MBR: 0x80 = bootable
        self.truncated = truncated    # declared past the end of the disk (stream clipped)


class PartitionTable(Record):
    """A disk's partitions and the scheme they came from."""

    _fields = ("scheme", "partitions", "disk_guid", "warnings")

    def __init__(self, scheme: str, partitions: list[Partition], disk_guid: str | None = None,
                 warnings: list[str] | None = None):
        self.scheme = scheme          # "gpt", "mbr", "none"
        self.partitions = partitions
        self.disk_guid = disk_guid
        self.warnings = [] if warnings is None else warnings


def _guid(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=bytes(raw)))


class _Reader:
    def __init__(self, disk: Stream):
        self.disk = disk
        self.name = disk.name
        self.warnings: list[str] = []

    def error(self, message: str, structure: str, offset: int | None) -> FormatError:
        return FormatError(message, source=self.name, structure=structure, offset=offset)

    def partition(self, number: int, offset: int, size: int, type_id: str, type_name: str,
                  name: str = "", readable: bool = True, reason: str = "", **extra) -> Partition:
        truncated = False
        disk_size = self.disk.size
        if offset + size > disk_size:
            truncated = True
            have = max(0, disk_size - offset)
            msg = (f"partition {number} ends at {offset + size:#x}, past the end of the disk "
                   f"({disk_size:#x}); only {have} of {size} bytes exist")
            self.warnings.append(msg)
            reason = f"{reason}; {msg}" if reason else msg
            if have == 0:
                readable = False
        stream = SliceStream(self.disk, min(offset, disk_size), size,
                             name=f"{self.name} partition {number}")
        return Partition(number, offset, size, type_id, type_name, name, readable, stream,
                         reason=reason, truncated=truncated, **extra)


def read_partitions(disk: Stream) -> PartitionTable:
    """The partition table of ``disk`` (sector size from ``disk.logical_sector_size``)."""
    r = _Reader(disk)
    ss = getattr(disk, "logical_sector_size", 512) or 512
    sector0 = disk.read(0, 512)
    mbr = _parse_mbr(sector0)
    if mbr is not None and any(e.type == 0xEE for e in mbr):
        sizes = [ss] + [s for s in (4096, 512) if s != ss]
        errors = []
        for size in sizes:  # a raw image of a 4Kn disk opens with 512-byte sectors
            try:
                table = _read_gpt(r, size)
            except FormatError as e:
                errors.append(e)
                continue
            if table is not None:
                if size != ss:
                    r.warnings.append(f"GPT found with {size}-byte sectors, not {ss}")
                return table
        if errors:
            raise errors[0]
        raise r.error("protective MBR present but no GPT header at LBA 1 or at the last LBA",
                      "GPT header", ss)
    if mbr is None:
        try:  # a GPT without a (valid) protective MBR is still a GPT
            table = _read_gpt(r, ss)
        except FormatError:
            table = None
        if table is not None:
            r.warnings.append("GPT without protective MBR")
            return table
        return PartitionTable("none", [r.partition(0, 0, disk.size, "", "whole disk")],
                              warnings=r.warnings)
    return _read_mbr(r, mbr, ss)


# -- MBR ---------------------------------------------------------------------------------

def _parse_mbr(sector: bytes):
    """The four entries, or None if the sector is not an MBR (no 55AA, a boot sector, ...)."""
    if len(sector) < 512 or sector[510:512] != b"\x55\xaa":
        return None
    if sector[3:11] in (b"NTFS    ", b"EXFAT   ", b"-FVE-FS-") or sector[54:59] == b"FAT12" or \
            sector[54:59] == b"FAT16" or sector[82:87] == b"FAT32":
        return None  # a file system's (or BitLocker's, Vista's has no FAT32 label) boot sector
    entries = [MBR_ENTRY.parse(sector[446 + 16 * i : 462 + 16 * i]) for i in range(4)]
    if any(e.status not in (0, 0x80) for e in entries):
        return None
    return entries


def _mbr_type(t: int) -> tuple[str, str, bool, str]:
    name = MBR_TYPES.get(t, f"unknown type 0x{t:02x}")
    reason = MBR_UNREADABLE.get(t, "")
    return f"0x{t:02x}", name, not reason, reason


def _read_mbr(r: _Reader, entries, ss: int) -> PartitionTable:
    parts: list[Partition] = []
    extended = None
    for slot, e in enumerate(entries):
        if e.type == 0 or e.sectors == 0:
            continue
        if e.type in EXTENDED_TYPES:
            if extended is None:
                extended = (e.lba_start, e.sectors)
            else:
                r.warnings.append(f"second extended partition in slot {slot + 1} ignored")
            continue
        tid, tname, ok, why = _mbr_type(e.type)
        parts.append(r.partition(slot + 1, e.lba_start * ss, e.sectors * ss, tid, tname,
                                 readable=ok, reason=why, attributes=e.status))
    if extended is not None:
        parts.extend(_read_ebr_chain(r, extended[0], extended[1], ss))
    return PartitionTable("mbr", parts, warnings=r.warnings)


def _read_ebr_chain(r: _Reader, ext_start: int, ext_sectors: int, ss: int) -> list[Partition]:
    """Logical partitions along the EBR chain (bounded, loop-safe, kept inside the container).

    A damaged link ends the chain with a warning instead of failing the table: the primary
    partitions and the logicals before the damage stay usable.
    """
    out: list[Partition] = []
    seen: set[int] = set()
    ebr = ext_start
    number = 5
    while True:
        at = ebr * ss
        if ebr in seen:
            r.warnings.append(f"EBR chain loops back to LBA {ebr}; stopped")
            break
        if len(seen) >= MAX_LOGICAL:
            r.warnings.append(f"EBR chain longer than {MAX_LOGICAL}; stopped")
            break
        if at + 512 > r.disk.size:
            r.warnings.append(f"EBR at LBA {ebr} lies past the end of the disk; logical "
                              "partitions from there on are missing")
            break
        seen.add(ebr)
        sector = r.disk.read(at, 512)
        if sector[510:512] != b"\x55\xaa":
            r.warnings.append(f"EBR at LBA {ebr} has no 55AA signature; chain stopped")
            break
        first = MBR_ENTRY.parse(sector[446:462])
        link = MBR_ENTRY.parse(sector[462:478])
        if first.type != 0 and first.sectors != 0:
            start = ebr + first.lba_start
            if start + first.sectors > ext_start + ext_sectors:
                r.warnings.append(f"logical partition {number} extends past its extended "
                                  "partition")
            tid, tname, ok, why = _mbr_type(first.type)
            out.append(r.partition(number, start * ss, first.sectors * ss, tid, tname,
                                   readable=ok, reason=why, attributes=first.status))
            number += 1
        if link.type not in EXTENDED_TYPES or link.lba_start == 0:
            break
        nxt = ext_start + link.lba_start
        if not ext_start < nxt < ext_start + ext_sectors:
            r.warnings.append(f"EBR at LBA {ebr} links to LBA {nxt}, outside the extended "
                              f"partition [{ext_start}, {ext_start + ext_sectors}); chain stopped")
            break
        ebr = nxt
    return out


# -- GPT ---------------------------------------------------------------------------------

def _read_gpt(r: _Reader, ss: int) -> PartitionTable | None:
    """Primary GPT at LBA 1, else the backup at the last LBA, else the backup where the
    (damaged) primary says it is: a disk grown or rounded up by a converter keeps its backup
    short of the new end. None if there is no GPT at all."""
    last_lba = r.disk.size // ss - 1
    if last_lba < 2:
        return None
    candidates = [("primary", 1), ("backup", last_lba)]
    head = r.disk.read(ss, GPT_HEADER_SIZE)
    if head[:8] == b"EFI PART" and len(head) == GPT_HEADER_SIZE:
        alt = GPT_HEADER.parse(head).alternate_lba
        if 1 < alt < last_lba:
            candidates.append(("backup", alt))
    errors = []
    for which, lba in candidates:
        try:
            header, entries = _gpt_at(r, lba, ss, which)
        except FormatError as e:
            errors.append(e)
            continue
        if header is None:
            continue
        if which == "backup":
            why = "; ".join(str(e) for e in errors) or "primary GPT header missing"
            r.warnings.append(f"primary GPT unusable ({why}); using the backup at LBA {lba}")
        return _gpt_table(r, header, entries, ss)
    if errors:
        raise errors[0]
    return None


def _gpt_at(r: _Reader, lba: int, ss: int, which: str):
    at = lba * ss
    raw = r.disk.read(at, ss)
    structure = f"{which} GPT header"
    if raw[:8] != b"EFI PART":
        return None, None
    if len(raw) < GPT_HEADER_SIZE:
        raise r.error("truncated", structure, at)
    h = GPT_HEADER.parse(raw)
    if not GPT_HEADER_SIZE <= h.header_size <= ss:
        raise r.error(f"header size {h.header_size} outside [92, {ss}]", structure, at + 12)
    body = bytearray(raw[: h.header_size])
    body[16:20] = b"\0\0\0\0"
    crc = zlib.crc32(body)
    if crc != h.header_crc:
        raise r.error(f"header CRC {h.header_crc:#010x} != computed {crc:#010x}", structure, at)
    if h.my_lba != lba:
        raise r.error(f"header says it sits at LBA {h.my_lba}, found at LBA {lba}",
                      structure, at + 24)
    es, n = h.entry_size, h.entry_count
    if es < 128 or es % 8 or es > 1 << 16:
        raise r.error(f"entry size {es} invalid (128 x 2^n expected)", structure, at + 84)
    if n * es > MAX_GPT_ARRAY:
        raise r.error(f"{n} entries of {es} bytes exceed {MAX_GPT_ARRAY} bytes", structure,
                      at + 80)
    array_at = h.entries_lba * ss
    length = n * es
    if array_at + length > r.disk.size:
        raise r.error(f"entry array at LBA {h.entries_lba} runs past the end of the disk",
                      f"{which} GPT entry array", array_at)
    array = r.disk.read(array_at, length)
    crc = zlib.crc32(array)
    if crc != h.entries_crc:
        raise r.error(f"entry array CRC {h.entries_crc:#010x} != computed {crc:#010x}",
                      f"{which} GPT entry array", array_at)
    return h, [(i, array[i * es : i * es + 128], array_at + i * es) for i in range(n)]


def _gpt_table(r: _Reader, h, entries, ss: int) -> PartitionTable:
    parts: list[Partition] = []
    for index, raw, at in entries:
        if raw[:16] == bytes(16):
            continue
        e = GPT_ENTRY.parse(raw)
        tid = _guid(e.type_guid)
        name = bytes(e.name).decode("utf-16-le", "replace").split("\0", 1)[0]
        if e.last_lba < e.first_lba:
            r.warnings.append(f"GPT entry {index + 1} ends (LBA {e.last_lba}) before it starts "
                              f"(LBA {e.first_lba}); skipped")
            continue
        reason = GPT_UNREADABLE.get(tid, "")
        parts.append(r.partition(
            index + 1, e.first_lba * ss, (e.last_lba - e.first_lba + 1) * ss, tid,
            GPT_TYPES.get(tid, "unknown"), name=name, readable=not reason, reason=reason,
            guid=_guid(e.unique_guid), attributes=e.attributes))
    return PartitionTable("gpt", parts, disk_guid=_guid(h.disk_guid), warnings=r.warnings)
