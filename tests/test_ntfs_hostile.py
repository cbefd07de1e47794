"""Hostile NTFS input: random bytes into every parser (hypothesis), bit flips in boot sector,
MFT records, index records and attribute lists of a real volume, and hand-made cycles.
Every failure must be a typed error (streams.errors), never a hang or a raw exception."""

from __future__ import annotations

import hashlib
import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ntfs_reader import Volume, names
from ntfs_reader.attrs import parse_attribute_list, parse_file_name, parse_standard_information
from ntfs_reader.boot import parse_boot_sector
from ntfs_reader.index import Index, parse_entries
from ntfs_reader.record import parse_record
from ntfs_reader.reparse import parse_reparse
from ntfs_reader.runlist import decode_runlist
from streams.errors import FormatError, RpfsError
from streams.stream import BytesStream, FileStream, Stream

from tests.helpers.ntfs_images import features_image

pytestmark = pytest.mark.timeout(120)
WHERE = {"source": "t", "structure": "s", "offset": 0}
FAST = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# -- parsers on random input ---------------------------------------------------------------

@FAST
@given(st.binary(min_size=0, max_size=600))
def test_boot_sector_random(data):
    try:
        parse_boot_sector(data)
    except FormatError:
        pass


def _fixed_up(body: bytes, size: int, magic: bytes) -> bytes:
    """Random body made into a record whose update sequence array is consistent."""
    buf = bytearray(body.ljust(size, b"\0")[:size])
    buf[0:4] = magic
    count = size // 512 + 1
    struct.pack_into("<HH", buf, 4, 0x30 if magic == b"FILE" else 0x28, count)
    usa = 0x30 if magic == b"FILE" else 0x28
    usn = b"\x01\x00"
    buf[usa:usa + 2] = usn
    for i in range(1, count):
        buf[usa + 2 * i:usa + 2 * i + 2] = buf[i * 512 - 2:i * 512]
        buf[i * 512 - 2:i * 512] = usn
    return bytes(buf)


@FAST
@given(st.binary(min_size=0, max_size=1024), st.booleans())
def test_mft_record_random(body, fix):
    data = _fixed_up(body, 1024, b"FILE") if fix else body.ljust(1024, b"\0")
    try:
        rec = parse_record(data, 7, "t", 0)
        for a in rec.attributes:
            if not a.resident:
                a.decode_runs(1 << 20, "t")
            elif a.type == 0x10:
                parse_standard_information(a.value, WHERE)
            elif a.type == 0x30:
                parse_file_name(a.value, WHERE)
            elif a.type == 0x20:
                parse_attribute_list(a.value, WHERE)
            elif a.type == 0xC0:
                parse_reparse(a.value, WHERE)
    except FormatError:
        pass


@FAST
@given(st.binary(max_size=200), st.integers(0, 1 << 40))
def test_runlist_random(data, vcn):
    try:
        runs = decode_runlist(data, 0, len(data), vcn, 1 << 24)
    except FormatError:
        return
    for v, n, lcn in runs:
        assert n > 0 and (lcn is None or 0 <= lcn and lcn + n <= 1 << 24)


@FAST
@given(st.binary(max_size=600))
def test_index_entries_and_small_attributes_random(data):
    for fn in (lambda: parse_entries(data, 0, len(data), WHERE),
               lambda: parse_attribute_list(data, WHERE),
               lambda: parse_file_name(data, WHERE),
               lambda: parse_standard_information(data, WHERE),
               lambda: parse_reparse(data, WHERE),
               lambda: list(Index(data, BytesStream(data * 8), None, 4096, WHERE))):
        try:
            fn()
        except FormatError:
            pass


@FAST
@given(st.lists(st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 0x2F, 0x2E, 0xD800,
                                                                    0xDC00, 0xDCC0])),
                min_size=1, max_size=255))
def test_names_round_trip(units):
    raw = struct.pack(f"<{len(units)}H", *units)
    ntfs = names.decode(raw)
    linux = names.to_linux(ntfs)
    b = linux.encode("utf-8", "surrogateescape")
    assert len(b) <= 255 and b"/" not in b and b"\0" not in b and b not in (b".", b"..")
    if len(ntfs.encode("utf-8", "surrogatepass")) <= 255:
        assert names.to_ntfs(linux) == ntfs
        assert names.to_utf16(linux) == raw
    else:
        assert names.is_shortened(linux)


# -- mutations of a real volume -------------------------------------------------------------

class PatchedStream(Stream):
    """A real image with some bytes replaced (copy-on-read overlay)."""

    def __init__(self, base: Stream, patches: dict[int, bytes]):
        self.base, self.patches = base, patches
        self.size, self.name = base.size, "patched"

    def _read(self, offset, length):
        data = bytearray(self.base.read(offset, length))
        for off, b in self.patches.items():
            if off < offset + length and off + len(b) > offset:
                for i, byte in enumerate(b):
                    if offset <= off + i < offset + length:
                        data[off + i - offset] = byte
        return bytes(data)

    def readinto(self, offset, buffer):
        data = self.read(offset, len(buffer))
        memoryview(buffer)[:len(data)] = data
        return len(data)


def exercise(vol: Volume, limit: int = 400) -> int:
    """Walk (refs visited once), stat and read everything; returns entries seen."""
    seen = set()
    try:
        stack = [vol.root]
    except RpfsError:
        return 0
    count = 0
    while stack and count < limit:
        d = stack.pop()
        try:
            for e in d.iterdir():
                count += 1
                for action in (lambda: (e.size, e.times, e.attributes, e.nlink, e.streams(),
                                        e.reparse_tag, e.security_descriptor()),
                               lambda: e.readlink() if e.is_symlink else None,
                               lambda: e.open().read(0, 1 << 14) if not e.is_dir else None,
                               lambda: [e.open(n).read(0, 1 << 14) for n, _ in e.streams()],
                               lambda: d.child(e.name.upper()),
                               lambda: next(d.iterdir(after=e.name), None)):
                    try:
                        action()
                    except RpfsError:
                        pass
                try:
                    if e.is_dir and e.ref not in seen:
                        seen.add(e.ref)
                        stack.append(e)
                except RpfsError:
                    pass
        except RpfsError:
            pass
    return count


@pytest.fixture(scope="module")
def image():
    path, _ = features_image(512, 4096)
    base = FileStream(path)
    vol = Volume(base)
    # regions worth hitting: boot sector, the first MFT records, the root's INDX records
    mft = [o for o in (vol.mft_offset(n) for n in range(0, 110)) if o is not None]
    root = vol.root._attrs()
    indx = []
    for a in root.extents(0xA0, "$I30"):
        for vcn, n, lcn in a.decode_runs(vol.total_clusters, "x"):
            indx.append((lcn * vol.cluster_size, n * vol.cluster_size))
    return base, vol.record_size, mft, indx, vol.boot.volume_size


def _mutate(base, record_size, mft, indx, size, seed):
    r = random.Random(seed)
    patches = {}
    region = r.choice(["boot", "mft", "mft", "mft", "indx", "backup"])
    for _ in range(r.choice([1, 1, 2, 4, 16])):
        if region == "boot":
            off = r.randrange(0, 512)
        elif region == "backup":
            off = r.randrange(0, 512)
            patches[size - 512 + r.randrange(0, 512)] = bytes([r.randrange(256)])
        elif region == "mft":
            off = r.choice(mft) + r.randrange(0, record_size)
        else:
            start, n = r.choice(indx)
            off = start + r.randrange(0, n)
        old = base.read(off, 1)[0]
        patches[off] = bytes([old ^ (1 << r.randrange(8)) if r.random() < 0.7 else r.randrange(256)])
    return PatchedStream(base, patches)


@pytest.mark.parametrize("chunk", range(4))
def test_bit_flips_give_typed_errors(image, chunk):
    base, record_size, mft, indx, size = image
    for seed in range(chunk * 60, chunk * 60 + 60):
        stream = _mutate(base, record_size, mft, indx, size, seed)
        try:
            vol = Volume(stream)
        except RpfsError:
            continue
        exercise(vol)


# -- hand-made damage ----------------------------------------------------------------------

def _record_patch(stream: Stream, offset: int, size: int, magic: bytes, edit) -> dict:
    """Patches for one fixup-protected record: undo fixups, ``edit(buf)``, redo them."""
    buf = bytearray(stream.read(offset, size))
    assert buf[:4] == magic
    usa, count = struct.unpack_from("<HH", buf, 4)
    usn = bytes(buf[usa:usa + 2])
    for i in range(1, count):
        buf[i * 512 - 2:i * 512] = buf[usa + 2 * i:usa + 2 * i + 2]
    edit(buf)
    for i in range(1, count):
        buf[usa + 2 * i:usa + 2 * i + 2] = buf[i * 512 - 2:i * 512]
        buf[i * 512 - 2:i * 512] = usn
    return {offset: bytes(buf)}


def _attr_offset(buf, atype, name=None):
    pos = struct.unpack_from("<H", buf, 0x14)[0]
    while True:
        t, n = struct.unpack_from("<II", buf, pos)
        if t == 0xFFFFFFFF:
            raise LookupError(atype)
        if t == atype:
            return pos
        pos += n


def test_torn_record_is_a_typed_error(image):
    base, record_size, mft, _, _ = image
    off = mft[5] + 511  # last byte of the root record's first sector: the USN copy
    stream = PatchedStream(base, {off: bytes([base.read(off, 1)[0] ^ 0xFF])})
    with pytest.raises(FormatError, match="torn write|update sequence"):
        Volume(stream).root.iterdir()


def test_index_cycle_is_detected(image):
    """Point a child VCN of the root index back at an ancestor node."""
    base, record_size, mft, indx, _ = image
    vol = Volume(base)
    index = vol.root._index()
    parents = [e for e in index.root if e.child is not None]
    assert parents, "root index has no INDX children"
    # in the first INDX node, make the last entry point back at VCN of the root's child
    vcn = parents[0].child
    off = vol.root._attrs().first(0xA0, "$I30")  # allocation stream position of that node
    stream_alloc = vol.attribute_stream(vol.root._attrs(), 0xA0, "$I30")
    disk = next(p for p in stream_alloc._map(vcn * index.vcn_size, vcn * index.vcn_size + 1))[2]

    def edit(buf):
        first = 24 + struct.unpack_from("<I", buf, 24)[0]
        length = struct.unpack_from("<H", buf, first + 8)[0]
        flags = struct.unpack_from("<H", buf, first + 12)[0]
        if flags & 1:
            struct.pack_into("<q", buf, first + length - 8, vcn)
        else:
            raise pytest.skip("first entry has no child to redirect")
    # the node has entries without children (a two-level tree): make the end entry a parent
    try:
        patches = _record_patch(base, disk, index.block_size, b"INDX", edit)
    except pytest.skip.Exception:
        patches = _self_loop_patch(base, disk, index.block_size, vcn)
    vol2 = Volume(PatchedStream(base, patches))
    with pytest.raises(FormatError, match="cycle|marked free|bad|length|not terminated"):
        list(vol2.root.iterdir())


def _self_loop_patch(base, disk, size, vcn):
    def edit(buf):
        pos = 24 + struct.unpack_from("<I", buf, 24)[0]
        end = 24 + struct.unpack_from("<I", buf, 28)[0]
        while True:
            length, _, flags = struct.unpack_from("<HHH", buf, pos + 8)
            if flags & 2:
                break
            pos += length
        # turn the end entry (16 bytes) into a 24-byte end entry with a child = this node
        assert end + 8 <= struct.unpack_from("<I", buf, 32)[0] + 24
        struct.pack_into("<HHH", buf, pos + 8, 24, 0, 3)
        struct.pack_into("<q", buf, pos + 16, vcn)
        struct.pack_into("<I", buf, 28, end + 8 - 24)
        buf[36] |= 1
    return _record_patch(base, disk, size, b"INDX", edit)


def test_attribute_list_pointing_elsewhere(image):
    """An $ATTRIBUTE_LIST entry naming a record that is not an extension of this file."""
    base, record_size, mft, _, _ = image
    vol = Volume(base)
    e = vol.lookup("/hello.txt")
    off = vol.mft_offset(e.ref)

    def edit(buf):
        # replace the $STANDARD_INFORMATION attribute's header type with an attribute list
        # whose one entry points at record 5 (the root directory)
        pos = _attr_offset(buf, 0x10)
        alen = struct.unpack_from("<I", buf, pos + 4)[0]
        entry = struct.pack("<IHBBQQH", 0x80, 32, 0, 26, 0, 5 | (5 << 48), 0).ljust(32, b"\0")
        value_off = 24
        struct.pack_into("<IIBBHHH", buf, pos, 0x20, alen, 0, 0, 0, 0, 0)
        struct.pack_into("<IH", buf, pos + 16, len(entry), value_off)
        buf[pos + value_off:pos + value_off + len(entry)] = entry
    stream = PatchedStream(base, _record_patch(base, off, record_size, b"FILE", edit))
    with pytest.raises(FormatError, match="extension"):
        Volume(stream).lookup("/hello.txt").open()


def test_runs_past_the_end_of_the_volume(image):
    base, record_size, mft, _, _ = image
    vol = Volume(base)
    e = vol.lookup("/dir/sub/deep/file.bin")
    off = vol.mft_offset(e.ref)

    def edit(buf):
        pos = _attr_offset(buf, 0x80)
        pairs = pos + struct.unpack_from("<H", buf, pos + 32)[0]
        # one run of 25 clusters at LCN 0x7ffff0, far beyond the 64 MiB volume
        buf[pairs:pairs + 6] = bytes([0x31, 25, 0xF0, 0xFF, 0x7F, 0])
    stream = PatchedStream(base, _record_patch(base, off, record_size, b"FILE", edit))
    with pytest.raises(FormatError, match="outside the volume"):
        Volume(stream).lookup("/dir/sub/deep/file.bin").open().read(0, 10)


def test_absurd_sizes_do_not_allocate(image):
    base, record_size, mft, _, _ = image
    vol = Volume(base)
    e = vol.lookup("/dir/sub/deep/file.bin")
    off = vol.mft_offset(e.ref)

    def edit(buf):
        pos = _attr_offset(buf, 0x80)
        struct.pack_into("<qqq", buf, pos + 40, 1 << 62, 1 << 62, 1 << 62)
    stream = PatchedStream(base, _record_patch(base, off, record_size, b"FILE", edit))
    with pytest.raises(FormatError):
        s = Volume(stream).lookup("/dir/sub/deep/file.bin").open()
        s.read(s.size - 10, 10)


def test_backup_boot_sector_is_used(image):
    base, *_ = image
    stream = PatchedStream(base, {0: b"\0" * 512})
    vol = Volume(stream)
    assert any("backup" in w for w in vol.warnings)
    assert vol.lookup("/hello.txt").open().read(0, 5) == b"hello"


def test_both_boot_sectors_damaged(image):
    base, *_, size = image
    stream = PatchedStream(base, {0: b"\0" * 512, base.size - 512: b"\0" * 512})
    with pytest.raises(FormatError, match="boot sector"):
        Volume(stream)


def test_truncated_image(image):
    base, *_ = image
    from streams.stream import SliceStream
    vol = Volume(SliceStream(base, 0, base.size // 3))
    assert any("past the end" in w for w in vol.warnings)
    exercise(vol)


# -- $MFT whose $DATA continues through an $ATTRIBUTE_LIST -----------------------------------

def _signed_min(x: int) -> bytes:
    n = 1
    while not -(1 << (8 * n - 1)) <= x < (1 << (8 * n - 1)):
        n += 1
    return x.to_bytes(n, "little", signed=True)


def encode_runs(runs) -> bytes:
    out, prev = bytearray(), 0
    for _vcn, n, lcn in runs:
        lb = _signed_min(n)
        ob = _signed_min(lcn - prev)
        out += bytes([len(ob) << 4 | len(lb)]) + lb + ob
        prev = lcn
    return bytes(out + b"\0")


def _nonres_data(runs, low, high, sizes, attr_id) -> bytes:
    pairs = encode_runs(runs)
    pairs += b"\0" * (-len(pairs) % 8)
    length = 64 + len(pairs)
    return struct.pack("<IIBBHHHqqHB5xqqq", 0x80, length, 1, 0, 0x40, 0, attr_id, low, high,
                       0x40, 0, *sizes) + pairs


def _finish_record(buf: bytearray, used: int) -> bytes:
    struct.pack_into("<I", buf, 24, used)
    usa, count = struct.unpack_from("<HH", buf, 4)
    usn = b"\x07\x00"
    buf[usa:usa + 2] = usn
    for i in range(1, count):
        buf[usa + 2 * i:usa + 2 * i + 2] = buf[i * 512 - 2:i * 512]
        buf[i * 512 - 2:i * 512] = usn
    return bytes(buf)


def test_mft_data_through_attribute_list():
    """$MFT's $DATA split in two extents: VCN 0.. in record 0, the rest in extension record
    15, listed by a new $ATTRIBUTE_LIST in record 0 (the layout Windows uses for a very
    fragmented MFT). Everything must read as before."""
    path, man = features_image(512, 4096)
    base = FileStream(path)
    vol = Volume(base)
    rs = vol.record_size
    rec0 = vol.record(0)
    data = [a for a in rec0.attributes if a.type == 0x80][0]
    runs = data.decode_runs(vol.total_clusters, "x")
    ext_no = 15
    split = (ext_no * rs) // vol.cluster_size + 1  # extent A must map record 15 itself
    a_runs, b_runs = [], []
    for vcn, n, lcn in runs:
        if vcn + n <= split:
            a_runs.append((vcn, n, lcn))
        elif vcn >= split:
            b_runs.append((vcn, n, lcn))
        else:
            a_runs.append((vcn, split - vcn, lcn))
            b_runs.append((split, n - (split - vcn), lcn + split - vcn))
    assert b_runs, "MFT too small to split"
    end = b_runs[-1][0] + b_runs[-1][1]
    sizes = (data.allocated_size, data.data_size, data.initialized_size)
    off0 = vol.mft_offset(0)
    raw0 = bytearray(base.read(off0, rs))
    usa, count = struct.unpack_from("<HH", raw0, 4)
    for i in range(1, count):
        raw0[i * 512 - 2:i * 512] = raw0[usa + 2 * i:usa + 2 * i + 2]
    attrs_off = struct.unpack_from("<H", raw0, 0x14)[0]
    pieces = {}
    pos = attrs_off
    while True:
        t, n = struct.unpack_from("<II", raw0, pos)
        if t == 0xFFFFFFFF:
            break
        pieces[t] = bytes(raw0[pos:pos + n])
        pos += n
    seq0 = rec0.sequence
    data_id = struct.unpack_from("<H", pieces[0x80], 14)[0]
    new_id = 0x20
    alist_entries = []
    for t, body in sorted(pieces.items()):
        aid = struct.unpack_from("<H", body, 14)[0]
        alist_entries.append(struct.pack("<IHBBQQH", t, 32, 0, 26, 0, seq0 << 48, aid).ljust(32, b"\0"))
        if t == 0x80:
            alist_entries.append(struct.pack("<IHBBQQH", 0x80, 32, 0, 26, split,
                                             ext_no | (1 << 48), new_id).ljust(32, b"\0"))
    alist_value = b"".join(alist_entries)
    alist = struct.pack("<IIBBHHHIHBx", 0x20, 24 + len(alist_value), 0, 0, 0x18, 0, 0x21,
                        len(alist_value), 0x18, 0) + alist_value
    pieces[0x20] = alist
    pieces[0x80] = _nonres_data(a_runs, 0, split - 1, sizes, data_id)
    body = b"".join(pieces[t] for t in sorted(pieces)) + b"\xff\xff\xff\xff\0\0\0\0"
    new0 = bytearray(raw0[:attrs_off]) + body
    assert len(new0) <= rs
    new0 = new0.ljust(rs, b"\0")
    struct.pack_into("<H", new0, 0x28, 0x22)
    rec0_bytes = _finish_record(new0, attrs_off + len(body))
    # extension record 15
    ext = bytearray(rs)
    struct.pack_into("<4sHHQHHHHIIQH", ext, 0, b"FILE", 0x30, rs // 512 + 1, 0, 1, 0, 0x38, 1,
                     0, rs, seq0 << 48, new_id + 1)
    struct.pack_into("<I", ext, 0x2C, ext_no)
    ebody = _nonres_data(b_runs, split, end - 1, (0, 0, 0), new_id) + b"\xff\xff\xff\xff\0\0\0\0"
    ext[0x38:0x38 + len(ebody)] = ebody
    ext_bytes = _finish_record(ext, 0x38 + len(ebody))
    stream = PatchedStream(base, {off0: rec0_bytes, vol.mft_offset(ext_no): ext_bytes})
    vol2 = Volume(stream)
    assert [(e.type, e.lowest_vcn) for e in vol2.file(0).extents(0x80)] == [(0x80, 0), (0x80, split)]
    assert vol2.mft_records == vol.mft_records
    for p, info in man["entries"].items():
        if info["type"] == "file" and "sha256" in info:
            got = vol2.lookup(p).open()
            assert hashlib.sha256(got.read(0, got.size)).hexdigest() == info["sha256"], p


def test_efs_encrypted_file_refuses_to_open(image):
    """FILE_ATTRIBUTE_ENCRYPTED in $STANDARD_INFORMATION (ntfs-3g cannot set it): the
    contents are ciphertext, so open() must refuse rather than return them."""
    from streams.errors import UnsupportedError
    base, record_size, *_ = image
    vol = Volume(base)
    e = vol.lookup("/hello.txt")
    off = vol.mft_offset(e.ref)

    def edit(buf):
        pos = _attr_offset(buf, 0x10)
        value = pos + struct.unpack_from("<H", buf, pos + 20)[0]
        flags = struct.unpack_from("<I", buf, value + 32)[0]
        struct.pack_into("<I", buf, value + 32, flags | 0x4000)
    vol2 = Volume(PatchedStream(base, _record_patch(base, off, record_size, b"FILE", edit)))
    e2 = vol2.lookup("/hello.txt")
    with pytest.raises(UnsupportedError, match="EFS"):
        e2.open()          # nothing read of it before: the plain-file path
    assert e2.is_encrypted and e2.attributes & 0x4000
    with pytest.raises(UnsupportedError, match="EFS"):
        vol2.lookup("/hello.txt").open()


@FAST
@given(st.binary(min_size=0, max_size=2000), st.integers(0, 70000))
def test_xpress_random(data, size):
    from ntfs_reader.xpress import decompress
    try:
        out = decompress(data, size)
    except FormatError:
        return
    assert len(out) == size


@FAST
@given(st.binary(min_size=0, max_size=3000), st.integers(0, 1 << 20))
def test_wof_stream_random(data, size):
    from ntfs_reader.wof import WofStream
    try:
        s = WofStream(BytesStream(data), size, 0, "t")
        s.read(0, min(size, 20000))
    except FormatError:
        pass


def test_bytes_past_valid_data_length_read_as_zeros(image):
    """initialized_size (VDL) below the data size, as Windows leaves after SetEndOfFile/
    SetFileValidData: the tail reads as zeros and is reported as a ZERO extent."""
    base, record_size, *_ = image
    vol = Volume(base)
    e = vol.lookup("/dir/sub/deep/file.bin")
    full = e.open().read(0, e.size)
    off = vol.mft_offset(e.ref)

    def edit(buf):
        pos = _attr_offset(buf, 0x80)
        struct.pack_into("<q", buf, pos + 56, 50_000)
    vol2 = Volume(PatchedStream(base, _record_patch(base, off, record_size, b"FILE", edit)))
    s = vol2.lookup("/dir/sub/deep/file.bin").open()
    assert s.size == len(full) == 100_000
    assert s.read(0, s.size) == full[:50_000] + bytes(50_000)
    assert [(x.offset, x.length, x.kind) for x in s.extents()] == [
        (0, 50_000, "data"), (50_000, 50_000, "zero")]
    assert s.read(49_990, 20) == full[49_990:50_000] + bytes(10)


_UNITS = st.lists(st.one_of(st.integers(0, 0xFFFF), st.sampled_from([0, 0x2F, 0x2E, 0xD800,
                                                                       0xDCC0, 0xDCAF])),
                  min_size=1, max_size=8)


@FAST
@given(_UNITS, _UNITS)
def test_distinct_names_stay_distinct(a, b):
    na = names.decode(struct.pack(f"<{len(a)}H", *a))
    nb = names.decode(struct.pack(f"<{len(b)}H", *b))
    if na != nb:
        assert names.to_linux(na) != names.to_linux(nb)


@FAST
@given(st.binary(min_size=0, max_size=3000), st.integers(0, 32768))
def test_lzx_random(data, size):
    from ntfs_reader.lzx import decompress
    try:
        out = decompress(data, size)
    except FormatError:
        return
    assert len(out) == size


def test_lzx_bit_flips_of_real_chunks():
    """Every single-bit flip in the first bytes of real wimlib LZX chunks: typed errors or
    some output of the right size, nothing else."""
    import shutil
    from ntfs_reader.lzx import decompress
    from tests.helpers.ntfs_images import _text, wim_resources
    if shutil.which("wimlib-imagex") is None:
        pytest.skip("wimlib-imagex not installed (tools/setup.sh installs wimtools)")
    data = _text(40_000, 3)
    raw, _ = wim_resources({"/x": data}, 32768, "LZX")["/x"]
    first = raw[4:4 + struct.unpack_from("<I", raw, 0)[0]]
    assert decompress(first, 32768) == data[:32768]
    for bit in range(0, 8 * 300, 7):
        bad = bytearray(first)
        bad[bit // 8] ^= 1 << (bit % 8)
        try:
            assert len(decompress(bytes(bad), 32768)) == 32768
        except FormatError:
            pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF),
               max_size=300))
def test_any_name_asked_for_is_an_answer_or_a_typed_error(name):
    vol = _VOLUME.get("v")
    if vol is None:
        vol = _VOLUME["v"] = Volume(FileStream(features_image(512, 4096)[0]))
    for fn in (lambda: vol.root.child(name), lambda: vol.lookup("/dir/" + name),
               lambda: vol.lookup("/hello.txt").open(name),
               lambda: next(vol.root.iterdir(after=name), None)):
        try:
            fn()
        except RpfsError:
            pass


_VOLUME: dict = {}


def test_zeroed_upcase_table_falls_back_to_unicode(small_fixtures):
    """$UpCase whose clusters read as zeros (found by fuzzing the whole volume): lookups
    must still work, with Unicode upper case and a warning, instead of failing every name."""
    base = FileStream(small_fixtures.volumes["data-p1"].image)
    vol = Volume(base)
    table = vol.attribute_stream(vol.file(10), 0x80)
    patches = {disk: bytes(n) for _, n, disk in table._map(0, table.size) if disk is not None}
    (path, entry), = [(p, e) for p, e in vol.walk("/") if not e.is_dir][:1]
    damaged = Volume(PatchedStream(base, patches))
    assert damaged.lookup(path.upper()).ref == entry.ref
    assert any("$UpCase" in w for w in damaged.warnings)
