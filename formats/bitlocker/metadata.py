"""BitLocker's on-disk metadata: the volume header and the FVE metadata blocks.

A BitLocker volume starts with a boot sector signed ``-FVE-FS-`` (Windows 7 and later) or,
for BitLocker To Go, a FAT32-looking one signed ``MSWIN4.1``; both carry the BitLocker GUID
and the offsets of three copies of the FVE metadata block (64 KiB each). Windows Vista's
(version 1) keeps NTFS's boot sector with only the signature changed and, where NTFS keeps
the MFT mirror's cluster, the cluster of the first metadata block; that block's header
(size in bytes, version 1) names all three and keeps the MFT mirror's cluster instead of a
header block offset. Its blocks take (cluster + 16 KiB - 1) rounded down to clusters. A block is a
header, then a list of entries: the volume master key (VMK) once per protector, each wrapped
by what that protector unlocks, and the full-volume encryption key (FVEK) wrapped by the
VMK. Parsing is strict about sizes (every entry must fit its parent) and reads only the
first valid copy; the other two are used when one is damaged.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from construct import Bytes, Int16ul, Int32ul, Int64ul, Struct

from streams.errors import FormatError, UnsupportedError
from streams.stream import Stream

SIGNATURE = b"-FVE-FS-"
SIGNATURE_TOGO = b"MSWIN4.1"
GUID_NORMAL = uuid.UUID("4967d63b-2e29-4ad8-8399-f6a339e3d001")
GUID_EOW = uuid.UUID("92a84d3b-dd80-4d0e-9e4e-b1e3284eaed8")  # encrypt on write (used space only)
METADATA_AREA = 64 << 10
VISTA_JUMP = b"\xeb\x52\x90"
VISTA_PLAIN = 8192  # Vista leaves the first 16 sectors unencrypted (the first one altered)

BOOT_SECTOR = Struct(
    "jump" / Bytes(3),
    "signature" / Bytes(8),
    "bytes_per_sector" / Int16ul,
)
FVE_POINTERS = Struct(  # at 160 (-FVE-FS-) or 424 (To Go) in the boot sector
    "guid" / Bytes(16),
    "offsets" / Int64ul[3],
)
BLOCK_HEADER = Struct(  # 64 bytes at each metadata offset
    "signature" / Bytes(8),
    "size" / Int16ul,
    "version" / Int16ul,
    "current_state" / Int16ul,
    "next_state" / Int16ul,
    "encrypted_size" / Int64ul,     # bytes from the volume start that are encrypted
    "convert_size" / Int32ul,
    "header_sectors" / Int32ul,     # boot sectors moved to the volume header block
    "offsets" / Int64ul[3],
    "header_offset" / Int64ul,      # where the original boot sectors now are
)
METADATA_HEADER = Struct(  # 48 bytes right after the block header
    "size" / Int32ul,               # this header and the entries
    "version" / Int32ul,
    "header_size" / Int32ul,
    "size_copy" / Int32ul,
    "volume_guid" / Bytes(16),
    "next_nonce" / Int32ul,
    "method" / Int16ul,
    "unknown" / Int16ul,
    "created" / Int64ul,
)
ENTRY_HEADER = Struct("size" / Int16ul, "type" / Int16ul, "value_type" / Int16ul,
                      "version" / Int16ul)

METHODS = {
    0x8000: ("AES-CBC 128 + Elephant diffuser", "cbc-elephant", 16),
    0x8001: ("AES-CBC 256 + Elephant diffuser", "cbc-elephant", 32),
    0x8002: ("AES-CBC 128", "cbc", 16),
    0x8003: ("AES-CBC 256", "cbc", 32),
    0x8004: ("AES-XTS 128", "xts", 16),
    0x8005: ("AES-XTS 256", "xts", 32),
}
PROTECTORS = {
    0x0000: "clear key",
    0x0100: "TPM",
    0x0200: "startup key",
    0x0500: "TPM and PIN",
    0x0800: "recovery password",
    0x1000: "smart card",
    0x2000: "password",
}
# current_state / next_state. A paused full-volume conversion made by Windows 7 reads 3
# (libyal/dissect's test volume win7_partial: 3 then 1, a decryption paused); dislocker
# calls 5 "paused"; a used-space-only volume says 4 however far its conversion got.
STATES = {1: "decrypted", 2: "converting", 3: "paused", 4: "encrypted", 5: "paused"}

# Entry types (what an entry is for) and value types (how its data is laid out).
ENTRY_VMK, ENTRY_FVEK, ENTRY_STARTUP_KEY, ENTRY_DESCRIPTION = 0x0002, 0x0003, 0x0006, 0x0007
ENTRY_VOLUME_HEADER = 0x000F
VALUE_KEY, VALUE_STRING, VALUE_STRETCH_KEY = 0x0001, 0x0002, 0x0003
VALUE_CCM_KEY, VALUE_VMK, VALUE_EXTERNAL_KEY, VALUE_OFFSET_SIZE = 0x0005, 0x0008, 0x0009, 0x000F
ENTRY_HEADER_SIZE = 8
MAX_DEPTH = 4


@dataclass
class Entry:
    type: int
    value_type: int
    data: bytes  # after the 8-byte entry header
    offset: int  # of the entry header, in the metadata block


@dataclass
class WrappedKey:
    """An AES-CCM encrypted key: 12-byte nonce, 16-byte tag, ciphertext."""

    nonce: bytes
    tag: bytes
    ciphertext: bytes

    @classmethod
    def parse(cls, data: bytes, where: str) -> "WrappedKey":
        if len(data) < 12 + 16 + 16:
            raise FormatError(f"AES-CCM key entry of {len(data)} bytes is too short",
                              structure=where)
        return cls(data[:12], data[12:28], data[28:])


@dataclass
class Protector:
    """One VMK entry: the volume master key wrapped for one way of unlocking."""

    guid: uuid.UUID
    kind: int
    name: str
    wrapped: WrappedKey | None = None
    salt: bytes | None = None        # password and recovery password: the stretch salt
    clear_key: bytes | None = None   # clear key (suspended protection): the key, in the open

    @property
    def usable(self) -> bool:
        """Whether a key from --keys (or none, for a clear key) can open it here."""
        return self.kind in (0x0000, 0x0200, 0x0800, 0x2000) and self.wrapped is not None


@dataclass
class Metadata:
    """What one FVE metadata block says (offsets are from the volume start)."""

    version: int
    togo: bool
    eow: bool
    sector_size: int
    method: int
    current_state: int
    next_state: int
    encrypted_size: int
    metadata_offsets: tuple[int, int, int]
    header_offset: int
    header_size: int
    volume_guid: uuid.UUID
    created: int
    description: str | None
    protectors: list[Protector] = field(default_factory=list)
    fvek: WrappedKey | None = None
    block_offset: int = 0
    metadata_size: int = METADATA_AREA  # bytes each metadata block's area takes
    mft_mirror: int = 0              # Vista: the MFT mirror's cluster, for the boot sector
    convert_size: int = 0            # bytes at the watermark a running conversion rewrites
    eow_offsets: tuple[int, ...] = ()  # the two FVE-EOW copies of a used-space-only volume

    @property
    def method_name(self) -> str:
        return METHODS.get(self.method, (f"unknown method {self.method:#06x}",))[0]

    @property
    def state(self) -> str:
        return STATES.get(self.current_state, f"state {self.current_state}")

    def summary(self) -> dict:
        """What this block says, for ``rpfs info`` (never a key)."""
        return {
            "type": ("BitLocker To Go" if self.togo else "BitLocker (Windows Vista)"
                     if self.version == 1 else "BitLocker"),
            "version": self.version, "encryption": self.method_name, "state": self.state,
            "sector_size": self.sector_size, "encrypted_size": self.encrypted_size,
            "used_space_only": self.eow, "volume_guid": str(self.volume_guid),
            "description": self.description,
            "protectors": [{"type": p.name, "id": str(p.guid), "usable": p.usable}
                           for p in self.protectors],
        }


def vista_area(cluster: int) -> int:
    """Bytes each FVE metadata block takes on a Vista volume (what Windows shows as zeros)."""
    return (cluster + 0x3FFF) & ~(cluster - 1)


def probe(stream: Stream) -> tuple[bool, tuple[int, int, int], int, int] | None:
    """(To Go?, metadata offsets, sector size, cluster size for Vista else 0) if ``stream``
    starts with a BitLocker volume header, else None. Cheap: one 512-byte read (two for
    Vista, whose boot sector names only the first metadata block)."""
    head = stream.read(0, 512)
    if len(head) < 512:
        return None
    boot = BOOT_SECTOR.parse(head)
    if boot.signature == SIGNATURE:
        at, togo = 160, False
    elif boot.signature == SIGNATURE_TOGO:
        at, togo = 424, True
    else:
        return None
    ptr = FVE_POINTERS.parse(head[at:])
    guid = uuid.UUID(bytes_le=ptr.guid)
    if guid not in (GUID_NORMAL, GUID_EOW):
        if boot.signature == SIGNATURE and head[:3] == VISTA_JUMP:
            return _probe_vista(stream, head, boot.bytes_per_sector)
        return None  # a plain FAT volume formatted by an old Windows
    sector = boot.bytes_per_sector or 512
    return togo, tuple(ptr.offsets), sector, 0


def _probe_vista(stream: Stream, head: bytes, sector: int):
    def fail(msg, at=0):
        return FormatError(msg, source=stream.name, structure="BitLocker (Vista) volume header",
                           offset=at)

    spc = head[13]
    if sector not in (512, 1024, 2048, 4096) or spc == 0 or spc & (spc - 1):
        raise fail(f"{sector} bytes per sector and {spc} sectors per cluster are not NTFS's")
    cluster = sector * spc
    first = int.from_bytes(head[56:64], "little") * cluster
    if not 0 < first <= stream.size - 64:
        raise fail(f"first metadata block at {first:#x} is outside the volume", 56)
    block = BLOCK_HEADER.parse(stream.read(first, 64))
    if block.signature != SIGNATURE:
        raise fail("no -FVE-FS- signature at the first metadata block", first)
    offsets = tuple(block.offsets) if first in block.offsets else (first,)
    return False, offsets, sector, cluster


def read_metadata(stream: Stream) -> Metadata:
    """The first FVE metadata block of the three that parses; FormatError if none does."""
    found = probe(stream)
    if found is None:
        raise FormatError("not a BitLocker volume", source=stream.name,
                          structure="BitLocker volume header", offset=0)
    return read_copies(stream, found)[0]


def read_copies(stream: Stream, found) -> list[Metadata]:
    """Every FVE metadata block copy that parses, in on-disk order (at least one)."""
    togo, offsets, sector, cluster = found
    good: list[Metadata] = []
    errors: list[FormatError] = []
    seen = set()
    for off in offsets:
        if off in seen:
            continue
        seen.add(off)
        try:
            good.append(_parse_block(stream, off, togo, sector, cluster))
        except FormatError as e:
            errors.append(e)
    if not good:
        first = errors[0]
        raise FormatError(f"all {len(seen)} copies of the FVE metadata are damaged ({first.message})",
                          source=stream.name, structure=first.structure, offset=first.offset)
    return good


def _parse_block(stream: Stream, offset: int, togo: bool, sector: int,
                 cluster: int = 0) -> Metadata:
    """One metadata block; ``cluster`` is set for Vista's (version 1) blocks."""
    where = "FVE metadata block"
    area = vista_area(cluster) if cluster else METADATA_AREA

    def fail(msg, at=offset):
        return FormatError(msg, source=stream.name, structure=where, offset=at)

    if offset <= 0 or offset % 512 or offset + area > stream.size:
        raise fail(f"metadata offset {offset:#x} is outside the volume", 0)
    raw = stream.read(offset, area)
    head = BLOCK_HEADER.parse(raw)
    if head.signature != SIGNATURE:
        raise fail("no -FVE-FS- signature")
    if head.version != (1 if cluster else 2):
        raise UnsupportedError(f"FVE metadata version {head.version} is not supported"
                               + (" in a Windows Vista volume" if cluster else ""),
                               source=stream.name, structure=where, offset=offset)
    meta = METADATA_HEADER.parse(raw[64:])
    if meta.header_size != 48 or not 48 + 8 <= meta.size <= area - 64 \
            or meta.size_copy != meta.size:
        raise fail(f"metadata header sizes {meta.header_size}/{meta.size}/{meta.size_copy} "
                   "are inconsistent", offset + 64)
    if tuple(head.offsets) and offset not in head.offsets:
        raise fail("block is not at one of the offsets it lists")
    entries = parse_entries(raw, 64 + 48, 64 + meta.size, stream.name, offset)
    out = Metadata(
        version=head.version, togo=togo, eow=False, sector_size=sector, method=meta.method,
        current_state=head.current_state, next_state=head.next_state,
        encrypted_size=head.encrypted_size, metadata_offsets=tuple(head.offsets),
        header_offset=head.header_offset, header_size=head.header_sectors * sector,
        volume_guid=uuid.UUID(bytes_le=meta.volume_guid), created=meta.created,
        description=None, block_offset=offset)
    out.eow_offsets = () if cluster else _eow_offsets(stream)
    out.eow = bool(out.eow_offsets)
    out.convert_size = head.convert_size
    out.metadata_size = area
    if cluster:  # Vista: no moved boot sectors; the first 16 sectors stay in the clear
        out.mft_mirror, out.header_offset, out.header_size = head.header_offset, 0, VISTA_PLAIN
    for e in entries:
        if e.type == ENTRY_VMK and e.value_type == VALUE_VMK:
            out.protectors.append(_parse_vmk(e, raw, stream.name, offset))
        elif e.type == ENTRY_FVEK and e.value_type == VALUE_CCM_KEY and out.fvek is None:
            out.fvek = WrappedKey.parse(e.data, f"{where} FVEK entry at {offset + e.offset:#x}")
        elif e.type == ENTRY_VOLUME_HEADER and e.value_type == VALUE_OFFSET_SIZE:
            if len(e.data) < 16:
                raise fail("volume header entry is too short", offset + e.offset)
            out.header_offset = int.from_bytes(e.data[:8], "little")
            out.header_size = int.from_bytes(e.data[8:16], "little")
        elif e.type == ENTRY_DESCRIPTION and e.value_type == VALUE_STRING:
            out.description = e.data.decode("utf-16-le", "replace").rstrip("\0")
    decrypted = out.current_state == 1 and out.method == 0 and out.fvek is None
    if out.method not in METHODS and not decrypted:
        raise UnsupportedError(f"encryption method {out.method:#06x} is not supported",
                               source=stream.name, structure=where, offset=offset + 64 + 36)
    if out.fvek is None and not decrypted:  # decrypted: Windows removed the keys
        raise fail("no FVEK entry")
    if not (0 <= out.header_offset and 0 < out.header_size
            and out.header_offset + out.header_size <= stream.size):
        raise fail(f"relocated boot sectors at {out.header_offset:#x}+{out.header_size:#x} "
                   "are outside the volume")
    return out


def _eow_offsets(stream: Stream) -> tuple[int, ...]:
    """The two FVE-EOW offsets that follow the metadata offsets when the boot sector carries
    the used-space-only GUID; () for a volume encrypted in full."""
    head = stream.read(0, 512)
    at = 424 if head[3:11] == SIGNATURE_TOGO else 160
    if uuid.UUID(bytes_le=head[at:at + 16]) != GUID_EOW:
        return ()
    return tuple(int.from_bytes(head[at + 40 + 8 * i:at + 48 + 8 * i], "little") for i in range(2))


def parse_entries(raw: bytes, start: int, end: int, source: str, base: int) -> list[Entry]:
    """The entries in ``raw[start:end]``; an entry that does not fit is a FormatError."""
    out = []
    pos = start
    while pos + ENTRY_HEADER_SIZE <= end:
        h = ENTRY_HEADER.parse(raw[pos:pos + ENTRY_HEADER_SIZE])
        if h.size == 0:
            break
        if h.size < ENTRY_HEADER_SIZE or pos + h.size > end:
            raise FormatError(f"entry of {h.size} bytes does not fit (ends at {end - start})",
                              source=source, structure="FVE metadata entry", offset=base + pos)
        out.append(Entry(h.type, h.value_type, raw[pos + ENTRY_HEADER_SIZE:pos + h.size], pos))
        pos += h.size
    return out


def _parse_vmk(e: Entry, raw: bytes, source: str, base: int) -> Protector:
    if len(e.data) < 28:
        raise FormatError("VMK entry is too short", source=source, structure="VMK entry",
                          offset=base + e.offset)
    guid = uuid.UUID(bytes_le=e.data[:16])
    kind = int.from_bytes(e.data[26:28], "little")
    p = Protector(guid, kind, PROTECTORS.get(kind, f"unknown protector {kind:#06x}"))
    start = e.offset + ENTRY_HEADER_SIZE + 28
    end = e.offset + ENTRY_HEADER_SIZE + len(e.data)
    for sub in parse_entries(raw, start, end, source, base):
        where = f"VMK {guid} entry at {base + sub.offset:#x}"
        if sub.value_type == VALUE_CCM_KEY and p.wrapped is None:
            p.wrapped = WrappedKey.parse(sub.data, where)
        elif sub.value_type == VALUE_STRETCH_KEY:
            if len(sub.data) < 20:
                raise FormatError("stretch key entry is too short", source=source,
                                  structure=where, offset=base + sub.offset)
            p.salt = sub.data[4:20]
        elif sub.value_type == VALUE_KEY and kind == 0x0000:
            p.clear_key = sub.data[4:]
    return p
