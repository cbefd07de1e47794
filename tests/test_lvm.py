"""LVM2: physical volumes on a partition and on a whole disk, a volume group across both
disks, linear, striped, two-segment and raid1 logical volumes assembled byte for byte as
they were written at the extents the metadata gives (pvcreate/vgcreate/vgcfgrestore built
the metadata), and thin volumes named as not readable."""

import hashlib
import json
import os
import shutil

import pytest

from formats import lvm
from streams.errors import FormatError, UnsupportedError
from streams.stream import BytesStream, FileStream
from rpfs.source import open_source
from tests.helpers.posix_oracle import differences, kernel_mount, kernel_tree, node_tree
from tools.fixtures import linux


@pytest.fixture(scope="module")
def lvm_dir():
    try:
        return linux.image("lvm")
    except linux.Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture
def vm(lvm_dir, tmp_path):
    """A VM folder holding the two disks (hard links: nothing is copied)."""
    d = tmp_path / "vm"
    d.mkdir()
    for name in ("lvm-a.raw", "lvm-b.raw"):
        os.link(lvm_dir / name, d / name)
    return d


def _sha(read, size):
    h = hashlib.sha256()
    for off in range(0, size, 1 << 20):
        h.update(read(off, min(1 << 20, size - off)))
    return h.hexdigest()


@pytest.mark.parametrize("lv", ["root", "data", "spanned", "mirrored"])
def test_logical_volume_bytes_are_what_was_written(vm, lvm_dir, lv):
    tree = open_source(vm)
    stream = tree.recovery_point.volume_streams[f"lvm-guestvg-{lv}"]
    image = lvm_dir / "images" / f"{lv}.img"
    assert stream.size == image.stat().st_size
    want = _sha(FileStream(image).read, stream.size)
    assert _sha(stream.read, stream.size) == want
    # reads across stripe and segment boundaries, at odd offsets
    img = FileStream(image)
    for off in (0, 65536 - 3, 2 * (4 << 20) - 5, stream.size - 7):
        assert stream.read(off, 11) == img.read(off, 11)


def test_striped_layout_matches_the_pieces_written(vm, lvm_dir):
    layout = json.loads((lvm_dir / "layout.json").read_text())["data"]
    stream = open_source(vm).recovery_point.volume_streams["lvm-guestvg-data"]
    pos = 0
    for disk, off, n in layout["pieces"][:8]:
        with open(lvm_dir / disk, "rb") as f:
            f.seek(off)
            assert stream.read(pos, 512) == f.read(512)
        pos += n


def test_files_on_a_striped_volume_as_the_kernel_reads_them(vm, lvm_dir):
    tree = open_source(vm)
    root = tree.resolve("/volumes/lvm-guestvg-data")
    info = root.info()
    assert info["filesystem"] == "ext4" and info["label"] == "lvdata"
    assert info["lvm"]["segments"][0]["type"] == "striped"
    with kernel_mount(lvm_dir / "images" / "data.img") as mnt:
        kernel = kernel_tree(mnt)
    assert differences(kernel, node_tree(root)) == []


def test_thin_volumes_say_they_cannot_be_read(vm):
    tree = open_source(vm)
    names = {n.name for n in tree.resolve("/volumes").iterdir()}
    assert {"lvm-guestvg-root", "lvm-guestvg-data", "lvm-guestvg-spanned",
            "lvm-guestvg-mirrored", "lvm-guestvg-pool", "lvm-guestvg-thin"} <= names
    assert not any("rimage" in n or "tmeta" in n for n in names)      # hidden legs
    assert "lvm-guestvg-snap" in names and "lvm-guestvg-snapshot0" not in names
    for lv, what in (("thin", "a thin volume"), ("pool", "a thin pool"),
                     ("snap", r"a snapshot \(of root\)")):
        with pytest.raises(UnsupportedError, match=f"{what} cannot be read here"):
            tree.resolve(f"/volumes/lvm-guestvg-{lv}").iterdir()


def test_disk_info_names_the_physical_volume(vm):
    tree = open_source(vm)
    parts = tree.resolve("/disks/lvm-a.raw").info()["partitions"]
    assert parts[0]["lvm"]["vg"] == "guestvg" and "root" in parts[0]["lvm"]["lvs"]


def test_a_missing_disk_leaves_the_volumes_it_does_not_hold(vm):
    os.unlink(vm / "lvm-b.raw")
    tree = open_source(vm)
    vols = tree.recovery_point.volume_streams
    assert vols["lvm-guestvg-root"].size == 5 * (4 << 20)       # all on lvm-a
    assert isinstance(vols["lvm-guestvg-data"], FormatError)
    assert "is missing" in str(vols["lvm-guestvg-data"])


def test_metadata_text_parser():
    text = ('vg { id = "x" seqno = 3 extent_size = 8192 # a comment\n'
            'status = ["READ", "WRITE"] physical_volumes { pv0 { id = "a-b" pe_start = 2048 '
            'pe_count = 10 } } name = "q\\"uote" }\ncontents = "Text Format Volume Group"\n')
    parsed = lvm.parse_text(text)
    assert parsed["vg"]["seqno"] == 3 and parsed["vg"]["status"] == ["READ", "WRITE"]
    assert parsed["vg"]["physical_volumes"]["pv0"]["pe_count"] == 10
    assert parsed["vg"]["name"] == 'q"uote'
    for bad in ("vg {", "vg { a = [1, 2 }", "= 3", "a = }", "{" * 200):
        with pytest.raises(FormatError):
            lvm.parse_text(bad)


def test_damaged_label_or_metadata(lvm_dir, tmp_path):
    data = bytearray((lvm_dir / "lvm-b.raw").read_bytes()[:2 << 20])
    assert lvm.probe(BytesStream(bytes(data)))
    bad = bytearray(data)
    bad[512 + 40] ^= 0xFF                                    # PV header, under the label crc
    with pytest.raises(FormatError, match="label checksum"):
        lvm.read_pv("b", BytesStream(bytes(bad)))
    pv = lvm.read_pv("b", BytesStream(bytes(data)))
    start, _ = pv.metadata_areas[0]
    import struct
    text_at = struct.unpack_from("<Q", data, start + 40)[0]  # the newest text (raw_locn 0)
    bad = bytearray(data)
    bad[start + text_at + 10] ^= 0xFF
    out = lvm.assemble({"b": BytesStream(bytes(bad))})
    assert all(isinstance(v, FormatError) for v in out.values()) and out
