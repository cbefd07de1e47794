"""Faults of the disk under the repository, through the real ``rpfs`` command.

- the repository's filesystem full (a size-limited tmpfs) during backup, and during prune
  with gc;
- EIO while reading a pack (a FUSE passthrough, tests/helpers/eiofs.py, fails the reads of
  one chunk's bytes);
- a pack truncated, a pack deleted;
- a catalog from the older schema (v1).

In each: what was committed before is intact (``verify --read-data`` passes or names only
the damage injected), the failed command prints one line saying what happened and what to
do (no traceback), and ``verify`` reports exactly the recovery points and files touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import sqlite3
import subprocess
import sys

import pytest

from rpfs.store import Repository
from tests.helpers.store_fixtures import PY, ROOT, rpfs

KiB, MiB = 1 << 10, 1 << 20


def one_line_error(p: subprocess.CompletedProcess) -> str:
    """The failed command's stderr: exactly one line starting with ``rpfs:``."""
    assert p.returncode > 0, (p.returncode, p.stdout)  # negative: killed by a signal
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("rpfs: "), p.stderr
    assert "Traceback" not in p.stderr and "internal error" not in p.stderr, p.stderr
    return lines[0]


@contextlib.contextmanager
def tmpfs(path, size: int):
    """A filesystem of ``size`` bytes at ``path`` (tmpfs: full means ENOSPC)."""
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                        str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"no loop device or tmpfs mount here (needs root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def make_source(folder, seed: int, sizes: dict[str, int]) -> dict[str, str]:
    """Files of random, half-compressible data; returns their sha256."""
    rnd = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, size in sizes.items():
        data = bytearray()
        while len(data) < size:
            data += rnd.randbytes(8 * KiB) + bytes(rnd.randrange(0, 8 * KiB))
        data = bytes(data[:size])
        (folder / name).write_bytes(data)
        out[name] = hashlib.sha256(data).hexdigest()
    return out


def init(repo) -> None:
    rpfs("init", str(repo), "--chunk-size", "64K", "--pack-size", "1M")


def cat_sha(repo, path) -> str:
    p = subprocess.run([PY, "-m", "rpfs", "cat", str(repo), path], capture_output=True,
                       cwd=ROOT, check=True)
    return hashlib.sha256(p.stdout).hexdigest()


def verify_json(repo) -> dict:
    p = rpfs("verify", str(repo), "--read-data", "--json", check=False)
    assert p.returncode in (0, 1), p.stderr
    return json.loads(p.stdout)


def damaged_files(report: dict) -> set[tuple[str, str, str]]:
    return {(d["vm"], d["rp"], d["file"]) for d in report["damage"]}


def damage_is_confined(repo, truth: dict, base: str, expected: set) -> None:
    """verify names exactly ``expected``, and every other file reads back intact."""
    report = verify_json(repo)
    assert not report["ok"] and damaged_files(report) == expected, report
    for name in set(truth) - {f for _, _, f in expected}:
        assert cat_sha(repo, base + name) == truth[name]


def no_temporary_packs(repo) -> None:
    left = [p for p in repo.rglob("*") if p.is_file() and ".tmp" in p.name]
    assert left == [], left


# -- the filesystem full ---------------------------------------------------------------------

def test_filesystem_full_during_backup(tmp_path):
    with tmpfs(tmp_path / "fs", 12 * MiB) as fs:
        repo = fs / "repo"
        init(repo)
        first = make_source(tmp_path / "vm1", 1, {"a.bin": 2 * MiB, "b.bin": MiB})
        rpfs("backup", str(repo), str(tmp_path / "vm1"), "--vm", "vm",
             "--time", "2026-01-01T00:00:00Z")
        make_source(tmp_path / "vm2", 2, {"a.bin": 30 * MiB})
        p = rpfs("backup", str(repo), str(tmp_path / "vm2"), "--vm", "vm",
                 "--time", "2026-01-02T00:00:00Z", check=False)
        line = one_line_error(p)
        assert "No space left on device" in line and "free space" in line, line
        # nothing committed is lost, the failed one left nothing behind
        assert json.loads(rpfs("list", str(repo), "vm", "--json").stdout)[0]["rp"] == \
            "2026-01-01T000000Z"
        assert len(json.loads(rpfs("list", str(repo), "vm", "--json").stdout)) == 1
        no_temporary_packs(repo)
        report = verify_json(repo)
        assert report["ok"], report
        for name, digest in first.items():
            assert cat_sha(repo, f"/vm/2026-01-01T000000Z/files/{name}") == digest
        # and once there is room (the failed backup's packs are gone) it works again
        rpfs("backup", str(repo), str(tmp_path / "vm1" / "b.bin"), "--vm", "vm",
             "--time", "2026-01-03T00:00:00Z")


def test_filesystem_full_during_prune_and_gc(tmp_path):
    with tmpfs(tmp_path / "fs", 16 * MiB) as fs:
        repo = fs / "repo"
        init(repo)
        truth = {}
        src = tmp_path / "vm"
        for i in range(3):
            truth[i] = make_source(src, 10 + i, {"disk.bin": 2 * MiB + i * 300 * KiB})
            rpfs("backup", str(repo), str(src), "--vm", "vm",
                 "--time", f"2026-01-0{i + 1}T00:00:00Z")
        # fill the filesystem to the last block, then give back a little more each round:
        # prune fails wherever the disk runs out (opening the catalog, in a transaction,
        # writing a repacked pack) until it has the room it needs
        with open(fs / "filler", "wb", buffering=0) as f:   # unbuffered: close has nothing left to flush
            with contextlib.suppress(OSError):
                while f.write(bytes(64 * KiB)):
                    pass
        full = os.path.getsize(fs / "filler")
        failures = []
        for free in (0, 16, 64, 256, 1024, 4096, 8192):
            os.truncate(fs / "filler", max(0, full - free * KiB))
            p = rpfs("prune", str(repo), "--keep-last", "1", check=False)
            if p.returncode == 0:
                break
            line = one_line_error(p)
            assert ("No space left on device" in line or "disk is full" in line) \
                and "free space" in line, line
            failures.append(line)
        print("\n".join(failures))
        assert failures, "the prune never ran out of space: the test proves nothing"
        os.truncate(fs / "filler", max(0, full - 8192 * KiB))
        report = verify_json(repo)
        assert report["ok"], report
        names = [rp["rp"] for rp in json.loads(rpfs("list", str(repo), "vm", "--json").stdout)]
        assert names[-1] == "2026-01-03T000000Z"
        for name in names:
            i = int(name[8:10]) - 1
            assert cat_sha(repo, f"/vm/{name}/files/disk.bin") == truth[i]["disk.bin"]
        # with room again, prune and gc finish and reclaim
        os.unlink(fs / "filler")
        rpfs("prune", str(repo), "--keep-last", "1")
        assert verify_json(repo)["ok"]
        no_temporary_packs(repo)
        assert cat_sha(repo, "/vm/2026-01-03T000000Z/files/disk.bin") == truth[2]["disk.bin"]


# -- damaged packs -----------------------------------------------------------------------------

@pytest.fixture
def three_files(tmp_path):
    """A repository with one recovery point of three files, each in its own packs."""
    repo = tmp_path / "repo"
    init(repo)
    truth = make_source(tmp_path / "vm", 5, {"a.bin": 1 * MiB, "b.bin": 1 * MiB + 5000,
                                              "c.bin": 700 * KiB})
    rpfs("backup", str(repo), str(tmp_path / "vm"), "--vm", "vm", "--time", "2026-02-01T00:00:00Z")
    return repo, truth, "/vm/2026-02-01T000000Z/files/"


def chunks_of(repo, file: str) -> list[tuple[str, int, int]]:
    """(pack, payload offset, compressed size) of each stored chunk of ``file``."""
    with Repository.open(str(repo)) as r:
        (rp,) = r.recovery_points("vm")
        f = r.open_file(rp, file)
        return [(f.locs[i].pack, f.locs[i].offset, f.locs[i].csize) for i in f.ids if i]


def files_using(repo, pack: str, lo: int = 0, hi: int = 1 << 62) -> set:
    """The files with a chunk stored in ``pack`` at payload offsets in [lo, hi)."""
    out = set()
    for name in ("a.bin", "b.bin", "c.bin"):
        if any(p == pack and lo <= off + n and off < hi for p, off, n in chunks_of(repo, name)):
            out.add(("vm", "2026-02-01T000000Z", name))
    return out


def pack_path(repo, pack: str):
    return repo / "packs" / pack[:2] / f"{pack}.pack"


def test_truncated_pack(three_files):
    repo, truth, base = three_files
    pack, off, n = chunks_of(repo, "b.bin")[-1]
    os.truncate(pack_path(repo, pack), off + n // 2)
    expected = files_using(repo, pack, off, 1 << 62)
    line = one_line_error(rpfs("cat", str(repo), base + "b.bin", check=False))
    print(line)
    assert "b.bin" in line and pack in line and "rpfs verify" in line, line
    damage_is_confined(repo, truth, base, expected)


def test_deleted_pack(three_files):
    repo, truth, base = three_files
    pack = chunks_of(repo, "a.bin")[0][0]
    expected = files_using(repo, pack)
    os.unlink(pack_path(repo, pack))
    line = one_line_error(rpfs("cat", str(repo), base + "a.bin", check=False))
    print(line)
    assert "missing" in line and "rpfs verify" in line, line
    damage_is_confined(repo, truth, base, expected)


@pytest.mark.fuse
@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_read_error_in_a_pack(three_files, tmp_path):
    """The disk fails the reads of one chunk (EIO): that chunk's file fails with one line,
    the others read; verify names exactly the files that use the chunk."""
    repo, truth, base = three_files
    real, mnt = repo / "packs-on-disk", tmp_path / "eio"
    os.rename(repo / "packs", real)
    mnt.mkdir()
    with subprocess.Popen([sys.executable, "-m", "tests.helpers.eiofs", str(real), str(mnt)],
                          cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as fs:
        try:
            assert fs.stdout.readline().strip() == "ready", fs.stderr.read()
            os.symlink(mnt, repo / "packs")
            pack, off, n = chunks_of(repo, "c.bin")[1]
            (real / ".eio").write_text(f"{pack}.pack {off + 10} {off + 11}\n")
            expected = files_using(repo, pack, off, off + n)
            line = one_line_error(rpfs("cat", str(repo), base + "c.bin", check=False))
            print(line)
            assert "Input/output error" in line and "rpfs verify" in line, line
            damage_is_confined(repo, truth, base, expected)
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
            fs.wait(timeout=30)


# -- an older catalog ------------------------------------------------------------------------

def test_catalog_from_the_older_schema(three_files, tmp_path):
    """A v1 catalog (before the source-identity columns) is brought forward on open:
    everything reads, verifies, and the next backup works."""
    repo, truth, base = three_files
    downgrade_to_v1(repo / "catalog.sqlite")
    for name, digest in truth.items():
        assert cat_sha(repo, base + name) == digest
    assert verify_json(repo)["ok"]
    rpfs("backup", str(repo), str(tmp_path / "vm"), "--vm", "vm", "--time", "2026-02-02T00:00:00Z")
    db = sqlite3.connect(repo / "catalog.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] >= 2
    db.close()
    assert verify_json(repo)["ok"]


def downgrade_to_v1(path) -> None:
    """Turn a current catalog into what schema v1 had (the first migration's tables and
    columns only, data kept), as a repository made by the first release would hold."""
    from rpfs.store import catalog
    v1 = sqlite3.connect(":memory:", isolation_level=None)
    catalog.MIGRATIONS[1](v1)
    want = {t: {c[1] for c in v1.execute(f"PRAGMA table_info({t})")}
            for (t,) in v1.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    indexes = {n for (n,) in v1.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    db = sqlite3.connect(path, isolation_level=None)
    for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").fetchall():
        if n not in indexes:
            db.execute(f"DROP INDEX {n}")
    for (t,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
        if t.startswith("sqlite_"):
            continue
        if t not in want:
            db.execute(f"DROP TABLE {t}")
            continue
        for col in [c[1] for c in db.execute(f"PRAGMA table_info({t})")]:
            if col not in want[t]:
                db.execute(f"ALTER TABLE {t} DROP COLUMN {col}")
    db.execute("PRAGMA user_version = 1")
    db.close()
