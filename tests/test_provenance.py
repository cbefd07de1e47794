"""Where a range's bytes come from, asked of the streams themselves (``Stream.pieces``): a
file inside an NTFS volume inside a stored VHDX resolves, layer by layer, to the
repository's chunks, and those chunks read back are the file's bytes. A stream that cannot
tell (one that transforms its bytes, or a chain too deep) makes the answer None."""

from __future__ import annotations

import shutil

from rpfs.index.provenance import pieces
from rpfs.source import open_source
from streams.stream import MAX_DEPTH, BytesStream, SliceStream, ZeroStream
from tests.helpers.cli import rpfs


def _files(node, depth=0):
    for child in node.iterdir():
        if child.kind == "file":
            yield child
        elif child.kind == "dir" and depth < 6 and not child.name.startswith("$"):
            yield from _files(child, depth + 1)


def _bytes_of(repo, found) -> bytes:
    locs = repo.resolve([p[1] for p in found if p[0] == "C"])
    out = []
    for p in found:
        if p[0] == "Z" or p[1] == 0:           # known zeros / an all-zero chunk
            out.append(bytes(p[-1]))
        else:
            out.append(repo.loader.get(locs[p[1]])[p[2]:p[2] + p[3]])
    return b"".join(out)


def test_a_files_pieces_in_a_repository_are_its_bytes(tmp_path, small_fixtures):
    repo = tmp_path / "repo"
    rpfs("init", repo)
    rpfs("backup", repo, small_fixtures.vm_states[0], "--vm", "web01", "--no-index")
    with open_source(repo) as tree:
        vols = [v for v in tree.resolve("/web01/latest/volumes").iterdir() if v.kind == "dir"]
        assert vols
        files = sorted((f for v in vols for f in _files(v)), key=lambda f: f.attr().size)
        big = files[-1]
        stream = big.open()
        assert stream.size > 64 << 10    # non-resident: its runs map onto the volume
        found = pieces(stream, 0, stream.size)
        assert found is not None, f"{big.name}: some layer below it could not say"
        assert any(p[0] == "C" for p in found)
        assert sum(p[-1] for p in found) == stream.size
        assert _bytes_of(tree.repo, found) == stream.read(0, stream.size)
        # a range in the middle, across chunk boundaries
        off, n = stream.size // 3, stream.size // 3
        assert _bytes_of(tree.repo, pieces(stream, off, n)) == stream.read(off, n)
        # the disk itself (the VHDX block map over the stored file)
        disk = tree.resolve("/web01/latest/disks").iterdir().__next__().open()
        assert _bytes_of(tree.repo, pieces(disk, 0, 1 << 20)) == disk.read(0, 1 << 20)


def test_a_vhd_disks_pieces_are_its_bytes(tmp_path, small_fixtures):
    """The same through a dynamic VHD (the fixture set's, made by rpfs's own writer)."""
    image = small_fixtures.disks["data"].images["vhd-dynamic"]   # NTFS volumes only
    vm = tmp_path / "vm"
    vm.mkdir()
    shutil.copy(image, vm / "disk.vhd")
    repo = tmp_path / "repo"
    rpfs("init", repo)
    rpfs("backup", repo, vm, "--vm", "old01", "--no-index")
    with open_source(repo) as tree:
        disk = tree.resolve("/old01/latest/disks/disk.raw").open()
        for off, n in ((0, 1 << 20), (disk.size // 2 - 4096, 3 << 20)):
            found = pieces(disk, off, n)
            assert found is not None and sum(p[-1] for p in found) == n
            assert any(p[0] == "C" for p in found) or off
            assert _bytes_of(tree.repo, found) == disk.read(off, n)
        vols = [v for v in tree.resolve("/old01/latest/volumes").iterdir() if v.kind == "dir"]
        big = max((f for v in vols for f in _files(v)), key=lambda f: f.attr().size)
        stream = big.open()
        assert stream.size > 64 << 10    # non-resident
        found = pieces(stream, 0, stream.size)
        assert found is not None
        assert _bytes_of(tree.repo, found) == stream.read(0, stream.size)


def test_a_stream_that_cannot_tell_makes_the_answer_none():
    zeros = ZeroStream(1 << 20)
    assert pieces(SliceStream(zeros, 4096, 8192), 0, 8192) == [("Z", 8192)]
    assert pieces(SliceStream(BytesStream(b"x" * 100), 10, 50), 0, 50) is None   # in memory
    assert pieces(zeros, (1 << 20) - 10, 20) is None                            # past the end
    deep = zeros
    for _ in range(MAX_DEPTH + 1):
        deep = SliceStream(deep, 0, deep.size)
    assert pieces(deep, 0, 10) is None
