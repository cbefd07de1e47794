"""The ``rpfs`` command as a user runs it, and a repository holding both fixture VM states."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def rpfs(*args, check=True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "rpfs", *map(str, args)], capture_output=True)
    if check and r.returncode:
        raise AssertionError(r.stderr.decode())
    return r


def two_point_repo(fixtures, path: Path, vm: str = "web01") -> Path:
    """A repository at ``path`` with the fixture VM's two states as recovery points on
    2026-11-01 and 2026-11-02 at 02:00 UTC."""
    s1, s2 = fixtures.vm_states
    rpfs("init", path)
    rpfs("backup", path, s1, "--vm", vm, "--time", "2026-11-01T02:00:00Z")
    rpfs("backup", path, s2, "--vm", vm, "--time", "2026-11-02T02:00:00Z")
    return path


def image_repo(image, tmp: Path, vm: str) -> Path:
    """A repository in ``tmp`` with the raw disk ``image`` (as a dynamic VHDX made by
    qemu-img) as VM ``vm``'s only disk, backed up once at 2026-11-01 02:00 UTC, unindexed."""
    disks = tmp / "vm" / "Virtual Hard Disks"
    disks.mkdir(parents=True)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", "-o",
                    "subformat=dynamic", image, disks / f"{vm}.vhdx"], check=True)
    repo = tmp / "repo"
    rpfs("init", repo)
    rpfs("backup", repo, tmp / "vm", "--vm", vm, "--time", "2026-11-01T02:00:00Z", "--no-index")
    return repo
