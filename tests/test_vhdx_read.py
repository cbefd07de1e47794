"""VHDX reader against qemu-img's images and libvhdi: byte-for-byte equality with the raw
disk the image was made from, in big reads and hundreds of random reads."""

from __future__ import annotations

import os
import random
import subprocess
import shutil
from pathlib import Path

import pytest

from formats.disk import Disk
from formats.vhdx import VhdxDisk, reader, write_vhdx
from streams.stream import DATA, ZERO, FileStream
from tests.helpers import vhdx_fixtures as F
from tests.helpers.streams import CountingStream, LineCounter, assert_extents_honest, assert_same

MiB = 1 << 20


@pytest.mark.parametrize("raw_name", ["holes", "ntfs"])
@pytest.mark.parametrize("subformat,block_size", [("dynamic", 1 * MiB), ("dynamic", 32 * MiB),
                                                  ("dynamic", 8 * MiB), ("fixed", 32 * MiB)])
def test_qemu_images_read_as_raw(raw_name, subformat, block_size):
    raw_path = F.raw_holes() if raw_name == "holes" else F.raw_ntfs()
    raw = raw_path.read_bytes()
    path = F.qemu_vhdx(raw_path, subformat, block_size)
    disk = VhdxDisk(FileStream(path))
    assert isinstance(disk, Disk)
    assert (disk.format, disk.kind) == ("vhdx", subformat)
    assert disk.block_size == block_size
    assert disk.logical_sector_size == 512 and disk.parent_ref is None
    assert disk.identity is not None and not disk.log_replayed
    assert_same(disk, raw, random.Random(block_size))
    assert_extents_honest(disk, raw)
    with disk.open() as f:   # the file-object view the layers above use
        f.seek(5 * MiB + 100)
        assert f.read(10000) == raw[5 * MiB + 100:5 * MiB + 10100]


def test_identity_matches_vhdiinfo():
    path = F.qemu_vhdx(F.raw_holes(), "dynamic", 1 * MiB)
    out = subprocess.run(["vhdiinfo", str(path)], capture_output=True, text=True, check=True).stdout
    disk = VhdxDisk(FileStream(path))
    fields = dict(line.strip().split(":", 1) for line in out.splitlines() if ":" in line)
    assert fields["Identifier\t\t"].strip() == str(disk.identity)
    assert int(fields["Media size\t\t"].split("(")[1].split()[0]) == disk.size


def test_logical_4096_sectors():
    """qemu cannot write 4 KiB logical sectors: our writer does, libvhdi confirms them."""
    raw = F.raw_holes().read_bytes()
    raw = raw[:len(raw) // 4096 * 4096]
    src = F._dir("lss4096") / "src.raw"
    src.write_bytes(raw)
    dest = src.with_suffix(".vhdx")
    write_vhdx(FileStream(src), dest, block_size=2 * MiB, logical_sector_size=4096, physical_sector_size=4096)
    info = subprocess.run(["vhdiinfo", str(dest)], capture_output=True, text=True, check=True).stdout
    assert "Bytes per sector\t: 4096 bytes" in info
    disk = VhdxDisk(FileStream(dest))
    assert (disk.logical_sector_size, disk.physical_sector_size) == (4096, 4096)
    assert disk.chunk_ratio == (1 << 23) * 4096 // (2 * MiB)
    assert_same(disk, raw, random.Random(4096), 100)


def _vhdimount(image: Path, mnt: Path):
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["vhdimount", str(image), str(mnt)], check=True, stdout=subprocess.DEVNULL)
    return mnt


@pytest.mark.fuse
@pytest.mark.skipif(not os.path.exists("/dev/fuse") or not shutil.which("vhdimount"), reason="needs FUSE + vhdimount")
@pytest.mark.parametrize("subformat,block_size", [("dynamic", 1 * MiB), ("fixed", 32 * MiB)])
def test_equals_libvhdi(tmp_path, subformat, block_size):
    path = F.qemu_vhdx(F.raw_ntfs(), subformat, block_size)
    mnt = _vhdimount(path, tmp_path / "m")
    try:
        theirs = (mnt / "vhdi1").read_bytes()
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    disk = VhdxDisk(FileStream(path))
    assert_same(disk, theirs, random.Random(1), 100)


def test_sparse_multi_tib_disk_is_cheap(tmp_path):
    """2 TiB, 1 MiB blocks (2M BAT entries, all ZERO state from qemu) with two written
    ranges: extents and hole reads skip runs of identical BAT entries in bulk (counted in
    lines of the reader run, not seconds), reading the 16 MiB BAT once."""
    path = tmp_path / "big.vhdx"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx", "-o", "block_size=1M", str(path), "2T"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0x11 1T 1M", "-c", "write -P 0x22 1500G 512", str(path)],
                   check=True, stdout=subprocess.DEVNULL)
    file = CountingStream(FileStream(path))
    disk = VhdxDisk(file)
    with LineCounter(reader) as work:
        ext = [(e.offset, e.length, e.kind) for e in disk.extents()]
    assert work.lines < 200_000, work.lines   # 2M entries: far fewer lines than entries
    assert file.bytes_read < 20 * MiB, file.bytes_read
    T, G = 1 << 40, 1 << 30
    assert ext[:3] == [(0, T, ZERO), (T, MiB, DATA), (T + MiB, 1500 * G - T - MiB, ZERO)]
    # qemu allocated the second block but wrote one sector: the file's own hole shows through
    (o, n, k), (o2, n2, k2) = ext[3:]
    assert (o, k, k2, o2 + n2) == (1500 * G, DATA, ZERO, 2 * T) and 512 <= n <= MiB
    assert disk.read(T - 3, 6) == bytes(3) + b"\x11" * 3
    assert disk.read(1500 * G + 510, 4) == b"\x22\x22\0\0"
    assert disk.read(7 * G, 64 * MiB) == bytes(64 * MiB)
