"""streams.layout.Layout: the struct-backed records that replaced construct on the VHDX,
partition and NTFS paths."""

from __future__ import annotations

import struct
import uuid

import pytest

from formats.partitions import GPT_ENTRY, GPT_HEADER, MBR_ENTRY
from formats.vhdx import structures as S
from ntfs_reader.attrs import ATTRIBUTE_LIST_ENTRY, VOLUME_INFORMATION
from ntfs_reader.boot import BOOT_SECTOR
from streams.layout import Layout


def test_parse_names_fields_skips_padding_and_reads_at_an_offset():
    rec = Layout("Rec", "<4sI4xH", "magic count flags")
    raw = b"junk" + b"abcd" + (7).to_bytes(4, "little") + b"\xff" * 4 + (3).to_bytes(2, "little")
    r = rec.parse(raw, 4)
    assert (r.magic, r.count, r.flags) == (b"abcd", 7, 3)
    assert rec.build(r._asdict()) == raw[4:].replace(b"\xff" * 4, bytes(4))


def test_guids_are_microsofts_mixed_endian_layout():
    g = uuid.UUID("2DC27766-F623-4200-9D64-115E9BFD4A08")   # the VHDX BAT region
    raw = S.RegionTableEntry.build(dict(guid=g, file_offset=1 << 20, length=1 << 16, required=1))
    assert raw[:16] == g.bytes_le
    e = S.RegionTableEntry.parse(raw)
    assert (e.guid, e.file_offset, e.length, e.required) == (g, 1 << 20, 1 << 16, 1)


def test_short_input_is_a_struct_error_and_a_bad_declaration_is_refused():
    with pytest.raises(struct.error):
        MBR_ENTRY.parse(bytes(15))
    with pytest.raises(ValueError):
        Layout("Bad", "<II", "one")


def test_records_have_their_specified_sizes():
    sizes = {MBR_ENTRY: 16, GPT_HEADER: 92, GPT_ENTRY: 128, BOOT_SECTOR: 512,
             ATTRIBUTE_LIST_ENTRY: 26, VOLUME_INFORMATION: 12, S.FileIdentifier: 520,
             S.Header: 80, S.RegionTableHeader: 16, S.RegionTableEntry: 32,
             S.MetadataTableHeader: 32, S.MetadataTableEntry: 32, S.FileParameters: 8,
             S.ParentLocatorHeader: 20, S.ParentLocatorEntry: 12, S.LogEntryHeader: 64,
             S.LogDescriptor: 32, S.LogDataSector: 4096}
    assert [r.size for r in sizes] == list(sizes.values())
