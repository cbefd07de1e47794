"""What a restore of many small files costs, counted (never timed): reads of the volume below
the files and system calls per file, on an NTFS volume made by mkntfs + ntfs-3g
(tests/helpers/ntfs_images.py: ``mftfrag``, 1,531 files of 6,000 bytes in one run each with
the space of a deleted file between neighbours, and 6,000 files of resident data)."""

import os
import shutil

import pytest

from ntfs_reader.volume import Volume
from rpfs import restore as restore_module
from rpfs.ntfs_nodes import volume_root
from rpfs.restore import restore, safe_name
from streams.errors import IntegrityError
from streams.stream import FileStream, Stream
from tests.helpers.ntfs_images import _rand, mftfrag_image, oddnames_image

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("mkntfs", "ntfs-3g")) or not os.path.exists("/dev/fuse"),
    reason="needs mkntfs and ntfs-3g (FUSE)")


class Counted(Stream):
    """The volume's bytes, counting the reads made of it; a read touching ``bad`` fails
    the way a damaged chunk does."""

    def __init__(self, base: Stream, bad: tuple[int, int] | None = None):
        self.base, self.size, self.name = base, base.size, base.name
        self.reads = 0
        self.bad = bad

    def _check(self, offset, length):
        self.reads += 1
        if self.bad and offset < self.bad[1] and offset + length > self.bad[0]:
            raise IntegrityError("chunk fails its hash check (test)")

    def _read(self, offset, length):
        self._check(offset, length)
        return self.base.read(offset, length)

    def _readinto(self, offset, view):
        self._check(offset, len(view))
        self.base.readinto(offset, view)


@pytest.fixture(scope="module")
def frag():
    image, manifest = mftfrag_image()
    return str(image), manifest


def _root(image, bad=None):
    volume = Counted(FileStream(image), bad)
    return volume, volume_root(Volume(volume), "vol", ("vol",))


def test_small_files_are_read_with_their_neighbours(frag, tmp_path):
    """1,531 non-resident files: their bytes come from a few reads of the volume, one per
    neighbourhood, not one (or more) per file through the runlist."""
    image, manifest = frag
    volume, root = _root(image)
    fill = root.child("fill")
    before = volume.reads
    result = restore(fill, str(tmp_path))
    reads = volume.reads - before
    names = manifest["fill_left"]
    assert not result.errors and result.files == len(names) == 1531
    assert sorted(os.listdir(tmp_path / "fill")) == sorted(names)
    whole = 0
    for name in names:   # the files written as the volume filled up are cut short
        got = (tmp_path / "fill" / name).read_bytes()
        assert got and got == _rand(6000, int(name))[:len(got)], name
        whole += len(got) == 6000
    assert whole >= 1500
    # one file each was 1,744 reads; now about 240, most of them $MFT blocks (the $MFT of
    # this volume is in hundreds of runs), not file data
    assert reads < len(names) // 4, reads


@pytest.mark.allow_error_log  # restore logs the damaged file
def test_a_failed_read_fails_only_the_file_it_belongs_to(frag, tmp_path):
    """The read shared by neighbours fails: each is then read on its own, and only the file
    whose bytes are damaged is reported and left unwritten."""
    image, manifest = frag
    _, clean = _root(image)
    victim = manifest["fill_left"][100]
    stream = clean.child("fill").child(victim).open()
    assert stream.size == 6000
    where = stream.span(0, 6000)
    assert where is not None
    _, root = _root(image, bad=(where[1], where[1] + 6000))
    result = restore(root.child("fill"), str(tmp_path))
    assert len(result.errors) == 1 and victim in result.errors[0]
    assert "hash check" in result.errors[0]
    assert not (tmp_path / "fill" / victim).exists()
    assert result.files == 1530
    for name in manifest["fill_left"][95:106]:
        if name != victim:
            assert (tmp_path / "fill" / name).read_bytes() == _rand(6000, int(name))


class _CountingOs:
    """``os`` as rpfs.restore sees it, counting the calls that are system calls."""

    CALLS = ("open", "close", "pwrite", "write", "utime", "fchmod", "chmod", "ftruncate",
             "fchown", "chown", "setxattr", "stat", "fstat", "mkdir", "unlink", "dup")

    def __init__(self):
        self.counts = dict.fromkeys(self.CALLS, 0)

    def __getattr__(self, name):
        real = getattr(os, name)
        if name not in self.CALLS:
            return real

        def counted(*args, **kw):
            self.counts[name] += 1
            return real(*args, **kw)
        return counted


@pytest.mark.parametrize("batched", [True, False], ids=["c-batches", "python"])
@pytest.mark.parametrize("folder", ["fill", "many"])
def test_system_calls_per_small_file(frag, tmp_path, monkeypatch, folder, batched):
    """A plain small file costs four system calls: create (O_EXCL|O_NOFOLLOW at its
    directory's fd), one write, its times on the fd, close; no stat, no truncate, no chmod
    (the umask leaves 0644 whole), no xattrs unless asked. Made by rpfs._writeout, a
    batch of files at a time by its writer's thread (its own counts), or without it by
    Python's ``os``."""
    image, manifest = frag
    _, root = _root(image)
    node = root.child(folder)
    counting = _CountingOs()
    monkeypatch.setattr(restore_module, "os", counting)
    writeout = restore_module._writeout
    if batched:
        assert writeout is not None, "rpfs._writeout missing: run tools/setup.sh"
        before = writeout.counts()
        real, batches = writeout.write_files, []

        class Counting:
            STAGE_OPEN, STAGE_TIMES = writeout.STAGE_OPEN, writeout.STAGE_TIMES

            @staticmethod
            def write_files(files):
                batches.append(len(files))
                return real(files)

            class Writer:     # the writer's thread (the walk goes on meanwhile)
                def __init__(self):
                    self.real = writeout.Writer()

                def submit(self, files):
                    batches.append(len(files))
                    return self.real.submit(files)

                def wait(self, ticket=None):
                    return self.real.wait(ticket)

                def close(self):
                    self.real.close()
        monkeypatch.setattr(restore_module, "_writeout", Counting)
    else:
        monkeypatch.setattr(restore_module, "_writeout", None)
    old = os.umask(0o022)
    try:
        result = restore(node, str(tmp_path))
    finally:
        os.umask(old)
    files = result.files
    assert not result.errors and files == (1531 if folder == "fill" else manifest["many"])
    c = counting.counts
    dirs = result.dirs
    if batched:
        made = {k: v - before[k] for k, v in writeout.counts().items()}
        alone = c["pwrite"]     # the few files not in one run: copied on their own
        assert alone <= 10, c
        batched_files = files - alone
        assert made == dict.fromkeys(("openat", "pwrite", "futimens", "close"), batched_files)
        assert sum(batches) == batched_files and len(batches) < files // 10, batches
        for key, name in (("pwrite", "pwrite"), ("utime", "futimens"), ("open", "openat"),
                          ("close", "close")):
            c[key] += made[name]
    assert c["pwrite"] == files and c["utime"] == files + dirs
    assert c["open"] == files + dirs + 1            # + the destination itself
    assert c["close"] == c["open"]
    assert c["chmod"] == dirs
    for name in ("fchmod", "ftruncate", "fchown", "chown", "setxattr", "stat", "fstat",
                 "unlink", "dup", "write"):
        assert c[name] == 0, (name, c)


def test_no_whole_record_is_parsed_per_plain_file(frag, tmp_path, monkeypatch):
    """A plain file's stat and open come from the C parser's summaries of its record
    (stat_summary, data_attribute): no MftRecord with every attribute object is built per
    file, only for the directories walked."""
    from ntfs_reader import native, volume as volume_module
    assert native.available(), "ntfs_reader._ntfsparse missing: run tools/setup.sh"
    image, _ = frag
    _, root = _root(image)
    fill = root.child("fill")
    parsed = []
    real = volume_module.parse_record

    def counted(data, number, *args):
        parsed.append(number)
        return real(data, number, *args)
    monkeypatch.setattr(volume_module, "parse_record", counted)
    result = restore(fill, str(tmp_path))
    assert not result.errors and result.files == 1531
    # the directory and the odd record that is not plain; it was one per file (1,531)
    assert len(parsed) <= 10, parsed


class Chunked(Counted):
    """A volume that hands out its bytes as views of decoded 64 KiB chunks (as a stored
    file's ``views`` does), recording the ranges copied out by ``readinto``."""

    CHUNK = 64 << 10

    def __init__(self, base: Stream):
        super().__init__(base)
        self.copied: list[tuple[int, int]] = []
        self.viewed = 0

    def _readinto(self, offset, view):
        self.copied.append((offset, offset + len(view)))
        super()._readinto(offset, view)

    def views(self, offset, length, sequential=False):
        def gen():
            pos, end = offset, offset + length
            while pos < end:
                first = pos // self.CHUNK * self.CHUNK
                chunk = self.base.read(first, min(self.CHUNK, self.size - first))
                take = min(end, first + len(chunk)) - pos
                self.viewed += take
                yield memoryview(chunk)[pos - first:pos - first + take].toreadonly()
                pos += take
        return gen()


def test_small_files_are_written_from_the_decoded_chunks_themselves(frag, tmp_path):
    """Where the stream below hands out its decoded chunks (a repository's), a window of
    small files is written from those views: no window buffer filled by ``readinto``
    (a copy of every byte, and fresh pages: page faults). Only metadata is read into."""
    image, manifest = frag
    volume = Chunked(FileStream(image))
    root = volume_root(Volume(volume), "vol", ("vol",))
    fill = root.child("fill")
    where = []
    for name in manifest["fill_left"]:
        stream = fill.child(name).open()
        span = stream.span(0, stream.size)
        if span is not None:
            where.append((span[1], span[1] + stream.size))
    assert len(where) >= 1500
    volume.copied.clear()
    result = restore(fill, str(tmp_path))
    assert not result.errors and result.files == 1531
    for name in manifest["fill_left"]:
        got = (tmp_path / "fill" / name).read_bytes()
        assert got and got == _rand(6000, int(name))[:len(got)], name
    data = sorted(where)
    copied = sum(max(0, min(e, ce) - max(s, cs)) for cs, ce in volume.copied for s, e in data)
    assert copied == 0, copied                 # it was every byte of every file (~9 MB)
    assert volume.viewed >= sum(e - s for s, e in data)


def test_a_window_of_files_costs_no_python_call_per_file(frag, tmp_path):
    """The per-file work of slicing a window's files out of their chunks is a slice and the
    batch writer's tuple, no Python function call (each one holds the GIL the walk also
    wants): rpfs/restore.py's functions are entered per window, not per file
    (``_Pieces.slice`` was one per file)."""
    import collections
    import sys
    import threading

    image, manifest = frag
    volume = Chunked(FileStream(image))
    volume.CHUNK = 1 << 20             # a repository's chunk: a few files straddle two
    root = volume_root(Volume(volume), "vol", ("vol",))
    fill = root.child("fill")
    calls = []
    here = restore_module.__file__

    def profile(frame, event, arg):
        if event != "call" or frame.f_code.co_filename != here:
            return
        up = frame    # only what runs inside a window's slicing (on any thread)
        while up is not None and up.f_code.co_name != "_slices":
            up = up.f_back
        if up is not None:
            calls.append(frame.f_code.co_name)

    threading.setprofile(profile)      # the pool's threads start after this
    sys.setprofile(profile)
    try:
        result = restore(fill, str(tmp_path))
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    assert not result.errors and result.files == 1531
    counts = collections.Counter(calls)
    assert counts["_slices"] > 0, counts
    # was 1,521 slice() and 1,548 generator steps; now a copy for the files across two
    # chunks and the calls of each window and of the few files copied on their own
    assert max(counts.values()) < result.files // 10, counts
    assert len(calls) < result.files // 4, counts


def test_plain_files_with_names_safe_name_rewrites(tmp_path):
    """The plain-file path checks each name with one ``translate`` (``b"%" in name`` and its
    three siblings formatted and dropped a TypeError each: 34 M instructions for 4,000
    files); a name holding ``%`` or ``\\`` is still written under its safe name."""
    image, manifest = oddnames_image()
    root = volume_root(Volume(FileStream(str(image))), "vol", ("vol",))
    result = restore(root.child("odd"), str(tmp_path))
    assert not result.errors and result.files == len(manifest["odd"])
    assert sorted(os.listdir(tmp_path / "odd")) == sorted(safe_name(n) for n in manifest["odd"])
    assert "50%25" in os.listdir(tmp_path / "odd")
    for k, name in enumerate(manifest["odd"]):
        assert (tmp_path / "odd" / safe_name(name)).read_bytes() == b"odd %d\n" % k * (k + 1)
