"""Hostile VHDX input: truncation at every structure boundary, bit flips (raw, and with the
checksums recomputed so the semantic checks are reached), BAT entries pointing anywhere,
huge sizes, crafted logs. Every outcome is a clean read or a FormatError naming the source,
structure and offset: never a hang, a huge allocation or a raw IndexError/struct.error."""

from __future__ import annotations

import random
import uuid

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from formats.vhdx import VhdxDisk, write_vhdx
from formats.vhdx import structures as S
from formats.vhdx import log as log_module
from formats.vhdx.log import replay_log
from formats.vhdx.writer import BAT_OFFSET, LOG_LENGTH, LOG_OFFSET, METADATA_OFFSET
from streams.errors import ChainError, FormatError
from streams.stream import BytesStream, FileStream
from tests.helpers import vhdx_fixtures as F
from tests.helpers.streams import CountingStream, LineCounter

MiB = 1 << 20
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    rng = random.Random(11)
    data = bytearray(rng.randbytes(5 * MiB + 1024))
    data[MiB:3 * MiB] = bytes(2 * MiB)
    (d / "base.raw").write_bytes(data)
    write_vhdx(FileStream(d / "base.raw"), d / "base.vhdx", block_size=1 * MiB)
    parent = VhdxDisk(FileStream(d / "base.vhdx"))
    data[100 * 512:130 * 512] = rng.randbytes(30 * 512)
    data[4 * MiB:5 * MiB] = bytes(MiB)
    data[3 * MiB:3 * MiB + 4096] = rng.randbytes(4096)
    (d / "child.raw").write_bytes(data)
    write_vhdx(FileStream(d / "child.raw"), d / "child.avhdx", block_size=1 * MiB, parent=parent,
               parent_path=str(d / "base.vhdx"))
    write_vhdx(FileStream(d / "base.raw"), d / "logged.vhdx", block_size=1 * MiB)
    disk = VhdxDisk(FileStream(d / "logged.vhdx"))
    page = bytearray(disk.file.read(disk.bat_offset, 4096))
    page[0:16] = page[8:16] + page[0:8]
    F.write_pending_log(d / "logged.vhdx", [[("data", disk.bat_offset, bytes(page))],
                                            [("zero", disk.bat_offset + 4096, 4096)]], start=0)
    return {name: (d / f).read_bytes() for name, f in
            (("base", "base.vhdx"), ("child", "child.avhdx"), ("logged", "logged.vhdx"))}, parent


def exercise(data: bytes, parent=None) -> None:
    """Open, read everything and list extents; only FormatError may escape."""
    try:
        disk = VhdxDisk(BytesStream(data, "hostile.vhdx"))
        if disk.kind == "differencing" and parent is not None:
            try:
                disk.set_parent(parent)
            except ChainError:
                return
        step = 1 << 20
        for off in range(0, min(disk.size, 64 * MiB), step):
            disk.read(off, step)
        for _ in zip(range(10000), disk.extents()):
            pass
    except FormatError as e:
        assert e.source == "hostile.vhdx" and e.structure, e
        str(e)


def refresh_checksums(buf: bytearray) -> None:
    """Recompute header and region-table checksums so mutations reach the deeper checks."""
    for off, size in [(o, S.HEADER_SIZE) for o in S.HEADER_OFFSETS] + [(o, S.REGION_TABLE_SIZE) for o in S.REGION_TABLE_OFFSETS]:
        part = buf[off:off + size]
        if len(part) == size:
            buf[off + 4:off + 8] = S.checksum_with_field_zeroed(part).to_bytes(4, "little")


def test_originals_read_cleanly(images):
    imgs, parent = images
    for name, data in imgs.items():
        disk = VhdxDisk(BytesStream(data, name))
        if disk.kind == "differencing":
            disk.set_parent(parent)
        assert disk.read(0, disk.size)


BOUNDARIES = [0, 8, 520, 64 * 1024, 64 * 1024 + 2048, 68 * 1024, 128 * 1024, 132 * 1024, 192 * 1024,
              192 * 1024 + 100, 256 * 1024, 320 * 1024, MiB, MiB + 4096, 2 * MiB, 2 * MiB + 32,
              2 * MiB + 64 * 1024, 2 * MiB + 64 * 1024 + 8, 3 * MiB, 3 * MiB + 8, 4 * MiB - 1, 4 * MiB,
              4 * MiB + 512, 5 * MiB, 6 * MiB + 12345, 7 * MiB, 8 * MiB - 1]


@pytest.mark.parametrize("name", ["base", "child", "logged"])
def test_truncated_everywhere(images, name):
    imgs, parent = images
    data = imgs[name]
    for cut in BOUNDARIES + list(range(4 * MiB, len(data), 333333)):
        if cut < len(data):
            exercise(data[:cut], parent)


@pytest.mark.parametrize("name", ["base", "child", "logged"])
@SETTINGS
@given(flips=st.lists(st.tuples(st.sampled_from(["header", "region", "metadata", "bat", "log", "any"]),
                                st.integers(0, 1 << 20), st.integers(0, 7)), min_size=1, max_size=6),
       fix=st.booleans())
def test_bit_flips(images, name, flips, fix):
    imgs, parent = images
    buf = bytearray(imgs[name])
    spans = {"header": (64 * 1024, 4096 * 17), "region": (192 * 1024, 128 * 1024),
             "metadata": (METADATA_OFFSET, 64 * 1024 + 512), "bat": (BAT_OFFSET, 4096),
             "log": (LOG_OFFSET, 3 * 4096), "any": (0, len(buf))}
    for where, pos, bit in flips:
        start, size = spans[where]
        off = start + pos % size
        if off < len(buf):
            buf[off] ^= 1 << bit
    if fix:
        refresh_checksums(buf)
    exercise(bytes(buf), parent)


@SETTINGS
@given(index=st.integers(0, 6), entry=st.integers(0, (1 << 64) - 1))
def test_any_bat_entry(images, index, entry):
    imgs, parent = images
    for name in ("base", "child"):
        buf = bytearray(imgs[name])
        buf[BAT_OFFSET + 8 * index:BAT_OFFSET + 8 * index + 8] = entry.to_bytes(8, "little")
        exercise(bytes(buf), parent)


@pytest.mark.parametrize("state,offset_mb,match", [
    (6, 0, "header section"), (6, 1 << 40, "past end"), (6, 3, "overlaps VHDX metadata"),
    (6, 1, "overlaps VHDX metadata"), (4, 5, "state 4 \\(reserved\\)"), (7, 5, "not valid for a dynamic")])
def test_bad_bat_entries_are_named(images, state, offset_mb, match):
    imgs, _ = images
    buf = bytearray(imgs["base"])
    buf[BAT_OFFSET:BAT_OFFSET + 8] = (state | offset_mb << 20).to_bytes(8, "little")
    disk = VhdxDisk(BytesStream(bytes(buf), "bad.vhdx"))
    with pytest.raises(FormatError, match=match) as err:
        disk.read(0, 512)
    assert err.value.structure == "VHDX BAT entry" and err.value.offset == BAT_OFFSET


def _set_metadata_item(buf: bytearray, guid: uuid.UUID, value: bytes) -> None:
    for k in range(16):
        e = S.MetadataTableEntry.parse(buf[METADATA_OFFSET + 32 + 32 * k:])
        if e.item_id == guid:
            buf[METADATA_OFFSET + e.offset:METADATA_OFFSET + e.offset + len(value)] = value
            return
    raise AssertionError(guid)


@pytest.mark.parametrize("guid,value,match", [
    (S.VIRTUAL_DISK_SIZE_GUID, (1 << 63).to_bytes(8, "little"), "virtual disk size"),
    (S.VIRTUAL_DISK_SIZE_GUID, (64 << 40).to_bytes(8, "little"), "BAT region"),
    (S.VIRTUAL_DISK_SIZE_GUID, (5 * MiB + 3).to_bytes(8, "little"), "virtual disk size"),
    (S.FILE_PARAMETERS_GUID, (3 * MiB).to_bytes(4, "little"), "block size"),
    (S.FILE_PARAMETERS_GUID, (0).to_bytes(4, "little"), "block size"),
    (S.LOGICAL_SECTOR_SIZE_GUID, (1024).to_bytes(4, "little"), "logical sector size"),
    (S.FILE_PARAMETERS_GUID, (MiB).to_bytes(4, "little") + b"\x02", "parent locator"),
])
def test_bad_metadata_is_named(images, guid, value, match):
    imgs, _ = images
    buf = bytearray(imgs["base"])
    _set_metadata_item(buf, guid, value)
    with pytest.raises(FormatError, match=match):
        VhdxDisk(BytesStream(bytes(buf), "bad.vhdx"))


def test_one_damaged_header_or_region_table_is_survivable(images):
    imgs, _ = images
    good = imgs["base"]
    want = VhdxDisk(BytesStream(good)).read(0, 5 * MiB)
    for off in (S.HEADER_OFFSETS[1] + 40, S.HEADER_OFFSETS[0] + 40, S.REGION_TABLE_OFFSETS[0] + 20,
                S.REGION_TABLE_OFFSETS[1] + 20):
        buf = bytearray(good)
        buf[off] ^= 0xFF
        disk = VhdxDisk(BytesStream(bytes(buf)))
        assert disk.read(0, 5 * MiB) == want
    buf = bytearray(good)
    for off in S.HEADER_OFFSETS:
        buf[off + 40] ^= 0xFF
    with pytest.raises(FormatError, match="no valid header"):
        VhdxDisk(BytesStream(bytes(buf), "x"))
    buf = bytearray(good)
    for off in S.REGION_TABLE_OFFSETS:
        buf[off + 20] ^= 0xFF
    with pytest.raises(FormatError, match="no valid region table"):
        VhdxDisk(BytesStream(bytes(buf), "x"))


def test_header_with_higher_sequence_wins(images):
    imgs, _ = images
    buf = bytearray(imgs["base"])
    from formats.vhdx.writer import build_header
    other = uuid.uuid4()
    buf[S.HEADER_OFFSETS[0]:S.HEADER_OFFSETS[0] + 4096] = build_header(99, uuid.uuid4(), other)
    assert VhdxDisk(BytesStream(bytes(buf))).identity == other


def test_not_a_vhdx():
    for data in (b"", b"vhdxfile", bytes(2 * MiB), b"conectix" + bytes(2 * MiB)):
        with pytest.raises(FormatError):
            VhdxDisk(BytesStream(data, "x"))


@SETTINGS
@given(entries=st.lists(st.tuples(
    st.integers(1, 40),                                    # sequence number
    st.sampled_from([0, 4096, 8192, 65536, LOG_LENGTH - 4096, 12288]),   # tail
    st.integers(0, 255),                                   # slot (4 KiB units) in the ring
    st.lists(st.tuples(st.sampled_from(["data", "zero"]),
                       st.sampled_from([0, 4096, 2 * MiB, 3 * MiB, 1 << 49, (1 << 50) + 4096]),
                       st.sampled_from([4096, 8192, 1 << 40])), max_size=3),
    st.sampled_from([0, 4 * MiB, 1 << 45])), max_size=8))  # flushed / last file offset
def test_crafted_logs(entries):
    """Valid-checksum entries with arbitrary sequence numbers, tails, positions and targets."""
    g = uuid.uuid4()
    ring = bytearray(LOG_LENGTH)
    for seq, tail, slot, ops, fo in entries:
        ops = [(k, off, bytes([seq]) * 4096 if k == "data" else n) for k, off, n in ops]
        blob = F._log_entry(seq, tail, g, ops, min(fo, 4 * MiB), fo)
        pos = slot * 4096
        blob = blob[:LOG_LENGTH - pos]
        ring[pos:pos + len(blob)] = blob
    stream = BytesStream(bytes(MiB) + bytes(ring) + bytes(2 * MiB), "log.vhdx")
    try:
        ov = replay_log(stream, LOG_OFFSET, LOG_LENGTH, g)
        ov.read(0, 4096)
        ov.read(2 * MiB, 8192)
        list(ov.extents())[:100]
    except FormatError as e:
        assert e.source == "log.vhdx"


def test_log_of_giant_entries_is_rejected_quickly():
    """Every sector claims to start a long entry (as long as the log, or the longest a
    one-sector descriptor table allows): the search stays cheap."""
    from formats.vhdx.log import MAX_LOG_LENGTH
    g = uuid.uuid4()
    length = MAX_LOG_LENGTH
    for claimed in (length, 127 * 4096):
        _giant(g, length, claimed)
    with pytest.raises(FormatError, match="larger than supported"):
        replay_log(BytesStream(bytes(MiB + 2 * length), "log.vhdx"), MiB, 2 * length, g)


def _giant(g, length, claimed):
    one = bytearray(S.LogEntryHeader.build(dict(signature=S.LOG_ENTRY_SIGNATURE, checksum=0, entry_length=claimed,
                                                tail=0, sequence_number=5, descriptor_count=126, log_guid=g,
                                                flushed_file_offset=0, last_file_offset=0)).ljust(4096, b"\0"))
    for i in range(126):
        one[64 + 32 * i:68 + 32 * i] = S.LOG_DATA_DESC_SIGNATURE
    stream = CountingStream(BytesStream(bytes(MiB) + bytes(one) * (length // 4096), "log.vhdx"))
    with LineCounter(log_module) as work, pytest.raises(FormatError, match="no valid sequence"):
        replay_log(stream, MiB, length, g)
    # work linear in the log (a sector's 126 descriptors looked at a bounded number of
    # times), not quadratic (every start re-scanning what follows it: sectors**2 lines)
    sectors = length // 4096
    assert stream.bytes_read <= 4 * length, (stream.bytes_read, length)
    assert work.lines <= 1000 * sectors, (work.lines, sectors)


@pytest.mark.parametrize("required", [0, 1])
def test_unknown_region(images, required):
    """Unknown regions are kept out of the way; unknown required ones refuse to open."""
    imgs, _ = images
    buf = bytearray(imgs["base"])
    for off in S.REGION_TABLE_OFFSETS:
        buf[off + 8:off + 12] = (3).to_bytes(4, "little")
        buf[off + 16 + 64:off + 16 + 96] = S.RegionTableEntry.build(
            dict(guid=uuid.uuid4(), file_offset=64 * MiB, length=MiB, required=required))
    refresh_checksums(buf)
    if required:
        from streams.errors import UnsupportedError
        with pytest.raises(UnsupportedError, match="not understood"):
            VhdxDisk(BytesStream(bytes(buf), "x"))
    else:
        disk = VhdxDisk(BytesStream(bytes(buf), "x"))
        assert disk.read(0, disk.size) == VhdxDisk(BytesStream(imgs["base"])).read(0, disk.size)


def _locator_image(images, entries: dict[str, str]) -> bytes:
    from formats.vhdx.writer import build_parent_locator
    imgs, _ = images
    buf = bytearray(imgs["child"])
    loc = build_parent_locator(entries)
    for k in range(16):
        e = S.MetadataTableEntry.parse(buf[METADATA_OFFSET + 32 + 32 * k:])
        if e.item_id == S.PARENT_LOCATOR_GUID:
            at = METADATA_OFFSET + 32 + 32 * k
            buf[at:at + 32] = S.MetadataTableEntry.build(dict(item_id=e.item_id, offset=e.offset, length=len(loc),
                                                              flags=e.flags))
            buf[METADATA_OFFSET + e.offset:METADATA_OFFSET + e.offset + len(loc)] = loc
            return bytes(buf)
    raise AssertionError("no locator")


def test_parent_locator_variants(images):
    g = uuid.uuid4()
    disk = VhdxDisk(BytesStream(_locator_image(images, {
        "absolute_win32_path": "\\\\?\\D:\\vms\\p.vhdx", "volume_path": "\\\\?\\Volume{x}\\vms\\p.vhdx",
        "relative_path": "..\\p.vhdx", "parent_linkage": str(g).upper(), "parent_linkage2": "{%s}" % g,
        "vendor_key": "kept"}), "c"))
    ref = disk.parent_ref
    assert ref.paths == ("..\\p.vhdx", "\\\\?\\Volume{x}\\vms\\p.vhdx", "\\\\?\\D:\\vms\\p.vhdx")
    assert ref.identity == g and ref.extra["identity2"] == g
    assert ref.extra["locator"]["vendor_key"] == "kept"
    for bad, match in (({"relative_path": "p.vhdx"}, "no parent_linkage"),
                       ({"parent_linkage": "not-a-guid"}, "not a GUID")):
        with pytest.raises(FormatError, match=match):
            VhdxDisk(BytesStream(_locator_image(images, bad), "c"))
