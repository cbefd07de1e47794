"""MBR/EBR/GPT against sgdisk, sfdisk and sleuthkit's mmls; damaged and hostile tables."""

from __future__ import annotations

import json
import re
import shutil
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from formats import open_image, read_partitions
from formats.disk import RawDisk
from streams.errors import FormatError
from streams.stream import BytesStream, FileStream
from tests.helpers.vhd_images import images, run

LDM_DATA = "af9b60a0-1431-4f62-bc68-3311714a69ad"


def _sfdisk(path):
    return json.loads(run("sfdisk", "-J", path))["partitiontable"]


def _mmls(path, sector=None):
    """(slot description, start, length) for every partition row mmls prints."""
    args = ["mmls"] + (["-b", str(sector)] if sector else []) + [str(path)]
    out = run(*args)
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*\d+:\s+(\d+:\d+|\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(.*)$", line)
        if m:
            rows.append((int(m.group(2)), int(m.group(4))))
    return rows


def test_gpt_matches_sfdisk_sgdisk_mmls(imgs):
    path = imgs / "gpt.raw"
    table = read_partitions(open_image(FileStream(path)))
    assert table.scheme == "gpt" and not table.warnings
    ref = _sfdisk(path)
    assert table.disk_guid == ref["id"].lower()
    ours = {p.number: p for p in table.partitions}
    assert len(ours) == len(ref["partitions"])
    for r in ref["partitions"]:
        p = ours[int(r["node"].rsplit("raw", 1)[1])]
        assert (p.offset, p.size) == (r["start"] * 512, r["size"] * 512)
        assert p.type_id == r["type"].lower() and p.guid == r["uuid"].lower()
        assert p.name == r.get("name", "")
        assert p.stream.size == p.size and p.stream.read(0, 16) == \
            FileStream(path).read(p.offset, 16)
    # sgdisk -p: number, first and last (inclusive) sector
    for line in run("sgdisk", "-p", path).splitlines():
        m = re.match(r"\s+(\d+)\s+(\d+)\s+(\d+)\s", line)
        if m:
            n, first, last = map(int, m.groups())
            assert ours[n].offset == first * 512 and ours[n].size == (last - first + 1) * 512
    assert sorted((p.offset // 512, p.size // 512) for p in table.partitions) == \
        sorted(_mmls(path))
    names = {p.number: (p.type_name, p.readable) for p in table.partitions}
    assert names == {1: ("EFI system", True), 2: ("Microsoft reserved", True),
                     3: ("Microsoft basic data", True), 4: ("Windows recovery", True),
                     5: ("LDM metadata", False), 6: ("LDM data", False),
                     7: ("Storage Spaces", False), 8: ("Linux filesystem", True)}
    assert ours[8].name == "linux ünïcode"
    assert all(p.reason for p in table.partitions if not p.readable)


def test_mbr_and_logicals_match_sfdisk_and_mmls(imgs):
    path = imgs / "mbr.raw"
    table = read_partitions(open_image(FileStream(path)))
    assert table.scheme == "mbr" and not table.warnings
    ours = {p.number: p for p in table.partitions}
    ref = [r for r in _sfdisk(path)["partitions"] if r["type"] not in ("5", "f", "85")]
    assert sorted(ours) == sorted(int(r["node"].rsplit("raw", 1)[1]) for r in ref) \
        == [1, 2, 4, 5, 6, 7]
    for r in ref:
        p = ours[int(r["node"].rsplit("raw", 1)[1])]
        assert (p.offset, p.size) == (r["start"] * 512, r["size"] * 512)
        assert int(p.type_id, 16) == int(r["type"], 16)
    assert ours[1].attributes == 0x80  # bootable
    assert sorted((p.offset // 512, p.size // 512) for p in table.partitions) == \
        sorted(_mmls(path))
    assert (ours[6].type_name, ours[6].readable) == ("Windows recovery (hidden NTFS)", True)
    assert ours[7].readable is False and "LDM" in ours[7].reason
    assert ours[5].stream.read(3, 8) == b"NTFS    "


@pytest.mark.parametrize("variant", ["qd", "qf", "qs"])
@pytest.mark.parametrize("stem", ["gpt", "mbr"])
def test_tables_inside_vhd_equal_raw(imgs, stem, variant):
    raw = read_partitions(open_image(FileStream(imgs / f"{stem}.raw")))
    vhd = read_partitions(open_image(FileStream(imgs / f"{stem}.{variant}.vhd")))
    key = [(p.number, p.offset, p.size, p.type_id, p.name) for p in raw.partitions]
    assert [(p.number, p.offset, p.size, p.type_id, p.name) for p in vhd.partitions] == key
    for a, b in zip(raw.partitions, vhd.partitions):
        assert a.stream.read(0, 65536) == b.stream.read(0, 65536)


def test_whole_disk_volume_has_no_table(imgs):
    table = read_partitions(open_image(FileStream(imgs / "bare.raw")))
    assert table.scheme == "none"
    (p,) = table.partitions
    assert (p.number, p.offset, p.size, p.readable) == (0, 0, 16 << 20, True)
    assert p.stream.read(3, 8) == b"NTFS    "
    assert read_partitions(BytesStream(bytes(1 << 20))).scheme == "none"


def test_4k_sector_gpt(imgs):
    path = imgs / "gpt4k.raw"
    if not path.exists():
        pytest.skip("no loop device to build a 4Kn disk")
    want = [(1, 256 * 4096, 8 << 20, "four k"), (2, (256 + 2048) * 4096, 4 << 20, "")]
    table = read_partitions(RawDisk(FileStream(path), logical_sector_size=4096))
    assert table.scheme == "gpt" and not table.warnings
    assert [(p.number, p.offset, p.size, p.name) for p in table.partitions] == want
    assert sorted((p.offset // 4096, p.size // 4096) for p in table.partitions) == \
        sorted(_mmls(path, 4096))
    # opened as a plain raw file (512-byte sectors), the 4K GPT is still found, with a warning
    table = read_partitions(open_image(FileStream(path)))
    assert [(p.number, p.offset, p.size, p.name) for p in table.partitions] == want
    assert any("4096" in w for w in table.warnings)


def _corrupt(src, dst, at, data=b"\xff\xff\xff\xff"):
    shutil.copyfile(src, dst)
    with open(dst, "r+b") as f:
        f.seek(at)
        f.write(data)


def test_damaged_primary_gpt_uses_backup(imgs, tmp_path):
    good = read_partitions(open_image(FileStream(imgs / "gpt.raw")))
    for at, what in ((512 + 40, "header"), (1024 + 128 * 2 + 40, "entry array")):
        bad = tmp_path / "bad.raw"
        _corrupt(imgs / "gpt.raw", bad, at)
        table = read_partitions(open_image(FileStream(bad)))
        assert [(p.number, p.offset, p.size, p.guid) for p in table.partitions] == \
            [(p.number, p.offset, p.size, p.guid) for p in good.partitions]
        assert any("backup" in w for w in table.warnings), what
    size = (imgs / "gpt.raw").stat().st_size
    both = tmp_path / "both.raw"
    _corrupt(imgs / "gpt.raw", both, 512 + 40)
    with open(both, "r+b") as f:
        f.seek(size - 512 + 40)
        f.write(b"\xff\xff\xff\xff")
    with pytest.raises(FormatError) as e:
        read_partitions(open_image(FileStream(both)))
    assert "GPT header" in str(e.value) and "CRC" in str(e.value)


def test_partition_past_end_is_flagged(imgs, tmp_path):
    cut = tmp_path / "cut.raw"
    with open(imgs / "mbr.raw", "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(30 << 20))  # cuts logical 6, loses the EBR of 7, drops 4
    table = read_partitions(open_image(FileStream(cut)))
    assert [p.number for p in table.partitions] == [1, 2, 4, 5, 6]
    flagged = {p.number: p for p in table.partitions if p.truncated}
    assert set(flagged) == {4, 6}
    assert flagged[6].stream.size == (30 << 20) - flagged[6].offset and flagged[6].readable
    assert not flagged[4].readable and "past the end" in flagged[4].reason
    assert any("EBR" in w for w in table.warnings)


def _gpt_fix_crcs(data: bytearray, header_at: int) -> None:
    n, es = struct.unpack_from("<II", data, header_at + 80)
    array_at = struct.unpack_from("<Q", data, header_at + 72)[0] * 512
    if n * es <= 1 << 20 and array_at + n * es <= len(data):
        struct.pack_into("<I", data, header_at + 88, zlib.crc32(data[array_at:array_at + n * es]))
    hs = struct.unpack_from("<I", data, header_at + 12)[0]
    if 92 <= hs <= 512:
        struct.pack_into("<I", data, header_at + 16, 0)
        struct.pack_into("<I", data, header_at + 16, zlib.crc32(data[header_at:header_at + hs]))


def _check_hostile(data: bytes):
    disk = RawDisk(BytesStream(data, name="hostile.raw"))
    try:
        table = read_partitions(disk)
    except FormatError as e:
        assert "hostile.raw" in str(e)
        return
    for p in table.partitions:
        assert 0 <= p.stream.size <= disk.size
        p.stream.read(0, 512)


def _tiny(name):
    return (images() / name).read_bytes()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 512 * 40 - 1), st.integers(0, 255)), min_size=1,
                max_size=8), st.booleans(), st.booleans())
def test_gpt_mutations_give_typed_errors(flips, fix_crcs, in_backup):
    data = bytearray(_tiny("tiny_gpt.raw"))
    base = len(data) - 33 * 512 if in_backup else 0
    for at, value in flips:
        at = min(base + at, len(data) - 1)
        data[at] = value
    if fix_crcs:
        _gpt_fix_crcs(data, 512)
        _gpt_fix_crcs(data, len(data) - 512)
    _check_hostile(bytes(data))


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([(80, "<I", 0xFFFFFFFF), (84, "<I", 0), (84, "<I", 0xFFFFFFFF),
                        (84, "<I", 129), (12, "<I", 0xFFFF), (12, "<I", 10),
                        (72, "<Q", 1 << 60), (72, "<Q", 511), (24, "<Q", 7)]),
       st.booleans())
def test_gpt_hostile_fields(field, fix_crcs):
    at, fmt, value = field
    data = bytearray(_tiny("tiny_gpt.raw"))
    for header_at in (512, len(data) - 512):  # both copies: nothing to fall back on
        struct.pack_into(fmt, data, header_at + at, value)
        if fix_crcs:
            _gpt_fix_crcs(data, header_at)
    with pytest.raises(FormatError):
        read_partitions(RawDisk(BytesStream(bytes(data), name="hostile.raw")))


def test_huge_entry_count_in_primary_falls_back(imgs):
    data = bytearray(_tiny("tiny_gpt.raw"))
    struct.pack_into("<I", data, 512 + 80, 0xFFFFFFFF)
    _gpt_fix_crcs(data, 512)
    table = read_partitions(RawDisk(BytesStream(bytes(data))))
    assert [p.name for p in table.partitions][:1] == ["alpha"] and table.warnings
    assert table.partitions[2].type_id == LDM_DATA and not table.partitions[2].readable


def _tiny_mbr_ebrs(data):
    """Sector numbers of the EBRs in tiny_mbr.raw (extended at 48; logicals 56, 104, 152)."""
    ebrs = [48]
    while True:
        at = ebrs[-1] * 512
        link = struct.unpack_from("<I", data, at + 462 + 8)[0]
        if not link:
            return ebrs
        ebrs.append(48 + link)


def test_ebr_loop_is_cut(imgs):
    data = bytearray(_tiny("tiny_mbr.raw"))
    ebrs = _tiny_mbr_ebrs(data)
    assert len(ebrs) == 3
    good = read_partitions(RawDisk(BytesStream(bytes(data))))
    assert [p.number for p in good.partitions] == [1, 5, 6, 7]
    assert [p.offset // 512 for p in good.partitions] == [8, 56, 104, 152]
    # last EBR links back to the first: a loop
    struct.pack_into("<B", data, ebrs[2] * 512 + 462 + 4, 0x05)
    struct.pack_into("<I", data, ebrs[2] * 512 + 462 + 8, 0)
    struct.pack_into("<I", data, ebrs[2] * 512 + 462 + 8, ebrs[1] - 48)
    looped = read_partitions(RawDisk(BytesStream(bytes(data))))
    assert [p.number for p in looped.partitions] == [1, 5, 6, 7]
    assert any("loop" in w for w in looped.warnings)
    # a link outside the extended partition ends the chain, said in a warning
    struct.pack_into("<I", data, ebrs[2] * 512 + 462 + 8, 100000)
    outside = read_partitions(RawDisk(BytesStream(bytes(data), name="tiny")))
    assert [p.number for p in outside.partitions] == [1, 5, 6, 7]
    assert any("outside the extended" in w for w in outside.warnings)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200 * 512 - 1), st.integers(0, 255)), min_size=1,
                max_size=10))
def test_mbr_mutations_give_typed_errors(flips):
    data = bytearray(_tiny("tiny_mbr.raw"))
    for at, value in flips:
        data[at] = value
    _check_hostile(bytes(data))


def test_self_linking_ebr_chain_terminates():
    """Every EBR pointing at the next one, 10,000 deep: bounded, no hang."""
    data = bytearray(_tiny("tiny_mbr.raw"))
    data = data + bytes(20000 * 512)
    ext_start = 48
    struct.pack_into("<I", data, 446 + 16 + 12, len(data) // 512 - ext_start)  # grow container
    for i in range(10000):
        at = (ext_start + i) * 512
        data[at + 446 : at + 512] = bytes(64) + b"\x55\xaa"
        struct.pack_into("<B", data, at + 462 + 4, 0x05)
        struct.pack_into("<I", data, at + 462 + 8, i + 1)
        struct.pack_into("<B", data, at + 446 + 4, 0x07)
        struct.pack_into("<II", data, at + 446 + 8, 1, 1)
    table = read_partitions(RawDisk(BytesStream(bytes(data))))
    assert len(table.partitions) <= 1 + 256 and table.warnings


def test_backup_found_where_primary_says_when_disk_was_rounded_up(imgs, tmp_path):
    """qemu-img rounds a VHD up to its CHS size: the backup GPT is no longer at the last LBA."""
    bad = tmp_path / "bad.vhd"
    shutil.copyfile(imgs / "gpt.qf.vhd", bad)  # fixed: the raw bytes start at 0
    with open(bad, "r+b") as f:
        f.seek(512 + 60)  # inside the disk GUID: the header CRC breaks
        f.write(b"\x01")
    disk = open_image(FileStream(bad))
    assert disk.size > (imgs / "gpt.raw").stat().st_size
    table = read_partitions(disk)
    good = read_partitions(open_image(FileStream(imgs / "gpt.raw")))
    assert [(p.number, p.offset, p.size) for p in table.partitions] == \
        [(p.number, p.offset, p.size) for p in good.partitions]
    assert any("backup" in w for w in table.warnings)


def test_hybrid_mbr_uses_gpt(imgs, tmp_path):
    hybrid = tmp_path / "hybrid.raw"
    shutil.copyfile(imgs / "gpt.raw", hybrid)
    run("sgdisk", "-h", "3:EE", hybrid)
    dos = run("mmls", "-t", "dos", hybrid)  # really hybrid: EE plus partition 3 as 0x07
    assert "(0xee)" in dos and "0000026624   0000059391" in dos and "(0x07)" in dos
    table = read_partitions(open_image(FileStream(hybrid)))
    assert table.scheme == "gpt" and len(table.partitions) == 8



def test_images_build(imgs):
    for name in ("gpt.raw", "mbr.raw", "bare.raw", "random.raw", "gpt.qd.vhd", "mbr.qf.vhd"):
        assert (imgs / name).stat().st_size > 0
