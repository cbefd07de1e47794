"""Crash safety: real ``rpfs backup`` processes SIGKILLed at random moments.

After every kill the repository must verify (data read and hash-checked), list only
complete recovery points (each bit-identical to what was backed up), and accept the next
backup; a final gc leaves no orphan packs.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import time
from datetime import datetime, timedelta, timezone

from rpfs.store import Repository
from tests.helpers.store_fixtures import MiB, PY, ROOT, rpfs


def _mutate(path, rnd: random.Random) -> str:
    with open(path, "r+b") as f:
        for _ in range(24):
            f.seek(rnd.randrange(0, 80) * MiB)
            f.write(rnd.randbytes(MiB))
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rps(repo):
    with Repository.open(repo) as r:
        return r.recovery_points("vm01") if "vm01" in r.vms() else []


def test_sigkill_backup_at_random_moments(tmp_path):
    rnd = random.Random(1234)
    src = tmp_path / "vm01"
    src.mkdir()
    disk = src / "disk.raw"
    disk.write_bytes(rnd.randbytes(80 * MiB) + bytes(16 * MiB))
    repo = tmp_path / "repo"
    rpfs("init", str(repo), "--pack-size", "1M")     # many packs: many commit points
    truth: dict[str, str] = {}
    killed = completed = 0
    last = None  # seconds the last complete backup took
    it = 0
    # bounded by a count of backups, not a time: a slow machine runs the same ones, slower
    while (killed < 5 or completed < 2) and it < 16:
        it += 1
        digest = _mutate(disk, rnd)
        name = (datetime(2024, 2, 1, tzinfo=timezone.utc) + timedelta(days=it)).strftime("%Y-%m-%dT%H%M%SZ")
        t0 = time.monotonic()
        with subprocess.Popen([PY, "-m", "rpfs", "backup", str(repo), str(src), "--time", name],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) as p:
            if last is None or it % 3 == 0:
                rc = p.wait(timeout=120)  # let it finish: its duration times the next kills
            else:
                # killed at a random point inside a measured backup's duration, so the kill
                # lands mid-run however fast or loaded the machine is
                time.sleep(rnd.uniform(0.05, 0.95) * last)
                p.send_signal(signal.SIGKILL)
                rc = p.wait()
            err = p.stderr.read()
        if rc == 0:
            last = time.monotonic() - t0
        if rc == 0:
            completed += 1
            truth[name] = digest
        else:
            assert rc == -signal.SIGKILL, err
            killed += 1
            # killed after its commit: complete, so listed (and checked below)
            if name in {r.name for r in _rps(repo)}:
                truth[name] = digest
        # the repository is consistent right after the kill
        v = rpfs("verify", str(repo), "--read-data", "--json", check=False)
        assert v.returncode == 0, v.stdout + v.stderr
        assert json.loads(v.stdout)["ok"]
        listed = {r["rp"] for r in json.loads(rpfs("list", str(repo), "vm01", "--json").stdout)} \
            if truth else set()
        assert listed == set(truth), (listed, truth)
    assert killed >= 3, f"only {killed} kills landed mid-backup"
    print(f"\n{it} backups: {killed} killed, {completed} completed")
    # the next backup works and everything listed is bit-identical to its source state
    digest = hashlib.sha256(disk.read_bytes()).hexdigest()
    rpfs("backup", str(repo), str(src), "--time", "2024-03-01T00:00:00Z")
    truth["2024-03-01T000000Z"] = digest
    with Repository.open(repo) as r:
        for rp in r.recovery_points("vm01"):
            s = r.open_file(rp, "disk.raw")
            h = hashlib.sha256()
            for off in range(0, s.size, 8 * MiB):
                h.update(s.read(off, 8 * MiB))
            assert h.hexdigest() == truth[rp.name], rp.name
    # gc collects what the killed runs left (orphan packs and unreferenced chunks)
    rpfs("prune", str(repo))
    v = json.loads(rpfs("verify", str(repo), "--read-data", "--json").stdout)
    assert v["ok"] and not any("not in the catalog" in n for n in v["notes"]), v
    assert not os.listdir(repo / "packs" / "tmp")
