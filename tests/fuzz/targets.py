"""Fuzz targets: every entry point of rpfs that parses untrusted bytes, one function each.

A target takes the fuzzer's bytes and drives one parser the way rpfs drives it (open, then
read, list extents, walk entries). The property checked by ``run_one``: the only exceptions
that escape are rpfs's typed errors (``RpfsError``); anything else (IndexError,
struct.error, RecursionError, MemoryError, ...) is a crash. Time and memory per input are
bounded by the runner (atheris ``-timeout``/``-rss_limit_mb``, ``tools/fuzz.py``).

Disk-sized inputs use a *sparse image* encoding, so a seed can be a real image from the
fixtures without its megabytes of zeros: ``u8 flags, u32 size in 512-byte units``, then
records ``u32 offset in 512-byte units, u16 length, bytes``. With flag bit 0 set, the target
recomputes the checksums the format has (VHDX headers and region tables, VHD footer and
dynamic header, GPT header and entries, pack index) so mutations reach the checks behind them.

Used by ``tools/fuzz.py`` (atheris, coverage-guided) and ``tests/test_fuzz_corpus.py``
(replays the corpora under ``tests/fuzz/corpus/<target>/`` in CI).
"""

from __future__ import annotations

import bisect
import struct
import uuid
import zlib

from streams.errors import IntegrityError, RpfsError
from rpfs.store.backend import Backend
from streams.stream import DATA, ZERO, BytesStream, Extent, Stream

UNIT = 512
MAX_IMAGE = 1 << 41      # 2 TiB: big enough for every size field path, reads stay sparse


# -- the sparse image ----------------------------------------------------------------------

class SparseImage(Stream):
    """``size`` bytes of zeros with ``patches`` [(offset, bytes)] on top (later ones win)."""

    def __init__(self, size: int, patches: list[tuple[int, bytes]], name: str = "fuzz.img"):
        self.size = size
        self.name = name
        flat: list[tuple[int, int, bytes]] = []
        for off, data in patches:
            if off < size and data:
                data = data[:size - off]
                flat = [p for p in flat if p[1] <= off or p[0] >= off + len(data)] + \
                       [(off, off + len(data), data)]
        self.patches = sorted(flat)
        self._starts = [p[0] for p in self.patches]

    def _readinto(self, offset: int, view: memoryview) -> None:
        end = offset + len(view)
        view[:] = bytes(len(view))
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while i < len(self.patches) and self.patches[i][0] < end:
            a, b, data = self.patches[i]
            lo, hi = max(a, offset), min(b, end)
            if lo < hi:
                view[lo - offset:hi - offset] = data[lo - a:hi - a]
            i += 1

    def _extents(self, offset: int, end: int):
        pos = offset
        i = max(0, bisect.bisect_right(self._starts, offset) - 1)
        while i < len(self.patches) and self.patches[i][0] < end:
            a, b, _ = self.patches[i]
            lo, hi = max(a, pos), min(b, end)
            if lo < hi:
                if lo > pos:
                    yield Extent(pos, lo - pos, ZERO)
                yield Extent(lo, hi - lo, DATA)
                pos = hi
            i += 1
        if pos < end:
            yield Extent(pos, end - pos, ZERO)

    def patch(self, offset: int, data: bytes) -> None:
        """Overwrite bytes (checksum fix-ups), keeping the patch list sorted."""
        self.__init__(self.size, [(a, d) for a, _, d in self.patches] + [(offset, data)],
                      self.name)


def decode_image(data: bytes) -> tuple[int, SparseImage]:
    if len(data) < 5:
        return 0, SparseImage(0, [])
    flags, units = struct.unpack_from("<BI", data, 0)
    size = min(units * UNIT, MAX_IMAGE)
    patches, pos = [], 5
    while pos + 6 <= len(data):
        off, n = struct.unpack_from("<IH", data, pos)
        pos += 6
        patches.append((off * UNIT, data[pos:pos + n]))
        pos += n
    return flags, SparseImage(size, patches)


def encode_image(size: int, blocks: list[tuple[int, bytes]], flags: int = 1) -> bytes:
    """The encoding of an image with these (offset, bytes) pieces (offsets 512-aligned)."""
    out = bytearray(struct.pack("<BI", flags, (size + UNIT - 1) // UNIT))
    for off, b in blocks:
        for i in range(0, len(b), 0xFFFF & ~(UNIT - 1)):
            piece = b[i:i + (0xFFFF & ~(UNIT - 1))]
            out += struct.pack("<IH", (off + i) // UNIT, len(piece)) + piece
    return bytes(out)


def exercise(stream: Stream, reads: int = 8) -> None:
    """Reads at the start, the end and spread over the stream, then its extents."""
    size = stream.size
    for i in range(reads):
        at = (size * i) // reads
        stream.read(at, 65536)
    stream.read(max(0, size - 4096), 8192)
    for n, e in enumerate(stream.extents()):
        if n >= 2000:
            break
        if e.kind == DATA:
            stream.read(e.offset, min(e.length, 4096))


# -- containers ------------------------------------------------------------------------------

def _fix_vhdx_crc(img: SparseImage, off: int, size: int, magic: bytes, crc32c) -> None:
    """A VHDX header or region table at ``off`` gets the checksum of its (mutated) bytes."""
    block = bytearray(img.read(off, size))
    if block[:4] == magic:
        block[4:8] = b"\0\0\0\0"
        block[4:8] = struct.pack("<I", crc32c(bytes(block)))
        img.patch(off, bytes(block))


def fuzz_vhdx(data: bytes) -> None:
    """VHDX file identifier, headers, region tables, metadata, BAT and log (replayed on open)."""
    from formats.vhdx import VhdxDisk
    from formats.vhdx import structures as S
    flags, img = decode_image(data)
    if flags & 1:
        for off in (64 << 10, 128 << 10):
            _fix_vhdx_crc(img, off, 4096, b"head", S.crc32c)
        for off in (192 << 10, 256 << 10):
            _fix_vhdx_crc(img, off, 65536, b"regi", S.crc32c)
    disk = VhdxDisk(img)
    disk.describe()
    if disk.has_parent:
        return
    exercise(disk)


def fuzz_vhdx_log(data: bytes) -> None:
    """The VHDX log alone: the first 16 bytes are the log GUID, the rest the log region
    (placed at 1 MiB in a file of zeros); entries' checksums are fixed up with flag bit 0."""
    from formats.vhdx import structures as S
    from formats.vhdx.log import replay_log
    if len(data) < 17:
        return
    flags, guid, log = data[0], uuid.UUID(bytes_le=data[1:17]), bytearray(data[17:])
    log = log[: 1 << 20]
    length = max(4096, (len(log) + 4095) // 4096 * 4096)
    log += bytes(length - len(log))
    if flags & 1:
        for pos in range(0, length, 4096):
            if log[pos:pos + 4] == b"loge":
                n = struct.unpack_from("<I", log, pos + 8)[0]
                if 0 < n <= length - pos and n % 4096 == 0:
                    log[pos + 4:pos + 8] = b"\0\0\0\0"
                    log[pos + 4:pos + 8] = struct.pack("<I", S.crc32c(bytes(log[pos:pos + n])))
    file = SparseImage(1 << 30, [(1 << 20, bytes(log))], "log.vhdx")
    overlay = replay_log(file, 1 << 20, length, guid)
    exercise(overlay, 4)


def fuzz_vhd(data: bytes) -> None:
    """VHD footer (and its copy), dynamic header, BAT, block bitmaps, parent locators."""
    from formats.vhd import VhdDisk
    flags, img = decode_image(data)
    if flags & 1 and img.size >= 512:
        _vhd_fix(img, img.size - 512, 512, 64)
        footer = img.read(img.size - 512, 512)
        if footer[:8] == b"conectix":
            data_offset = struct.unpack_from(">Q", footer, 16)[0]
            if data_offset < img.size - 1024:
                _vhd_fix(img, data_offset, 1024, 36)
    disk = VhdDisk(img)
    if disk.kind == "differencing":
        return
    exercise(disk)


def _vhd_fix(img: SparseImage, off: int, n: int, field: int) -> None:
    b = bytearray(img.read(off, n))
    if len(b) == n and b[:8] in (b"conectix", b"cxsparse"):
        b[field:field + 4] = b"\0\0\0\0"
        b[field:field + 4] = struct.pack(">I", ~sum(b) & 0xFFFFFFFF)
        img.patch(off, bytes(b))


def fuzz_partitions(data: bytes) -> None:
    """MBR, the EBR chain, protective MBR and both GPTs (flag bit 1: 4096-byte sectors)."""
    from formats.disk import RawDisk
    from formats.partitions import read_partitions
    flags, img = decode_image(data)
    ss = 4096 if flags & 2 else 512
    if flags & 1 and img.size >= 2 * ss:
        head = bytearray(img.read(ss, 512))
        if head[:8] == b"EFI PART":
            hsize, = struct.unpack_from("<I", head, 12)
            entries_lba, count, esize = struct.unpack_from("<QII", head, 72)
            if count * esize <= 1 << 20 and entries_lba * ss < img.size:
                head[88:92] = struct.pack("<I", zlib.crc32(img.read(entries_lba * ss, count * esize)))
            if 92 <= hsize <= 512:
                head[16:20] = b"\0\0\0\0"
                head[16:20] = struct.pack("<I", zlib.crc32(bytes(head[:hsize])))
            img.patch(ss, bytes(head))
    table = read_partitions(RawDisk(img, logical_sector_size=ss))
    for p in table.partitions[:64]:
        p.stream.read(0, 512)
        p.stream.read(max(0, p.stream.size - 512), 512)


# -- NTFS --------------------------------------------------------------------------------------

_WHERE = {"source": "fuzz", "structure": "fuzz", "offset": 0}


def _fix_eow(img: SparseImage) -> None:
    """The CRC-32s of the FVE-EOW block, its bitmaps and records and their conversion logs'
    slots that the boot sector leads to, recomputed after mutation."""
    from formats.bitlocker import conversion as cv

    def crc(off: int, n: int, at: int) -> None:
        n = max(0, min(n, 1 << 20, img.size - off))
        if n <= at + 4:
            return
        raw = bytearray(img.read(off, n))
        raw[at:at + 4] = bytes(4)
        img.patch(off + at, struct.pack("<I", zlib.crc32(raw)))

    head = img.read(0, 512).ljust(512, b"\0")
    for off in struct.unpack_from("<2Q", head, 200)[:1]:
        if off + 4096 > img.size:
            return
        info = img.read(off, 4096)
        size = struct.unpack_from("<H", info, 10)[0]
        crc(off, size, 0x24)
        count = max(0, size - 56) // 8
        for i in range(min(count, 64)):
            bm = struct.unpack_from("<Q", info, 56 + 8 * i)[0] if 64 + 8 * i <= len(info) else 0
            if not 0 < bm < img.size - 512:
                continue
            h = cv.BITMAP.parse(img.read(bm, 512))
            crc(bm, min(h.records), 56)
            for r in h.records:
                rsize = struct.unpack_from("<I", img.read(bm + r, 16).ljust(16, b"\0"), 12)[0]
                crc(bm + r, rsize, 32)
            if 0 < h.log_offset < img.size - 512:
                lh = cv.LOG_HEADER.parse(img.read(h.log_offset, 512))
                for k in range(min(lh.slots, 4)):
                    at = h.log_offset + 512 + k * lh.slot_size
                    crc(at, 28 + 4, 28)


def fuzz_bitlocker_eow(data: bytes) -> None:
    """A used-space-only BitLocker volume (sparse image): its FVE-EOW block, bitmaps and
    conversion logs parsed into the map of encrypted chunks, the map walked, and, when the
    FVE metadata parses too, the volume read through it (with a fixed key: which key does
    not matter to the parsing)."""
    from formats.bitlocker import conversion
    from formats.bitlocker.metadata import read_metadata
    from formats.bitlocker.volume import BitLockerVolume
    flags, img = decode_image(data)
    if img.size < 4096:
        return
    if flags & 1:
        _fix_eow(img)
    head = img.read(0, 512)

    class Meta:
        sector_size = 512
        eow_offsets = struct.unpack_from("<2Q", head, 200)

    cmap = conversion.used_space_only(img, Meta, img.size)
    for n, run in enumerate(cmap.state_runs(0, img.size)):
        if n >= 2000:
            break
    for i in range(8):
        cmap.encrypted(img.size * i // 8, 4096)
    try:
        meta = read_metadata(img)
    except RpfsError:
        return
    if meta.eow:
        exercise(BitLockerVolume(img, meta, bytes(64)))


def fuzz_bitlocker_vista(data: bytes) -> None:
    """A BitLocker volume header and metadata (sparse image; Windows Vista's version 1 in the
    seeds): probe, every metadata copy parsed, the decrypted volume read (fixed key)."""
    from formats.bitlocker import describe
    from formats.bitlocker.metadata import read_metadata
    from formats.bitlocker.volume import BitLockerVolume
    _, img = decode_image(data)
    if img.size < 4096:
        return
    meta = read_metadata(img)
    describe(img)
    exercise(BitLockerVolume(img, meta, bytes(64)))


def fuzz_ntfs_boot(data: bytes) -> None:
    from ntfs_reader.boot import parse_boot_sector
    b = parse_boot_sector(data[:512].ljust(512, b"\0"), "fuzz", 0)
    b.volume_size, b.total_clusters


def fuzz_mft_record(data: bytes) -> None:
    """One MFT record: fixups, header, attribute headers, and the values rpfs parses from it
    (standard information, file names, attribute list, object id, reparse point, runlists)."""
    from ntfs_reader import attrs, record, reparse
    size = 4096 if len(data) > 1024 else 1024
    data = data[:size].ljust(size, b"\0")
    rec = record.parse_record(data, struct.unpack_from("<I", data, 0x2C)[0], "fuzz", 0)
    rec.in_use, rec.is_directory, rec.is_base
    for a in rec.attributes[:64]:
        a.type_name, a.size
        if not a.resident:
            a.decode_runs(1 << 24, "fuzz")
            continue
        v = a.value
        if a.type == record.AT_STANDARD_INFORMATION:
            attrs.parse_standard_information(v, _WHERE)
        elif a.type == record.AT_FILE_NAME:
            attrs.parse_file_name(v, _WHERE)
        elif a.type == record.AT_ATTRIBUTE_LIST:
            attrs.parse_attribute_list(v, _WHERE)
        elif a.type == record.AT_OBJECT_ID:
            attrs.parse_object_id(v)
        elif a.type == record.AT_VOLUME_INFORMATION:
            attrs.parse_volume_information(v, _WHERE)
        elif a.type == record.AT_REPARSE_POINT:
            reparse.parse_reparse(v, _WHERE)


def fuzz_ntfs_volume(data: bytes) -> None:
    """A whole NTFS volume (sparse image): open, then walk and read what it holds the way
    the namespace does: names, times, sizes, streams, reparse points, links, security
    descriptors, extended attributes, lookups by name."""
    from ntfs_reader import Volume
    _, img = decode_image(data)
    vol = Volume(img)
    vol.upcase
    for i, (path, e) in enumerate(vol.walk("/")):
        if i >= 300:
            break
        e.name, e.times, e.attributes, e.nlink, e.size, e.short_name, e.hard_links
        e.security_descriptor, e.object_id, e.eas
        if e.is_symlink:
            e.readlink()
            continue
        if not e.is_dir:
            for name, _ in e.streams()[:8]:
                s = e.open(name)
                s.read(0, 8192)
                list(s.extents())[:64]
        vol.lookup(path)
    vol.metadata_files()


def fuzz_attribute_list(data: bytes) -> None:
    from ntfs_reader.attrs import parse_attribute_list
    for e in parse_attribute_list(data, _WHERE)[:4096]:
        e.__repr__()


def fuzz_index_record(data: bytes) -> None:
    """An $I30 index: the first u16 is the length of the $INDEX_ROOT value, the rest the
    $INDEX_ALLOCATION stream (INDX records with fixups); every entry walked, keys parsed."""
    from ntfs_reader.attrs import parse_file_name
    from ntfs_reader.index import Index
    if len(data) < 2:
        return
    n = struct.unpack_from("<H", data, 0)[0] % 4096
    root, alloc = data[2:2 + n], data[2 + n:]
    idx = Index(root, BytesStream(alloc, "fuzz $INDEX_ALLOCATION") if alloc else None, None,
                4096, dict(_WHERE))
    for i, e in enumerate(idx):
        if i >= 20000:
            break
        if e.key:
            parse_file_name(e.key, _WHERE)
    idx.find(lambda e: 0)
    list(idx.iter_after(lambda e: -1))[:100]


def fuzz_ntfs_listing(data: bytes) -> None:
    """A directory's listing as arrays: C (``_ntfsparse.list_index``) against its Python
    twin (ntfs_reader/listing.py). First byte: bit 0 the volume root (metadata names
    hidden), bit 1 a $BITMAP follows (a length byte, then its bytes), bits 2-4 the cluster
    size (512 << n); then a u16 $INDEX_ROOT length, the value, and the rest as
    $INDEX_ALLOCATION (as index_record). Equal arrays, or None from C exactly where the
    twin raises (or names a name past 255 bytes, which C leaves to it)."""
    from ntfs_reader import native
    from ntfs_reader.index import Index
    from ntfs_reader.listing import Listing, listing_python
    p = native._module
    if p is None or len(data) < 3:
        return
    flags, rest = data[0], data[1:]
    bitmap = None
    if flags & 2:
        n = rest[0]
        bitmap, rest = rest[1:1 + n], rest[1 + n:]
    if len(rest) < 2:
        return
    n = struct.unpack_from("<H", rest, 0)[0] % 4096
    root, alloc = rest[2:2 + n], rest[2 + n:] or None
    cluster = 512 << (flags >> 2 & 7)
    got = p.list_index(root, alloc, bitmap, cluster, bool(flags & 1))

    def python():
        index = Index(root, BytesStream(alloc, "fuzz $INDEX_ALLOCATION") if alloc else None,
                      bitmap, cluster, dict(_WHERE))
        return listing_python(index, bool(flags & 1), _WHERE)

    def long_name(expected) -> bool:
        o = expected.offsets
        return any(o[i + 1] - o[i] > 255 - 18 for i in range(len(expected)))

    _twins(Listing.from_native(got) if got is not None else None, python, long_name)


def fuzz_ntfs_plain(data: bytes) -> None:
    """A directory's plain files for a restore: C (``_ntfsparse.plain_files``) against its
    Python twin (ntfs_reader/plain.py). First byte: bit 0 records of 4 KiB (else 1 KiB),
    bits 1-3 the cluster size (512 << n), bit 4 the index's sequence taken from each record
    (else 0), bits 5-7 how many records follow (1-8), zero-padded. Each record is numbered
    by its own number field and is its own block; one number past $MFT's end and one with
    no block are listed too. Equal arrays, always (neither side may raise)."""
    from array import array
    from ntfs_reader import native
    from ntfs_reader.plain import PlainFiles, plain_files_python
    p = native._module
    if p is None or not data or not hasattr(p, "plain_files"):
        return
    flags = data[0]
    size = 4096 if flags & 1 else 1024
    count = 1 + (flags >> 5)
    body = data[1:1 + count * size].ljust(count * size, b"\0")
    records = 1 << 20
    blocks, numbers, sequences = {}, array("Q"), array("H")
    for i in range(count):
        rec = body[i * size:(i + 1) * size]
        number = struct.unpack_from("<I", rec, 0x2C)[0] % records
        blocks[number] = rec
        numbers.append(number)
        sequences.append(struct.unpack_from("<H", rec, 0x10)[0] if flags & 0x10 else 0)
    numbers.extend((records + 5, (numbers[0] + 1) % records))
    sequences.extend((0, 0))
    blocks.pop(numbers[-1], None)
    cluster = 512 << (flags >> 1 & 7)
    args = (blocks, size, size, records, numbers, sequences, cluster, 1 << 24, 256 << 10)
    got = PlainFiles.from_bytes(p.plain_files(*args))
    want = plain_files_python(*args)
    if got != want:
        raise AssertionError(f"plain_files differs:\n{got!r:.800}\n{want!r:.800}")


def fuzz_runlist(data: bytes) -> None:
    from ntfs_reader.runlist import decode_runlist
    if len(data) < 2:
        return
    first_vcn = data[0] * 97
    decode_runlist(data, 1, len(data), first_vcn, 1 << 32, "fuzz")


def fuzz_reparse(data: bytes) -> None:
    from ntfs_reader.reparse import parse_reparse, wof_description
    r = parse_reparse(data, _WHERE)
    r.name
    wof_description(data)


def _twins(native_result, python_call, may_decline=lambda expected: False) -> None:
    """A C parser's answer against its Python twin's: equal objects of the same class, or
    None from C exactly where the twin raises a typed error (which is re-raised) or where
    ``may_decline(expected)`` says C leaves the input to the twin by design."""
    try:
        expected = python_call()
    except RpfsError:
        if native_result is not None:
            raise AssertionError(f"C parsed what Python refuses: {native_result!r:.300}")
        raise
    if native_result is None:
        if may_decline(expected):
            return
        raise AssertionError(f"C refused what Python parses: {expected!r:.300}")
    if type(native_result) is not type(expected) or native_result != expected:
        raise AssertionError(f"C and Python differ:\n{native_result!r:.600}\n{expected!r:.600}")


class _NoVolume:
    """file_info's volume for one record alone: reading more of the volume is refused."""

    name = "fuzz"

    def file(self, *args, **kw):
        from streams.errors import FormatError
        raise FormatError("no volume", source="fuzz")

    read_attribute = file


def _past_64_bits(runs) -> bool:
    """Runs whose VCNs or LCNs do not fit in 64 bits: C leaves those to the twin."""
    return any(vcn + length >= 1 << 63 or (lcn or 0) + length >= 1 << 63
               for vcn, length, lcn in runs)


def _summary_twins(summary, rec, number: int) -> None:
    """record_summary (C) against file_info (Python): the same index row, or None from C
    where file_info refuses the record, reads beyond it or needs its attribute list."""
    from ntfs_reader.record import AT_ATTRIBUTE_LIST
    from rpfs.index import scan
    try:
        expected = scan.file_info(_NoVolume(), rec, rec.attributes)
    except RpfsError:
        if summary is not None:
            raise AssertionError(f"C summarised what Python refuses: {summary!r:.300}")
        return
    if summary is None:
        if not any(a.type == AT_ATTRIBUTE_LIST for a in rec.attributes):
            raise AssertionError(f"C refused a record Python indexes: {expected!r:.300}")
        return
    got = scan._from_summary(number, summary)
    if got != expected:
        raise AssertionError(f"C and Python index rows differ:\n{got!r:.600}\n{expected!r:.600}")


class _OneRecord(_NoVolume):
    """Entry's volume holding one record (no attribute list: stat_summary declines those)."""

    def __init__(self, rec):
        from ntfs_reader.volume import FileAttributes
        self.fa = FileAttributes(rec, rec.attributes)

    def file(self, number, sequence=0):
        return self.fa

    read_attribute = _NoVolume.file

    def mft_offset_safe(self, number):
        return None


def _stat_twins(summary, rec) -> None:
    """stat_summary (C) against the Entry properties a node's attr() reads (Python): when C
    answers, Python must give the same values (C may always decline)."""
    if summary is None:
        return
    from ntfs_reader.entry import Entry
    from ntfs_reader.times import Times
    seq, flags, times, nondos, size, allocated, dir_allocated = summary
    e = Entry(_OneRecord(rec), rec.number, None)
    try:
        expected = (e.is_dir, e.times, max(1, e.nlink), e.size, e.allocated_size)
    except RpfsError as err:
        raise AssertionError(f"C summarised a record whose stat Python refuses: {err}")
    is_dir = bool(flags & 2)
    got = (is_dir, Times(*times), max(1, nondos), expected[3] if is_dir else size,
           dir_allocated if is_dir else allocated)
    if (seq, flags) != (rec.sequence, rec.flags) or got != expected or rec.base_ref:
        raise AssertionError(f"C and Python stat differ:\n{summary!r}\n{expected!r}")


def fuzz_ntfs_native(data: bytes) -> None:
    """The C metadata parser (ntfs_reader/_ntfsparse.c) against its Python twins. The first
    byte picks the parser (mod 5): 0 an MFT record (1 KiB, 4 KiB past 1 KiB of input; then
    the metadata index's row of it, what a stat and an open read of it and each of its
    runlists), 1 mapping pairs (the next byte * 97 is the first VCN), 2 index
    entries (u16 start, u16 end, then the buffer), 3 a $FILE_NAME value, 4 fixups of an INDX
    record (stride 512; padded to whole sectors)."""
    from ntfs_reader import attrs, index, native, record, runlist
    p = native._module
    if p is None or not data:
        return
    kind, body = data[0] % 5, data[1:]
    if kind == 0:
        size = 4096 if len(body) > 1024 else 1024
        body = body[:size].ljust(size, b"\0")
        number = struct.unpack_from("<I", body, 0x2C)[0]
        rec = p.parse_record(body, number, 4096)
        _twins(rec, lambda: record.parse_record_python(body, number, "fuzz", 4096))
        _summary_twins(p.record_summary(body, number), rec, number)
        _stat_twins(p.stat_summary(body, number), rec)
        got = p.data_attribute(body, number, 4096)   # the record parsed: no reason to decline
        want = record.data_attribute_python(body, number, 4096)
        if got != want:
            raise AssertionError(f"data_attribute differs:\n{got!r:.600}\n{want!r:.600}")
        for a in rec.attributes[:64]:
            if not a.resident:
                _twins(p.decode_runlist(a.raw, a.pairs_at, a.pairs_end, a.lowest_vcn, 1 << 24),
                       lambda: runlist.decode_runlist_python(a.raw, a.pairs_at, a.pairs_end,
                                                             a.lowest_vcn, 1 << 24, "fuzz"),
                       _past_64_bits)
    elif kind == 1:
        if len(body) < 2:
            return
        vcn = body[0] * 97
        _twins(p.decode_runlist(body, 1, len(body), vcn, 1 << 32),
               lambda: runlist.decode_runlist_python(body, 1, len(body), vcn, 1 << 32, "fuzz"),
               _past_64_bits)
    elif kind == 2:
        if len(body) < 4:
            return
        start, end = struct.unpack_from("<HH", body, 0)
        buf = body[4:]
        _twins(p.parse_entries(buf, start, end),
               lambda: index.parse_entries_python(buf, start, end, _WHERE))
    elif kind == 3:
        _twins(p.parse_file_name(body), lambda: attrs.parse_file_name_python(body, _WHERE))
    else:
        body = body.ljust(-(-max(len(body), 1) // 512) * 512, b"\0")  # whole sectors, as read
        a, b = bytearray(body), bytearray(body)
        ok = p.fixups(a, b"INDX", 512)
        if ok is None and a != body:
            raise AssertionError("C fixups changed a buffer it refused")
        _twins(a if ok else None,
               lambda: record.apply_fixups_python(b, b"INDX", "fuzz", "fuzz", 0) or b)


def _differential(native, python, data: bytes, size: int) -> None:
    """The native decoder and its Python twin agree: same bytes or the same typed error."""
    from streams.errors import FormatError
    outcomes = []
    for fn in (native, python):
        try:
            outcomes.append(("ok", fn(data, size)))
        except FormatError as e:
            outcomes.append(("error", type(e).__name__))
    if outcomes[0] != outcomes[1]:
        raise AssertionError(f"native and Python decoders disagree: {outcomes[0][0]} vs "
                             f"{outcomes[1][0]}")
    if outcomes[0][0] == "error":
        native(data, size)  # re-raise the typed error for the caller


def fuzz_lznt1(data: bytes) -> None:
    """LZNT1 (NTFS compression): first byte picks the unit size (a cluster-size multiple)."""
    from ntfs_reader import lznt1
    if not data:
        return
    unit = 4096 << (data[0] % 5)
    _differential(lambda d, u: lznt1.decompress(d, u), lznt1.decompress_py, data[1:], unit)


def fuzz_xpress(data: bytes) -> None:
    """XPRESS Huffman (WOF): first two bytes are the output size (at most 64 KiB)."""
    from ntfs_reader import xpress
    if len(data) < 2:
        return
    size = struct.unpack_from("<H", data, 0)[0] + 1
    _differential(xpress.decompress, xpress.decompress_py, data[2:], size)


def fuzz_lzx(data: bytes) -> None:
    """LZX (WOF, 32 KiB chunks): first two bytes are the output size (at most 32 KiB)."""
    from ntfs_reader import lzx
    if len(data) < 2:
        return
    size = struct.unpack_from("<H", data, 0)[0] % 32768 + 1
    _differential(lzx.decompress, lzx.decompress_py, data[2:], size)


# -- the store ---------------------------------------------------------------------------------

class _BytesBackend(Backend):
    """One pack object in memory: the store's backend interface over bytes."""

    def __init__(self, data: bytes):
        self.data = data

    def get(self, name: str, offset: int, length: int) -> bytes:
        return self.data[offset:offset + length]

    def size(self, name: str) -> int | None:
        return len(self.data)


def fuzz_pack(data: bytes) -> None:
    """A pack file: header, trailer, index (checksum fixed up with flag bit 0), then each
    chunk's payload decompressed and hashed as a read does."""
    from rpfs.store import packs
    if not data:
        return
    flags, body = data[0], bytearray(data[1:])
    t = packs.TRAILER_SIZE
    if flags & 1 and len(body) >= packs.HEADER_SIZE + t and body[-8:] == b"RPFSIDX1":
        try:
            tr = packs.Trailer.parse(bytes(body[-t:]))
            idx = bytes(body[tr.table_offset:len(body) - t])
            fixed = packs.Trailer.build(dict(tr, crc=zlib.crc32(idx)))
            body[-t:] = fixed
        except Exception:  # a trailer the fix-up cannot rebuild: leave it as it is
            pass
    be = _BytesBackend(bytes(body))
    for e in packs.read_entry_table(be, "fuzz", len(body))[:256]:
        payload = be.get("fuzz", e.offset, e.csize)
        out = packs.decompress(e.codec, payload, e.usize)
        packs.chunk_hash(out)


_FRAME_KEYS = (bytes(range(32)), bytes(range(32, 64)))    # the sealed flavour's fixed keys


def fuzz_frames(data: bytes) -> None:
    """A framed chunk's stored payload (rpfs/store/frames.py) as a small read and a whole
    read take it: ``u8 flags, u32 usize``, payload. Flag bit 0: sealed (AES-256-GCM under
    fixed keys; chunk id = keyed BLAKE3 of nothing, so reads stop at authentication unless
    the input was made with these keys); bit 1: the plain table's digest is recomputed so
    mutations reach the table checks behind it."""
    from rpfs.store import frames
    from rpfs.store.crypto import Plain, Sealed
    if len(data) < 5:
        return
    flags, usize = data[0], struct.unpack_from("<I", data, 1)[0] % (65 << 20)
    payload = bytearray(data[5:])
    crypto = Sealed(*_FRAME_KEYS) if flags & 1 else Plain()
    chunk_id = bytes(32)
    if flags & 2 and not flags & 1 and len(payload) >= frames.HEAD_SIZE + 32:
        tlen = struct.unpack_from("<I", payload, 4)[0]
        end = frames.HEAD_SIZE + tlen
        if 32 <= tlen and end <= len(payload):
            table = bytes(payload[frames.HEAD_SIZE:end - 32])
            payload[frames.HEAD_SIZE:end] = Plain.seal_table(table, chunk_id)
    payload = bytes(payload)
    t = frames.parse_table(crypto, payload, len(payload), usize, chunk_id)
    for i in range(min(t.count, 64)):
        s = t.starts[i]
        frames.open_frame(crypto, t, i, payload[s:s + t.lens[i]], chunk_id)
    try:   # the whole-chunk paths a read takes: raw frames as a view, compressed in one pass
        frames.decode(crypto, payload, usize, chunk_id)
    except IntegrityError:
        pass
    frames.decode(crypto, payload, usize, chunk_id, check_frames=True)


def fuzz_chunk_map(data: bytes) -> None:
    """A file's chunk map as stored in the catalog (first u16: how many ids it claims)."""
    from rpfs.store.catalog import decode_map
    if len(data) < 2:
        return
    count = struct.unpack_from("<H", data, 0)[0]
    decode_map(data[2:], count, "fuzz")


# -- Linux file systems (XFS, Btrfs) ----------------------------------------------------------

def _walk_posix(vol, limit: int = 200) -> None:
    """What the namespace does with a POSIX reader's volume: every attribute, listings,
    lookups by name, link targets, xattrs and a few reads of each file."""
    vol.state, vol.warnings, vol.describe()
    todo, seen = [vol.root], 0
    while todo and seen < limit:
        d = todo.pop()
        for e in d.iterdir():
            seen += 1
            if seen > limit:
                break
            e.kind, e.mode, e.size, e.uid, e.gid, e.nlink, e.rdev, e.ino
            e.atime_ns, e.mtime_ns, e.ctime_ns, e.crtime_ns
            e.xattrs()
            d.child(e.name)
            if e.is_dir:
                todo.append(e)
            elif e.is_symlink:
                e.readlink()
            elif e.kind == "file":
                exercise(e.open(), reads=4)


def _posix_volume(data: bytes, reader, checksum_module) -> None:
    """Flag bit 0 of the image: checksums are not enforced (the fuzzer cannot fix up every
    metadata CRC it mutates), so mutations reach the parsers behind the checks."""
    import importlib
    flags, img = decode_image(data)
    csum = importlib.import_module(checksum_module)
    csum.ENFORCE = not flags & 1
    try:
        _walk_posix(importlib.import_module(reader).open_volume(img))
    finally:
        csum.ENFORCE = True


def fuzz_xfs_volume(data: bytes) -> None:
    """An XFS volume (sparse image): superblock, log head, inodes, every directory and
    attribute form, extent lists and bmbt blocks, symlinks, file reads."""
    _posix_volume(data, "xfs_reader", "xfs_reader.checksum")


def fuzz_btrfs_volume(data: bytes) -> None:
    """A Btrfs volume (sparse image): superblock, system chunk array, chunk/root/fs trees,
    subvolumes, inode/dir/xattr/extent items, compressed extents, file reads."""
    _posix_volume(data, "btrfs_reader", "btrfs_reader.checksum")


def fuzz_btrfs_decompress(data: bytes) -> None:
    """One Btrfs compressed extent: first byte the kind (1 zlib, 2 LZO, 3 zstd), the next
    three the declared uncompressed size (past 1 MiB a typed error), then the compressed bytes."""
    from btrfs_reader.compression import decompress
    if len(data) < 4:
        return
    ram = int.from_bytes(data[1:4], "little")
    out = decompress(data[0] % 4 or 1, data[4:], ram, 4096, "fuzz", "extent", 0)
    assert len(out) <= ram


# -- Linux guests: ext2/3/4 (the walk above) and LVM2 -----------------------------------------

def _fix_ext4_superblock(img: SparseImage) -> None:
    """The superblock's crc32c (metadata_csum) over its mutated bytes."""
    from ext4_reader.checksum import crc32c_raw
    sb = bytearray(img.read(1024, 1024))
    if len(sb) == 1024 and sb[56:58] == b"\x53\xef" and struct.unpack_from("<I", sb, 100)[0] & 0x400:
        sb[0x3FC:0x400] = struct.pack("<I", crc32c_raw(0xFFFFFFFF, bytes(sb[:0x3FC])))
        img.patch(1024, bytes(sb))


def fuzz_ext4_volume(data: bytes) -> None:
    """A whole ext2/3/4 volume (sparse image): superblock, group descriptors, inodes, extent
    trees, indirect blocks, directories (linear, htree, inline), xattrs, and the journal
    replayed on open; flag bit 0 fixes the superblock checksum."""
    import ext4_reader
    flags, img = decode_image(data)
    if flags & 1:
        _fix_ext4_superblock(img)
    if not ext4_reader.probe(img):
        return
    _walk_posix(ext4_reader.open_volume(img))


def _fix_lvm(img: SparseImage) -> None:
    """The label's, metadata area header's and metadata text's checksums, over their
    mutated bytes (so mutations reach the text parser and the assembly)."""
    from formats import lvm
    head = img.read(0, 4 * 512)
    for n in range(4):
        sector = bytearray(head[n * 512:(n + 1) * 512])
        if sector[:8] != lvm.LABEL_ID:
            continue
        sector[16:20] = struct.pack("<I", lvm.lvm_crc(bytes(sector[20:])))
        img.patch(n * 512, bytes(sector))
        try:
            pv = lvm.read_pv("fuzz", img)
        except RpfsError:
            return
        for start, _size in pv.metadata_areas[:2]:
            if start + 512 > img.size:
                continue
            mda = bytearray(img.read(start, 512))
            off, length = struct.unpack_from("<QQ", mda, 40)
            if 0 < length <= 64 << 10 and start + off + length <= img.size:
                text = img.read(start + off, length)
                mda[56:60] = struct.pack("<I", lvm.lvm_crc(text))
            mda[0:4] = struct.pack("<I", lvm.lvm_crc(bytes(mda[4:])))
            img.patch(start, bytes(mda))
        return


def fuzz_lvm(data: bytes) -> None:
    """An LVM2 physical volume (sparse image): label, PV header, metadata area, the text,
    then every logical volume assembled and read; flag bit 0 fixes the checksums. The
    image is also given as a second PV of the same volume group."""
    from formats import lvm
    flags, img = decode_image(data)
    if flags & 1:
        _fix_lvm(img)
    if not lvm.probe(img):
        return
    lvm.describe_pv(img, "fuzz")
    for value in lvm.assemble({"a": img}).values():
        if isinstance(value, Stream):
            exercise(value, reads=4)


def fuzz_lvm_text(data: bytes) -> None:
    """LVM2's metadata text syntax alone."""
    from formats import lvm
    lvm.parse_text(data.decode("utf-8", "replace"), "fuzz")


def fuzz_vss(data: bytes) -> None:
    """In-guest shadow copies in an NTFS volume (sparse image): the volume header at 0x1e00,
    the catalog chain, each store's header, block list (forwarders, overlays), bitmaps, and
    reads of every store through the newer ones."""
    from formats import vss
    _, img = decode_image(data)
    if not vss.probe(img):
        return
    copies = vss.ShadowCopies(img)
    for store in copies.stores[:16]:
        store.describe()
        try:
            stream = copies.open(store)
        except RpfsError:
            continue
        exercise(stream, reads=4)


def fuzz_ldm(data: bytes) -> None:
    """A Windows dynamic disk (sparse image): partition table, PRIVHEAD, TOCBLOCK, VMDB and
    VBLKs, then every volume of its group assembled (its other disks missing) and read."""
    from formats import ldm
    _flags, img = decode_image(data)
    if not ldm.probe(img):
        return
    ldm.describe_disk(img, "fuzz")
    for value in ldm.assemble({"a": img}).values():
        if isinstance(value, Stream):
            exercise(value, reads=4)


def fuzz_ldm_database(data: bytes) -> None:
    """An LDM database alone (TOCBLOCK, VMDB, VBLKs incl. multi-part records), its volumes
    assembled over zero-filled disks standing for every disk it names, and read."""
    from formats import ldm
    db = ldm.parse_config(data, "fuzz")
    disk = SparseImage(64 << 20, [])
    members = {d.id: ldm.Member(f"d{d.id}", disk, d.guid, db.group_guid, db.group_name, 0,
                                disk.size, db) for d in list(db.disks.values())[:8]}
    for vol in list(db.vols.values())[:16]:
        try:
            value = ldm._volume(db, vol, members, "fuzz")
        except RpfsError:
            continue
        exercise(value, reads=4)


def fuzz_vmcx(data: bytes) -> None:
    """A Hyper-V configuration file (HyperVStorage, raw bytes): headers, object tables, key
    tables and entries, the key tree, then the VM facts ``rpfs info`` shows."""
    from formats import vmcx
    vmcx.vm_config(vmcx.read_keys(BytesStream(data, name="fuzz.vmcx")))


TARGETS = {name[5:]: fn for name, fn in sorted(globals().items()) if name.startswith("fuzz_")}
ALL = sorted(TARGETS)   # the combined target "all": an input's first byte indexes this list


def run_one(target: str, data: bytes) -> None:
    """One input through one target: typed errors are the expected outcome of bad input."""
    try:
        TARGETS[target](data)
    except RpfsError:
        pass
