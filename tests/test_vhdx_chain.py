"""Differencing VHDX (AVHDX) chains written by our writer: sector bitmaps, ZERO blocks over
parent data, NOT_PRESENT through to the parent, chains of depth >= 3, cross-checked with
libvhdi (vhdimount resolves the parents by path)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess

import pytest

from formats.vhdx import VhdxDisk, write_vhdx
from formats.vhdx import structures as S
from streams.errors import ChainError
from streams.stream import ZERO, BytesStream, FileStream, is_zero
from tests.helpers import vhdx_fixtures as F
from tests.helpers.streams import assert_extents_honest, assert_same

MiB = 1 << 20


def open_chain(files):
    disks = []
    for vhdx, _ in files:
        d = VhdxDisk(FileStream(vhdx))
        if disks:
            assert d.parent_ref.identity == disks[-1].identity
            d.set_parent(disks[-1])
        disks.append(d)
    return disks


def states(disk):
    return [disk.block_state(b)[0] for b in range(disk.data_blocks)]


@pytest.mark.parametrize("depth,block_size,lss", [(3, 1 * MiB, 512), (4, 2 * MiB, 512), (3, 1 * MiB, 4096)])
def test_chain_reads_every_level(depth, block_size, lss):
    files = F.chain(depth, block_size, lss)
    disks = open_chain(files)
    for level, (disk, (vhdx, raw)) in enumerate(zip(disks, files)):
        expected = raw.read_bytes()
        assert disk.logical_sector_size == lss
        assert disk.kind == ("dynamic" if level == 0 else "differencing")
        assert_same(disk, expected, random.Random(level), 150)
        assert_extents_honest(disk, expected)
    leaf = disks[-1]
    st = states(leaf)
    # the writer produced every interesting state in the leaf
    assert {S.PAYLOAD_BLOCK_NOT_PRESENT, S.PAYLOAD_BLOCK_ZERO, S.PAYLOAD_BLOCK_FULLY_PRESENT,
            S.PAYLOAD_BLOCK_PARTIALLY_PRESENT} <= set(st)
    assert leaf.parent_ref.paths[0] == files[-2][0].name
    assert leaf.parent_ref.paths[1].startswith("\\\\?\\C:\\")


def test_zero_block_overrides_parent():
    files = F.chain(3)
    disks = open_chain(files)
    child = disks[1]
    zb = [b for b, s in enumerate(states(child)) if s == S.PAYLOAD_BLOCK_ZERO]
    assert zb
    for b in zb:
        off = b * child.block_size
        assert not is_zero(disks[0].read(off, child.block_size))
        assert child.read(off, child.block_size) == bytes(child.block_size)
        assert [e.kind for e in child.extents(off, child.block_size)] == [ZERO]


def test_child_without_parent_raises_chain_error():
    files = F.chain(3)
    child = VhdxDisk(FileStream(files[1][0]))
    assert child.parent is None and child.kind == "differencing"
    # a block that must come from the parent
    nb = states(child).index(S.PAYLOAD_BLOCK_NOT_PRESENT)
    with pytest.raises(ChainError) as err:
        child.read(nb * child.block_size, 4096)
    assert "base.vhdx" in str(err.value)
    with pytest.raises(ChainError):
        list(child.extents())


def test_set_parent_refuses_mismatches():
    files = F.chain(3)
    disks = open_chain(files)
    with pytest.raises(ChainError):
        disks[1].set_parent(disks[2])          # a cycle
    with pytest.raises(ChainError):
        disks[0].set_parent(disks[1])          # not differencing


def test_random_children_match_their_content(tmp_path):
    """Property: for random edits, writer + reader reproduce the intended content."""
    rng = random.Random(5)
    size = 6 * MiB + 512 * 3
    base = bytearray(rng.randbytes(size))
    base[2 * MiB:4 * MiB] = bytes(2 * MiB)
    write_vhdx(BytesStream(base), tmp_path / "p.vhdx", block_size=1 * MiB)
    parent = VhdxDisk(FileStream(tmp_path / "p.vhdx"))
    for i in range(6):
        want = bytearray(parent.read(0, size))
        for _ in range(rng.randrange(1, 30)):
            a = rng.randrange(size)
            n = rng.choice([1, 512, 3000, 70000, MiB])
            want[a:a + n] = bytes(len(want[a:a + n])) if rng.random() < 0.3 else rng.randbytes(len(want[a:a + n]))
        path = tmp_path / f"c{i}.avhdx"
        write_vhdx(BytesStream(want), path, block_size=1 * MiB, parent=parent, parent_path=str(tmp_path / "p.vhdx"))
        child = VhdxDisk(FileStream(path))
        child.set_parent(parent)
        assert child.read(0, size) == want
        for _ in range(50):
            a = rng.randrange(size)
            n = rng.randrange(1, 2 * MiB)
            assert child.read(a, n) == want[a:a + n]
        parent = child


@pytest.mark.fuse
@pytest.mark.skipif(not os.path.exists("/dev/fuse") or not shutil.which("vhdimount"), reason="needs FUSE + vhdimount")
@pytest.mark.parametrize("zero_blocks,lss", [(False, 512), (True, 512), (False, 4096)])
def test_chain_equals_libvhdi(tmp_path, zero_blocks, lss):
    """vhdimount exposes vhdi1 = base ... vhdiN = leaf. libvhdi reads a child's ZERO blocks
    from the parent (the spec says they read as zeros), so with ZERO blocks those are left
    out of the comparison; without them the whole chain must match."""
    files = F.chain(3, logical_sector_size=lss, zero_blocks=zero_blocks)
    disks = open_chain(files)
    mnt = tmp_path / "m"
    mnt.mkdir()
    subprocess.run(["vhdimount", str(files[-1][0]), str(mnt)], check=True, stdout=subprocess.DEVNULL)
    try:
        theirs = [(mnt / f"vhdi{i + 1}").read_bytes() for i in range(len(files))]
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    for level, disk in enumerate(disks):
        ours = disk.read(0, disk.size)
        assert ours == files[level][1].read_bytes()
        if not zero_blocks:
            assert ours == theirs[level]
            continue
        zeroed = set()
        for d in disks[1:level + 1]:
            zeroed |= {b for b, s in enumerate(states(d)) if s == S.PAYLOAD_BLOCK_ZERO}
        bs = disk.block_size
        for b in range(disk.data_blocks):
            if b not in zeroed:
                assert ours[b * bs:(b + 1) * bs] == theirs[level][b * bs:(b + 1) * bs], (level, b)


def test_interleaved_sectors_and_threads(tmp_path):
    """Sector bitmaps with thousands of runs (read as one parent read plus copied runs, in
    8 MiB windows that runs cross) read right, also from many threads at once."""
    from concurrent.futures import ThreadPoolExecutor
    rng = random.Random(9)
    size = 32 * MiB
    base = bytearray(rng.randbytes(size))
    base[20 * MiB:24 * MiB] = bytes(4 * MiB)
    write_vhdx(BytesStream(base), tmp_path / "p.vhdx", block_size=16 * MiB)
    parent = VhdxDisk(FileStream(tmp_path / "p.vhdx"))
    want = bytearray(base)
    for s in range(0, 4 * MiB, 1536):
        want[s:s + 512] = rng.randbytes(512)
    want[7 * MiB + 512:9 * MiB - 512] = rng.randbytes(2 * MiB - 1024)   # crosses the 8 MiB window
    for s in range(12 * MiB, 13 * MiB, 1024):
        want[s:s + 512] = bytes(512) if s % 4096 else rng.randbytes(512)
    for s in range(20 * MiB, 21 * MiB, 2048):
        want[s:s + 512] = rng.randbytes(512)
    write_vhdx(BytesStream(want), tmp_path / "c.avhdx", block_size=16 * MiB, parent=parent,
               parent_path=str(tmp_path / "p.vhdx"))
    child = VhdxDisk(FileStream(tmp_path / "c.avhdx"))
    child.set_parent(parent)
    assert states(child) == [S.PAYLOAD_BLOCK_PARTIALLY_PRESENT] * 2
    assert child.read(0, size) == want

    def check(seed):
        r = random.Random(seed)
        for _ in range(60):
            a = r.randrange(size)
            n = r.choice([1, 512, 4097, 1 << 20, 9 * MiB])
            assert child.read(a, n) == want[a:a + n]
        return True

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(check, range(16)))
    for e in child.extents():
        if e.kind == ZERO:
            assert is_zero(want[e.offset:e.end])


def test_absurdly_deep_chain_is_refused():
    """Reads recurse through parents, so depth is bounded (typed error, not RecursionError)."""
    from formats.vhdx.reader import MAX_CHAIN_DEPTH
    files = F.chain(3)
    disk = VhdxDisk(FileStream(files[0][0]))
    for _ in range(MAX_CHAIN_DEPTH):
        child = VhdxDisk(FileStream(files[1][0]))
        child.set_parent(disk)
        disk = child
    assert len(disk.chain) == MAX_CHAIN_DEPTH + 1
    assert disk.read(0, 4096) == files[1][1].read_bytes()[:4096]
    with pytest.raises(ChainError, match="deeper than"):
        VhdxDisk(FileStream(files[1][0])).set_parent(disk)


def test_parent_given_as_a_path(tmp_path):
    rng = random.Random(4)
    base = rng.randbytes(3 * MiB)
    write_vhdx(BytesStream(base), tmp_path / "p.vhdx", block_size=1 * MiB)
    want = bytearray(base)
    want[MiB + 512:MiB + 1024] = bytes(512)
    write_vhdx(BytesStream(want), tmp_path / "c.avhdx",
               block_size=1 * MiB, parent=tmp_path / "p.vhdx")
    child = VhdxDisk(FileStream(tmp_path / "c.avhdx"))
    assert child.parent_ref.paths[0] == "p.vhdx"
    child.set_parent(VhdxDisk(FileStream(tmp_path / "p.vhdx")))
    assert child.read(0, child.size) == want
    from streams.errors import UsageError
    with pytest.raises(UsageError, match="itself differencing"):
        write_vhdx(BytesStream(want), tmp_path / "d.avhdx", parent=tmp_path / "c.avhdx")
