"""A Linux VM end to end (issue 18's "done when"): an ext4 root on GPT, an LVM volume group
across two disks holding ext4 and XFS logical volumes, a Btrfs data disk, backed up twice;
every file read through the CLI, the mount and the web page, restored, and found
(find/history/.versions), each checked against the kernel's own mount of the same file
system image. Volumes of a file system whose reader is not in ``POSIX_READERS`` yet are
not expected to be listed (they hold no readable file system for rpfs)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rpfs.source import open_source
from rpfs.tree import POSIX_READERS
from tests.helpers.cli import rpfs
from tests.helpers.posix_oracle import (
    differences, kernel_mount, kernel_tree, link_groups, node_tree, without,
)
from tools.fixtures import linux

RP1, RP2 = "2026-11-01T020000Z", "2026-11-02T020000Z"
READER = {"ext4": "ext4_reader", "xfs": "xfs_reader", "btrfs": "btrfs_reader"}


@pytest.fixture(scope="module")
def vm():
    try:
        return linux.image("vm")
    except linux.Unavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def meta(vm):
    return json.loads((vm / "vm.json").read_text())


@pytest.fixture(scope="module")
def readable(meta):
    """volume -> (fs, images by state) for the volumes rpfs has a reader for."""
    return {name: v for name, v in meta["volumes"].items() if READER[v["fs"]] in POSIX_READERS}


@pytest.fixture(scope="module")
def repo(vm, tmp_path_factory):
    path = tmp_path_factory.mktemp("linuxvm") / "repo"
    rpfs("init", path)
    rpfs("backup", path, vm / "state1" / "linux01", "--vm", "linux01", "--time", "2026-11-01T02:00:00Z")
    rpfs("backup", path, vm / "state2" / "linux01", "--vm", "linux01", "--time", "2026-11-02T02:00:00Z")
    return path


@pytest.fixture(scope="module")
def oracle(vm, readable):
    """(volume, state) -> the kernel's view of that volume's image."""
    out = {}
    for name, v in readable.items():
        for state, image in enumerate(v["images"], 1):
            if image in [v["images"][s - 1] for s in range(1, state)]:
                out[(name, state)] = out[(name, 1)]
                continue
            with kernel_mount(vm / "images" / image, fstype=v["fs"]) as mnt:
                out[(name, state)] = kernel_tree(mnt)
    return out


def test_every_volume_is_listed(repo, meta, readable):
    with open_source(repo) as tree:
        names = {n.name for n in tree.resolve(f"/linux01/{RP2}/volumes").iterdir()}
    assert set(readable) <= names
    assert "root-p2" in readable and "lvm-vmvg-home" in readable
    assert not any(n.startswith("root-p1") for n in names)      # BIOS boot: no file system


def test_cli_reads_every_file_as_the_kernel(repo, readable, oracle):
    with open_source(repo) as tree:
        for name in readable:
            for state, rp in ((1, RP1), (2, RP2)):
                ours = node_tree(tree.resolve(f"/linux01/{rp}/volumes/{name}"))
                assert differences(oracle[(name, state)], ours) == [], (name, rp)


def test_find_history_and_versions(repo, readable, oracle):
    found = rpfs("find", repo, "*", "--vm", "linux01", "--json").stdout.decode(
        "utf-8", "surrogateescape").splitlines()      # names as os.fsdecode gives them
    rows = [json.loads(x) for x in found]
    kinds = {"file": "file", "dir": "dir", "symlink": "symlink"}
    for name in readable:
        for state, rp in ((1, RP1), (2, RP2)):
            # the index holds device nodes, FIFOs and sockets as (empty) files
            want = {(p, kinds.get(e["kind"], "file"),
                     e.get("size", 0) if e["kind"] not in ("dir", "symlink") else None)
                    for p, e in oracle[(name, state)].items()}
            got = {(r["path"], r["type"], r["size"] if r["type"] == "file" else None)
                   for r in rows if r["volume"] == name and r["recovery_point"] == rp
                   and not r["path"].startswith("/lost+found")}
            assert got == want, (name, rp, sorted(map(str, got ^ want))[:10])
    hist = json.loads(rpfs("history", repo, f"/linux01/latest/volumes/root-p2/home/alice/notes.txt",
                           "--json").stdout)
    assert [v["recovery_points"] for v in hist] == [[RP1], [RP2]]      # --json: the versions
    out = rpfs("history", repo, "/linux01/latest/volumes/root-p2/etc/motd").stdout.decode()
    assert f"absent in: {RP1}" in out
    with open_source(repo) as tree:
        d = tree.resolve("/linux01/.versions/root-p2/home/alice/notes.txt")
        versions = {n.name: n.open().read(0, 1 << 20) for n in d.iterdir()}
        assert versions[RP2] == b"a second version of the notes\n"
        assert versions[RP1].startswith(b"remember the milk")


def test_restore_equals_the_kernel(repo, readable, oracle, tmp_path):
    dest = tmp_path / "out"
    r = rpfs("restore", repo, f"/linux01/latest/volumes/root-p2", dest, "--xattrs", "--devices",
             "--json")
    result = json.loads(r.stdout)
    assert result["skipped"] == ["%s/root-p2/dev/socket (socket)" % dest]
    restored = kernel_tree(dest / "root-p2", skip=("lost+found",))
    want = oracle[("root-p2", 2)]
    assert link_groups(restored) == link_groups(want)
    drop = ("atime", "ctime", "ino")
    assert differences(without(want, fields=drop, dir_size=False, kinds=("socket",)),
                       without(restored, fields=drop, dir_size=False)) == []


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_mount_shows_what_the_guest_had(repo, readable, oracle, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    rpfs("mount", repo, mp)
    try:
        for name in readable:
            seen = kernel_tree(mp / "linux01" / "latest" / "volumes" / name)
            want = oracle[(name, 2)]
            assert link_groups(seen) == link_groups(want)
            assert differences(without(want, fields=("ino",)), without(seen, fields=("ino",))) == []
        v = mp / "linux01" / ".versions" / "root-p2" / "home" / "alice" / "notes.txt"
        assert (v / RP2).read_bytes() == b"a second version of the notes\n"
    finally:
        rpfs("umount", mp, check=False)


def test_web_page_serves_the_files(repo, oracle, vm, tmp_path):
    import httpx

    log = tmp_path / "serve.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rpfs", "serve", str(repo), "--listen",
                                 "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=err)
    try:
        for _ in range(600):
            text = log.read_text(errors="replace")
            if " at http://" in text:
                base = text.split(" at ", 1)[1].split("/ ", 1)[0]
                break
            assert proc.poll() is None, text
            time.sleep(0.1)
        else:
            raise AssertionError("rpfs serve did not start")
        with httpx.Client(base_url=base, timeout=60) as c:
            folder = "/linux01/latest/volumes/root-p2/home/alice"
            listing = c.get("/api/ls", params={"path": folder}).json()
            want = {p.rsplit("/", 1)[1] for p in oracle[("root-p2", 2)]
                    if p.rsplit("/", 1)[0] == "/home/alice"}
            assert {e["name"] for e in listing} == want
            notes = next(e for e in listing if e["name"] == "notes.txt")
            assert (notes["mode"], notes["uid"], notes["gid"]) == ("-rw-r--r--", 1000, 1000)
            page = c.get(f"/browse{folder}")
            assert page.status_code == 200 and "notes-hardlink" in page.text
            page = c.get(f"/browse{folder}/notes.txt")
            assert page.status_code == 200
            found = c.get("/api/find", params={"pattern": "motd", "vm": "linux01"}).json()["results"]
            assert [(f["recovery_point"], f["volume"], f["path"]) for f in found] == [
                (RP2, "root-p2", "/etc/motd")]
            for rel in ("/home/alice/big.bin", "/home/alice/notes.txt", "/sizes/s100000"):
                r = c.get("/api/download", params={"path": f"/linux01/latest/volumes/root-p2{rel}"})
                assert r.status_code == 200
                assert hashlib.sha256(r.content).hexdigest() == oracle[("root-p2", 2)][rel]["sha256"]
    finally:
        proc.terminate()
        proc.wait(30)


def test_export_raw_of_a_logical_volume(vm, repo, tmp_path):
    """``export --format raw`` of an LV striped over two disks gives the file system image
    that was written to it, byte for byte (holes kept as holes)."""
    out = tmp_path / "srv.img"
    rpfs("export", repo, "/linux01/latest/volumes/lvm-vmvg-srv", out, "--format", "raw")
    want = vm / "images" / "srv.img"
    assert out.stat().st_size == want.stat().st_size
    with open(out, "rb") as a, open(want, "rb") as b:
        while True:
            x, y = a.read(1 << 20), b.read(1 << 20)
            assert x == y
            if not x:
                break
    assert out.stat().st_blocks * 512 < out.stat().st_size // 4     # sparse


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_cp_r_of_ext4_costs_few_fuse_requests_per_file(tmp_path):
    """The FUSE requests of ``cp -r`` of an ext4 directory of 400 files, counted in libfuse's
    debug log (a count, never a time): once cp stats the first child, the mount computes
    the attributes of each listing batch it sends (readdirplus), so per file one OPEN, one
    READ and one RELEASE, and no LOOKUP or GETATTR (as for NTFS, tests/test_fuse_ops.py)."""
    import collections
    import re

    try:
        img = linux.image("ext4") / "ext4.img"
    except linux.Unavailable as e:
        pytest.skip(str(e))
    mp, log = tmp_path / "mnt", tmp_path / "fuse.log"
    mp.mkdir()
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rpfs", "mount", "-f", "--debug-fuse",
                                 str(img), str(mp)], stdout=subprocess.DEVNULL, stderr=err)
    try:
        for _ in range(600):
            if os.path.ismount(mp) or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert os.path.ismount(mp), log.read_text(errors="replace")[-2000:]
        start = log.stat().st_size
        subprocess.run(["cp", "-r", str(mp / "volumes" / "ext4-p0" / "dense"),
                        str(tmp_path / "out")], check=True)
        end = log.stat().st_size
    finally:
        rpfs("umount", mp, check=False)
        proc.wait(timeout=60)
    with open(log, "rb") as f:
        f.seek(start)
        counts = {k.decode(): v for k, v in
                  collections.Counter(re.findall(rb"opcode: (\w+)", f.read(end - start))).items()}
    assert len(os.listdir(tmp_path / "out")) == 400
    assert counts.get("OPEN", 0) <= 400 and counts.get("RELEASE", 0) <= 400, counts
    assert counts.get("READ", 0) <= 400, counts
    assert counts.get("GETATTR", 0) + counts.get("LOOKUP", 0) <= 12, counts
