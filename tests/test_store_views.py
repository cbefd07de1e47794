"""Stored files hand out their decoded chunks without copying them (ReadAhead.views, followed
down the layers by streams.stream.bottom/buffers): an export writes the chunks' own read-only
buffers, a FUSE-sized ``read_buffer`` inside one chunk is that chunk's bytes, an
incompressible framed chunk is the pack read itself, and damage still fails with the typed
error. Work is counted (bytes copied, scratch reads, pack reads), never timed."""

from __future__ import annotations

import random
import subprocess

import pytest

import formats
from formats.vhdx.reader import VhdxDisk
from rpfs.backup import backup
from rpfs.source import open_source
from rpfs.store import Repository, StoreOptions, frames
from rpfs.store.readahead import ReadAhead
from streams.errors import IntegrityError
from streams.stream import BytesStream, FileStream, Stream, buffers, is_zero

MiB = 1 << 20
DISK = 24 * MiB


def _disk_bytes() -> bytes:
    """Random MiBs (frames stored raw), text MiBs (zstd), all-zero MiBs (zero chunks) and
    MiBs with a 64 KiB zero run inside (a hole the writers leave unwritten)."""
    rnd = random.Random(17)
    out = []
    for i in range(DISK // MiB):
        kind = i % 4
        if kind == 0:
            out.append(rnd.randbytes(MiB))
        elif kind == 1:
            out.append((b"line %d of the log\n" % i * MiB)[:MiB])
        elif kind == 2:
            out.append(bytes(MiB))
        else:
            out.append(rnd.randbytes(MiB // 2) + bytes(64 << 10) + rnd.randbytes(MiB // 2 - (64 << 10)))
    return b"".join(out)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """(repository, the disk's bytes): a 24 MiB dynamic VHDX (qemu-img) backed up into a
    framed repository with 1 MiB chunks."""
    tmp = tmp_path_factory.mktemp("views")
    data = _disk_bytes()
    (tmp / "disk.raw").write_bytes(data)
    vm = tmp / "vm"
    vm.mkdir()
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic",
                    tmp / "disk.raw", vm / "disk.vhdx"], check=True)
    repo = tmp / "repo"
    with Repository.init(repo, StoreOptions(), chunk_size=MiB, frame_size=64 << 10) as r:
        backup(r, [str(vm)], vm="vm", time="2024-01-01T00:00:00Z", show_progress=False)
    return repo, data


def _copies(monkeypatch) -> list:
    """Bytes copied out of stored files by ``readinto`` (the copying path)."""
    copied = []
    real = ReadAhead._readinto
    monkeypatch.setattr(ReadAhead, "_readinto",
                        lambda self, off, view: (copied.append(len(view)), real(self, off, view))[1])
    return copied


def test_cached_views_hand_out_only_what_is_decoded_and_start_nothing(stored):
    """``cached_views`` (the mount's loop thread asks it) reads, decodes and schedules
    nothing: None for a range whose frames are not decoded, the bytes once they are, and
    a run of reads served from it sets off no read-ahead (counted jobs; noting them as a
    sequential run decoded the next chunks in the background)."""
    repo, data = stored
    with Repository.open(repo, StoreOptions(chunk_cache_bytes=32 * MiB)) as r:
        f = r.open_file(r.recovery_points("vm")[0], "disk.vhdx")
        i = next(i for i in range(len(f.ids) - 2) if f.ids[i] and f.ids[i + 1])
        start = i * MiB   # a stored chunk with a stored one after it
        assert f.cached_views(start, 4096) is None
        assert (r.frames_decoded, r.loader.loaded, r.loader.prefetched) == (0, 0, 0)
        for k in range(16):   # its 16 frames decoded (the stored file's own part reads)
            f.file.part(i, k << 16, (k + 1) << 16)
        assert (r.frames_decoded, r.loader.loaded, r.loader.prefetched) == (16, 0, 0)
        for off in range(start, start + MiB, 8192):   # a run of reads, in order
            got = f.cached_views(off, 8192)
            assert got is not None and b"".join(got) == f.file.read(off, 8192)
        assert f.cached_views(start + MiB, 4096) is None   # the next chunk: not there
        assert (r.frames_decoded, r.loader.loaded, r.loader.prefetched) == (16, 0, 0)


@pytest.mark.parametrize("fmt", ["raw", "vhdx"])
def test_export_of_a_stored_disk_writes_the_chunks_themselves(stored, tmp_path, monkeypatch, fmt):
    repo, data = stored
    with open_source(repo) as tree:
        disk = tree.resolve("/vm/latest/disks/disk.raw").open()
        assert isinstance(disk, VhdxDisk)
        copied = _copies(monkeypatch)
        out = tmp_path / f"out.{fmt}"
        formats.write_image(disk, out, fmt)
        assert sum(copied) == 0          # every data byte went out from a chunk's own buffer
    r = subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", fmt, stored[0].parent / "disk.raw", out],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    if fmt == "raw":   # zero chunks and 64 KiB zero runs are holes: 18 MiB of data less 6 runs
        assert out.stat().st_blocks * 512 <= 18 * MiB - 6 * (64 << 10) + (64 << 10)


def test_buffers_are_views_of_cached_chunks_and_read_only(stored):
    repo, data = stored
    with open_source(repo) as tree:
        disk = tree.resolve("/vm/latest/disks/disk.raw").open()
        scratch = memoryview(bytearray(4 * MiB))
        got = list(buffers(disk, MiB, 3 * MiB, scratch))
        assert b"".join(bytes(v) for _, v in got) == data[MiB:4 * MiB]
        assert [at for at, _ in got] == [MiB, 2 * MiB, 3 * MiB]      # one per chunk
        for _, v in got:
            assert v.readonly and v.obj is not scratch.obj
            with pytest.raises(TypeError):
                v[0] = 1


def test_read_buffer_inside_one_chunk_is_the_chunk_itself(stored, monkeypatch):
    """A mount's 128 KiB READ inside one decoded chunk is answered with a read-only view of
    the cached chunk: nothing copied. One across two chunks is joined (still exact)."""
    repo, data = stored
    with open_source(repo) as tree:
        disk = tree.resolve("/vm/latest/disks/disk.raw").open()
        copied = _copies(monkeypatch)
        for off in (0, MiB + (128 << 10), 4 * MiB, 2 * MiB + 5):   # random, text, random, zeros
            got = disk.read_buffer(off, 128 << 10)
            assert got.readonly and bytes(got) == data[off:off + (128 << 10)]
        assert sum(copied) == 0
        across = disk.read_buffer(MiB - 1000, 4000)
        assert bytes(across) == data[MiB - 1000:MiB + 3000]
        # a 1 MiB READ across two chunks, as a list for a gather reply: both chunks' own bytes
        parts = disk.read_buffers(MiB // 2, MiB)
        assert [len(p) for p in parts] == [MiB // 2, MiB // 2] and all(p.readonly for p in parts)
        assert b"".join(parts) == data[MiB // 2:MiB // 2 + MiB]
        assert sum(copied) == 0
        assert disk.read_buffer(DISK - 10, 100).tobytes() == data[-10:]      # clipped at the end


def test_an_export_decodes_ahead_from_its_first_read_and_a_mount_read_does_not(stored):
    """Count jobs: ``buffers`` (an export) has the next ``ahead_export`` chunks decoded in
    the background from its first chunk on, also right after a hole, one more as each
    chunk is reached (no more than that ahead: they wait in memory); ``read_buffer`` (a
    mount's READ, maybe random) starts none until reads show a sequential run."""
    repo, data = stored
    with Repository.open(repo, StoreOptions(chunk_cache_bytes=32 * MiB)) as r:
        f = r.open_file(r.recovery_points("vm")[0], "disk.vhdx")
        assert isinstance(f, ReadAhead) and f.ahead == 8 and f.ahead_export == 4
        f.read_buffer(5 * MiB, 128 << 10)
        f.read_buffer(9 * MiB, 4096)
        assert r.loader.prefetched == 0
        pieces = buffers(f, 12 * MiB, 3 * MiB, memoryview(bytearray(3 * MiB)))
        next(pieces)
        want = [i for i in range(13, 12 + 4 + 1) if f.ids[i]]
        assert r.loader.prefetched == len(want) > 0
        assert b"".join(bytes(v) for _, v in pieces) == f.read(13 * MiB, 2 * MiB)
        want = [i for i in range(13, 14 + 4 + 1) if f.ids[i]]
        assert r.loader.prefetched == len(want) > len([i for i in range(13, 17) if f.ids[i]])
    with Repository.open(repo, StoreOptions(chunk_cache_bytes=0)) as r:   # nowhere to keep them
        f = r.open_file(r.recovery_points("vm")[0], "disk.vhdx")
        assert b"".join(bytes(v) for _, v in buffers(f, 0, 4 * MiB, memoryview(bytearray(4 * MiB)))) \
            == f.read(0, 4 * MiB)
        assert r.loader.prefetched == 0


@pytest.mark.parametrize("fmt", ["raw", "vhdx"])
def test_an_export_offers_each_chunk_to_the_loader_once(stored, tmp_path, monkeypatch, fmt):
    """Count calls: an export asks the stored file for 8 MiB at a time (one walk down the
    layers, one read-ahead call) and offers each chunk to the read-ahead pool once. Asked
    1 MiB at a time with the next ``ahead`` chunks offered on every call, an export to raw
    traded the GIL and the loader's lock with the decoding pool once per MiB: 4x the
    context switches of an export to VHDX, ~0.1 s more system time on the bench disk."""
    from rpfs.store.readahead import ChunkLoader

    repo, data = stored
    views, offered = [], []
    real_views, real_prefetch = ReadAhead.views, ChunkLoader.prefetch
    monkeypatch.setattr(ReadAhead, "views", lambda self, off, n, sequential=False:
                        (views.append(n), real_views(self, off, n, sequential))[1])
    monkeypatch.setattr(ChunkLoader, "prefetch",
                        lambda self, locs: real_prefetch(self, _counted(locs, offered)))
    with open_source(repo, store=StoreOptions(chunk_cache_bytes=64 * MiB)) as tree:
        disk = tree.resolve("/vm/latest/disks/disk.raw").open()
        out = tmp_path / f"out.{fmt}"
        formats.write_image(disk, out, fmt)
    r = subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", fmt, stored[0].parent / "disk.raw", out],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    nonzero = [any(data[i * MiB:(i + 1) * MiB]) for i in range(DISK // MiB)]
    data_chunks, runs = sum(nonzero), sum(1 for i, z in enumerate(nonzero) if z and not (i and nonzero[i - 1]))
    # one call per run of data chunks and per 8 MiB boundary inside one (1 MiB at a time:
    # one per data chunk, 18 here)
    assert len(views) <= runs + DISK // (8 * MiB) < data_chunks
    assert len(offered) == len(set(offered)) <= data_chunks   # each at most once (was up to 16x)


@pytest.mark.parametrize("fmt", ["raw", "vhdx"])
def test_an_export_lets_each_chunk_go_from_the_cache_once_handed_out(stored, tmp_path, fmt):
    """Count bytes held and chunks decoded: an export reads each chunk once, so a chunk
    handed out whole leaves the cache at once (the view handed out keeps it until it is
    written). The cache then holds only what the VHDX layer read for itself, not the disk's
    data (it held all 18 data chunks: memory that new chunks could not reuse), and no chunk
    is decoded twice."""
    repo, data = stored
    with Repository.open(repo, StoreOptions(chunk_cache_bytes=64 * MiB)) as r:
        disk = VhdxDisk(r.open_file(r.recovery_points("vm")[0], "disk.vhdx"))
        formats.write_image(disk, tmp_path / f"out.{fmt}", fmt)
        held, loaded = r.cache.bytes, r.loader.loaded
    nonzero = sum(any(data[i * MiB:(i + 1) * MiB]) for i in range(DISK // MiB))
    assert held <= 4 * MiB < nonzero * MiB, held
    assert loaded <= nonzero + 4, loaded          # each data chunk once, plus the VHDX's own
    r = subprocess.run(["qemu-img", "compare", "-q", "-f", "raw", "-F", fmt, stored[0].parent / "disk.raw",
                        tmp_path / f"out.{fmt}"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def _counted(locs, into: list) -> list:
    got = list(locs)
    into.extend(loc.hash for loc in got)
    return got


def test_read_buffer_over_an_image_file_stops_looking_for_views(stored, tmp_path):
    """Layers over an image file (no views at the bottom) remember it after one read, so a
    mount of an image pays the walk down the layers once; a stored file's chain never does."""
    repo, data = stored
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", stored[0].parent / "disk.raw",
                    tmp_path / "d.vhdx"], check=True)
    disk = VhdxDisk(FileStream(tmp_path / "d.vhdx"))
    assert bytes(disk.read_buffer(MiB + 5, 4096)) == data[MiB + 5:MiB + 4101]
    assert disk._no_views
    assert bytes(disk.read_buffer(7 * MiB, 1000)) == data[7 * MiB:7 * MiB + 1000]
    with open_source(repo) as tree:
        d = tree.resolve("/vm/latest/disks/disk.raw").open()
        for off in (0, 2 * MiB, 23 * MiB):
            assert bytes(d.read_buffer(off, 4096)) == data[off:off + 4096]
        assert not getattr(d, "_no_views", False)


def test_a_raw_disk_over_a_stored_file_hands_out_its_chunks(stored, monkeypatch):
    """A flat image stored as it is (RawDisk over the stored file) reaches the chunks too."""
    from formats.disk import RawDisk
    repo, _ = stored
    with Repository.open(repo) as r:
        f = r.open_file(r.recovery_points("vm")[0], "disk.vhdx")
        copied = _copies(monkeypatch)
        got = list(buffers(RawDisk(f), MiB, 2 * MiB, memoryview(bytearray(2 * MiB))))
        assert len(got) == 2 and sum(copied) == 0
        assert b"".join(v for _, v in got) == f.read(MiB, 2 * MiB)


def test_a_stream_without_views_is_read_into_the_scratch_buffer():
    data = random.Random(3).randbytes(3000)
    scratch = memoryview(bytearray(4096))
    got = list(buffers(BytesStream(data), 100, 2000, scratch))
    assert len(got) == 1 and got[0][0] == 100 and got[0][1].obj is scratch.obj
    assert bytes(got[0][1]) == data[100:2100]


def test_an_incompressible_chunk_is_the_pack_read_itself(stored, monkeypatch):
    """Count copies: a whole-chunk read of a framed chunk whose frames are all stored raw
    (unencrypted) is a read-only view of the payload the pack read returned; a compressed
    one is decoded into new bytes."""
    repo, data = stored
    with Repository.open(repo) as r:
        f = r.open_file(r.recovery_points("vm")[0], "disk.vhdx")
        reads = []
        real = r.backend.get
        monkeypatch.setattr(r.backend, "get", lambda *a: reads.append(real(*a)) or reads[-1])
        disk = VhdxDisk(f)
        foff = disk.span(0, MiB)[1]              # the first MiB of the disk: random
        assert foff % MiB == 0
        chunk = f.chunk(foff // MiB)
        assert isinstance(chunk, memoryview) and chunk.readonly and chunk.obj is reads[-1]
        assert bytes(chunk) == data[:MiB]
        assert f.read(foff, MiB) == data[:MiB] and type(f.read(foff, MiB)) is bytes
        text = f.chunk(disk.span(MiB, MiB)[1] // MiB)
        assert type(text) is bytes and text == data[MiB:2 * MiB]


def test_a_damaged_raw_frame_fails_the_export(stored, tmp_path):
    """The view is handed out only after the chunk id is checked over it: one flipped byte
    in a raw frame fails the export with IntegrityError, and no image is left."""
    repo, data = stored
    copy = tmp_path / "repo"
    subprocess.run(["cp", "-a", repo, copy], check=True)
    with Repository.open(copy) as r:
        f = r.open_file(r.recovery_points("vm")[0], "disk.vhdx")
        foff = VhdxDisk(f).span(4 * MiB, MiB)[1]
        loc = f.locs[f.ids[foff // MiB]]
        payload = r.backend.get(loc.pack, loc.offset, loc.csize)
        t = frames.parse_table(r.crypto, payload, loc.csize, loc.usize, loc.hash)
        assert set(t.codecs) == {0}                       # raw frames
        at = loc.offset + t.starts[5] + 100
        pack = r.backend.path(loc.pack)
    with open(pack, "r+b") as p:
        p.seek(at)
        b = p.read(1)
        p.seek(at)
        p.write(bytes([b[0] ^ 1]))
    out = tmp_path / "out.raw"
    with open_source(copy) as tree:
        disk = tree.resolve("/vm/latest/disks/disk.raw").open()
        with pytest.raises(IntegrityError, match="fails its hash check"):
            formats.write_image(disk, out, "raw")
        with pytest.raises(IntegrityError, match="fails its hash check"):
            disk.read_buffer(4 * MiB + (128 << 10), 128 << 10)          # the mount's path
        assert bytes(disk.read_buffer(3 * MiB, 4096)) == data[3 * MiB:3 * MiB + 4096]
    assert not out.exists()


def test_vhdx_span_is_one_present_block_run_only(tmp_path):
    data = random.Random(7).randbytes(MiB) + bytes(63 * MiB)     # block 1 (32 MiB) all zeros
    (tmp_path / "d.raw").write_bytes(data)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic",
                    tmp_path / "d.raw", tmp_path / "d.vhdx"], check=True)
    disk = VhdxDisk(FileStream(tmp_path / "d.vhdx"))
    below, at = disk.span(10, 1000)
    assert below is disk.file and below.read(at, 1000) == data[10:1010]
    assert disk.span(40 * MiB, 4096) is None                       # not present: zeros
    assert disk.span(32 * MiB - 10, 20) is None                    # two blocks


@pytest.mark.parametrize("n", [0, 1, 63, 64, 65536, MiB, MiB + 1, 3 * MiB + 5])
def test_is_zero(n):
    assert is_zero(bytes(n)) and is_zero(memoryview(bytearray(n))) and is_zero(bytearray(n))
    if n:
        for at in (0, n // 2, n - 1):
            b = bytearray(n)
            b[at] = 1
            assert not is_zero(b) and not is_zero(memoryview(b)) and not is_zero(bytes(b))
    assert is_zero(memoryview(bytes(8 * (n // 8))).cast("Q"))


class _NoViews(Stream):
    def __init__(self, base):
        self.base, self.size, self.name = base, base.size, "noviews"

    def _readinto(self, offset, view):
        self.base.readinto(offset, view)


def test_file_stream_export_is_unchanged(tmp_path):
    """A source with no views (an image file) still exports through the scratch buffer."""
    data = random.Random(5).randbytes(3 * MiB) + bytes(MiB)
    (tmp_path / "d.raw").write_bytes(data)
    src = _NoViews(FileStream(tmp_path / "d.raw"))
    formats.write_image(src, tmp_path / "o.raw", "raw")
    assert (tmp_path / "o.raw").read_bytes() == data


@pytest.mark.skipif(not __import__("os").path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_a_mount_sends_reads_across_chunks_exactly(stored, tmp_path):
    """Through a real mount of the repository, READs that span two chunks (sent as the
    chunks' own buffers in one gathered reply, ``reply_buffers``) and READs ending inside
    a hole or at the disk's end give exactly the disk's bytes."""
    import os
    import sys

    repo, data = stored
    mp = tmp_path / "mnt"
    mp.mkdir()
    rpfs = [sys.executable, "-m", "rpfs"]
    subprocess.run([*rpfs, "mount", repo, mp], check=True, capture_output=True)
    try:
        fd = os.open(mp / "vm" / "latest" / "disks" / "disk.raw", os.O_RDONLY)
        try:
            for off, n in ((MiB // 2, MiB), (3 * MiB - 7, MiB + 13), (DISK - MiB // 3, MiB),
                           (7 * MiB + 12345, 3 * MiB)):
                assert os.pread(fd, n, off) == data[off:off + n]
        finally:
            os.close(fd)
    finally:
        subprocess.run([*rpfs, "umount", mp], check=False, capture_output=True)
