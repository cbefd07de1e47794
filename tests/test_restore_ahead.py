"""A restore from a repository has the metadata it walks decoded ahead by the read-ahead
pool (``Stream.will_need``, ``Volume.will_walk``/``will_list``), not frame by frame on its
own thread: counted in frames and chunks decoded, never timed. The volume is a real
mkntfs + ntfs-3g image (tests/helpers/ntfs_images.py ``mftfrag``: a $MFT in hundreds of
runs, 1,531 files of 6,000 bytes and up to 6,000 tiny ones) backed up into a real
repository."""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from ntfs_reader.volume import Volume
from rpfs.backup import backup
from rpfs.ntfs_nodes import volume_root
from rpfs.restore import restore
from rpfs.store import Repository, StoreOptions
from rpfs.store.cache import ChunkCache
from rpfs.store.readahead import ChunkLoader
from tests.helpers.ntfs_images import _rand, mftfrag_image
from tests.helpers.streams import log_text

MiB = 1 << 20

needs_ntfs = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("mkntfs", "ntfs-3g")) or not os.path.exists("/dev/fuse"),
    reason="needs mkntfs and ntfs-3g (FUSE)")


@pytest.fixture(scope="module")
def stored_text(tmp_path_factory):
    """A repository (1 MiB chunks of 64 KiB frames, the defaults) holding 4 MiB of text."""
    d = tmp_path_factory.mktemp("hint")
    (d / "vm").mkdir()
    data = log_text(4 * MiB)
    (d / "vm" / "log.txt").write_bytes(data)
    with Repository.init(d / "repo") as r:
        backup(r, [str(d / "vm")], time="2024-01-01T00:00:00Z", show_progress=False)
    return d / "repo", data


def test_a_hinted_range_is_decoded_by_the_pool_and_small_reads_find_it(stored_text):
    """Small reads of a framed chunk each decode their frame on the reader's thread; after
    ``will_need`` the pool has decoded the chunks whole and the reads decode nothing."""
    path, data = stored_text
    with Repository.open(path) as r:
        f = r.open_file(r.recovery_points("vm")[0], "log.txt")
        assert f.will_need(MiB, 2 * MiB) == 2 * MiB
        assert r.loader.prefetched == 2
        for off in range(MiB, 3 * MiB, 64 << 10):   # one 4 KiB read per frame, as a walk does
            assert f.read(off + 100, 4096) == data[off + 100:off + 4196]
        assert r.frames_decoded == 0
        # without the hint, the same reads elsewhere decode one frame each
        for off in range(3 * MiB, 4 * MiB, 64 << 10):
            assert f.read(off + 100, 4096) == data[off + 100:off + 4196]
        assert r.frames_decoded == 16


def test_a_hint_queues_no_more_than_the_read_ahead_window(stored_text):
    """Chunks hinted far ahead of a walk would be evicted before it reaches them: a hint
    queues at most the read-ahead window (a quarter of the cache: 2 chunks of an 8 MiB
    cache) beyond the loads already queued, and says how much it took."""
    path, data = stored_text
    with Repository.open(path, StoreOptions(chunk_cache_bytes=8 * MiB)) as r:
        f = r.open_file(r.recovery_points("vm")[0], "log.txt")
        assert f.will_need(0, 4 * MiB) == 2 * MiB
        assert r.loader.prefetched == 2
        assert f.read(100, 4096) == data[100:4196]
    with Repository.open(path, StoreOptions(chunk_cache_bytes=0)) as r:   # no cache: no hint
        f = r.open_file(r.recovery_points("vm")[0], "log.txt")
        assert f.will_need(0, 4 * MiB) == 0 and r.loader.prefetched == 0


class _Loc:
    __slots__ = ("hash",)

    def __init__(self, h: bytes):
        self.hash = h


def test_a_reader_decodes_a_queued_chunk_itself_rather_than_wait_behind_the_queue():
    """A walk wants its hinted chunks in its own order: one queued for read-ahead but not yet
    begun is decoded by the reader that asks for it (and not again by the pool)."""
    release = threading.Event()
    loads = []

    def load(loc):
        loads.append(loc.hash)
        if loc.hash == b"first":
            release.wait(30)
        return loc.hash * 2

    loader = ChunkLoader(load, ChunkCache(MiB), workers=1)
    try:
        loader.prefetch([_Loc(b"first"), _Loc(b"second")])   # one worker: "second" waits
        got = []
        t = threading.Thread(target=lambda: got.append(loader.get(_Loc(b"second"))))
        t.start()
        t.join(20)   # a hang, not a duration: before, it waited for "first" to be released
        assert got == [b"secondsecond"] and loader.taken == 1
    finally:
        release.set()
        t.join(30)
        loader.close()
    assert sorted(loads) == [b"first", b"second"]   # "second" decoded once


@pytest.fixture(scope="module")
def stored_volume(tmp_path_factory):
    """mftfrag's image backed up into a repository; yields (path, manifest)."""
    image, manifest = mftfrag_image()
    d = tmp_path_factory.mktemp("vol")
    (d / "vm").mkdir()
    shutil.copyfile(image, d / "vm" / "vol.img")
    with Repository.init(d / "repo") as r:
        backup(r, [str(d / "vm")], time="2024-01-01T00:00:00Z", show_progress=False)
    return d / "repo", manifest


@needs_ntfs
def test_a_restore_decodes_no_metadata_frame_on_its_own_thread(stored_volume, tmp_path):
    """The walk's $MFT blocks (a $MFT of hundreds of runs) and its directories' INDX blocks
    are hinted before they are read: the restoring thread decodes none of their frames
    (it was every $MFT block and INDX block it read, one 64 KiB frame each)."""
    path, manifest = stored_volume
    with Repository.open(path) as r:
        stored = r.open_file(r.recovery_points("vm")[0], "vol.img")
        root = volume_root(Volume(stored), "vol", ("vol",))
        main = threading.get_ident()
        on_main = []
        read_frames = r._read_frames

        def counted(loc, t, wanted):
            if threading.get_ident() == main:
                on_main.extend(wanted)
            return read_frames(loc, t, wanted)

        r._read_frames = counted
        result = restore(root, str(tmp_path))
        assert not result.errors and result.files == len(manifest["fill_left"]) + manifest["many"]
        for name in manifest["fill_left"][::50]:
            got = (tmp_path / "vol" / "fill" / name).read_bytes()
            assert got and got == _rand(6000, int(name))[:len(got)], name
        assert (tmp_path / "vol" / "many" / "00007").read_bytes() == b"file 7"
        assert on_main == []
        assert r.loader.prefetched > 0
