"""Retention decisions, prune + gc reclaiming space, kept recovery points intact, and a
reader that already opened a file surviving a concurrent prune/repack."""

from __future__ import annotations

import hashlib
import json
import os
import random
from datetime import datetime, timedelta, timezone

import pytest

from rpfs.backup import backup
from streams.errors import UsageError
from rpfs.store.maintenance.prune import Policy, decide, prune
from rpfs.store import RecoveryPointRecord, Repository
from tests.helpers.store_fixtures import MiB, rpfs


def _rp(t: datetime, i: int) -> RecoveryPointRecord:
    return RecoveryPointRecord("vm", t.strftime("%Y-%m-%dT%H%M%SZ"), t, 0, 0, 0, i)


def _kept(rps, policy):
    return sorted(d.rp.name for d in decide(rps, policy) if d.keep)


def test_retention_semantics():
    base = datetime(2024, 1, 1, 12, tzinfo=timezone.utc)
    # two RPs a day (06:00 and 18:00) for 100 days
    rps = [_rp(base + timedelta(days=d, hours=h), i)
           for i, (d, h) in enumerate((d, h) for d in range(100) for h in (-6, 6))]
    newest = max(rps, key=lambda r: r.time)
    assert _kept(rps, Policy(last=3)) == sorted(r.name for r in sorted(rps, key=lambda r: r.time)[-3:])
    daily = _kept(rps, Policy(daily=7))
    assert len(daily) == 7 and all(n.endswith("T180000Z") for n in daily)   # newest of each day
    assert newest.name in daily
    weekly = decide(rps, Policy(weekly=4))
    kept = [d for d in weekly if d.keep]
    assert len(kept) == 4 and len({d.rp.time.isocalendar()[:2] for d in kept}) == 4
    assert all("weekly" in d.reasons[0] for d in kept)
    monthly = _kept(rps, Policy(monthly=12))
    assert monthly == ["2024-01-31T180000Z", "2024-02-29T180000Z", "2024-03-31T180000Z",
                       "2024-04-09T180000Z"]
    assert len(_kept(rps, Policy(yearly=5))) == 1
    # rules combine; reasons are all listed
    ds = decide(rps, Policy(last=1, daily=2, monthly=1))
    assert ds[0].reasons == ["last 1/1", "daily 1/2 (2024-04-09)", "monthly 1/1 (2024-04)"]
    assert sum(d.keep for d in ds) == 2
    with pytest.raises(UsageError, match="--keep-last must be a non-negative number"):
        Policy(last=-1).validate()


def _write_states(d, rnd, n):
    """n states of one disk; every state changes 4 of 16 MiB."""
    d.mkdir(exist_ok=True)
    data = bytearray(rnd.randbytes(16 * MiB))
    states = []
    for i in range(n):
        for _ in range(4):
            k = rnd.randrange(16)
            data[k * MiB:(k + 1) * MiB] = rnd.randbytes(MiB)
        states.append(bytes(data))
    return states


def _sha(repo, rp, path="disk.raw"):
    s = repo.open_file(rp, path)
    return hashlib.sha256(s.read(0, s.size)).hexdigest()


def test_prune_gc_reclaims_and_keeps_kept_intact(tmp_path):
    rnd = random.Random(5)
    src = tmp_path / "vm"
    states = _write_states(src, rnd, 8)
    path = tmp_path / "repo"
    truth = {}
    with Repository.init(path, pack_size=4 * MiB) as repo:
        for i, st in enumerate(states):
            (src / "disk.raw").write_bytes(st)
            name = f"2024-01-{i + 1:02d}T000000Z"
            backup(repo, [str(src)], time=name, show_progress=False)
            truth[name] = hashlib.sha256(st).hexdigest()
        before = sum(s for _, s in repo.backend.list())
        dry = prune(repo, Policy(last=2), dry_run=True)
        assert len(dry.removed) == 6 and dry.gc.chunks_deleted > 0
        assert sum(s for _, s in repo.backend.list()) == before
        assert len(repo.recovery_points("vm")) == 8
        res = prune(repo, Policy(last=2))
        after = sum(s for _, s in repo.backend.list())
        assert [rp.name for rp in repo.recovery_points("vm")] == ["2024-01-07T000000Z", "2024-01-08T000000Z"]
        assert res.gc.chunks_deleted > 0 and res.gc.packs_deleted > 0 and res.gc.packs_pending == 0
        # what the two kept states need, and no pack below the waste threshold (0.5) remains
        live = len({st[k:k + MiB] for st in states[-2:] for k in range(0, 16 * MiB, MiB)}) * MiB
        assert live < after <= live / 0.5 + 64 * 1024 and after < before * 0.6, (before, after, live)
        for rp in repo.recovery_points("vm"):
            assert _sha(repo, rp) == truth[rp.name]
    v = json.loads(rpfs("verify", str(path), "--read-data", "--json").stdout)
    assert v["ok"] and v["recovery_points"] == 2
    # a new backup after gc still dedups against surviving chunks
    with Repository.open(path) as repo:
        r = backup(repo, [str(src)], time="2024-02-01T00:00:00Z", show_progress=False)
        assert r.new_chunks == 0


def test_reader_keeps_its_data_through_prune_and_repack(tmp_path):
    rnd = random.Random(9)
    src = tmp_path / "vm"
    states = _write_states(src, rnd, 4)
    path = tmp_path / "repo"
    with Repository.init(path, pack_size=8 * MiB, repack_threshold=0.9) as w:
        for i, st in enumerate(states):
            (src / "disk.raw").write_bytes(st)
            backup(w, [str(src)], time=f"2024-01-0{i + 1}T00:00:00Z", show_progress=False)
    reader = Repository.open(path)
    reader.cache.max_bytes = 0                 # every read goes to the packs
    oldest = reader.recovery_points("vm")[0]
    f = reader.open_file(oldest, "disk.raw")   # locations resolved now
    newest = reader.recovery_points("vm")[-1]
    g = reader.open_file(newest, "disk.raw")
    with Repository.open(path) as w:
        res = prune(w, Policy(last=1))
        assert res.gc.packs_retired > 0 and res.gc.packs_pending > 0 and res.gc.packs_deleted == 0
        assert res.gc.packs_repacked > 0
    # the pruned RP stays readable for the reader that had it open, and so do moved chunks
    assert hashlib.sha256(f.read(0, f.size)).digest() == hashlib.sha256(states[0]).digest()
    assert g.read(0, g.size) == states[-1]
    # a reader that opens now sees the new locations; after the old reader leaves, gc deletes
    with Repository.open(path) as r2:
        assert r2.open_file(r2.recovery_points("vm")[0], "disk.raw").read(0, 16 * MiB) == states[-1]
    reader.close()
    with Repository.open(path) as w:
        res = prune(w, Policy())
        assert res.gc.packs_pending == 0 and res.gc.packs_deleted > 0
        names = {n for n, _ in w.backend.list()}
        rows = {r[0] for r in w.query("SELECT name FROM packs")}
        assert names == rows
        assert w.open_file(w.recovery_points("vm")[0], "disk.raw").read(0, 16 * MiB) == states[-1]


def test_stale_reader_registration_does_not_pin_packs(tmp_path):
    """A reader killed without closing leaves a lock file that no longer holds a lock."""
    src = tmp_path / "vm"
    src.mkdir()
    (src / "disk.raw").write_bytes(os.urandom(2 * MiB))
    path = tmp_path / "repo"
    with Repository.init(path) as w:
        backup(w, [str(src)], time="2024-01-01T00:00:00Z", show_progress=False)
        (src / "disk.raw").write_bytes(os.urandom(2 * MiB))
        backup(w, [str(src)], time="2024-01-02T00:00:00Z", show_progress=False)
    (path / "readers" / "e000000000000-999999-dead.lock").write_text("")
    with Repository.open(path) as w:
        res = prune(w, Policy(last=1))
        assert res.gc.packs_deleted == 1 and res.gc.packs_pending == 0
    assert not (path / "readers" / "e000000000000-999999-dead.lock").exists()


def test_prune_cli(tmp_path):
    src = tmp_path / "vm"
    src.mkdir()
    path = tmp_path / "repo"
    rpfs("init", str(path))
    for day in range(1, 5):
        (src / "disk.raw").write_bytes(os.urandom(MiB))
        rpfs("backup", str(path), str(src), "--time", f"2024-06-0{day}T10:00:00Z")
    p = rpfs("prune", str(path), "--keep-daily", "2", "--dry-run")
    assert "would remove  vm/2024-06-01T100000Z" in p.stdout and "keep    vm/2024-06-04T100000Z  daily 1/2" in p.stdout
    out = json.loads(rpfs("prune", str(path), "--keep-daily", "2", "--json").stdout)
    assert out["removed"] == 2 and out["gc"]["packs_deleted"] == 2
    assert [r["rp"] for r in json.loads(rpfs("list", str(path), "vm", "--json").stdout)] == \
        ["2024-06-03T100000Z", "2024-06-04T100000Z"]


def test_long_lived_reader_releases_packs_when_old_files_close(tmp_path):
    """A mount keeps its Repository open for days: files opened after a gc register at the
    new epoch, and the old registration goes away with the last file that used it."""
    import gc as pygc
    rnd = random.Random(4)
    src = tmp_path / "vm"
    states = _write_states(src, rnd, 3)
    path = tmp_path / "repo"
    with Repository.init(path, pack_size=8 * MiB) as w:
        for i, st in enumerate(states):
            (src / "disk.raw").write_bytes(st)
            backup(w, [str(src)], time=f"2024-01-0{i + 1}T00:00:00Z", show_progress=False)
    mount = Repository.open(path)
    old = mount.open_file(mount.recovery_points("vm")[0], "disk.raw")
    with Repository.open(path) as w:
        assert prune(w, Policy(last=1)).gc.packs_pending > 0
    assert old.read(0, old.size) == states[0]          # still readable: packs pinned
    new = mount.open_file(mount.recovery_points("vm")[-1], "disk.raw")
    assert len(mount.reader_files) == 2                # old + new registration
    del old
    pygc.collect()
    assert len(mount.reader_files) == 1
    with Repository.open(path) as w:
        res = prune(w, Policy())
        assert res.gc.packs_pending == 0 and res.gc.packs_deleted > 0
    assert new.read(0, new.size) == states[-1]         # the mount keeps working
    mount.close()
    assert not [f for f in os.listdir(path / "readers")]
