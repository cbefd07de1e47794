"""Copy-out never writes outside its destination, whatever names and links a tree holds."""

import os

import pytest
from hypothesis import given, settings, strategies as st

from rpfs.restore import restore, safe_name
from streams.stream import BytesStream
from rpfs.tree import StaticDir, StreamFile, Symlink


def file(name, data, key=None, mtime=1_500_000_000 * 10**9):
    return StreamFile(name, key or ("f", name), len(data), lambda: BytesStream(data), mtime)


def tree(name, children):
    return StaticDir(name, ("d", name), lambda: children)


def all_paths(root):
    out = set()
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


@pytest.mark.allow_error_log  # restore logs each file it refuses
def test_hostile_names_stay_inside(tmp_path):
    dest = tmp_path / "dest"
    outside = tmp_path / "outside"
    outside.mkdir()
    hostile = tree("vol", [
        file("../../escape", b"x"),
        file("..", b"dotdot"),
        file(".", b"dot"),
        file("a/b", b"slash"),
        file("nul\0byte", b"nul"),
        Symlink("link", ("l",), str(outside)),
        file("n" * 300, b"long"),
    ])
    result = restore(hostile, str(dest))
    assert not result.errors
    assert os.listdir(outside) == []
    names = set(os.listdir(dest / "vol"))
    assert "..%2F..%2Fescape" in names and "%2E%2E" in names and "%2E" in names
    assert "a%2Fb" in names and "nul%00byte" in names
    assert any(n.startswith("n" * 100) and len(n.encode()) <= 255 for n in names)
    assert os.path.islink(dest / "vol" / "link")
    # A second restore whose tree has a directory where the symlink now is: the link is
    # never followed, even with --overwrite; that one object fails with one error line.
    second = tree("vol", [tree("link", [file("through-link", b"y")]), file("link2", b"z")])
    result = restore(second, str(dest), overwrite=True)
    assert len(result.errors) == 1 and "link" in result.errors[0]
    assert not (outside / "through-link").exists()
    assert (dest / "vol" / "link2").read_bytes() == b"z"


def test_files_times_sparse_and_hard_links(tmp_path):
    data = b"hello" + bytes(3 << 20) + b"world"
    shared = ("inode", 7)

    class Linked(StreamFile):
        def attr(self):
            a = super().attr()
            a.nlink = 2
            return a

    root = tree("r", [
        file("big", data),
        Linked("h1", shared, 3, lambda: BytesStream(b"abc")),
        Linked("h2", shared, 3, lambda: BytesStream(b"abc")),
        Symlink("rel", ("s",), "big"),
    ])
    result = restore(root, str(tmp_path))
    out = tmp_path / "r"
    assert (out / "big").read_bytes() == data
    assert os.stat(out / "big").st_mtime_ns == 1_500_000_000 * 10**9
    assert os.stat(out / "h1").st_ino == os.stat(out / "h2").st_ino
    assert os.readlink(out / "rel") == "big"
    assert result.files == 2 and result.hardlinks == 1 and result.symlinks == 1
    assert not result.errors


@pytest.mark.allow_error_log  # restore logs each file it refuses
def test_existing_files_are_not_replaced_without_overwrite(tmp_path):
    root = tree("r", [file("a", b"new")])
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "a").write_bytes(b"old")
    result = restore(root, str(tmp_path))
    assert (tmp_path / "r" / "a").read_bytes() == b"old" and result.errors
    result = restore(root, str(tmp_path), overwrite=True)
    assert (tmp_path / "r" / "a").read_bytes() == b"new" and not result.errors


def test_dry_run_writes_nothing(tmp_path):
    root = tree("r", [file("a", b"123"), tree("sub", [file("b", b"45")])])
    result = restore(root, str(tmp_path / "d"), dry_run=True)
    assert not (tmp_path / "d").exists()
    assert result.files == 2 and result.bytes == 5
    assert "r/sub/b" in result.planned


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=300))
def test_safe_name_is_one_component(name):
    s = safe_name(name)
    assert s not in ("", ".", "..") and "/" not in s and "\0" not in s
    assert len(os.fsencode(s) if _enc(s) else s.encode("utf-8", "surrogatepass")) <= 255


def _enc(s):
    try:
        os.fsencode(s)
        return True
    except UnicodeEncodeError:
        return False


@pytest.mark.allow_error_log  # the damaged files are reported as they are met
@pytest.mark.parametrize("build", ["writers", "older-build"])
def test_many_files_through_the_pool_keep_bytes_times_and_links(tmp_path, monkeypatch, build):
    """Files are written by worker threads: every byte, time and link must still be right,
    and a directory's time is set after its files are written. Also with a build of
    rpfs._writeout older than its Writer (write_files only: the pool writes the windows)."""
    from streams.errors import IntegrityError
    from rpfs import restore as restore_module
    from rpfs.tree import BrokenNode

    if build == "older-build":
        real = restore_module._writeout
        assert real is not None, "rpfs._writeout not built: run tools/setup.sh"

        class Older:
            STAGE_OPEN, STAGE_TIMES, write_files = real.STAGE_OPEN, real.STAGE_TIMES, real.write_files
        monkeypatch.setattr(restore_module, "_writeout", Older)

    class Linked(StreamFile):
        def attr(self):
            a = super().attr()
            a.nlink = 3
            return a

    dir_mtime = 1_400_000_000 * 10**9
    dirs, want = [], {}
    for d in range(8):
        children = []
        for i in range(60):
            data = os.urandom(i * 37 % 5000)
            name = f"f{i}"
            children.append(file(name, data, key=("f", d, i), mtime=(1_500_000_000 + i) * 10**9))
            want[f"d{d}/{name}"] = (data, (1_500_000_000 + i) * 10**9)
        children.append(Linked("link", ("shared",), 3, lambda: BytesStream(b"abc")))
        children.append(BrokenNode("bad", ("b", d), IntegrityError("chunk fails its hash check")))
        dirs.append(StaticDir(f"d{d}", ("d", d), lambda c=children: c, dir_mtime))
    result = restore(tree("r", dirs), str(tmp_path))
    out = tmp_path / "r"
    for rel, (data, mtime) in want.items():
        assert (out / rel).read_bytes() == data
        assert os.stat(out / rel).st_mtime_ns == mtime
    assert len({os.stat(out / f"d{d}" / "link").st_ino for d in range(8)}) == 1
    assert result.files == 8 * 60 + 1 and result.hardlinks == 7
    assert len(result.errors) == 8 and all("hash check" in e for e in result.errors)
    assert not any((out / f"d{d}" / "bad").exists() for d in range(8))   # no empty file left
    assert all(os.stat(out / f"d{d}").st_mtime_ns == dir_mtime for d in range(8))


def test_modes_and_sizes_whichever_way_the_file_is_made(tmp_path):
    """A file is created with its final mode when the umask leaves it whole, else chmod'ed
    after: either way the mode is the image's exactly; its size is right with or without a
    trailing hole (ftruncate is skipped only when the last byte was written)."""
    from rpfs.restore import Restorer, current_umask

    class Moded(StreamFile):
        def __init__(self, name, mode, stream):
            super().__init__(name, ("m", name), stream.size, lambda: stream, 10**18)
            self.mode = mode

        def attr(self):
            a = super().attr()
            a.posix_mode = 0o100000 | self.mode
            return a

    class TrailingHole(BytesStream):
        def _extents(self, offset, end):
            from streams.stream import DATA, ZERO, Extent
            yield Extent(0, 4, DATA)
            yield Extent(4, self.size - 4, ZERO)

    old = os.umask(0o022)
    try:
        assert current_umask() == 0o022
        modes = {"plain": 0o644, "private": 0o600, "group-write": 0o664, "setgid": 0o2755,
                 "readonly": 0o444}
        children = [Moded(n, m, BytesStream(b"x" * 10)) for n, m in modes.items()]
        children += [Moded("hole", 0o640, TrailingHole(b"abcd" + bytes(8188))),
                     Moded("empty", 0o644, BytesStream(b""))]
        r = Restorer(str(tmp_path))
        result = r.run(tree("r", children))
        r.close()
    finally:
        os.umask(old)
    out = tmp_path / "r"
    assert not result.errors
    for name, mode in modes.items():
        assert os.stat(out / name).st_mode & 0o7777 == mode, name
        assert (out / name).read_bytes() == b"x" * 10
    assert (out / "hole").read_bytes() == b"abcd" + bytes(8188)
    assert os.stat(out / "hole").st_blocks * 512 < 8192      # the hole stayed a hole
    assert os.stat(out / "empty").st_size == 0


def test_a_restore_command_of_its_own_collects_young_objects_rarely(monkeypatch):
    """``rpfs.cli.few_collections`` (around cmd_restore's restore): the young generation's
    threshold raised while a restore runs in a process of its own, put back after, and
    left alone when main() runs inside another program (a test)."""
    import gc

    import rpfs.cli

    before = gc.get_threshold()
    with rpfs.cli.few_collections():
        assert gc.get_threshold() == before
    monkeypatch.setattr(rpfs.cli, "_own_process", True)
    with rpfs.cli.few_collections():
        assert gc.get_threshold()[0] >= 100_000 and gc.get_threshold()[1:] == before[1:]
    assert gc.get_threshold() == before
