"""A real FUSE mount: read-only, same bytes as the CLI, errors per object."""

import errno
import os
import random
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")


def rpfs(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "rpfs", *map(str, args)], capture_output=True)
    if check and r.returncode:
        raise AssertionError(r.stderr.decode())
    return r


@pytest.fixture
def mounted(tmp_path):
    mounts = []

    def mount(source):
        mp = tmp_path / f"mnt{len(mounts)}"
        mp.mkdir()
        rpfs("mount", source, mp)
        mounts.append(mp)
        return mp

    yield mount
    for mp in mounts:
        rpfs("umount", mp, check=False)


def test_folder_mount_reads_and_refuses_writes(tmp_path, mounted):
    vm = tmp_path / "vm"
    (vm / "Virtual Machines").mkdir(parents=True)
    data = random.Random(1).randbytes(5 << 20)
    (vm / "Virtual Machines" / "cfg.vmcx").write_bytes(data)
    mp = mounted(vm)
    assert sorted(os.listdir(mp)) == ["disks", "files", "volumes"]
    path = mp / "files" / "Virtual Machines" / "cfg.vmcx"
    assert path.read_bytes() == data
    with open(path, "rb") as f:
        for _ in range(200):
            off = random.randrange(len(data))
            f.seek(off)
            assert f.read(4096) == data[off:off + 4096]
    st = os.stat(path)
    assert st.st_size == len(data) and st.st_mode & 0o222 == 0
    for attempt in (lambda: open(path, "r+b"), lambda: (mp / "files" / "new").write_bytes(b"x"),
                    lambda: os.mkdir(mp / "files" / "d"), lambda: os.unlink(path)):
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno in (errno.EROFS, errno.EACCES)
    with pytest.raises(FileNotFoundError):
        os.stat(mp / "files" / "missing")


def test_mount_refuses_busy_mountpoint(tmp_path, mounted):
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm" / "a").write_bytes(b"a")
    mp = mounted(tmp_path / "vm")
    r = rpfs("mount", tmp_path / "vm", mp, check=False)
    assert r.returncode != 0
    assert r.stderr.decode().count("\n") == 1 and "already mounted" in r.stderr.decode()


def test_mount_command_exits_without_teardown_once_the_mount_is_live(tmp_path):
    """The parent of the forked daemon leaves with os._exit: its interpreter teardown is
    work on the way to a user's first listing (an exit handler shows whether it ran)."""
    vm = tmp_path / "vm"
    (vm / "Virtual Machines").mkdir(parents=True)
    (vm / "a.txt").write_bytes(b"a\n")
    mp = tmp_path / "mnt"
    mp.mkdir()
    code = ("import atexit, sys\n"
            "atexit.register(lambda: print('teardown'))\n"
            "from rpfs.cli import main\n"
            f"sys.exit(main(['mount', {str(vm)!r}, {str(mp)!r}]))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    try:
        assert r.returncode == 0, r.stderr
        assert os.path.ismount(mp)
        assert "teardown" not in r.stdout
    finally:
        rpfs("umount", mp, check=False)


def test_a_mount_that_ends_with_nothing_to_say_removes_its_log(tmp_path):
    """The daemon's messages go to a log in $TMPDIR; an empty one goes with the mount
    (a machine that mounted often had hundreds of empty logs)."""
    (tmp_path / "vm").mkdir()
    (tmp_path / "vm" / "a").write_bytes(b"a")
    logs = tmp_path / "tmpdir"
    logs.mkdir()
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = subprocess.run([sys.executable, "-m", "rpfs", "mount", tmp_path / "vm", mp],
                       capture_output=True, env={**os.environ, "TMPDIR": str(logs)})
    assert r.returncode == 0, r.stderr
    try:
        assert [p.name.startswith("rpfs-mount-") for p in logs.iterdir()] == [True]
        assert (mp / "files" / "a").read_bytes() == b"a"
    finally:
        rpfs("umount", mp)
    for _ in range(300):  # the daemon leaves once the kernel has let go of the mount
        if not any(logs.iterdir()):
            break
        time.sleep(0.1)
    assert list(logs.iterdir()) == []
