"""The factory's BitLocker volumes: checked against dislocker (an independent decryptor),
then every file listed and read equal to its manifest through the CLI, a real mount, and a
backed-up VM whose VHDX holds them beside a plain volume."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rpfs.cli import main
from tools.fixtures import bitlocker as blfx

fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
dislocker = pytest.mark.skipif(shutil.which("dislocker-file") is None,
                               reason="dislocker-file (Debian package dislocker) is not installed")


@pytest.fixture(scope="module")
def bl(small_fixtures):
    return blfx.build(small_fixtures)


def rpfs(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "rpfs", *map(str, args)], capture_output=True,
                       text=True)
    if check and r.returncode:
        raise AssertionError(r.stderr)
    return r


def keys_file(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def key_of(v, which: str) -> str:
    return v.info["password"] if which == "password" else v.info["recovery_password"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_tree(root: Path, manifest: dict) -> int:
    """Every manifest entry is where it should be; files read equal. Returns files checked."""
    n = 0
    for path, e in manifest["entries"].items():
        p = root / path.lstrip("/")
        if e["type"] == "dir":
            assert p.is_dir(), path
        elif e["type"] == "file" and "sha256" in e:
            assert sha256(p) == e["sha256"], path
            n += 1
    return n


@dislocker
@pytest.mark.parametrize("name", sorted(n for n, v in blfx.VARIANTS.items()
                                         if v[3] not in ("eow", "vista")))
def test_dislocker_decrypts_to_the_plain_volume(bl, name, tmp_path):
    """The writer is trusted only because an independent reader agrees with it (Debian's
    dislocker cannot open used-space-only or Vista volumes: test_bitlocker_eow and
    test_bitlocker_vista check those another way)."""
    v = bl.volumes[name]
    out = tmp_path / "dislocker.raw"
    cmd = ["dislocker-file", "-V", str(v.image), f"-p{v.info['recovery_password']}"]
    if "paused" in name:
        cmd.append("-s")  # dislocker refuses a conversion in progress unless told
    r = subprocess.run(cmd + [str(out)], capture_output=True, text=True)
    assert r.returncode == 0 and out.exists(), r.stdout[-500:] + r.stderr[-500:]
    plain = v.plain.read_bytes()
    plain += bytes(v.info["size"] - len(plain))
    got = out.read_bytes()
    if "paused" in name:  # dislocker stops at the encrypted part; rpfs reads on past it
        assert len(got) == v.info["encrypted_size"]
        plain = plain[:len(got)]
    assert got == plain


@pytest.mark.parametrize("name", sorted(blfx.VARIANTS))
def test_cli_restores_every_file(bl, name, tmp_path, capsys):
    """`rpfs restore --keys` of the whole volume (in-process: the CLI's code, not its start-up)."""
    v = bl.volumes[name]
    which = ("recovery" if name.endswith(("256", "4k", "suspended")) or "password" not in v.info
             else "password")
    keys = keys_file(tmp_path / "keys.txt", "a wrong password", key_of(v, which))
    assert main(["restore", str(v.image), f"/volumes/{name}-p0", str(tmp_path / "out"),
                 "--keys", str(keys)]) == 0
    assert check_tree(tmp_path / "out" / f"{name}-p0", v.manifest) > 10
    assert main(["ls", str(v.image), f"/volumes/{name}-p0/compressed", "--keys", str(keys)]) == 0
    assert "random.bin" in capsys.readouterr().out.split()


@pytest.mark.parametrize("name", ["xts128-paused", "elephant256", "xts128-4k", "cbc256-eow-paused",
                                  "vista-elephant128"])
def test_export_raw_is_the_plain_volume(bl, name, tmp_path):
    v = bl.volumes[name]
    keys = keys_file(tmp_path / "keys.txt", key_of(v, "recovery"))
    rpfs("export", v.image, f"/volumes/{name}-p0", tmp_path / "vol.raw", "--format", "raw",
         "--keys", keys)
    plain = v.plain.read_bytes()
    got = (tmp_path / "vol.raw").read_bytes()
    assert got[:len(plain)] == plain and got[len(plain):].count(0) == len(got) - len(plain)


def test_suspended_opens_without_keys_and_others_do_not(bl):
    r = rpfs("ls", bl.volumes["cbc128-suspended"].image, "/volumes/cbc128-suspended-p0")
    assert "compressed" in r.stdout.split()
    r = rpfs("ls", bl.volumes["xts128"].image, "/volumes/xts128-p0", check=False)
    assert r.returncode != 0 and r.stderr.count("\n") == 1
    assert "--keys FILE" in r.stderr and "password, recovery password" in r.stderr


@fuse
def test_mount_reads_every_file(bl, tmp_path):
    v = bl.volumes["elephant128"]
    keys = keys_file(tmp_path / "keys.txt", key_of(v, "recovery"))
    mp = tmp_path / "mnt"
    mp.mkdir()
    rpfs("mount", v.image, mp, "--keys", keys)
    try:
        assert check_tree(mp / "volumes" / "elephant128-p0", v.manifest) > 10
    finally:
        rpfs("umount", mp, check=False)


@pytest.fixture(scope="module")
def vm_repo(bl, tmp_path_factory):
    """The BitLocker VM backed up into a repository (keys play no part in a backup)."""
    repo = tmp_path_factory.mktemp("blrepo") / "r"
    rpfs("init", repo)
    rpfs("backup", repo, bl.vm, "--vm", "locked01", "--time", "2026-11-01T02:00:00Z")
    return repo


@fuse
def test_backed_up_vm_through_the_mount(bl, vm_repo, tmp_path, small_fixtures):
    xts, eleph = bl.volumes["xts128"], bl.volumes["elephant128"]
    keys = keys_file(tmp_path / "keys.txt", key_of(xts, "password"), key_of(eleph, "recovery"))
    mp = tmp_path / "mnt"
    mp.mkdir()
    rpfs("mount", vm_repo, mp, "--keys", keys)
    try:
        vols = mp / "locked01" / "latest" / "volumes"
        assert sorted(os.listdir(vols)) == ["bitlocker-p1", "bitlocker-p2", "bitlocker-p3"]
        assert check_tree(vols / "bitlocker-p2", xts.manifest) > 10
        assert check_tree(vols / "bitlocker-p3", eleph.manifest) > 10
        assert check_tree(vols / "bitlocker-p1", small_fixtures.volumes["data-p1"].manifest) > 10
    finally:
        rpfs("umount", mp, check=False)
    # only one volume's key: the other is EACCES, everything else reads
    keys = keys_file(tmp_path / "one.txt", key_of(xts, "recovery"))
    rpfs("mount", vm_repo, mp, "--keys", keys)
    try:
        vols = mp / "locked01" / "latest" / "volumes"
        with pytest.raises(OSError) as e:
            os.listdir(vols / "bitlocker-p3")
        assert e.value.errno == errno.EACCES
        assert check_tree(vols / "bitlocker-p2", xts.manifest) > 10
        assert "compressed" in os.listdir(vols / "bitlocker-p1")
    finally:
        rpfs("umount", mp, check=False)


def test_backed_up_vm_through_the_cli(bl, vm_repo, tmp_path, small_fixtures):
    xts, eleph = bl.volumes["xts128"], bl.volumes["elephant128"]
    keys = keys_file(tmp_path / "keys.txt", key_of(xts, "recovery"))
    base = "/locked01/latest"
    info = json.loads(rpfs("info", vm_repo, f"{base}/disks/bitlocker.raw", "--json",
                           "--keys", keys).stdout)
    parts = {p["number"]: p for p in info["partitions"]}
    assert "bitlocker" not in parts[1] and parts[1]["filesystem"] == "ntfs"
    assert parts[2]["bitlocker"]["unlocked"] and parts[2]["filesystem"] == "ntfs"
    assert parts[2]["bitlocker"]["encryption"] == "AES-XTS 128"
    assert [p["type"] for p in parts[2]["bitlocker"]["protectors"]] == ["password", "recovery password"]
    assert not parts[3]["bitlocker"]["unlocked"]
    assert parts[3]["bitlocker"]["encryption"] == "AES-CBC 128 + Elephant diffuser"
    vol = json.loads(rpfs("info", vm_repo, f"{base}/volumes/bitlocker-p2", "--json",
                          "--keys", keys).stdout)
    assert vol["filesystem"] == "ntfs" and vol["bitlocker"]["encryption"] == "AES-XTS 128"
    assert vol["bitlocker"]["unlocked"]
    r = rpfs("ls", vm_repo, f"{base}/volumes/bitlocker-p3", "--keys", keys, check=False)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "none of the 1 key" in r.stderr
    out = tmp_path / "random.bin"
    with open(out, "wb") as f:
        subprocess.run([sys.executable, "-m", "rpfs", "cat", str(vm_repo),
                        f"{base}/volumes/bitlocker-p2/compressed/random.bin", "--keys", str(keys)],
                       stdout=f, check=True)
    assert sha256(out) == xts.manifest["entries"]["/compressed/random.bin"]["sha256"]
    # a plain volume exports raw too (the partition's bytes)
    rpfs("export", vm_repo, f"{base}/volumes/bitlocker-p1", tmp_path / "p1.raw", "--format", "raw")
    plain = small_fixtures.volumes["data-p1"].image.read_bytes()
    got = (tmp_path / "p1.raw").read_bytes()
    assert got[:len(plain)] == plain and not got[len(plain):].strip(b"\0")
    r = rpfs("export", vm_repo, f"{base}/volumes/bitlocker-p1", tmp_path / "p1.vhdx", check=False)
    assert r.returncode != 0 and "--format raw" in r.stderr
    # keys reach neither the repository nor its catalog
    secrets = [key_of(v, w).encode(enc) for v in (xts, eleph) for w in ("password", "recovery")
               for enc in ("utf-8", "utf-16-le")]
    for p in Path(vm_repo).rglob("*"):
        if p.is_file():
            data = p.read_bytes()
            assert not any(s in data for s in secrets), p
