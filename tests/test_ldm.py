"""Windows dynamic disks (issue 19, LDM): a VM whose four disks hold one disk group with a
simple, spanned, striped, mirrored and RAID-5 volume (NTFS inside each, made by mkntfs and
ntfs-3g; tools/fixtures/ldm.py). Every file reads equal to the manifest through the CLI, the
mount and restore, also with the disk holding a plex of the mirror and a column of the
RAID-5 removed; ldmtool (libldm) reads back every group and volume the factory writes; a
damaged database is a typed error for what it holds, never a hang."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from formats import ldm
from formats.bitlocker.keys import KeyRing
from streams.errors import FormatError, RpfsError
from streams.stream import BytesStream, FileStream
from rpfs.source import open_source
from tests.helpers.cli import rpfs
from tools.fixtures import ldm as factory

RP = "2026-11-01T020000Z"
DISKS = "Virtual Hard Disks"


@pytest.fixture(scope="module")
def vm() -> Path:
    return factory.vm()


@pytest.fixture(scope="module")
def manifest(vm) -> dict:
    return json.loads((vm / "manifest.json").read_text())


def _vm_without(vm: Path, dest: Path, *missing: str) -> Path:
    """A copy of the VM folder (hard links) without the named disks."""
    folder = dest / "dyn01"
    (folder / DISKS).mkdir(parents=True)
    for f in (vm / "dyn01" / DISKS).iterdir():
        if f.stem not in missing:
            os.link(f, folder / DISKS / f.name)
    return folder


@pytest.fixture(scope="module")
def keys(manifest, tmp_path_factory) -> Path:
    """The keys file a user gives with --keys: the recovery password of ldm-Secure."""
    path = tmp_path_factory.mktemp("ldmkeys") / "keys.txt"
    path.write_text(manifest["volumes"]["ldm-Secure"]["recovery_password"] + "\n")
    return path


@pytest.fixture(scope="module")
def repo(vm, tmp_path_factory) -> Path:
    """Two VMs backed up: ``dyn01`` whole and ``dyn01-degraded`` without disk4."""
    tmp = tmp_path_factory.mktemp("ldm")
    path = tmp / "repo"
    rpfs("init", path)
    rpfs("backup", path, vm / "dyn01", "--vm", "dyn01", "--time", "2026-11-01T02:00:00Z")
    degraded = _vm_without(vm, tmp / "degraded", "disk4")
    rpfs("backup", path, degraded, "--vm", "dyn01-degraded", "--time", "2026-11-01T02:00:00Z")
    return path


def _files(manifest: dict, volume: str):
    return [(p, e) for p, e in manifest["volumes"][volume]["entries"].items()
            if e["type"] == "file"]


READABLE_WITHOUT_DISK4 = ["ldm-Simple", "ldm-Spanned", "ldm-Striped", "ldm-Mirror", "ldm-Raid5"]


# -- the factory against libldm ------------------------------------------------------------


def test_ldmtool_reads_back_the_group_and_every_volume(vm, manifest, keys):
    if not shutil.which("ldmtool"):
        pytest.skip("ldmtool not installed")
    devs = [a for i in range(1, 5) for a in ("-d", str(vm / "raw" / f"disk{i}.raw"))]

    def show(*args):
        r = subprocess.run(["ldmtool", *devs, *args], capture_output=True, text=True, check=True)
        return json.loads(r.stdout)

    guid = manifest["disk_group_guid"]
    assert show("scan") == [guid]
    group = show("show", "diskgroup", guid)
    assert group["name"] == manifest["disk_group"]
    assert group["disks"] == ["Disk1", "Disk2", "Disk3", "Disk4"]
    want = {n.removeprefix("ldm-"): v["type"] for n, v in manifest["volumes"].items()}
    assert sorted(group["volumes"]) == sorted(want)
    types = {"RAID5": "raid5"}
    with open_source(vm / "dyn01", keys=KeyRing.load(keys)) as tree:
        for name, kind in want.items():
            vol = show("show", "volume", guid, name)
            assert types.get(vol["type"], vol["type"]) == kind
            ours = tree.resolve(f"/volumes/ldm-{name}").info()["ldm"]
            assert ours["type"] == kind and ours["state"] == "healthy"
            assert vol["size"] * 512 == ours["size"]
            assert vol["chunk-size"] * 512 == ours.get("chunk_size", 0)
            parts = [p["partition"] for c in ours["components"] for p in c["partitions"]]
            assert sorted(vol["partitions"]) == sorted(parts)


# -- reading the volumes -------------------------------------------------------------------


def test_every_volume_is_listed_with_its_layout(repo, manifest):
    with open_source(repo) as tree:
        vols = tree.resolve(f"/dyn01/{RP}/volumes")
        assert {n.name for n in vols.iterdir()} == set(manifest["volumes"])
        info = tree.resolve(f"/dyn01/{RP}/volumes/ldm-Raid5").info()["ldm"]
        assert info["disk_group"] == "dyn01-Dg0" and info["chunk_size"] == 65536
        assert [p["disk"] for p in info["components"][0]["partitions"]] == ["Disk2", "Disk3", "Disk4"]
        disk = tree.resolve(f"/dyn01/{RP}/disks/disk4.raw").info()
        assert disk["partition_scheme"] == "gpt" and disk["ldm"]["disk"] == "Disk4"
        assert disk["ldm"]["volumes"][-3:] == ["ldm-Mirror", "ldm-Raid5", "ldm-Secure"]


def _check_restored(root: Path, manifest: dict, volume: str) -> None:
    for path, e in manifest["volumes"][volume]["entries"].items():
        p = root / path.lstrip("/")
        if e["type"] == "dir":
            assert p.is_dir(), (volume, path)
        else:
            assert hashlib.sha256(p.read_bytes()).hexdigest() == e["sha256"], (volume, path)


def test_restore_reads_every_file_as_written(repo, manifest, keys, tmp_path):
    for vm_name, volumes in (("dyn01", list(manifest["volumes"])),
                             ("dyn01-degraded", READABLE_WITHOUT_DISK4)):
        for volume in volumes:
            dest = tmp_path / vm_name / volume
            rpfs("restore", repo, f"/{vm_name}/{RP}/volumes/{volume}", dest, "--keys", keys)
            _check_restored(dest / volume, manifest, volume)


def test_cat_and_ls(repo, manifest, keys):
    for volume in manifest["volumes"]:
        e = manifest["volumes"][volume]["entries"]["/random.bin"]
        got = rpfs("cat", repo, f"/dyn01/{RP}/volumes/{volume}/random.bin", "--keys", keys).stdout
        assert hashlib.sha256(got).hexdigest() == e["sha256"], volume
    listing = rpfs("ls", repo, f"/dyn01/{RP}/volumes/ldm-Mirror/docs").stdout.decode()
    assert "readme.txt" in listing and "file39.txt" in listing


def test_the_index_finds_files_on_dynamic_volumes(repo, manifest):
    rows = [json.loads(x) for x in rpfs("find", repo, "readme.txt", "--vm", "dyn01",
                                        "--json").stdout.splitlines()]
    found = {r["volume"] for r in rows if r["path"] == "/docs/readme.txt"}
    # the BitLocker one was locked when the backup indexed (no keys given to backup)
    assert found == set(manifest["volumes"]) - {"ldm-Secure"}


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_mount_shows_every_file(repo, manifest, keys, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    rpfs("mount", repo, mp, "--keys", keys)
    try:
        for vm_name, volumes in (("dyn01", list(manifest["volumes"])),
                                 ("dyn01-degraded", READABLE_WITHOUT_DISK4)):
            for volume in volumes:
                for path, e in _files(manifest, volume):
                    data = (mp / vm_name / RP / "volumes" / volume / path.lstrip("/")).read_bytes()
                    assert hashlib.sha256(data).hexdigest() == e["sha256"], (vm_name, volume, path)
        broken = mp / "dyn01-degraded" / RP / "volumes" / [
            v for v in manifest["volumes"] if v.startswith("ldm-LongName")][0]
        with pytest.raises(OSError):
            os.listdir(broken)
    finally:
        rpfs("umount", mp, check=False)


def test_bitlocker_in_a_dynamic_volume(repo, keys):
    locked = rpfs("ls", repo, f"/dyn01/{RP}/volumes/ldm-Secure", check=False)
    assert locked.returncode != 0 and "BitLocker volume is locked" in locked.stderr.decode()
    info = json.loads(rpfs("info", repo, f"/dyn01/{RP}/volumes/ldm-Secure", "--json",
                           "--keys", keys).stdout)
    assert info["filesystem"] == "ntfs" and info["bitlocker"]["encryption"] == "AES-XTS 128"
    assert info["ldm"]["type"] == "striped" and info["ldm"]["state"] == "healthy"


# -- a missing disk -------------------------------------------------------------------------


def test_without_disk4_the_mirror_and_raid5_read_degraded(repo, manifest):
    with open_source(repo) as tree:
        base = f"/dyn01-degraded/{RP}/volumes"
        for volume in READABLE_WITHOUT_DISK4:
            info = tree.resolve(f"{base}/{volume}").info()["ldm"]
            want = "degraded" if volume in ("ldm-Mirror", "ldm-Raid5") else "healthy"
            assert info["state"] == want, volume
            for path, e in _files(manifest, volume):
                s = tree.resolve(f"{base}/{volume}{path}").open()
                assert hashlib.sha256(s.read(0, s.size)).hexdigest() == e["sha256"], path
    long_name = [v for v in manifest["volumes"] if v.startswith("ldm-LongName")][0]
    r = rpfs("ls", repo, f"{base}/{long_name}", check=False)
    assert r.returncode != 0
    err = r.stderr.decode()
    assert "Disk4" in err and "missing" in err and "Traceback" not in err
    out = rpfs("cat", repo, f"{base}/ldm-Raid5/random.bin").stdout
    assert hashlib.sha256(out).hexdigest() == dict(_files(manifest, "ldm-Raid5"))["/random.bin"]["sha256"]


def test_two_disks_missing_make_raid5_and_mirror_unreadable(vm, tmp_path):
    folder = _vm_without(vm, tmp_path, "disk3", "disk4")
    with open_source(folder) as tree:
        vols = {n.name: n for n in tree.resolve("/volumes").iterdir()}
        for name, why in (("ldm-Raid5", "2 RAID-5 columns missing"),
                          ("ldm-Mirror", "every plex has a missing disk")):
            with pytest.raises(FormatError, match=why):
                vols[name].iterdir()
        assert vols["ldm-Striped"].iterdir()         # disks 1 and 2: still whole


def test_a_mirror_plex_that_fails_to_read_falls_back_to_the_other(vm):
    with open_source(vm / "dyn01") as tree:
        stream = tree.recovery_point.ldm_volumes["ldm-Mirror"]
        want = stream.read(0, stream.size)
        first = stream.plexes[0]
        first.columns[0] = ldm._Missing(first.columns[0].size, "disk gone", "test")
        assert stream.read(0, stream.size) == want


def test_raid5_rebuilt_columns_equal_the_written_ones(vm):
    """Each column of the RAID-5, replaced by its rebuild from the other two, reads the same."""
    with open_source(vm / "dyn01") as tree:
        stream = tree.recovery_point.ldm_volumes["ldm-Raid5"]
        want = stream.read(0, stream.size)
        plex = stream.plexes[0]
        for col in range(3):
            saved = plex.columns[col]
            plex.columns[col] = ldm._Missing(saved.size, "gone", "test")
            assert stream.read(0, stream.size) == want, col
            plex.columns[col] = saved


# -- hostile databases ----------------------------------------------------------------------


def _member_bytes(vm: Path, n: int) -> bytearray:
    return bytearray((vm / "raw" / f"disk{n}.raw").read_bytes())


def _config(raw: bytearray) -> tuple[int, int]:
    """(offset, size) of the database on an MBR disk."""
    start, size = struct.unpack_from(">QQ", raw, 6 * 512 + 299)
    return start * 512, size * 512


def _assemble(disks: dict[str, bytes]) -> dict:
    return ldm.assemble({k: BytesStream(bytes(v), name=k) for k, v in disks.items()})


def test_damaged_records_are_typed_errors(vm):
    raws = {f"disk{i}": _member_bytes(vm, i) for i in range(1, 5)}
    at, _size = _config(raws["disk1"])
    vmdb = at + 17 * 512
    cases = {
        "truncated": lambda r: r.__delitem__(slice(at + 17 * 512 + 700, None)),
        "no TOCBLOCK": lambda r: r.__setitem__(slice(at + 512, at + 1536), bytes(1024)),
        "VMDB counts": lambda r: r.__setitem__(slice(vmdb + 133, vmdb + 137), b"\0\0\0\x09"),
        "vblk size": lambda r: r.__setitem__(slice(vmdb + 8, vmdb + 12), b"\xff\xff\xff\xf0"),
        "database outside": lambda r: r.__setitem__(slice(6 * 512 + 299, 6 * 512 + 307),
                                                    (1 << 40).to_bytes(8, "big")),
        "bad GUID": lambda r: r.__setitem__(slice(6 * 512 + 48, 6 * 512 + 52), b"zzzz"),
    }
    for what, damage in cases.items():
        raw = bytearray(raws["disk1"])
        damage(raw)
        with pytest.raises(RpfsError):
            ldm.read_member("disk1", BytesStream(bytes(raw), name="disk1"))
        out = _assemble({**raws, "disk1": raw})
        assert isinstance(out["ldm-disk1"], FormatError), what
        assert not isinstance(out["ldm-Mirror"], Exception)      # disk1 holds none of it


def _vblks(raw: bytearray) -> list[int]:
    at, size = _config(raw)
    out, pos = [], at + 17 * 512 + 512
    while raw[pos:pos + 4] == b"VBLK":
        out.append(pos)
        pos += 128
    return out


def _written(g: factory.Group, tmp: Path) -> dict:
    """``ldm.assemble`` of group ``g`` as the factory writes it (no volume data)."""
    disks = {}
    for i, d in enumerate(g.disks, 1):
        factory.write_disk(tmp / f"disk{i}.raw", g, d)
        disks[f"disk{i}"] = FileStream(tmp / f"disk{i}.raw", name=f"disk{i}")
    return ldm.assemble(disks)


def test_out_of_range_extents_fail_only_their_volume(tmp_path):
    g = factory.vm_group()
    g.volumes[0].plexes[0][0].start = 1 << 40          # Simple: far past its disk
    g.volumes[2].plexes[0][1].start = 37 << 11         # Striped: its end past the data area
    out = _written(g, tmp_path)
    for name in ("ldm-Simple", "ldm-Striped"):
        assert isinstance(out[name], FormatError) and "past the data" in str(out[name]), name
    assert not isinstance(out["ldm-Raid5"], Exception)


def test_links_that_do_not_add_up(tmp_path):
    """A volume listing more components than point at it, a component whose partitions are
    not all there: that volume fails with a typed error, the others read."""
    g = factory.vm_group()
    raws = _written(g, tmp_path)
    assert all(not isinstance(v, Exception) for v in raws.values())
    db = ldm.read_member("disk1", FileStream(tmp_path / "disk1.raw")).db
    vol = next(v for v in db.vols.values() if v.name == "Striped")
    vol.n_comps = 2
    with pytest.raises(FormatError, match="components"):
        ldm._volume(db, vol, {}, "test")
    comp = next(c for c in db.comps.values() if c.parent == next(
        v.id for v in db.vols.values() if v.name == "Raid5"))
    comp.n_parts = 4
    raid = next(v for v in db.vols.values() if v.name == "Raid5")
    with pytest.raises(FormatError, match="partitions"):
        ldm._volume(db, raid, {}, "test")
    comp.n_parts, comp.parent = 3, 99999                # a component of no volume
    with pytest.raises(FormatError, match="components"):
        ldm._volume(db, raid, {}, "test")


def test_bit_flips_in_the_records_never_escape_as_other_errors(vm):
    """300 databases with 1-3 bits flipped in their VBLKs, assembled over the real disks:
    each volume reads or is a typed error."""
    members = [ldm.read_member(f"disk{i}", FileStream(vm / "raw" / f"disk{i}.raw"))
               for i in range(1, 5)]
    by_guid = {m.disk_guid: m for m in members}
    raw = _member_bytes(vm, 1)
    at, size = _config(raw)
    cfg = bytes(raw[at:at + size])
    positions = [p - at for p in _vblks(raw)]
    rnd = random.Random(5)
    outcomes = {"database refused": 0, "volume refused": 0, "read": 0}
    for trial in range(300):
        damaged = bytearray(cfg)
        for _ in range(rnd.randrange(1, 4)):
            damaged[rnd.choice(positions) + rnd.randrange(4, 128)] ^= 1 << rnd.randrange(8)
        try:
            db = ldm.parse_config(bytes(damaged), "disk1")
        except RpfsError:
            outcomes["database refused"] += 1
            continue
        present = {d.id: by_guid[d.guid] for d in db.disks.values() if d.guid in by_guid}
        for vol in db.vols.values():
            try:
                v = ldm._volume(db, vol, present, "test")
                v.read(0, min(v.size, 1 << 16))
                outcomes["read"] += 1
            except RpfsError:
                outcomes["volume refused"] += 1
    assert all(outcomes.values()), outcomes       # each outcome happened


def test_multi_part_records_repeated_or_missing_parts(vm):
    raw = _member_bytes(vm, 1)
    at, size = _config(raw)
    cfg = bytes(raw[at:at + size])
    db = ldm.parse_config(cfg, "disk1")
    assert any(len(v.name) > 100 for v in db.vols.values())   # read from two VBLKs
    positions = [p - at for p in _vblks(raw)]
    multi = [p for p in positions if struct.unpack_from(">H", cfg, p + 14)[0] > 1][:2]
    assert cfg[multi[0] + 8:multi[0] + 12] == cfg[multi[1] + 8:multi[1] + 12]   # one record
    twice = bytearray(cfg)          # part 0 twice: a loop in the record's parts
    twice[multi[1]:multi[1] + 128] = cfg[multi[0]:multi[0] + 128]
    with pytest.raises(FormatError, match="twice"):
        ldm.parse_config(bytes(twice), "disk1")
    huge = bytearray(cfg)           # a record claiming 65,535 parts
    struct.pack_into(">H", huge, multi[0] + 14, 0xFFFF)
    with pytest.raises(FormatError):
        ldm.parse_config(bytes(huge), "disk1")
    gone = bytearray(cfg)           # the second part blanked
    gone[multi[1]:multi[1] + 4] = b"XXXX"
    with pytest.raises(FormatError):
        ldm.parse_config(bytes(gone), "disk1")


# -- disk groups Windows made (libldm's test data: Server 2003 R2 and 2008 R2) -------------

WINDOWS_VOLUMES = [   # (disk set, volume, type): each NTFS holds test.txt
    ("2003r2-simple", "Volume1", "simple"), ("2003r2-spanned", "Volume2", "spanned"),
    ("2003r2-striped", "Stripe1", "striped"), ("2003r2-mirrored", "Volume3", "mirrored"),
    ("2003r2-raid5", "Raid1", "raid5"), ("2008r2-spanned", "Volume1", "spanned"),
    ("2008r2-striped", "Volume2", "striped"), ("2008r2-mirrored", "Volume3", "mirrored"),
    ("2008r2-raid5", "Volume4", "raid5")]


def _windows_vm(images: Path, disk_set: str, dest: Path, skip: str | None = None) -> Path:
    """A VM folder holding the set's disks (hard links, as .raw), without disk ``skip``."""
    dest.mkdir(parents=True)
    for img in sorted(images.glob(f"ldm-{disk_set}-*.img")):
        n = img.stem.rsplit("-", 1)[1]
        if n != skip:
            os.link(img, dest / f"disk{n}.raw")
    return dest


@pytest.mark.parametrize("disk_set,volume,kind", WINDOWS_VOLUMES)
def test_windows_made_volumes_read(libldm_images_dir, tmp_path, disk_set, volume, kind):
    vm = _windows_vm(libldm_images_dir, disk_set, tmp_path / "vm")
    info = json.loads(rpfs("info", vm, f"/volumes/ldm-{volume}", "--json").stdout)["ldm"]
    assert (info["type"], info["state"]) == (kind, "healthy")
    assert rpfs("cat", vm, f"/volumes/ldm-{volume}/test.txt").stdout == b"Filesystem test"


@pytest.mark.parametrize("disk_set,volume", [("2003r2-raid5", "Raid1"),
                                             ("2008r2-raid5", "Volume4")])
def test_windows_raid5_is_left_symmetric(libldm_images_dir, tmp_path, disk_set, volume):
    """Windows rotates RAID-5 parity left-symmetric (libldm hands dm-raid ``raid5_ls``): on
    the assembled volume every MFT record sits where its own record number says, and
    ntfs-3g reads the exported volume; left-asymmetric puts the MFT's records elsewhere (22
    of 22 and 91 of 263 on these two volumes). Any one disk missing: the same bytes, rebuilt
    from Windows' parity."""
    vm = _windows_vm(libldm_images_dir, disk_set, tmp_path / "vm")
    img = tmp_path / "volume.img"
    rpfs("export", vm, f"/volumes/ldm-{volume}", img, "--format", "raw")
    data = img.read_bytes()
    cluster = struct.unpack_from("<H", data, 11)[0] * data[13]
    mft = struct.unpack_from("<q", data, 0x30)[0] * cluster
    for i in range(16):   # the system files, then whatever else the MFT's first 256 KiB hold
        assert data[mft + i * 1024:mft + i * 1024 + 4] == b"FILE", i
    for off in range(mft, mft + (256 << 10), 1024):
        if data[off:off + 4] == b"FILE":
            assert struct.unpack_from("<I", data, off + 0x2C)[0] == (off - mft) // 1024
    r = subprocess.run(["ntfscat", str(img), "test.txt"], capture_output=True)
    assert r.returncode == 0 and r.stdout == b"Filesystem test", r.stderr
    want = hashlib.sha256(data).hexdigest()
    for n in ("1", "2", "3"):
        part = _windows_vm(libldm_images_dir, disk_set, tmp_path / f"without{n}", skip=n)
        info = json.loads(rpfs("info", part, f"/volumes/ldm-{volume}", "--json").stdout)["ldm"]
        assert info["state"] == "degraded", info
        out = tmp_path / f"without{n}.img"
        rpfs("export", part, f"/volumes/ldm-{volume}", out, "--format", "raw")
        assert hashlib.sha256(out.read_bytes()).hexdigest() == want, n
