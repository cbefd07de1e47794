"""A 50,000-entry directory (fixture set "small", /bigdir on system-p3): enumeration speed,
O(log n) lookups counted on the stream, and concurrent readers from many threads."""

from __future__ import annotations

import hashlib
import math
import random
import threading

import pytest

from ntfs_reader import Volume
from streams.stream import FileStream
from tests.helpers.streams import CountingStream


@pytest.fixture(scope="module")
def bigdir(small_fixtures):
    fx = small_fixtures.volumes["system-p3"]
    feat = fx.manifest["features"]["big_dir"]
    return fx, feat["path"], feat["entries"]


def test_enumerate_50000_reads_each_index_node_once(bigdir):
    """Enumeration walks the B+tree once: every INDX node read once, nothing else re-read."""
    fx, path, count = bigdir
    stream = CountingStream(FileStream(fx.image))
    d = Volume(stream).lookup(path)
    index = d._index()
    before_nodes, before_reads = index.node_reads, stream.reads
    names = [e.name for e in d.iterdir()]
    assert len(names) == count == 50_000
    assert names == sorted(names, key=str.upper)  # index (collation) order
    nodes = index.node_reads - before_nodes
    assert nodes <= index.allocation.size // index.block_size, nodes  # no node twice
    assert stream.reads - before_reads <= nodes + 4, (stream.reads - before_reads, nodes)


def test_lookup_reads_log_n_index_records(bigdir):
    fx, path, count = bigdir
    names = [p.rsplit("/", 1)[1] for p in fx.manifest["entries"] if p.startswith(path + "/")]
    for name in random.Random(3).sample(names, 5) + [names[0], names[-1]]:
        stream = CountingStream(FileStream(fx.image))
        vol = Volume(stream)
        d = vol.lookup(path)
        index = d._index()
        before = stream.reads
        e = d.child(name.swapcase())
        assert e.name == name
        depth_bound = 2 * math.ceil(math.log(count, 16))  # >= 16 entries per 4 KiB node
        assert 1 <= index.node_reads <= depth_bound, index.node_reads
        assert stream.reads - before <= index.node_reads + 1  # +1: $UpCase is already read


def test_concurrent_readers_agree(small_fixtures):
    """Eight threads share one Volume (and its caches) and read the same files."""
    fx = small_fixtures.volumes["system-p3"]
    vol = Volume(FileStream(fx.image))
    files = [(p, v) for p, v in fx.manifest["entries"].items()
             if v["type"] == "file" and v["size"] and not p.startswith("/bigdir")]
    files = random.Random(4).sample(files, min(60, len(files)))
    errors = []

    def worker(seed):
        r = random.Random(seed)
        try:
            for p, v in r.sample(files, len(files)):
                s = vol.lookup(p).open()
                h = hashlib.sha256()
                pos = 0
                while pos < s.size:
                    n = r.randint(1, 300_000)
                    h.update(s.read(pos, n))
                    pos += n
                assert h.hexdigest() == v["sha256"], p
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_paged_readdir_resumes_by_seeking(bigdir):
    """iterdir(after=name) continues where a page ended, reading O(log n) nodes to get there."""
    fx, path, count = bigdir
    vol = Volume(FileStream(fx.image))
    d = vol.lookup(path)
    full = [e.name for e in d.iterdir()]
    index = d._index()
    got, after, pages = [], None, 0
    while True:
        page = []
        before = index.node_reads
        it = d.iterdir(after=after)
        for e in it:
            page.append(e.name)
            if len(page) == 1000:
                break
        pages += 1
        if not page:
            break
        got += page
        after = page[-1]
        vol.index_cache.clear()  # count real reads: nothing cached between pages
        assert index.node_reads - before <= 1000 // 16 + 2 * 8, index.node_reads - before
    assert got == full and pages == count // 1000 + 1
    # resuming after a name that is not there (deleted meanwhile) continues after its place
    assert next(d.iterdir(after="entry-012345.txx")).name == "entry-012346.txt"
    # names equal but for case order by their UTF-16 units (upper case first)
    assert next(d.iterdir(after="ENTRY-012345.TXT")).name == "entry-012345.txt"
