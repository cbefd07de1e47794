"""Read-ahead of stored files (rpfs/store/readahead.py): the bytes sequential, random and
concurrent readers get are the source's, in process and through a real mount; each chunk is
decoded once; a damaged chunk is reported to the reader that reads it, with its offset."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from rpfs.backup import backup
from streams.errors import IntegrityError
from rpfs.store import Repository

CHUNK = 1 << 16


def _contents(seed: int, size: int) -> bytes:
    """Random, compressible and all-zero runs (zero chunks are not stored)."""
    rnd = random.Random(seed)
    parts, n = [], 0
    while n < size:
        k = rnd.randrange(3)
        m = rnd.randrange(1, 3 * CHUNK)
        parts.append(bytes(m) if k == 0 else (b"log line %d\n" % n * m)[:m] if k == 1 else rnd.randbytes(m))
        n += m
    return b"".join(parts)[:size]


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A repository with 64 KiB chunks holding files of awkward sizes; yields (path, {name: data})."""
    d = tmp_path_factory.mktemp("ra")
    files = {"big.bin": _contents(1, 40 * CHUNK + 1234), "one.bin": _contents(2, CHUNK),
             "tiny.bin": b"x", "empty.bin": b"", "odd.bin": _contents(3, 3 * CHUNK - 1)}
    (d / "vm").mkdir()
    for name, data in files.items():
        (d / "vm" / name).write_bytes(data)
    with Repository.init(d / "repo", chunk_size=CHUNK, pack_size=1 << 18) as r:
        backup(r, [str(d / "vm")], time="2024-01-01T00:00:00Z", show_progress=False)
    return d / "repo", files


def _open(path, name):
    r = Repository.open(path)
    return r, r.open_file(r.recovery_points("vm")[0], name)


def test_sequential_reader_gets_source_bytes_and_reads_ahead(stored):
    path, files = stored
    r, f = _open(path, "big.bin")
    with r:
        out = bytearray()
        buf = bytearray(20_000)   # not a divisor of the chunk size: reads straddle chunks
        pos = 0
        while pos < f.size:
            n = f.readinto(pos, buf)
            out += buf[:n]
            pos += n
        assert out == files["big.bin"]
        assert r.loader.prefetched > 10          # chunks were decoded ahead of the reader
        assert b"".join(f.read(o, 7000) for o in range(0, f.size, 7000)) == files["big.bin"]


def test_random_reader_gets_source_bytes(stored):
    path, files = stored
    data = files["big.bin"]
    r, f = _open(path, "big.bin")
    with r:
        rnd = random.Random(5)
        for _ in range(300):
            off = rnd.randrange(len(data) + 100)
            n = rnd.randrange(0, 3 * CHUNK)
            assert f.read(off, n) == data[off:off + n]
            buf = bytearray(n)
            got = f.readinto(off, buf)
            assert bytes(buf[:got]) == data[off:off + n]


def test_small_reads_that_land_near_each_other_set_off_no_read_ahead(stored):
    """Count work: 4 KiB reads a chunk apart each 'continue' the one before (give or take a
    chunk) and span many chunks, but read almost none of them: no read-ahead."""
    path, files = stored
    r, f = _open(path, "big.bin")
    with r:
        for i in range(12):
            off = i * CHUNK + 100
            assert f.read(off, 4096) == files["big.bin"][off:off + 4096]
        assert r.loader.prefetched == 0
        for pos in range(20 * CHUNK, 24 * CHUNK, CHUNK // 4):   # a real sequential run does
            f.read(pos, CHUNK // 4)
        assert r.loader.prefetched > 0


def test_concurrent_readers_get_source_bytes_and_decode_each_chunk_once(stored):
    path, files = stored
    data = files["big.bin"]
    r, f = _open(path, "big.bin")
    with r:
        errors = []

        def reader(seed):
            rnd = random.Random(seed)
            try:
                pos = rnd.randrange(len(data))
                for _ in range(200):   # runs of sequential reads from random places
                    if rnd.random() < 0.1:
                        pos = rnd.randrange(len(data))
                    n = rnd.randrange(1, 40_000)
                    buf = bytearray(n)
                    got = f.readinto(pos, buf)
                    if bytes(buf[:got]) != data[pos:pos + n]:
                        errors.append((seed, pos, n))
                    pos = pos + got if pos + got < len(data) else 0
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)

        threads = [threading.Thread(target=reader, args=(s,)) for s in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        stored_chunks = len({f.ids[i] for i in range(len(f.ids)) if f.ids[i]})
        assert r.loader.loaded <= stored_chunks   # never the same chunk twice (cache holds all)


def test_closing_with_read_ahead_in_flight_leaves_no_reader_waiting(stored):
    path, files = stored
    r, f = _open(path, "big.bin")
    buf = bytearray(CHUNK // 2)
    for pos in range(0, 4 * CHUNK, len(buf)):   # sequential: read-ahead jobs queued
        f.readinto(pos, buf)
    assert r.loader.prefetched > 0
    r.close()
    outcome = []

    def late_reader():
        try:
            outcome.append(f.read(30 * CHUNK, 100) == files["big.bin"][30 * CHUNK:30 * CHUNK + 100])
        except Exception as e:
            outcome.append(type(e).__name__)

    t = threading.Thread(target=late_reader)
    t.start()
    t.join(60)      # a hang, not a duration: any answer or a typed error is fine
    assert not t.is_alive() and outcome


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["big.bin", "one.bin", "tiny.bin", "empty.bin", "odd.bin"]),
       start=st.integers(0, 45 * CHUNK), steps=st.lists(st.integers(0, 3 * CHUNK), max_size=12),
       into=st.booleans())
def test_any_run_of_reads_gets_source_bytes(stored, name, start, steps, into):
    path, files = stored
    data = files[name]
    r, f = _open(path, name)
    with r:
        pos = start
        for n in steps:
            if into:
                buf = bytearray(n)
                got = bytes(buf[:f.readinto(pos, buf)])
            else:
                got = f.read(pos, n)
            assert got == data[pos:pos + n]
            pos += n


def test_damaged_chunk_is_reported_to_its_reader_only(tmp_path):
    data = random.Random(9).randbytes(12 * CHUNK)   # incompressible: stored raw, easy to damage
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm" / "d.bin").write_bytes(data)
    with Repository.init(tmp_path / "repo", chunk_size=CHUNK) as r:
        backup(r, [str(tmp_path / "vm")], time="2024-01-01T00:00:00Z", show_progress=False)
        f = r.open_file(r.recovery_points("vm")[0], "d.bin")
        loc = f.locs[f.ids[6]]
        pack = r.backend.path(loc.pack)
    with open(pack, "r+b") as p:
        p.seek(loc.offset + 100)
        p.write(bytes([p.read(1)[0] ^ 0xFF]))
    r, f = _open(tmp_path / "repo", "d.bin")
    with r:
        buf = bytearray(CHUNK // 4)
        pos = 0
        while pos < 6 * CHUNK:       # read-ahead decoded the damaged chunk meanwhile
            n = f.readinto(pos, buf)
            assert buf[:n] == data[pos:pos + n]
            pos += n
        with pytest.raises(IntegrityError, match=f"offset {6 * CHUNK:#x}"):
            f.readinto(pos, buf)
        assert f.read(7 * CHUNK, 10) == data[7 * CHUNK:7 * CHUNK + 10]


@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_mount_readers_get_source_bytes(stored, tmp_path):
    path, files = stored
    data = files["big.bin"]
    mp = tmp_path / "mnt"
    mp.mkdir()
    subprocess.run([sys.executable, "-m", "rpfs", "mount", str(path), str(mp)], check=True,
                   capture_output=True)
    try:
        if os.geteuid() == 0:   # only root may widen the kernel's read-ahead window
            dev = f"{os.major(os.stat(mp).st_dev)}:{os.minor(os.stat(mp).st_dev)}"
            for _ in range(100):   # set by a thread of the daemon once it serves
                with open(f"/sys/class/bdi/{dev}/read_ahead_kb") as f:
                    if f.read().strip() == "1024":
                        break
                time.sleep(0.05)
            else:
                raise AssertionError("the mount's read-ahead window stayed at the default")
        target = mp / "vm" / "latest" / "files" / "big.bin"
        fd = os.open(target, os.O_RDONLY)
        try:
            rnd = random.Random(3)     # first: nothing of the file is in the page cache yet
            for _ in range(200):
                off, n = rnd.randrange(len(data)), rnd.randrange(1, 9000)
                assert os.pread(fd, n, off) == data[off:off + n]
            results = []

            def reader(k):
                part = len(data) // 4
                got = b"".join(os.pread(fd, 50_000, o) for o in range(k * part, (k + 1) * part, 50_000))
                results.append(got[:part] == data[k * part:(k + 1) * part])

            threads = [threading.Thread(target=reader, args=(k,)) for k in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert results == [True] * 4
        finally:
            os.close(fd)
        assert target.read_bytes() == data                      # sequential
        assert (target.parent / "odd.bin").read_bytes() == files["odd.bin"]
    finally:
        subprocess.run([sys.executable, "-m", "rpfs", "umount", str(mp)], capture_output=True)

