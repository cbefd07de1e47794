"""Front ends end to end on the fixture VM: export round-trips, a repository through the CLI
and the mount, and damage that stays confined to the object it touches."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import subprocess

import pytest

from rpfs.source import open_source
from tests.helpers.cli import rpfs, two_point_repo

fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")


@pytest.fixture(scope="module", params=["local", "s3"])
def repo(request, small_fixtures, tmp_path_factory):
    """A repository holding both states of the fixture VM: a directory, and an encrypted
    s3:// repository on the real gateway."""
    if request.param == "s3":
        path = request.getfixturevalue("s3_gateway").address("frontends")
    else:
        path = tmp_path_factory.mktemp("repo") / "r"
    return two_point_repo(small_fixtures, path)


@pytest.mark.parametrize("fmt,extra", [("vhdx", []), ("vhdx", ["--fixed"]), ("vhd", []),
                                       ("vhd", ["--fixed"]), ("raw", [])])
def test_export_round_trips(repo, small_fixtures, tmp_path, fmt, extra):
    dest = tmp_path / f"system.{fmt}"
    rpfs("export", repo, "/web01/2026-11-01T020000Z/disks/system.raw", dest, "--format", fmt, *extra)
    raw = small_fixtures.disks["system"].raw
    qfmt = {"vhd": "vpc"}.get(fmt, fmt)
    r = subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", qfmt, raw, dest],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if fmt != "raw":
        assert subprocess.run(["vhdiinfo", dest], capture_output=True).returncode == 0
    # the export is read back by rpfs itself and is the same disk
    with open_source(dest) as tree:
        disk = next(tree.resolve("/disks").iterdir()).open()
        assert disk.size == os.path.getsize(raw)


def test_export_refuses_what_is_not_a_disk(repo, tmp_path):
    r = rpfs("export", repo, "/web01/latest/files", tmp_path / "x.vhdx", check=False)
    assert r.returncode != 0 and len(r.stderr.decode().splitlines()) == 1
    assert not (tmp_path / "x.vhdx").exists()


def test_repository_paths_through_cli(repo, small_fixtures):
    assert rpfs("ls", repo, "/").stdout.decode().split() == ["web01"]
    rps = rpfs("ls", repo, "/web01").stdout.decode().split()
    assert rps == [".versions", "2026-11-01T020000Z", "2026-11-02T020000Z", "latest"]
    manifest = small_fixtures.volumes["system-p3"].manifest["entries"]
    want = manifest["/Users/alice/Documents/report.docx"]["sha256"]
    data = rpfs("cat", repo, "/web01/2026-11-01T020000Z/volumes/system-p3/Users/alice/Documents/report.docx").stdout
    assert hashlib.sha256(data).hexdigest() == want
    changes = small_fixtures.vm_changes["volumes"]["system-p3"]
    added = changes["added"][0]
    assert rpfs("cat", repo, f"/web01/latest/volumes/system-p3{added}", check=False).returncode == 0
    r = rpfs("cat", repo, f"/web01/2026-11-01T020000Z/volumes/system-p3{added}", check=False)
    assert r.returncode == 2  # did not exist yet in the first recovery point
    found = rpfs("find", repo, "report.docx").stdout.decode().split("\n")
    assert "/web01/2026-11-01T020000Z/volumes/system-p3/Users/alice/Documents/report.docx" in found


@pytest.fixture
def damaged_vm(small_fixtures, tmp_path):
    """The VM folder with its data disk's VHDX headers and region tables destroyed."""
    src = small_fixtures.vm_states[0]
    vm = tmp_path / "vm"
    shutil.copytree(src, vm)
    data = vm / "Virtual Hard Disks" / "data.vhdx"
    with open(data, "r+b") as f:
        for off in (64 << 10, 128 << 10, 192 << 10, 256 << 10):
            f.seek(off)
            f.write(os.urandom(4096))
    return vm


def test_damage_is_one_line_and_confined(damaged_vm):
    r = rpfs("cat", damaged_vm, "/disks/data.raw", check=False)
    err = r.stderr.decode()
    assert r.returncode == 1 and len(err.splitlines()) == 1 and "data.vhdx" in err
    assert "Traceback" not in err
    names = rpfs("ls", damaged_vm, "/volumes").stdout.decode().split()
    assert "system-p3" in names
    assert rpfs("ls", damaged_vm, "/volumes/system-p3/Users").returncode == 0


@fuse
def test_mount_answers_eio_for_the_damaged_disk_only(damaged_vm, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    rpfs("mount", damaged_vm, mp)
    try:
        assert sorted(os.listdir(mp / "disks")) == ["data.raw", "system.raw"]
        with pytest.raises(OSError) as e:
            (mp / "disks" / "data.raw").read_bytes()
        assert e.value.errno == errno.EIO
        with open(mp / "disks" / "system.raw", "rb") as f:
            assert len(f.read(1 << 20)) == 1 << 20
        assert "Users" in os.listdir(mp / "volumes" / "system-p3")
    finally:
        rpfs("umount", mp, check=False)


@fuse
def test_repository_mount_shows_recovery_points_and_latest(repo, small_fixtures, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    rpfs("mount", repo, mp)
    try:
        assert os.listdir(mp) == ["web01"]
        assert os.readlink(mp / "web01" / "latest") == "2026-11-02T020000Z"
        manifest = small_fixtures.volumes["system-p3"].manifest["entries"]
        p = mp / "web01" / "latest" / "volumes" / "system-p3" / "Users" / "alice" / "Documents" / "report.docx"
        assert hashlib.sha256(p.read_bytes()).hexdigest() == manifest["/Users/alice/Documents/report.docx"]["sha256"]
        # a backup while mounted: the new recovery point shows up
        rpfs("backup", repo, small_fixtures.vm_states[1], "--vm", "web01", "--time", "2026-11-03T02:00:00Z")
        import time
        deadline = time.monotonic() + 120    # a hang guard, not a speed assertion
        while "2026-11-03T020000Z" not in os.listdir(mp / "web01") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert "2026-11-03T020000Z" in os.listdir(mp / "web01")
    finally:
        rpfs("umount", mp, check=False)
