"""In-guest Volume Shadow Copies: every store the factory writes (tools/fixtures/vss.py) reads
as its state in the manifest, byte for byte as libvshadow reads it, through the namespace
(``volumes/<disk>-p<N>.vss/<creation time>/``) and the CLI; damaged stores are typed errors
for that store only."""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import time

import pytest

from formats import vss
from ntfs_reader import Volume
from streams.errors import FormatError, RpfsError
from streams.stream import BytesStream, FileStream
from rpfs.source import open_source
from tests.helpers.cli import rpfs

fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
vshadow = pytest.mark.skipif(shutil.which("vshadowinfo") is None or
                             shutil.which("vshadowmount") is None,
                             reason="vshadowinfo/vshadowmount not installed")


@pytest.fixture(scope="module")
def shadowed():
    from tools.fixtures import vss as factory
    return factory.build()


def _files(node, prefix=""):
    """path -> sha256 of every regular file below an NTFS node (metafiles and System Volume
    Information left out, as in the manifest)."""
    out = {}
    for child in node.iterdir():
        path = prefix + child.name
        if child.name.startswith("$") or path == "System Volume Information":
            continue
        if child.kind == "dir":
            out.update(_files(child, path + "/"))
        elif child.kind == "file":
            s = child.open()
            out[path] = hashlib.sha256(s.read(0, s.size)).hexdigest()
    return out


def test_every_store_reads_as_its_state(shadowed):
    tree = open_source(shadowed.vm)
    vols = {n.name for n in tree.resolve("volumes").iterdir()}
    assert vols == {"shadow-p1", "shadow-p1.vss"}
    stores = [n.name for n in tree.resolve("volumes/shadow-p1.vss").iterdir()]
    assert stores == [s["name"] for s in shadowed.manifest["stores"]]
    for s in shadowed.manifest["stores"]:
        assert s["saved_blocks"] > 0
        assert _files(tree.resolve(f"volumes/shadow-p1.vss/{s['name']}")) == s["files"]
    assert _files(tree.resolve("volumes/shadow-p1")) == shadowed.manifest["current"]
    # the states differ, so a reader ignoring a store (or the chain) would fail above
    states = [s["files"] for s in shadowed.manifest["stores"]] + [shadowed.manifest["current"]]
    assert states[0] != states[1] != states[2]


def test_cli_lists_and_reads_stores(shadowed):
    info = rpfs("info", shadowed.vm, "volumes/shadow-p1", "--json").stdout.decode()
    import json
    copies = json.loads(info)["shadow_copies"]
    assert [(c["store_id"], c["name"], c["size"]) for c in copies] == [
        (s["store_id"], s["name"], shadowed.manifest["volume_size"])
        for s in shadowed.manifest["stores"]]
    old = shadowed.manifest["stores"][0]
    data = rpfs("cat", shadowed.vm, f"volumes/shadow-p1.vss/{old['name']}/docs/report-2.bin").stdout
    assert hashlib.sha256(data).hexdigest() == old["files"]["docs/report-2.bin"]
    r = rpfs("cat", shadowed.vm, "volumes/shadow-p1/docs/report-2.bin", check=False)
    assert r.returncode != 0  # deleted since: only the shadow copy has it


@fuse
def test_mount_reads_every_store(shadowed, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    rpfs("mount", shadowed.vm, mp)
    try:
        for s in shadowed.manifest["stores"]:
            root = mp / "volumes" / "shadow-p1.vss" / s["name"]
            got = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                   for p in root.rglob("*") if p.is_file()
                   and not p.relative_to(root).as_posix().startswith("System Volume")}
            assert got == s["files"]
    finally:
        rpfs("umount", mp, check=False)


@vshadow
def test_vshadowinfo_lists_every_store(shadowed):
    out = subprocess.run(["vshadowinfo", "-o", str(shadowed.partition_offset), shadowed.raw],
                         capture_output=True, text=True, check=True).stdout
    assert f"Number of stores:\t{len(shadowed.manifest['stores'])}" in out
    for s in shadowed.manifest["stores"]:
        assert s["store_id"] in out


@vshadow
@fuse
def test_stores_equal_libvshadow(shadowed, tmp_path):
    mnt = tmp_path / "vss"
    mnt.mkdir()
    proc = subprocess.Popen(["vshadowmount", "-X", "allow_root", str(shadowed.volume), str(mnt)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.ismount(mnt):
                break
            time.sleep(0.05)
        copies = vss.ShadowCopies(FileStream(shadowed.volume))
        assert len(copies.stores) == len(shadowed.manifest["stores"])
        for store in copies.stores:
            ours = copies.open(store)
            theirs = (mnt / f"vss{store.index + 1}").read_bytes()
            assert len(theirs) == ours.size
            assert hashlib.sha256(ours.read(0, ours.size)).digest() == \
                hashlib.sha256(theirs).digest(), store.name
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        proc.wait(timeout=30)


# -- damaged stores -------------------------------------------------------------------------

def _layout(image: bytes):
    """(catalog offset, [type-3 entry offset of each store]) from the documented layout."""
    catalog = struct.unpack_from("<Q", image, 0x1E00 + 48)[0]
    entries = [catalog + p for p in range(128, vss.BLOCK, 128)
               if struct.unpack_from("<Q", image, catalog + p)[0] == 3]
    return catalog, entries


def _patched(shadowed, patch) -> vss.ShadowCopies:
    image = bytearray(shadowed.volume.read_bytes())
    patch(image, *_layout(image))
    return vss.ShadowCopies(BytesStream(bytes(image), name="patched"))


def _readable(copies, store) -> bool:
    try:
        s = copies.open(store)
        Volume(s)
        return True
    except RpfsError:
        return False


@pytest.mark.parametrize("damage", ["cyclic", "outside", "descriptor"])
def test_damaged_oldest_store_only_fails_itself(shadowed, damage):
    def patch(image, catalog, entries):
        blist = struct.unpack_from("<Q", image, entries[0] + 8)[0]
        if damage == "cyclic":       # the block list's next offset points back at itself
            struct.pack_into("<Q", image, blist + 40, blist)
        elif damage == "outside":    # the block list lies past the end of the volume
            struct.pack_into("<Q", image, entries[0] + 8, len(image) + vss.BLOCK)
        else:                        # a saved block's data offset past the end
            struct.pack_into("<Q", image, blist + 128 + 16, 1 << 60)
    copies = _patched(shadowed, patch)
    old, new = copies.stores
    with pytest.raises(FormatError):
        copies.open(old)
    assert _readable(copies, new)


def test_damaged_newer_store_fails_the_older_through_it(shadowed):
    def patch(image, catalog, entries):
        blist = struct.unpack_from("<Q", image, entries[1] + 8)[0]
        struct.pack_into("<Q", image, blist + 40, blist)
    copies = _patched(shadowed, patch)
    for store in copies.stores:      # the older store reads through the newer one
        with pytest.raises(FormatError, match="loops"):
            copies.open(store)


@pytest.mark.parametrize("damage", ["truncated", "cyclic"])
def test_damaged_catalog_is_an_error_for_the_shadow_copies_only(shadowed, damage, tmp_path):
    image = bytearray(shadowed.raw.read_bytes())
    base = shadowed.partition_offset
    catalog = struct.unpack_from("<Q", image, base + 0x1E00 + 48)[0]
    if damage == "truncated":
        struct.pack_into("<Q", image, base + 0x1E00 + 48, shadowed.manifest["volume_size"] - 512)
    else:
        struct.pack_into("<Q", image, base + catalog + 40, catalog)
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm" / "shadow.raw").write_bytes(image)
    with pytest.raises(FormatError):
        vss.ShadowCopies(BytesStream(bytes(image[base:base + shadowed.manifest["volume_size"]])))
    tree = open_source(tmp_path / "vm")
    assert _files(tree.resolve("volumes/shadow-p1")) == shadowed.manifest["current"]
    r = rpfs("ls", tmp_path / "vm", "volumes/shadow-p1.vss", check=False)
    assert r.returncode != 0 and b"Traceback" not in r.stderr
    assert len(r.stderr.decode().strip().splitlines()) == 1


# -- history -------------------------------------------------------------------------------

def _history(*args) -> list[dict]:
    import json
    return json.loads(rpfs("history", *args, "--json").stdout)


def test_history_lists_versions_from_shadow_copies(shadowed, tmp_path):
    """report-1.bin: overwritten in part between the stores (same size), rewritten since;
    report-2.bin: only in the oldest store. Through a repository (indexed) and the folder."""
    repo = tmp_path / "repo"
    rpfs("init", repo)
    rpfs("backup", repo, shadowed.vm, "--vm", "files01", "--time", "2026-01-07T02:00:00Z")
    old, new = (s["name"] for s in shadowed.manifest["stores"])
    rp = "2026-01-07T020000Z"
    for verify in ((), ("--verify",)):
        got = _history(repo, "/files01/latest/volumes/shadow-p1/docs/report-1.bin", *verify)
        assert [v["recovery_points"] for v in got] == [
            [f"{rp}/shadow-p1.vss/{old}"], [f"{rp}/shadow-p1.vss/{new}"], [rp]]
        assert [v["size"] for v in got] == [261658, 261658, 50000]
    got = _history(shadowed.vm, "volumes/shadow-p1/docs/report-2.bin")
    assert [v["recovery_points"] for v in got] == [[f"vm/shadow-p1.vss/{old}"]]
    r = rpfs("history", repo, "/files01/latest/volumes/shadow-p1/notes.txt")
    assert b"not indexed" not in r.stderr


def test_find_and_index_include_shadow_copies(shadowed, tmp_path):
    """A file deleted before the backup is found in the shadow copy that still has it:
    from the index (two recovery points: the store is indexed once and stays), and by
    walking a folder."""
    repo = tmp_path / "repo"
    rpfs("init", repo)
    for day in ("07", "08"):
        rpfs("backup", repo, shadowed.vm, "--vm", "files01", "--time", f"2026-01-{day}T02:00:00Z")
    old = shadowed.manifest["stores"][0]["name"]
    r = rpfs("find", repo, "report-2.bin")
    assert r.stdout.decode().split() == [
        f"/files01/2026-01-{day}T020000Z/volumes/shadow-p1.vss/{old}/docs/report-2.bin"
        for day in ("07", "08")]
    assert b"not indexed" not in r.stderr
    r = rpfs("find", shadowed.vm, "new-in-b.bin")
    assert r.stdout.decode().split() == [
        f"/volumes/shadow-p1.vss/{shadowed.manifest['stores'][1]['name']}/docs/new-in-b.bin"]
    # .versions lists volumes only (a store is not a volume of its own), and each file's
    # versions from shadow copies as <rp>.vss-<creation time>, read back as in the manifest
    assert rpfs("ls", repo, "/files01/.versions").stdout.decode().split() == ["shadow-p1"]
    new = shadowed.manifest["stores"][1]["name"]
    first = "2026-01-07T020000Z"
    versions = "/files01/.versions/shadow-p1/docs/report-1.bin"
    assert rpfs("ls", repo, versions).stdout.decode().split() == [
        first, f"{first}.vss-{old}", f"{first}.vss-{new}"]
    for name, want in ((f"{first}.vss-{old}", shadowed.manifest["stores"][0]["files"]),
                       (f"{first}.vss-{new}", shadowed.manifest["stores"][1]["files"]),
                       (first, shadowed.manifest["current"])):
        data = rpfs("cat", repo, f"{versions}/{name}").stdout
        assert hashlib.sha256(data).hexdigest() == want["docs/report-1.bin"]
    assert rpfs("ls", repo, "/files01/.versions/shadow-p1/docs/report-2.bin").stdout.decode(
        ).split() == [f"{first}.vss-{old}"]


# -- the rules the factory's stores do not use, against libvshadow -------------------------

def _variant(image: bytearray, which: str) -> list[int]:
    """The newest store's bitmap marks every third block not in use; overlays (512-byte
    sectors) over a block with no descriptor and over a saved one; a forwarder in the
    oldest store. Returns the offsets of the blocks the change is about."""
    catalog, entries = _layout(image)
    lists = [struct.unpack_from("<Q", image, e + 8)[0] for e in entries]

    def free_slot(blist: int) -> int:
        return next(blist + p for p in range(128, vss.BLOCK, 32)
                    if image[blist + p:blist + p + 32] == bytes(32))
    if which == "bitmap":
        bitmap = struct.unpack_from("<Q", image, entries[1] + 48)[0]
        blocks = range(0, len(image) // vss.BLOCK, 3)
        for b in blocks:
            image[bitmap + 128 + b // 8] |= 1 << (b % 8)
        return [b * vss.BLOCK for b in blocks]
    if which == "overlay":   # sectors of random saved data over a block and a saved one
        saved, _, data = struct.unpack_from("<QQQ", image, lists[1] + 128)
        targets = [50 * vss.BLOCK, saved]
        for orig, bits in zip(targets, (0b10100101, 0xF0F0)):
            struct.pack_into("<QQQII", image, free_slot(lists[1]), orig, 1, data,
                             vss.FLAG_OVERLAY, bits)
        return targets
    # block 60 (free space) forwarded to a block the newest store saved
    to = struct.unpack_from("<Q", image, lists[1] + 128 + 32)[0]
    struct.pack_into("<QQQII", image, free_slot(lists[0]), 60 * vss.BLOCK, to, 0,
                     vss.FLAG_FORWARDER, 0)
    return [60 * vss.BLOCK]


@vshadow
@fuse
@pytest.mark.parametrize("which", ["bitmap", "overlay", "forwarder"])
def test_bitmap_overlay_forwarder_equal_libvshadow(shadowed, which, tmp_path):
    plain = vss.ShadowCopies(FileStream(shadowed.volume))
    image = bytearray(shadowed.volume.read_bytes())
    targets = _variant(image, which)
    path = tmp_path / "variant.img"
    path.write_bytes(image)
    copies = vss.ShadowCopies(FileStream(path))
    mnt = tmp_path / "vss"
    mnt.mkdir()
    proc = subprocess.Popen(["vshadowmount", str(path), str(mnt)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            if os.path.ismount(mnt):
                break
            time.sleep(0.05)
        changed = 0
        for store, before in zip(copies.stores, plain.stores):
            ours = copies.open(store).read(0, store.volume_size)
            assert ours == (mnt / f"vss{store.index + 1}").read_bytes(), store.name
            was = plain.open(before).read(0, before.volume_size)
            changed += sum(ours[t:t + vss.BLOCK] != was[t:t + vss.BLOCK] for t in targets)
        assert changed  # the rule was used: a block it is about reads otherwise than before
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        proc.wait(timeout=30)


@pytest.mark.filterwarnings("ignore:Using `httpx`")
def test_web_history_links_to_shadow_copies(shadowed, tmp_path):
    """The web page's history links each version held by a shadow copy to that store's file,
    and the link opens."""
    import re

    from starlette.testclient import TestClient

    from rpfs.web.app import create_app

    repo = tmp_path / "repo"
    rpfs("init", repo)
    rpfs("backup", repo, shadowed.vm, "--vm", "files01", "--time", "2026-01-07T02:00:00Z")
    old = shadowed.manifest["stores"][0]["name"]
    with open_source(repo) as tree, TestClient(create_app(tree), base_url="http://127.0.0.1") as c:
        page = c.get("/history/files01/latest/volumes/shadow-p1/docs/report-1.bin")
        assert page.status_code == 200
        link = f"/browse/files01/2026-01-07T020000Z/volumes/shadow-p1.vss/{old}/docs/report-1.bin"
        assert link in re.findall(r'href="([^"]+)"', page.text)
        assert c.get(link).status_code == 200
