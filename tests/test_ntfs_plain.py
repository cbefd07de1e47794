"""A directory's plain files in one C call (``_ntfsparse.plain_files``, twin
ntfs_reader/plain.py), what restore writes small NTFS files from without a node each: the
same arrays through C and Python, the same facts the node path gives (size, times, bytes,
one link) for every file it calls plain, and a restore through it identical to one
through the nodes, with no node made per plain file. Real images (mkntfs + ntfs-3g, and the
"small" fixture set)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ntfs_reader import Volume, native
from ntfs_reader.plain import BYTES, NODE, VOLUME, plain_files_python
from rpfs import ntfs_nodes, restore as restore_module
from rpfs.ntfs_nodes import NtfsNode, volume_root
from rpfs.restore import restore
from streams.stream import FileStream
from tests.helpers.ntfs_images import features_image, mftfrag_image

SMALL = 256 << 10


def _directories(root):
    """Every directory node under ``root`` (its own too)."""
    out, todo = [], [root]
    while todo:
        node = todo.pop()
        out.append(node)
        listing = node.listing()
        todo.extend(listing.node(i) for i in range(len(listing)) if listing.kind(i) == "dir")
    return out


def _check_volume(image) -> tuple[int, int]:
    """Per directory: C arrays == Python arrays, and every plain child is what its node
    says. (children that are files, plain ones)."""
    assert native.available(), "ntfs_reader._ntfsparse missing: run tools/setup.sh"
    vol = Volume(FileStream(str(image)))
    root = volume_root(vol, "vol", ("vol",))
    files = plain = 0
    for d in _directories(root):
        listing = d.listing()
        got = d.plain_files(listing, SMALL)
        assert got is not None
        pf, below = got
        assert below is vol.stream
        a = listing.arrays
        twin = plain_files_python(
            {no: vol._mft_block(no) for no in {n // (65536 // vol.record_size) for n in a.numbers}},
            65536, vol.record_size, vol.mft_records, a.numbers, a.sequences, vol.cluster_size,
            vol.total_clusters, SMALL)
        assert pf == twin, d.name
        for i in range(len(listing)):
            node = listing.node(i)
            if node.kind != "file":
                assert pf.status[i] == NODE, (d.name, listing.name(i))
                continue
            files += 1
            if pf.status[i] == NODE:
                continue
            plain += 1
            attr = node.attr()
            size = pf.sizes[i]
            assert attr.size == size and attr.nlink == 1, listing.name(i)
            assert (pf.times[2 * i], pf.times[2 * i + 1]) == (attr.atime_ns, attr.mtime_ns)
            want = node.open().read(0, size)
            if pf.status[i] == BYTES:
                assert pf.data[pf.at[i]:pf.at[i] + size] == want
            else:
                assert pf.status[i] == VOLUME and vol.stream.read(pf.at[i], size) == want
    return files, plain


@pytest.mark.parametrize("build, share", [(features_image, 0.25), (mftfrag_image, 0.99)])
def test_plain_files_are_what_their_nodes_say(build, share):
    image, _ = build()
    files, plain = _check_volume(image)
    # the feature image's big, reparse-point, compressed, sparse, encrypted and
    # hard-linked files go through their nodes (13 of its 41 files are plain); mftfrag's
    # small files are all plain but the few cut short across runs
    assert files > 20 and plain >= files * share, (files, plain)


@pytest.mark.parametrize("name", ["system-p3", "data-p1"])
def test_plain_files_on_fixture_volumes(small_fixtures, name):
    files, plain = _check_volume(small_fixtures.volumes[name].image)
    assert plain > files // 3, (files, plain)


def _tree(path) -> dict:
    """Every name's mode, size, times and bytes (all stats before any read: a read of one
    hard link moves its twin's atime)."""
    out = {}
    for d, dirs, names in os.walk(path):
        for n in dirs + names:
            p = os.path.join(d, n)
            st = os.lstat(p)
            link = os.path.islink(p)   # (a link whose target has no times: now)
            # (a directory's size is the host file system's: ext4's depends on the order
            # the restore's threads made its entries in)
            size = None if stat.S_ISDIR(st.st_mode) else st.st_size
            out[os.path.relpath(p, path)] = [
                st.st_mode, size, None if link else st.st_mtime_ns,
                None if link else st.st_atime_ns, None]
    for rel, row in out.items():
        p = os.path.join(path, rel)
        if not os.path.isdir(p) and not os.path.islink(p):
            row[4] = Path(p).read_bytes()
    return out


@pytest.mark.allow_error_log  # the feature image's files stored elsewhere are reported
@pytest.mark.parametrize("build", [features_image, mftfrag_image])
def test_restore_through_plain_files_equals_restore_through_nodes(build, tmp_path, monkeypatch):
    """The whole volume restored both ways: the same names, modes, sizes, times and bytes;
    and through plain files, no node made for a plain file."""
    image, _ = build()
    made = []
    real_init = NtfsNode.__init__

    def counting(self, *a, **k):
        made.append(1)
        real_init(self, *a, **k)
    root = volume_root(Volume(FileStream(str(image))), "vol", ("vol",))
    monkeypatch.setattr(NtfsNode, "__init__", counting)
    fast = restore(root, str(tmp_path / "fast"))
    nodes_fast = len(made)
    monkeypatch.setattr(NtfsNode, "plain_files", lambda self, listing, size: None)
    made.clear()
    root = volume_root(Volume(FileStream(str(image))), "vol", ("vol",))
    slow = restore(root, str(tmp_path / "slow"))
    assert [e.split("/fast/", 1)[1] for e in fast.errors] == \
        [e.split("/slow/", 1)[1] for e in slow.errors]
    assert fast.files == slow.files
    assert (fast.dirs, fast.symlinks, fast.hardlinks) == (slow.dirs, slow.symlinks, slow.hardlinks)
    a, b = _tree(tmp_path / "fast"), _tree(tmp_path / "slow")
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == b[k], k
    # a node per child was made walking through nodes; through plain files, only for
    # directories and what is not plain (features: 13 of 41 files are plain; mftfrag: all
    # 7,531 files but the few cut short across runs)
    assert len(made) - nodes_fast >= 10, (nodes_fast, len(made))
    if build is mftfrag_image:
        assert nodes_fast <= 20, (nodes_fast, len(made))


@pytest.mark.allow_error_log  # the refusal is logged
def test_a_plain_file_in_the_way_is_refused_or_replaced(tmp_path):
    """A name that exists: the batch writer reports it, and the file's node is made after
    all to refuse it (or, with --overwrite, to replace it)."""
    image, manifest = mftfrag_image()
    root = volume_root(Volume(FileStream(str(image))), "vol", ("vol",))
    name = manifest["fill_left"][7]
    (tmp_path / "fill").mkdir()
    (tmp_path / "fill" / name).write_bytes(b"mine")
    result = restore(root.child("fill"), str(tmp_path))
    assert len(result.errors) == 1 and name in result.errors[0] and "exists" in result.errors[0]
    assert (tmp_path / "fill" / name).read_bytes() == b"mine"
    result = restore(root.child("fill"), str(tmp_path), overwrite=True)
    assert not result.errors
    assert (tmp_path / "fill" / name).read_bytes() != b"mine"


def test_xattrs_take_the_node_path(tmp_path, monkeypatch):
    """--xattrs needs each file's node (its streams): plain files are not used."""
    image, _ = mftfrag_image()
    root = volume_root(Volume(FileStream(str(image))), "vol", ("vol",))
    asked = []
    monkeypatch.setattr(NtfsNode, "plain_files", lambda self, listing, size: asked.append(1))
    restore(root.child("many"), str(tmp_path), xattrs=True)
    assert asked == []
    restore(root.child("many"), str(tmp_path / "b"))
    assert asked
