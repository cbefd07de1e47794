"""rpfs._writeout, restore's batch writer: every file it makes is made the way restore
promises (O_EXCL|O_NOFOLLOW at its directory's fd, one name component, whole bytes, times),
and what it cannot make is reported per file, never written elsewhere."""

import errno
import os

import pytest

from rpfs import restore as restore_module

writeout = restore_module._writeout


@pytest.fixture
def dirfd(tmp_path):
    assert writeout is not None, "rpfs._writeout not built: run tools/setup.sh"
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    yield fd
    os.close(fd)


def test_files_get_their_bytes_mode_and_times(tmp_path, dirfd):
    window = bytearray(os.urandom(10000))
    view = memoryview(window)
    failed = writeout.write_files([
        (dirfd, b"a", 0o644, view[100:4196], (1_600_000_000_123_456_789, 1_500_000_000 * 10**9)),
        (dirfd, b"empty", 0o600, None, None),
        (dirfd, b"old", 0o640, b"x", (-1, -10**9 - 5)),      # before 1970
    ])
    assert failed == []
    st = os.stat(tmp_path / "a")      # before reading it (that may move atime)
    assert st.st_mtime_ns == 1_500_000_000 * 10**9 and st.st_atime_ns == 1_600_000_000_123_456_789
    assert st.st_mode & 0o7777 == 0o644 & ~current_umask()
    assert os.stat(tmp_path / "old").st_mtime_ns == -10**9 - 5
    assert os.stat(tmp_path / "old").st_atime_ns == -1
    assert (tmp_path / "a").read_bytes() == bytes(window[100:4196])
    assert (tmp_path / "empty").read_bytes() == b""


def current_umask():
    return restore_module.current_umask()


def test_existing_names_and_links_are_never_written_through(tmp_path, dirfd):
    outside = tmp_path.parent / (tmp_path.name + "-outside")
    outside.write_bytes(b"keep")
    (tmp_path / "there").write_bytes(b"old")
    os.symlink(outside, tmp_path / "link")
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    failed = writeout.write_files([
        (dirfd, b"there", 0o644, b"new", None),
        (dirfd, b"link", 0o644, b"new", None),
        (dirfd, b"dangling", 0o644, b"new", None),
        (dirfd, b"fine", 0o644, b"new", None),
    ])
    assert failed == [(0, writeout.STAGE_OPEN, errno.EEXIST), (1, writeout.STAGE_OPEN, errno.EEXIST),
                      (2, writeout.STAGE_OPEN, errno.EEXIST)]
    assert (tmp_path / "there").read_bytes() == b"old" and outside.read_bytes() == b"keep"
    assert not (tmp_path / "nowhere").exists()
    assert (tmp_path / "fine").read_bytes() == b"new"


@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"../x", b"/etc/passwd", b"nul\0",
                                  b"n" * 256])
def test_a_name_that_is_not_one_component_writes_nothing(tmp_path, dirfd, name):
    with pytest.raises(ValueError):
        writeout.write_files([(dirfd, b"first", 0o644, b"1", None), (dirfd, name, 0o644, b"x", None)])
    assert os.listdir(tmp_path) == []     # the batch is checked whole before anything is made


@pytest.mark.parametrize("bad", [
    (0, b"a", 0o644, b"x"),                  # too short
    ("0", b"a", 0o644, b"x", None),          # not an fd
    (0, "a", 0o644, b"x", None),             # str, not bytes
    (0, b"a", 0o10644, b"x", None),          # file type bits
    (0, b"a", 0o644, 5, None),               # no buffer
    (0, b"a", 0o644, b"x", (1,)),            # times not a pair
    (0, b"a", 0o644, b"x", (1, 2.5)),        # not ns
])
def test_malformed_batches_are_refused(tmp_path, dirfd, bad):
    bad = (dirfd,) + bad[1:] if isinstance(bad[0], int) else bad
    with pytest.raises((TypeError, ValueError, OverflowError)):
        writeout.write_files([(dirfd, b"first", 0o644, b"1", None), bad])
    assert os.listdir(tmp_path) == []


def test_times_beyond_64_bits_of_ns(tmp_path, dirfd):
    """NTFS times run to the year 60056: beyond 2**63 ns, within a time_t's seconds; beyond
    that the file is written and its times are reported as not set."""
    far = (2**64 - 1) * 100            # the largest NTFS time, in ns since 1601 ... roughly
    failed = writeout.write_files([(dirfd, b"far", 0o644, b"x", (far, far)),
                                   (dirfd, b"farther", 0o644, b"y", (2**63 * 10**9, 0))])
    assert failed == [(1, writeout.STAGE_TIMES, errno.EOVERFLOW)]
    (tmp_path / "ref").write_bytes(b"")
    os.utime(tmp_path / "ref", ns=(far, far))      # what Python sets (the fs may clamp it)
    assert os.stat(tmp_path / "far").st_mtime_ns == os.stat(tmp_path / "ref").st_mtime_ns
    assert (tmp_path / "farther").read_bytes() == b"y"


def test_failures_are_per_file(tmp_path, dirfd):
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    os.close(fd)            # a closed descriptor: EBADF for that file only
    failed = writeout.write_files([(fd, b"a", 0o644, b"x", None),
                                   (dirfd, b"b", 0o644, b"y", None)])
    assert failed == [(0, writeout.STAGE_OPEN, errno.EBADF)]
    assert os.listdir(tmp_path) == ["b"]


def test_calls_are_counted_per_file(tmp_path, dirfd):
    before = writeout.counts()
    writeout.write_files([(dirfd, b"%d" % i, 0o644, b"x" * i, (0, 0)) for i in range(10)])
    after = writeout.counts()
    # the empty file has no write
    assert {k: after[k] - before[k] for k in after} == {"openat": 10, "pwrite": 9,
                                                        "futimens": 10, "close": 10}


@pytest.mark.allow_error_log
def test_a_batch_refused_whole_is_written_one_by_one_with_safe_names(tmp_path, monkeypatch):
    """If a name that is not one component ever reached the batch writer (a bug above it),
    the batch is refused before anything is made, and restore writes its files one by one
    with names made safe: nothing lands outside the destination."""
    from rpfs.restore import Restorer, _Small
    from rpfs.tree import StreamFile
    from streams.stream import BytesStream
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    r = Restorer(str(dest))
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        items = []
        for name, data in ((b"fine", b"1"), (b"../outside/evil", b"2")):
            node = StreamFile(name.decode(), ("f", name), len(data),
                              lambda d=data: BytesStream(d), 10**18)
            items.append((_Small(node, None, 0, len(data), 0o644, True, None, fd, name,
                                 str(dest), None, 0, data), data))
        r._write_batch([(i.dirfd, i.bname, i.mode, data, i.times) for i, data in items],
                       [i for i, _ in items])
    finally:
        os.close(fd)
    assert os.listdir(outside) == []
    assert sorted(os.listdir(dest)) == ["..%2Foutside%2Fevil", "fine"]
    assert r.result.files == 2 and not r.result.errors


# -- Writer: the same files made by a thread of the module's own, without the GIL ----------

def test_a_writer_makes_batches_in_order_and_reports_each_batch_s_failures(tmp_path, dirfd):
    w = writeout.Writer()
    try:
        data = bytearray(os.urandom(50_000))
        tickets = [w.submit([(dirfd, b"%d-%d" % (b, i), 0o644, memoryview(data)[i:i + 999],
                              (10**18, 2 * 10**18)) for i in range(20)]) for b in range(5)]
        clash = w.submit([(dirfd, b"0-0", 0o644, b"again", None), (dirfd, b"new", 0o644, None, None)])
        assert tickets == [1, 2, 3, 4, 5] and clash == 6
        assert w.wait(tickets[-1]) == []            # batches 1-5, nothing failed
        assert w.wait() == [(6, 0, writeout.STAGE_OPEN, errno.EEXIST)]
        assert w.wait() == []                       # each batch reported once
    finally:
        w.close()
    assert len(os.listdir(tmp_path)) == 101
    assert (tmp_path / "3-7").read_bytes() == bytes(data[7:1006])
    assert os.stat(tmp_path / "3-7").st_mtime_ns == 2 * 10**18
    assert (tmp_path / "0-0").read_bytes() == bytes(data[0:999]) and (tmp_path / "new").read_bytes() == b""


def test_a_writer_holds_the_bytes_it_was_given_until_they_are_written(tmp_path, dirfd):
    w = writeout.Writer()
    try:
        for i in range(50):
            w.submit([(dirfd, b"f%d" % i, 0o644, bytes([i]) * 70_000, None)])   # no other reference
        assert w.wait() == []
    finally:
        w.close()
    for i in range(50):
        assert (tmp_path / ("f%d" % i)).read_bytes() == bytes([i]) * 70_000


def test_a_writer_refuses_a_bad_batch_whole_and_writes_what_is_queued_when_closed(tmp_path, dirfd):
    w = writeout.Writer()
    with pytest.raises(ValueError):
        w.submit([(dirfd, b"first", 0o644, b"1", None), (dirfd, b"../x", 0o644, b"x", None)])
    with pytest.raises(TypeError):
        w.submit([(dirfd, b"a", 0o644, b"x")])
    for i in range(10):
        w.submit([(dirfd, b"q%d" % i, 0o644, b"x" * i, None)])
    with pytest.raises(ValueError):
        w.wait(99)                                   # no such batch
    w.close()                                        # what was queued is still made
    assert sorted(os.listdir(tmp_path)) == sorted("q%d" % i for i in range(10))
    with pytest.raises(ValueError):
        w.submit([(dirfd, b"late", 0o644, b"x", None)])
    w.close()                                        # twice is fine


def test_a_writer_never_writes_through_links_or_over_files(tmp_path, dirfd):
    outside = tmp_path.parent / (tmp_path.name + "-outside-w")
    outside.write_bytes(b"keep")
    os.symlink(outside, tmp_path / "link")
    (tmp_path / "there").write_bytes(b"old")
    w = writeout.Writer()
    try:
        w.submit([(dirfd, b"link", 0o644, b"new", None), (dirfd, b"there", 0o644, b"new", None)])
        assert w.wait() == [(1, 0, writeout.STAGE_OPEN, errno.EEXIST),
                            (1, 1, writeout.STAGE_OPEN, errno.EEXIST)]
    finally:
        w.close()
    assert outside.read_bytes() == b"keep" and (tmp_path / "there").read_bytes() == b"old"
