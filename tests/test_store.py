"""Repository: init, backup of a real VM folder, bit-identical reads, dedup of a second
state, integrity errors, concurrency with a running backup."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import subprocess
import threading

import pytest

from rpfs.backup import backup
from streams.errors import FormatError, IntegrityError, NotFoundError, UsageError
from rpfs.store import Repository, StoreOptions
from rpfs.store import catalog
from streams.stream import ZERO
from tests.helpers.store_fixtures import MiB, changed_chunks, new_contents, files_of, rpfs, sha256, vm_states


@pytest.fixture
def repo(tmp_path):
    r = Repository.init(tmp_path / "repo")
    yield r
    r.close()


def test_init_layout(tmp_path):
    p = tmp_path / "r"
    with Repository.init(p, chunk_size=1 << 16) as r:
        assert r.chunk_size == 1 << 16
    assert os.stat(p).st_mode & 0o777 == 0o700
    cfg = json.loads((p / "config.json").read_text())
    assert cfg["format"] == 2 and cfg["chunk_size"] == 65536 and cfg["hash"] == "blake3"
    assert cfg["frame_size"] == 65536      # new repositories write framed chunks
    assert cfg["raw_frame_size"] == 8192   # ... incompressible ones in 8 KiB raw frames
    db = sqlite3.connect(p / "catalog.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == catalog.SCHEMA_VERSION
    db.close()
    with pytest.raises(UsageError):
        Repository.init(p)                      # not empty
    with pytest.raises(UsageError):
        Repository.init(tmp_path / "x", chunk_size=3000)
    with pytest.raises(FormatError):
        Repository.open(tmp_path)               # not a repository
    with pytest.raises(NotFoundError):
        Repository.open(tmp_path / "nope")


def test_newer_schema_refused(tmp_path):
    Repository.init(tmp_path / "r").close()
    db = sqlite3.connect(tmp_path / "r" / "catalog.sqlite")
    db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(FormatError, match="newer"):
        Repository.open(tmp_path / "r")


def _check_identical(repo, rp, folder):
    files = repo.files(rp)
    truth = files_of(folder)
    assert files == {k: p.stat().st_size for k, p in truth.items()}
    rnd = random.Random(7)
    for rel, p in truth.items():
        s = repo.open_file(rp, rel)
        h = hashlib.sha256()
        for off in range(0, s.size, 3 * MiB + 17):
            h.update(s.read(off, 3 * MiB + 17))
        assert h.hexdigest() == sha256(p), rel
        data = p.read_bytes()
        for _ in range(100):
            o = rnd.randrange(s.size)
            n = rnd.choice([1, 511, 4096, 70_000, 2 * MiB + 3])
            assert s.read(o, n) == data[o:o + n]
        buf = bytearray(5000)
        assert s.readinto(s.size - 100, buf) == 100 and bytes(buf[:100]) == data[-100:]
        # ZERO extents really are zeros
        for e in s.extents():
            if e.kind == ZERO:
                assert data[e.offset:e.end].count(0) == e.length


def test_backup_two_states_dedup_and_read_back(repo, tmp_path):
    s1, s2 = vm_states()
    r1 = backup(repo, [str(s1)], time="2024-03-01T02:00:00Z", show_progress=False)
    r2 = backup(repo, [str(s2)], time="2024-03-02T02:00:00Z", show_progress=False)
    assert repo.vms() == ["web01"]
    rps = repo.recovery_points("web01")
    assert [r.name for r in rps] == ["2024-03-01T020000Z", "2024-03-02T020000Z"]
    assert rps[0].stored_size == r1.new_bytes_stored and rps[1].stored_size == r2.new_bytes_stored
    assert rps[1].file_count == 3
    # only the changed chunks were stored: ground truth from comparing the files directly
    changed = [changed_chunks(p, s2 / rel) for rel, p in files_of(s1).items()]
    want, want_bytes = new_contents(list(files_of(s1).values()), list(files_of(s2).values()))
    assert r2.new_chunks == want and r2.new_bytes_logical == want_bytes, (r2, want)
    assert r2.new_bytes_logical <= sum(c[1] for c in changed)
    print(f"\nstate 2: {sum(c[0] for c in changed)} chunks differ ({sum(c[1] for c in changed)} bytes);"
          f" stored {r2.new_chunks} chunks, {r2.new_bytes_logical} bytes ({r2.new_bytes_stored} compressed)")
    _check_identical(repo, rps[0], s1)
    _check_identical(repo, rps[1], s2)
    # an independent reader agrees: copy out and let qemu-img compare the VHDX
    out = tmp_path / "out.vhdx"
    s = repo.open_file(rps[1], "Virtual Hard Disks/disk0.vhdx")
    with open(out, "wb") as f:
        for off in range(0, s.size, 4 * MiB):
            f.write(s.read(off, 4 * MiB))
    p = subprocess.run(["qemu-img", "compare", "-f", "vhdx", "-F", "vhdx", str(out),
                        str(s2 / "Virtual Hard Disks" / "disk0.vhdx")], capture_output=True)
    assert p.returncode == 0, p.stdout
    # unchanged third backup stores nothing
    r3 = backup(repo, [str(s2)], time="2024-03-03T02:00:00Z", show_progress=False)
    assert r3.new_chunks == 0 and r3.new_bytes_stored == 0
    # duplicate name refused
    with pytest.raises(UsageError):
        backup(repo, [str(s2)], time="2024-03-03T02:00:00Z", show_progress=False)


def test_single_files_sparse_and_names(repo, tmp_path):
    f = tmp_path / "Big Disk.raw"
    with open(f, "wb") as fh:
        fh.write(os.urandom(MiB + 5))
        fh.seek(40 * MiB)
        fh.write(b"tail")
    g = tmp_path / "empty.bin"
    g.write_bytes(b"")
    r = backup(repo, [str(f), str(g)], time="2024-01-01T00:00:00+02:00", show_progress=False)
    assert r.vm == "Big Disk" and r.rp == "2023-12-31T220000Z"
    assert r.read_bytes < 4 * MiB          # the hole was not read
    rp = repo.recovery_points("Big Disk")[0]
    assert repo.files(rp) == {"Big Disk.raw": 40 * MiB + 4, "empty.bin": 0}
    s = repo.open_file(rp, "Big Disk.raw")
    assert s.read(40 * MiB - 2, 10) == b"\0\0tail"
    assert s.read(0, MiB + 5) == f.read_bytes()[:MiB + 5]
    assert repo.open_file(rp, "empty.bin").read(0, 10) == b""
    kinds = [(e.offset, e.kind) for e in s.extents()]
    assert kinds == [(0, "data"), (2 * MiB, "zero"), (40 * MiB, "data")]
    with pytest.raises(NotFoundError):
        repo.open_file(rp, "nope")
    with pytest.raises(NotFoundError):
        repo.recovery_points("nope")
    with pytest.raises(UsageError):
        backup(repo, [str(f)], vm="a/b", show_progress=False)


def _flip_in_pack(repo, chunk_id=None):
    db = sqlite3.connect(repo.catalog_path)
    row = db.execute("SELECT p.name, c.offset, c.csize FROM chunks c JOIN packs p ON p.id=c.pack_id"
                     + (" WHERE c.id = ?" if chunk_id else " ORDER BY c.id LIMIT 1"),
                     (chunk_id,) if chunk_id else ()).fetchone()
    db.close()
    path = repo.backend.path(row[0])
    with open(path, "r+b") as f:
        f.seek(row[1] + row[2] // 2)
        b = f.read(1)
        f.seek(row[1] + row[2] // 2)
        f.write(bytes([b[0] ^ 0x10]))
    return row


def test_bit_flip_raises_integrity_error_with_location(tmp_path):
    d = tmp_path / "vm"
    d.mkdir()
    (d / "a.bin").write_bytes(os.urandom(3 * MiB))
    with Repository.init(tmp_path / "repo") as repo:
        backup(repo, [str(d)], time="2024-01-01T00:00:00Z", show_progress=False)
        _flip_in_pack(repo)
    with Repository.open(tmp_path / "repo") as repo:   # fresh cache
        rp = repo.recovery_points("vm")[0]
        s = repo.open_file(rp, "a.bin")
        with pytest.raises(IntegrityError) as ei:
            s.read(0, MiB)                     # the whole chunk: the damaged frame too
        msg = str(ei.value)
        assert "vm vm" in msg and "2024-01-01T000000Z" in msg and "a.bin" in msg and "offset 0x0" in msg
        assert s.read(0, 10)                   # the chunk's first frame is not damaged
        assert s.read(MiB, 10)                 # other chunks still fine
        # a missing pack is an IntegrityError too
        for name, _ in list(repo.backend.list()):
            os.unlink(repo.backend.path(name))
    # a fresh repository: the reads above may still have chunk 2 on its way into this one's
    # cache (read ahead of the first whole-chunk read), which would answer from memory
    with Repository.open(tmp_path / "repo") as repo:
        rp = repo.recovery_points("vm")[0]
        with pytest.raises(IntegrityError, match="missing"):
            repo.open_file(rp, "a.bin").read(2 * MiB, 10)


def test_cache_is_bounded(tmp_path):
    d = tmp_path / "vm"
    d.mkdir()
    (d / "a.bin").write_bytes(os.urandom(8 * MiB))
    with Repository.init(tmp_path / "repo", StoreOptions(chunk_cache_bytes=2 * MiB)) as repo:
        backup(repo, [str(d)], time="2024-01-01T00:00:00Z", show_progress=False)
        s = repo.open_file(repo.recovery_points("vm")[0], "a.bin")
        s.read(0, 8 * MiB)
        assert repo.cache.bytes <= 2 * MiB and len(repo.cache) == 2
        s.read(7 * MiB, 10)
        assert repo.cache.hits >= 1


def test_concurrent_readers_threads_and_process_during_backup(tmp_path):
    """Reads (threads here, a CLI process too) keep working while a backup writes."""
    s1, s2 = vm_states()
    path = tmp_path / "repo"
    with Repository.init(path, pack_size=1 << 20) as repo:   # many small packs = many commits
        backup(repo, [str(s1)], time="2024-01-01T00:00:00Z", show_progress=False)
    reader = Repository.open(path)
    rp = reader.recovery_points("web01")[0]
    truth = (s1 / "Virtual Hard Disks" / "disk0.vhdx").read_bytes()
    stop = threading.Event()
    errors, reads = [], [0]

    def read_loop(seed):
        rnd = random.Random(seed)
        try:
            while not stop.is_set():
                s = reader.open_file(rp, "Virtual Hard Disks/disk0.vhdx")
                o = rnd.randrange(s.size)
                assert s.read(o, 65536) == truth[o:o + 65536]
                reader.recovery_points("web01")
                reads[0] += 1
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=read_loop, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    proc = subprocess.Popen([os.path.join(os.path.dirname(__file__), "..", ".venv", "bin", "python"),
                             "-m", "rpfs", "list", str(path), "web01", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with Repository.open(path) as w:
        for i in range(3):
            backup(w, [str(s2)], time=f"2024-01-0{i + 2}T00:00:00Z", show_progress=False)
    out, err = proc.communicate(timeout=60)
    stop.set()
    for t in threads:
        t.join()
    reader.close()
    assert not errors, errors
    assert reads[0] > 0
    assert proc.returncode == 0, err
    assert json.loads(out)[0]["rp"] == "2024-01-01T000000Z"
    with Repository.open(path) as r:
        assert len(r.recovery_points("web01")) == 4


def test_cli_init_backup_list(tmp_path):
    s1, _ = vm_states()
    repo = tmp_path / "repo"
    rpfs("init", str(repo))
    p = rpfs("backup", str(repo), str(s1), "--time", "2024-05-05T05:05:05Z", "--json")
    summary = json.loads(p.stdout)
    assert summary["vm"] == "web01" and summary["rp"] == "2024-05-05T050505Z"
    assert summary["files"] == 3 and summary["new_chunks"] > 0
    assert p.stderr == ""                       # no progress when not on a terminal
    p = rpfs("list", str(repo))
    assert p.stdout.splitlines()[0].split() == ["VM", "RPS", "NEWEST", "OLDEST", "SIZE", "STORED"]
    assert "web01" in p.stdout
    p = rpfs("list", str(repo), "web01")
    assert "2024-05-05T050505Z" in p.stdout and "MiB" in p.stdout
    p = rpfs("backup", str(repo), str(s1), "--time", "2024-05-05T05:05:05Z", check=False)
    assert p.returncode != 0 and p.stderr.startswith("rpfs: ") and "Traceback" not in p.stderr
    p = rpfs("list", str(repo), "nosuchvm", check=False)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1
    p = rpfs("init", str(repo), check=False)
    assert p.returncode == 2 and "not empty" in p.stderr


def test_progress_only_on_a_terminal(tmp_path):
    """On a pty the backup draws a progress line; piped, it prints nothing (tested above)."""
    import pty
    import select
    src = tmp_path / "vm"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(64 * MiB))
    rpfs("init", str(tmp_path / "repo"))
    from tests.helpers.store_fixtures import PY, ROOT
    master, slave = pty.openpty()
    p = subprocess.Popen([PY, "-m", "rpfs", "backup", str(tmp_path / "repo"), str(src)],
                         stdin=slave, stdout=slave, stderr=slave, cwd=ROOT,
                         env={**os.environ, "TERM": "xterm"})  # CI may run with TERM=dumb
    os.close(slave)
    out = b""
    while True:
        r, _, _ = select.select([master], [], [], 30)
        if not r:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    assert p.wait(timeout=60) == 0
    os.close(master)
    text = out.decode(errors="replace")
    assert "\rbackup vm/" in text and "% " in text and "B/s ETA" in text, text
    assert text.splitlines()[-1].startswith("vm/"), text     # line cleared, then the summary


def test_writer_never_waits_for_a_reader_transaction(tmp_path):
    """A reader holding a read transaction open (an unfinished SELECT) does not block a
    backup's commits or a prune; the reader's snapshot stays consistent meanwhile."""
    from rpfs.store.maintenance.prune import Policy, prune
    src = tmp_path / "vm"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(4 * MiB))
    path = tmp_path / "repo"
    with Repository.init(path, pack_size=1 << 20) as w:
        backup(w, [str(src)], time="2024-01-01T00:00:00Z", show_progress=False)
    db = sqlite3.connect(path / "catalog.sqlite", isolation_level=None)
    db.execute("BEGIN")
    cur = db.execute("SELECT id FROM chunks")
    cur.fetchone()                                  # read transaction open, statement pending
    with Repository.open(path) as w:     # a writer that waited would fail "database is locked"
        (src / "a.bin").write_bytes(os.urandom(4 * MiB))
        backup(w, [str(src)], time="2024-01-02T00:00:00Z", show_progress=False)
        prune(w, Policy(last=1))
    fresh = sqlite3.connect(path / "catalog.sqlite")   # committed while the reader still reads
    assert [r[0] for r in fresh.execute("SELECT name FROM recovery_points")] == ["2024-01-02T000000Z"]
    fresh.close()
    assert db.execute("SELECT count(*) FROM recovery_points").fetchone()[0] == 1   # its snapshot
    assert db.execute("SELECT name FROM recovery_points").fetchone()[0] == "2024-01-01T000000Z"
    cur.close()
    db.execute("COMMIT")
    assert db.execute("SELECT count(*) FROM recovery_points").fetchone()[0] == 1
    assert db.execute("SELECT name FROM recovery_points").fetchone()[0] == "2024-01-02T000000Z"
    db.close()


def test_many_threads_small_cache_few_fds(tmp_path, monkeypatch):
    """Concurrent random reads with constant cache eviction and pack-fd eviction."""
    rnd = random.Random(5)
    src = tmp_path / "vm"
    src.mkdir()
    data = rnd.randbytes(12 * MiB) + bytes(3 * MiB) + b"xyz" * (MiB // 3) + rnd.randbytes(MiB + 17)
    (src / "d.bin").write_bytes(data)
    with Repository.init(tmp_path / "repo", StoreOptions(chunk_cache_bytes=MiB),
                         pack_size=1 << 20) as repo:
        backup(repo, [str(src)], time="2024-01-01T00:00:00Z", show_progress=False)
        repo.backend._max_fds = 2
        f = repo.open_file(repo.recovery_points("vm")[0], "d.bin")
        errors = []

        def worker(seed):
            r = random.Random(seed)
            try:
                for _ in range(150):
                    o = r.randrange(len(data))
                    n = r.choice([1, 4096, 300_000, 2 * MiB])
                    assert f.read(o, n) == data[o:o + n]
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors[:3]
        assert repo.cache.bytes <= MiB


def test_thread_connections_do_not_accumulate(repo):
    """FUSE/trio worker threads come and go: their catalog connections must go with them."""
    import gc as pygc
    for _ in range(40):
        t = threading.Thread(target=repo.vms)
        t.start()
        t.join()
    pygc.collect()
    assert len(repo._conns) <= 1


def test_second_writer_refused_while_one_runs(tmp_path):
    src = tmp_path / "vm"
    src.mkdir()
    (src / "a.bin").write_bytes(b"x" * 1000)
    path = tmp_path / "repo"
    with Repository.init(path) as r:
        with r.writer_lock("backup"):
            p = rpfs("backup", str(path), str(src), check=False)
            assert p.returncode == 75 and p.stderr.count("\n") == 1
            assert "busy" in p.stderr and f"pid {os.getpid()}" in p.stderr
            assert rpfs("list", str(path)).returncode == 0          # readers are not refused
        assert rpfs("backup", str(path), str(src)).returncode == 0


def test_repair_of_a_file_holding_a_lost_chunk_twice(tmp_path):
    """A file whose lost chunk occurs twice gets one catalog row for it (one per occurrence
    made repair fail on the catalog's UNIQUE hash) and is named as damaged."""
    src = tmp_path / "web01"
    src.mkdir()
    block = random.Random(7).randbytes(64 << 10)
    (src / "disk0.img").write_bytes(block + random.Random(8).randbytes(64 << 10) + block)
    repo = tmp_path / "repo"
    rpfs("init", str(repo), "--chunk-size", "64K")
    rpfs("backup", str(repo), str(src), "--time", "2026-11-01T02:00:00Z", "--no-index")
    packs = list((repo / "packs").glob("*/*.pack"))
    assert packs
    for p in packs:
        p.unlink()
    for p in repo.glob("catalog.sqlite*"):
        p.unlink()
    r = rpfs("repair", str(repo), check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "web01/2026-11-01T020000Z/files/disk0.img: 3 of its 3 chunks are in no pack" in r.stdout
    db = sqlite3.connect(repo / "catalog.sqlite")
    assert db.execute("SELECT count(*) FROM chunks").fetchone()[0] == 2
