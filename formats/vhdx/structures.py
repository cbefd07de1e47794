"""[MS-VHDX] on-disk structures, declared once for the reader, the log replay and the writer.

Offsets and sizes here are the spec's; anything read from a file is checked by the code
that uses it (these declarations only say where the bytes are).
"""

from __future__ import annotations

import uuid

import crc32c as _crc32c
from construct import (
    Adapter, Bytes, Int16ul, Int32ul, Int64ul, Padding, Struct,
)

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
TiB = 1024 * GiB

# Fixed layout of the header section (spec 2.2).
FILE_ID_OFFSET = 0
HEADER_OFFSETS = (64 * KiB, 128 * KiB)
REGION_TABLE_OFFSETS = (192 * KiB, 256 * KiB)
HEADER_SECTION_SIZE = 1 * MiB
HEADER_SIZE = 4 * KiB
REGION_TABLE_SIZE = 64 * KiB
METADATA_TABLE_SIZE = 64 * KiB
SECTOR_BITMAP_BLOCK_SIZE = 1 * MiB
LOG_SECTOR = 4 * KiB
MAX_VIRTUAL_SIZE = 64 * TiB
MAX_TABLE_ENTRIES = 2047

FILE_SIGNATURE = b"vhdxfile"
HEADER_SIGNATURE = b"head"
REGION_SIGNATURE = b"regi"
METADATA_SIGNATURE = b"metadata"
LOG_ENTRY_SIGNATURE = b"loge"
LOG_DATA_DESC_SIGNATURE = b"desc"
LOG_ZERO_DESC_SIGNATURE = b"zero"
LOG_DATA_SECTOR_SIGNATURE = b"data"

# Region and metadata item GUIDs (spec 2.2.3.2, 2.6.2).
BAT_GUID = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")
METADATA_GUID = uuid.UUID("8B7CA206-4790-4B9A-B8FE-575F050F886E")
FILE_PARAMETERS_GUID = uuid.UUID("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
VIRTUAL_DISK_SIZE_GUID = uuid.UUID("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
VIRTUAL_DISK_ID_GUID = uuid.UUID("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL_SECTOR_SIZE_GUID = uuid.UUID("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL_SECTOR_SIZE_GUID = uuid.UUID("CDA348C7-445D-4471-9CC9-E9885251C556")
PARENT_LOCATOR_GUID = uuid.UUID("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
VHDX_LOCATOR_TYPE_GUID = uuid.UUID("B04AEFB7-D19E-4A81-B789-25B8E9445913")

# BAT entry states (spec 2.5.1.1/2.5.1.2).
PAYLOAD_BLOCK_NOT_PRESENT = 0
PAYLOAD_BLOCK_UNDEFINED = 1
PAYLOAD_BLOCK_ZERO = 2
PAYLOAD_BLOCK_UNMAPPED = 3
PAYLOAD_BLOCK_FULLY_PRESENT = 6
PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7
SB_BLOCK_NOT_PRESENT = 0
SB_BLOCK_PRESENT = 6
PAYLOAD_STATES = {0: "NOT_PRESENT", 1: "UNDEFINED", 2: "ZERO", 3: "UNMAPPED",
                  6: "FULLY_PRESENT", 7: "PARTIALLY_PRESENT"}
BAT_STATE_MASK = 0x7
BAT_OFFSET_SHIFT = 20  # FileOffsetMB occupies bits 20..63


class GuidAdapter(Adapter):
    """16 bytes in the Microsoft mixed-endian GUID layout <-> uuid.UUID."""

    def _decode(self, obj, context, path):
        return uuid.UUID(bytes_le=bytes(obj))

    def _encode(self, obj, context, path):
        return obj.bytes_le


Guid = GuidAdapter(Bytes(16))

FileIdentifier = Struct(
    "signature" / Bytes(8),
    "creator" / Bytes(512),
)

Header = Struct(
    "signature" / Bytes(4),
    "checksum" / Int32ul,
    "sequence_number" / Int64ul,
    "file_write_guid" / Guid,
    "data_write_guid" / Guid,
    "log_guid" / Guid,
    "log_version" / Int16ul,
    "version" / Int16ul,
    "log_length" / Int32ul,
    "log_offset" / Int64ul,
)

RegionTableHeader = Struct(
    "signature" / Bytes(4),
    "checksum" / Int32ul,
    "entry_count" / Int32ul,
    Padding(4),
)

RegionTableEntry = Struct(
    "guid" / Guid,
    "file_offset" / Int64ul,
    "length" / Int32ul,
    "required" / Int32ul,
)

MetadataTableHeader = Struct(
    "signature" / Bytes(8),
    Padding(2),
    "entry_count" / Int16ul,
    Padding(20),
)

MetadataTableEntry = Struct(
    "item_id" / Guid,
    "offset" / Int32ul,
    "length" / Int32ul,
    "flags" / Int32ul,   # bit 0 IsUser, bit 1 IsVirtualDisk, bit 2 IsRequired
    Padding(4),
)
META_IS_USER = 1
META_IS_VIRTUAL_DISK = 2
META_IS_REQUIRED = 4

FileParameters = Struct(
    "block_size" / Int32ul,
    "flags" / Int32ul,   # bit 0 LeaveBlockAllocated, bit 1 HasParent
)
FP_LEAVE_BLOCK_ALLOCATED = 1
FP_HAS_PARENT = 2

ParentLocatorHeader = Struct(
    "locator_type" / Guid,
    Padding(2),
    "key_value_count" / Int16ul,
)

ParentLocatorEntry = Struct(
    "key_offset" / Int32ul,
    "value_offset" / Int32ul,
    "key_length" / Int16ul,
    "value_length" / Int16ul,
)

LogEntryHeader = Struct(
    "signature" / Bytes(4),
    "checksum" / Int32ul,
    "entry_length" / Int32ul,
    "tail" / Int32ul,
    "sequence_number" / Int64ul,
    "descriptor_count" / Int32ul,
    Padding(4),
    "log_guid" / Guid,
    "flushed_file_offset" / Int64ul,
    "last_file_offset" / Int64ul,
)
LOG_ENTRY_HEADER_SIZE = 64
LOG_DESCRIPTOR_SIZE = 32

# Data and zero descriptors share a layout: the second and third fields differ in meaning.
LogDescriptor = Struct(
    "signature" / Bytes(4),
    "trailing_bytes" / Bytes(4),   # zero descriptor: reserved
    "leading_bytes" / Bytes(8),    # zero descriptor: ZeroLength (u64)
    "file_offset" / Int64ul,
    "sequence_number" / Int64ul,
)

LogDataSector = Struct(
    "signature" / Bytes(4),
    "sequence_high" / Int32ul,
    "data" / Bytes(4084),
    "sequence_low" / Int32ul,
)


def crc32c(data) -> int:
    return _crc32c.crc32c(data)


def checksum_with_field_zeroed(data: bytes | bytearray | memoryview, field_offset: int = 4) -> int:
    """CRC-32C of ``data`` with the 4-byte checksum field at ``field_offset`` taken as zero."""
    crc = _crc32c.crc32c(data[:field_offset])
    crc = _crc32c.crc32c(b"\0\0\0\0", crc)
    return _crc32c.crc32c(data[field_offset + 4:], crc)


def bat_layout(virtual_size: int, block_size: int, logical_sector_size: int, differencing: bool):
    """(chunk_ratio, data_blocks, bitmap_blocks, total_bat_entries) per spec 2.5."""
    chunk_ratio = (1 << 23) * logical_sector_size // block_size
    data_blocks = -(-virtual_size // block_size)
    bitmap_blocks = -(-data_blocks // chunk_ratio)
    if differencing:
        total = bitmap_blocks * (chunk_ratio + 1)
    else:
        total = data_blocks + (data_blocks - 1) // chunk_ratio if data_blocks else 0
    return chunk_ratio, data_blocks, bitmap_blocks, total
