"""prune/gc under stress: a reader in another process keeps reading a recovery point that
a prune removes (and whose packs a repack retires), and prune processes SIGKILLed at random
moments, and at every step where a prune changes the repository, leave a repository that
verifies with every remaining recovery point intact: a killed prune forgot all it meant to
or nothing, and the next prune finishes it."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import signal
import subprocess
import time

from rpfs.backup import backup
from rpfs.store import Repository
import rpfs.store.objects as objects
from rpfs.store.maintenance.prune import Policy, prune
from rpfs.store.maintenance.sync import sync
from rpfs.store.maintenance.verify import verify
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


def _small_repo(tmp_path, n=5):
    """``n`` recovery points of a 2 MiB disk in 64 KiB chunks and 256 KiB packs (so a
    prune's gc both deletes and repacks packs), and the sha256 of each."""
    rnd = random.Random(5)
    src = tmp_path / "vm"
    src.mkdir()
    data = bytearray(rnd.randbytes(2 * MiB))
    path = tmp_path / "pristine"
    truth = {}
    with Repository.init(path, chunk_size=64 << 10, pack_size=256 << 10, repack_threshold=0.7) as r:
        for i in range(n):
            for _ in range(6):
                k = rnd.randrange(32) << 16
                data[k:k + (64 << 10)] = rnd.randbytes(64 << 10)
            (src / "disk.raw").write_bytes(data)
            name = f"2024-01-{i + 1:02d}T000000Z"
            backup(r, [str(src)], time=name, show_progress=False)
            truth[name] = hashlib.sha256(data).hexdigest()
    return path, truth


def _prune_killed_at(repo, log, n, *args):
    """``rpfs prune REPO args`` SIGKILLed just before its step ``n`` (0: run to the end)."""
    return subprocess.run([PY, "-m", "tests.helpers.killpoints", str(log), str(n), "prune", str(repo),
                           *args], cwd=ROOT, capture_output=True, text=True)


def _check_rps(r, truth, expect):
    names = [rp.name for rp in r.recovery_points("vm")]
    assert names == expect, names
    for rp in r.recovery_points("vm"):
        f = r.open_file(rp, "disk.raw")
        assert hashlib.sha256(f.read(0, f.size)).hexdigest() == truth[rp.name], rp.name


def test_prune_killed_at_every_step(tmp_path):
    """A prune forgets three of five recovery points and gcs; it is killed before each of its
    steps in turn (every link, rename and unlink in the repository, every catalog commit).
    Right after the kill a reader (and a writer, after its sync) sees all five recovery
    points or the two kept, all five exactly when the kill came before the prune's forget
    intent was linked into place; each reads its exact bytes and verify is ok; and the next
    prune finishes the job: verify ok with no notes, and the repository's objects are those
    of the recovery points left."""
    pristine, truth = _small_repo(tmp_path)
    every, keep = sorted(truth), sorted(truth)[-2:]
    whole = tmp_path / "whole"
    shutil.copytree(pristine, whole)
    p = _prune_killed_at(whole, tmp_path / "steps", 0, "--keep-last", "2")
    assert p.returncode == 0, p.stderr
    steps = (tmp_path / "steps").read_text().splitlines()
    # the commit point: the intent linked into forget/ (a kill before it: nothing forgotten)
    decided = [i for i, s in enumerate(steps, 1) if s.split()[1:2] == ["link"] and " forget/" in s]
    assert any("pack" in s and "rename" in s for s in steps), "the gc repacked nothing"
    for n in range(1, len(steps) + 1):
        repo = tmp_path / f"killed{n}"
        shutil.copytree(pristine, repo)
        p = _prune_killed_at(repo, tmp_path / f"steps{n}", n, "--keep-last", "2")
        assert p.returncode == -signal.SIGKILL, (n, steps[n - 1], p.stderr)
        step = steps[n - 1]
        gone = bool(decided) and n > decided[0]     # killed after the intent was in place
        with Repository.open(repo) as r:       # as a mount opens it
            v = verify(r, read_data=True, show_progress=False)
            assert v.ok, (step, v.problems, v.damage)
            _check_rps(r, truth, keep if gone else every)
            with r.lock("backup", exclusive=False):
                sync(r)                          # what a backup sees first
            _check_rps(r, truth, keep if gone else every)
            prune(r, Policy())                   # the next prune: gc, and what was decided
            _check_rps(r, truth, keep if gone else every)
            v = verify(r, read_data=True, show_progress=False)
            assert v.ok and not v.notes, (step, v.as_dict())
            left = {objects.rp_object_name(r.crypto, "vm", rp) for rp in (keep if gone else every)}
            assert set(r.backend.list_objects(objects.RPS)) == left, step
            assert not list(r.backend.list_objects("forget")), step
        shutil.rmtree(repo)
    assert len(decided) == 1, steps


def _decided_and_killed(tmp_path, pristine, dest):
    """A copy of ``pristine`` whose ``prune --keep-last 2`` was killed just after its forget
    intent was linked into place (before anything else changed)."""
    whole = tmp_path / "whole"
    if not whole.exists():
        shutil.copytree(pristine, whole)
        assert _prune_killed_at(whole, tmp_path / "steps", 0, "--keep-last", "2").returncode == 0
    steps = (tmp_path / "steps").read_text().splitlines()
    n = next(i for i, s in enumerate(steps, 1) if s.split()[1:2] == ["link"] and " forget/" in s)
    shutil.copytree(pristine, dest)
    assert _prune_killed_at(dest, tmp_path / "killed", n + 1, "--keep-last", "2").returncode == -signal.SIGKILL
    assert len(list((dest / "forget").iterdir())) == 1 and len(list((dest / "rps").iterdir())) == 5
    return dest


def test_what_a_killed_prune_decided_is_finished_by_prune_or_repair(tmp_path):
    """Killed right after its decision (the intent in place, every object still there):
    verify is ok and says a prune is to be finished; a backup of a name being forgotten is
    refused in one line (its object would be deleted with the old one's) until a prune
    finishes the job; `rpfs repair`, with the catalog as it is or rebuilt from nothing,
    finishes it too, and never brings a forgotten recovery point back."""
    pristine, truth = _small_repo(tmp_path)
    keep = sorted(truth)[-2:]
    repo = _decided_and_killed(tmp_path, pristine, tmp_path / "a")
    v = rpfs("verify", str(repo), "--read-data")
    assert "note: 3 recovery point(s) forgotten by an interrupted prune (vm/2024-01-01T000000Z," in v.stderr
    assert "the next prune or repair finishes removing them" in v.stderr
    assert v.stdout.startswith("ok: 2 recovery points"), v.stdout
    b = rpfs("backup", str(repo), str(tmp_path / "vm"), "--time", "2024-01-02T00:00:00Z", check=False)
    assert b.returncode != 0 and b.stderr.splitlines() == [
        "rpfs: VM 'vm''s recovery point 2024-01-02T000000Z is being forgotten by an interrupted"
        " prune: run `rpfs prune REPO` first, which finishes it"], b.stderr
    out = rpfs("prune", str(repo)).stdout.splitlines()
    assert out[:3] == [f"remove  vm/{n}  forgotten by an interrupted prune" for n in sorted(truth)[:3]], out
    assert not list((repo / "forget").iterdir())
    rpfs("backup", str(repo), str(tmp_path / "vm"), "--time", "2024-01-02T00:00:00Z")
    v = json.loads(rpfs("verify", str(repo), "--read-data", "--json").stdout)
    assert v["ok"] and not v["notes"] and v["recovery_points"] == 3, v

    for rebuild in (False, True):
        repo = _decided_and_killed(tmp_path, pristine, tmp_path / f"repair{rebuild}")
        if rebuild:
            for f in repo.glob("catalog.sqlite*"):
                f.unlink()
        rpfs("repair", str(repo))
        with Repository.open(repo) as r:
            _check_rps(r, truth, keep)
            assert len(list(r.backend.list_objects(objects.RPS))) == 2
            assert not list(r.backend.list_objects("forget"))
        v = json.loads(rpfs("verify", str(repo), "--read-data", "--json").stdout)
        assert v["ok"] and not v["notes"], v


def test_an_unreadable_forget_intent_keeps_what_it_named(tmp_path):
    """A damaged intent (bad input like any other): what it named cannot be known, so
    nothing is forgotten by it; verify names it as a problem in one line, prune and a plain
    open carry on, every recovery point still reads."""
    pristine, truth = _small_repo(tmp_path)
    repo = tmp_path / "repo"
    shutil.copytree(pristine, repo)
    (repo / "forget").mkdir()
    (repo / "forget" / ("ab" * 16)).write_bytes(b"RPFSOBJ1" + bytes(40))
    v = rpfs("verify", str(repo), check=False)
    assert v.returncode == 1
    problems = [line for line in v.stdout.splitlines() if line.startswith("problem:")]
    assert len(problems) == 1 and f"forget intent forget/{'ab' * 16} is unreadable" in problems[0], v.stdout
    rpfs("prune", str(repo), "--keep-last", "4")
    with Repository.open(repo) as r:
        _check_rps(r, truth, sorted(truth)[1:])
    assert (repo / "forget" / ("ab" * 16)).exists()


def test_the_prune_that_finishes_a_killed_one_killed_at_every_step(tmp_path):
    """The roll-forward is killed too: a prune killed right after its decision, then the
    next prune (no rule) killed before each of its steps up to the end of its gc. Each time
    the three stay forgotten, the two kept read their exact bytes and verify is ok; a third
    prune leaves verify ok with no notes and nothing of the three in the repository."""
    pristine, truth = _small_repo(tmp_path)
    keep = sorted(truth)[-2:]
    decided = _decided_and_killed(tmp_path, pristine, tmp_path / "decided")
    whole = tmp_path / "finished"
    shutil.copytree(decided, whole)
    assert _prune_killed_at(whole, tmp_path / "steps2", 0).returncode == 0
    steps = (tmp_path / "steps2").read_text().splitlines()
    assert any(" forget/" in s for s in steps), steps
    for n in range(1, len(steps) + 1):
        repo = tmp_path / f"again{n}"
        shutil.copytree(decided, repo)
        p = _prune_killed_at(repo, tmp_path / f"steps2-{n}", n)
        assert p.returncode == -signal.SIGKILL, (steps[n - 1], p.stderr)
        with Repository.open(repo) as r:
            _check_rps(r, truth, keep)
            assert verify(r, read_data=True, show_progress=False).ok, steps[n - 1]
            prune(r, Policy())
            _check_rps(r, truth, keep)
            v = verify(r, read_data=True, show_progress=False)
            assert v.ok and not v.notes, (steps[n - 1], v.as_dict())
            assert set(r.backend.list_objects(objects.RPS)) == {
                objects.rp_object_name(r.crypto, "vm", rp) for rp in keep}, steps[n - 1]
            assert not list(r.backend.list_objects("forget")), steps[n - 1]
        shutil.rmtree(repo)
