"""verify: clean repositories pass; injected damage is found and traced to every VM,
recovery point, file and byte range it touches."""

from __future__ import annotations

import json
import os
import random
import sqlite3

from rpfs.backup import backup
from streams.errors import IntegrityError
from rpfs.store import Repository
from rpfs.store.maintenance.verify import verify
from tests.helpers.store_fixtures import MiB, rpfs, vm_states


def _repo_two_vms(tmp_path):
    """web01 twice (state 1, state 2) and a second VM sharing one file's content."""
    s1, s2 = vm_states()
    path = tmp_path / "repo"
    with Repository.init(path, pack_size=2 * MiB) as r:
        backup(r, [str(s1)], time="2024-01-01T00:00:00Z", show_progress=False)
        backup(r, [str(s2)], time="2024-01-02T00:00:00Z", show_progress=False)
        backup(r, [str(s1 / "Virtual Hard Disks" / "data.vhd")], vm="db01",
               time="2024-01-02T00:00:00Z", show_progress=False)
    return path, s1, s2


def _chunk_of(path, vm, rp, file, index):
    with Repository.open(path) as r:
        f = r.open_file(r.recovery_point(vm, rp), file)
        loc = f.locs[f.ids[index]]
        return loc.pack, loc.offset, loc.csize


def test_clean_repository_verifies(tmp_path):
    path, _, _ = _repo_two_vms(tmp_path)
    p = rpfs("verify", str(path), "--read-data")
    assert p.stdout.startswith("ok: 3 recovery points, 7 files")
    with Repository.open(path) as r:
        res = verify(r, read_data=True, show_progress=False)
    assert res.ok and res.chunks_read == res.chunks and res.bytes_read > 0


def test_bit_flip_found_and_traced(tmp_path):
    path, _, _ = _repo_two_vms(tmp_path)
    # chunk 2 of data.vhd: shared by web01 (both RPs, unchanged file) and db01
    pack, off, csize = _chunk_of(path, "web01", "2024-01-01T000000Z", "Virtual Hard Disks/data.vhd", 2)
    with open(os.path.join(path, "packs", pack[:2], pack + ".pack"), "r+b") as f:
        f.seek(off + csize // 3)
        b = f.read(1)[0]
        f.seek(off + csize // 3)
        f.write(bytes([b ^ 0x01]))
    # metadata-only verify cannot see a flipped bit; --read-data does
    assert rpfs("verify", str(path)).returncode == 0
    p = rpfs("verify", str(path), "--read-data", "--json", check=False)
    assert p.returncode == 1
    out = json.loads(p.stdout)
    assert not out["ok"]
    hit = {(d["vm"], d["rp"], d["file"], tuple(map(tuple, d["ranges"]))) for d in out["damage"]}
    rng = ((2 * MiB, 3 * MiB),)
    assert hit == {("web01", "2024-01-01T000000Z", "Virtual Hard Disks/data.vhd", rng),
                   ("web01", "2024-01-02T000000Z", "Virtual Hard Disks/data.vhd", rng),
                   ("db01", "2024-01-02T000000Z", "data.vhd", rng)}
    assert all(pack in d["reasons"][0] for d in out["damage"])
    p = rpfs("verify", str(path), "--read-data", check=False)
    assert p.returncode == 1
    assert "damaged: db01/2024-01-02T000000Z/files/data.vhd bytes 0x200000-0x300000" in p.stdout
    assert p.stdout.splitlines()[-1].startswith("DAMAGED")


def test_missing_and_truncated_packs_and_bad_map(tmp_path):
    path, _, _ = _repo_two_vms(tmp_path)
    pack, _, _ = _chunk_of(path, "db01", "2024-01-02T000000Z", "data.vhd", 0)
    pfile = os.path.join(path, "packs", pack[:2], pack + ".pack")
    size = os.path.getsize(pfile)
    os.truncate(pfile, size - 100)
    with Repository.open(path) as r:
        res = verify(r, show_progress=False)
    assert not res.ok and any("catalog says" in p for p in res.problems)
    assert any(d.vm == "db01" and d.ranges[0][0] == 0 for d in res.damage)
    os.unlink(pfile)
    # a damaged chunk map damages exactly that file
    db = sqlite3.connect(os.path.join(path, "catalog.sqlite"))
    db.execute("UPDATE files SET chunk_map = X'4d31deadbeef' WHERE path = 'Virtual Machines/web01.vmcx'"
               " AND rp_id = 2")
    db.commit()
    db.close()
    with Repository.open(path) as r:
        res = verify(r, read_data=True, show_progress=False)
    assert any("is missing" in p for p in res.problems)
    bad_map = [d for d in res.damage if d.file == "Virtual Machines/web01.vmcx"]
    assert len(bad_map) == 1 and bad_map[0].rp == "2024-01-02T000000Z"
    assert "chunk map" in bad_map[0].reasons[0]


def test_random_flips_always_detected(tmp_path):
    """Any single flipped payload byte makes --read-data fail and names a file."""
    src = tmp_path / "vm"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(2 * MiB) + b"text " * 400_000)
    path = tmp_path / "repo"
    with Repository.init(path) as r:
        backup(r, [str(src)], time="2024-01-01T00:00:00Z", show_progress=False)
        rows = r.query("SELECT p.name, c.offset, c.csize FROM chunks c JOIN packs p ON p.id = c.pack_id")
    rnd = random.Random(3)
    for _ in range(5):
        name, off, csize = rnd.choice(rows)
        pos = off + rnd.randrange(csize)
        pf = os.path.join(path, "packs", name[:2], name + ".pack")
        with open(pf, "r+b") as f:
            f.seek(pos)
            b = f.read(1)[0]
            f.seek(pos)
            f.write(bytes([b ^ (1 << rnd.randrange(8))]))
        with Repository.open(path) as r:
            res = verify(r, read_data=True, show_progress=False)
        assert not res.ok and res.damage and res.damage[0].file == "a.bin"
        with open(pf, "r+b") as f:           # repair for the next round
            f.seek(pos)
            f.write(bytes([b]))


def test_inconsistent_catalog_rows_reported(tmp_path):
    path, _, _ = _repo_two_vms(tmp_path)
    db = sqlite3.connect(os.path.join(path, "catalog.sqlite"))
    db.execute("UPDATE recovery_points SET file_count = 9 WHERE id = 1")
    db.execute("UPDATE chunks SET offset = -5 WHERE id = 1")
    db.commit()
    db.close()
    with Repository.open(path) as r:
        res = verify(r, read_data=True, show_progress=False)
    assert any("catalog says 9 files" in p for p in res.problems)
    assert any("impossible offsets" in p for p in res.problems)
    assert res.damage and all("outside pack" in d.reasons[0] for d in res.damage)
    with Repository.open(path) as r:             # reading that chunk: a typed error, no crash
        f = r.open_file(r.recovery_point("web01", "2024-01-01T000000Z"), "Virtual Hard Disks/data.vhd")
        try:
            f.read(0, f.size)
        except IntegrityError:
            pass
