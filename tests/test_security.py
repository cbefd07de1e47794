"""Security properties (DESIGN.md, "Behaviour that is part of the contract"):

- restore never writes outside DEST, even while another process swaps directories inside
  DEST for symlinks to elsewhere during the restore (a real race, many rounds);
- repository files are 0600 and directories 0700, and a repository other users may write
  is refused with one line saying how to fix it;
- a mount is private to the mounting user unless ``--allow-other`` (checked as another
  user, through the kernel).
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from rpfs.restore import restore
from rpfs.tree import open_source
from tests.helpers.store_fixtures import ROOT, rpfs

NOBODY = 65534


# -- restore against a racing attacker -----------------------------------------------------------

def _swapper(dest: Path, outside: Path, stop: threading.Event, swaps: list) -> None:
    """Replace every directory that appears under ``dest`` with a symlink to ``outside``
    (keeping the real one aside under a new name, so the restore may carry on there)."""
    rnd = random.Random(1)
    while not stop.is_set():
        for dirpath, dirnames, _ in os.walk(dest):
            for d in dirnames:
                p = os.path.join(dirpath, d)
                if os.path.islink(p) or d.endswith(".moved"):
                    continue
                try:
                    os.rename(p, f"{p}.{rnd.randrange(1 << 30)}.moved")
                    os.symlink(outside, p)
                    swaps.append(p)
                except OSError:
                    pass


@pytest.mark.allow_error_log  # restore logs each directory it can no longer enter
def test_restore_never_escapes_dest_while_directories_are_swapped(small_fixtures, tmp_path):
    fx = small_fixtures.volumes["system-p3"]
    tree = open_source(fx.image)
    (vol,) = tree.resolve("/volumes").iterdir()
    node = tree.resolve(f"/volumes/{vol.name}/ProgramData")
    outside = tmp_path / "outside"
    outside.mkdir()
    total_swaps = 0
    round_ = 0
    # 8 rounds, more until the race has happened 8 times (how many swaps a round sees depends
    # on how the two threads are scheduled), bounded by a count of rounds, not a time
    while round_ < 8 or (total_swaps < 8 and round_ < 64):
        round_ += 1
        dest = tmp_path / f"dest{round_}"
        dest.mkdir()
        stop, swaps = threading.Event(), []
        t = threading.Thread(target=_swapper, args=(dest, outside, stop, swaps))
        t.start()
        try:
            restore(node, str(dest))
        finally:
            stop.set()
            t.join()
        total_swaps += len(swaps)
        assert list(outside.iterdir()) == [], f"round {round_}: wrote outside DEST"
        for dirpath, dirnames, filenames in os.walk(dest):  # every file really inside
            for f in filenames:
                real = os.path.realpath(os.path.join(dirpath, f))
                assert real.startswith(str(dest) + os.sep) or os.path.islink(
                    os.path.join(dirpath, f)), real
    assert total_swaps >= 8  # the race really happened


# -- the repository's permissions ------------------------------------------------------------

def test_repository_is_private_and_refused_when_others_may_write(tmp_path):
    repo, src = tmp_path / "repo", tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(300_000))
    old = os.umask(0o022)  # a usual umask: the repository must not depend on it
    try:
        rpfs("init", str(repo))
        rpfs("backup", str(repo), str(src), "--vm", "vm")
        rpfs("prune", str(repo), "--keep-last", "1")
    finally:
        os.umask(old)
    for p in [repo, *repo.rglob("*")]:
        mode = stat.S_IMODE(p.lstat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), f"{p}: {mode:o}"
    for target in (repo, repo / "catalog.sqlite", repo / "packs"):
        before = stat.S_IMODE(target.stat().st_mode)
        os.chmod(target, before | 0o002)
        p = rpfs("list", str(repo), check=False)
        assert p.returncode == 2 and p.stderr.count("\n") == 1, p.stderr
        assert "writable by other users" in p.stderr and "chmod -R go-w" in p.stderr
        os.chmod(target, before)
    rpfs("list", str(repo))


# -- the mount -------------------------------------------------------------------------------------

def _as_nobody(directory, file) -> list[bool]:
    """Whether user nobody can list ``directory`` and read ``file`` (coreutils in a
    separate process, so the kernel checks)."""
    def drop():
        os.setgroups([])
        os.setgid(NOBODY)
        os.setuid(NOBODY)
    return [subprocess.run(cmd, capture_output=True, preexec_fn=drop, cwd="/").returncode == 0
            for cmd in (["ls", str(directory)], ["head", "-c", "10", str(file)])]


@pytest.mark.fuse
@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to test as another user")
def test_mount_is_private_unless_allow_other():
    base = Path(tempfile.mkdtemp(prefix="rpfs-sec-"))  # reachable by others (0755), unlike tmp_path
    os.chmod(base, 0o755)
    try:
        vm = base / "vm"
        (vm / "Virtual Machines").mkdir(parents=True)
        (vm / "Virtual Machines" / "cfg.vmcx").write_bytes(b"secret config")
        for d in (vm, vm / "Virtual Machines"):
            os.chmod(d, 0o755)
        os.chmod(vm / "Virtual Machines" / "cfg.vmcx", 0o644)
        results = {}
        for flag in ([], ["--allow-other"]):
            mp = base / f"mnt{len(flag)}"
            mp.mkdir()
            os.chmod(mp, 0o755)
            rpfs("mount", str(vm), str(mp), *flag)
            try:
                assert os.listdir(mp)  # the owner always can
                f = mp / "files" / "Virtual Machines" / "cfg.vmcx"
                assert f.read_bytes() == b"secret config"
                results[bool(flag)] = _as_nobody(mp, f)
            finally:
                rpfs("umount", str(mp), check=False)
        assert results == {False: [False, False], True: [True, True]}, results
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_no_secret_reaches_logs_or_the_process_title():
    """Commands never put key material in argv (keys come from --keys FILE) and rpfs sets
    no process title from its arguments: what ps shows is what the user typed."""
    import rpfs.cli as cli
    parser = cli.build_parser()
    for action in parser._subparsers._group_actions[0].choices.values():
        for a in action._actions:
            names = " ".join(a.option_strings)
            assert not any(w in names for w in ("--password", "--passphrase", "--key=")), names
    assert not any("setproctitle" in p.read_text() for p in (ROOT / "rpfs").rglob("*.py"))
