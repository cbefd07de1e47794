"""xfs_reader against the kernel: images written through a loop mount (or mkfs.xfs's
protofile for v4, which this kernel no longer mounts), read back through a read-only
mount into a manifest; every entry's bytes, mode, owners, nlink, times, target and
xattrs must match, and the structures the tests claim to cover must be the ones on disk."""

from __future__ import annotations

import struct
import subprocess

import pytest

import xfs_reader
from streams.errors import NotFoundError, UsageError
from streams.stream import DATA, ZERO, FileStream
from tests.helpers.linuxfs import compare_volume, walk
from xfs_reader.inode import FMT_BTREE, FMT_EXTENTS, FMT_LOCAL


def _open(images, name):
    return xfs_reader.open_volume(FileStream(images.images[name]))


@pytest.mark.parametrize("name", ["xfs5", "xfs5-1k", "xfs4"])
def test_every_entry_equals_the_kernel(linuxfs_images, name):
    vol = _open(linuxfs_images, name)
    man = linuxfs_images.manifest(name)
    assert compare_volume(vol, man) == []
    assert vol.label == man["volume"]["label"]
    if "uuid" in man["volume"]:
        assert vol.uuid == man["volume"]["uuid"]
    assert vol.state == "clean" and vol.warnings == []
    assert vol.fs_type == "xfs"


@pytest.mark.parametrize("name", ["xfs5", "xfs5-1k"])
def test_listings_equal_the_kernel(linuxfs_images, name):
    """iterdir (not lookup) finds exactly the kernel's names, 50,000-entry directory too."""
    vol = _open(linuxfs_images, name)
    man = linuxfs_images.manifest(name)
    seen = {path for path, _ in walk(vol.root) if not path.startswith("/bigdir/")}
    assert seen == set(man["entries"]) - {"/"}
    big = sorted(e.name for e in vol.lookup("/bigdir").iterdir())
    assert big == man["bigdir"]["names"] and len(big) == 50_000


def test_structures_are_the_claimed_forms(linuxfs_images):
    vol = _open(linuxfs_images, "xfs5")
    form = lambda p: vol.lookup(p).inode.format  # noqa: E731
    assert form("/dirs/d3") == FMT_LOCAL                       # short-form directory
    assert form("/dirs/d40") == FMT_EXTENTS                    # block directory
    assert vol.lookup("/dirs/d40").inode.nextents == 1
    assert vol.lookup("/dirs/d400").inode.nextents > 1         # leaf directory
    assert form("/bigdir") == FMT_BTREE                        # B+tree directory
    assert form("/frag.bin") == FMT_BTREE                      # bmbt extent map
    assert form("/sym-rel") == FMT_LOCAL and form("/sym-long") == FMT_EXTENTS
    xa = vol.lookup("/xattrs/node").inode
    assert xa.aformat == FMT_EXTENTS and xa.anextents > 1      # node-form attributes
    # the first hash block of each directory and the first attribute block say the form
    from xfs_reader.bmap import fork_map, read_logical

    def magic(path, lblock, attr=False):
        ino = vol.lookup(path).inode
        maps = fork_map(vol, ino, attr=attr)
        blk = read_logical(vol, maps, [m.startoff for m in maps], lblock, 1, "test")
        return blk and struct.unpack_from(">H", blk, 8)[0]
    hashes = (32 << 30) // vol.block_size
    assert magic("/dirs/d40", hashes) is None                  # block form: no hash blocks
    assert magic("/dirs/d400", hashes) == 0x3DF1               # leaf form
    assert magic("/dirs/d3000", hashes) == 0x3EBE              # node form
    assert magic("/xattrs/remote", 0, attr=True) == 0x3BEE     # leaf-form attributes
    assert magic("/xattrs/node", 0, attr=True) == 0x3EBE       # node-form attributes
    assert vol.lookup("/xattrs/one").inode.aformat == FMT_LOCAL
    # xfs_db agrees on the node form: its first attribute block is a da node
    ino = vol.lookup("/xattrs/node").ino
    out = subprocess.run(["xfs_db", "-r", "-c", f"inode {ino}", "-c", "ablock 0", "-c", "print hdr.info.hdr.magic",
                          str(linuxfs_images.images["xfs5"])], capture_output=True, text=True).stdout
    assert "0x3ebe" in out


def test_holes_and_unwritten_extents_are_zero_extents(linuxfs_images):
    vol = _open(linuxfs_images, "xfs5")
    s = vol.lookup("/sparse.bin").open()
    ext = list(s.extents())
    assert sum(e.length for e in ext) == s.size == 20 << 20
    assert ext[0].kind == DATA and ext[-1].kind == ZERO
    assert any(e.kind == ZERO and e.offset <= 5 << 20 < e.offset + e.length for e in ext)
    pre = vol.lookup("/prealloc.bin").open()
    assert [e.kind for e in pre.extents()][-1] == ZERO       # unwritten past 8 KiB
    assert pre.read(8192, 4096) == bytes(4096)
    frag = vol.lookup("/frag.bin").open()
    zeros = [e for e in frag.extents() if e.kind == ZERO]
    assert len(zeros) >= 1000 and all(e.length == 4096 for e in zeros[:100])


def test_times_big_time_and_crtime(linuxfs_images):
    man = linuxfs_images.manifest("xfs5")
    vol = _open(linuxfs_images, "xfs5")
    y2100 = vol.lookup("/times/y2100")
    assert y2100.mtime_ns == man["entries"]["/times/y2100"]["mtime_ns"] > 2**31 * 10**9
    assert vol.lookup("/times/old").mtime_ns < 0
    assert vol.sb.bigtime and y2100.crtime_ns is not None
    assert y2100.crtime_ns <= y2100.ctime_ns
    v4 = _open(linuxfs_images, "xfs4")
    assert v4.lookup("/hello.txt").crtime_ns is None and v4.sb.version == 4
    assert not v4.sb.has_ftype                                  # entries without file types
    one_k = _open(linuxfs_images, "xfs5-1k")
    assert one_k.lookup("/frag.bin").inode.flags2 & (1 << 4)    # 64-bit extent counters


def test_contract_errors(linuxfs_images):
    vol = _open(linuxfs_images, "xfs5")
    with pytest.raises(NotFoundError):
        vol.lookup("/no/such")
    with pytest.raises(NotFoundError):
        vol.lookup("/hello.txt/x")
    with pytest.raises(UsageError):
        vol.lookup("/hello.txt").readlink()
    with pytest.raises(UsageError):
        vol.root.open()
    e = vol.lookup("/links/a")
    assert vol.entry(e.ino).open().read(0, 100) == b"one file, three names\n"
    man = linuxfs_images.manifest("xfs5")["entries"]
    for path in ("/hello.txt", "/links/a", "/xattrs/one", "/xattrs/node", "/xattrs/acl", "/xattrs"):
        assert vol.lookup(path).has_xattrs == bool(man[path]["xattrs"]), path
    assert vol.lookup("/names").child("bad-\udcff\udcfe").size == 10
    d = vol.describe()
    assert d["filesystem"] == "xfs" and d["state"] == "clean" and d["version"] == "v5 (CRC)"


def test_probe(linuxfs_images):
    assert xfs_reader.probe(FileStream(linuxfs_images.images["xfs4"]))
    assert not xfs_reader.probe(FileStream(linuxfs_images.images["btrfs"]))


@pytest.mark.parametrize("name", ["xfs5-dirty", "xfs5-dirty-1k"])
def test_a_dirty_log_is_replayed_in_memory(linuxfs_images, name):
    """An image copied while mounted: xfs_logprint (the oracle for the log's state) says
    DIRTY; rpfs replays the log in memory and shows what the kernel shows after its own
    recovery of the same image (every entry equal), without writing anything."""
    def logprint(name):
        out = subprocess.run(["xfs_logprint", "-t", str(linuxfs_images.images[name])],
                             capture_output=True, text=True).stdout
        return "<CLEAN>" in out, "<DIRTY>" in out
    assert logprint(name) == (False, True) and logprint("xfs5") == (True, False)
    img = linuxfs_images.images[name]
    before = img.read_bytes()[:1 << 20], img.stat().st_mtime_ns
    vol = _open(linuxfs_images, name)
    assert vol.state.startswith("needs log recovery (replayed in memory: ")
    assert [w for w in vol.warnings if "log" in w] == [f"XFS log: {vol.state}"]
    assert vol.describe()["state"] == vol.state
    man = linuxfs_images.manifest(name)
    assert len(man["entries"]) > 40
    assert compare_volume(vol, man) == []
    seen = {path for path, _ in walk(vol.root)}
    assert seen == set(man["entries"]) - {"/"}
    assert (img.read_bytes()[:1 << 20], img.stat().st_mtime_ns) == before


def test_an_unreplayable_log_is_said_and_the_disk_read_as_is(linuxfs_images):
    """A log record header damaged: the state says why nothing was replayed."""
    from tests.helpers.linuxfs import Overlay
    vol = _open(linuxfs_images, "xfs5-dirty")
    from xfs_reader.log import Log
    log = Log(vol)
    head = log.head()
    last = log.last_record(head)
    tail = last.tail_lsn & 0xFFFFFFFF
    bad = xfs_reader.open_volume(Overlay(FileStream(linuxfs_images.images["xfs5-dirty"]),
                                         {log.base + tail * 512: b"\0\0\0\0"}))
    assert bad.state.startswith("needs log recovery (not replayed: ")
    assert len(bad.warnings) == 1 and list(bad.root.iterdir()) is not None
