"""Model test: random sequences of backups, prunes (with repacks) and reads against a plain
dict of what each recovery point must contain. After every step the repository verifies
with --read-data and every surviving recovery point reads back bit-identical. A second
Repository (a mount) holds files open across steps: they must keep reading what they read
when opened, even after their recovery point is pruned and their packs repacked."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, event, given, settings, strategies as st

from rpfs.backup import backup
from rpfs.store.maintenance.prune import Policy, prune
from rpfs.store import Repository
from rpfs.store.maintenance.verify import verify

K = 4096
PACK = 1 << 16     # the smallest pack size config allows: 16 chunks


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32), ops=st.lists(st.sampled_from(["backup", "backup", "backup", "prune", "vm2"]),
                                               min_size=4, max_size=14),
       threshold=st.sampled_from([0.0, 0.5, 0.95]))
def test_random_backup_prune_sequences(tmp_path_factory, seed, ops, threshold):
    rnd = random.Random(seed)
    base = tmp_path_factory.mktemp("m")
    src = {"a": base / "a", "b": base / "b"}
    for d in src.values():
        d.mkdir()
    data = {"a": bytearray(rnd.randbytes(40 * K)), "b": bytearray(rnd.randbytes(20 * K) + bytes(3 * K))}
    truth: dict[tuple[str, str], bytes] = {}
    day = 0
    held: list = []
    with Repository.init(base / "repo", chunk_size=K, pack_size=PACK,
                         repack_threshold=threshold) as repo, Repository.open(base / "repo") as mount:
        mount.cache.max_bytes = 0
        for op in ops:
            if op in ("backup", "vm2"):
                vm = "a" if op == "backup" else "b"
                d = data[vm]
                for _ in range(rnd.randrange(0, 12)):      # change some blocks, maybe grow
                    k = rnd.randrange(len(d) // K + 1)
                    d[k * K:(k + 1) * K] = rnd.choice([rnd.randbytes(K), bytes(K), bytes(d[:K])])
                (src[vm] / "disk.raw").write_bytes(bytes(d))
                day += 1
                r = backup(repo, [str(src[vm])], vm=vm,
                           time=f"2024-{1 + day // 28:02d}-{1 + day % 28:02d}T00:00:00Z",
                           show_progress=False, force_read=rnd.random() < 0.5)
                truth[(vm, r.rp)] = bytes(d)
            else:
                pol = Policy(last=rnd.randrange(1, 3), daily=rnd.randrange(0, 2), monthly=rnd.randrange(0, 2))
                res = prune(repo, pol)
                event(f"prune: repacked={bool(res.gc.packs_repacked)} deleted={bool(res.gc.packs_deleted)}")
                for dcs in res.decisions:
                    if not dcs.keep:
                        del truth[(dcs.rp.vm, dcs.rp.name)]
            v = verify(repo, read_data=True, show_progress=False)
            assert v.ok, (v.problems, v.damage)
            listed = {(rp.vm, rp.name) for rp in repo.all_recovery_points()}
            assert listed == set(truth)
            for (vm, name), want in truth.items():
                f = repo.open_file(repo.recovery_point(vm, name), "disk.raw")
                assert f.read(0, f.size) == want
            if truth and rnd.random() < 0.6:
                vm, name = rnd.choice(sorted(truth))
                held.append((mount.open_file(mount.recovery_point(vm, name), "disk.raw"), truth[(vm, name)]))
            while held and rnd.random() < 0.5:
                held.pop(rnd.randrange(len(held)))
            for f, want in held:
                assert f.read(0, f.size) == want
