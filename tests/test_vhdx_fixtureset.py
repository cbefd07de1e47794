"""Every VHDX of the shared small fixture set (GPT/MBR disks with NTFS and FAT volumes,
made by qemu-img) reads exactly as its raw disk, and our writer's copy of each raw disk
passes qemu-img check and compare."""

from __future__ import annotations

import random
import subprocess

import pytest

from formats.vhdx import VhdxDisk, write_vhdx
from streams.stream import FileStream
from tests.helpers.streams import assert_extents_honest, assert_same

from tools import fixtures


@pytest.fixture(scope="module")
def small():
    return fixtures.build("small")


def test_every_vhdx_image_reads_as_raw(small):
    seen = 0
    for disk in small.disks.values():
        raw = disk.raw.read_bytes()
        for kind, path in disk.images.items():
            if not str(path).endswith(".vhdx"):
                continue
            vd = VhdxDisk(FileStream(path))
            assert vd.kind == ("fixed" if "fixed" in kind else "dynamic")
            assert_same(vd, raw, random.Random(seen), 100)
            assert_extents_honest(vd, raw)
            seen += 1
    assert seen >= 3


def test_writer_copies_of_fixture_disks(small, tmp_path):
    for disk in small.disks.values():
        dest = tmp_path / f"{disk.name}.vhdx"
        write_vhdx(FileStream(disk.raw), dest, block_size=2 << 20)
        subprocess.run(["qemu-img", "check", str(dest)], check=True, capture_output=True)
        subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vhdx", str(disk.raw), str(dest)],
                       check=True, capture_output=True)
