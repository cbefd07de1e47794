"""The project's fixture VM (tools.fixtures "small": a Hyper-V folder in two states, the
second after guest changes written into the VHDX in place) through backup and back."""

from __future__ import annotations

import hashlib
import random

from rpfs.backup import backup
from rpfs.store import Repository
from tests.helpers.store_fixtures import MiB, changed_chunks, files_of, new_contents, sha256


def test_fixture_vm_two_states(small_fixtures, tmp_path):
    s1, s2 = small_fixtures.vm_states
    vm = small_fixtures.vm_changes.get("vm", s1.name)
    with Repository.init(tmp_path / "repo") as repo:
        r1 = backup(repo, [str(s1)], time="2024-04-01T00:00:00Z", show_progress=False)
        r2 = backup(repo, [str(s2)], time="2024-04-02T00:00:00Z", show_progress=False)
        assert r1.vm == r2.vm == vm
        # state 2 stores exactly the chunk contents that are new (sha256 ground truth)
        want, want_bytes = new_contents(list(files_of(s1).values()), list(files_of(s2).values()))
        assert (r2.new_chunks, r2.new_bytes_logical) == (want, want_bytes)
        differ = [changed_chunks(p, s2 / rel) for rel, p in files_of(s1).items()]
        print(f"\nfixture state 2: {sum(d[0] for d in differ)} x 1 MiB chunks differ"
              f" ({sum(d[1] for d in differ)} bytes); stored {r2.new_chunks} chunks,"
              f" {r2.new_bytes_logical} bytes -> {r2.new_bytes_stored} compressed;"
              f" guest changes (manifest): {small_fixtures.vm_changes['disks']}")
        assert r2.new_bytes_stored < r1.new_bytes_stored / 5
        rnd = random.Random(2)
        for rp, folder in zip(repo.recovery_points(vm), (s1, s2)):
            truth = files_of(folder)
            assert repo.files(rp) == {k: p.stat().st_size for k, p in truth.items()}
            for rel, p in truth.items():
                f = repo.open_file(rp, rel)
                h = hashlib.sha256()
                for off in range(0, f.size, 8 * MiB):
                    h.update(f.read(off, 8 * MiB))
                assert h.hexdigest() == sha256(p), rel
                with open(p, "rb") as src:
                    for _ in range(50):
                        o, n = rnd.randrange(f.size), rnd.choice([512, 4096, 65536])
                        src.seek(o)
                        assert f.read(o, n) == src.read(n)
