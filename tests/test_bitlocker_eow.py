"""Used-space-only (encrypt-on-write) BitLocker volumes whose conversion was paused: the
chunks the FVE-EOW bitmap records as encrypted are decrypted, the others read as they are,
and what cannot be decided (a chunk a conversion log names, a damaged bitmap or log, a
region past the end) is a typed error — EIO in the mount — never guessed bytes.

Real Windows volumes (dissect.fve's test data) prove the reading of Windows' structures;
the factory's volumes (real NTFS from mkntfs/ntfs-3g, its manifest as truth) prove that
every file reads back, and take the damage.
"""

from __future__ import annotations

import errno
import hashlib
import shutil
import struct
import subprocess
import zlib

import pytest

from formats.bitlocker import KeyRing, describe, open_volume
from formats.bitlocker import conversion as cv
from formats.bitlocker.keys import Key
from rpfs.cli import main
from streams.errors import FormatError
from streams.stream import FileStream, Stream
from tools.fixtures import bitlocker as blfx
from tools.fixtures import dissect_fve_images as dfx

MiB = 1 << 20


def password(text: str) -> KeyRing:
    return KeyRing([Key("password", text.encode("utf-16-le"), 1)])


class Patched(Stream):
    """``base`` with some byte ranges replaced (the image on disk stays as it is)."""

    def __init__(self, base: Stream, patches: dict[int, bytes]):
        self.base, self.patches = base, patches
        self.size, self.name = base.size, "patched"

    def _read(self, offset, length):
        data = bytearray(self.base.read(offset, length))
        for at, patch in self.patches.items():
            lo, hi = max(at, offset), min(at + len(patch), offset + length)
            if lo < hi:
                data[lo - offset:hi - offset] = patch[lo - at:hi - at]
        return bytes(data)


# -- a Windows-made volume, conversion paused half-way ---------------------------------------

@pytest.fixture(scope="module")
def windows(dissect_fve_dir):
    stream = FileStream(dissect_fve_dir / "eow_partial.img")
    return stream, open_volume(stream, password(dfx.PASSWORD))


def test_windows_bitmap_decides_what_is_decrypted(windows):
    """eow_partial: current_state says "encrypted" (4) although the conversion stopped half
    way; the bitmap of the region at 0x2202000 (8 MiB chunks) has chunks 0-19 plain and
    20-32 encrypted, the header block's region is plain, so is the first region."""
    stream, vol = windows
    m = vol.meta
    assert m.eow and m.current_state == m.next_state == 4 and m.encrypted_size == 0x3FEF0000
    s = vol.map.summary
    assert s["chunk_size"] == 8 * MiB and s["in_flight"] == []
    runs = [(a, b, st) for a, b, st, _ in vol.map.state_runs(0x2000, 0x123F0000 - 0x2000)]
    assert runs == [(0x2000, 0xC202000, cv.PLAIN), (0xC202000, 0x123F0000, cv.ENCRYPTED)]
    # the original boot sector, from the plain header block; the MFT mirror, from a plain
    # chunk: read as they are, where decrypting them (what rpfs did before) gives noise
    boot = vol.read(0, 512)
    assert boot[3:11] == b"NTFS    " and boot[510:] == b"\x55\xaa"
    assert boot == stream.read(m.header_offset, 512)
    mirror = struct.unpack_from("<Q", boot, 0x38)[0] * 4096
    assert mirror == 0x2000 and vol.read(mirror, 4096) == stream.read(mirror, 4096)
    assert vol.read(mirror, 1024)[:5] == b"FILE0"
    assert vol.cipher.decrypt(stream.read(mirror, 4096), mirror)[:5] != b"FILE0"
    # the EOW structures read as zeros, like the metadata blocks
    for off, n in vol.map.reserved:
        assert vol.read(off, n) == bytes(n)
    assert stream.read(0x1553A000, 8) == b"FVE-EOW\0"


def test_windows_conversion_log_holds_ciphertext_samples(windows):
    """What Windows keeps in a region's conversion log, and why a chunk it names is
    unknown: the older slot of the log at 0x15641000 names chunk 19 (0xba02000, the last one
    converted), with 16 bytes per sector — the first AES block of each sector as it was
    encrypted. Decrypted at its sector's offset each is the file's plaintext (test data of
    "b"s); the newer slot is empty, so nothing is converting."""
    stream, vol = windows
    log = 0x15641000
    slots = [stream.read(log + 512 + i * 0x40400, 32) for i in range(2)]
    recs = [cv.LOG_RECORD.parse(r) for r in slots]
    assert all(zlib.crc32(r[:28]) == rec.crc32 for r, rec in zip(slots, recs))
    newer, older = sorted(recs, key=lambda r: -r.sequence)
    assert newer.offset == 0 and (older.offset, older.length) == (0xBA02000, 0x40000)
    samples = stream.read(log + 512 + 0x40400 + 512, older.length)
    assert zlib.crc32(samples) == older.data_crc32
    plain = [vol.cipher.decrypt(samples[i * 16:i * 16 + 16] + bytes(496), older.offset + i * 512)[:16]
             for i in range(0, older.length // 16, 97)]
    assert all(p == b"b" * 16 for p in plain)


def test_windows_truncated_copy_is_an_error_past_its_end(windows):
    """dissect's copy stops at 0x15847c00 of a 1 GiB volume: the regions whose bitmaps lie
    beyond are unknown, and a read there says so (EIO), where the copy holds zeros."""
    _, vol = windows
    assert "outside the volume" in vol.map.summary["damaged"]
    with pytest.raises(FormatError) as e:
        vol.read(0x12400000, 4096)
    assert e.value.errno == errno.EIO and "0x123f0000" in str(e.value)
    assert vol.read(0x123EF000, 4096)  # the last encrypted chunk before it still reads


def test_windows_decrypted_used_space_only_reads_as_is(dissect_fve_dir):
    """decrypted: a used-space-only volume decrypted again (state 1, keys removed): every
    bitmap clear, so up to where dissect's copy is cut (its last region, 0x33f0000-, lies
    past it and is unknown) the volume is the partition itself outside the zeroed areas."""
    img = dissect_fve_dir / "decrypted.img"
    stream = FileStream(img)
    vol = open_volume(stream, password(dfx.PASSWORD))
    assert vol.meta.eow and vol.meta.current_state == 1
    assert vol.cipher is None and vol.meta.protectors == []
    assert vol.map.summary["encrypted_chunks"] == 0
    assert "region 0x33f0000+0xb00000 is outside the volume" in vol.map.summary["damaged"]
    zero = sorted([(o, n) for o, n in vol.map.reserved]
                  + [(o, 65536) for o in vol.meta.metadata_offsets]
                  + [(vol.meta.header_offset, vol.meta.header_size)])
    for off in range(vol.meta.header_size, 0x33F0000, 64 << 10):
        n = min(64 << 10, 0x33F0000 - off)
        got, raw = vol.read(off, n), bytearray(stream.read(off, n))
        for z, zn in zero:
            lo, hi = max(z, off), min(z + zn, off + n)
            if lo < hi:
                raw[lo - off:hi - off] = bytes(hi - lo)
        assert got == raw, hex(off)
    assert vol.read(0x2000, 5) == b"FILE0"


# -- the factory's volumes: real NTFS, conversion paused half-way ----------------------------

EOW = [n for n, v in blfx.VARIANTS.items() if v[3] == "eow"]


@pytest.fixture(scope="module")
def bl(small_fixtures):
    return blfx.build(small_fixtures)


@pytest.mark.parametrize("name", EOW)
def test_factory_map_is_half_encrypted(bl, name):
    v = bl.volumes[name]
    vol = open_volume(FileStream(v.image), password(v.info["password"]))
    s = vol.map.summary
    assert s["conversion"] == "used space only" and "damaged" not in s and s["regions"] == 4
    fs_chunks = -(-(v.info["metadata"][0] - 8192) // MiB)
    enc = [(a, b) for a, b in v.info["encrypted_ranges"] if a < v.info["metadata"][0]]
    assert len(enc) == fs_chunks // 2  # half the file system's chunks
    plain = v.plain.read_bytes()
    for a, b in enc[-1:] + [(enc[-1][1], enc[-1][1] + MiB)]:  # both sides of the boundary
        assert vol.read(a, b - a) == plain[a:b]
    assert vol.read(0, 8192) == plain[:8192]


@pytest.mark.parametrize("name", EOW)
def test_factory_files_read_through_the_cli(bl, name, tmp_path):
    v = bl.volumes[name]
    keys = tmp_path / "keys.txt"
    keys.write_text(v.info["recovery_password"] + "\n")
    assert main(["restore", str(v.image), f"/volumes/{name}-p0", str(tmp_path / "out"),
                 "--keys", str(keys)]) == 0
    n = 0
    for path, e in v.manifest["entries"].items():
        if e["type"] == "file" and "sha256" in e:
            p = tmp_path / "out" / f"{name}-p0" / path.lstrip("/")
            assert hashlib.sha256(p.read_bytes()).hexdigest() == e["sha256"], path
            n += 1
    assert n > 10


@pytest.mark.skipif(shutil.which("dislocker-file") is None,
                    reason="dislocker-file (Debian package dislocker) is not installed")
def test_dislocker_agrees_where_encrypted(bl, dissect_fve_dir, tmp_path):
    """dislocker (0.7.2) cannot open a used-space-only volume, Windows' or ours ("EOW volume
    GUID not supported", after failing to read the FVE-EOW block). Given a copy of ours
    whose boot sector carries the ordinary BitLocker GUID instead — the same metadata, keys
    and sectors — it decrypts every sector: where the bitmap says encrypted it gives what
    rpfs gives (an independent check of the writer's and rpfs's keys, ciphers and layout);
    where it says plain, dislocker's bytes are noise and rpfs's the file system's."""
    v = bl.volumes["xts128-eow-paused"]
    out = tmp_path / "dislocker.raw"

    def dislocker(image):
        return subprocess.run(["dislocker-file", "-r", "-V", str(image),
                               f"-p{v.info['recovery_password']}", str(out)],
                              capture_output=True, text=True)

    for image in (v.image, dissect_fve_dir / "eow_partial.img"):
        r = dislocker(image)
        assert r.returncode != 0 and "Cannot parse volume header" in r.stdout + r.stderr
    copy = tmp_path / "guid.img"
    shutil.copyfile(v.image, copy)
    with open(copy, "r+b") as f:
        f.seek(160)
        f.write(blfx.GUID_NORMAL.bytes_le)
    r = dislocker(copy)
    assert r.returncode == 0 and out.exists(), r.stdout[-500:] + r.stderr[-500:]
    got = out.read_bytes()
    plain = v.plain.read_bytes()
    vol = open_volume(FileStream(v.image), password(v.info["password"]))
    runs = list(vol.map.state_runs(8192, v.info["metadata"][0] - 8192))
    assert [s for _, _, s, _ in runs] == [cv.ENCRYPTED, cv.PLAIN]
    for a, b, state, _ in runs:
        mine = vol.read(a, b - a)
        assert mine == plain[a:b]
        assert (got[a:b] == mine) == (state == cv.ENCRYPTED)


# -- damage: what cannot be decided is an error, the rest still reads -------------------------

@pytest.fixture(scope="module")
def factory(bl):
    v = bl.volumes["xts128-eow-paused"]
    return v, FileStream(v.image)


def _region0(stream):
    """(bitmap offset, log offset, slot size) of the file system's region."""
    head = stream.read(0, 512)
    info = cv.EOW_INFO.parse(stream.read(struct.unpack_from("<Q", head, 200)[0], 512))
    bm_off = struct.unpack_from("<Q", stream.read(struct.unpack_from("<Q", head, 200)[0] + 56, 8))[0]
    bm = cv.BITMAP.parse(stream.read(bm_off, 512))
    return bm_off, bm.log_offset, info.log_size


def _in_flight(stream, chunk_offset: int) -> dict[int, bytes]:
    """Patches that make region 0's conversion log name the chunk at ``chunk_offset`` as
    being converted (the newest slot, CRC recomputed), as a crash mid-conversion leaves it."""
    _, log, _ = _region0(stream)
    h = cv.LOG_HEADER.parse(stream.read(log, 512))
    rec = struct.pack("<HHIIQII", 32, 1, 9, 0, chunk_offset, MiB // 512 * 16, 0)
    return {log + 512 + h.slot_size: rec + struct.pack("<I", zlib.crc32(rec))}


def _file_chunk(v) -> int:
    """The 1 MiB chunk of region 0 that holds the start of the largest file with data of its
    own (found by its first 4 KiB in the plain image)."""
    from ntfs_reader import Volume
    plain = v.plain.read_bytes()
    vol = Volume(FileStream(v.plain))
    for _, path in sorted(((e["size"], p) for p, e in v.manifest["entries"].items()
                           if e["type"] == "file" and e.get("size", 0) >= 65536), reverse=True):
        head = vol.lookup(path).open().read(0, 4096)
        at = plain.find(head)
        if head.count(0) < 4000 and at > 8192 and plain.find(head, at + 1) < 0:
            break
    else:
        raise AssertionError("no file with distinct data in the volume")
    return 8192 + (at - 8192) // MiB * MiB


@pytest.mark.allow_error_log  # restore logs each file it could not read
def test_a_chunk_being_converted_is_an_error_only_there(factory, tmp_path):
    v, stream = factory
    chunk = _file_chunk(v)
    vol = open_volume(Patched(stream, _in_flight(stream, chunk)), password(v.info["password"]))
    assert vol.map.summary["in_flight"] == [f"{chunk:#x}-{chunk + MiB:#x}"]
    with pytest.raises(FormatError) as e:
        vol.read(chunk + 4096, 4096)
    assert e.value.errno == errno.EIO and "being converted" in str(e.value)
    plain = v.plain.read_bytes()
    assert vol.read(chunk - MiB, MiB) == plain[chunk - MiB:chunk]
    assert vol.read(chunk + MiB, MiB) == plain[chunk + MiB:chunk + 2 * MiB]
    # through the CLI: the files with data in that chunk fail, every other one restores
    img = tmp_path / "inflight.img"
    shutil.copyfile(v.image, img)
    with open(img, "r+b") as f:
        for at, data in _in_flight(stream, chunk).items():
            f.seek(at)
            f.write(data)
    keys = tmp_path / "keys.txt"
    keys.write_text(v.info["password"] + "\n")
    rc = main(["restore", str(img), "/volumes/inflight-p0", str(tmp_path / "out"), "--keys", str(keys)])
    ok = bad = 0
    for path, e in v.manifest["entries"].items():
        if e["type"] == "file" and "sha256" in e:
            p = tmp_path / "out" / "inflight-p0" / path.lstrip("/")
            if p.exists() and hashlib.sha256(p.read_bytes()).hexdigest() == e["sha256"]:
                ok += 1
            else:
                bad += 1
    assert rc != 0 and bad >= 1 and ok > 10


@pytest.mark.parametrize("what", ["newer record", "older record", "log slot", "log header",
                                  "bitmap header", "both FVE-EOW copies"])
def test_damaged_structures_make_their_region_unknown(factory, what):
    v, stream = factory
    bm_off, log, _ = _region0(stream)
    bm = cv.BITMAP.parse(stream.read(bm_off, 512))
    recs = sorted(bm.records, key=lambda at: -cv.RECORD.parse(stream.read(bm_off + at, 64)).sequence)
    head = stream.read(0, 512)
    at = {"newer record": bm_off + recs[0] + 40, "older record": bm_off + recs[1] + 40,
          "log slot": log + 512 + 12, "log header": log, "bitmap header": bm_off + 20}.get(what)
    patches = {at: b"\xff"} if at else {o: b"XXXX" for o in struct.unpack_from("<2Q", head, 200)}
    vol = open_volume(Patched(stream, patches), password(v.info["password"]))
    assert "damaged" in vol.map.summary
    with pytest.raises(FormatError) as e:
        vol.read(8192, 4096)  # region 0's first chunk
    assert e.value.errno == errno.EIO
    if what != "both FVE-EOW copies":  # the other regions still read
        assert vol.read(v.info["size"] - 4096, 4096) == bytes(4096)
    else:
        assert "FVE-EOW" in str(e.value)
    info = describe(Patched(stream, patches), password(v.info["password"]))
    assert info["unlocked"] and info["conversion"]["damaged"]


def test_one_damaged_eow_copy_is_not_needed(factory):
    v, stream = factory
    first = struct.unpack_from("<Q", stream.read(0, 512), 200)[0]
    vol = open_volume(Patched(stream, {first + 20: b"\x01"}), password(v.info["password"]))
    assert "damaged" not in vol.map.summary
    assert vol.read(8192, 4096) == v.plain.read_bytes()[8192:8192 + 4096]
