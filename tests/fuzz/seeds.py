"""Seeds for the fuzz targets, cut from the real fixture images (``tools/fuzz.py --seed``).

Each seed is a real structure as the tools made it: VHDX/VHD images from qemu-img and our
writer (headers, region tables, metadata, BAT, a pending log), MBR/EBR/GPT disks from
sfdisk/sgdisk, NTFS boot sectors, MFT records, attribute lists, INDX records, runlists and
reparse points from mkntfs + ntfs-3g volumes, LZNT1 units from NTFS-compressed files,
XPRESS/LZX chunks from wimlib's WOF files, and a pack and chunk maps from a real backup.
They are written under ``tests/fuzz/corpus/<target>/seed-*`` (small: at most 64 KiB each).
"""

from __future__ import annotations

import hashlib
import shutil
import struct
import tempfile
from pathlib import Path

from streams.stream import FileStream
from tests.fuzz.targets import encode_image

CORPUS = Path(__file__).resolve().parent / "corpus"
MAX_SEED = 64 << 10
MAX_VOLUME_SEED = 192 << 10   # a whole small NTFS volume's used records


def _nonzero_blocks(stream, ranges, block: int = 4096, budget: int = MAX_SEED - 1024):
    """(offset, bytes) of the non-zero blocks in ``ranges`` of ``stream``, within budget."""
    out, used = [], 0
    for start, end in ranges:
        for off in range(max(0, start), min(end, stream.size), block):
            b = stream.read(off, block)
            if b.count(0) != len(b) and used + len(b) <= budget:
                out.append((off, b))
                used += len(b)
    return out


def _image_seed(path, ranges, flags: int = 1) -> bytes:
    s = FileStream(path)
    return encode_image(s.size, _nonzero_blocks(s, ranges), flags)


def _vhdx_seed(path) -> bytes:
    """Header section, metadata region, the start of the BAT and of the log of a VHDX."""
    from formats.vhdx import VhdxDisk
    from formats.vhdx import structures as S
    disk = VhdxDisk(FileStream(path))
    meta, _ = disk.regions[S.METADATA_GUID]
    bat, _ = disk.regions[S.BAT_GUID]
    ranges = [(0, 320 << 10), (meta, meta + (128 << 10)), (bat, bat + (16 << 10))]
    if disk.log_replayed:
        ranges.append((1 << 20, 2 << 20))
    return _image_seed(path, ranges)


def _volume_seed(image) -> bytes:
    """Boot sector, the first MFT records and the root directory's index of a small volume
    ($UpCase left out: the reader falls back to Unicode upper case)."""
    from ntfs_reader import Volume
    s = FileStream(image)
    vol = Volume(s)
    mft = vol.boot.mft_lcn * vol.cluster_size
    blocks = _nonzero_blocks(s, [(0, 8192), (mft, mft + 160 * vol.record_size)], 512,
                             budget=MAX_VOLUME_SEED - 8192)
    used = sum(len(b) for _, b in blocks)
    dirs = [vol.root] + [e for i, (_, e) in zip(range(300), vol.walk("/")) if e.is_dir]
    for d in dirs:  # the first INDX record of each directory's index, while there is room
        alloc = d._index().allocation
        for _, n, disk in (alloc._map(0, min(4096, alloc.size)) if alloc is not None else []):
            if disk is not None and used + n <= MAX_VOLUME_SEED - 1024:
                blocks.append((disk, s.read(disk, n)))
                used += n
    return encode_image(s.size, blocks)


VOLUME_TARGETS = ("ntfs_volume", "xfs_volume", "btrfs_volume")


def _save(target: str, data: bytes, seeds: dict) -> None:
    if data and len(data) <= (MAX_VOLUME_SEED if target in VOLUME_TARGETS else MAX_SEED):
        seeds.setdefault(target, []).append(data)


def build_seeds() -> dict[str, list[bytes]]:
    from tools.fixtures import build
    from tests.helpers import vhdx_fixtures as F
    fx = build("small")
    seeds: dict[str, list[bytes]] = {}
    MiB = 1 << 20

    # containers
    for disk in ("bare", "gpt4k"):
        images = fx.disks[disk].images
        for kind in ("vhdx-dynamic-1M", "vhdx-fixed"):
            _save("vhdx", _vhdx_seed(images[kind]), seeds)
        for kind in ("vhd-dynamic", "vhd-fixed"):
            s = FileStream(images[kind])
            blocks = _nonzero_blocks(s, [(0, 64 << 10), (s.size - 4096, s.size)], 512)
            _save("vhd", encode_image(s.size, blocks), seeds)
    chain = F.chain(2)
    _save("vhdx", _vhdx_seed(chain[1][0]), seeds)  # differencing: parent locator
    pending, _, _ = F.logged()
    _save("vhdx", _vhdx_seed(pending), seeds)
    log = FileStream(pending).read(MiB, MiB)
    end = len(log.rstrip(b"\0"))
    from formats.vhdx import structures as S
    h = S.Header.parse(FileStream(pending).read(64 << 10, S.Header.sizeof()))
    h2 = S.Header.parse(FileStream(pending).read(128 << 10, S.Header.sizeof()))
    guid = max((h, h2), key=lambda x: x.sequence_number).log_guid
    _save("vhdx_log", b"\1" + guid.bytes_le + log[:(end + 4095) // 4096 * 4096], seeds)
    for disk, flags in (("data", 1), ("system", 1), ("gpt4k", 3)):
        s = FileStream(fx.disks[disk].raw)
        blocks = _nonzero_blocks(s, [(0, 64 << 10), (s.size - (64 << 10), s.size)], 512)
        _save("partitions", encode_image(s.size, blocks, flags), seeds)
        # the EBR chain of an MBR disk lives inside the extended partition
        if fx.disks[disk].scheme == "mbr":
            ebrs = [(p["offset"] - 1 * MiB, p["offset"]) for p in fx.disks[disk].partitions]
            blocks = _nonzero_blocks(s, [(0, 4096)] + ebrs, 512)
            _save("partitions", encode_image(s.size, blocks, flags), seeds)

    # NTFS structures
    from ntfs_reader import Volume
    from ntfs_reader.datastream import RunlistStream
    from ntfs_reader.record import AT_ATTRIBUTE_LIST, AT_DATA, AT_INDEX_ALLOCATION, AT_INDEX_ROOT
    for name in ("system-p3", "sector4k-p0", "data-p1"):
        _save("ntfs_boot", FileStream(fx.volumes[name].image).read(0, 512), seeds)
    for name in ("data-p1", "data-p5", "clusters-p1"):
        _save("ntfs_volume", _volume_seed(fx.volumes[name].image), seeds)
    vol = Volume(FileStream(fx.volumes["system-p3"].image))
    feats = fx.volumes["system-p3"].manifest["features"]
    paths = ["/", feats["fragmented"]["path"], feats["compressed_dir"], feats["big_dir"]["path"],
             *feats["attribute_list"], "/ProgramData/Contoso/sparse.bin",
             "/ProgramData/Contoso/with-ads.txt"]
    for p in paths:
        e = vol.lookup(p)
        rec_bytes = vol._mft.read(e.ref * vol.record_size, vol.record_size)
        _save("mft_record", rec_bytes, seeds)
        rec = vol.record(e.ref)
        for a in rec.attributes:
            if a.type == AT_ATTRIBUTE_LIST:
                value = a.value if a.resident else RunlistStream(
                    vol.stream, vol.cluster_size, a.decode_runs(vol.total_clusters, "seed"),
                    a.data_size, a.initialized_size, "seed").read(0, a.data_size)
                _save("attribute_list", value, seeds)
            if not a.resident and a.type == AT_DATA and len(seeds.get("runlist", [])) < 6:
                _save("runlist", bytes([a.lowest_vcn % 256]) + a.raw[a.pairs_at:a.pairs_end],
                      seeds)
            if a.type == AT_INDEX_ROOT and a.resident and len(seeds.get("index_record", [])) < 4:
                alloc = vol.attribute_stream(e._attrs(), AT_INDEX_ALLOCATION, "$I30") \
                    if any(b.type == AT_INDEX_ALLOCATION for b in rec.attributes) else None
                tail = alloc.read(0, 4 * 4096) if alloc is not None else b""
                _save("index_record", struct.pack("<H", len(a.value)) + a.value + tail, seeds)
                _save("ntfs_listing", b"\x0c" + struct.pack("<H", len(a.value)) + a.value + tail,
                      seeds)
    _native_seeds(vol, seeds)
    for p in ("/$Extend/$Reparse",):
        try:
            vol.lookup(p)
        except Exception:
            pass
    # compressed units: the allocated clusters of the first unit of compressed files
    from ntfs_reader.datastream import CompressedStream
    for p, ent in sorted(fx.volumes["system-p3"].manifest["entries"].items()):
        if ent.get("type") == "file" and ent.get("compressed") and len(seeds.get("lznt1", [])) < 6:
            s = vol.lookup(p).open()
            if isinstance(s, CompressedStream):
                allocated = [x for x in s._unit_pieces(0) if x[2] is not None]
                raw = b"".join(s.raw.volume.read(lcn * s.cs, n * s.cs) for _, n, lcn in allocated)
                if len(allocated) and sum(n for _, n, _ in allocated) < s.unit_clusters:
                    _save("lznt1", bytes([(s.unit // 4096).bit_length() - 1]) + raw, seeds)
    _wof_seeds(seeds)
    _store_seeds(seeds)
    linuxfs_seeds(seeds)
    _bitlocker_seeds(fx, seeds)
    from tests.fuzz.seeds_linux import linux_seeds
    linux_seeds(lambda target, data: seeds.setdefault(target, []).append(data))
    return seeds


class _Recorder:
    """Remembers which 4 KiB blocks a reader read (the seed keeps just those)."""

    def __init__(self, base):
        from streams.stream import Stream

        rec = self
        self.blocks: set[int] = set()

        class S(Stream):
            size, name = base.size, base.name

            def _read(self, offset: int, length: int) -> bytes:
                rec.blocks.update(range(offset // 4096, (offset + length - 1) // 4096 + 1))
                return base.read(offset, length)
        self.stream = S()


def _reader_seed(path, reader, limit: int = 10_000) -> bytes:
    """The blocks a walk of a small volume reads, as a sparse image (flag 0: checks on)."""
    from tests.fuzz.targets import _walk_posix
    base = FileStream(path)
    rec = _Recorder(base)
    _walk_posix(reader.open_volume(rec.stream), limit=limit)
    blocks = [(b * 4096, base.read(b * 4096, 4096)) for b in sorted(rec.blocks)]
    blocks = [(o, b) for o, b in blocks if b.count(0) != len(b)]
    return encode_image(base.size, blocks, flags=0)


def _dirty_xfs_seed(t: Path, seeds: dict) -> None:
    """An XFS volume copied while mounted, its log holding one small checkpoint: the seed
    that drives the log replay (needs root and a loop device; skipped without)."""
    import os
    import subprocess

    import xfs_reader
    from tools.fixtures.linuxfs import loop_available, mounted
    if not loop_available():
        return
    img, copy, mnt = t / "dirty.src", t / "dirty.img", t / "mnt"
    with open(img, "wb") as f:
        f.truncate(320 << 20)
    subprocess.run(["mkfs.xfs", "-q", "-d", "agcount=2", str(img)], check=True,
                   capture_output=True)
    with mounted(img, mnt):
        (mnt / "d").mkdir()
        for i in range(5):
            (mnt / "d" / f"f{i}").write_bytes(b"%d" % i)
        os.symlink("d/f1", mnt / "link")
        os.sync()
        subprocess.run(["cp", "--sparse=always", str(img), str(copy)], check=True)
    vol = xfs_reader.open_volume(FileStream(copy))
    assert vol.state.startswith("needs log recovery (replayed"), vol.state
    _save("xfs_volume", _reader_seed(copy, xfs_reader), seeds)


def _kernel_btrfs_seed(t: Path, seeds: dict) -> None:
    """A small Btrfs written by the kernel: zlib, LZO and zstd extents, a subvolume and a
    snapshot, xattrs, a hard link (needs root and a loop device; skipped without)."""
    import os
    import subprocess

    import btrfs_reader
    from tools.fixtures.linuxfs import loop_available, mounted
    if not loop_available():
        return
    img, mnt = t / "kbtrfs.img", t / "kmnt"
    with open(img, "wb") as f:
        f.truncate(128 << 20)
    subprocess.run(["mkfs.btrfs", "-q", str(img)], check=True, capture_output=True)
    text = b"backup restore hyper-v guest " * 600
    for algo in ("zlib", "lzo", "zstd"):
        with mounted(img, mnt, f"compress-force={algo}"):
            (mnt / algo).write_bytes(text)
    with mounted(img, mnt):
        subprocess.run(["btrfs", "subvolume", "create", str(mnt / "@home")], check=True,
                       capture_output=True)
        (mnt / "@home" / "f").write_bytes(b"in a subvolume\n")
        subprocess.run(["btrfs", "subvolume", "snapshot", str(mnt / "@home"), str(mnt / "snap")],
                       check=True, capture_output=True)
        os.link(mnt / "zlib", mnt / "zlib-link")
        os.setxattr(mnt / "lzo", "user.x", b"y" * 100)
        os.symlink("zlib", mnt / "link")
    _save("btrfs_volume", _reader_seed(img, btrfs_reader), seeds)


def linuxfs_seeds(seeds: dict) -> None:
    """Tiny XFS (v5 and v4, from a protofile) and Btrfs (mkfs --rootdir, zlib-compressed
    inline data) volumes: made without a kernel mount, so any machine can cut them."""
    import os
    import subprocess
    import zlib

    import btrfs_reader
    import xfs_reader
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        src = t / "src"
        src.mkdir()
        (src / "hello.txt").write_bytes(b"hello\n")
        (src / "data.bin").write_bytes(bytes(range(256)) * 40)
        (src / "dir").mkdir()
        for i in range(30):
            (src / "dir" / f"entry-{i:03d}").write_bytes(b"x" * i)
        os.symlink("hello.txt", src / "link")
        proto = t / "proto"
        lines = ["/dev/null", "0 0", "d--755 0 0", f"hello.txt ---644 0 0 {src / 'hello.txt'}",
                 f"data.bin ---600 1000 100 {src / 'data.bin'}", "link l--777 0 0 hello.txt",
                 "dir d--755 0 0"]
        lines += [f" entry-{i:03d} ---644 0 0 {src / 'dir' / f'entry-{i:03d}'}" for i in range(30)]
        proto.write_text("\n".join(lines + [" $", "$", ""]))
        for name, args in (("xfs5", ["-m", "crc=1"]), ("xfs4", ["-m", "crc=0"])):
            img = t / f"{name}.img"
            with open(img, "wb") as f:
                f.truncate(320 << 20)
            subprocess.run(["mkfs.xfs", "-q", *args, "-d", "agcount=2", "-p", str(proto),
                            str(img)], check=True, capture_output=True)
            _save("xfs_volume", _reader_seed(img, xfs_reader), seeds)
        img = t / "btrfs.img"
        with open(img, "wb") as f:
            f.truncate(128 << 20)
        subprocess.run(["mkfs.btrfs", "-q", "--rootdir", str(src), str(img)], check=True,
                       capture_output=True)
        _save("btrfs_volume", _reader_seed(img, btrfs_reader), seeds)
        _dirty_xfs_seed(t, seeds)
        _kernel_btrfs_seed(t, seeds)
    text = b"backup restore hyper-v " * 200
    _save("btrfs_decompress", b"\x01" + len(text).to_bytes(3, "little") + zlib.compress(text), seeds)
    import zstandard
    _save("btrfs_decompress", b"\x03" + len(text).to_bytes(3, "little")
          + zstandard.ZstdCompressor().compress(text), seeds)
    from lzallright import LZOCompressor
    seg = LZOCompressor().compress(text[:4096])
    body = len(seg).to_bytes(4, "little") + seg
    _save("btrfs_decompress", b"\x02" + (4096).to_bytes(3, "little")
          + (len(body) + 4).to_bytes(4, "little") + body, seeds)


def _bitlocker_seeds(fx, seeds: dict) -> None:
    """The used-space-only and Vista volumes of the BitLocker factory: boot sector, FVE
    metadata, FVE-EOW blocks, bitmaps and conversion logs (the tail past the file system)."""
    from tools.fixtures import bitlocker as blfx
    bl = blfx.build(fx)
    for name, v in sorted(bl.volumes.items()):
        if blfx.VARIANTS[name][3] == "eow":
            s = FileStream(v.image)
            tail = v.info["metadata"][0]
            blocks = _nonzero_blocks(s, [(0, 512), (tail, s.size)], 512, MAX_SEED - 1024)
            _save("bitlocker_eow", encode_image(s.size, blocks), seeds)
        elif blfx.VARIANTS[name][3] == "vista":  # boot sector, first sectors, metadata
            s = FileStream(v.image)
            tail = v.info["metadata"][0]
            blocks = _nonzero_blocks(s, [(0, 8192), (tail, s.size)], 512, MAX_SEED - 1024)
            _save("bitlocker_vista", encode_image(s.size, blocks), seeds)


def _wof_seeds(seeds: dict) -> None:
    """XPRESS and LZX chunks and reparse points from the features volume (wimlib + ntfs-3g)."""
    if shutil.which("wimlib-imagex") is None:
        return
    from ntfs_reader import Volume
    from ntfs_reader.record import AT_REPARSE_POINT
    from tests.helpers.ntfs_images import features_image, wim_resources
    image, man = features_image()
    vol = Volume(FileStream(image))
    for p, e in sorted(man["entries"].items()):
        if "reparse_tag" in e or e.get("type") == "symlink" or "wof" in e:
            try:
                rec = vol.record(vol.lookup(p).ref)
            except Exception:
                continue
            for a in rec.attributes:
                if a.type == AT_REPARSE_POINT and a.resident and len(seeds.get("reparse", [])) < 10:
                    _save("reparse", a.value, seeds)
    import random
    rnd = random.Random(5)
    text = b" ".join(rnd.choice([b"alpha", b"beta", b"volume", b"cluster"]) for _ in range(9000))
    files = {"text": text[:30000], "mixed": text[:9000] + rnd.randbytes(3000)}
    for method, chunk, target in (("XPRESS", 4096, "xpress"), ("XPRESS", 16384, "xpress"),
                                  ("LZX", 32768, "lzx")):
        for path, (res, _) in wim_resources(files, chunk, method).items():
            size = len(files[path])
            count = (size + chunk - 1) // chunk
            table = [0] + list(struct.unpack_from(f"<{count - 1}I", res, 0))
            body = res[4 * (count - 1):]
            ends = table[1:] + [len(body)]
            for i in range(min(count, 2)):
                want = min(chunk, size - i * chunk)
                comp = body[table[i]:ends[i]]
                if len(comp) < want:
                    n = want - 1 if target == "xpress" else want - 1
                    _save(target, struct.pack("<H", n) + comp, seeds)


def native_seeds(seeds: dict, index_buffers: list[bytes]) -> None:
    """Inputs of the differential targets ntfs_native, from the other NTFS seeds (first
    byte: which parser) and from whole INDX records (``index_buffers``), and ntfs_plain
    (the MFT records)."""
    for data in seeds.get("mft_record", []):
        _save("ntfs_native", b"\0" + data, seeds)
        if len(data) in (1024, 4096):   # one record, sequence checked, 4 KiB clusters
            _save("ntfs_plain", bytes([0x10 | 3 << 1 | (len(data) == 4096)]) + data, seeds)
    for data in seeds.get("runlist", []):
        _save("ntfs_native", b"\1" + data, seeds)
    for buf in index_buffers:
        start = 24 + struct.unpack_from("<I", buf, 24)[0]
        end = 24 + struct.unpack_from("<I", buf, 28)[0]
        _save("ntfs_native", b"\2" + struct.pack("<HH", start, end) + buf, seeds)
        _save("ntfs_native", b"\4" + buf, seeds)


def _native_seeds(vol, seeds: dict) -> None:
    from ntfs_reader.record import AT_FILE_NAME, apply_fixups
    bufs = []
    for p in ("/", "/bigdir"):
        e = vol.lookup(p)
        for a in vol.record(e.ref).attributes:
            if a.type == AT_FILE_NAME and a.resident:
                _save("ntfs_native", b"\3" + a.value, seeds)
        idx = e._index()
        if idx.allocation is not None:
            raw = bytearray(idx.allocation.read(0, idx.block_size))
            bufs.append(bytes(raw))
            apply_fixups(raw, b"INDX", "seed", "seed", 0)
            bufs.append(bytes(raw))  # fixed up: its entries parse
    native_seeds(seeds, bufs)


def _store_seeds(seeds: dict) -> None:
    """A real pack (a few chunks: zstd and raw) and the chunk maps of a real backup."""
    import random
    from rpfs.backup import backup
    from rpfs.store.repository import Repository
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "src")
        src.mkdir()
        rnd = random.Random(3)
        (src / "a.txt").write_bytes(b"hello world, " * 3000)
        (src / "b.bin").write_bytes(rnd.randbytes(9000))
        (src / "c.txt").write_bytes(b"x" * 100)
        repo = Repository.init(str(Path(tmp, "repo")), chunk_size=16384)
        try:
            backup(repo, [str(p) for p in sorted(src.iterdir())], vm="fuzz",
                   time="2026-01-01T00:00:00Z", show_progress=False)
            for (blob, size) in repo.query("SELECT chunk_map, size FROM files"):
                count = (size + 16383) // 16384
                _save("chunk_map", struct.pack("<H", count) + blob, seeds)
        finally:
            repo.close()
        for pack in sorted(Path(tmp, "repo").rglob("*.pack")):
            _save("pack", b"\1" + pack.read_bytes(), seeds)
    _frame_seeds(seeds)


def _frame_seeds(seeds: dict) -> None:
    """Framed chunk payloads as a backup writes them: text, random and mixed, 4 and 16 KiB
    frames, and 16 KiB frames cut into 4 KiB raw ones where nothing compresses (random),
    plain (flags 2: digest fixed up) and sealed under the fuzz target's keys."""
    import random
    from rpfs.store import frames
    from rpfs.store.crypto import Plain, Sealed
    from tests.fuzz.targets import _FRAME_KEYS
    rnd = random.Random(11)
    texts = [b"frame seed line\n" * 2000, rnd.randbytes(20000),
             b"a" * 5000 + rnd.randbytes(7000) + bytes(9000)]
    for flags, crypto in ((2, Plain()), (1, Sealed(*_FRAME_KEYS))):
        for data in texts:
            for fs, raw in ((4096, 0), (16384, 0), (16384, 4096)):
                # the chunk id the target uses (32 zero bytes): binds table and frames to it
                payload = frames.encode(crypto, data, bytes(32), 1, fs, raw)
                _save("frames", bytes([flags]) + struct.pack("<I", len(data)) + payload, seeds)


def vss_seeds(seeds: dict) -> None:
    """The shadow-copy fixture's VSS structures: volume header, catalog, store headers, block
    lists, range lists and bitmaps (not the saved data blocks), zero tails cut."""
    from formats import vss
    from tools.fixtures import vss as factory
    volume = factory.build().volume
    s = FileStream(volume)
    copies = vss.ShadowCopies(s)
    blocks = [(0x1E00, s.read(0x1E00, 512))]
    at = [struct.unpack_from("<Q", blocks[0][1], 48)[0]]
    for st in copies.stores:
        at += [st.header, st.block_list, st.range_list, st.bitmap]
    for off in at:
        b = s.read(off, vss.BLOCK).rstrip(b"\0")
        blocks.append((off, b + bytes(-len(b) % 512)))
    _save("vss", encode_image(s.size, blocks), seeds)


def vmcx_seeds(seeds: dict) -> None:
    """HyperVStorage files from the .vmcx writer: a generation 2 VM with SCSI drives, and a
    generation 1 VM with an IDE drive and a value of every type."""
    from tools.fixtures import vmcx_writer
    _save("vmcx", vmcx_writer.write(vmcx_writer.gen2_config()), seeds)
    ide = "83f8638b-8dca-4152-9eda-2ca8b33039b4"
    _save("vmcx", vmcx_writer.write({"configuration": {
        "properties": {"name": "old", "global_id": "G", "subtype": 0, "version": -1},
        "settings": {"processors": {"count": 1}, "memory": {"bank": {"size": 512}}},
        "manifest": {"vdev001": {"instance": ide, "name": "Microsoft Emulated IDE Controller"}},
        f"_{ide}_": {"controller0": {"drive0": {"type": "VHD", "pathname": "C:\\a.vhd"}},
                     "controller1": {"drive0": {"type": "NONE", "pathname": ""}}},
        "blob": b"\x01\x02", "flag": False}}), seeds)


def write_seeds() -> dict[str, int]:
    counts = {}
    seeds = build_seeds()
    vss_seeds(seeds)
    vmcx_seeds(seeds)
    for target, items in seeds.items():
        d = CORPUS / target
        d.mkdir(parents=True, exist_ok=True)
        for data in items:
            (d / f"seed-{hashlib.sha1(data).hexdigest()[:16]}").write_bytes(data)
        counts[target] = len(items)
    return counts
