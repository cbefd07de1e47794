"""rpfs's own FUSE binding (rpfs/_fusell.c, rpfs/fuse_loop.py, ``Operations.handle``)
through a real mount of a small tree (tests/helpers/llfs.py): every request is answered
exactly once, a bug in one file is EIO for that file only (logged once), hostile names go
through unchanged, and the kernel's forgets reach the adapter."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time

import pytest

from rpfs import _fusell
from tests.helpers.llfs import HOSTILE, MANY

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")


class Mount:
    def __init__(self, tmp_path, env: dict | None = None):
        self.mp = tmp_path / "mnt"
        self.mp.mkdir()
        self.report = tmp_path / "report.json"
        self.log = tmp_path / "llfs.log"
        self._err = open(self.log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.helpers.llfs", str(self.mp),
                                      str(self.report)], stdout=subprocess.PIPE, stderr=self._err,
                                     env={**os.environ, **(env or {})})
        line = self.proc.stdout.readline()
        assert line == b"ready\n", self.log.read_text(errors="replace")
        for _ in range(100):
            if os.path.ismount(self.mp):
                break
            time.sleep(0.05)
        assert os.path.ismount(self.mp)

    def end(self) -> dict:
        """Unmount, wait for the server to end, and return its report."""
        subprocess.run(["fusermount3", "-u", str(self.mp)], check=False, capture_output=True)
        code = self.proc.wait(timeout=60)
        self.proc.stdout.close()
        self._err.close()
        assert code == 0, self.log.read_text(errors="replace")
        return json.loads(self.report.read_text())


@pytest.fixture
def mount(tmp_path):
    m = Mount(tmp_path)
    yield m
    if m.proc.poll() is None:
        m.end()


def test_every_request_is_answered_exactly_once(mount):
    mp = mount.mp
    assert (mp / "ok.txt").read_bytes() == b"ok\n"
    assert (mp / "ok.txt").read_bytes() == b"ok\n"
    assert os.readlink(mp / "link") == "ok.txt"
    assert sorted(os.listdir(mp)) == ["bug.txt", "hostile", "link", "many", "ok.txt"]
    assert len(os.listdir(mp / "many")) == MANY
    assert os.listxattr(mp / "ok.txt") == []
    with pytest.raises(OSError) as e:
        os.getxattr(mp / "ok.txt", "user.nope")
    assert e.value.errno == errno.ENODATA
    with pytest.raises(OSError):
        (mp / "bug.txt").read_bytes()
    with pytest.raises(FileNotFoundError):
        os.stat(mp / "absent")
    with pytest.raises(OSError) as e:
        open(mp / "ok.txt", "wb")
    assert e.value.errno == errno.EROFS
    os.statvfs(mp)
    report = mount.end()
    assert report["wrong"] == []
    asked = {int(k): v for k, v in report["requests"].items()}
    # OPEN never reaches Python (answered ENOSYS in C); READ names the inode
    assert asked[_fusell.READ] >= 1 and asked[_fusell.LOOKUP] >= 1   # "absent"
    assert asked[_fusell.READDIR] >= 2 and asked[_fusell.STATFS] >= 1
    # nothing in this tree can have an xattr: the binding answers those without Python
    binding = {int(k): v for k, v in report["binding"].items()}
    assert binding[_fusell.GETXATTR][0] >= 1 and binding[_fusell.LISTXATTR][0] >= 1
    assert _fusell.GETXATTR not in asked and _fusell.LISTXATTR not in asked
    assert binding[_fusell.OPEN] == [binding[_fusell.OPEN][0], 0]   # ENOSYS in C


def test_a_bug_is_eio_for_that_file_only_and_logged_once(mount):
    mp = mount.mp
    for _ in range(3):
        with pytest.raises(OSError) as e:
            (mp / "bug.txt").read_bytes()
        assert e.value.errno == errno.EIO
        assert (mp / "ok.txt").read_bytes() == b"ok\n"   # its neighbour still reads
    assert os.stat(mp / "bug.txt").st_size == 10      # and it still stats
    assert mount.end()["wrong"] == []
    log = mount.log.read_text(errors="replace")
    assert log.count("RuntimeError: a bug in a stream opener") == 1, log


def test_hostile_names_go_through_unchanged(mount):
    d = mount.mp / "hostile"
    names = sorted(os.listdir(os.fsencode(d)))
    assert names == sorted(os.fsencode(n) for n in HOSTILE)
    for n in names:
        p = os.path.join(os.fsencode(d), n)
        with open(p, "rb") as f:
            assert f.read() == n       # each file holds its own name: the right one opened
        assert os.stat(p).st_size == len(n)
    assert mount.end()["wrong"] == []


def test_the_kernels_forgets_reach_the_adapter(mount):
    """A listing hands the kernel a reference to each of 3,000 entries (statfs reports
    what the adapter counts); once the kernel drops its dentries, FORGET (in batches) gives
    them back, and a name looked up again comes back under the same inode."""
    mp = mount.mp
    before = os.statvfs(mp).f_files
    first = {n: os.stat(mp / "many" / n).st_ino for n in os.listdir(mp / "many")[:50]}
    held = os.statvfs(mp).f_files
    assert held >= before + MANY
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("2\n")
    except OSError:
        pytest.skip("/proc/sys/vm/drop_caches not writable (needs root)")
    for _ in range(300):
        if os.statvfs(mp).f_files < held - MANY // 2:
            break
        time.sleep(0.1)
    assert os.statvfs(mp).f_files < held - MANY // 2
    assert {n: os.stat(mp / "many" / n).st_ino for n in first} == first
    report = mount.end()
    assert report["wrong"] == [] and report["requests"][str(_fusell.FORGET)] >= 1


def test_past_the_inode_limit_the_kernel_is_asked_to_let_go(tmp_path):
    """Held inodes (not NTFS-numbered) past RPFS_MOUNT_INODES: the adapter asks the kernel
    to drop the oldest files' entries (from a thread of its own), the kernel forgets them,
    and a file let go of is looked up again under its number, its bytes right."""
    m = Mount(tmp_path, env={"RPFS_MOUNT_INODES": "1000"})
    try:
        many = m.mp / "many"
        inos = {n: os.stat(many / n).st_ino for n in sorted(os.listdir(many))}
        assert len(inos) == MANY
        for _ in range(300):   # invalidations go out, forgets come back
            if os.statvfs(m.mp).f_files < 1500:
                break
            time.sleep(0.1)
        assert os.statvfs(m.mp).f_files < 1500
        assert (many / "f00000").read_bytes() == b"0\n"
        assert os.stat(many / "f00000").st_ino == inos["f00000"]
    finally:
        report = m.end()
    assert report["wrong"] == []


def test_a_second_reply_is_refused_and_a_dropped_request_is_eio(tmp_path):
    """A request is answered once: a second reply raises ValueError in Python (the handle
    was let go of when answered; no use after free in libfuse), and a request the handler
    drops without an answer is answered EIO when its Request goes (the loop lets go of it
    once its handler ends), so the caller never hangs. The mount goes on serving either
    way."""
    import threading

    m = Mount(tmp_path, env={"LLFS_MISBEHAVE": "1"})
    got: list = []

    def readlink():
        try:
            got.append(os.readlink(m.mp / "link"))
        except OSError as e:
            got.append(e.errno)

    try:
        assert (m.mp / "ok.txt").read_bytes() == b"ok\n"
        t = threading.Thread(target=readlink, daemon=True)
        t.start()
        for i in range(2000):   # (other requests meanwhile: a loop may hold it a while)
            t.join(0.01)
            if not t.is_alive():
                break
            os.stat(m.mp / "many" / f"f{i:05d}")
        assert got == [errno.EIO]
        assert (m.mp / "hostile" / "-rf").read_bytes() == b"-rf"
    finally:
        report = m.end()
    assert report["second_reply"] == "ValueError"


def test_requests_are_objects_that_refuse_misuse():
    """Python cannot make a Request; reply functions refuse anything else (FORGET and
    INIT carry 0, which must never be answered)."""
    with pytest.raises(TypeError):
        _fusell.Request()
    with pytest.raises(TypeError):
        _fusell.reply_err(0, 0)
    with pytest.raises(TypeError):
        _fusell.reply_attr(12345, _fusell.EntryAttributes())
    with pytest.raises(TypeError):
        _fusell.reply_buffers(12345, [b"data"])
