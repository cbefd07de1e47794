"""The public formats API end to end: detection, every fixture disk in every container,
partitions as the factory laid them out, open_path, write_image dispatch."""

from __future__ import annotations

import random

import pytest

import formats
from formats import detect_format, open_image, open_path, read_partitions, write_image
from formats.disk import Disk, ParentRef, RawDisk
from streams.errors import UsageError
from streams.stream import ZERO, BytesStream, FileStream, is_zero
from tests.helpers.vhd_images import run


def test_public_names():
    for name in ("open_image", "open_path", "resolve_chains", "read_partitions", "write_image",
                 "Disk", "ParentRef"):
        assert hasattr(formats, name), name
    assert formats.Disk is Disk and formats.ParentRef is ParentRef


def test_detection(imgs, tmp_path):
    assert detect_format(FileStream(imgs / "gpt.raw")) == "raw"
    assert detect_format(FileStream(imgs / "gpt.qd.vhd")) == "vhd"
    assert detect_format(FileStream(imgs / "gpt.qf.vhd")) == "vhd"
    assert detect_format(BytesStream(b"")) == "raw"
    run("qemu-img", "convert", "-f", "raw", "-O", "vhdx", imgs / "gpt.raw", tmp_path / "g.vhdx")
    assert detect_format(FileStream(tmp_path / "g.vhdx")) == "vhdx"
    disk = open_image(FileStream(tmp_path / "g.vhdx"))
    assert disk.format == "vhdx"
    raw = read_partitions(open_image(FileStream(imgs / "gpt.raw")))
    ours = read_partitions(disk)
    assert [(p.number, p.offset, p.size, p.type_id) for p in ours.partitions] == \
        [(p.number, p.offset, p.size, p.type_id) for p in raw.partitions]


def test_open_path_single_raw_and_folder(imgs):
    (name, disk), = open_path(imgs / "bare.raw").items()
    assert name == "bare" and disk.format == "raw" and disk.size == 16 << 20
    everything = open_path(imgs)
    assert {"gpt", "mbr", "random", "bare"} <= set(everything)


def test_write_image_rejects_unknown_format(tmp_path):
    with pytest.raises(UsageError):
        write_image(BytesStream(bytes(512)), tmp_path / "x", "qcow2")


# -- the shared fixture set -------------------------------------------------------------------

@pytest.fixture(scope="module")
def fx(small_fixtures):
    return small_fixtures


def _same(disk, raw, seed):
    step = 16 << 20
    for at in range(0, raw.size, step):
        want = raw.read(at, step)
        assert disk.read(at, len(want)) == want, f"{disk.name} differs at {at:#x}"
    rnd = random.Random(seed)
    for _ in range(200):
        at = rnd.randrange(0, raw.size)
        n = rnd.choice([1, 512, 4095, 65536, 1 << 20])
        want = raw.read(at, n)
        assert disk.read(at, len(want)) == want


def test_every_fixture_image_reads_like_its_raw(fx):
    checked = 0
    for name, d in sorted(fx.disks.items()):
        raw = FileStream(d.raw)
        for kind, path in sorted(d.images.items()):
            disk = open_image(FileStream(path))
            assert disk.format == kind.split("-")[0]
            assert disk.size >= raw.size and is_zero(disk.read(raw.size, disk.size - raw.size))
            _same(disk, raw, hash(kind) & 0xFFFF)
            for e in disk.extents():
                if e.kind == ZERO:
                    assert is_zero(raw.read(e.offset, min(e.length, 4 << 20)))
            checked += 1
    assert checked >= 5


def test_fixture_partitions_as_laid_out(fx):
    for name, d in sorted(fx.disks.items()):
        disk = RawDisk(FileStream(d.raw), logical_sector_size=d.logical_sector_size)
        table = read_partitions(disk)
        assert table.scheme == d.scheme, name
        want = sorted((p["number"], p["offset"], p["size"]) for p in d.partitions
                      if p["type"] != "extended")
        got = sorted((p.number, p.offset, p.size) for p in table.partitions)
        assert got == want, name
        for kind, path in d.images.items():
            inner = read_partitions(open_image(FileStream(path)))
            assert sorted((p.number, p.offset, p.size) for p in inner.partitions) == want
        if d.scheme in ("gpt", "mbr"):
            ss = d.logical_sector_size
            out = run("mmls", "-b", str(ss), d.raw)
            for p in table.partitions:
                assert f"{p.offset // ss:010d}   {(p.offset + p.size) // ss - 1:010d}" in out


def test_fixture_vhds_equal_libvhdi_view(fx, tmp_path):
    import shutil
    if not shutil.which("vhdimount"):
        pytest.skip("vhdimount not installed")
    from tests.helpers.vhd_images import vhdimount
    for name in ("system", "data"):
        for kind in ("vhd-dynamic", "vhd-fixed"):
            path = fx.disks[name].images.get(kind)
            if path is None:
                continue
            disk = open_image(FileStream(path))
            with vhdimount(path, tmp_path / f"{name}-{kind}") as target:
                theirs = FileStream(target)
                assert theirs.size == disk.size
                _same(disk, theirs, 3)
                theirs.close()


@pytest.mark.parametrize("fmt", ["vhd", "raw"])
def test_fixture_disk_exports(fx, tmp_path, fmt):
    d = fx.disks["system"]
    src = open_image(FileStream(d.images.get("vhdx-dynamic-32M", d.raw)))
    out = tmp_path / f"system.{fmt}"
    write_image(src, out, fmt)
    qfmt = {"vhd": "vpc", "raw": "raw"}[fmt]
    run("qemu-img", "compare", "-q", "-f", "raw", "-F", qfmt, d.raw, out)
    if fmt == "vhd":
        assert "Dynamic" in run("vhdiinfo", out)
    back = read_partitions(open_image(FileStream(out)))
    assert [(p.number, p.offset, p.size) for p in back.partitions] == \
        sorted((p["number"], p["offset"], p["size"]) for p in d.partitions)
