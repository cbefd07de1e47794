"""prune/gc under stress: a reader in another process keeps reading a recovery point that
a prune removes (and whose packs a repack retires), and prune processes SIGKILLed at random
moments leave a repository that verifies with every remaining recovery point intact."""

from __future__ import annotations

import hashlib
import json
import random
import signal
import subprocess
import time

from rpfs.backup import backup
from rpfs.store import Repository
from tests.helpers.store_fixtures import MiB, PY, ROOT, rpfs

READER = r"""
import hashlib, sys, time
from rpfs.store import Repository
repo = Repository.open(sys.argv[1])
rp = repo.recovery_points("vm")[0]
f = repo.open_file(rp, "disk.raw")
repo.cache.max_bytes = 0
print("ready", flush=True)
sys.stdin.readline()              # the parent pruned meanwhile
for _ in range(3):
    h = hashlib.sha256()
    for off in range(0, f.size, 4 << 20):
        h.update(f.read(off, 4 << 20))
    assert h.hexdigest() == sys.argv[2], "data changed under the reader"
print("ok", flush=True)
sys.stdin.readline()
repo.close()
"""


def _states(tmp_path, n, seed=3):
    rnd = random.Random(seed)
    src = tmp_path / "vm"
    src.mkdir()
    data = bytearray(rnd.randbytes(24 * MiB))
    out = []
    for _ in range(n):
        for _ in range(8):
            k = rnd.randrange(24)
            data[k * MiB:(k + 1) * MiB] = rnd.randbytes(MiB)
        out.append(bytes(data))
    return src, out


def _fill(tmp_path, n):
    src, states = _states(tmp_path, n)
    path = tmp_path / "repo"
    truth = {}
    with Repository.init(path, pack_size=2 * MiB, repack_threshold=0.9) as r:
        for i, st in enumerate(states):
            (src / "disk.raw").write_bytes(st)
            name = f"2024-01-{i + 1:02d}T000000Z"
            backup(r, [str(src)], time=name, show_progress=False)
            truth[name] = hashlib.sha256(st).hexdigest()
    return path, truth


def test_reader_process_survives_prune(tmp_path):
    path, truth = _fill(tmp_path, 4)
    oldest = sorted(truth)[0]
    with subprocess.Popen([PY, "-c", READER, str(path), truth[oldest]], cwd=ROOT, text=True,
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as p:
        assert p.stdout.readline().strip() == "ready"
        out = json.loads(rpfs("prune", str(path), "--keep-last", "1", "--json").stdout)
        assert out["removed"] == 3 and out["gc"]["packs_pending"] > 0
        assert out["gc"]["packs_repacked"] > 0
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "ok", p.stderr.read()
        p.stdin.write("bye\n")
        p.stdin.flush()
        assert p.wait(timeout=30) == 0
    out = json.loads(rpfs("prune", str(path), "--json").stdout)
    assert out["gc"]["packs_pending"] == 0 and out["gc"]["packs_deleted"] > 0
    assert json.loads(rpfs("verify", str(path), "--read-data", "--json").stdout)["ok"]


def test_sigkill_prune_at_random_moments(tmp_path):
    path, truth = _fill(tmp_path, 10)
    rnd = random.Random(8)
    keep = 9
    prev = 10
    kills = 0
    while keep >= 1:      # five prunes, however long they take
        # A prune takes about as long as its dry run plus gc (0.1-0.3 s here, more on a
        # loaded machine): kill somewhere inside that, measured, not guessed.
        t0 = time.monotonic()
        rpfs("prune", str(path), "--keep-last", str(keep), "--dry-run")
        dry = time.monotonic() - t0
        p = subprocess.Popen([PY, "-m", "rpfs", "prune", str(path), "--keep-last", str(keep)],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rnd.uniform(0.3, 1.1) * dry)
        p.send_signal(signal.SIGKILL)
        if p.wait() != 0:
            kills += 1
        v = rpfs("verify", str(path), "--read-data", "--json", check=False)
        assert v.returncode == 0, v.stdout
        with Repository.open(path) as r:
            names = [rp.name for rp in r.recovery_points("vm")]
            # the newest survive; a killed prune forgot all it meant to or nothing
            assert names == sorted(truth)[-len(names):] and len(names) >= keep, names
            assert len(names) in (keep, prev), (names, keep, prev)
            prev = len(names)
            for rp in r.recovery_points("vm"):
                f = r.open_file(rp, "disk.raw")
                assert hashlib.sha256(f.read(0, f.size)).hexdigest() == truth[rp.name]
        keep -= 2
    assert kills >= 1
    print(f"\n{kills} prunes killed mid-run")
    rpfs("prune", str(path))
    v = json.loads(rpfs("verify", str(path), "--read-data", "--json").stdout)
    assert v["ok"] and not v["notes"], v
