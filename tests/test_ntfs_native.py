"""The C metadata parser (ntfs_reader/_ntfsparse.c) against its Python twins on real
volumes: every NTFS volume of the "small" fixture set and the reader's feature images give
the same MFT records, the same tree (names, kinds, sizes, times, links, streams, link
targets), the same namespace nodes' attributes (and listings, as a mount builds them) and the same metadata-index rows whichever
parser runs. tests/fuzz/targets.py
(ntfs_native) does the same on hostile input."""

from __future__ import annotations

import os

import pytest

from ntfs_reader import Volume, native
from streams.errors import RpfsError
from rpfs.index.scan import MftScan
from rpfs.ntfs_nodes import volume_root
from streams.stream import FileStream
from tests.helpers.ntfs_images import features_image, mftfrag_image

SMALL = ["system-p3", "system-p4", "data-p1", "data-p2", "data-p5", "data-p6", "bare-p0",
         "sector4k-p0"] + [f"clusters-p{i}" for i in range(1, 9)]


def _safe(fn):
    try:
        return fn()
    except RpfsError as e:
        return ("error", type(e).__name__, str(e))


def describe(image) -> dict:
    """Everything the nodes and the metadata index take from a volume."""
    vol = Volume(FileStream(str(image)))
    records = [_safe(lambda n=n: vol.record(n)) for n in range(vol.mft_records)]
    numbers = list(range(-1, vol.mft_records + 2)) + [3, 0, vol.mft_records - 1]
    assert vol.stat_summaries(numbers) == [vol.stat_summary(n) for n in numbers]
    tree = []
    for path, e in vol.walk("/"):
        tree.append((path, e.ref, e.sequence, _safe(lambda e=e: (
            e.name, e.ntfs_name, e.short_name, e.index_kind, e.is_dir, e.is_symlink, e.size,
            e.allocated_size, e.times, e.attributes, e.nlink, e.hard_links, e.file_names,
            e.streams(), e.reparse_tag, e.readlink() if e.is_symlink else None))))
    nodes, quick = [], 0
    stack = [("", volume_root(Volume(FileStream(str(image))), "v", ("v",)))]
    while stack:   # the nodes' attributes: Entry.quick_stat (C) or the Entry properties
        path, node = stack.pop()
        # a mount's listing (one pass over the index) names the same children, same kinds
        listed = [(name, c.key, c.kind) for name, c in node.listing()]
        assert listed == [(os.fsencode(c.name), c.key, c.kind) for c in node.iterdir()], path
        # ... and its batch of attributes without nodes (Listing.stat) is the nodes' own
        listing = node.listing()
        stat = listing.stat(range(len(listing)))
        assert all(stat[i] == listing.node(i).attr() for i in stat), path
        quick += len(stat)
        for child in node.iterdir():
            p = f"{path}/{child.name}"
            nodes.append((p, child.kind, _safe(child.attr)))
            quick += child.entry.quick_stat() is not None
            if child.kind == "dir":
                stack.append((p, child))
    scan = MftScan(vol, None)
    rows = sorted(scan.records(), key=lambda r: r[0])
    return {"records": records, "tree": tree, "nodes": nodes, "index": rows,
            "hashes": scan.hashes, "quick": quick}


def both(image) -> tuple[dict, dict]:
    assert native.available(), "ntfs_reader._ntfsparse missing: run tools/setup.sh"
    before = native.use(True)
    try:
        c = describe(image)
        native.use(False)
        python = describe(image)
    finally:
        native.use(before)
    return c, python


def _compare(c: dict, python: dict) -> None:
    assert len(c["tree"]) == len(python["tree"]) and len(c["records"]) > 16
    assert c["quick"] > len(c["nodes"]) // 2 and python["quick"] == 0   # each path ran
    for key in ("records", "tree", "nodes", "index", "hashes"):
        for i, (a, b) in enumerate(zip(c[key], python[key])):
            assert a == b, f"{key} #{i}: C {a!r:.500} != Python {b!r:.500}"
        assert len(c[key]) == len(python[key])


@pytest.mark.parametrize("name", SMALL)
def test_fixture_volumes_identical(small_fixtures, name):
    _compare(*both(small_fixtures.volumes[name].image))


@pytest.mark.parametrize("build", [features_image, mftfrag_image])
def test_feature_images_identical(build):
    image, _ = build()
    _compare(*both(image))


def test_switching_really_switches():
    """use(False) leaves no C in the path (else the comparisons above compare C with C)."""
    from ntfs_reader import record
    calls = []
    real = native._module

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    before = native.use(False)
    try:
        native.parser = Spy()
        data = bytearray(1024)
        with pytest.raises(RpfsError):
            record.parse_record(bytes(data), 0, "t", 0)
        assert calls == ["parse_record"]
        native.use(False)
        calls.clear()
        with pytest.raises(RpfsError):
            record.parse_record(bytes(data), 0, "t", 0)
        assert calls == []
    finally:
        native.use(before)


def _opened(stream) -> tuple:
    """What a file's stream is: its class, size, name, runs and valid length, and bytes."""
    import hashlib
    return (type(stream).__name__, stream.size, stream.name, getattr(stream, "runs", None),
            getattr(stream, "init", None),
            hashlib.sha256(stream.read(0, min(stream.size, 1 << 20))).hexdigest())


def _plain_opens(image) -> tuple[int, int]:
    """Every file opened by the plain path (record.data_attribute) against the whole-record
    path; (files, opened by the plain path)."""
    from ntfs_reader.entry import Entry
    vol = Volume(FileStream(str(image)))
    files = plain = 0
    for path, e in vol.walk("/"):
        if _safe(lambda e=e: e.is_dir or e.is_symlink) is not False:
            continue
        files += 1
        fast = Entry(vol, e.ref, None, e.sequence)
        got = _safe(lambda: _opened(fast.open()))
        whole = Entry(vol, e.ref, None, e.sequence)
        whole._attrs()       # a parsed record: open() takes the whole-record path
        assert _safe(lambda: _opened(whole.open())) == got, path
        plain += Entry(vol, e.ref, None, e.sequence)._open_plain() is not None
    return files, plain


@pytest.mark.parametrize("parser", ["C", "Python"])
@pytest.mark.parametrize("build", [features_image, mftfrag_image])
def test_plain_open_is_the_whole_record_open(build, parser):
    """Entry.open of a plain file reads only its unnamed $DATA (record.data_attribute, in C
    or its twin): the same stream as the whole-record path, and taken for most files (a
    count: the feature image's reparse points, compressed and encrypted files, named
    streams' owners with attribute lists, go the whole way)."""
    image, _ = build()
    before = native.use(parser == "C")
    try:
        files, plain = _plain_opens(image)
    finally:
        native.use(before)
    assert files > 20 and plain > files // 2, (files, plain)


@pytest.mark.parametrize("name", ["system-p3", "data-p1"])
def test_plain_open_on_fixture_volumes(small_fixtures, name):
    files, plain = _plain_opens(small_fixtures.volumes[name].image)
    assert plain > files // 2, (files, plain)
