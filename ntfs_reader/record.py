"""MFT records (FILE records): update-sequence fixups, header, and attribute headers.

Parsing a record is on the path of every stat during a walk, so the header and attribute
headers are read with ``struct.unpack_from`` (their layouts are spelled out beside each
format string) rather than construct.
"""

from __future__ import annotations

import struct

from streams.errors import FormatError
from streams.record import Record

from . import native
from .runlist import decode_runlist

# attribute types
AT_STANDARD_INFORMATION = 0x10
AT_ATTRIBUTE_LIST = 0x20
AT_FILE_NAME = 0x30
AT_OBJECT_ID = 0x40
AT_SECURITY_DESCRIPTOR = 0x50
AT_VOLUME_NAME = 0x60
AT_VOLUME_INFORMATION = 0x70
AT_DATA = 0x80
AT_INDEX_ROOT = 0x90
AT_INDEX_ALLOCATION = 0xA0
AT_BITMAP = 0xB0
AT_REPARSE_POINT = 0xC0
AT_EA_INFORMATION = 0xD0
AT_EA = 0xE0
AT_LOGGED_UTILITY_STREAM = 0x100
AT_END = 0xFFFFFFFF

ATTR_NAMES = {
    0x10: "$STANDARD_INFORMATION", 0x20: "$ATTRIBUTE_LIST", 0x30: "$FILE_NAME",
    0x40: "$OBJECT_ID", 0x50: "$SECURITY_DESCRIPTOR", 0x60: "$VOLUME_NAME",
    0x70: "$VOLUME_INFORMATION", 0x80: "$DATA", 0x90: "$INDEX_ROOT",
    0xA0: "$INDEX_ALLOCATION", 0xB0: "$BITMAP", 0xC0: "$REPARSE_POINT",
    0xD0: "$EA_INFORMATION", 0xE0: "$EA", 0x100: "$LOGGED_UTILITY_STREAM",
}

# attribute flags
ATTR_COMPRESSED = 0x0001
ATTR_ENCRYPTED = 0x4000
ATTR_SPARSE = 0x8000

# record flags
REC_IN_USE = 0x0001
REC_DIRECTORY = 0x0002

# Record header (NTFS 3.1): magic 4s, usa_ofs H, usa_count H, lsn Q, sequence H,
# link_count H, attrs_offset H, flags H, bytes_in_use I, bytes_allocated I,
# base_ref Q, next_attr_id H, (pad H, record_number I).
_HEADER = struct.Struct("<4sHHQHHHHIIQH")
# Attribute header: type I, length I, non_resident B, name_length B, name_offset H,
# flags H, attr_id H.
_ATTR = struct.Struct("<IIBBHHH")
# Resident part: value_length I, value_offset H.
_RES = struct.Struct("<IH")
# Non-resident part: lowest_vcn q, highest_vcn q, mapping_pairs_offset H,
# compression_unit B, pad 5, allocated_size q, data_size q, initialized_size q.
_NONRES = struct.Struct("<qqHB5xqqq")

REF_MASK = (1 << 48) - 1


def ref_number(ref: int) -> int:
    return ref & REF_MASK


def ref_sequence(ref: int) -> int:
    return ref >> 48


def apply_fixups(buf: bytearray, magic: bytes, source: str, structure: str, offset: int,
                 stride: int = 512) -> None:
    """Checks and undoes the update sequence array in place (a torn write is an error)."""
    p = native.parser
    if p is None or p.fixups(buf, magic, stride) is None:
        apply_fixups_python(buf, magic, source, structure, offset, stride)


def apply_fixups_python(buf: bytearray, magic: bytes, source: str, structure: str,
                        offset: int, stride: int = 512) -> None:
    """The reference twin of apply_fixups (and what reports a bad buffer)."""
    if bytes(buf[:4]) != magic:
        what = "BAAD (marked bad by chkdsk)" if buf[:4] == b"BAAD" else repr(bytes(buf[:4]))
        raise FormatError(f"bad magic {what}", source=source, structure=structure,
                          offset=offset)
    usa_ofs, usa_count = struct.unpack_from("<HH", buf, 4)
    size = len(buf)
    if usa_count - 1 != size // stride or usa_ofs < 8 or usa_ofs + 2 * usa_count > size \
            or usa_ofs & 1:
        raise FormatError(f"bad update sequence array ({usa_ofs:#x}, {usa_count})",
                          source=source, structure=structure, offset=offset)
    usn = buf[usa_ofs:usa_ofs + 2]
    for i in range(1, usa_count):
        end = i * stride
        if buf[end - 2:end] != usn:
            raise FormatError(f"torn write: sector {i - 1} does not end with the update "
                              f"sequence number", source=source, structure=structure,
                              offset=offset + end - 2)
        p = usa_ofs + 2 * i
        buf[end - 2:end] = buf[p:p + 2]


class Attribute(Record):
    """One attribute header (and, when resident, its value). ``_ntfsparse`` fills the slots
    of the ones it parses without calling ``__init__``."""

    __slots__ = _fields = ("type", "name", "flags", "attr_id", "resident", "value", "lowest_vcn",
                           "highest_vcn", "compression_unit", "allocated_size", "data_size",
                           "initialized_size", "compressed_size", "runs", "raw", "pairs_at",
                           "pairs_end", "record", "offset", "rec_offset")

    def __init__(self, type: int, name: str, flags: int, attr_id: int, resident: bool,
                 value: bytes | None, lowest_vcn: int = 0, highest_vcn: int = -1,
                 compression_unit: int = 0, allocated_size: int = 0, data_size: int = 0,
                 initialized_size: int = 0, compressed_size: int = 0, runs: list | None = None,
                 raw: bytes | None = None, pairs_at: int = 0, pairs_end: int = 0,
                 record: int = 0, offset: int = 0, rec_offset: int = 0):
        self.type = type
        self.name = name
        self.flags = flags
        self.attr_id = attr_id
        self.resident = resident
        self.value = value                  # resident value
        self.lowest_vcn = lowest_vcn
        self.highest_vcn = highest_vcn
        self.compression_unit = compression_unit
        self.allocated_size = allocated_size
        self.data_size = data_size
        self.initialized_size = initialized_size
        self.compressed_size = compressed_size
        self.runs = runs                    # decoded lazily by the owner (see decode_runs)
        self.raw = raw                      # non-resident: (record bytes, offset) for decoding
        self.pairs_at = pairs_at
        self.pairs_end = pairs_end
        self.record = record                # record number this extent lives in
        self.offset = offset                # byte offset of the attribute in the volume stream
        self.rec_offset = rec_offset        # byte offset of its record in the volume stream

    @property
    def type_name(self) -> str:
        return ATTR_NAMES.get(self.type, f"attribute {self.type:#x}")

    @property
    def size(self) -> int:
        return len(self.value) if self.resident else self.data_size

    def decode_runs(self, total_clusters: int, source: str) -> list:
        if self.runs is None:
            p = native.parser    # first without the error context, which costs more than C
            runs = None if p is None else p.decode_runlist(
                self.raw, self.pairs_at, self.pairs_end, self.lowest_vcn, total_clusters)
            self.runs = runs if runs is not None else decode_runlist(
                self.raw, self.pairs_at, self.pairs_end, self.lowest_vcn, total_clusters,
                source, f"runlist of {self.type_name} in MFT record {self.record}",
                self.rec_offset)
            last = self.runs[-1][0] + self.runs[-1][1] - 1 if self.runs else self.lowest_vcn - 1
            if self.highest_vcn >= self.lowest_vcn and last != self.highest_vcn and self.runs:
                if last < self.highest_vcn:
                    raise FormatError(
                        f"runlist ends at VCN {last}, header says {self.highest_vcn}",
                        source=source, structure=f"{self.type_name} in MFT record {self.record}",
                        offset=self.offset)
        return self.runs


class MftRecord(Record):
    """One parsed MFT record (fixups applied) and its attributes."""

    __slots__ = _fields = ("number", "sequence", "link_count", "flags", "base_ref", "attributes")

    def __init__(self, number: int, sequence: int, link_count: int, flags: int, base_ref: int,
                 attributes: list):
        self.number = number
        self.sequence = sequence
        self.link_count = link_count
        self.flags = flags
        self.base_ref = base_ref
        self.attributes = attributes

    @property
    def in_use(self) -> bool:
        return bool(self.flags & REC_IN_USE)

    @property
    def is_directory(self) -> bool:
        return bool(self.flags & REC_DIRECTORY)

    @property
    def is_base(self) -> bool:
        return self.base_ref == 0


def parse_record(data: bytes, number: int, source: str, offset: int) -> MftRecord:
    """Fixups, header and attribute headers of one MFT record (values copied out)."""
    p = native.parser
    if p is not None:
        rec = p.parse_record(data, number, offset)
        if rec is not None:
            return rec
    return parse_record_python(data, number, source, offset)


def parse_record_python(data: bytes, number: int, source: str, offset: int) -> MftRecord:
    """The reference twin of parse_record (and what reports a bad record)."""
    structure = f"MFT record {number}"
    buf = bytearray(data)
    apply_fixups_python(buf, b"FILE", source, structure, offset)
    size = len(buf)
    (_, _, _, _, seq, links, attrs_off, flags, in_use, allocated, base_ref,
     _) = _HEADER.unpack_from(buf, 0)
    if in_use > size or allocated != size or attrs_off < 0x30 or attrs_off >= in_use \
            or attrs_off & 7:
        raise FormatError(f"bad header (attributes at {attrs_off:#x}, {in_use} of "
                          f"{allocated} bytes used)", source=source, structure=structure,
                          offset=offset)
    usa_ofs = struct.unpack_from("<H", buf, 4)[0]
    if usa_ofs >= 0x30 and struct.unpack_from("<I", buf, 0x2C)[0] not in (0, number & 0xFFFFFFFF):
        # NTFS 3.1 stores the record's own number; a mismatch means a misplaced record
        raise FormatError(f"record says it is number {struct.unpack_from('<I', buf, 0x2C)[0]}",
                          source=source, structure=structure, offset=offset)
    data = bytes(buf[:in_use])
    attrs = []
    pos = attrs_off
    while True:
        if pos + 4 > in_use:
            raise FormatError("attribute list runs past the used bytes", source=source,
                              structure=structure, offset=offset + pos)
        atype = struct.unpack_from("<I", data, pos)[0]
        if atype == AT_END:
            break
        if pos + 16 > in_use:
            raise FormatError("truncated attribute header", source=source,
                              structure=structure, offset=offset + pos)
        atype, alen, nonres, name_len, name_off, aflags, attr_id = _ATTR.unpack_from(data, pos)
        end = pos + alen
        if alen < 16 or alen & 7 or end > in_use:
            raise FormatError(f"attribute {atype:#x} has bad length {alen}", source=source,
                              structure=structure, offset=offset + pos)
        name = ""
        if name_len:
            if name_off + 2 * name_len > alen:
                raise FormatError("attribute name outside the attribute", source=source,
                                  structure=structure, offset=offset + pos)
            name = data[pos + name_off:pos + name_off + 2 * name_len].decode(
                "utf-16-le", "surrogatepass")
        if not nonres:
            if alen < 24:
                raise FormatError("truncated resident attribute", source=source,
                                  structure=structure, offset=offset + pos)
            vlen, voff = _RES.unpack_from(data, pos + 16)
            if voff + vlen > alen:
                raise FormatError(f"resident value ({voff}+{vlen}) outside the attribute",
                                  source=source, structure=structure, offset=offset + pos)
            attrs.append(Attribute(atype, name, aflags, attr_id, True,
                                   data[pos + voff:pos + voff + vlen], record=number,
                                   offset=offset + pos))
        else:
            if alen < 64:
                raise FormatError("truncated non-resident attribute", source=source,
                                  structure=structure, offset=offset + pos)
            (low, high, pairs_off, cunit, alloc, dsize, isize) = _NONRES.unpack_from(data, pos + 16)
            compressed = 0
            if (cunit or aflags & (ATTR_COMPRESSED | ATTR_SPARSE)) and alen >= 72 \
                    and pairs_off >= 72:
                compressed = struct.unpack_from("<q", data, pos + 64)[0]
            if (low < 0 or high < low - 1 or pairs_off >= alen or pairs_off < 64
                    or alloc < 0 or dsize < 0 or isize < 0 or cunit > 16):
                raise FormatError(f"bad non-resident header of attribute {atype:#x}",
                                  source=source, structure=structure, offset=offset + pos)
            attrs.append(Attribute(atype, name, aflags, attr_id, False, None, low, high,
                                   cunit, alloc, dsize, isize, compressed, None, data,
                                   pos + pairs_off, end, number, offset + pos, offset))
        pos = end
    return MftRecord(number, seq, links, flags, base_ref, attrs)


def data_attribute(data: bytes, number: int, offset: int) -> tuple | None:
    """(sequence, record flags, $STANDARD_INFORMATION file attributes, the unnamed $DATA
    Attribute) of a plain base record: no attribute list, no reparse point, a resident
    unnamed $STANDARD_INFORMATION first, exactly one unnamed $DATA. What opening a file
    needs, without the objects of its other attributes (one call per file of a restore).
    None for anything else, a damaged record included: the caller reads the whole record,
    which reports the damage."""
    p = native.parser
    if p is None:
        return data_attribute_python(data, number, offset)
    fn = getattr(p, "data_attribute", None)
    # an extension built before this function: the whole record, parsed in C, is quicker
    return None if fn is None else fn(data, number, offset)


def data_attribute_python(data: bytes, number: int, offset: int) -> tuple | None:
    """The reference twin of data_attribute."""
    try:
        rec = parse_record_python(data, number, "<record>", offset)
    except FormatError:
        return None
    if rec.base_ref:
        return None
    si = found = None
    si_seen = False
    for a in rec.attributes:
        if a.type in (AT_ATTRIBUTE_LIST, AT_REPARSE_POINT):
            return None
        if a.type == AT_STANDARD_INFORMATION and not si_seen:
            si_seen = True
            if a.name or not a.resident or len(a.value) < 48:
                return None
            si = a.value
        elif a.type == AT_DATA and a.name == "":
            if found is not None:
                return None
            found = a
    if si is None or found is None:
        return None
    return rec.sequence, rec.flags, struct.unpack_from("<I", si, 32)[0], found
