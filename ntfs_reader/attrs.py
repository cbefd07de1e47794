"""Values of the small resident attributes: $STANDARD_INFORMATION, $FILE_NAME,
$VOLUME_INFORMATION, $ATTRIBUTE_LIST entries, $OBJECT_ID.

$FILE_NAME is also the key of every directory index entry, so it is decoded with struct
(the enumeration hot loop); the others are declared as ``streams.layout.Layout``.
"""

from __future__ import annotations

import struct
import uuid
from collections import namedtuple

from streams.errors import FormatError
from streams.layout import Layout
from streams.record import Value

from . import native
from .times import Times

# FILE_ATTRIBUTE_* flags (in $STANDARD_INFORMATION and $FILE_NAME)
FILE_ATTRIBUTE_READONLY = 0x0001
FILE_ATTRIBUTE_HIDDEN = 0x0002
FILE_ATTRIBUTE_SYSTEM = 0x0004
FILE_ATTRIBUTE_DIRECTORY = 0x0010
FILE_ATTRIBUTE_ARCHIVE = 0x0020
FILE_ATTRIBUTE_SPARSE_FILE = 0x0200
FILE_ATTRIBUTE_REPARSE_POINT = 0x0400
FILE_ATTRIBUTE_COMPRESSED = 0x0800
FILE_ATTRIBUTE_OFFLINE = 0x1000
FILE_ATTRIBUTE_ENCRYPTED = 0x4000
FILE_ATTRIBUTE_RECALL_ON_OPEN = 0x00040000
FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS = 0x00400000
FILE_NAME_INDEX_PRESENT = 0x10000000  # $FILE_NAME's flag for "is a directory"

# $FILE_NAME namespaces
NS_POSIX = 0
NS_WIN32 = 1
NS_DOS = 2
NS_WIN32_AND_DOS = 3

STANDARD_INFORMATION = Layout("StandardInformationRaw", "<QQQQI",
                              "created modified changed accessed file_attributes")
STANDARD_INFORMATION_V3 = Layout(  # NTFS 3.x tail (72 bytes in all)
    "StandardInformationV3", "<IIIIIQQ",
    "max_versions version class_id owner_id security_id quota_charged usn")

VOLUME_INFORMATION = Layout("VolumeInformationRaw", "<QBBH", "reserved major minor flags")
VOLUME_IS_DIRTY = 0x0001

ATTRIBUTE_LIST_ENTRY = Layout("AttributeListEntry", "<IHBBQQH",
                              "type length name_length name_offset lowest_vcn file_ref attr_id")


class StandardInformation(Value):
    """$STANDARD_INFORMATION: the file's times and attributes."""

    __slots__ = _fields = ("times", "file_attributes", "security_id")

    def __init__(self, times: Times, file_attributes: int, security_id: int | None):
        self.times = times
        self.file_attributes = file_attributes
        self.security_id = security_id


# The same layouts as STANDARD_INFORMATION(+_V3) above as plain structs, for the stat hot
# path (no named tuple per parse).
_SI = struct.Struct("<QQQQI")
_SI_SECURITY = struct.Struct("<I")


def parse_standard_information(value: bytes, where: dict) -> StandardInformation:
    if len(value) < 48:
        raise FormatError(f"$STANDARD_INFORMATION too short ({len(value)} bytes)", **where)
    cr, mo, ch, ac, flags = _SI.unpack_from(value, 0)
    sec = _SI_SECURITY.unpack_from(value, 52)[0] if len(value) >= 72 else None
    return StandardInformation(Times(cr, mo, ch, ac), flags, sec)


# $FILE_NAME: parent_ref Q, created Q, modified Q, changed Q, accessed Q, allocated_size q,
# data_size q, flags I, reparse/EA I, name_length B, namespace B, name (UTF-16LE)
_FILE_NAME = struct.Struct("<QQQQQqqIIBB")


class FileName(namedtuple("FileName", "parent_ref times allocated_size data_size flags "
                                       "reparse_tag namespace raw_name")):
    """$FILE_NAME (a named tuple: one is made for every directory index entry listed):
    ``times`` a Times, ``raw_name`` the name in UTF-16LE as stored, the others ints."""

    __slots__ = ()


def parse_file_name(value: bytes, where: dict) -> FileName:
    p = native.parser
    if p is not None:
        fn = p.parse_file_name(value)
        if fn is not None:
            return fn
    return parse_file_name_python(value, where)


def parse_file_name_python(value: bytes, where: dict) -> FileName:
    """The reference twin of parse_file_name (and what reports a bad value)."""
    if len(value) < 66:
        raise FormatError(f"$FILE_NAME too short ({len(value)} bytes)", **where)
    (parent, cr, mo, ch, ac, alloc, size, flags, reparse, nlen,
     ns) = _FILE_NAME.unpack_from(value, 0)
    if 66 + 2 * nlen > len(value) or nlen == 0:
        raise FormatError(f"$FILE_NAME name of {nlen} characters does not fit", **where)
    return FileName(parent, Times(cr, mo, ch, ac), alloc, size, flags, reparse, ns,
                    bytes(value[66:66 + 2 * nlen]))


class ListEntry(Value):
    """One $ATTRIBUTE_LIST entry: which record holds which attribute."""

    __slots__ = _fields = ("type", "name", "lowest_vcn", "file_ref", "attr_id")

    def __init__(self, type: int, name: str, lowest_vcn: int, file_ref: int, attr_id: int):
        self.type = type
        self.name = name
        self.lowest_vcn = lowest_vcn
        self.file_ref = file_ref
        self.attr_id = attr_id


def parse_attribute_list(value: bytes, where: dict) -> list[ListEntry]:
    """All entries; a bad length ends nothing silently: it is a FormatError."""
    out = []
    pos = 0
    n = len(value)
    while pos + 26 <= n:
        e = ATTRIBUTE_LIST_ENTRY.parse(value, pos)   # 26 bytes are there
        if e.length < 26 or e.length & 7 or pos + e.length > n:
            if e.type == 0 and e.length == 0:
                break  # zero padding at the end
            raise FormatError(f"attribute list entry at {pos} has bad length {e.length}",
                              **where)
        name = ""
        if e.name_length:
            a = pos + e.name_offset
            if e.name_offset < 26 or e.name_offset + 2 * e.name_length > e.length:
                raise FormatError(f"attribute list entry at {pos}: name outside entry",
                                  **where)
            name = value[a:a + 2 * e.name_length].decode("utf-16-le", "surrogatepass")
        out.append(ListEntry(e.type, name, e.lowest_vcn, e.file_ref, e.attr_id))
        pos += e.length
    return out


class VolumeInformation(Value):
    """$VOLUME_INFORMATION: NTFS version and volume flags."""

    __slots__ = _fields = ("major", "minor", "flags")

    def __init__(self, major: int, minor: int, flags: int):
        self.major = major
        self.minor = minor
        self.flags = flags


def parse_volume_information(value: bytes, where: dict) -> VolumeInformation:
    if len(value) < 12:
        raise FormatError("$VOLUME_INFORMATION too short", **where)
    v = VOLUME_INFORMATION.parse(value)
    return VolumeInformation(v.major, v.minor, v.flags)


def parse_object_id(value: bytes) -> uuid.UUID | None:
    return uuid.UUID(bytes_le=bytes(value[:16])) if len(value) >= 16 else None
