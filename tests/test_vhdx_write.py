"""VHDX writer: qemu-img check passes, qemu-img compare equals the source, vhdiinfo opens it,
holes are neither read nor written."""

from __future__ import annotations

import os
import random
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from formats.vhdx import VhdxDisk, write_vhdx
from streams.errors import UsageError
from streams.stream import DATA, ZERO, BytesStream, FileStream, Stream
from tests.helpers import vhdx_fixtures as F
from tests.helpers.streams import assert_same

MiB = 1 << 20


class RecordingStream(Stream):
    """A real file stream that remembers which ranges were read."""

    def __init__(self, base: Stream):
        self.base, self.size, self.name = base, base.size, base.name
        self.reads: list[tuple[int, int]] = []

    def _read(self, offset, length):
        self.reads.append((offset, length))
        return self.base.read(offset, length)

    def extents(self, offset=0, length=None):
        return self.base.extents(offset, length)


def qemu_ok(path, raw_path):
    subprocess.run(["qemu-img", "check", "-f", "vhdx", str(path)], check=True, capture_output=True)
    subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "vhdx", str(raw_path), str(path)],
                   check=True, capture_output=True)
    info = subprocess.run(["vhdiinfo", str(path)], check=True, capture_output=True, text=True).stdout
    assert "VHDX" in info


@pytest.mark.parametrize("raw_name", ["holes", "ntfs"])
@pytest.mark.parametrize("fixed,block_size", [(False, 1 * MiB), (False, 32 * MiB), (True, 8 * MiB)])
def test_written_vhdx_is_valid_and_equal(tmp_path, raw_name, fixed, block_size):
    raw_path = F.raw_holes() if raw_name == "holes" else F.raw_ntfs()
    src = RecordingStream(FileStream(raw_path))
    dest = tmp_path / "out.vhdx"
    seen = []
    info = write_vhdx(src, dest, block_size=block_size, fixed=fixed,
                      progress=lambda done, total: seen.append((done, total)))
    qemu_ok(dest, raw_path)
    disk = VhdxDisk(FileStream(dest))
    assert disk.kind == ("fixed" if fixed else "dynamic") and disk.identity == info["identity"]
    assert disk.physical_sector_size == 4096 and disk.logical_sector_size == 512
    assert_same(disk, raw_path.read_bytes(), random.Random(3), 100)
    # holes in the source were never read
    zeros = [e for e in FileStream(raw_path).extents() if e.kind == ZERO]
    for off, n in src.reads:
        for z in zeros:
            assert off + n <= z.offset or off >= z.end, (off, n, z)
    assert seen[-1] == (disk.size, disk.size) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    st = os.stat(dest)
    allocated = st.st_blocks * 512
    data = sum(e.length for e in FileStream(raw_path).extents() if e.kind == DATA)
    assert allocated < data + 8 * MiB + 2 * block_size   # holes were not written, fixed is sparse
    if fixed:
        assert st.st_size >= disk.size


def test_vhdx_to_vhdx_keeps_sector_sizes(tmp_path):
    raw = F.raw_holes().read_bytes()
    raw = raw[:len(raw) // 4096 * 4096]
    first = tmp_path / "a.vhdx"
    write_vhdx(BytesStream(raw), first, block_size=4 * MiB, logical_sector_size=4096, physical_sector_size=512)
    src = VhdxDisk(FileStream(first))
    second = tmp_path / "b.vhdx"
    write_vhdx(src, second, block_size=1 * MiB)      # sector sizes come from the source disk
    out = VhdxDisk(FileStream(second))
    assert (out.logical_sector_size, out.physical_sector_size) == (4096, 512)
    assert out.read(0, out.size) == raw
    def data(d):
        return sum(e.length for e in d.extents() if e.kind == DATA)
    assert data(out) <= data(src) < out.size        # finer blocks, never more data


def test_odd_size_is_rounded_to_a_sector(tmp_path):
    data = random.Random(1).randbytes(3 * MiB + 100)
    dest = tmp_path / "odd.vhdx"
    write_vhdx(BytesStream(data), dest, block_size=1 * MiB)
    disk = VhdxDisk(FileStream(dest))
    assert disk.size == 3 * MiB + 512
    assert disk.read(0, disk.size) == data + bytes(412)
    subprocess.run(["qemu-img", "check", str(dest)], check=True, capture_output=True)


def test_empty_and_all_zero_sources(tmp_path):
    dest = tmp_path / "z.vhdx"
    write_vhdx(BytesStream(bytes(5 * MiB)), dest, block_size=1 * MiB)
    disk = VhdxDisk(FileStream(dest))
    assert [(e.kind, e.length) for e in disk.extents()] == [(ZERO, 5 * MiB)]
    assert os.path.getsize(dest) == 4 * MiB      # header, log, metadata, BAT: no payload
    subprocess.run(["qemu-img", "check", str(dest)], check=True, capture_output=True)


@pytest.mark.parametrize("kw", [dict(block_size=3 * MiB), dict(block_size=512 * 1024),
                                dict(logical_sector_size=1024), dict(fixed=True, parent=object())])
def test_bad_arguments(tmp_path, kw):
    with pytest.raises(UsageError):
        write_vhdx(BytesStream(bytes(MiB)), tmp_path / "x.vhdx", **kw)


def test_empty_source_is_refused(tmp_path):
    with pytest.raises(UsageError, match="empty"):     # qemu-img and Hyper-V refuse size 0 too
        write_vhdx(BytesStream(b""), tmp_path / "x.vhdx")


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(size=st.integers(1, 9 * MiB), pieces=st.lists(st.tuples(st.integers(0, 9 * MiB), st.integers(1, 3 * MiB),
                                                             st.integers(0, 255)), max_size=8),
       block_mib=st.sampled_from([1, 2, 4]), fixed=st.booleans(), lss=st.sampled_from([512, 4096]))
def test_round_trip_property(tmp_path_factory, size, pieces, block_mib, fixed, lss):
    """Any content, block size, sector size and kind: what we write reads back exactly, and
    zero extents are really zero."""
    data = bytearray(size)
    for off, n, fill in pieces:
        data[off:off + n] = bytes([fill]) * len(data[off:off + n])
    dest = tmp_path_factory.mktemp("rt") / "x.vhdx"
    write_vhdx(BytesStream(data), dest, block_size=block_mib * MiB, fixed=fixed, logical_sector_size=lss)
    disk = VhdxDisk(FileStream(dest))
    padded = bytes(data) + bytes(disk.size - size)
    assert disk.size == -(-size // lss) * lss
    assert disk.read(0, disk.size) == padded
    for e in disk.extents():
        if e.kind == ZERO:
            assert padded[e.offset:e.end] == bytes(e.length)
