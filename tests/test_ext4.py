"""ext2/3/4 through the namespace, checked against the kernel's own read-only loop mount of
the same image (every file's bytes, mode, owner, link count, times, link target, xattrs),
plus e2fsprogs (debugfs) for what the kernel does not show (crtime)."""

import json
import os
import subprocess

import pytest

from streams.errors import FormatError, NotFoundError, UsageError
from rpfs.source import open_source
from tests.helpers.posix_oracle import differences, kernel_mount, kernel_tree, node_tree
from tools.fixtures import linux


def _image(name: str):
    try:
        return linux.image(name)
    except linux.Unavailable as e:
        pytest.skip(str(e))


def _root(img):
    tree = open_source(img)
    vols = [n.name for n in tree.resolve("/volumes").iterdir()]
    assert len(vols) == 1, vols
    return tree, tree.resolve(f"/volumes/{vols[0]}")


@pytest.mark.parametrize("name,fs", [("ext4", "ext4"), ("ext4-1k", "ext4"),
                                     ("ext4-inline", "ext4"), ("ext4-ea", "ext4"),
                                     ("ext4-bigalloc", "ext4"), ("ext3", "ext3"), ("ext2", "ext2")])
def test_every_file_as_the_kernel_reads_it(name, fs):
    img = _image(name) / f"{name}.img"
    tree, root = _root(img)
    assert root.info()["filesystem"] == fs and root.info()["state"] == "clean"
    ours = node_tree(root)
    with kernel_mount(img) as mnt:
        kernel = kernel_tree(mnt)
    assert len(kernel) > 400
    assert differences(kernel, ours) == []


def test_features_are_really_there():
    """The image holds what the test claims to cover (so a reader bug cannot hide behind
    a fixture that lacks the feature)."""
    img = _image("ext4") / "ext4.img"
    tree, root = _root(img)
    vol = root.volume
    assert vol.sb.metadata_csum and vol.block_size == 4096
    notes = root.child("home").child("alice").child("notes.txt")
    assert notes.attr().nlink == 3 and notes.attr().uid == 1000
    assert notes.key == root.child("etc").child("notes-third-link").key   # one inode
    big = root.child("home").child("alice").child("big.bin")
    assert len(big.getxattr("user.large")) == 700
    acl = big.getxattr("system.posix_acl_access")
    assert acl[:4] == b"\x02\0\0\0"                                          # kernel format
    frag = root.child("fragmented.bin").entry
    assert vol.inode(frag.ino).block[6:8] == b"\x01\x00"                     # depth 1 tree
    sparse = root.child("sparse.bin").open()
    zero = sum(e.length for e in sparse.extents() if e.kind == "zero")
    assert zero > 99 << 20                                                   # honest holes
    bigdir = root.child("bigdir")
    assert sum(1 for _ in bigdir.iterdir()) == 50_000
    assert bigdir.child("entry-049999").kind == "file"
    with pytest.raises(NotFoundError):
        bigdir.child("entry-050000")
    dev = root.child("dev")
    assert {c.name: c.kind for c in dev.iterdir()} == {
        "null": "chardev", "loop7": "blockdev", "bigminor": "chardev", "fifo": "fifo",
        "socket": "socket"}
    with pytest.raises(UsageError):
        dev.child("fifo").open()


def test_crtime_as_debugfs_shows_it():
    img = _image("ext4") / "ext4.img"
    tree, root = _root(img)
    node = root.child("modes").child("private")     # made by the kernel: ns in crtime
    out = subprocess.run(["debugfs", "-R", "stat /modes/private", str(img)],
                         capture_output=True, text=True).stdout
    line = next(x for x in out.splitlines() if x.strip().startswith("crtime:"))
    secs, nsec = line.split()[1].split(":")
    assert int(nsec, 16) >> 2, "the fixture should have a crtime with nanoseconds"
    assert node.attr().crtime_ns == int(secs, 16) * 10**9 + (int(nsec, 16) >> 2)


def test_xattr_in_its_own_inode():
    img = _image("ext4-ea") / "ext4-ea.img"
    tree, root = _root(img)
    node = root.child("etc").child("hostname")
    value = node.getxattr("user.huge")
    assert len(value) == 60_000
    import random
    assert value == random.Random(11).randbytes(60_000)


def test_inline_data_really_inline():
    img = _image("ext4-inline") / "ext4-inline.img"
    tree, root = _root(img)
    from ext4_reader.inode import INLINE_DATA_FL
    vol = root.volume
    s59 = root.child("sizes").child("s59").entry
    assert vol.inode(s59.ino).flags & INLINE_DATA_FL
    assert vol.inode(root.child("empty-dir").entry.ino).flags & INLINE_DATA_FL


def test_journal_replayed_in_memory():
    """Committed transactions that were not written home are shown, as the kernel's
    recovery shows them; the image itself is not changed."""
    img = _image("ext4-journal") / "journal.img"
    before = os.stat(img).st_mtime_ns, _sha(img)
    tree, root = _root(img)
    info = root.info()
    assert info["state"].startswith("needs journal recovery (replayed in memory")
    assert info["journal"]["replayed_transactions"] >= 1
    ours = node_tree(root)
    with kernel_mount(img, replay=True) as mnt:
        kernel = kernel_tree(mnt)
    marker = json.loads((img.parent / "expected.json").read_text())["only_in_journal"]
    assert f"/{marker}/f199" in kernel
    assert differences(kernel, ours) == []
    assert (os.stat(img).st_mtime_ns, _sha(img)) == before
    # Without the replay the same image lacks what the guest wrote last (debugfs reads home).
    out = subprocess.run(["debugfs", "-R", "ls /", str(img)], capture_output=True, text=True).stdout
    assert marker not in out


def test_bad_checksum_is_a_typed_error_naming_the_structure(tmp_path):
    src = _image("ext4") / "ext4.img"
    img = tmp_path / "bad.img"
    tree, root = _root(src)
    vol = root.volume
    ino = root.child("etc").child("hostname").entry.ino
    group, index = divmod(ino - 1, vol.sb.inodes_per_group)
    table = vol._desc(group).inode_table
    off = table * vol.block_size + index * vol.sb.inode_size + 0x10   # i_mtime
    subprocess.run(["cp", "--sparse=always", str(src), str(img)], check=True)
    with open(img, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0xFF]))
    tree2, root2 = _root(img)
    node = root2.child("etc").child("hostname")
    with pytest.raises(FormatError, match=rf"ext4 inode {ino}: .*checksum"):
        node.attr()
    assert root2.child("etc").child("fstab").attr().size > 0     # the rest still reads


def _sha(path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
