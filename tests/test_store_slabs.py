"""Decoded chunks in huge-page slabs (rpfs/store/slabs.py, ``StoreOptions(huge_chunks=True)``,
what ``rpfs restore`` opens its repository with): the bytes are the stored file's, every chunk
is still checked against its id, and decoding touches huge pages, not 256 fresh 4 KiB pages
per 1 MiB chunk (counted in page faults of the decoding thread, never timed)."""

from __future__ import annotations

import resource
import shutil

import pytest

from rpfs.backup import backup
from rpfs.store import Repository, StoreOptions
from rpfs.store.slabs import SLAB, Slabs
from streams.errors import IntegrityError
from tests.helpers.streams import log_text

MiB = 1 << 20
CHUNKS = 8


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A repository (1 MiB chunks of 64 KiB zstd frames, the defaults) holding 8 MiB of text."""
    d = tmp_path_factory.mktemp("slabs")
    (d / "vm").mkdir()
    data = log_text(CHUNKS * MiB)
    (d / "vm" / "log.txt").write_bytes(data)
    with Repository.init(d / "repo") as r:
        backup(r, [str(d / "vm")], time="2024-01-01T00:00:00Z", show_progress=False)
    return d / "repo", data


def _thp() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt


@pytest.mark.parametrize("huge", [False, True], ids=["plain", "huge"])
def test_chunks_decoded_into_slabs_are_the_stored_bytes(stored, huge):
    path, data = stored
    with Repository.open(path, StoreOptions(huge_chunks=huge)) as r:
        f = r.open_file(r.recovery_points("vm")[0], "log.txt")
        faults = _faults()
        chunks = [f.chunk(i) for i in range(CHUNKS)]   # decoded on this thread
        faults = _faults() - faults
        assert b"".join(chunks) == data
        if not huge:
            assert r.chunk_memory is None
            return
        assert r.chunk_memory.mapped == -(-CHUNKS * MiB // SLAB)   # one mapping per 16 chunks
        assert all(type(c) is memoryview and c.readonly for c in chunks)
        if _thp():   # 256 faults per chunk in 4 KiB pages (2,048 here): now one per 2 MiB
            assert faults < CHUNKS * 256 // 4, faults


def test_a_damaged_chunk_in_a_slab_still_fails_its_check(stored, tmp_path):
    """The chunk id is checked over the slab's bytes as over any decoded chunk."""
    path, data = stored
    copy = tmp_path / "repo"
    shutil.copytree(path, copy)
    with Repository.open(copy, StoreOptions(huge_chunks=True)) as r:
        f = r.open_file(r.recovery_points("vm")[0], "log.txt")
        loc = f.locs[f.ids[3]]
        pack = copy / "packs" / loc.pack[:2] / f"{loc.pack}.pack"
        raw = bytearray(pack.read_bytes())
        raw[loc.offset + loc.csize - 8] ^= 0xFF     # the last frame's bytes
        pack.write_bytes(bytes(raw))
        with pytest.raises(IntegrityError):
            f.chunk(3)
        assert f.chunk(2) == data[2 * MiB:3 * MiB]


def test_a_slab_hands_out_disjoint_buffers_and_refuses_what_does_not_fit():
    s = Slabs(4 * MiB)
    a, b = s.take(MiB + 1), s.take(MiB)
    a[:] = b"a" * len(a)
    b[:] = b"b" * len(b)
    assert bytes(a) == b"a" * (MiB + 1) and bytes(b) == b"b" * MiB
    assert s.take(4 * MiB + 1) is None and s.take(0) is None
    c = s.take(2 * MiB)       # past the first slab's room: a second one
    assert s.mapped == 2 and len(c) == 2 * MiB
