"""NTFS feature volumes made by mkntfs + ntfs-3g (tests/helpers/ntfs_images.py) read back
through ntfs_reader: reparse tags, odd names, case, times, security, compression, checked
against the manifest of what was put in and against sleuthkit."""

from __future__ import annotations

import os

import pytest

from ntfs_reader import Volume, names
from streams.errors import NotFoundError, UnsupportedError
from streams.stream import FileStream
from tests.helpers.ntfs_images import (NT_EPOCH, features_image, linux_path, mftfrag_image,
                                       run, sha256_of)


SHAPES = [(512, 4096), (4096, 4096), (512, 1024), (512, 512)]


@pytest.fixture(scope="module", params=SHAPES, ids=lambda s: f"s{s[0]}-c{s[1]}")
def features(request):
    image, man = features_image(*request.param)
    return Volume(FileStream(image)), man, image


def test_geometry(features):
    vol, man, _ = features
    assert vol.sector_size == man["sector"] and vol.cluster_size == man["cluster"]
    assert vol.record_size == max(1024, man["sector"])
    assert vol.label == man["label"] and vol.version == "3.1" and not vol.dirty
    assert len(vol.warnings) == 1 and "hibernated" in vol.warnings[0] and vol.hibernated


def test_negative_run_offsets(features):
    vol, man, _ = features
    if vol.cluster_size != 4096:
        pytest.skip("ntfs-3g's allocator only reliably leaves the hole behind at 4 KiB")
    runs = vol.lookup("/neg.bin")._attrs().first(0x80).decode_runs(vol.total_clusters, "x")
    assert any(b[2] < a[2] for a, b in zip(runs, runs[1:])), runs


def test_tree_matches_manifest(features):
    vol, man, _ = features
    got = dict(vol.walk())
    want = {linux_path(p): v for p, v in man["entries"].items() if p != "/"}
    sur = "/" + names.to_linux(man["surrogate_raw"])
    assert set(got) - {sur} == set(want)
    assert sur in got and got[sur].open().read(0, 100) == b"surrogate"
    for path, info in want.items():
        e = got[path]
        kind = "symlink" if e.is_symlink else "dir" if e.is_dir else "file"
        assert kind == info["type"], path
        if kind == "symlink":
            assert e.readlink() == info["target"], path
            assert e.size == len(info["target"].encode())
            if "reparse_hex" in info:
                assert e.reparse_data().hex() == info["reparse_hex"]
            continue
        if "unsupported" in info:
            assert e.reparse_tag == info["reparse_tag"]
            with pytest.raises(UnsupportedError, match=info["unsupported"]):
                e.open()
            continue
        if kind == "file":
            s = e.open()
            assert e.size == s.size == info["size"], path
            assert sha256_of(s) == info["sha256"], path
        ads = {n: sz for n, sz in e.streams()}
        assert ads == {n: a["size"] for n, a in info.get("ads", {}).items()}, path
        for n, a in info.get("ads", {}).items():
            assert sha256_of(e.open(n)) == a["sha256"], (path, n)
        if "times" in info:
            t = e.times
            # ntfs-3g stamps "changed" (MFT change) itself when the times are set
            assert (t.created, t.modified, t.accessed) == tuple(
                info["times"][k] for k in ("created", "modified", "accessed"))
            assert t.st_mtime_ns == (t.modified - NT_EPOCH) * 100
    for group in man["hardlinks"]:
        refs = {got[p].ref for p in group}
        assert len(refs) == 1 and got[group[0]].nlink == len(group)


def test_lookup_case_and_names(features):
    vol, man, _ = features
    assert vol.lookup("/mixedcase.txt").name == "MixedCase.TXT"
    assert vol.lookup("/MIXEDCASE.TXT").open().read(0, 9) == b"mixed"
    assert vol.lookup("/posix").open().read(0, 9) == b"lower"
    assert vol.lookup("/POSIX").open().read(0, 9) == b"upper"
    assert vol.lookup("/Posix").name in ("posix", "POSIX")
    assert vol.lookup("/DIR/Sub/deep/FILE.BIN").size == 100_000
    long = names.to_linux(man["long_name"])
    assert len(long.encode()) <= 255 and long != man["long_name"]
    assert vol.lookup("/" + long).open().read(0, 20) == b"long name"
    assert vol.lookup("/" + long).ntfs_name == man["long_name"]
    with pytest.raises(NotFoundError):
        vol.lookup("/nope")
    with pytest.raises(NotFoundError):
        vol.lookup("/dir/nope/x")
    sur = names.to_linux(man["surrogate_raw"])
    assert os.fsencode(sur) == b"sur\xed\xa0\x80x"       # ntfs-3g's bytes
    assert names.to_ntfs(sur) == man["surrogate_raw"]
    assert vol.lookup("/" + sur).ntfs_name == man["surrogate_raw"]


def test_dos_names_object_id_eas(features):
    vol, man, _ = features
    path, short = man["dos_name"]
    top = [e.name for e in vol.root.iterdir()]
    assert path[1:] in top and short not in top      # 8.3 alias not listed
    e = vol.lookup("/" + short.lower())               # but it resolves, to the long name
    assert e.name == path[1:] and e.short_name == short and e.nlink == 1
    assert e.open().read(0, 100) == b"has a short name"
    assert vol.lookup("/hello.txt").object_id.bytes_le.hex() == man["object_id"]
    assert {k: v.hex() for k, v in vol.lookup("/dir/sub/deep/file.bin").eas().items()} == man["eas"]


def test_security_descriptors_match_ntfs3g(features):
    vol, man, _ = features
    for p, acl in man["acls"].items():
        assert vol.lookup(p).security_descriptor().hex() == acl, p


def test_metadata_files_hidden_but_reachable(features):
    vol, _, _ = features
    top = {e.name for e in vol.root.iterdir()}
    assert not {n for n in top if n.startswith("$")}
    meta = vol.metadata_files()
    assert meta["$MFT"].open().size == vol.mft_records * vol.record_size
    assert vol.lookup("/$MFT").ref == 0
    assert vol.metadata("$Bitmap").size * 8 >= vol.total_clusters
    assert "$Extend/$Reparse" in meta
    assert vol.metadata("$Boot").open().read(3, 8) == b"NTFS    "


def test_security_descriptors(features):
    vol, _, _ = features
    for p in ("/hello.txt", "/dir", "/"):
        sd = vol.lookup(p).security_descriptor()
        assert len(sd) >= 20 and sd[0] == 1  # self-relative, revision 1


def test_against_sleuthkit(features):
    """fls -r names and inode numbers, icat contents on a sample."""
    vol, man, image = features
    out = run(["fls", "-r", "-p", "-u", image]).decode("utf-8", "replace")
    fls = {}
    for line in out.splitlines():
        meta, _, path = line.partition("\t")
        kind, inode = meta.split()[0], meta.split()[-1].rstrip(":")
        if ":" in path or "$" in path or "*" in meta or "OrphanFile" in path or "^" in path:
            continue
        fls["/" + path] = int(inode.split("-")[0])
    ours = {p: e.ref for p, e in vol.walk() if all(ord(c) < 128 for c in p)}
    theirs = {p: r for p, r in fls.items() if all(ord(c) < 128 for c in p)}
    assert ours == theirs
    for p in ("/hello.txt", "/dir/sub/deep/file.bin", "/sparse.bin", "/frag_a.bin",
              "/packed/text.txt", "/packed/holes.bin"):
        e = vol.lookup(p)
        assert run(["icat", image, str(e.ref)]) == e.open().read(0, e.size), p


def test_fragmented_mft_with_attribute_list():
    """A real (ntfs-3g made) $MFT in hundreds of runs whose $DATA continues in an extension
    record: every record past the first extent must still be found."""
    image, man = mftfrag_image()
    vol = Volume(FileStream(image))
    extents = vol.file(0).extents(0x80)
    assert len(extents) >= 2 and extents[0].record == 0 and extents[1].record != 0
    runs = sum(len(a.decode_runs(vol.total_clusters, "x")) for a in extents)
    assert runs >= 100
    many = vol.lookup("/many")
    names_ = [e.name for e in many.iterdir()]
    assert names_ == [f"{k:05d}" for k in range(man["many"])]
    last = max(e.ref for e in many.iterdir())
    assert last * vol.record_size > (extents[1].lowest_vcn * vol.cluster_size)
    for k in (0, man["many"] // 2, man["many"] - 1):
        e = many.child(f"{k:05d}")
        assert e.open().read(0, 100) == b"file %d" % k
        assert run(["icat", image, str(e.ref)]) == b"file %d" % k
    fill = [e.name for e in vol.lookup("/fill").iterdir()]
    assert fill == man["fill_left"]


def test_iterdir_after_each_name_walks_the_same_order(features):
    """Paging one entry at a time (case-distinct POSIX names, unicode, hidden metadata,
    long and escaped names included) gives exactly the full listing."""
    vol, man, _ = features
    for d in [vol.root, vol.lookup("/dir")] + ([vol.lookup("/wof")] if "/wof" in man["entries"] else []):
        full = [e.name for e in d.iterdir()]
        got, after = [], None
        for _ in range(len(full) + 1):
            nxt = next(d.iterdir(after=after), None)
            if nxt is None:
                break
            got.append(nxt.name)
            after = nxt.name
        assert got == full


def test_backup_boot_sector_every_shape(features):
    """Primary boot sector zeroed: the copy in the volume's last sector (512 or 4096 bytes)."""
    vol, _, image = features
    from streams.stream import Stream

    class ZeroFirstSector(Stream):
        def __init__(self, base):
            self.base, self.size, self.name = base, base.size, base.name

        def _read(self, offset, length):
            data = bytearray(self.base.read(offset, length))
            if offset < 512:
                data[:512 - offset] = bytes(min(length, 512 - offset))
            return bytes(data)

    vol2 = Volume(ZeroFirstSector(FileStream(image)))
    assert any("backup" in w for w in vol2.warnings)
    assert vol2.sector_size == vol.sector_size and vol2.serial == vol.serial
    assert vol2.lookup("/hello.txt").open().read(0, 5) == b"hello"
