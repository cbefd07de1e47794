"""Exports (raw with holes, VHD fixed/dynamic/differencing, VHDX via write_image) checked
with qemu-img (info/compare/check), libvhdi (vhdiinfo) and our own readers."""

from __future__ import annotations

import json
import os
import random

import pytest

from formats import open_image, open_path, write_image
from formats.disk import RawDisk
from formats.vhd_writer import write_vhd
from streams.errors import FormatError, UsageError
from streams.stream import BytesStream, FileStream, Stream, ZeroStream
from tests.helpers.streams import CountingStream
from tests.helpers.vhd_images import run

QEMU_FMT = {"vhd": "vpc", "vhdx": "vhdx", "raw": "raw"}


def _qemu_size(path, fmt):
    return json.loads(run("qemu-img", "info", "-f", QEMU_FMT[fmt], "--output=json",
                          path))["virtual-size"]


def _compare(a, b, fmt):
    run("qemu-img", "compare", "-q", "-f", "raw", "-F", QEMU_FMT[fmt], a, b)  # exit 0 = same


@pytest.mark.parametrize("stem", ["gpt", "mbr", "random"])
@pytest.mark.parametrize("fmt,fixed", [("vhd", False), ("vhd", True), ("raw", False)])
def test_export_raw_source(imgs, tmp_path, stem, fmt, fixed):
    src = FileStream(imgs / f"{stem}.raw")
    out = tmp_path / f"out.{fmt}"
    write_image(RawDisk(src), out, fmt, fixed=fixed)
    assert _qemu_size(out, fmt) == src.size  # exact, without force_size
    _compare(imgs / f"{stem}.raw", out, fmt)
    back = open_image(FileStream(out))
    assert back.size == src.size and back.read(0, src.size) == src.read(0, src.size)
    if fmt == "vhd":
        info = run("vhdiinfo", out)
        assert f"({src.size} bytes)" in info and ("Fixed" if fixed else "Dynamic") in info
        assert str(back.identity) in info
    # holes stay holes: the output uses about as much disk as the source
    assert os.stat(out).st_blocks <= os.stat(imgs / f"{stem}.raw").st_blocks + 2 * 4096


@pytest.mark.parametrize("variant", ["qd", "qf"])
def test_export_vhd_source_to_raw_and_vhdx(imgs, tmp_path, variant):
    disk = open_image(FileStream(imgs / f"mbr.{variant}.vhd"))
    write_image(disk, tmp_path / "out.raw", "raw")
    run("qemu-img", "compare", "-q", "-f", "vpc", "-F", "raw", imgs / f"mbr.{variant}.vhd",
        tmp_path / "out.raw")
    assert os.path.getsize(tmp_path / "out.raw") == disk.size
    write_image(disk, tmp_path / "out.vhdx", "vhdx")
    run("qemu-img", "check", "-q", "-f", "vhdx", tmp_path / "out.vhdx")
    run("qemu-img", "compare", "-q", "-f", "vpc", "-F", "vhdx", imgs / f"mbr.{variant}.vhd",
        tmp_path / "out.vhdx")
    assert open_image(FileStream(tmp_path / "out.vhdx")).read(0, disk.size) == \
        disk.read(0, disk.size)


def test_differencing_leaf_exports_merged(imgs, tmp_path):
    base = tmp_path / "base.vhd"
    write_vhd(FileStream(imgs / "gpt.raw"), base)
    content = bytearray(FileStream(imgs / "gpt.raw").read(0, 48 << 20))
    content[20 << 20 : (20 << 20) + 10000] = random.Random(1).randbytes(10000)
    content[1 << 20 : 2 << 20] = bytes(1 << 20)
    write_vhd(BytesStream(bytes(content)), tmp_path / "snap.avhd", parent=base)
    (leaf,) = open_path(tmp_path / "snap.avhd").values()
    for fmt in ("raw", "vhd"):
        out = tmp_path / f"merged.{fmt}"
        write_image(leaf, out, fmt)
        back = open_image(FileStream(out))
        assert back.kind != "differencing" and back.read(0, back.size) == bytes(content)


def test_vhd_child_of_opened_parent_disk(imgs, tmp_path):
    base = tmp_path / "base.vhd"
    write_vhd(FileStream(imgs / "random.raw"), base)
    parent = open_image(FileStream(base))
    size = parent.size
    content = bytearray(parent.read(0, size))
    content[7:9] = b"hi"
    write_vhd(BytesStream(bytes(content)), tmp_path / "kid.avhd", parent=parent)
    (kid,) = open_path(tmp_path / "kid.avhd").values()
    assert kid.read(0, size) == bytes(content) and kid.parent_ref.identity == parent.identity
    with pytest.raises(UsageError):
        write_vhd(BytesStream(bytes(content[:-512])), tmp_path / "bad.avhd", parent=parent)
    with pytest.raises(UsageError):
        write_vhd(BytesStream(bytes(content)), tmp_path / "bad.avhd", parent=parent, fixed=True)


def _sparse_source(path, size, pieces):
    rnd = random.Random(7)
    with open(path, "wb") as f:
        f.truncate(size)
        for i in range(pieces):
            f.seek(i * (size // pieces) + rnd.randrange(0, 1 << 20) * 512)
            f.write(rnd.randbytes(rnd.randrange(1, 300000)))


@pytest.mark.parametrize("fmt,fixed", [("raw", False), ("vhd", False), ("vhd", True),
                                       ("vhdx", False)])
def test_tens_of_gib_mostly_empty_reads_only_the_data(tmp_path, fmt, fixed):
    """40 GiB with ~3 MiB of data: every writer follows extents, none reads or writes 40 GiB
    (the bytes read from the source are counted)."""
    src_path = tmp_path / "big.raw"
    _sparse_source(src_path, 40 << 30, 20)
    counted = CountingStream(FileStream(src_path))
    src = RawDisk(counted)
    data = sum(e.length for e in src.extents() if e.kind == "data")
    assert data < 32 << 20
    out = tmp_path / f"big.{fmt}{'f' if fixed else ''}"
    seen = []
    write_image(src, out, fmt, fixed=fixed, progress=lambda d, t: seen.append((d, t)))
    assert counted.bytes_read <= data + (64 << 20), (counted.bytes_read, data)
    assert os.stat(out).st_blocks * 512 < 1 << 30  # not 40 GiB on disk
    assert seen and seen[-1] == (src.size, src.size)
    assert all(a[0] <= b[0] for a, b in zip(seen, seen[1:]))
    assert _qemu_size(out, fmt) == src.size
    if fmt == "vhd":
        _compare(src_path, out, fmt)  # qemu follows the holes too: fast
    back = open_image(FileStream(out))
    for e in [e for e in src.extents() if e.kind == "data"][:40]:
        assert back.read(e.offset, e.length) == src.read(e.offset, e.length)


class _Failing(Stream):
    """A source whose bytes break half-way (a damaged chunk in the repository)."""

    def __init__(self, size):
        self.size, self.name = size, "failing"

    def _read(self, offset, length):
        if offset + length > self.size // 2:
            raise FormatError("damaged", source="failing", structure="chunk", offset=offset)
        return b"\1" * length


@pytest.mark.parametrize("fmt,fixed", [("raw", False), ("vhd", False), ("vhd", True)])
def test_failed_export_leaves_nothing(tmp_path, fmt, fixed):
    out = tmp_path / "out.img"
    with pytest.raises(FormatError):
        write_image(_Failing(8 << 20), out, fmt, fixed=fixed)
    assert os.listdir(tmp_path) == []


def test_odd_size_and_limits(tmp_path):
    write_image(BytesStream(b"x" * 1000), tmp_path / "odd.vhd", "vhd")
    d = open_image(FileStream(tmp_path / "odd.vhd"))
    assert d.size == 1024 and d.read(0, 1024) == b"x" * 1000 + bytes(24)
    assert _qemu_size(tmp_path / "odd.vhd", "vhd") == 1024
    with pytest.raises(UsageError, match="2040 GiB"):
        write_image(ZeroStream(3 << 40), tmp_path / "huge.vhd", "vhd")
    for bad in (3000, 512, 2048, 512 << 20):
        with pytest.raises(UsageError, match="block size"):
            write_image(ZeroStream(1 << 20), tmp_path / "x.vhd", "vhd", block_size=bad)
    with pytest.raises(UsageError, match="unknown image format"):
        write_image(ZeroStream(1 << 20), tmp_path / "x.qcow2", "qcow2")
    # an all-zero disk: nothing allocated, still a valid image of the right size
    write_image(ZeroStream(64 << 20), tmp_path / "zero.vhd", "vhd")
    assert os.path.getsize(tmp_path / "zero.vhd") < 64 << 10
    assert _qemu_size(tmp_path / "zero.vhd", "vhd") == 64 << 20
    assert "Dynamic" in run("vhdiinfo", tmp_path / "zero.vhd")


@pytest.mark.parametrize("fixed", [False, True])
def test_vhdx_leaves_zero_runs_inside_data_unwritten(tmp_path, fixed):
    """A data extent holding 1 MiB of zeros between two pieces of data: the VHDX reads back
    equal (qemu-img compare) and its file allocates no room for that run."""
    rnd = random.Random(7)
    body = rnd.randbytes(256 << 10) + bytes(1 << 20) + rnd.randbytes(256 << 10)
    src_path = tmp_path / "src.raw"
    src_path.write_bytes(body + bytes((4 << 20) - len(body)))   # written out: one data extent
    src = RawDisk(FileStream(src_path))
    assert [e.kind for e in src.extents()] == ["data"]
    out = tmp_path / "out.vhdx"
    write_image(src, out, "vhdx", fixed=fixed)
    _compare(src_path, out, "vhdx")
    run("qemu-img", "check", "-q", "-f", "vhdx", out)
    allocated = os.stat(out).st_blocks * 512   # data 512 KiB + headers, BAT, metadata
    assert allocated < (512 << 10) + (1 << 20), allocated  # not the zero run (was 4.2 MiB)
