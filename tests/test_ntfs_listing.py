"""Directory listings as arrays (ntfs_reader/listing.py): the C builder
(``_ntfsparse.list_index``) against its Python twin on every directory of every NTFS
fixture volume (the "small" set, the reader's feature images, the hostile VM's volumes),
and on bit-flipped and truncated $INDEX_ROOT/INDX buffers; both against ``Entry.listing``
(names, records, kinds); the nodes a listing makes only when asked for, counted."""

from __future__ import annotations

import os
import struct
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ntfs_reader import Volume, native
from ntfs_reader.index import Index
from ntfs_reader.listing import list_directory, listing_python
from ntfs_reader.record import AT_BITMAP, AT_INDEX_ALLOCATION, AT_INDEX_ROOT
from rpfs.ntfs_nodes import volume_root
from streams.errors import FormatError, RpfsError
from streams.stream import BytesStream, FileStream
from tests.helpers.ntfs_images import features_image, mftfrag_image

SMALL = ["system-p3", "system-p4", "data-p1", "data-p2", "data-p5", "data-p6", "bare-p0",
         "sector4k-p0"] + [f"clusters-p{i}" for i in range(1, 9)]
WHERE = {"source": "test", "structure": "test", "offset": 0}


def _directories(vol: Volume):
    """Every directory of the volume (not through links), depth first."""
    stack = [vol.root]
    seen = set()
    while stack:
        d = stack.pop()
        if d.ref in seen:
            continue
        seen.add(d.ref)
        yield d
        for _, e, _ in d.listing():
            try:
                if e.is_dir and not e.is_symlink:
                    stack.append(e)
            except RpfsError:
                pass


def _raw_index(d) -> tuple[bytes, bytes | None, bytes | None, int]:
    """The $I30 of directory entry ``d`` as the C builder takes it."""
    vol = d.volume
    fa = d._attrs()
    root = fa.first(AT_INDEX_ROOT, "$I30").value
    alloc = bitmap = None
    if fa.first(AT_INDEX_ALLOCATION, "$I30") is not None:
        s = vol.attribute_stream(fa, AT_INDEX_ALLOCATION, "$I30", "test")
        alloc = s.read(0, s.size)
        if fa.first(AT_BITMAP, "$I30") is not None:
            bitmap = vol.read_attribute(fa, AT_BITMAP, "$I30")
    return root, alloc, bitmap, vol.cluster_size


def twins(root: bytes, alloc: bytes | None, bitmap: bytes | None, cluster: int,
          is_root: bool):
    """C's arrays and the twin's for one index: equal, or None from C exactly where the
    twin raises a typed error (or names a name longer than 255 bytes, which C leaves to it).
    Returns the twin's listing (or raises its error)."""
    from ntfs_reader.listing import Listing
    got = native._module.list_index(root, alloc, bitmap, cluster, is_root)
    try:
        index = Index(root, BytesStream(alloc, "alloc") if alloc is not None else None, bitmap,
                      cluster, dict(WHERE))
        expected = listing_python(index, is_root, WHERE)
    except FormatError:
        assert got is None, "C listed what Python refuses"
        raise
    if got is None:
        assert any(expected.offsets[i + 1] - expected.offsets[i] > 255 - 18
                   for i in range(len(expected))), f"C refused what Python lists: {expected}"
        return expected
    assert Listing.from_native(got) == expected
    return expected


def check_volume(image) -> int:
    assert native.available(), "ntfs_reader._ntfsparse missing: run tools/setup.sh"
    vol = Volume(FileStream(str(image)))
    n = 0
    for d in _directories(vol):
        root, alloc, bitmap, cluster = _raw_index(d)
        listing = twins(root, alloc, bitmap, cluster, d.ref == 5)
        # both say what Entry.listing (the per-entry path) says
        old = [(os.fsencode(name), e.ref, e.sequence, kind) for name, e, kind in d.listing()]
        new = [(listing.name(i), listing.numbers[i], listing.sequences[i],
                (None, "file", "dir")[listing.kinds[i]]) for i in range(len(listing))]
        assert new == old, d.ref
        assert d.listing_arrays() == listing
        n += len(listing)
    return n


@pytest.mark.parametrize("name", SMALL)
def test_fixture_volumes(small_fixtures, name):
    assert check_volume(small_fixtures.volumes[name].image) > 0


@pytest.mark.parametrize("build", [features_image, mftfrag_image])
def test_feature_images(build):
    image, _ = build()
    assert check_volume(image) > 10


def test_hostile_volumes(hostile_fixtures):
    """Unpaired surrogates, '/', NUL, '.', long names, 100,000 files in one folder."""
    for image in hostile_fixtures.volumes.values():
        check_volume(image)


def _an_index(small_fixtures):
    vol = Volume(FileStream(str(small_fixtures.volumes["system-p3"].image)))
    big = vol.lookup(small_fixtures.volumes["system-p3"].manifest["features"]["big_dir"]["path"])
    return _raw_index(vol.root), _raw_index(big)


@pytest.fixture(scope="module")
def indexes(small_fixtures):
    return _an_index(small_fixtures)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.integers(0, 1), flips=st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 7)),
                                                max_size=6),
       cut=st.one_of(st.none(), st.integers(0, 1 << 30)), part=st.integers(0, 2))
def test_damaged_indexes_agree(indexes, which, flips, cut, part):
    """Bit flips and truncation of the root value, the INDX records or the bitmap: the same
    arrays or the same typed error (the big index's 12 MiB: flips land in its INDX records)."""
    root, alloc, bitmap, cluster = indexes[which]
    bufs = [bytearray(root), bytearray(alloc or b""), bytearray(bitmap or b"")]
    buf = bufs[part]
    for pos, bit in flips:
        if buf:
            buf[pos % len(buf)] ^= 1 << bit
    if cut is not None and buf:
        del buf[cut % len(buf):]
    try:
        twins(bytes(bufs[0]), bytes(bufs[1]) if alloc is not None else None,
              bytes(bufs[2]) if bitmap is not None else None, cluster, which == 0)
    except FormatError:
        pass


def test_cycle_and_free_record_are_format_errors(indexes):
    """Two entries pointing at one INDX record (a cycle or a shared subtree), and every
    record marked free: typed errors from the twin, None from C."""
    root, alloc, bitmap, cluster = indexes[1]
    block = struct.unpack_from("<I", root, 8)[0]
    top = struct.unpack_from("<q", root, 16 + struct.unpack_from("<I", root, 20)[0] - 8)[0]
    # in the top INDX record, a child pointer (clear of the sector ends fixups rewrite)
    # made to point at that record itself
    rec = bytearray(alloc[top * cluster:top * cluster + block])
    from ntfs_reader.record import apply_fixups_python
    apply_fixups_python(rec, b"INDX", "t", "t", 0)
    pos, end = 24 + struct.unpack_from("<I", rec, 24)[0], 24 + struct.unpack_from("<I", rec, 28)[0]
    while pos < end:
        length, flags = struct.unpack_from("<H", rec, pos + 8)[0], rec[pos + 12]
        at = pos + length - 8
        if flags & 1 and at % 512 <= 502:
            break
        pos += length
    cyc = bytearray(alloc)
    cyc[top * cluster + at:top * cluster + at + 8] = struct.pack("<q", top)
    cyc = bytes(cyc)
    with pytest.raises(FormatError, match="cycle"):
        twins(root, cyc, bitmap, cluster, False)
    with pytest.raises(FormatError, match="free"):
        twins(root, alloc, bytes(len(bitmap)), cluster, False)


def test_listing_makes_nodes_only_when_asked(small_fixtures):
    """Node.listing() of the 50,000-entry directory: names, kinds and numbers with a few
    objects in all (counted with sys.getallocatedblocks), a node only for what is asked."""
    fx = small_fixtures.volumes["system-p3"]
    path = fx.manifest["features"]["big_dir"]["path"]
    root = volume_root(Volume(FileStream(fx.image)), "v", ("v",))
    node = root
    for part in path.strip("/").split("/"):
        node = node.child(part)
    node.listing()  # warm: the volume's caches, $UpCase
    before = sys.getallocatedblocks()
    listing = node.listing()
    kept = sys.getallocatedblocks() - before
    assert len(listing) == 50_000
    assert kept < 200, kept   # per entry it was an NtfsNode, an Entry, a tuple, a name...
    assert listing.volume_key == ("v",) and listing.number(7) > 16
    assert listing.kind(7) == "file" and listing._nodes is None
    child = listing.node(7)
    assert listing.node(7) is child and sum(n is not None for n in listing._nodes) == 1
    assert child.key == ("v", listing.number(7)) and os.fsencode(child.name) == listing.name(7)
    assert listing.position(listing.name(7)) == 7
    assert [(n, c.key) for n, c in listing][:3] == [
        (os.fsencode(c.name), c.key) for c in list(node.iterdir())[:3]]


def test_a_dropped_listing_is_freed_without_the_collector(small_fixtures):
    """A listing (and its arrays) goes when its last reference does: nothing in it refers
    back to it (a cycle through its stat closure kept every listing the mount let go
    until a full collection: +65 MiB in the million-entry walk). Its children's stat
    still equals their nodes' attributes."""
    import gc

    fx = small_fixtures.volumes["system-p3"]
    root = volume_root(Volume(FileStream(fx.image)), "v", ("v",))
    node = root.child(fx.manifest["features"]["big_dir"]["path"].strip("/").split("/")[0])
    node.listing()  # warm: the volume's caches
    gc.collect()
    gc.disable()
    try:
        listing = node.listing()
        got = listing.stat(range(min(len(listing), 50)))
        assert got and all(got[i] == listing.node(i).attr() for i in got)
        del listing, got
        assert gc.collect() == 0   # nothing was left for the collector to find
    finally:
        gc.enable()


def _root_value(names: list[bytes], flags: int = 0, ref: int = 10) -> bytes:
    """An $INDEX_ROOT value holding one entry per UTF-16LE name (records 10, 11...: at the
    root, "$" names there are metadata files; no INDX records)."""
    entries = b""
    for i, raw in enumerate(names):
        key = struct.pack("<Q4QqqIIBB", 5, 1, 2, 3, 4, 4096, 10, flags, 0, len(raw) // 2, 1) + raw
        length = -(-(16 + len(key)) // 8) * 8
        entries += struct.pack("<QHHH2x", (1 << 48) | (ref + i), length, len(key), 0) + key
        entries += bytes(length - 16 - len(key))
    entries += struct.pack("<QHHH2x", 0, 16, 0, 2)
    return struct.pack("<IIIB3x", 0x30, 1, 4096, 1) + struct.pack("<IIIB3x", 16, 16 + len(entries),
                                                                  16 + len(entries), 0) + entries


@settings(max_examples=400, deadline=None)
@given(units=st.lists(st.lists(st.sampled_from([0, 0x2E, 0x2F, 0x41, 0x24, 0xE9, 0x800, 0xD800,
                                                0xDBFF, 0xDC00, 0xDFFF, 0xFFFF, 0x10, 0x7F]),
                               min_size=1, max_size=255), min_size=1, max_size=4),
       is_root=st.booleans())
def test_names_escape_as_names_py_does(units, is_root):
    """Unpaired surrogates, '/', NUL, '.', '..', '$' names at the root, names past 255 bytes:
    C's bytes are os.fsencode(names.from_raw(raw)), or C leaves the listing to the twin."""
    from ntfs_reader import names
    raws = [struct.pack(f"<{len(u)}H", *u) for u in units]
    listing = twins(_root_value(raws), None, None, 4096, is_root)
    want = [os.fsencode(names.from_raw(r)) for r in raws if not (is_root and r[:2] == b"$\0")]
    assert [listing.name(i) for i in range(len(listing))] == want


def _fill_both(ops, listing, base: int, size: int):
    """One readdirplus reply of ``size`` bytes at every start, built by the binding from
    the arrays (``fill_numbered``) and the Python way (an entry each: the table's complete
    attributes, else the stub); yields both buffers' entries."""
    from rpfs import _fusell
    from rpfs.fuse import KIND_MODES

    a = listing.arrays
    start = 0
    while start < len(listing):
        c = _fusell.DirBuffer(None, size)
        added = _fusell.fill_numbered(c, a.names, a.offsets, a.numbers, listing.kinds, start,
                                      len(listing), base, KIND_MODES, ops._stub_entry, ops._attrs)
        p = _fusell.DirBuffer(None, size)
        for i in range(start, len(listing)):
            ino = base | listing.number(i)
            e = ops._attrs.get(ino) or ops._stub(ino, listing.kind(i))
            if not _fusell.readdir_reply(p, listing.name(i), e, i + 1):
                break
        assert added == p.added and c.used == p.used
        yield c.entries(), p.entries()
        assert added > 0
        start += added


def check_readdir_twins(image, sizes=(4096, 1 << 17)) -> int:
    """Every directory of the volume listed through the mount's C reply builder and its
    Python way: the same entries, byte for byte in size, with half the children's complete
    attributes in the session's table (the others go as stubs)."""
    from rpfs.fuse import NUMBERED, ROOT_INODE, SLOT_SHIFT, Operations

    from rpfs.tree import Tree

    root = volume_root(Volume(FileStream(str(image))), "v", ("v",))
    ops = Operations(Tree(root))
    stack, n = [root], 0
    while stack:
        d = stack.pop()
        listing = d.listing()
        if not len(listing):
            continue
        slot = ops._slot_of(listing, ROOT_INODE)
        base = NUMBERED | slot << SLOT_SHIFT
        for i in range(0, len(listing), 2):
            node = listing.node(i)
            try:
                ops._new_entry(node, base | listing.number(i), node.attr())
            except RpfsError:
                pass
        for size in sizes:
            for c, p in _fill_both(ops, listing, base, size):
                assert [(name, view(a), off) for name, a, off in c] == \
                       [(name, view(a), off) for name, a, off in p]
        n += len(listing)
        for i in range(len(listing)):
            if listing.kind(i) == "dir" and len(stack) < 10_000:
                stack.append(listing.node(i))
    return n


def view(a) -> tuple:
    return (a.st_ino, a.st_mode, a.st_nlink, a.st_size, a.st_blocks, a.st_mtime_ns,
            a.st_atime_ns, a.st_ctime_ns, a.st_uid, a.st_gid, a.entry_timeout, a.attr_timeout)


@pytest.mark.parametrize("name", SMALL)
def test_readdir_from_arrays_equals_the_python_way(small_fixtures, name):
    assert check_readdir_twins(small_fixtures.volumes[name].image) > 0


def test_readdir_from_arrays_equals_the_python_way_on_hostile_names(hostile_fixtures):
    """Escaped '/', NUL, dots, surrogates, 255-byte names, 100,000 files in a folder."""
    for image in hostile_fixtures.volumes.values():
        check_readdir_twins(image, sizes=(4096,))


@settings(max_examples=300, deadline=None)
@given(names=st.lists(st.binary(min_size=0, max_size=40), max_size=12),
       cut=st.integers(0, 3), shift=st.integers(-3, 3), kinds=st.binary(max_size=14),
       start=st.integers(-2, 14), size=st.integers(0, 2000))
def test_readdir_from_arrays_never_trusts_its_arrays(names, cut, shift, kinds, start, size):
    """Arrays that disagree (offsets past the names, out of order, short arrays, kinds
    without a mode, names with NUL or '/'): a ValueError or entries that match what the
    arrays say, never a crash or a read outside them."""
    from array import array

    from rpfs import _fusell
    from rpfs.fuse import KIND_MODES, NUMBERED, Operations
    from rpfs.node import StaticDir
    from rpfs.tree import Tree

    blob = b"".join(names)
    offsets = array("I", [0])
    for n in names:
        offsets.append(max(0, offsets[-1] + len(n) + shift))
    offsets = offsets[:len(offsets) - cut] if cut else offsets
    numbers = array("Q", range(5, 5 + len(names)))
    kinds_a = array("B", [k % 5 for k in kinds])
    ops = Operations(Tree(StaticDir("", ("t",), list)))
    buf = _fusell.DirBuffer(None, size)
    try:
        added = _fusell.fill_numbered(buf, blob, offsets, numbers, kinds_a, start, len(names),
                                      NUMBERED, KIND_MODES, ops._stub_entry, ops._attrs)
    except ValueError:
        return
    got = buf.entries()
    assert len(got) == added
    first = max(start, 0)
    for k, (name, a, off) in enumerate(got):
        i = first + k
        assert name == blob[offsets[i]:offsets[i + 1]] and off == i + 1
        assert a.st_ino == NUMBERED | numbers[i] and a.st_mode == KIND_MODES[kinds_a[i]]
