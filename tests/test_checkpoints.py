"""Hyper-V checkpoints browsable (issue 19): ``/<vm>/<rp>/checkpoints/<name>/disks|volumes``.

The VM folder of tools/fixtures/checkpoints.py: two disks, each base.vhdx <- three AVHDX,
three checkpoints (two named alike) with their own .vmcx naming the files that became
read-only. Each checkpoint's volumes read as ntfs-3g wrote them in that state, through the
CLI (ls, cat, info, restore, export) and the FUSE mount; without the configurations the
checkpoints come from the chains, named by their files; a checkpoint naming a disk that is
not stored, or with a damaged configuration, is one error while the others read."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from rpfs import checkpoints as cps
from rpfs.source import open_source
from tests.helpers.cli import rpfs
from tools.fixtures import checkpoints as factory
from tools.fixtures import vmcx_writer

RP = "2026-11-20T020000Z"
NAMES = ["Before update (2026-11-02T091500Z)", "Before update (2026-11-09T092030Z)",
         "Nightly_known good"]


@pytest.fixture(scope="module")
def built() -> Path:
    return factory.build()


@pytest.fixture(scope="module")
def manifest(built) -> dict:
    return json.loads((built / "cpvm.json").read_text())


@pytest.fixture(scope="module")
def repo(built, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cp") / "repo"
    rpfs("init", path)
    rpfs("backup", path, built / "cpvm", "--vm", "cpvm", "--time", "2026-11-20T02:00:00Z")
    return path


def _copy(vm: Path, dest: Path, skip=()) -> Path:
    """A hard-linked copy of the VM folder without the folders or files named in ``skip``."""
    for f in sorted(vm.rglob("*")):
        rel = f.relative_to(vm)
        if f.is_file() and not any(s in rel.parts for s in skip):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(f, dest / rel)
    return dest


def _tree_equals(root: Path, files: dict[str, str]) -> None:
    got = {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
           for p in sorted(root.rglob("*")) if p.is_file()}
    assert got == files


def test_info_lists_every_checkpoint_with_its_path(repo, manifest):
    info = json.loads(rpfs("info", repo, f"/cpvm/{RP}", "--json").stdout)
    got = info["checkpoints"]
    assert [c["path"] for c in got] == [f"checkpoints/{n}" for n in NAMES]
    assert [(c["name"], c["id"]) for c in got] == [(c["name"], c["id"])
                                                   for c in manifest["checkpoints"]]
    for c, want in zip(got, manifest["checkpoints"]):
        assert c["source"] == "configuration" and "error" not in c
        assert c["created"].startswith(want["created"][:19])
        assert c["disks"] == {d: f"Virtual Hard Disks/{m['files'][want['level']]}"
                              for d, m in manifest["disks"].items()}
    assert rpfs("ls", repo, f"/cpvm/{RP}").stdout.decode().split() == [
        "checkpoints", "disks", "files", "volumes"]
    assert rpfs("ls", repo, f"/cpvm/{RP}/checkpoints").stdout.decode().splitlines() == NAMES


def test_restore_every_checkpoint_volume_equals_its_state(repo, manifest, tmp_path):
    for name, want in zip(NAMES, manifest["checkpoints"]):
        for vol, files in want["volumes"].items():
            dest = tmp_path / name / vol
            rpfs("restore", repo, f"/cpvm/{RP}/checkpoints/{name}/volumes/{vol}", dest)
            _tree_equals(dest / vol, files)
    for vol, files in manifest["running"].items():   # the recovery point itself: state D
        rpfs("restore", repo, f"/cpvm/{RP}/volumes/{vol}", tmp_path / "D" / vol)
        _tree_equals(tmp_path / "D" / vol / vol, files)


def test_cat_ls_and_export_of_a_checkpoint(repo, manifest, tmp_path):
    base = f"/cpvm/{RP}/checkpoints/{NAMES[1]}"
    assert rpfs("ls", repo, f"{base}/disks").stdout.decode().split() == ["data.raw", "system.raw"]
    assert rpfs("cat", repo, f"{base}/volumes/system-p1/notes.txt").stdout == b"system in state B\n"
    listing = rpfs("ls", repo, f"{base}/volumes/system-p1/docs").stdout.decode().split()
    assert listing == sorted(p.split("/")[1] for p in manifest["checkpoints"][1]["volumes"]
                             ["system-p1"] if p.startswith("docs/"))
    out = tmp_path / "system-B.raw"   # its volume: system-B-p1
    rpfs("export", repo, f"{base}/disks/system.raw", out, "--format", "raw")
    with open_source(out) as tree:   # the exported disk holds state B's volume
        vol = tree.resolve("/volumes/system-B-p1")
        assert {c.name for c in vol.iterdir()} >= {"docs", "notes.txt", "added-in-B"}
        data = tree.resolve("/volumes/system-B-p1/added-in-B/file.bin").open()
        got = hashlib.sha256(data.read(0, data.size)).hexdigest()
    assert got == manifest["checkpoints"][1]["volumes"]["system-p1"]["added-in-B/file.bin"]
    vhdx = tmp_path / "data-A.vhdx"
    rpfs("export", repo, f"/cpvm/{RP}/checkpoints/{NAMES[0]}/disks/data.raw", vhdx,
         "--format", "vhdx")
    assert rpfs("cat", vhdx, "/volumes/data-A-p1/notes.txt").stdout == b"data in state A\n"


def test_a_vm_folder_read_in_place_has_the_same_checkpoints(built, manifest):
    with open_source(built / "cpvm") as tree:
        assert [n.name for n in tree.resolve("/checkpoints").iterdir()] == NAMES
        node = tree.resolve(f"/checkpoints/{NAMES[2]}/volumes/data-p1/notes.txt").open()
        assert node.read(0, node.size) == b"data in state C\n" * 2


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_mount_shows_every_checkpoint(repo, built, manifest, tmp_path):
    broken = _hostile(built, tmp_path / "hostile")
    rpfs("backup", repo, broken, "--vm", "cpvm-hostile", "--time", "2026-11-20T02:00:00Z")
    mp = tmp_path / "mnt"
    mp.mkdir()
    rpfs("mount", repo, mp)
    try:
        for vm in ("cpvm", "cpvm-hostile"):
            cp_dir = mp / vm / RP / "checkpoints"
            for name, want in zip(NAMES, manifest["checkpoints"]):
                for vol, files in want["volumes"].items():
                    _tree_equals(cp_dir / name / "volumes" / vol, files)
        names = sorted(os.listdir(mp / "cpvm-hostile" / RP / "checkpoints"))
        assert names == sorted(NAMES + ["Missing disk", "damaged"])
        for bad in ("Missing disk", "damaged"):
            with pytest.raises(OSError) as e:
                os.listdir(mp / "cpvm-hostile" / RP / "checkpoints" / bad)
            assert e.value.errno == 5   # EIO, the others above still read
    finally:
        rpfs("umount", mp, check=False)


def _hostile(built: Path, dest: Path) -> Path:
    """The VM with two more checkpoint configurations: one naming an AVHDX that is not
    stored, one cut short."""
    vm = _copy(built / "cpvm", dest)
    cfg = factory.config("Missing disk", "1A2B3C4D-0000-4000-8000-000000000004",
                         "2026-11-18T00:00:00Z", 1)
    drive = cfg["configuration"]["_73e0f0c5-c0bc-4e16-a458-0e1c388bfee3_"]["controller0"]["drive0"]
    drive["pathname"] = r"D:\Hyper-V\cpvm\Virtual Hard Disks\system_0000DEAD-0000-4000-8000-000000000000.avhdx"
    (vm / "Snapshots" / "1A2B3C4D-0000-4000-8000-000000000004.vmcx").write_bytes(
        vmcx_writer.write(cfg))
    good = (vm / "Snapshots" / "1A2B3C4D-0000-4000-8000-000000000003.vmcx").read_bytes()
    (vm / "Snapshots" / "damaged.vmcx").write_bytes(good[:9000])
    return vm


def test_a_checkpoint_naming_a_missing_avhdx_is_one_error(built, manifest, tmp_path):
    vm = _hostile(built, tmp_path / "cpvm")
    names = rpfs("ls", vm, "/checkpoints").stdout.decode().splitlines()
    assert names == NAMES[:2] + ["Missing disk", "Nightly_known good", "damaged"]
    for bad, why in (("Missing disk", "system_0000DEAD-0000-4000-8000-000000000000.avhdx "
                                      "is not stored"),
                     ("damaged", "Snapshots/damaged.vmcx")):
        r = rpfs("ls", vm, f"/checkpoints/{bad}/volumes", check=False)
        lines = r.stderr.decode().strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and why in lines[0], lines
        assert "Traceback" not in r.stderr.decode()
    info = json.loads(rpfs("info", vm, "/", "--json").stdout)
    errors = {c["name"]: c.get("error") for c in info["checkpoints"]}
    assert len(errors) == 4 and errors["damaged"].startswith("Snapshots/damaged.vmcx: ")
    assert "is not stored" in errors["Missing disk"] and errors["Nightly/known good"] is None
    got = rpfs("cat", vm, f"/checkpoints/{NAMES[2]}/volumes/system-p1/notes.txt").stdout
    assert got == b"system in state C\n" * 2


def test_without_configurations_the_chains_name_the_checkpoints(built, manifest, tmp_path):
    vm = _copy(built / "cpvm", tmp_path / "cpvm", skip=("Snapshots", "Virtual Machines"))
    with open_source(vm) as tree:
        found = {n.name for n in tree.resolve("/checkpoints").iterdir()}
        want = {f[:-len(Path(f).suffix)] for m in manifest["disks"].values() for f in m["files"][:3]}
        assert found == want
        for disk, m in manifest["disks"].items():
            for level, f in enumerate(m["files"][:3]):
                cp = tree.resolve(f"/checkpoints/{Path(f).stem}")
                assert [d.name for d in cp.child("disks").iterdir()] == [f"{disk}.raw"]
                node = cp.child("volumes").child(m["volume"]).child("notes.txt").open()
                files = manifest["checkpoints"][level]["volumes"][m["volume"]]
                assert hashlib.sha256(node.read(0, node.size)).hexdigest() == files["notes.txt"]
        info = tree.resolve("/").info()
    assert {c["source"] for c in info["checkpoints"]} == {"disk chain"}
    # system's base and first AVHDX gone: its chain is broken (disks/ says why), no
    # checkpoint of it; data's three still are
    lone = _copy(built / "cpvm", tmp_path / "lone", skip=("Snapshots",))
    for f in (lone / "Virtual Hard Disks").glob("system*"):
        if f.suffix == ".vhdx" or "6C01" in f.name:
            f.unlink()
    names = rpfs("ls", lone, "/checkpoints").stdout.decode().splitlines()
    assert names == [Path(f).stem for f in manifest["disks"]["data"]["files"][:3]]
    assert "system.raw" in rpfs("ls", lone, "/disks").stdout.decode()


def test_names_are_unique_and_path_safe():
    made = [cps.Checkpoint(t, "configuration", id=i, created=c) for t, i, c in (
        ("a/b", "1", None), ("a/b", "2", None), ("..", "3", "2026-01-01T00:00:00+00:00"),
        ("x\0y\n", None, None), ("same", None, "2026-01-01T00:00:00+00:00"),
        ("same", None, "2026-01-01T00:00:00+00:00"), ("", "7", None))]
    cps._name(made)
    names = [c.name for c in made]
    assert names == ["a_b (1)", "a_b (2)", "checkpoint (2026-01-01T000000Z)", "x_y_",
                     "same (2026-01-01T000000Z)", "same (2026-01-01T000000Z)-1",
                     "checkpoint"]
    assert len(set(names)) == len(names)
    assert all("/" not in n and "\0" not in n and n not in (".", "..") for n in names)


def test_a_listed_checkpoint_whose_configuration_is_not_stored(built, tmp_path):
    vm = _copy(built / "cpvm", tmp_path / "cpvm")
    (vm / "Snapshots" / "1A2B3C4D-0000-4000-8000-000000000002.vmcx").unlink()
    names = rpfs("ls", vm, "/checkpoints").stdout.decode().splitlines()
    assert names == ["1A2B3C4D-0000-4000-8000-000000000002", "Before update",
                     "Nightly_known good"]
    r = rpfs("ls", vm, "/checkpoints/1A2B3C4D-0000-4000-8000-000000000002", check=False)
    assert r.returncode != 0 and r.stderr.decode().count("\n") == 1
    assert "Snapshots/1A2B3C4D-0000-4000-8000-000000000002.vmcx is not stored" in r.stderr.decode()
    assert rpfs("cat", vm, "/checkpoints/Before update/volumes/data-p1/notes.txt").stdout == \
        b"data in state A\n"


def test_web_page_browses_checkpoints(repo, built, manifest, tmp_path):
    """rpfs serve: the recovery point's page lists checkpoints/ and says what each is; a
    checkpoint's volume browses and downloads as its state."""
    import urllib.parse

    import httpx

    from tests.helpers.web import start_server

    proc, base = start_server(repo, log=tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=base, timeout=120) as http:
            rp_page = http.get(f"/browse/cpvm/{RP}")
            assert rp_page.status_code == 200 and "checkpoints" in rp_page.text
            assert "Nightly/known good" in rp_page.text   # the info table: name as configured
            names = [e["name"] for e in http.get(
                "/api/ls", params={"path": f"/cpvm/{RP}/checkpoints"}).json()]
            assert names == NAMES
            vol = f"/cpvm/{RP}/checkpoints/{NAMES[0]}/volumes/system-p1"
            page = http.get("/browse" + urllib.parse.quote(vol + "/docs"))
            assert page.status_code == 200 and "report-0.bin" in page.text
            want = manifest["checkpoints"][0]["volumes"]["system-p1"]
            for path, digest in want.items():
                r = http.get("/api/download", params={"path": f"{vol}/{path}"})
                assert hashlib.sha256(r.content).hexdigest() == digest, path
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_long_names_fit_a_file_name():
    """A checkpoint name of 300 four-byte characters: at most 200 bytes of UTF-8, cut on a
    character boundary, and with its uniqueness suffix still under the 255 a name may have."""
    made = [cps.Checkpoint("\U0001F600" * 300, "configuration", created=c)
            for c in ("2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00")]
    cps._name(made)
    for cp in made:
        assert len(cp.name.encode()) <= 255 and cp.name.startswith("\U0001F600" * 50)
    assert made[0].name != made[1].name


def test_checkpoint_configurations_are_bounded(built, tmp_path):
    """300 more checkpoint configurations than Hyper-V would keep: the first 256 by path
    are read and listed, none of the others is opened; a listed checkpoint whose
    configuration is stored past the bound is not called missing."""
    vm = _copy(built / "cpvm", tmp_path / "cpvm")
    for i in range(300):
        cid = f"0{i:07d}-0000-4000-8000-000000000000"   # sorts before the three real ones
        (vm / "Snapshots" / f"{cid}.vmcx").write_bytes(
            vmcx_writer.write(factory.config(f"extra {i}", cid, "2026-11-02T09:15:00Z", 1)))
    with open_source(vm) as tree:
        found = tree.recovery_point.checkpoints
    assert len(found) == cps.MAX_CHECKPOINTS
    assert {cp.title for cp in found} == {f"extra {i}" for i in range(cps.MAX_CHECKPOINTS)}
    assert not any(cp.error for cp in found)
