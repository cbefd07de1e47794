"""Memory the mount keeps per NTFS entry, counted in bytes Python allocated (tracemalloc),
never as RSS: the 1,000,000-entry walk (tools/bench_million.py) peaks where the caches of
nodes, attributes and listings fill, so what one entry costs in them is what to guard.

The byte counts list the fixture's 50,000-entry directory, the NTFS reader's own caches
(parsed records, MFT blocks) filled first by a pass that is not counted, so only what is
kept per entry is; the walk counts the nodes a listing keeps."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from rpfs import _fusell
from rpfs.fuse import ROOT_INODE, Operations
from rpfs.fuse_loop import run_inline
from rpfs.source import open_source


@pytest.fixture(scope="module")
def bigdir(small_fixtures):
    tree = open_source(small_fixtures.disks["system"].images["vhdx-dynamic-32M"])
    vol = next(n for n in tree.resolve("/volumes").iterdir() if n.name.endswith("-p3"))
    return tree, vol.child("bigdir")


def held(fn) -> int:
    """Bytes still allocated after ``fn()`` (its result kept until measured)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = fn()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del result
    return after - before


def test_a_listed_node_with_its_attributes_is_small(bigdir):
    """A node made from a listing, its attributes read: 597 bytes each before NTFS nodes
    made their key when asked and equal times shared one int; 417 after."""
    _, big = bigdir
    listing = big.listing()
    n = 2000
    for i in range(n):
        listing.node(i).attr()          # the reader's caches, and the listing's node list

    def nodes():
        kept = [None] * n
        for i in range(n):
            node = kept[i] = listing._make(i)
            node.attr()
        return kept

    per_node = (held(nodes) - 8 * n) / n
    assert per_node < 520, per_node


def test_ls_l_of_a_big_directory_keeps_little_per_entry(bigdir):
    """``ls -l`` of 50,000 entries through the adapter (names first, then a getattr each,
    as the kernel asks): what the mount then holds, listing, nodes, attributes and their
    caches, per entry. 1,588 bytes before the live nodes were bounded at 16,384 and nodes
    slimmed; 1,312 after."""
    tree, big = bigdir

    async def ls_l(ops: Operations, ino: int) -> int:
        fh, _keep = await ops.opendir(ino, None)
        sent = []
        try:
            while True:
                buf = _fusell.DirBuffer(None, 1 << 20)
                await ops.readdir(fh, len(sent), buf)
                got = buf.entries()
                if not got:
                    break
                sent += [attr.st_ino for _, attr, _ in got]
        finally:
            await ops.releasedir(fh)
        for child in sent:
            await ops.getattr(child, None)
        return len(sent)

    def listed():
        ops = Operations(tree)
        count = run_inline(ls_l(ops, ops._inode(big, ROOT_INODE)))
        return ops, count

    ops, count = listed()           # the reader's caches
    assert count == 50_000
    del ops
    per_entry = held(listed) / count
    assert per_entry < 1450, per_entry


def test_a_walked_listing_keeps_no_node_per_entry(bigdir):
    """A directory under ``NAMES_ONLY_FROM`` entries is listed with complete attributes, as
    a walk (``find``, ``du``) reads it: once sent, a child's node is let go (the listing
    can make it again from its arrays), so the cached listings of a walk hold arrays, not
    nodes (System32's 2,002 entries: 2,002 nodes kept before, none now)."""
    tree, _big = bigdir
    ops = Operations(tree)
    vol = next(n for n in tree.resolve("/volumes").iterdir() if n.name.endswith("-p3"))
    folder = vol.child("Windows").child("System32")
    ino = ops._inode(folder, ROOT_INODE)

    async def walk_listing() -> list:
        fh, _keep = await ops.opendir(ino, None)
        sent = []
        try:
            while True:
                buf = _fusell.DirBuffer(None, 4096)   # the kernel's readdirplus buffer
                await ops.readdir(fh, len(sent), buf)
                got = buf.entries()
                if not got:
                    break
                sent += [attr for _, attr, _ in got]
        finally:
            await ops.releasedir(fh)
        return sent

    sent = run_inline(walk_listing())
    assert len({a.st_ino for a in sent}) == 2002
    assert all(a.attr_timeout for a in sent)        # complete attributes, no getattr needed
    entries = ops._listings.get(ino).entries
    kept = sum(entries.made(i) is not None for i in range(len(entries)))
    assert kept < 100, kept
    # asked again (a lookup of a listed name), the node is made again with what was sent
    name = entries.name(1000)
    e = run_inline(ops.lookup(ino, name, None))
    assert e.st_ino == sent[1000].st_ino and e.st_size == sent[1000].st_size
