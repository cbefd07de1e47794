"""Every NTFS volume of the shared "small" fixture set, read with ntfs_reader, against its
manifest (what the factory put in) and against sleuthkit (fls/icat) on a sample."""

from __future__ import annotations

import hashlib
import posixpath
import random
import subprocess

import pytest

from ntfs_reader import Volume
from streams.errors import NotFoundError
from streams.stream import FileStream

NTFS_VOLUMES = ["system-p3", "system-p4", "data-p1", "data-p2", "data-p5", "data-p6",
                "bare-p0", "sector4k-p0"] + [f"clusters-p{i}" for i in range(1, 9)]


def sha256_of(stream) -> str:
    h = hashlib.sha256()
    buf = bytearray(1 << 20)
    pos = 0
    while pos < stream.size:
        n = stream.readinto(pos, buf)
        h.update(memoryview(buf)[:n])
        pos += n
    return h.hexdigest()


@pytest.fixture(scope="module", params=NTFS_VOLUMES)
def fixture_volume(request, small_fixtures):
    fx = small_fixtures.volumes[request.param]
    return fx, Volume(FileStream(fx.image))


def test_volume_facts(fixture_volume):
    fx, vol = fixture_volume
    info = fx.manifest["volume"]
    assert vol.label == fx.label
    assert vol.cluster_size == fx.cluster_size and vol.sector_size == fx.sector_size
    assert vol.record_size == info["mft_record_size"]
    assert f"{vol.serial:016x}" == fx.serial
    assert vol.dirty == fx.dirty
    assert bool([w for w in vol.warnings if "dirty" in w]) == fx.dirty


def test_tree_equals_manifest(fixture_volume):
    fx, vol = fixture_volume
    man = fx.manifest
    want = {p: v for p, v in man["entries"].items() if p != "/"}
    got = dict(vol.walk())
    assert sorted(set(got) ^ set(want)) == []
    for path, info in want.items():
        e = got[path]
        t = info["type"]
        if t in ("symlink", "junction"):
            assert e.is_symlink and not e.is_dir, path
            target = e.readlink()
            assert posixpath.normpath(posixpath.join(posixpath.dirname(path), target)) == \
                info["target"], (path, target)
            assert e.reparse_data().hex() == info["reparse_data_hex"]
            continue
        assert e.is_dir == (t == "dir") and not e.is_symlink, path
        if t == "file":
            s = e.open()
            assert e.size == s.size == info["size"], path
            assert sha256_of(s) == info["sha256"], path
            if info.get("sparse"):
                zero = sum(x.length for x in s.extents() if x.kind == "zero")
                assert zero >= info["size"] - sum(n for _, n in info["data_ranges"]) - 2 * 65536
            assert bool(e.attributes & 0x800) == info["compressed"], path
        if "attributes_set" in info:
            assert e.attributes & info["attributes_set"] == info["attributes_set"], path
        ads = dict(e.streams())
        assert ads == {n: a["size"] for n, a in info.get("ads", {}).items()}, path
        for n, a in info.get("ads", {}).items():
            assert sha256_of(e.open(n)) == a["sha256"], (path, n)
        if "times" in info:
            tt = e.times
            # "changed" (MFT change time) is stamped by ntfs-3g when times are set: skip it
            assert (tt.st_birthtime_ns, tt.st_mtime_ns, tt.st_atime_ns) == (
                info["times"]["created"], info["times"]["modified"],
                info["times"]["accessed"]), path
    for group in man["hardlink_groups"]:
        assert len({got[p].ref for p in group}) == 1, group
        assert got[group[0]].nlink == len(group)


def test_lookup_case_insensitive(fixture_volume):
    fx, vol = fixture_volume
    paths = [p for p, v in fx.manifest["entries"].items() if p != "/"]
    for p in random.Random(1).sample(paths, min(50, len(paths))):
        for variant in (p, p.upper(), p.lower()):
            e = vol.lookup(variant)
            assert e.name == posixpath.basename(p) or e.name.lower() == posixpath.basename(p).lower()
    with pytest.raises(NotFoundError):
        vol.lookup("/no/such/thing")


def _fls(image) -> dict:
    out = subprocess.run(["fls", "-r", "-p", "-u", str(image)], capture_output=True,
                         check=True).stdout.decode("utf-8", "replace")
    res = {}
    for line in out.splitlines():
        meta, _, path = line.partition("\t")
        if ":" in path or "$" in path or "*" in meta or "^" in path or "\ufffd" in path:
            continue
        res["/" + path] = int(meta.split()[-1].rstrip(":").split("-")[0])
    return res


def test_against_sleuthkit(fixture_volume):
    fx, vol = fixture_volume
    theirs = _fls(fx.image)
    ours = {p: e.ref for p, e in vol.walk() if p in theirs or "$" not in p}
    ours = {p: r for p, r in ours.items() if "^" not in p and ":" not in p}
    assert ours == theirs
    files = sorted(p for p, v in fx.manifest["entries"].items()
                   if v["type"] == "file" and 0 < v["size"] < 8 << 20)
    for p in random.Random(2).sample(files, min(12, len(files))):
        e = vol.lookup(p)
        icat = subprocess.run(["icat", str(fx.image), str(e.ref)], capture_output=True,
                              check=True).stdout
        assert icat == e.open().read(0, e.size), p
