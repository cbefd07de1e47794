"""Many writers at once: backups from several processes (and machines, i.e. cache
directories) into one repository, a directory or s3:// on a real Ceph RADOS Gateway (the
``s3_gateway`` fixture). Backups hold the repository lock shared, prune and gc exclusively.

Every check reads the stored bytes back through rpfs and compares them with the sources."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time

import pytest

from rpfs.cli.options import store_options
from rpfs.store import open_repository
from rpfs.store.packs import read_entry_table
from tests.helpers.store_fixtures import ROOT

MiB = 1 << 20
PY = sys.executable


def make_vm(root, seed: int, shared: bytes = b"") -> dict[str, str]:
    """A small VM folder: ``shared`` (the same bytes in every VM: chunks two racing backups
    both store), its own random data, a text file. Returns path -> sha256."""
    rnd = random.Random(seed)
    files = {"Virtual Hard Disks/disk0.vhdx": shared + rnd.randbytes(2 * MiB) + bytes(MiB),
             "notes.txt": f"vm {seed}\n".encode() * 100}
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return {rel: hashlib.sha256(data).hexdigest() for rel, data in files.items()}


def env_with(**kw) -> dict:
    env = {**os.environ, **kw}
    env.pop("RPFS_DEBUG", None)
    return env


def rpfs(*args, env=None, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([PY, "-m", "rpfs", *map(str, args)], capture_output=True, text=True,
                       cwd=ROOT, env=env or env_with(), stdin=subprocess.DEVNULL)
    if check and r.returncode:
        raise AssertionError(f"rpfs {' '.join(map(str, args))}: {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def start(*args, env=None) -> subprocess.Popen:
    return subprocess.Popen([PY, "-m", "rpfs", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env or env_with(),
                            stdin=subprocess.DEVNULL)


def finish(p: subprocess.Popen) -> str:
    out, err = p.communicate(timeout=1800)   # a hang guard, not a speed assertion
    assert p.returncode == 0, (p.args, err)
    return out


def stored(repo, vm: str, rp: str, names, env=None) -> dict[str, str]:
    """sha256 of stored files, read through ``rpfs cat``."""
    out = {}
    for n in names:
        r = subprocess.run([PY, "-m", "rpfs", "cat", str(repo), f"/{vm}/{rp}/files/{n}"],
                           capture_output=True, cwd=ROOT, env=env or env_with())
        assert r.returncode == 0, r.stderr.decode()
        out[n] = hashlib.sha256(r.stdout).hexdigest()
    return out


def lock_objects(repo: str) -> list[dict]:
    import boto3
    bucket, _, prefix = repo[5:].partition("/")
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/locks/").get("Contents", [])]
    out = []
    for k in keys:
        try:
            out.append(json.loads(s3.get_object(Bucket=bucket, Key=k)["Body"].read()))
        except s3.exceptions.NoSuchKey:
            pass    # released (or rewritten) since the listing
    return out


def wait_for(cond, what: str, limit: int = 20_000) -> None:
    """Poll ``cond`` (a count of tries as the hang guard, not a time)."""
    for _ in range(limit):
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"never: {what}")


def test_four_vms_backed_up_into_one_s3_repository_at_once_and_a_prune_meanwhile(s3_gateway, tmp_path):
    repo = s3_gateway.address("many")
    rpfs("init", repo, "--chunk-size", "256K", "--pack-size", "1M")
    shared = random.Random(99).randbytes(MiB)
    vms = [f"vm{i}" for i in range(4)]
    first = {vm: make_vm(tmp_path / "a" / vm, i, shared) for i, vm in enumerate(vms)}
    procs = [start("backup", repo, tmp_path / "a" / vm, "--time", "2026-12-01T00:00:00Z", "--json",
                   "--no-index") for vm in vms]
    results = [json.loads(finish(p)) for p in procs]
    assert sorted(r["vm"] for r in results) == vms
    listed = json.loads(rpfs("list", repo, "--json").stdout)
    assert sorted(v["vm"] for v in listed) == vms
    assert json.loads(rpfs("verify", repo, "--read-data", "--json").stdout)["ok"]
    for vm in vms:
        assert stored(repo, vm, "2026-12-01T000000Z", first[vm]) == first[vm]

    # again, with a prune started while the four run. A fifth shared holder (this test, as
    # a backup would) keeps the lock until the four have finished, so the prune certainly
    # starts during them and waits; then it sees their recovery points: each VM's new one
    # kept, the old removed, nothing lost
    second = {vm: make_vm(tmp_path / "b" / vm, 10 + i, shared) for i, vm in enumerate(vms)}
    with open_repository(repo, store_options()) as r, r.lock("backup", exclusive=False):
        procs = [start("backup", repo, tmp_path / "b" / vm, "--time", "2026-12-02T00:00:00Z",
                       "--json", "--no-index") for vm in vms]
        pruner = start("prune", repo, "--keep-last", "1", "--wait", "--json")
        for p in procs:
            finish(p)
        assert pruner.poll() is None      # still waiting for us
    report = json.loads(finish(pruner))
    assert report["removed"] == 4, report     # it ran after every backup had committed
    assert sorted((d["vm"], d["rp"]) for d in report["recovery_points"] if d["keep"]) == \
        [(vm, "2026-12-02T000000Z") for vm in vms]
    assert json.loads(rpfs("verify", repo, "--read-data", "--json").stdout)["ok"]
    for vm in vms:
        assert [r["rp"] for r in json.loads(rpfs("list", repo, vm, "--json").stdout)] == ["2026-12-02T000000Z"]
        assert stored(repo, vm, "2026-12-02T000000Z", second[vm]) == second[vm]
    assert lock_objects(repo) == []


def test_two_machines_writing_at_once_converge(s3_gateway, tmp_path):
    """Two cache directories (two machines) back up at once, both storing the same new
    chunks: both catalogs end with both VMs, a gc keeps one copy of each chunk, and the
    other machine still reads everything after it."""
    repo = s3_gateway.address("two")
    rpfs("init", repo, "--chunk-size", "256K", "--pack-size", "1M")
    a, b = env_with(RPFS_CACHE_DIR=str(tmp_path / "a")), env_with(RPFS_CACHE_DIR=str(tmp_path / "b"))
    shared = random.Random(7).randbytes(3 * MiB)
    want = {"web01": make_vm(tmp_path / "src" / "web01", 1, shared),
            "db01": make_vm(tmp_path / "src" / "db01", 2, shared)}
    pa = start("backup", repo, tmp_path / "src" / "web01", "--time", "2026-12-01T00:00:00Z",
               "--no-index", env=a)
    pb = start("backup", repo, tmp_path / "src" / "db01", "--time", "2026-12-01T00:00:00Z",
               "--no-index", env=b)
    finish(pa)
    finish(pb)
    for env in (a, b):
        assert sorted(v["vm"] for v in json.loads(rpfs("list", repo, "--json", env=env).stdout)) == ["db01", "web01"]
        assert json.loads(rpfs("verify", repo, "--read-data", "--json", env=env).stdout)["ok"]
    # gc from machine a: every chunk in exactly one pack afterwards
    rpfs("prune", repo, "--json", env=a)
    with open_repository(repo, store_options(environ=a), register=False) as r:
        entries = [e.hash for name, size in r.backend.list() for e in read_entry_table(r.backend, name, size)]
        assert len(entries) == len(set(entries)), "a chunk stored twice survived gc"
        chunks = r.query("SELECT count(*) FROM chunks")[0][0]
        assert len(entries) == chunks
    for env in (b, a):   # b's catalog pointed at packs gc deleted: it follows
        for vm, files in want.items():
            assert stored(repo, vm, "2026-12-01T000000Z", files, env=env) == files
        assert json.loads(rpfs("verify", repo, "--read-data", "--json", env=env).stdout)["ok"]


def test_backups_into_one_directory_at_once(tmp_path):
    """Three processes back up into one directory repository at once (sharing its catalog)
    with a prune --wait started meanwhile: all commit, nothing is lost."""
    repo = tmp_path / "repo"
    rpfs("init", repo, "--chunk-size", "256K", "--pack-size", "1M")
    shared = random.Random(5).randbytes(2 * MiB)
    vms = ["vm0", "vm1", "vm2"]
    old = {vm: make_vm(tmp_path / "old" / vm, 20 + i, shared) for i, vm in enumerate(vms)}
    for vm in vms:
        rpfs("backup", repo, tmp_path / "old" / vm, "--time", "2026-11-01T00:00:00Z", "--no-index")
    want = {vm: make_vm(tmp_path / vm, i, shared) for i, vm in enumerate(vms)}
    procs = [start("backup", repo, tmp_path / vm, "--time", "2026-12-01T00:00:00Z", "--no-index",
                   "--wait") for vm in vms]
    pruner = start("prune", repo, "--keep-last", "1", "--wait", "--json")
    for p in procs:
        finish(p)
    report = json.loads(finish(pruner))
    assert json.loads(rpfs("verify", repo, "--read-data", "--json").stdout)["ok"]
    for vm in vms:
        assert stored(repo, vm, "2026-12-01T000000Z", want[vm]) == want[vm]
        names = [r["rp"] for r in json.loads(rpfs("list", repo, vm, "--json").stdout)]
        assert names[-1] == "2026-12-01T000000Z"
        if names[0] != names[-1]:   # the prune ran before this backup committed: old kept
            assert stored(repo, vm, names[0], old[vm]) == old[vm]
    assert report["removed"] + sum(
        len(json.loads(rpfs("list", repo, vm, "--json").stdout)) - 1 for vm in vms) == 3


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_prune_refuses_or_waits_while_a_backup_runs(kind, tmp_path, request):
    repo = request.getfixturevalue("s3_gateway").address("wait") if kind == "s3" else tmp_path / "repo"
    rpfs("init", repo)
    make_vm(tmp_path / "vm", 4)
    rpfs("backup", repo, tmp_path / "vm", "--no-index", "--time", "2026-12-01T00:00:00Z")
    with open_repository(repo, store_options()) as r, r.lock("backup", exclusive=False):
        refused = rpfs("prune", repo, check=False)
        assert refused.returncode == 75 and refused.stderr.count("\n") == 1, refused.stderr
        assert f"busy (backup pid {os.getpid()}" in refused.stderr
        waiting = start("prune", repo, "--wait", "--json")
        for _ in range(20):   # it keeps waiting while the backup holds the lock
            assert waiting.poll() is None
            time.sleep(0.05)
    assert json.loads(finish(waiting))["gc"] is not None


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_a_backup_waits_for_a_prune_with_wait_and_refuses_without(kind, tmp_path, request):
    repo = request.getfixturevalue("s3_gateway").address("wait") if kind == "s3" else tmp_path / "repo"
    rpfs("init", repo)
    want = make_vm(tmp_path / "vm", 3)
    with open_repository(repo, store_options()) as r, r.lock("prune", exclusive=True):
        refused = rpfs("backup", repo, tmp_path / "vm", "--no-index", check=False)
        assert refused.returncode == 75 and refused.stderr.count("\n") == 1
        assert f"prune pid {os.getpid()}" in refused.stderr
        waiting = start("backup", repo, tmp_path / "vm", "--wait", "--no-index")
        for _ in range(20):   # it keeps waiting while we hold the lock
            assert waiting.poll() is None
            time.sleep(0.05)
    finish(waiting)
    assert stored(repo, "vm", "latest", want) == want
