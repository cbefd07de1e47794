"""[MS-VHDX] on-disk structures, declared once for the reader, the log replay and the writer.

Offsets and sizes here are the spec's; anything read from a file is checked by the code
that uses it (these declarations only say where the bytes are).
"""

from __future__ import annotations

import uuid

from streams import crc32c as _crc32c
from streams.layout import Layout

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


FileIdentifier = Layout("FileIdentifier", "<8s512s", "signature creator")

Header = Layout(
    "Header", "<4sIQ16s16s16sHHIQ",
    "signature checksum sequence_number file_write_guid data_write_guid log_guid log_version "
    "version log_length log_offset",
    guids=("file_write_guid", "data_write_guid", "log_guid"))

RegionTableHeader = Layout("RegionTableHeader", "<4sII4x", "signature checksum entry_count")

RegionTableEntry = Layout("RegionTableEntry", "<16sQII", "guid file_offset length required",
                          guids=("guid",))

MetadataTableHeader = Layout("MetadataTableHeader", "<8s2xH20x", "signature entry_count")

# flags: bit 0 IsUser, bit 1 IsVirtualDisk, bit 2 IsRequired
MetadataTableEntry = Layout("MetadataTableEntry", "<16sIII4x", "item_id offset length flags",
                            guids=("item_id",))
META_IS_USER = 1
META_IS_VIRTUAL_DISK = 2
META_IS_REQUIRED = 4

# flags: bit 0 LeaveBlockAllocated, bit 1 HasParent
FileParameters = Layout("FileParameters", "<II", "block_size flags")
FP_LEAVE_BLOCK_ALLOCATED = 1
FP_HAS_PARENT = 2

ParentLocatorHeader = Layout("ParentLocatorHeader", "<16s2xH", "locator_type key_value_count",
                             guids=("locator_type",))

ParentLocatorEntry = Layout("ParentLocatorEntry", "<IIHH",
                            "key_offset value_offset key_length value_length")

LogEntryHeader = Layout(
    "LogEntryHeader", "<4sIIIQI4x16sQQ",
    "signature checksum entry_length tail sequence_number descriptor_count log_guid "
    "flushed_file_offset last_file_offset",
    guids=("log_guid",))
LOG_ENTRY_HEADER_SIZE = 64
LOG_DESCRIPTOR_SIZE = 32

# Data and zero descriptors share a layout: the second and third fields differ in meaning.
LogDescriptor = Layout(
    "LogDescriptor", "<4s4s8sQQ",
    "signature trailing_bytes leading_bytes file_offset sequence_number")   # zero descriptor:
#   trailing_bytes reserved, leading_bytes ZeroLength (u64)

LogDataSector = Layout("LogDataSector", "<4sI4084sI",
                       "signature sequence_high data sequence_low")


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
