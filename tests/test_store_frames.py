"""Framed chunks (rpfs/store/frames.py): a small read of a stored file decompresses and checks
only the frames it needs; damage in one frame fails only the reads that need that frame;
chunk ids (dedup) are those of unframed chunks; format-1 repositories written by the rpfs
before framing (tests/data/store-format1.tar.xz) still read, and keep being written
unframed; verify, gc and repair handle framed chunks; hostile frame tables are typed errors.

The format-1 fixture was made by rpfs at commit 0f0c40c (before framed chunks) with
``rpfs init DIR [--encrypt] --chunk-size 16K`` and ``rpfs backup DIR vm --vm vm --time
2024-05-01T00:00:00Z --no-index --no-scan`` (passphrase ``frames-fixture``) over the file
``_format1_data()`` makes."""

from __future__ import annotations

import json
import random
import sqlite3
import struct
import tarfile
from pathlib import Path

import blake3
import pytest

from rpfs.backup import backup
from rpfs.store import Repository, StoreOptions, frames
from rpfs.store.crypto import Plain, Sealed
from rpfs.store.maintenance.prune import Policy, prune
from rpfs.store.maintenance.repair import repair
from rpfs.store.maintenance.verify import verify
from rpfs.store.packs import FRAMED
from streams.errors import IntegrityError

KiB, MiB = 1 << 10, 1 << 20
CHUNK, FRAME = 256 * KiB, 16 * KiB
FIXTURE = Path(__file__).parent / "data" / "store-format1.tar.xz"
PASS = "frames-fixture"


def _options() -> StoreOptions:
    return StoreOptions(passphrase=lambda where, new: PASS)


def _data(seed: int, size: int) -> bytes:
    """Random, text and zero runs, so frames are stored raw, compressed, and chunks skipped."""
    rnd = random.Random(seed)
    out, n = [], 0
    while n < size:
        k, m = rnd.randrange(3), rnd.randrange(1, 3 * FRAME)
        out.append(bytes(m) if k == 0 else (b"entry %d ok\n" % n * m)[:m] if k == 1 else rnd.randbytes(m))
        n += m
    return b"".join(out)[:size]


def _repo(tmp_path, data: bytes, *, encrypt: bool = False, frame_size: int = FRAME, name: str = "repo",
          **settings):
    settings.setdefault("raw_frame_size", 0)   # frames of ``frame_size`` unless a test asks
    src = tmp_path / f"src-{name}"
    src.mkdir(exist_ok=True)
    (src / "d.bin").write_bytes(data)
    path = tmp_path / name
    with Repository.init(path, _options(), encrypt=encrypt, chunk_size=CHUNK, frame_size=frame_size,
                         pack_size=1 << 20, **settings) as r:
        backup(r, [str(src)], vm="vm", time="2024-01-01T00:00:00Z", show_progress=False)
    return path


def _open(path):
    r = Repository.open(path, _options())
    return r, r.open_file(r.recovery_points("vm")[0], "d.bin")


def _table_of(r, loc) -> frames.FrameTable:
    payload = r.backend.get(loc.pack, loc.offset, loc.csize)
    return frames.parse_table(r.crypto, payload, loc.csize, loc.usize, loc.hash)


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_round_trip_through_small_and_whole_reads(tmp_path, encrypt):
    data = _data(1, 5 * CHUNK + 1234)
    r, f = _open(_repo(tmp_path, data, encrypt=encrypt))
    with r:
        codecs = {loc.codec for loc in f.locs.values()}
        assert codecs == {FRAMED}
        rnd = random.Random(2)
        for _ in range(300):
            off, n = rnd.randrange(len(data)), rnd.choice([1, 4096, 5000, FRAME + 7, CHUNK // 4, CHUNK + 3])
            assert f.read(off, n) == data[off:off + n]
            buf = bytearray(n)
            got = f.readinto(off, buf)
            assert bytes(buf[:got]) == data[off:off + n]
        assert r.frames_decoded > 0
        r.cache.clear()
        assert f.read(0, len(data)) == data          # whole chunks (and read-ahead)
        assert r.loader.loaded > 0


def test_chunk_ids_do_not_change_so_dedup_still_works(tmp_path):
    data = _data(3, 4 * CHUNK)
    framed, unframed = _repo(tmp_path, data), _repo(tmp_path, data, frame_size=0, name="flat")
    ids = []
    for path in (framed, unframed):
        db = sqlite3.connect(path / "catalog.sqlite")
        ids.append(sorted(h for (h,) in db.execute("SELECT hash FROM chunks")))
        db.close()
    assert ids[0] == ids[1] and ids[0]
    # a backup of the same data into the framed repository stores nothing new
    with Repository.open(framed) as r:
        res = backup(r, [str(tmp_path / "src-repo")], vm="vm", time="2024-01-02T00:00:00Z",
                     show_progress=False, force_read=True)
        assert res.new_chunks == 0


def test_a_4k_read_decompresses_one_frame(tmp_path):
    """Count work, not time: a cold 4 KiB read inside a framed 256 KiB chunk decodes one
    16 KiB frame and no whole chunk; one straddling two frames decodes two."""
    data = random.Random(4).randbytes(4 * CHUNK)
    r, f = _open(_repo(tmp_path, data))
    with r:
        off = CHUNK + 3 * FRAME + 100
        assert f.read(off, 4096) == data[off:off + 4096]
        assert (r.frames_decoded, r.loader.loaded) == (1, 0)
        buf = bytearray(4096)
        off = 2 * CHUNK + 5 * FRAME - 2048
        f.readinto(off, buf)
        assert bytes(buf) == data[off:off + 4096]
        assert (r.frames_decoded, r.loader.loaded) == (3, 0)
        f.read(CHUNK + 3 * FRAME, 10)                 # that frame is cached now
        assert r.frames_decoded == 3


def test_a_small_read_across_two_frames_joins_only_its_bytes(tmp_path):
    """A 4 KiB read straddling two frames hands out 4 KiB, not both frames joined (two
    16 KiB frames here, 128 KiB of copying per file read in a mount's 64 KiB frames),
    whether the frames are decoded for it or were in the cache already
    (``StoredFile.cached_part``, the mount's loop thread)."""
    data = random.Random(5).randbytes(2 * CHUNK)
    r, f = _open(_repo(tmp_path, data))
    with r:
        off = 5 * FRAME - 2048
        for part in (f.part, f.cached_part):   # cold, then from the cache alone
            buf, at = part(0, off, off + 4096)
            assert len(buf) - at == 4096 and bytes(buf[at:]) == data[off:off + 4096]
        assert r.frames_decoded == 2
        assert f.cached_part(1, 100, 200) is False   # not decoded: the cache alone cannot tell


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_damaged_frame_fails_only_the_reads_that_need_it(tmp_path, encrypt):
    data = random.Random(5).randbytes(3 * CHUNK)     # incompressible: frames stored raw
    path = _repo(tmp_path, data, encrypt=encrypt)
    r, f = _open(path)
    with r:
        loc = f.locs[f.ids[1]]
        t = _table_of(r, loc)
        at = loc.offset + t.starts[3] + t.lens[3] // 2
        pack = r.backend.path(loc.pack)
    with open(pack, "r+b") as p:
        p.seek(at)
        b = p.read(1)
        p.seek(at)
        p.write(bytes([b[0] ^ 0x40]))
    r, f = _open(path)
    with r:
        bad = CHUNK + 3 * FRAME + 10
        with pytest.raises(IntegrityError) as ei:
            f.read(bad, 4096)
        msg = str(ei.value)
        assert f"chunk {loc.hash.hex()[:16]} frame 3 of {CHUNK // FRAME}" in msg
        assert "d.bin" in msg and f"offset {bad:#x}" in msg
        for ok in (CHUNK + 2 * FRAME, CHUNK + 4 * FRAME, 0, 2 * CHUNK):   # the rest still reads
            assert f.read(ok, 4096) == data[ok:ok + 4096]
        with pytest.raises(IntegrityError, match=f"offset {CHUNK:#x}"):
            f.read(CHUNK, CHUNK)                                          # the whole chunk
        res = verify(r, read_data=True, show_progress=False)
        assert not res.ok and [d.file for d in res.damage] == ["d.bin"]
        assert res.damage[0].ranges == [(CHUNK, 2 * CHUNK)]


def test_damaged_frame_table_names_the_chunk(tmp_path):
    data = _data(6, 2 * CHUNK)
    path = _repo(tmp_path, data)
    r, f = _open(path)
    with r:
        loc = f.locs[f.ids[0]]
        pack = r.backend.path(loc.pack)
    with open(pack, "r+b") as p:
        p.seek(loc.offset + frames.HEAD_SIZE + 9)          # inside the first table entry
        b = p.read(1)
        p.seek(loc.offset + frames.HEAD_SIZE + 9)
        p.write(bytes([b[0] ^ 1]))
    r, f = _open(path)
    with r:
        # a small read takes the catalog's copy of the table and still reads; a whole-chunk
        # read meets the damaged one
        assert f.read(100, 10) == data[100:110]
        with pytest.raises(IntegrityError, match=f"chunk {loc.hash.hex()[:16]}: frame table"):
            f.read(0, CHUNK)
    _forget_catalog_tables(path)                           # as a repository stored before
    r, f = _open(path)
    with r:
        with pytest.raises(IntegrityError, match=f"chunk {loc.hash.hex()[:16]}: frame table"):
            f.read(100, 10)
        assert f.read(CHUNK + 5, 10) == data[CHUNK + 5:CHUNK + 15]


def _forget_catalog_tables(path) -> None:
    """The catalog as an rpfs that kept no frame tables there left it."""
    db = sqlite3.connect(path / "catalog.sqlite")
    db.execute("UPDATE chunks SET frames = NULL")
    db.commit()
    db.close()


class _PackReads:
    """Counts the preads of pack files (every read of a chunk's bytes is one) and their sizes."""

    def __init__(self, monkeypatch):
        import os
        self.count = 0
        self.sizes: list[int] = []
        real = os.pread

        def pread(fd, n, off):
            if os.readlink(f"/proc/self/fd/{fd}").endswith(".pack"):
                self.count += 1
                self.sizes.append(n)
            return real(fd, n, off)
        monkeypatch.setattr(os, "pread", pread)


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_a_cold_4k_read_of_a_chunk_never_touched_is_one_pread_of_the_pack(tmp_path, monkeypatch, encrypt):
    """Count reads, not time: the frame table comes from the catalog, so the first small read
    of a chunk reads only its frame; a repository stored without catalog copies reads the
    table first (two), until ``rpfs repair`` copies them in (one again)."""
    data = random.Random(7).randbytes(4 * CHUNK)
    path = _repo(tmp_path, data, encrypt=encrypt)
    reads = _PackReads(monkeypatch)

    def cold_reads(offsets) -> list[int]:
        out = []
        r, f = _open(path)
        with r:
            for off in offsets:
                before = reads.count
                assert f.read(off, 4096) == data[off:off + 4096]
                out.append(reads.count - before)
        return out

    offsets = [CHUNK + 3 * FRAME + 100, 3 * CHUNK + 8192, 5000, 3 * CHUNK + 6 * FRAME]
    import rpfs.store.catalog as catalog
    statements: list[str] = []
    connect = catalog.connect

    def traced(*a, **k):
        db = connect(*a, **k)
        db.set_trace_callback(statements.append)
        return db
    monkeypatch.setattr(catalog, "connect", traced)
    assert cold_reads(offsets) == [1, 1, 1, 1]
    # the four chunks' tables came in one statement (rows of neighbouring ids at once)
    assert len([s for s in statements if "frames" in s]) == 1
    _forget_catalog_tables(path)
    assert cold_reads(offsets) == [2, 2, 2, 1]      # the last: the chunk's table is known
    res = repair(str(path), _options())
    assert res.frame_tables == 4 and not res.lost
    assert cold_reads(offsets) == [1, 1, 1, 1]
    assert repair(str(path), _options()).frame_tables == 0


def test_a_read_only_catalog_without_the_column_still_reads(tmp_path, monkeypatch):
    """A catalog an older rpfs made, that this process cannot write (add_columns leaves it as
    it is; the tests run as root, who could write it, hence the patch): it stays without the
    frames column, and small reads take their tables from the pack."""
    import rpfs.store.catalog as catalog
    data = random.Random(10).randbytes(2 * CHUNK)
    path = _repo(tmp_path, data)
    db = sqlite3.connect(path / "catalog.sqlite")
    db.execute("ALTER TABLE chunks DROP COLUMN frames")
    db.commit()
    db.close()
    monkeypatch.setattr(catalog, "add_columns", lambda db: None)
    reads = _PackReads(monkeypatch)
    r, f = _open(path)
    with r:
        assert f.read(CHUNK + 10, 4096) == data[CHUNK + 10:CHUNK + 10 + 4096]
        assert reads.count == 2


def test_a_raw_frame_read_alone_is_kept_without_a_copy(tmp_path, monkeypatch):
    """Count copies: an incompressible frame read alone is cached as the very bytes object
    the pack read returned (a copy of 64 KiB per cold read, and its fresh pages, saved)."""
    data = random.Random(9).randbytes(2 * CHUNK)
    r, f = _open(_repo(tmp_path, data))
    with r:
        got = []
        real = r.backend.get_part
        monkeypatch.setattr(r.backend, "get_part", lambda *a: got.append(real(*a)) or got[-1])
        off = CHUNK + 2 * FRAME + 10
        assert f.read(off, 4096) == data[off:off + 4096]
        loc = f.locs[f.ids[1]]
        assert len(got) == 1 and r.cache.get(loc.hash + (2).to_bytes(4, "little")) is got[0]
        # and a small read of it is handed out as that frame and an offset, not a slice copy
        buf, at = f.part(1, 2 * FRAME + 10, 2 * FRAME + 10 + 4096)
        assert buf is got[0] and at == 10


def test_a_catalog_table_of_another_copy_is_not_used(tmp_path, monkeypatch):
    """The catalog's table is used only while its row names the very copy the reader holds:
    a row pointed elsewhere (gc, a sync) makes the read take the pack's own table."""
    data = random.Random(8).randbytes(2 * CHUNK)
    path = _repo(tmp_path, data, encrypt=True)
    reads = _PackReads(monkeypatch)
    r, f = _open(path)
    with r:
        loc = f.locs[f.ids[0]]
        db = sqlite3.connect(path / "catalog.sqlite")
        db.execute("UPDATE chunks SET offset = offset + 1 WHERE hash = ?", (loc.hash,))  # elsewhere now
        db.commit()
        db.close()
        assert f.read(FRAME + 10, 4096) == data[FRAME + 10:FRAME + 10 + 4096]
        assert reads.count == 2


def _format1_data() -> bytes:
    rnd = random.Random(17)
    c = 16384
    log = b"".join(b"line %d of the log\n" % i for i in range(3000))[:2 * c]
    return rnd.randbytes(c) + log + bytes(c) + rnd.randbytes(1000)


@pytest.mark.parametrize("kind", ["plain", "sealed"])
def test_format1_repository_reads_and_stays_unframed(tmp_path, kind):
    with tarfile.open(FIXTURE) as t:
        t.extractall(tmp_path, filter="data")
    path = tmp_path / kind
    path.chmod(0o700)
    want = _format1_data()
    with Repository.open(path, _options()) as r:
        assert r.config.format == 1 and r.config.frame_size == 0
        f = r.open_file(r.recovery_points("vm")[0], "disk.raw")
        assert f.read(0, f.size) == want
        assert f.read(20000, 4096) == want[20000:24096]
        assert verify(r, read_data=True, show_progress=False).ok
        src = tmp_path / "vm"
        src.mkdir()
        (src / "disk.raw").write_bytes(want[:30000] + b"new bytes" * 3000)
        backup(r, [str(src)], vm="vm", time="2024-06-01T00:00:00Z", show_progress=False)
        f = r.open_file(r.recovery_points("vm")[-1], "disk.raw")
        assert f.read(0, f.size) == want[:30000] + b"new bytes" * 3000
        assert FRAMED not in {loc.codec for loc in f.locs.values()}   # an older rpfs still reads it
    assert json.loads((path / "config.json").read_text())["format"] == 1


def test_gc_repair_and_verify_keep_framed_chunks_readable(tmp_path):
    a = _data(7, 6 * CHUNK)
    b = a[:CHUNK] + _data(8, 5 * CHUNK)          # the first pack keeps one live chunk of six
    path = _repo(tmp_path, a)
    src = tmp_path / "src-repo"
    (src / "d.bin").write_bytes(b)
    with Repository.open(path) as r:
        backup(r, [str(src)], vm="vm", time="2024-01-02T00:00:00Z", show_progress=False)
        res = prune(r, Policy(last=1))
        assert res.gc is not None and res.gc.chunks_moved > 0     # framed payloads repacked
    (path / "catalog.sqlite").unlink()
    for suffix in ("-wal", "-shm"):
        (path / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    repair(str(path))
    r, f = _open(path)
    with r:
        assert {loc.codec for loc in f.locs.values()} == {FRAMED}
        assert f.read(0, f.size) == b
        r.cache.clear()
        assert f.read(3 * CHUNK + 5 * FRAME, 4096) == b[3 * CHUNK + 5 * FRAME:][:4096]
        assert verify(r, read_data=True, show_progress=False).ok


# --- raw frames: incompressible chunks cut smaller -----------------------------------------

BIG_FRAME = 64 * KiB


def _frame_sizes(r, f) -> list[int]:
    return [r._table(f.locs[i]).frame_size for i in f.ids if i]


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
@pytest.mark.parametrize("raw", [4 * KiB, 16 * KiB])
def test_incompressible_chunks_are_stored_in_small_raw_frames(tmp_path, monkeypatch, encrypt, raw):
    """Count bytes, not time: a chunk none of whose 64 KiB frames compresses is stored in raw
    frames of ``raw_frame_size``, so a cold 4 KiB read is one pread of one small frame (plus
    what sealing adds) and one frame checked; a chunk with a frame that compresses keeps
    64 KiB frames; every read still returns the stored bytes."""
    rnd = random.Random(11)
    text = b"".join(b"%d the same old line\n" % i for i in range(20000))
    data = (rnd.randbytes(2 * CHUNK)                                 # chunks 0, 1: incompressible
            + rnd.randbytes(CHUNK - BIG_FRAME) + text[:BIG_FRAME]     # 2: one frame compresses
            + text[:CHUNK] + rnd.randbytes(1000))                    # 3: text; 4: a short tail
    path = _repo(tmp_path, data, encrypt=encrypt, frame_size=BIG_FRAME, raw_frame_size=raw)
    reads = _PackReads(monkeypatch)
    r, f = _open(path)
    with r:
        assert _frame_sizes(r, f) == [raw, raw, BIG_FRAME, BIG_FRAME, BIG_FRAME]   # the tail: one frame
        reads.sizes.clear()
        off = CHUNK + 5 * raw + 100                                  # inside one raw frame
        assert f.read(off, 100) == data[off:off + 100]
        assert reads.sizes == [raw + (28 if encrypt else 0)] and r.frames_decoded == 1
        off = 3 * raw - 2048                                         # straddles two
        assert f.read(off, 4096) == data[off:off + 4096]
        assert r.frames_decoded == 3
        rnd2 = random.Random(12)
        for _ in range(200):
            off, n = rnd2.randrange(len(data)), rnd2.choice([1, 4096, raw + 3, BIG_FRAME + 7, CHUNK + 1])
            assert f.read(off, n) == data[off:off + n]
        r.cache.clear()
        assert f.read(0, len(data)) == data                          # whole chunks
        assert verify(r, read_data=True, show_progress=False).ok


def test_raw_frames_cost_only_their_table_entries(tmp_path):
    """What raw frames cost in the pack: the payload grows by the table's 40 bytes a frame
    (unencrypted) and nothing else; with raw_frame_size 0 an incompressible chunk keeps the
    frame size."""
    data = random.Random(13).randbytes(CHUNK)
    p64 = frames.encode(Plain(), data, _ID, 1, BIG_FRAME, 0)
    p16 = frames.encode(Plain(), data, _ID, 1, BIG_FRAME, 16 * KiB)
    t64 = frames.parse_table(Plain(), p64, len(p64), CHUNK, _ID)
    t16 = frames.parse_table(Plain(), p16, len(p16), CHUNK, _ID)
    assert (t64.frame_size, t64.count, t16.frame_size, t16.count) == (BIG_FRAME, 4, 16 * KiB, 16)
    assert set(t16.codecs) == {0} and len(p16) - len(p64) == (16 - 4) * 40
    assert frames.decode(Plain(), p16, CHUNK, _ID, check_frames=True) == data


def test_a_repository_from_before_raw_frames_takes_them_on(tmp_path):
    """Migration: a format-2 config written before ``raw_frame_size`` (no such key) reads as
    the default, so new incompressible chunks get small raw frames; the chunks it already
    holds read as before (each table says its frame size); nothing is rewritten."""
    rnd = random.Random(14)
    old = rnd.randbytes(2 * CHUNK)
    path = _repo(tmp_path, old, frame_size=BIG_FRAME, raw_frame_size=0)     # as before
    cfg = json.loads((path / "config.json").read_text())
    del cfg["raw_frame_size"]
    (path / "config.json").write_text(json.dumps(cfg))
    new = old + rnd.randbytes(CHUNK)
    (tmp_path / "src-repo" / "d.bin").write_bytes(new)
    with Repository.open(path, _options()) as r:
        assert r.config.raw_frame_size == 8 * KiB
        backup(r, [str(tmp_path / "src-repo")], vm="vm", time="2024-01-02T00:00:00Z", show_progress=False)
        f = r.open_file(r.recovery_points("vm")[-1], "d.bin")
        assert _frame_sizes(r, f) == [BIG_FRAME, BIG_FRAME, 8 * KiB]     # old chunks kept as they were
        assert f.read(0, f.size) == new
        assert verify(r, read_data=True, show_progress=False).ok
    assert "raw_frame_size" not in json.loads((path / "config.json").read_text())


@pytest.mark.parametrize("settings, why", [
    ({"raw_frame_size": 3000}, "raw_frame_size"),
    ({"raw_frame_size": 128 * KiB}, "raw_frame_size"),               # past the frame
    ({"frame_size": 0, "raw_frame_size": 16 * KiB}, "raw_frame_size"),
])
def test_bad_raw_frame_sizes_are_refused(tmp_path, settings, why):
    from streams.errors import UsageError
    with pytest.raises(UsageError, match=why):
        Repository.init(tmp_path / "r", chunk_size=CHUNK, **settings)


def test_init_takes_the_raw_frame_size_from_the_command_line(tmp_path):
    import subprocess
    import sys
    for arg, want in (("4K", 4096), ("0", 0)):
        path = tmp_path / arg
        subprocess.run([sys.executable, "-m", "rpfs", "init", str(path), "--raw-frame-size", arg],
                       check=True, capture_output=True)
        assert json.loads((path / "config.json").read_text())["raw_frame_size"] == want


# --- hostile tables -----------------------------------------------------------------------

_ID = bytes(range(32))


def _plain_payload(table: bytes, frames_bytes: bytes = b"") -> bytes:
    sealed = Plain.seal_table(table, _ID)
    return struct.pack("<4sI", b"RPFF", len(sealed)) + sealed + frames_bytes


@pytest.mark.parametrize("table, usize, why", [
    (struct.pack("<BBHI", 1, 16, 0, 0xFFFFFFFF), 1 << 20, "frames cannot hold"),       # huge count
    (struct.pack("<BBHI", 1, 40, 0, 1), 1 << 20, "frame size"),                        # 2^40 frames
    (struct.pack("<BBHI", 1, 3, 0, 1), 1 << 20, "frame size"),                         # 8-byte frames
    (struct.pack("<BBHI", 9, 16, 0, 1), 1 << 16, "version"),
    (struct.pack("<BBHI", 1, 16, 0, 1) + struct.pack("<IB3x", 1 << 31, 1) + bytes(32), 1 << 16,
     "frames end"),                                                                     # past the payload
    (struct.pack("<BBHI", 1, 16, 0, 1) + struct.pack("<IB3x", 0, 7) + bytes(32), 1 << 16, "codec"),
    (struct.pack("<BBHI", 1, 16, 0, 2) + struct.pack("<IB3x", 0, 0) + bytes(32), 1 << 17, "bytes for 2"),
    (b"\1", 1 << 16, "too short"),
    # the raw frame sizes: 4 KiB and 16 KiB frames of a 1 MiB chunk, counts and lengths off
    (struct.pack("<BBHI", 1, 12, 0, 255) + bytes(255 * 40), 1 << 20, "frames cannot hold"),
    (struct.pack("<BBHI", 1, 14, 0, 64) + bytes(63 * 40), 1 << 20, "bytes for 64"),
    (struct.pack("<BBHI", 1, 14, 0, 64) + bytes(64 * 40 + 1), 1 << 20, "bytes for 64"),
    (struct.pack("<BBHI", 1, 12, 0, 256) + (struct.pack("<IB3x", 4096, 0) + bytes(32)) * 256,
     1 << 20, "frames end"),                                                            # no frames stored
    (struct.pack("<BBHI", 1, 12, 0, 2) + (struct.pack("<IB3x", 4096, 0) + bytes(32))
     + struct.pack("<IB3x", 4096, 9) + bytes(32), 8192, "frame 1 has unknown codec 9"),
    (struct.pack("<BBHI", 1, 11, 0, 2), 4096, "frame size 2\\^11"),
])
def test_hostile_frame_tables_are_integrity_errors(table, usize, why):
    payload = _plain_payload(table)
    with pytest.raises(IntegrityError, match=why):
        frames.parse_table(Plain(), payload, len(payload), usize, _ID)
    with pytest.raises(IntegrityError):
        frames.decode(Plain(), payload, usize, _ID)


def test_frame_table_bound_to_its_chunk_and_head_checked():
    data = _data(9, CHUNK)
    p = frames.encode(Plain(), data, _ID, 1, FRAME)
    assert frames.decode(Plain(), p, len(data), _ID) == data
    with pytest.raises(IntegrityError, match="checksum"):             # another chunk's table
        frames.parse_table(Plain(), p, len(p), len(data), bytes(32))
    with pytest.raises(IntegrityError, match="magic"):
        frames.parse_table(Plain(), b"XXXX" + p[4:], len(p), len(data), _ID)
    with pytest.raises(IntegrityError, match="past the payload"):
        frames.table_length(p[:4] + struct.pack("<I", 1 << 30), len(p), _ID)
    with pytest.raises(IntegrityError, match="too short"):
        frames.table_length(p[:5], len(p), _ID)
    sealed = Sealed(bytes(32), bytes(range(32)))
    cid = sealed.chunk_id(data)
    p = frames.encode(sealed, data, cid, 1, FRAME)
    assert frames.decode(sealed, p, len(data), cid, check_frames=True) == data
    t = frames.parse_table(sealed, p, len(p), len(data), cid)
    # frames swapped in place: each is bound to its number
    a, b = t.span(0, 0), t.span(1, 1)
    if a[1] == b[1]:
        swapped = p[:a[0]] + p[b[0]:b[0] + b[1]] + p[a[0]:a[0] + a[1]] + p[b[0] + b[1]:]
        with pytest.raises(IntegrityError, match="frame 0"):
            frames.decode(sealed, swapped, len(data), cid)
    assert blake3.blake3(data).digest() != cid                         # keyed ids


# --- whole chunks of compressed frames: one streaming decode --------------------------------

def _zstd_payload(pieces: list[bytes], frame_log: int, usize: int, lens=None) -> bytes:
    """A plain framed payload whose frames are the zstd frames of ``pieces``."""
    import zstandard
    stored = [zstandard.ZstdCompressor(level=1).compress(p) for p in pieces]
    entries = b"".join(struct.pack("<IB3x", len(s), 1) + blake3.blake3(p).digest()
                       for s, p in zip(stored, pieces))
    table = struct.pack("<BBHI", 1, frame_log, 0, len(pieces)) + entries
    return _plain_payload(table, b"".join(stored))


def test_a_compressed_chunk_decodes_in_one_pass_to_immutable_bytes(monkeypatch):
    """Count calls: a whole chunk of compressed frames takes one streaming decode (no bytes
    per frame, no join) and comes out as ``bytes``, equal to the one-frame-at-a-time decode
    that verify does."""
    import rpfs.store.packs as packs
    pieces = [(b"log line %d\n" % i * 2000)[:16384] for i in range(4)]
    payload = _zstd_payload(pieces, 14, 4 * 16384)
    calls = []
    real = packs.decompress
    monkeypatch.setattr(frames, "decompress", lambda *a: calls.append(a) or real(*a))
    whole = frames.decode(Plain(), payload, 4 * 16384, _ID)
    assert type(whole) is bytes and whole == b"".join(pieces) and calls == []
    assert frames.decode(Plain(), payload, 4 * 16384, _ID, check_frames=True) == whole
    assert len(calls) == 4


@pytest.mark.parametrize("pieces, usize, why", [
    ([b"a" * 16384, b"b" * 16384, b"c" * 20000], 3 * 16384, "frames"),   # a frame too long
    ([b"a" * 16384, b"b" * 16384, b"c" * 100], 3 * 16384, "frames"),     # too short
])
def test_compressed_frames_of_the_wrong_size_are_integrity_errors(pieces, usize, why):
    payload = _zstd_payload(pieces, 14, usize)
    with pytest.raises(IntegrityError, match=why):
        frames.decode(Plain(), payload, usize, _ID)


def test_a_damaged_compressed_frame_fails_the_whole_chunk_read():
    pieces = [(b"row %d;" % i * 5000)[:16384] for i in range(4)]
    payload = bytearray(_zstd_payload(pieces, 14, 4 * 16384))
    payload[-40] ^= 0x55                                  # inside the last zstd frame
    with pytest.raises(IntegrityError):
        d = frames.decode(Plain(), bytes(payload), 4 * 16384, _ID)
        if Plain.chunk_id(d) != blake3.blake3(b"".join(pieces)).digest():
            raise IntegrityError("fails its hash check")   # as _fetch_chunk checks the id


def test_a_frame_asking_for_a_huge_window_is_refused_before_allocating_it():
    """Streaming decode allocates the window a frame header asks for: 128 MiB (more than any
    chunk) is refused as an IntegrityError, not allocated."""
    import zstandard
    from rpfs.store.packs import decompress_frames
    params = zstandard.ZstdCompressionParameters.from_level(1, window_log=27, write_content_size=False)
    co = zstandard.ZstdCompressor(compression_params=params).compressobj()
    frame = co.compress(b"x" * 16384) + co.flush()
    assert zstandard.get_frame_parameters(frame).window_size == 1 << 27
    with pytest.raises(IntegrityError, match="too much memory"):
        decompress_frames(memoryview(frame), 16384)


def test_frames_declare_their_size_and_older_frames_still_read(tmp_path):
    """New zstd frames (whole chunks and the frames of framed chunks) carry their content
    size, so zstd decodes each straight into the chunk's buffer instead of through its
    window buffer and a copy (~10% of a text chunk's decode). Frames written without it (every
    repository before) decode to the same bytes, one pass or frame by frame."""
    import zstandard
    from rpfs.store.packs import ZSTD, compress
    data = b"".join(b"2024-01-01 12:00:%02d host rpfs[%d]: line %d\n" % (i % 60, i, i) for i in range(5000))
    codec, out = compress(data, 1)
    assert codec == ZSTD and zstandard.frame_content_size(out) == len(data)
    payload = frames.encode(Plain(), data, blake3.blake3(data).digest(), 1, 16384)
    t = frames.parse_table(Plain(), payload, len(payload), len(data), blake3.blake3(data).digest())
    assert set(t.codecs) == {ZSTD}
    for i in range(t.count):
        frame = payload[t.starts[i]:t.starts[i] + t.lens[i]]
        assert zstandard.frame_content_size(frame) == t.frame_usize(i)
    usize = 4 * 16384
    pieces = [data[i * 16384:(i + 1) * 16384] for i in range(4)]
    old = [zstandard.ZstdCompressor(level=1, write_content_size=False).compress(p) for p in pieces]
    assert all(zstandard.frame_content_size(f) == -1 for f in old)    # unknown
    entries = b"".join(struct.pack("<IB3x", len(s), 1) + blake3.blake3(p).digest() for s, p in zip(old, pieces))
    before = _plain_payload(struct.pack("<BBHI", 1, 14, 0, 4) + entries, b"".join(old))
    assert frames.decode(Plain(), before, usize, _ID) == data[:usize]
    assert frames.decode(Plain(), before, usize, _ID, check_frames=True) == data[:usize]
