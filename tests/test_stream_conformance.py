"""Every Stream class obeys the one contract (streams/stream.py), checked on streams built from
real fixture images against an independent flat copy: random reads and readintos (inside,
across and past the end), EOF behaviour, refused negative offsets, and extents() that tile
the range asked for and never call data a hole.

The flat copies: the raw disk a container was made from (qemu-img made the VHD/VHDX), the
raw image of each level of a differencing chain, the VHDX with its log applied directly,
the manifest's sha256 for NTFS and store streams (the whole-stream read is checked against
it, then random reads against that read).
"""

from __future__ import annotations

import hashlib
import random
import shutil

import pytest

from formats import open_image
from formats.disk import RawDisk
from formats.vhdx import VhdxDisk
from ntfs_reader import Volume
from ntfs_reader.datastream import CompressedStream, RunlistStream
from ntfs_reader.wof import WofStream
from streams.stream import ZERO, BytesStream, FileStream, SliceStream, Stream, ZeroStream, is_zero
from tests.helpers import vhdx_fixtures as F
from tests.helpers.ntfs_images import features_image

MiB = 1 << 20


class Flat:
    """The expected bytes of a stream: in memory, or in a raw file read by ``os.pread``."""

    def __init__(self, data: bytes | None = None, path=None, size: int | None = None):
        self.data = data
        self.file = FileStream(path) if path is not None else None
        self.size = len(data) if data is not None else (size if size is not None else self.file.size)

    def read(self, offset: int, length: int) -> bytes:
        end = min(self.size, offset + length)
        if offset >= end:
            return b""
        if self.data is not None:
            return self.data[offset:end]
        got = self.file.read(offset, end - offset)
        return got + bytes(end - offset - len(got))  # a raw file shorter than the disk


def check_conformance(stream: Stream, flat: Flat, seed: int, reads: int = 120) -> None:
    rng = random.Random(seed)
    size = stream.size
    assert size == flat.size, (stream, size, flat.size)
    lengths = [0, 1, 511, 512, 4095, 4096, 65537, 1 << 20, 3 * MiB + 5]
    for _ in range(reads):
        off = rng.randrange(0, size + 2) if size else rng.randrange(0, 2)
        if rng.random() < 0.2 and size:  # near the end: reads that cross it
            off = max(0, size - rng.randrange(1, 9000))
        n = rng.choice(lengths)
        want = flat.read(off, n)
        assert stream.read(off, n) == want, (stream, off, n)
        buf = bytearray(b"\xa5" * (n + 7))
        got = stream.readinto(off, memoryview(buf)[:n])
        assert got == len(want) and bytes(buf[:got]) == want, (stream, off, n)
        assert bytes(buf[got:]) == b"\xa5" * (n + 7 - got)  # nothing written past the data
    # EOF and invalid arguments
    assert stream.read(size, 10) == b"" and stream.read(size + 4096, 1) == b""
    assert stream.readinto(size, bytearray(16)) == 0
    assert stream.read(0, 0) == b""
    with pytest.raises(ValueError):
        stream.read(-1, 10)
    with pytest.raises(ValueError):
        stream.read(0, -1)
    with pytest.raises(ValueError):
        stream.readinto(-1, bytearray(1))
    # extents: the whole stream, and sub-ranges, tiled exactly; holes read as zeros
    check_extents(stream, flat, 0, None, rng)
    for _ in range(6):
        off = rng.randrange(0, size + 1)
        check_extents(stream, flat, off, rng.choice([1, 4096, 5 * MiB, size + 10]), rng)
    assert list(stream.extents(size, 100)) == []


def check_extents(stream: Stream, flat: Flat, offset: int, length: int | None,
                  rng: random.Random) -> None:
    end = stream.size if length is None else min(stream.size, offset + length)
    ext = list(stream.extents(offset, length))
    if offset >= end:
        assert ext == []
        return
    assert ext[0].offset == offset and ext[-1].end == end, (stream, offset, length, ext[:3])
    for a, b in zip(ext, ext[1:]):
        assert a.end == b.offset and a.length > 0, (stream, a, b)
    for e in ext:
        if e.kind != ZERO:
            continue
        # honest holes: sample up to 4 MiB of each (all of a small one) from the flat copy
        probes = [(e.offset, min(e.length, 1 << 20))]
        if e.length > 1 << 20:
            probes += [(e.offset + rng.randrange(0, e.length - (1 << 20)), 1 << 20)
                       for _ in range(3)] + [(e.end - 4096, 4096)]
        for at, n in probes:
            assert is_zero(flat.read(at, n)), (stream, e, at)


def sha256_of(stream: Stream) -> bytes:
    data = stream.read(0, stream.size)
    return data, hashlib.sha256(data).hexdigest()


# -- the cases ---------------------------------------------------------------------------

def test_memory_streams():
    data = random.Random(1).randbytes(3 * MiB + 77)
    check_conformance(BytesStream(data), Flat(data), 1)
    check_conformance(BytesStream(b""), Flat(b""), 2, reads=5)
    check_conformance(ZeroStream(5 * MiB + 3), Flat(bytes(5 * MiB + 3)), 3)
    inner = SliceStream(BytesStream(data), 4097, MiB + 5)
    check_conformance(inner, Flat(data[4097:4097 + MiB + 5]), 4)


@pytest.mark.parametrize("disk", ["bare", "gpt4k", "data"])
def test_container_streams(small_fixtures, disk):
    """VHD fixed/dynamic and VHDX fixed/dynamic made by qemu-img, raw via RawDisk and
    FileStream, and each partition (a SliceStream), against the raw disk."""
    d = small_fixtures.disks[disk]
    raw = Flat(path=d.raw)
    check_conformance(FileStream(d.raw), raw, 10)
    check_conformance(RawDisk(FileStream(d.raw)), raw, 11)
    kinds = set()
    for i, (kind, path) in enumerate(sorted(d.images.items())):
        img = open_image(FileStream(path))
        kinds.add(type(img).__name__)
        # a container may round the virtual size up: the extra tail must read as zeros
        check_conformance(img, Flat(path=d.raw, size=img.size), 20 + i, reads=60)
    assert kinds == {"VhdDisk", "VhdxDisk"}
    for p in d.partitions:
        if p["type"] == "extended":
            continue
        part = SliceStream(FileStream(d.raw), p["offset"], p["size"])
        expect = Flat(FileStream(d.raw).read(p["offset"], min(p["size"], 4 * MiB)))
        check_conformance(SliceStream(part, 0, expect.size), expect, 40, reads=30)


def test_differencing_vhdx_chain():
    levels = F.chain(3)
    parent = None
    for i, (vhdx, raw) in enumerate(levels):
        disk = VhdxDisk(FileStream(vhdx))
        if parent is not None:
            disk.set_parent(parent)
        check_conformance(disk, Flat(path=raw, size=disk.size), 50 + i, reads=60)
        parent = disk


def test_vhdx_log_overlay():
    """A VHDX opened with a pending log reads through the replayed overlay (LogOverlay):
    the overlay equals the file with the updates applied directly, and so does the disk."""
    pending, applied, _ = F.logged()
    disk = VhdxDisk(FileStream(pending))
    assert disk.log_replayed and type(disk.file).__name__ == "LogOverlay"
    applied_file = FileStream(applied)
    overlay = disk.file
    n = min(overlay.size, applied_file.size) - MiB   # past the headers (their log GUIDs differ)
    check_conformance(SliceStream(overlay, MiB, n), Flat(applied_file.read(MiB, n)), 60)
    check_conformance(disk, Flat(VhdxDisk(applied_file).read(0, disk.size)), 61, reads=60)


def _ntfs_streams(volume: Volume, manifest: dict, want: int) -> list[tuple[str, Stream, str]]:
    """(what, stream, sha256) for files and named streams of every kind in a manifest."""
    picked: dict[type, list] = {}
    files = [(p, e) for p, e in sorted(manifest["entries"].items())
             if e.get("type") == "file" and "sha256" in e and not e.get("unsupported")]
    # the unusual ones first (compressed, WOF, sparse, with streams), then a few plain ones
    files.sort(key=lambda pe: not (pe[1].get("compressed") or "wof" in pe[1]
                                   or pe[1].get("sparse") or pe[1].get("ads")))
    for path, e in files[:80]:
        candidates = [(path, "", e["sha256"], e["size"])]
        candidates += [(path, name, a["sha256"], a["size"]) for name, a in e.get("ads", {}).items()
                       if name != "WofCompressedData"]
        for p, name, digest, size in candidates:
            s = volume.lookup(p).open(name)
            if len(picked.setdefault(type(s), [])) < want and size < 8 * MiB:
                picked[type(s)].append((f"{p}:{name}", s, digest))
    return [x for xs in picked.values() for x in xs]


@pytest.mark.parametrize("volume", ["system-p3", "features"])
def test_ntfs_streams(small_fixtures, volume):
    """Runlist (resident, non-resident, sparse, fragmented), LZNT1-compressed and
    WOF-compressed data streams, each against its manifest hash."""
    if volume == "features":
        if shutil.which("wimlib-imagex") is None:
            pytest.skip("wimlib-imagex not installed (tools/setup.sh installs wimtools)")
        image, manifest = features_image()
    else:
        fx = small_fixtures.volumes[volume]
        image, manifest = fx.image, fx.manifest
    vol = Volume(FileStream(image))
    streams = _ntfs_streams(vol, manifest, 6)
    kinds = {type(s) for _, s, _ in streams}
    assert {RunlistStream, CompressedStream} <= kinds or volume == "features"
    if volume == "features":
        assert WofStream in kinds
    for i, (what, s, digest) in enumerate(streams):
        data, got = sha256_of(s)
        assert got == digest, what
        check_conformance(s, Flat(data), 70 + i, reads=40)


def test_stored_file_streams(small_fixtures, tmp_path):
    """Files in a repository as the mount reads them (ReadAhead over StoredFile: chunks,
    unstored zero chunks as holes), the StoredFile itself, and the lazily opened stream a
    recovery point's disks/ are built on."""
    from rpfs.backup import backup
    from rpfs.store.readahead import ReadAhead
    from rpfs.store.repository import Repository, StoredFile
    from rpfs.tree import _LazyStream
    d = small_fixtures.disks["bare"]
    src = tmp_path / "src"
    src.mkdir()
    for kind in ("vhd-dynamic", "vhdx-dynamic-1M"):
        shutil.copyfile(d.images[kind], src / d.images[kind].name)
    (src / "notes.txt").write_bytes(b"x" * 1000)
    repo = Repository.init(str(tmp_path / "repo"))
    try:
        backup(repo, [str(p) for p in sorted(src.iterdir())], vm="TestVM",
               time="2026-11-01T00:00:00Z", show_progress=False)
        (rp,) = repo.recovery_points("TestVM")
        files = repo.files(rp)
        assert len(files) == 3
        for i, path in enumerate(sorted(files)):
            flat = Flat(path=src / path.rsplit("/", 1)[-1])
            stored = repo.open_file(rp, path)
            assert type(stored) is ReadAhead and type(stored.file) is StoredFile
            check_conformance(stored, flat, 90 + i, reads=40)
            check_conformance(stored.file, flat, 95 + i, reads=20)
            lazy = _LazyStream(lambda: repo.open_file(rp, path), stored.size, path)
            check_conformance(lazy, flat, 100 + i, reads=20)
    finally:
        repo.close()


@pytest.mark.parametrize("name", ["xts128", "cbc256", "elephant128", "xts128-4k",
                                  "xts128-paused", "cbc128-suspended"])
def test_bitlocker_volumes(small_fixtures, name, tmp_path):
    """The decrypted view of the factory's BitLocker volumes (moved boot sectors, zeroed
    metadata areas, a conversion paused half-way, a clear key) against the plain image they
    were encrypted from (dislocker agrees with it: tests/test_bitlocker_fixtures.py)."""
    from formats.bitlocker import KeyRing, open_volume
    from tools.fixtures import bitlocker as blfx

    v = blfx.build(small_fixtures).volumes[name]
    (tmp_path / "keys").write_text(v.info["recovery_password"] + "\n")
    vol = open_volume(FileStream(v.image), KeyRing.load(tmp_path / "keys"))
    plain = v.plain.read_bytes()
    check_conformance(vol, Flat(plain + bytes(vol.size - len(plain))), 110, reads=60)
