"""Damaged XFS and Btrfs images: every kind of damage is a typed error naming the structure
(and offset), never a hang, a traceback or a huge allocation. The damage is applied to the
real fixture images through an overlay; checksums are recomputed where the test wants the
damage to reach the checks behind them."""

from __future__ import annotations

import struct

import pytest

import btrfs_reader
import xfs_reader
from btrfs_reader import checksum as bcsum
from btrfs_reader import items
from btrfs_reader.tree import HEADER, Key
from streams.errors import FormatError
from streams.stream import DATA, FileStream
from tests.helpers.linuxfs import Overlay
from xfs_reader.checksum import crc_of


def _xfs(images, patches=None):
    base = FileStream(images.images["xfs5"])
    return xfs_reader.open_volume(Overlay(base, patches or {}) if patches else base)


def _inode_patch(vol, ino: int, edits: dict[int, bytes]) -> dict[int, bytes]:
    """The inode's bytes with ``edits`` applied and its CRC recomputed."""
    at = vol.inode(ino).offset
    raw = bytearray(vol.stream.read(at, vol.sb.inode_size))
    for off, b in edits.items():
        raw[off:off + len(b)] = b
    raw[100:104] = struct.pack("<I", crc_of(bytes(raw), 100))
    return {at: bytes(raw)}


def test_xfs_superblock_bit_flip(linuxfs_images):
    with pytest.raises(FormatError) as e:
        _xfs(linuxfs_images, {0x80: b"\xff"})
    assert e.value.structure == "XFS superblock" and "CRC" in str(e.value)


def test_xfs_inode_bit_flip_names_the_inode(linuxfs_images):
    vol = _xfs(linuxfs_images)
    e = vol.lookup("/hello.txt")
    bad = _xfs(linuxfs_images, {vol.inode(e.ino).offset + 60: b"\x55"})
    with pytest.raises(FormatError) as err:
        bad.lookup("/hello.txt").size
    assert err.value.structure == f"XFS inode {e.ino}" and err.value.offset is not None


def test_xfs_directory_block_bit_flip(linuxfs_images):
    vol = _xfs(linuxfs_images)
    d = vol.lookup("/dirs/d40")
    from xfs_reader.bmap import fork_map
    m = fork_map(vol, d.inode)[0]
    at = vol.sb.fsb_to_byte(m.startblock)
    bad = _xfs(linuxfs_images, {at + 200: b"\xee"})
    with pytest.raises(FormatError) as err:
        list(bad.lookup("/dirs/d40").iterdir())
    assert "directory" in err.value.structure and err.value.offset == at


def test_xfs_bmbt_pointing_twice_at_one_block(linuxfs_images):
    """A bmbt node whose two children are one block (CRC fixed): refused, not read twice."""
    vol = _xfs(linuxfs_images)
    ino = vol.lookup("/frag.bin").inode
    fork = ino.data_fork
    level, numrecs = struct.unpack_from(">HH", fork, 0)
    maxrecs = (len(fork) - 4) // 16
    assert level == 2                                     # root -> node -> leaves
    node = struct.unpack_from(">Q", fork, 4 + maxrecs * 8)[0]
    at = vol.sb.fsb_to_byte(node)
    blk = bytearray(vol.stream.read(at, vol.sb.block_size))
    n = struct.unpack_from(">H", blk, 6)[0]
    cap = (vol.sb.block_size - 72) // 16
    assert n >= 2
    blk[72 + cap * 8 + 8:72 + cap * 8 + 16] = blk[72 + cap * 8:72 + cap * 8 + 8]
    blk[64:68] = struct.pack("<I", crc_of(bytes(blk), 64))
    bad = _xfs(linuxfs_images, {at: bytes(blk)})
    with pytest.raises(FormatError) as err:
        bad.lookup("/frag.bin").open()
    assert "bmbt" in err.value.structure and "loops" in str(err.value)


def test_xfs_extent_outside_the_volume(linuxfs_images):
    vol = _xfs(linuxfs_images)
    ino = vol.lookup("/big.bin").inode
    hi, lo = struct.unpack_from(">QQ", ino.data_fork, 0)
    lo = (lo & 0x1FFFFF) | ((0x3FFFFFFF) << 21)           # start block far past the end
    bad = _xfs(linuxfs_images, _inode_patch(vol, ino.ino, {176: struct.pack(">QQ", hi, lo)}))
    with pytest.raises(FormatError) as err:
        bad.lookup("/big.bin").open()
    assert "outside the volume" in str(err.value)


def test_xfs_huge_size_is_sparse_not_a_hang(linuxfs_images):
    vol = _xfs(linuxfs_images)
    ino = vol.lookup("/hello.txt").inode
    bad = _xfs(linuxfs_images, _inode_patch(vol, ino.ino, {56: struct.pack(">q", 1 << 62)}))
    s = bad.lookup("/hello.txt").open()
    assert s.size == 1 << 62 and s.read(0, 13) == b"hello, world\n"
    assert s.read((1 << 62) - 10, 100) == bytes(10)
    assert len(list(s.extents())) == 2


def test_xfs_truncated_image(linuxfs_images):
    from streams.stream import SliceStream
    base = FileStream(linuxfs_images.images["xfs5"])
    vol = xfs_reader.open_volume(SliceStream(base, 0, 1 << 20))
    assert any("superblock says" in w for w in vol.warnings)
    with pytest.raises(FormatError):
        s = vol.lookup("/big.bin").open()
        s.read(0, s.size)


def _btrfs(images, patches=None, name="btrfs"):
    base = FileStream(images.images[name])
    return btrfs_reader.open_volume(Overlay(base, patches or {}) if patches else base)


def _tree_block_patch(vol, bytenr: int, edits: dict[int, bytes]) -> dict[int, bytes]:
    phys = vol.chunk_map.physical(bytenr, vol.sb.nodesize, "test")
    raw = bytearray(vol.stream.read(phys, vol.sb.nodesize))
    for off, b in edits.items():
        raw[off:off + len(b)] = b
    raw[0:4] = bcsum.digest(vol.sb.csum_type, bytes(raw[32:]))
    return {phys: bytes(raw)}


def test_btrfs_superblock_bit_flip(linuxfs_images):
    with pytest.raises(FormatError) as e:
        _btrfs(linuxfs_images, {0x10000 + 0x100: b"\x01"})
    assert e.value.structure == "Btrfs superblock"


def test_btrfs_root_tree_bit_flip(linuxfs_images):
    vol = _btrfs(linuxfs_images)
    phys = vol.chunk_map.physical(vol.sb.root, vol.sb.nodesize, "test")
    bad = _btrfs(linuxfs_images, {phys + 500: b"\x99"})
    with pytest.raises(FormatError) as err:
        bad.lookup("/hello.txt")
    assert "root tree block" in err.value.structure and "checksum" in str(err.value)
    assert err.value.offset == vol.sb.root


def test_btrfs_node_pointing_at_itself(linuxfs_images):
    vol = _btrfs(linuxfs_images)
    tree = vol.fs_tree(items.FS_TREE)
    assert tree.level >= 1
    edit = {HEADER + 17: struct.pack("<Q", tree.bytenr)}      # first child := the node itself
    bad = _btrfs(linuxfs_images, _tree_block_patch(vol, tree.bytenr, edit))
    with pytest.raises(FormatError) as err:
        bad.lookup("/hello.txt")
    assert "level" in str(err.value)


def test_btrfs_extent_outside_every_chunk(linuxfs_images):
    vol = _btrfs(linuxfs_images)
    e = vol.lookup("/big.bin")
    tree = vol.fs_tree(items.FS_TREE)
    # the leaf holding big.bin's first EXTENT_DATA item, and where that item's value sits
    key = Key(e.objectid, items.EXTENT_DATA, 0)
    blk = _leaf_of(vol, tree, key)
    i = blk.keys.index(key)
    raw = vol.stream.read(vol.chunk_map.physical(blk.bytenr, vol.sb.nodesize, "t"), vol.sb.nodesize)
    doff = struct.unpack_from("<I", raw, HEADER + 25 * i + 17)[0]
    bad = _btrfs(linuxfs_images, _tree_block_patch(
        vol, blk.bytenr, {HEADER + doff + 21: struct.pack("<Q", 1 << 60)}))
    with pytest.raises(FormatError) as err:
        bad.lookup("/big.bin").open().read(0, 4096)
    assert "in no chunk" in str(err.value)


def _leaf_of(vol, tree, key):
    bytenr, level = tree.bytenr, tree.level
    while True:
        blk = vol.tree_block(bytenr, "t")
        if blk.level == 0:
            return blk
        import bisect
        j = max(0, bisect.bisect_right(blk.keys, key) - 1)
        bytenr = blk.ptrs[j]


def test_btrfs_damaged_compressed_data(linuxfs_images):
    vol = _btrfs(linuxfs_images)
    e = vol.lookup("/c-zlib/text.txt")
    ext = e._extents()[0]
    phys = vol.chunk_map.physical(ext.disk_bytenr, ext.disk_num_bytes, "t")
    bad = _btrfs(linuxfs_images, {phys + 2: bytes(64)})
    s = bad.lookup("/c-zlib/text.txt").open()
    with pytest.raises(FormatError) as err:
        s.read(0, 100_000)
    assert "compressed data is damaged" in str(err.value)


def test_btrfs_truncated_image(linuxfs_images):
    from streams.stream import SliceStream
    base = FileStream(linuxfs_images.images["btrfs"])
    vol = btrfs_reader.open_volume(SliceStream(base, 0, 1 << 20))
    with pytest.raises(FormatError):
        vol.lookup("/hello.txt")


def test_btrfs_huge_extent_list_reads_lazily(linuxfs_images):
    """The sparse file's extents are DATA and ZERO, found without reading the data."""
    vol = _btrfs(linuxfs_images)
    s = vol.lookup("/sparse.bin").open()
    kinds = [x.kind for x in s.extents()]
    assert kinds[0] == DATA and len(kinds) >= 3
