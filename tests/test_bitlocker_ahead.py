"""Decrypted blocks handed out as views (``formats/bitlocker/ahead.py``): a reader in order
gets, over every BitLocker volume the suite has (cryptsetup's and dissect's Windows-written
images, the factory's variants), exactly the bytes a direct read gives; random reads are not
served from blocks; a block that cannot be decrypted is not used, and the read of that range
still fails with its typed error."""

from __future__ import annotations

import hashlib
import random

import pytest

from formats.bitlocker import ahead, open_volume
from ntfs_reader.volume import Volume
from streams.errors import FormatError, LockedError, RpfsError
from streams.stream import FileStream, Stream
from tests.helpers.bitlocker import every_volume, recovery
from tools.fixtures import bitlocker as blfx

KiB, MiB = 1 << 10, 1 << 20


@pytest.fixture(scope="module")
def bl(small_fixtures):
    return blfx.build(small_fixtures)


@pytest.fixture(scope="module")
def volumes(bitlk_images_dir, dissect_fve_dir, bl):
    return every_volume(bitlk_images_dir, dissect_fve_dir, bl)


def direct(vol, offset: int, n: int):
    """The existing path: bytes, or the typed error it raises."""
    try:
        return vol.read(offset, n)
    except RpfsError as e:
        return type(e)


def test_reader_in_order_gets_the_direct_bytes_on_every_volume(volumes):
    """Differential, over every fixture: 1 MiB + 4 KiB reads in order from a 12 KiB offset
    (each spans two blocks, as a file's READs do), served from blocks, equal the direct
    read of the same range (where a block cannot be made, of sectors of unknown state,
    views give None and the caller reads directly)."""
    assert len(volumes) >= 30
    served = 0
    for name, vol in volumes.items():
        step = MiB + 4 * KiB
        off = 12 * KiB
        while off < vol.size:
            n = min(step, vol.size - off)
            got = vol.views(off, n, sequential=True)
            want = direct(vol, off, n)
            if got is not None:
                assert all(v.readonly for v in got), name
                assert b"".join(got) == want, (name, off)
                served += 1
            off += n
        assert len(vol.blocks._blocks) <= vol.blocks.keep
    assert served > 300


def test_files_read_through_read_buffers_are_their_manifest(bl):
    """The mount's READ path (``read_buffers`` of an NTFS file on the volume, 256 KiB at a
    time) on the factory's Elephant and XTS volumes: every file equals its manifest, and
    the reads after the first were served from decrypted blocks."""
    for name in ("elephant128", "elephant256", "xts128-4k", "cbc256"):
        v = bl.volumes[name]
        vol = open_volume(FileStream(v.image), recovery(v.info["recovery_password"]))
        fs = Volume(vol)
        files = 0
        for path, e in v.manifest["entries"].items():
            if e["type"] != "file" or "sha256" not in e:
                continue
            stream = fs.lookup(path).open()
            h = hashlib.sha256()
            for off in range(0, stream.size, 256 * KiB):
                for b in stream.read_buffers(off, 256 * KiB):
                    h.update(b)
            assert h.hexdigest() == e["sha256"], (name, path)
            files += 1
        assert files > 5
        assert vol.blocks.filled > 0 and vol.blocks.prefetched > 0, name


def test_random_reads_are_not_served_from_blocks(bl):
    """Reads that do not continue one another decrypt only their own sectors: no block is
    made, nothing is decrypted ahead."""
    v = bl.volumes["elephant128"]
    vol = open_volume(FileStream(v.image), recovery(v.info["recovery_password"]))
    rnd = random.Random(3)
    for _ in range(200):
        off = rnd.randrange(0, vol.size // 4096 - 1) * 4096
        assert vol.views(off, 4096) is None
    assert vol.blocks.filled == vol.blocks.prefetched == 0


def test_blocks_ahead_are_bounded_and_reused(bl):
    """A reader in order sets off at most ``AHEAD`` blocks ahead, each block is decrypted
    once, and at most ``KEEP`` are kept."""
    v = bl.volumes["elephant128"]
    vol = open_volume(FileStream(v.image), recovery(v.info["recovery_password"]))
    b = vol.blocks
    assert vol.views(0, 256 * KiB) is None        # a first read starts no run
    for off in range(256 * KiB, 16 * MiB, 256 * KiB):
        assert vol.views(off, 256 * KiB) is not None
        assert len(b._blocks) <= ahead.KEEP
    ahead._worker().submit(lambda: None).result()   # (one worker: the jobs before are done)
    assert b.filled == 16 + ahead.AHEAD and b.prefetched == 15 + ahead.AHEAD


def test_blocks_are_bounded_across_volumes(bl):
    """Many volumes read in order (a mount of many recovery points) keep at most ``TOTAL``
    blocks between them, and share one worker thread."""
    import threading

    v = bl.volumes["elephant128"]
    vols = [open_volume(FileStream(v.image), recovery(v.info["recovery_password"]))
            for _ in range(8)]
    for vol in vols:
        for off in range(0, 6 * MiB, MiB):
            vol.read_buffers(off, MiB)
    ahead._worker().submit(lambda: None).result()
    assert ahead.TOTAL == 16 < 8 * ahead.KEEP   # (each volume alone would keep 32 MiB)
    assert sum(len(vol.blocks._blocks) for vol in vols) <= 16
    assert sum(vol.blocks.filled for vol in vols) >= 8 * 5
    assert sum(t.name.startswith("rpfs-bitlocker-ahead") for t in threading.enumerate()) == 1


class Failing(Stream):
    """``base`` whose bytes in ``[lo, hi)`` cannot be read (a damaged run of an image): a
    typed error, as a short read of a truncated file gives."""

    def __init__(self, base: Stream, lo: int, hi: int):
        self.base, self.lo, self.hi = base, lo, hi
        self.size, self.name = base.size, "failing"

    def _read(self, offset, length):
        if offset < self.hi and offset + length > self.lo:
            raise FormatError("unreadable", source=self.name, offset=self.lo)
        return self.base.read(offset, length)


def test_unreadable_blocks_are_typed_errors_not_wrong_bytes(bl):
    """Where the image cannot be read, a reader in order gets None from views (the block
    failed, in the worker or in its own thread) and the typed error from read_buffers, for
    that MiB only; elsewhere the right bytes; a wrong key still does not open the volume."""
    v = bl.volumes["elephant128"]
    image = FileStream(v.image)
    good = open_volume(image, recovery(v.info["recovery_password"]))
    lo, hi = 20 * MiB + 512, 20 * MiB + 4096
    assert all(not (m < hi and m + good.meta.metadata_size > lo) for m in good.meta.metadata_offsets)
    vol = open_volume(Failing(image, lo, hi), recovery(v.info["recovery_password"]))
    outcomes = {"bytes": 0, "error": 0}
    for off in range(0, 24 * MiB, MiB):
        views = vol.views(off, MiB)
        if off // MiB == 20:
            assert views is None
        elif off:
            assert b"".join(views) == good.read(off, MiB)
        try:
            got = b"".join(vol.read_buffers(off, MiB))
        except FormatError as e:
            assert off // MiB == 20 and "unreadable" in str(e)
            outcomes["error"] += 1
        else:
            assert got == good.read(off, MiB)
            outcomes["bytes"] += 1
    assert outcomes == {"bytes": 23, "error": 1}
    assert vol.blocks.prefetched > 20
    with pytest.raises(LockedError):
        open_volume(image, recovery("111111-" * 7 + "111111"))
