"""btrfs_reader against the kernel: an image written through a loop mount (subvolumes, a
snapshot, zlib/lzo/zstd compressed files, the common tree) and one made by mkfs.btrfs
--rootdir, each read back through the kernel's read-only mount (subvolid=5) into a
manifest that every entry must equal."""

from __future__ import annotations

import subprocess

import pytest

import btrfs_reader
from btrfs_reader import items
from streams.errors import NotFoundError, UsageError
from streams.stream import DATA, ZERO, FileStream
from tests.helpers.linuxfs import compare_volume, walk


def _open(images, name):
    return btrfs_reader.open_volume(FileStream(images.images[name]))


def _placeholder(path, want):
    """A subvolume inside a snapshot shows as an empty directory the kernel makes up on
    each mount (inode 2, times of that mount): its times are not the image's."""
    return want.get("ino") == items.EMPTY_SUBVOL_DIR


@pytest.mark.parametrize("name", ["btrfs", "btrfs-rootdir", "btrfs-dup-sha256", "btrfs-blake2"])
def test_every_entry_equals_the_kernel(linuxfs_images, name):
    vol = _open(linuxfs_images, name)
    man = linuxfs_images.manifest(name)
    assert compare_volume(vol, man, skip_times=_placeholder) == []
    assert vol.label == man["volume"]["label"] and vol.fs_type == "btrfs"
    if "uuid" in man["volume"]:
        assert vol.uuid == man["volume"]["uuid"]
    assert vol.state == "clean" and vol.warnings == []


def test_listings_equal_the_kernel(linuxfs_images):
    vol = _open(linuxfs_images, "btrfs")
    man = linuxfs_images.manifest("btrfs")
    seen = {path for path, _ in walk(vol.root) if not path.startswith("/bigdir/")}
    assert seen == set(man["entries"]) - {"/"}
    big = sorted(e.name for e in vol.lookup("/bigdir").iterdir())
    assert big == man["bigdir"]["names"] and len(big) == 50_000


def test_subvolumes_and_snapshot(linuxfs_images):
    vol = _open(linuxfs_images, "btrfs")
    d = vol.describe()
    assert d["subvolumes"] == ["@", "@home", "@home-snap", "@home/nested"]
    assert d["default_subvolume"] == "@"
    home, snap = vol.lookup("/@home"), vol.lookup("/@home-snap")
    assert home.ino != snap.ino and home.tree != snap.tree != items.FS_TREE
    old = snap.child("alice").child("notes.txt").open()
    new = home.child("alice").child("notes.txt").open()
    assert new.read(0, 100) == b"changed after the snapshot\n"
    assert old.size == 50_000 and old.read(0, 100) != new.read(0, 100)
    with pytest.raises(NotFoundError):
        snap.child("alice").child("new.txt")
    assert list(vol.lookup("/@home-snap/nested").iterdir()) == []     # the kernel's view
    assert vol.lookup("/@home/nested/inside").size == 22
    # btrfs inspect-internal agrees on the subvolume ids
    out = subprocess.run(["btrfs", "inspect-internal", "dump-tree", "-t", "root",
                          str(linuxfs_images.images["btrfs"])], capture_output=True, text=True).stdout
    assert f"({home.tree} ROOT_ITEM" in out and f"({snap.tree} ROOT_ITEM" in out


@pytest.mark.parametrize("algo,code", [("zlib", 1), ("lzo", 2), ("zstd", 3)])
def test_compressed_extents_are_what_the_test_reads(linuxfs_images, algo, code):
    vol = _open(linuxfs_images, "btrfs")
    e = vol.lookup(f"/c-{algo}/text.txt")
    kinds = {x.compression for x in e._extents()}
    assert kinds == {code}
    small = vol.lookup(f"/c-{algo}/small.txt")._extents()
    assert small[0].inline is not None and small[0].compression == code
    pre = vol.lookup("/prealloc.bin")
    assert {x.type for x in pre._extents()} >= {items.FILE_EXTENT_PREALLOC}
    assert list(pre.open().extents())[-1].kind == ZERO
    sparse = vol.lookup(f"/c-{algo}/sparse.txt").open()
    ext = list(sparse.extents())
    assert [x.kind for x in ext] == [DATA, ZERO, DATA]


def test_contract_errors_and_inodes(linuxfs_images):
    vol = _open(linuxfs_images, "btrfs")
    with pytest.raises(NotFoundError):
        vol.lookup("/no/such")
    with pytest.raises(UsageError):
        vol.root.open()
    a = vol.lookup("/links/a")
    assert a.ino == vol.lookup("/hardlink-at-root").ino and a.nlink == 3
    assert vol.entry(a.ino).open().read(0, 100) == b"one file, three names\n"
    home = vol.lookup("/@home/alice/new.txt")
    assert vol.entry(home.ino).open().read(0, 7) == b"new aft"
    assert vol.lookup("/times/ns").crtime_ns is not None
    man = linuxfs_images.manifest("btrfs")["entries"]
    for path in ("/hello.txt", "/links/a", "/xattrs/one", "/xattrs/node", "/xattrs/acl",
                 "/xattrs", "/@home", "/@home-snap/nested"):
        assert vol.lookup(path).has_xattrs == bool(man[path]["xattrs"]), path


def test_profiles_and_checksums_are_the_claimed_ones(linuxfs_images):
    from btrfs_reader.chunks import DUP
    vol = _open(linuxfs_images, "btrfs-dup-sha256")
    assert vol.sb.csum_type == 2 and vol.sb.nodesize == 4096
    data = [c for c in vol.chunk_map.chunks if c.type & 1]          # DATA block groups
    assert data and all(c.type & DUP and len(c.stripes) == 2 for c in data)
    assert _open(linuxfs_images, "btrfs-blake2").sb.csum_type == 3
    assert _open(linuxfs_images, "btrfs").sb.csum_type == 0


def test_probe(linuxfs_images):
    assert btrfs_reader.probe(FileStream(linuxfs_images.images["btrfs"]))
    assert not btrfs_reader.probe(FileStream(linuxfs_images.images["xfs5"]))


def test_a_pending_log_tree_is_said_in_one_line(linuxfs_images):
    vol = _open(linuxfs_images, "btrfs-log")
    assert vol.sb.log_root != 0 and vol.state.startswith("log tree present")
    assert vol.warnings == [f"Btrfs: {vol.state}"]
    assert _open(linuxfs_images, "btrfs").sb.log_root == 0
