"""The shared namespace over the fixture VM, checked against the factory's manifests, through
the Tree (what the CLI uses) and through a real FUSE mount (what users browse)."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys

import pytest

from rpfs.source import open_source

SKIP_IN_FULL_HASH = ("/bigdir/",)  # 50,000 tiny files: counted, hashed by the NTFS tests


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def vm(small_fixtures):
    return small_fixtures.vm_states[0]


@pytest.fixture(scope="module")
def manifest(small_fixtures):
    return small_fixtures.volumes["system-p3"].manifest


def walk(node, path=""):
    for child in node.iterdir():
        p = f"{path}/{child.name}"
        yield p, child
        if child.kind == "dir":
            yield from walk(child, p)


def test_vm_folder_tree_matches_manifest(vm, manifest):
    entries = manifest["entries"]
    with open_source(vm) as tree:
        assert sorted(n.name for n in tree.root.iterdir()) == ["disks", "files", "volumes"]
        assert {n.name for n in tree.resolve("/disks").iterdir()} == {"system.raw", "data.raw"}
        vol = tree.resolve("/volumes/system-p3")
        seen = {}
        for path, node in walk(vol):
            seen[path] = node
        expected = {p for p in entries if p != "/"}
        assert set(seen) == expected
        keys = {}
        rnd = random.Random(5)
        for path, want in entries.items():
            if path == "/":
                continue
            node = seen[path]
            kind = {"junction": "symlink"}.get(want["type"], want["type"])
            assert node.kind == kind, path
            if kind == "symlink":
                assert node.readlink() == want["target_relative"], path
                continue
            if kind == "file":
                assert node.attr().size == want["size"], path
                keys.setdefault(node.key, set()).add(path)
                if not path.startswith(SKIP_IN_FULL_HASH) or rnd.random() < 0.01:
                    s = node.open()
                    assert sha256(s.read(0, s.size)) == want["sha256"], path
            if "times" in want and kind == "file":
                a = node.attr()
                assert a.mtime_ns == want["times"]["modified"], path
                assert a.atime_ns == want["times"]["accessed"], path
                assert a.crtime_ns == want["times"]["created"], path
            for stream, info in want.get("ads", {}).items():
                ads = tree.resolve(f"/volumes/system-p3{path}:{stream}")
                data = ads.open().read(0, info["size"] + 1)
                assert sha256(data) == info["sha256"], (path, stream)
                assert f"user.{stream}" in node.xattr_names()
        groups = [sorted(g) for g in manifest["hardlink_groups"]]
        linked = sorted(sorted(p) for p in keys.values() if len(p) > 1)
        assert linked == sorted(groups)


def test_paths_through_links_and_latest_style_symlinks(vm):
    with open_source(vm) as tree:
        via_junction = tree.resolve("/volumes/system-p3/Documents and Settings/alice/Documents/notes.txt")
        direct = tree.resolve("/volumes/system-p3/Users/alice/Documents/notes.txt")
        assert via_junction.key == direct.key
        # case-insensitive like Windows
        assert tree.resolve("/volumes/system-p3/users/ALICE/documents/NOTES.TXT").key == direct.key


def rpfs(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "rpfs", *map(str, args)], capture_output=True)
    if check and r.returncode:
        raise AssertionError(r.stderr.decode())
    return r


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_mount_matches_manifest_and_raw_disk(vm, manifest, small_fixtures, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    rpfs("mount", vm, mp)
    try:
        root = mp / "volumes" / "system-p3"
        entries = manifest["entries"]
        # every path outside the big directory, with types and sizes
        for path, want in entries.items():
            if path == "/" or path.startswith("/bigdir/"):
                continue
            p = root / path.lstrip("/")
            st = os.lstat(p)
            if want["type"] in ("symlink", "junction"):
                assert os.readlink(p) == want["target_relative"], path
            elif want["type"] == "dir":
                assert os.path.isdir(p) and not os.path.islink(p), path
            else:
                assert st.st_size == want["size"], path
                if "times" in want:
                    assert st.st_mtime_ns == want["times"]["modified"], path
        assert len(os.listdir(root / "bigdir")) == sum(1 for p in entries if p.startswith("/bigdir/"))
        for group in manifest["hardlink_groups"]:
            assert len({os.stat(root / p.lstrip("/")).st_ino for p in group}) == 1
        for path, want in entries.items():
            if want.get("ads"):
                p = root / path.lstrip("/")
                for stream, info in want["ads"].items():
                    if info["size"] <= 65536:  # the kernel's xattr size limit
                        assert sha256(os.getxattr(p, f"user.{stream}")) == info["sha256"]
                    assert sha256((root / (path.lstrip("/") + ":" + stream)).read_bytes()) == info["sha256"]
                attrib = os.getxattr(p, "system.ntfs_attrib")
                assert len(attrib) == 4
        # the disk through the mount is the raw disk, at hundreds of random offsets
        raw = small_fixtures.disks["system"].raw
        size = os.path.getsize(raw)
        rnd = random.Random(7)
        with open(mp / "disks" / "system.raw", "rb") as a, open(raw, "rb") as b:
            assert os.fstat(a.fileno()).st_size == size
            for _ in range(300):
                off = rnd.randrange(size)
                n = rnd.choice([1, 512, 4096, 65536, 1 << 20])
                a.seek(off)
                b.seek(off)
                assert a.read(n) == b.read(n)
    finally:
        rpfs("umount", mp, check=False)


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_ntfs_xattrs_equal_ntfs3g(small_fixtures, tmp_path):
    """system.ntfs_* attributes are byte-equal to what ntfs-3g itself answers."""
    vol = small_fixtures.volumes["system-p3"]
    ours, theirs = tmp_path / "rpfs", tmp_path / "ntfs3g"
    ours.mkdir()
    theirs.mkdir()
    rpfs("mount", vol.image, ours)
    try:
        subprocess.run(["ntfs-3g", "-o", "ro", str(vol.image), str(theirs)], check=True)
        try:
            base = ours / "volumes" / os.listdir(ours / "volumes")[0]
            for rel in ("times/dated-dir", "times/precise.txt", "Users/alice/Documents/report.docx",
                        "compressed", "ProgramData/Contoso/with-ads.txt"):
                for name in ("system.ntfs_times", "system.ntfs_crtime", "system.ntfs_attrib",
                             "system.ntfs_acl"):
                    assert os.getxattr(base / rel, name) == os.getxattr(theirs / rel, name), (rel, name)
        finally:
            subprocess.run(["fusermount3", "-u", str(theirs)])
    finally:
        rpfs("umount", ours, check=False)
