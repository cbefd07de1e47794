"""Files unchanged by stat are not read again; anything else is; catalog v1 -> v2 migration."""

from __future__ import annotations

import os
import sqlite3
import time

from rpfs.backup import backup
from rpfs.store import Repository, catalog
from tests.helpers.store_fixtures import MiB


def _old(path, t=1_600_000_000):
    os.utime(path, (t, t))


def test_unchanged_files_reused_unread(tmp_path):
    src = tmp_path / "vm"
    src.mkdir()
    a, b = src / "parent.vhdx", src / "child.avhdx"
    a.write_bytes(os.urandom(3 * MiB))
    b.write_bytes(os.urandom(2 * MiB))
    _old(a)
    _old(b)
    time.sleep(2.1)                 # ctime must be older than the racy window too
    with Repository.init(tmp_path / "repo") as r:
        r1 = backup(r, [str(src)], time="2024-01-01T00:00:00Z", show_progress=False)
        assert r1.unchanged_files == 0 and r1.read_bytes == 5 * MiB
        b.write_bytes(os.urandom(2 * MiB))   # the child changes, the parent does not
        r2 = backup(r, [str(src)], time="2024-01-02T00:00:00Z", show_progress=False)
        assert r2.unchanged_files == 1 and r2.unchanged_bytes == 3 * MiB
        assert r2.read_bytes == 2 * MiB and r2.new_chunks == 2
        # b was modified moments ago: recorded as racy, so read again even if untouched
        r3 = backup(r, [str(src)], time="2024-01-03T00:00:00Z", show_progress=False)
        assert r3.unchanged_files == 1 and r3.read_bytes == 2 * MiB
        # same size, mtime put back: the ctime still betrays the change
        data = bytearray(a.read_bytes())
        data[5] ^= 0xFF
        a.write_bytes(bytes(data))
        _old(a)
        r4 = backup(r, [str(src)], time="2024-01-04T00:00:00Z", show_progress=False)
        assert r4.read_bytes >= 3 * MiB and r4.new_chunks == 1
        r5 = backup(r, [str(src)], time="2024-01-05T00:00:00Z", show_progress=False,
                    force_read=True)
        assert r5.unchanged_files == 0 and r5.read_bytes == 5 * MiB and r5.new_chunks == 0
        for rp in r.recovery_points("vm")[3:]:
            f = r.open_file(rp, "parent.vhdx")
            assert f.read(0, f.size) == bytes(data)
            f = r.open_file(rp, "child.avhdx")
            assert f.read(0, f.size) == b.read_bytes()


def test_v1_catalog_migrates(tmp_path):
    path = tmp_path / "repo"
    Repository.init(path).close()
    # rebuild the catalog as schema version 1 had it
    cat = path / "catalog.sqlite"
    for suffix in ("", "-wal", "-shm"):
        p = str(cat) + suffix
        if os.path.exists(p):
            os.unlink(p)
    db = sqlite3.connect(cat, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("BEGIN")
    catalog._v1(db)
    db.execute("PRAGMA user_version = 1")
    db.execute("COMMIT")
    db.execute("INSERT INTO vms (name) VALUES ('old')")
    db.execute("INSERT INTO recovery_points (vm_id, name, time, logical_size, stored_size, file_count,"
               " new_chunks, chunk_size, created) VALUES (1, '2020-01-01T000000Z', 1577836800, 0, 0, 1, 0,"
               " 1048576, 0)")
    db.execute("INSERT INTO files (rp_id, path, size, chunk_map) VALUES (1, 'empty', 0, X'4d31')")
    db.close()
    with Repository.open(path) as r:
        assert sqlite3.connect(cat).execute("PRAGMA user_version").fetchone()[0] == catalog.SCHEMA_VERSION
        rp = r.recovery_points("old")[0]
        assert r.files(rp) == {"empty": 0}
        src = tmp_path / "vm"
        src.mkdir()
        (src / "empty").write_bytes(b"")
        res = backup(r, [str(src)], vm="old", time="2024-01-01T00:00:00Z", show_progress=False)
        assert res.unchanged_files == 0      # v1 rows carry no identity: always read
