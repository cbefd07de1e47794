"""The fixture factory's output checked by independent readers.

sleuthkit (fls, icat, istat, mmls), libfsntfs (fsntfsinfo) and qemu-img must agree with
every manifest and every container: if they do, other layers can trust the manifests as
ground truth. Uses the cached small set (built on first use).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tools.fixtures import build, cache_key, path, spec
from tools.fixtures.disk import IMAGE_KINDS, plan_partitions

NT_EPOCH_NS = 11644473600 * 10**9


def _volume_names() -> list[str]:
    """Volume names straight from the description (no build needed to collect tests)."""
    out = []
    for d in spec.describe("small")["disks"]:
        if d["scheme"] == "none":
            out.append(f"{d['name']}-p0")
        else:
            out += [f"{d['name']}-p{p['number']}" for p in plan_partitions(d) if p.get("fs")]
    return out


VOLUMES = _volume_names()
DISKS = [d["name"] for d in spec.describe("small")["disks"]]


def sh(*cmd: str | os.PathLike, check: bool = True) -> str:
    r = subprocess.run([str(c) for c in cmd], capture_output=True)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))}: {r.stderr.decode(errors='replace')}")
    return r.stdout.decode("utf-8", errors="surrogateescape")


def tsk_args(fx, vol) -> list[str]:
    """sleuthkit's image and offset arguments for a volume, read from its raw disk."""
    d = fx.disks[vol.disk]
    sector = d.logical_sector_size
    return ["-b", str(sector), "-o", str(vol.offset // sector), str(d.raw)]


META = {"$MFT", "$MFTMirr", "$LogFile", "$Volume", "$AttrDef", "$Bitmap", "$Boot",
        "$BadClus", "$Secure", "$UpCase", "$Extend", "$OrphanFiles", "$MBR", "$FAT1", "$FAT2"}
LINE = re.compile(r"^(\S+) (\*? ?)(\d+(?:-\d+-\d+)?):\t(.*)$")


def fls(fx, vol) -> tuple[dict[str, str], dict[tuple[str, str], str]]:
    """Allocated names under the volume root: {path: address}, {(path, stream): address}."""
    files, streams = {}, {}
    for line in sh("fls", "-r", "-p", "-u", *tsk_args(fx, vol)).splitlines():
        m = LINE.match(line)
        assert m, line
        addr, p = m.group(3), m.group(4)
        if p.split("/")[0].split(":")[0] in META or "(Volume Label Entry)" in p:
            continue  # NTFS metadata files, sleuthkit's virtual entries
        if vol.fs == "ntfs" and ":" in p.rsplit("/", 1)[-1]:
            base, stream = p.rsplit(":", 1)
            base = base[:-2] if base.endswith("/.") else base  # a stream on a directory
            streams[("/" + base, stream)] = addr
        else:
            files["/" + p] = addr
    return files, streams


@pytest.fixture(scope="module")
def fx(small_fixtures):
    return small_fixtures


@pytest.fixture(scope="module")
def listings(fx):
    return {}


def listing(fx, listings, name):
    if name not in listings:
        listings[name] = fls(fx, fx.volumes[name])
    return listings[name]


# -- the API and the cache -------------------------------------------------------------

def test_api_shape(fx):
    assert set(fx.disks) == set(DISKS)
    assert set(fx.volumes) == set(VOLUMES)
    for d in fx.disks.values():
        assert d.raw.is_file() and d.raw.stat().st_size == d.size
        extra = {"vhdx-dynamic-32M-4kn"} if d.logical_sector_size == 4096 else set()
        assert set(d.images) == set(spec.describe("small")["images"]) | extra
        assert all(p.is_file() for p in d.images.values())
        assert d.scheme in ("gpt", "mbr", "none")
        for p in d.partitions:
            assert {"number", "offset", "size", "type", "fs", "volume"} <= set(p)
    for v in fx.volumes.values():
        assert v.image.stat().st_size == v.size
        assert v.manifest["volume"]["name"] == v.name
        part = next(p for p in fx.disks[v.disk].partitions if p["number"] == v.partition)
        assert (part["offset"], part["size"], part["volume"]) == (v.offset, v.size, v.name)
    assert fx.disks["sector4k"].logical_sector_size == 4096
    assert fx.volumes["sector4k-p0"].sector_size == 4096
    assert [fx.volumes[f"clusters-p{i + 1}"].cluster_size for i in range(8)] == \
        spec.CLUSTER_SIZES
    assert fx.volumes["system-p3"].dirty and fx.volumes["system-p3"].label == "Windows"


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RPFS_FIXTURE_CACHE", str(tmp_path))
    assert path("small") == tmp_path / f"small-{cache_key('small')}"
    monkeypatch.delenv("RPFS_FIXTURE_CACHE")
    assert path("small").parent == Path(__file__).resolve().parent.parent / ".cache" / "fixtures"


def test_cached_build_starts_no_tool(fx, monkeypatch):
    """A cached set is loaded, not rebuilt: no tool is started and its files stay as they are."""
    started = []
    real_init = subprocess.Popen.__init__

    def counting_init(self, *args, **kw):
        started.append(args[0] if args else kw.get("args"))
        real_init(self, *args, **kw)
    stamp = (fx.root / "fixtures.json").stat().st_mtime_ns
    monkeypatch.setattr(subprocess.Popen, "__init__", counting_init)
    again = build("small")
    monkeypatch.undo()
    assert started == []
    assert (fx.root / "fixtures.json").stat().st_mtime_ns == stamp
    assert again.root == fx.root == path("small")
    assert fx.root.name.endswith(cache_key("small"))
    out = sh(sys.executable, "-m", "tools.fixtures", "path", "small")
    assert out.strip() == str(fx.root)


def test_volume_image_is_the_disk_slice(fx):
    """v.image holds exactly the bytes of the partition inside the raw disk."""
    rng = random.Random(7)
    for v in fx.volumes.values():
        with open(v.image, "rb") as a, open(fx.disks[v.disk].raw, "rb") as b:
            for off in [0, v.size - 4096] + [rng.randrange(0, v.size // 512) * 512
                                             for _ in range(20)]:
                a.seek(off)
                b.seek(v.offset + off)
                assert a.read(4096) == b.read(4096), (v.name, off)


# -- partition tables --------------------------------------------------------------------

@pytest.mark.parametrize("disk", DISKS)
def test_mmls_agrees_with_partitions(fx, disk):
    d = fx.disks[disk]
    s = d.logical_sector_size
    if d.scheme == "none":
        assert sh("mmls", "-b", s, d.raw, check=False) == ""  # no table for sleuthkit to find
        return
    found = set()
    for line in sh("mmls", "-b", s, d.raw).splitlines():
        m = re.match(r"^\d+:\s+\d+(?::\d+)?\s+(\d+)\s+(\d+)\s+(\d+)\s", line)
        if m:  # a partition slot (not Meta, not unallocated)
            found.add((int(m.group(1)) * s, int(m.group(3)) * s))
    want = {(p["offset"], p["size"]) for p in d.partitions if p["type"] != "extended"}
    assert found == want
    if d.scheme == "mbr":
        out = sh("sfdisk", "--json", d.raw)
        types = {int(p["node"][len(str(d.raw)):]): p["type"]
                 for p in json.loads(out)["partitiontable"]["partitions"]}
        assert types == {p["number"]: {"basic": "7", "extended": "f"}[p["type"]]
                         for p in d.partitions}
    if d.scheme == "gpt":
        _check_gpt_with_sgdisk(d)


GPT_CODES = {"efi": "EF00", "msr": "0C01", "basic": "0700", "recovery": "2700"}


def _check_gpt_with_sgdisk(d):
    """sgdisk verifies the GPT (CRCs, backup, overlaps) and lists the types. For 4096-byte
    LBAs it needs a loop device with 4 KiB sectors (skipped where there is none)."""
    loop = None
    dev = str(d.raw)
    if d.logical_sector_size != 512:
        r = subprocess.run(["losetup", "--sector-size", str(d.logical_sector_size), "-r", "-f",
                            "--show", dev], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"no loop device for a {d.logical_sector_size}-byte-sector GPT check")
        dev = loop = r.stdout.strip()
    try:
        assert "No problems found" in sh("sgdisk", "-v", dev)
        out = sh("sgdisk", "-p", dev)
        for p in d.partitions:
            s = d.logical_sector_size
            first, last = p["offset"] // s, (p["offset"] + p["size"]) // s - 1
            assert re.search(rf"^\s+{p['number']}\s+{first}\s+{last}\s.*{GPT_CODES[p['type']]}",
                             out, re.M), (p, out)
    finally:
        if loop:
            subprocess.run(["losetup", "-d", loop])


# -- manifests against sleuthkit ---------------------------------------------------------

@pytest.mark.parametrize("name", VOLUMES)
def test_fls_lists_exactly_the_manifest(fx, listings, name):
    vol = fx.volumes[name]
    files, streams = listing(fx, listings, name)
    entries = vol.manifest["entries"]
    want = set(entries) - {"/"}
    got = set(files)
    assert got == want, (sorted(got - want)[:10], sorted(want - got)[:10])
    want_ads = {(p, s) for p, e in entries.items() for s in e.get("ads", {})}
    assert set(streams) == want_ads
    # hard links share an MFT entry
    for group in vol.manifest["hardlink_groups"]:
        assert len({files[p].split("-")[0] for p in group}) == 1, group


def _sample(entries: dict, features: dict, n: int, seed: int) -> list[str]:
    files = sorted(p for p, e in entries.items() if e["type"] == "file")
    special = [p for p in files if entries[p].get("compressed") or entries[p].get("sparse")
               or entries[p].get("ads") or entries[p].get("hardlinks")
               or entries[p]["size"] > 1 << 20]
    frag = features.get("fragmented", {}).get("path")
    special += [frag] if frag else []
    rest = [p for p in files if p not in special]
    return sorted(set(special) | set(random.Random(seed).sample(rest, min(n, len(rest)))))


@pytest.mark.parametrize("name", VOLUMES)
def test_icat_hashes_match(fx, listings, name):
    """Content hashes through sleuthkit: a sample of files (every compressed, sparse,
    fragmented, multi-link, large or ADS-bearing one) and every named stream."""
    vol = fx.volumes[name]
    files, streams = listing(fx, listings, name)
    m = vol.manifest
    entries = m["entries"]
    args = tsk_args(fx, vol)
    checked = 0
    for p in _sample(entries, m["features"], 150, 1):
        data = subprocess.run(["icat", *args, files[p]], capture_output=True, check=True).stdout
        assert len(data) == entries[p]["size"], p
        assert hashlib.sha256(data).hexdigest() == entries[p]["sha256"], p
        checked += 1
        for s, meta in entries[p].get("ads", {}).items():
            data = subprocess.run(["icat", *args, streams[(p, s)]], capture_output=True,
                                  check=True).stdout
            assert (len(data), hashlib.sha256(data).hexdigest()) == (meta["size"], meta["sha256"])
    for (p, s), addr in streams.items():  # streams on directories too
        meta = entries[p]["ads"][s]
        data = subprocess.run(["icat", *args, addr], capture_output=True, check=True).stdout
        assert hashlib.sha256(data).hexdigest() == meta["sha256"], (p, s)
    assert checked >= min(20, sum(e["type"] == "file" for e in entries.values()))


def _istat(fx, vol, addr: str) -> str:
    return sh("istat", *tsk_args(fx, vol), addr.split("-")[0])


def _runs(istat_out: str) -> int:
    """Runs of the unnamed $DATA attribute from istat's cluster list."""
    clusters, on = [], False
    for line in istat_out.splitlines():
        if line.startswith("Type: $DATA") and "Name: N/A" in line:
            on = True
            continue
        if on:
            if not re.match(r"^[\d ]+$", line.strip() or "x"):
                break
            clusters += [int(x) for x in line.split()]
    return 1 + sum(1 for a, b in zip(clusters, clusters[1:]) if b != a + 1)


@pytest.mark.parametrize("name", [v for v in VOLUMES if not v.endswith("p1") or
                                  not v.startswith("system")])
def test_istat_flags(fx, listings, name):
    """Compression, sparseness, reparse points, fragmentation and $ATTRIBUTE_LIST are
    really there (as the manifest claims)."""
    vol = fx.volumes[name]
    files, _ = listing(fx, listings, name)
    entries = vol.manifest["entries"]
    n_compressed = 0
    for p, e in entries.items():
        if e["type"] == "file" and e.get("compressed") and e["size"] > 4096:
            data_line = next(line for line in _istat(fx, vol, files[p]).splitlines()
                             if line.startswith("Type: $DATA") and "Name: N/A" in line)
            assert "Compressed" in data_line, (p, data_line)
            n_compressed += 1
        if e["type"] == "file" and e.get("sparse") and e["size"] > 4096:
            out = _istat(fx, vol, files[p])
            assert "Sparse" in out, p
        if e.get("attributes_set"):
            out = _istat(fx, vol, files[p])
            flags = out.split("$STANDARD_INFORMATION Attribute Values:", 1)[1].split("\n")[1]
            for bit, word in ((1, "Read Only"), (2, "Hidden"), (4, "System")):
                assert (word in flags) == bool(e["attributes_set"] & bit), (p, flags)
        if e["type"] in ("symlink", "junction"):
            out = _istat(fx, vol, files[p])
            assert "Reparse Point" in out and "$REPARSE_POINT" in out, p
            data = subprocess.run(["icat", *tsk_args(fx, vol), files[p].split("-")[0] + "-192"],
                                  capture_output=True, check=True).stdout
            assert data.hex() == e["reparse_data_hex"], p
    assert vol.manifest["volume"]["compression_supported"] == (vol.cluster_size <= 4096)
    has_compressed_dir = any(e["type"] == "dir" and e.get("compressed")
                             for e in entries.values())
    assert has_compressed_dir == (n_compressed > 0)
    if vol.cluster_size > 4096:
        assert not has_compressed_dir
    feats = vol.manifest["features"]
    if "fragmented" in feats:
        out = _istat(fx, vol, files[feats["fragmented"]["path"]])
        assert _runs(out) >= feats["fragmented"]["min_runs"]
    for p in feats.get("attribute_list", []):
        assert "$ATTRIBUTE_LIST" in _istat(fx, vol, files[p]), p
    if "big_dir" in feats:
        n = sum(1 for f in files if f.startswith(feats["big_dir"]["path"] + "/"))
        assert n == feats["big_dir"]["entries"] >= 50_000


def test_dirty_flag_and_serial(fx):
    for v in fx.volumes.values():
        if v.fs != "ntfs":
            continue
        info = subprocess.run(["icat", *tsk_args(fx, v), "3-112"], capture_output=True,
                              check=True).stdout  # $VOLUME_INFORMATION
        assert bool(int.from_bytes(info[10:12], "little") & 1) == v.dirty, v.name
        out = sh("fsstat", *tsk_args(fx, v))
        assert f"Volume Serial Number: {v.serial.upper()}" in out
        assert f"Volume Name: {v.label}" in out


def _fsntfs_times(image: Path, inode: str) -> dict[str, int]:
    """$STANDARD_INFORMATION times of an MFT entry, by libfsntfs (sleuthkit prints dates
    outside 1970..2106 wrongly)."""
    import datetime as dt
    out = sh("fsntfsinfo", "-E", inode, image)
    si = out.split("$STANDARD_INFORMATION", 1)[1].split("Attribute:", 1)[0]
    got = {}
    for key, label in (("created", "Creation time"), ("modified", "Modification time"),
                       ("accessed", "Access time")):
        m = re.search(rf"^\s*{label}\s*: (\w+ \d+, \d+ \d+:\d+:\d+)\.(\d{{9}}) UTC", si, re.M)
        whole = dt.datetime.strptime(m.group(1), "%b %d, %Y %H:%M:%S").replace(
            tzinfo=dt.timezone.utc)
        secs = (whole - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(seconds=1)
        got[key] = secs * 10**9 + int(m.group(2))
    return got


def test_times_as_set(fx, listings):
    vol = fx.volumes["system-p3"]
    files, _ = listing(fx, listings, "system-p3")
    timed = {p: e["times"] for p, e in vol.manifest["entries"].items() if "times" in e}
    assert len(timed) >= 5 and any(t["created"] < 0 for t in timed.values())
    for p, t in timed.items():
        assert _fsntfs_times(vol.image, files[p].split("-")[0]) == t, p


def test_fat_efi_partition(fx, listings):
    v = fx.volumes["system-p1"]
    assert v.fs == "fat32"
    assert "FAT32" in sh("fsstat", *tsk_args(fx, v))
    files, _ = listing(fx, listings, "system-p1")
    assert "/EFI/Microsoft/Boot/bootmgfw.efi" in files


# -- containers --------------------------------------------------------------------------

@pytest.mark.parametrize("disk", DISKS)
def test_containers_equal_raw(fx, disk):
    d = fx.disks[disk]
    for kind, img in d.images.items():
        fmt = IMAGE_KINDS[kind][0]
        if kind.endswith("-4kn"):
            continue  # qemu cannot open VHDX with 4096-byte sectors: see the next test
        sh("qemu-img", "compare", "-q", "-f", "raw", "-F", fmt, d.raw, img)
        info = json.loads(sh("qemu-img", "info", "--output=json", "-f", fmt, img))
        assert info["virtual-size"] == d.size, kind
        if kind.startswith(("vhdx", "vhd-")):  # libvhdi reads them as the same disk type
            out = sh("vhdiinfo", img)
            assert re.search(rf"Disk type\s*: {'Dynamic' if 'dynamic' in kind else 'Fixed'}",
                             out), (kind, out)
            assert f"({d.size} bytes)" in out


@pytest.mark.parametrize("disk", ["sector4k", "gpt4k"])
def test_4kn_vhdx_through_libvhdi(fx, tmp_path, disk):
    """The 4Kn VHDX declares 4096-byte sectors and libvhdi reads it as the raw disk."""
    d = fx.disks[disk]
    img = d.images["vhdx-dynamic-32M-4kn"]
    out = sh("vhdiinfo", img)
    assert re.search(r"Bytes per sector\s*: 4096 bytes", out), out
    mnt = tmp_path / "m"
    mnt.mkdir()
    sh("vhdimount", img, mnt)
    try:
        with open(mnt / "vhdi1", "rb") as a, open(d.raw, "rb") as b:
            while True:
                x, y = a.read(1 << 20), b.read(1 << 20)
                assert x == y
                if not x:
                    break
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)


# -- the VM folder -----------------------------------------------------------------------

def test_vm_folder_layout_and_changes(fx, tmp_path):
    s1, s2 = fx.vm_states
    guid = spec.describe("small")["vm"]["guid"].upper()
    for s in (s1, s2):
        assert sorted(p.name for p in (s / "Virtual Hard Disks").iterdir()) == \
            ["data.vhdx", "system.vhdx"]
        assert sorted(p.name for p in (s / "Virtual Machines").iterdir()) == \
            [f"{guid}.vmcx", f"{guid}.vmgs", f"{guid}.vmrs"]
    assert (s1 / "Virtual Machines" / f"{guid}.vmcx").read_bytes() == \
        (s2 / "Virtual Machines" / f"{guid}.vmcx").read_bytes()
    assert (s1 / "Virtual Machines" / f"{guid}.vmrs").read_bytes() != \
        (s2 / "Virtual Machines" / f"{guid}.vmrs").read_bytes()
    ch = fx.vm_changes
    assert ch["disks"]["data"] == {"changed": False}
    sysd = ch["disks"]["system"]
    assert sysd["changed"] and 0 < sysd["changed_bytes_4k"] <= sysd["changed_bytes_1M"]
    vol = ch["volumes"]["system-p3"]
    assert vol["added"] and vol["deleted"] and vol["modified"]
    # state 2 through sleuthkit: the names are the state-2 manifest's, changed files hash right
    raw2 = tmp_path / "system2.raw"
    sh("qemu-img", "convert", "-f", "vhdx", "-O", "raw", s2 / "Virtual Hard Disks" / "system.vhdx",
       raw2)
    m2 = json.loads((fx.root / vol["manifest_state2"]).read_text())
    v = fx.volumes["system-p3"]
    args = ["-o", str(v.offset // 512), str(raw2)]
    got = {}
    for line in sh("fls", "-r", "-p", "-u", *args).splitlines():
        m = LINE.match(line)
        p = m.group(4)
        if p.split("/")[0] not in META and ":" not in p.rsplit("/", 1)[-1]:
            got["/" + p] = m.group(3)
    assert set(got) == set(m2["entries"]) - {"/"}
    for p in vol["added"] + vol["modified"]:
        e = m2["entries"][p]
        if e["type"] == "file":
            data = subprocess.run(["icat", *args, got[p]], capture_output=True, check=True).stdout
            assert hashlib.sha256(data).hexdigest() == e["sha256"], p
    # like Hyper-V, the state-2 VHDX kept unchanged blocks where they were: a store chunking
    # the file at aligned offsets sees only the changed MiBs (plus VHDX headers, BAT, log)
    if sysd["vhdx_updated_in_place"]:
        differ = 0
        with open(s1 / "Virtual Hard Disks" / "system.vhdx", "rb") as a, \
                open(s2 / "Virtual Hard Disks" / "system.vhdx", "rb") as b:
            while True:
                x, y = a.read(1 << 20), b.read(1 << 20)
                if not x and not y:
                    break
                differ += x != y
        assert 0 < differ <= sysd["changed_blocks_1M"] + 4, (differ, sysd)
    # the unchanged data disk is the very same file in both states
    assert (s1 / "Virtual Hard Disks" / "data.vhdx").stat().st_ino == \
        (s2 / "Virtual Hard Disks" / "data.vhdx").stat().st_ino


# -- the manifests themselves and the factory's own guarantees ------------------------------

@pytest.mark.parametrize("name", VOLUMES)
def test_manifest_is_consistent(fx, name):
    m = fx.volumes[name].manifest
    entries = m["entries"]
    assert entries["/"]["type"] == "dir"
    for p, e in entries.items():
        assert p == "/" or (p.startswith("/") and not p.endswith("/")), p
        if p != "/":
            assert entries[p.rsplit("/", 1)[0] or "/"]["type"] == "dir", p
        assert e["type"] in ("file", "dir", "symlink", "junction"), p
        if e["type"] == "file":
            assert len(e["sha256"]) == 64 and e["size"] >= 0, p
            for o, n in e.get("data_ranges", []):
                assert 0 <= o and o + n <= e["size"], p
        for s in e.get("ads", {}).values():
            assert len(s["sha256"]) == 64
        for t in e.get("times", {}).values():
            assert t % 100 == 0, p
        if "hardlinks" in e:
            assert p in e["hardlinks"] and all(entries[q] == e for q in e["hardlinks"])
        if e["type"] in ("symlink", "junction"):
            assert e["target"].startswith("/")
    for group in m["hardlink_groups"]:
        assert len(group) >= 2 and all(p in entries for p in group)


def test_reparse_points_read_by_libfsntfs(fx, listings):
    """An independent reader decodes the reparse buffers the factory built by hand."""
    vol = fx.volumes["system-p3"]
    files, _ = listing(fx, listings, "system-p3")
    links = {p: e for p, e in vol.manifest["entries"].items()
             if e["type"] in ("symlink", "junction")}
    assert {e["type"] for e in links.values()} == {"symlink", "junction"}
    for p, e in links.items():
        out = sh("fsntfsinfo", "-E", files[p].split("-")[0], vol.image)
        tag = "0xa000000c" if e["type"] == "symlink" else "0xa0000003"
        assert re.search(rf"Tag\s*: {tag}", out), (p, out)
        assert f"Substitute name\t\t\t: {e['substitute_name']}" in out, (p, out)
        assert f"Print name\t\t\t: {e['print_name']}" in out, (p, out)


def test_trees_are_deterministic():
    """Same description, same operations: the cache key may rely on it."""
    from tools.fixtures.trees import build_tree
    knobs = spec.describe("small")["knobs"]
    a = build_tree("rich", knobs, 5).describe()
    b = build_tree("rich", knobs, 5).describe()
    assert a == b and a != build_tree("rich", knobs, 6).describe()


def test_failed_build_leaves_nothing(tmp_path, monkeypatch):
    """An interrupted build leaves neither a set nor its temporary directory."""
    import tools.fixtures as fixtures
    import tools.fixtures.factory as factory

    def broken(desc, out, key):
        (out / "disks").mkdir(parents=True)
        (out / "disks" / "half.raw").write_bytes(b"x")
        raise KeyboardInterrupt

    monkeypatch.setenv("RPFS_FIXTURE_CACHE", str(tmp_path))
    monkeypatch.setattr(factory, "build_set", broken)
    with pytest.raises(KeyboardInterrupt):
        fixtures.build("small")
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == []


def test_content_is_exact_and_deterministic():
    """Generated contents have exactly their size, the same bytes every time, and the hash
    the manifest would record, whatever their size (chunk boundaries included)."""
    from hypothesis import given, settings, strategies as st

    from tools.fixtures.content import CHUNK, Content

    @settings(max_examples=60, deadline=None)
    @given(kind=st.sampled_from(["random", "text", "zero"]),
           size=st.one_of(st.integers(0, 5000), st.sampled_from([CHUNK - 1, CHUNK, CHUNK + 1])),
           seed=st.integers(0, 1 << 30))
    def check(kind, size, seed):
        c = Content(kind, size, seed)
        data = c.bytes()
        assert len(data) == size
        assert data == Content(kind, size, seed).bytes()
        assert c.sha256() == hashlib.sha256(data).hexdigest()
        if kind == "zero":
            assert data == bytes(size)

    check()


def test_killed_build_leftovers_are_removed(tmp_path, monkeypatch):
    """A build killed outright leaves its temp dir; the next build of the set removes it."""
    import tools.fixtures as fixtures
    import tools.fixtures.factory as factory

    monkeypatch.setenv("RPFS_FIXTURE_CACHE", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = tmp_path / f".tmp-{path('small').name}-{dead.pid}"
    (orphan / "disks").mkdir(parents=True)

    def broken(desc, out, key):
        raise KeyboardInterrupt

    monkeypatch.setattr(factory, "build_set", broken)
    with pytest.raises(KeyboardInterrupt):
        fixtures.build("small")
    assert not orphan.exists()


def test_security_descriptors_read_by_ntfs3g(fx, listings, tmp_path):
    """Entries given their own descriptor get their own $Secure entry (sleuthkit: a security
    id of their own) and ntfs-3g, mounted read-only, returns the very bytes."""
    vol = fx.volumes["system-p3"]
    files, _ = listing(fx, listings, "system-p3")
    secured = {p: e["security"] for p, e in vol.manifest["entries"].items() if "security" in e}
    assert len(secured) >= 3
    ids = {p: re.search(r"Security ID: (\d+)", _istat(fx, vol, files[p])).group(1)
           for p in list(secured) + ["/Windows"]}
    assert len(set(ids.values())) == len(ids), ids
    mnt = tmp_path / "ro"
    mnt.mkdir()
    sh("ntfs-3g", "-o", "ro", vol.image, mnt)
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(1 << 16)
        for p, sd in secured.items():
            # one big buffer: ntfs-3g answers EIO, not ERANGE, to a buffer too small (as
            # os.getxattr's first try is)
            n = libc.getxattr((str(mnt) + p).encode(), b"system.ntfs_acl", buf, len(buf))
            assert n > 0, (p, os.strerror(ctypes.get_errno()))
            assert buf.raw[:n].hex() == sd["descriptor_hex"], p
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)


def test_stale_sets_are_dropped_only_when_unused(tmp_path, monkeypatch):
    import tools.fixtures as fixtures

    monkeypatch.setenv("RPFS_FIXTURE_CACHE", str(tmp_path))
    old = time.time() - 2 * fixtures.STALE_AFTER_S

    def fake(name, age):
        d = tmp_path / f"{name}-{hashlib.sha256(name.encode() + str(age).encode()).hexdigest()[:16]}"
        d.mkdir()
        (d / "fixtures.json").write_text("{}")
        os.utime(d / "fixtures.json", (age, age))
        return d

    stale_small, stale_large = fake("small", old), fake("large", old)
    recent = fake("small", time.time())
    other = tmp_path / "notaset-0123456789abcdef"
    other.mkdir()
    keep = path("small")
    fixtures._drop_stale("small", keep)
    assert not stale_small.exists() and not stale_large.exists()
    assert recent.exists() and other.exists()
