"""XFS and Btrfs volumes through the namespace (detection in rpfs/tree.py, nodes of
rpfs/posix_nodes.py), compared with the kernel's own read-only loop mount of the image."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from rpfs.source import open_source
from tests.helpers.posix_oracle import differences, kernel_mount, kernel_tree, node_tree
from tools.fixtures.linux import Unavailable


def _root(img):
    tree = open_source(img)
    vols = [n.name for n in tree.resolve("/volumes").iterdir()]
    assert len(vols) == 1, vols
    return tree.resolve(f"/volumes/{vols[0]}")


def _kernel(img, options: str = ""):
    if options:      # the top level of a Btrfs volume whose default subvolume is another
        from tools.fixtures.linuxfs import loop_available, mounted
        if not loop_available():
            pytest.skip("no loop device")
        with tempfile.TemporaryDirectory(prefix="rpfs-oracle-") as tmp:
            with mounted(img, Path(tmp) / "mnt", options) as mnt:
                return kernel_tree(mnt)
    try:
        with kernel_mount(img) as mnt:
            return kernel_tree(mnt)
    except Unavailable as e:
        pytest.skip(str(e))


def test_xfs_volume_in_the_namespace_equals_the_kernel(linuxfs_images):
    img = linuxfs_images.images["xfs5"]
    root = _root(img)
    info = root.info()
    assert info["filesystem"] == "xfs" and info["state"] == "clean" and info["label"] == "xfs5"
    kernel = _kernel(img)
    assert len(kernel) > 50_000
    assert differences(kernel, node_tree(root)) == []


def test_btrfs_volume_in_the_namespace_equals_the_kernel(linuxfs_images):
    """Inode numbers repeat across subvolumes in the kernel (each has its own st_dev); rpfs
    makes them unique, so they are compared as hard-link groups instead."""
    img = linuxfs_images.images["btrfs"]
    root = _root(img)
    info = root.info()
    assert info["filesystem"] == "btrfs" and "@home-snap" in info["subvolumes"]
    assert info["default_subvolume"] == "@"
    kernel = _kernel(img, "ro,subvolid=5")
    ours = node_tree(root)
    placeholder = {p for p, e in kernel.items() if e["ino"] == 2 and e["kind"] == "dir"}
    assert placeholder == {"/@home-snap/nested"}
    for p in placeholder:
        for side in (kernel, ours):
            for f in ("mtime", "ctime", "atime", "ino"):
                side[p].pop(f)
    assert differences(kernel, ours, ignore=("atime", "ino")) == []
    a, b = ours["/links/a"], ours["/hardlink-at-root"]
    assert a["ino"] == b["ino"] and ours["/@home/alice/notes.txt"]["ino"] != \
        ours["/@home-snap/alice/notes.txt"]["ino"]


def test_xfs_v4_in_the_namespace(linuxfs_images):
    root = _root(linuxfs_images.images["xfs4"])
    assert root.info()["version"] == "v4"
    ours = node_tree(root)
    man = linuxfs_images.manifest("xfs4")["entries"]
    assert set(ours) == set(man) - {"/"}
    assert all(ours[p]["sha256"] == e["sha256"] for p, e in man.items() if "sha256" in e)
    assert ours["/link"]["target"] == "hello.txt"
