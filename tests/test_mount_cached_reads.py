"""A cold ``cp -r`` of many small files through a real mount of a repository: a READ whose
bytes are decoded in memory already is answered on the loop thread, before the general
dispatch and with no worker hand-off (``rpfs.fuse.Operations._read_from_memory``), and the
chain of layers below the volume (partition, VHDX, stored file) is followed once per
window of the volume, not once per file (``streams.stream.Spans``). Counted in the serving
process (tests/helpers/countmount.py), never timed; every byte is checked against the
files ntfs-3g wrote.

The volume: ``mftfrag`` (tests/helpers/ntfs_images.py, mkntfs + ntfs-3g), 1,531 files of up
to 6,000 bytes, neighbours on the volume, made a dynamic VHDX by qemu-img and backed up with
``rpfs backup``: several files share each 64 KiB frame of the store, so only the first READ
of each frame has something to decode."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from streams.stream import Spans
from tests.helpers.cli import image_repo
from tests.helpers.countmount import counted_mount
from tests.helpers.ntfs_images import _rand, mftfrag_image
from tests.helpers.streams import ShiftedLayer, ViewBytes

needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("mkntfs", "ntfs-3g", "qemu-img"))
    or not os.path.exists("/dev/fuse"),
    reason="needs mkntfs and ntfs-3g (FUSE)")


@pytest.fixture(scope="module")
def frag_repo(tmp_path_factory):
    """(repository, the names in ``fill``): the mftfrag volume as a VM's only disk."""
    image, manifest = mftfrag_image()
    return image_repo(image, tmp_path_factory.mktemp("cachedreads"), "frag"), manifest["fill_left"]


@needs_tools
def test_cp_r_answers_reads_of_decoded_frames_on_the_loop(frag_repo, tmp_path):
    repo, names = frag_repo
    out = tmp_path / "out"
    with counted_mount(repo, tmp_path) as (mp, report):
        fill = mp / "frag" / "latest" / "volumes" / "frag-p0" / "fill"
        subprocess.run(["cp", "-r", str(fill), str(out)], check=True)
    assert sorted(os.listdir(out)) == sorted(names) and len(names) == 1531
    whole = 0
    for name in names:   # the files written as the volume filled up are cut short
        got = (out / name).read_bytes()
        assert got and got == _rand(6000, int(name))[:len(got)], name
        whole += len(got) == 6000
    assert whole >= 1500
    counts = json.loads(report.read_text())
    reads = counts["binding"]["15"][1]   # READs handed to Python (one per file)
    assert reads >= len(names)
    # a worker per READ before (1,531 and more); now one per frame first touched, the
    # directory's plain_files and the listing: about 300
    assert counts["worker_jobs"] < reads // 2, counts
    # and such a READ is answered before the general dispatch (no coroutine of its own)
    assert counts["answers"] < reads // 2, counts
    # the layers below the volume were followed for every READ (bottom of each file's
    # range); now once per MiB of the volume the files touch (24 at most)
    assert counts["bottom_walks"] < 100, counts


def test_the_adapter_knows_the_plain_statuses():
    from ntfs_reader import plain
    from rpfs import fuse

    assert (fuse.BYTES, fuse.VOLUME) == (plain.BYTES, plain.VOLUME)


def test_spans_follow_the_layers_once_per_window():
    data = bytes(range(256)) * (64 << 10)   # 16 MiB
    layer = ShiftedLayer(ViewBytes(data), 4096)
    spans = Spans(layer, window=1 << 20)
    assert spans.cached_views(100, 10) is None   # nothing followed yet: never walks
    assert layer.asked == 0
    offsets = range(0, 8 << 20, 5000)
    for off in offsets:
        assert b"".join(spans.read_buffers(off, 3000)) == data[4096 + off:4096 + off + 3000]
    across = sum((off + 2999) >> 20 != off >> 20 for off in offsets)
    walks = spans.walks
    # one walk per window, and one for each read across a window edge (the general way);
    # each read walked before
    assert walks == 8 and 0 < across < 8 and layer.asked == walks + across
    for off in range(0, 8 << 20, 7000):
        got = spans.cached_views(off, 1000)
        if (off + 999) >> 20 == off >> 20:
            assert b"".join(got) == data[4096 + off:4096 + off + 1000]
        else:
            assert got is None   # across a window edge: the general way
    assert spans.walks == walks


def test_spans_remember_a_window_that_is_not_one_piece():
    data = bytes(range(256)) * (16 << 10)   # 4 MiB
    layer = ShiftedLayer(ViewBytes(data), 0, edge=(1 << 20) + 12345)
    spans = Spans(layer, window=1 << 20)
    for _ in range(3):
        assert b"".join(spans.read_buffers((1 << 20) + 100, 50)) == data[(1 << 20) + 100:(1 << 20) + 150]
        assert spans.cached_views((1 << 20) + 100, 50) is None
    assert spans.walks == 1   # the window's walk is not repeated; its reads go the general way


@needs_tools
def test_a_listed_file_s_attributes_take_few_python_calls(frag_repo):
    """``ls -l`` and ``cp -r`` get every listed file's attributes in readdirplus: what one
    costs is counted in Python calls (sys.setprofile), never timed. A plain file's come
    from the C parser's summary of its record (``Entry.quick_stat``), its four times
    worked out inline, and the Attr made from positions, not from a dict of keywords (24
    calls before, 22 then; callgrind: 46.7 k -> 39.4 k instructions per listed file). The
    mount asks a listing for a batch of them (``Listing.stat``): no node, no Entry per
    file, and each $MFT block is looked up once per run of records in it."""
    import sys

    from rpfs.source import open_source

    repo, names = frag_repo
    fill = open_source(repo).resolve("/frag/latest/volumes/frag-p0/fill")
    listing = fill.listing()
    listing.node(0).attr()   # the $MFT block read and checked: not what is counted
    calls = []

    def count(frame, event, arg):
        if event == "call":
            calls.append(frame.f_code.co_name)

    sys.setprofile(count)
    try:
        a = listing.node(1).attr()
    finally:
        sys.setprofile(None)
    assert a.kind == "file" and 0 < a.size <= 6000 and a.mtime_ns > 0
    assert len(calls) <= 24, calls   # the node's own path (getattr of one file)

    # readdirplus's path (``Listing.stat``): no node made, each $MFT block looked up once
    def counted(indexes):
        calls.clear()
        sys.setprofile(count)
        try:
            got = listing.stat(indexes)
        finally:
            sys.setprofile(None)
        return got, len(calls)

    one, base = counted([2])
    many, more = counted(list(range(2, 12)))
    assert one[2] == many[2] == listing.node(2).attr()
    assert all(many[i] == listing.node(i).attr() for i in range(2, 12))
    assert (more - base) / 9 <= 7, calls   # per further file (the node's path: 24)
