"""Hostile, truncated and bit-flipped store structures give typed errors, never a crash,
hang or unbounded allocation (hypothesis)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from streams.errors import FormatError, IntegrityError, RpfsError
from rpfs.store import Repository, catalog
from rpfs.store.backend import LocalBackend
from rpfs.store.config import Config
from rpfs.store.packs import ZSTD, PackWriter, chunk_hash, compress, decompress, read_entry_table

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


@SETTINGS
@given(st.lists(st.integers(0, 2**62), max_size=300))
def test_chunk_map_roundtrip(ids):
    assert list(catalog.decode_map(catalog.encode_map(ids), len(ids))) == ids


@SETTINGS
@given(st.binary(max_size=200), st.integers(0, 10**12))
def test_chunk_map_hostile(blob, count):
    try:
        ids = catalog.decode_map(b"M1" + blob, count)
    except FormatError:
        return
    assert len(ids) == count and min(ids, default=0) >= 0


@SETTINGS
@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=50), st.data())
def test_chunk_map_bitflip_and_truncation(ids, data):
    blob = bytearray(catalog.encode_map(ids))
    if data.draw(st.booleans()):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] ^= 1 << data.draw(st.integers(0, 7))
    else:
        blob = blob[:data.draw(st.integers(0, len(blob) - 1))]
    try:
        out = catalog.decode_map(bytes(blob), len(ids))
    except FormatError:
        return
    assert len(out) == len(ids)


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    root = tmp_path_factory.mktemp("packs")
    be = LocalBackend(str(root))
    os.makedirs(be.staging)
    w = PackWriter(be)
    chunks = [os.urandom(5000), b"abc" * 3000, bytes(100) + b"x"]
    for c in chunks:
        codec, payload = compress(c, 3)
        w.add(chunk_hash(c), codec, payload, len(c))
    w.finish()
    raw = Path(be.path(w.name)).read_bytes()
    return be, w.name, raw, chunks


def test_pack_index_roundtrip(pack):
    be, name, raw, chunks = pack
    entries = read_entry_table(be, name)
    assert [e.hash for e in entries] == [chunk_hash(c) for c in chunks]
    for e, c in zip(entries, chunks):
        assert decompress(e.codec, be.get(name, e.offset, e.csize), e.usize) == c


@SETTINGS
@given(st.data())
def test_pack_index_hostile(pack, data):
    be, name, raw, _ = pack
    buf = bytearray(raw)
    how = data.draw(st.sampled_from(["flip", "truncate", "tail"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(max(0, len(buf) - 400), len(buf) - 1))
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
    elif how == "truncate":
        buf = buf[:data.draw(st.integers(0, len(buf) - 1))]
    else:   # hostile trailer: huge counts / offsets
        buf[-24:] = data.draw(st.binary(min_size=16, max_size=16)) + b"RPFSIDX1"
    hostile = "f" * 32
    with open(be.path(hostile) if os.path.isdir(os.path.dirname(be.path(hostile))) else
              _mk(be, hostile), "wb") as f:
        f.write(bytes(buf))
    try:
        read_entry_table(be, hostile)
    except (FormatError, IntegrityError):
        pass
    finally:
        be.forget(hostile)


def _mk(be, name):
    os.makedirs(os.path.dirname(be.path(name)), exist_ok=True)
    return be.path(name)


@SETTINGS
@given(st.integers(0, 2), st.binary(max_size=300), st.integers(0, 1 << 26))
def test_decompress_hostile(codec, payload, usize):
    try:
        out = decompress(codec, payload, usize)
    except IntegrityError:
        return
    assert len(out) == usize


def test_zstd_frame_declaring_exabytes_is_refused_before_allocating():
    """Found by fuzzing (tests/fuzz/corpus/pack/regress-zstd-declared-exabytes): a frame
    header declaring 8.5e18 bytes made zstandard allocate them (MemoryError)."""
    frame = bytes.fromhex("28b52ffdf720ad00006868656c6c6f20776f726c642c200100f01ff8f905")
    with pytest.raises(IntegrityError, match="declares 8583983401233901672 bytes"):
        decompress(ZSTD, frame, 16384)


def test_repository_object_declaring_exabytes_is_refused_before_allocating():
    """The same frame sealed as a repository object (recovery point, map, pack index)."""
    from rpfs.store import objects
    from rpfs.store.crypto import Plain

    frame = bytes.fromhex("28b52ffdf720ad00006868656c6c6f20776f726c642c200100f01ff8f905")
    raw = objects.MAGIC + Plain().seal_object(frame, "rps/x")
    with pytest.raises(IntegrityError, match="declares 8583983401233901672 bytes"):
        objects.decode(Plain(), "rps/x", raw)


@SETTINGS
@given(st.one_of(st.binary(max_size=300),
                 st.dictionaries(st.sampled_from(["format", "chunk_size", "hash", "zstd_level",
                                                  "pack_size", "cache_mb", "repack_threshold", "x"]),
                                 st.one_of(st.integers(-5, 1 << 40), st.text(max_size=5),
                                           st.none(), st.floats(allow_nan=True)))
                 .map(lambda d: json.dumps(d).encode())))
def test_config_hostile(tmp_path_factory, raw):
    d = tmp_path_factory.mktemp("cfg")
    (d / "config.json").write_bytes(raw)
    try:
        Config.load(str(d))
    except FormatError:
        pass


def test_hostile_catalog_rows(tmp_path):
    src = tmp_path / "vm"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3 << 20))
    path = tmp_path / "repo"
    from rpfs.backup import backup
    with Repository.init(path) as r:
        backup(r, [str(src)], time="2024-01-01T00:00:00Z", show_progress=False)
    db = sqlite3.connect(path / "catalog.sqlite")
    with Repository.open(path) as r:
        rp = r.recovery_points("vm")[0]
        db.execute("UPDATE recovery_points SET chunk_size = 0")
        db.commit()
        with pytest.raises(FormatError):
            r.open_file(rp, "a.bin")
        db.execute("UPDATE recovery_points SET chunk_size = 1048576")
        db.execute("UPDATE files SET size = 1 << 40")     # map too short for the size
        db.commit()
        with pytest.raises(FormatError):
            r.open_file(rp, "a.bin")
        db.execute("UPDATE files SET size = 3 << 20")
        db.execute("UPDATE chunks SET usize = 5 WHERE id = 2")
        db.commit()
        r.cache.clear()
        f = r.open_file(rp, "a.bin")
        with pytest.raises(IntegrityError):
            f.read(1 << 20, 10)
        db.execute("DELETE FROM chunks WHERE id = 3")
        db.commit()
        with pytest.raises(IntegrityError, match="missing"):
            r.open_file(rp, "a.bin").read(2 << 20, 10)
    db.close()
    (path / "catalog.sqlite").write_bytes(os.urandom(5000))
    for p in ("catalog.sqlite-wal", "catalog.sqlite-shm"):
        try:
            os.unlink(path / p)
        except FileNotFoundError:
            pass
    with pytest.raises(RpfsError):
        Repository.open(path)


@pytest.fixture(scope="module")
def small_chunk_repo(tmp_path_factory):
    """4 KiB chunks, a file with zero runs, a partial last chunk and repeated blocks."""
    import random as _r
    from rpfs.backup import backup
    d = tmp_path_factory.mktemp("sc")
    rnd = _r.Random(11)
    parts = []
    for _ in range(40):
        kind = rnd.randrange(3)
        n = rnd.randrange(1, 3 * 4096)
        parts.append(bytes(n) if kind == 0 else (b"AB" * n)[:n] if kind == 1 else rnd.randbytes(n))
    data = b"".join(parts)
    (d / "vm").mkdir()
    (d / "vm" / "f.bin").write_bytes(data)
    repo = Repository.init(d / "repo", chunk_size=4096, pack_size=1 << 16)
    backup(repo, [str(d / "vm")], time="2024-01-01T00:00:00Z", show_progress=False)
    f = repo.open_file(repo.recovery_points("vm")[0], "f.bin")
    yield f, data
    repo.close()


@SETTINGS
@given(st.integers(0, 300_000), st.integers(0, 50_000))
def test_stored_file_reads_match(small_chunk_repo, offset, length):
    f, data = small_chunk_repo
    assert f.size == len(data)
    assert f.read(offset, length) == data[offset:offset + length]
    buf = bytearray(length)
    n = f.readinto(offset, buf)
    assert bytes(buf[:n]) == data[offset:offset + length]
    ext = list(f.extents(offset, length))
    pos = offset
    for e in ext:
        assert e.offset == pos and e.length > 0
        if e.kind == "zero":
            assert data[e.offset:e.end].count(0) == e.length
        pos = e.end
    assert pos == max(offset, min(len(data), offset + length)) or not ext
