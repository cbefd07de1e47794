"""Small disks made by real tools for the formats tests (VHD, partitions, chains, writers).

Built once into ``.cache/vhdtests-<hash of this file>`` (a lock keeps parallel runs from
building twice; a half-built set is never visible). Raw disks come from sgdisk / sfdisk /
mkfs.vfat / mkntfs plus seeded random data; qemu-img turns them into VHDs. The fixture
factory (tools.fixtures) supplies the bigger NTFS disks where the tests use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MiB = 1 << 20


def run(*cmd, **kw) -> str:
    return subprocess.run([str(c) for c in cmd], check=True, capture_output=True, text=True,
                          **kw).stdout


def _scatter(path: Path, seed: int, ranges: list[tuple[int, int]], pieces: int = 12) -> None:
    """Seeded random pieces inside each (offset, length) range: data a disk reader must get."""
    rnd = random.Random(seed)
    with open(path, "r+b") as f:
        for start, length in ranges:
            for _ in range(pieces):
                n = rnd.randrange(1, 96 * 1024)
                at = start + rnd.randrange(0, max(1, length - n))
                f.seek(at)
                f.write(rnd.randbytes(n))


def _ntfs_into(disk: Path, start_sector: int, size: int, label: str, work: Path) -> None:
    part = work / f"{label}.ntfs"
    with open(part, "wb") as f:
        f.truncate(size)
    run("mkntfs", "-F", "-Q", "-q", "-s", "512", "-p", start_sector, "-H", "255", "-S", "63",
        "-L", label, part)
    run("dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={start_sector * 512}", "oflag=seek_bytes",
        "conv=notrunc,sparse", "status=none")
    part.unlink()


def _build(out: Path) -> None:
    # GPT disk: every Windows type plus LDM / Storage Spaces / Linux, FAT and NTFS content.
    g = out / "gpt.raw"
    with open(g, "wb") as f:
        f.truncate(48 * MiB)
    run("sgdisk", "-n1:2048:+8M", "-t1:ef00", "-c1:EFI system partition",
        "-n2:0:+4M", "-t2:0c01", "-c2:Microsoft reserved partition",
        "-n3:0:+16M", "-t3:0700", "-c3:Basic data partition",
        "-n4:0:+4M", "-t4:2700", "-n5:0:+2M", "-t5:4201", "-n6:0:+2M", "-t6:4200",
        "-n7:0:+2M", "-t7:4202", "-n8:0:+2M", "-t8:8300", "-c8:linux ünïcode", g)
    run("mkfs.vfat", "--offset=2048", g, "8192", )
    _ntfs_into(g, 26624, 16 * MiB, "GptData", out)
    _scatter(g, 1, [(59392 * 512, 4 * MiB), (79872 * 512, 2 * MiB), (30 * MiB, 8 * MiB)])
    # MBR disk: primaries, an extended partition with three logicals (NTFS, WinRE, LDM).
    m = out / "mbr.raw"
    with open(m, "wb") as f:
        f.truncate(64 * MiB)
    run("sfdisk", "-q", m, input=(
        "label: dos\n"
        f"{m}1 : start=2048, size=8MiB, type=7, bootable\n"
        f"{m}2 : size=8MiB, type=c\n"
        f"{m}3 : size=36MiB, type=5\n"
        f"{m}4 : size=4MiB, type=83\n"
        f"{m}5 : size=6MiB, type=7\n"
        f"{m}6 : size=6MiB, type=27\n"
        f"{m}7 : size=6MiB, type=42\n"))
    _ntfs_into(m, 2048, 8 * MiB, "MbrData", out)
    _ntfs_into(m, 36864, 6 * MiB, "Logical5", out)
    _scatter(m, 2, [(18432 * 512, 8 * MiB), (108544 * 512, 4 * MiB)])
    # No table: a whole-disk NTFS volume.
    b = out / "bare.raw"
    with open(b, "wb") as f:
        f.truncate(16 * MiB)
    run("mkntfs", "-F", "-Q", "-q", "-L", "Bare", b)
    # Random sparse data at a size that is not a CHS size.
    r = out / "random.raw"
    with open(r, "wb") as f:
        f.truncate(40 * MiB + 7 * 512)
    _scatter(r, 3, [(0, 40 * MiB)], pieces=40)
    # Tiny tables for mutation tests (a whole disk fits in a few hundred KiB).
    t = out / "tiny_gpt.raw"
    with open(t, "wb") as f:
        f.truncate(256 << 10)
    run("sgdisk", "-a", "1", "-n1:40:99", "-t1:0700", "-c1:alpha", "-n2:100:199", "-t2:ef00",
        "-n3:200:299", "-t3:4200", t)
    tm = out / "tiny_mbr.raw"
    with open(tm, "wb") as f:
        f.truncate(256 << 10)
    run("sfdisk", "-q", tm, input=(
        "label: dos\n"
        f"{tm}1 : start=8, size=40, type=7\n"
        f"{tm}2 : start=48, size=300, type=5\n"
        f"{tm}5 : start=56, size=40, type=7\n"
        f"{tm}6 : start=104, size=40, type=83\n"
        f"{tm}7 : start=152, size=40, type=42\n"))
    # 4096-byte logical sectors: sgdisk through a loop device that declares them.
    g4 = out / "gpt4k.raw"
    with open(g4, "wb") as f:
        f.truncate(32 * MiB)
    try:
        loop = run("losetup", "--find", "--show", "--sector-size", "4096", g4).strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        g4.unlink()  # no loop devices here: the 4Kn tests skip
    else:
        try:
            run("sgdisk", "-n1:256:+8M", "-t1:0700", "-c1:four k", "-n2:0:+4M", "-t2:ef00", loop)
        finally:
            run("losetup", "-d", loop)
    for stem in ("gpt", "mbr", "random"):
        raw = out / f"{stem}.raw"
        run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=dynamic", raw,
            out / f"{stem}.qd.vhd")
        run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed", raw,
            out / f"{stem}.qf.vhd")
        run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o",
            "subformat=dynamic,force_size=on", raw, out / f"{stem}.qs.vhd")


def images() -> Path:
    """The directory of built test images (built now if missing)."""
    key = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]
    cache = ROOT / ".cache"
    root = cache / f"vhdtests-{key}"
    if (root / "done").exists():
        return root
    cache.mkdir(exist_ok=True)
    with open(cache / f"vhdtests-{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (root / "done").exists():
            return root
        tmp = cache / f".tmp-vhdtests-{key}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            _build(tmp)
            (tmp / "done").write_text(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
            os.rename(tmp, root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    for old in cache.glob("vhdtests-*"):  # older builds of this file
        if old != root and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return root


@contextlib.contextmanager
def vhdimount(image: Path, mountpoint: Path, *extra):
    """libvhdi's FUSE view of ``image``: yields the path of its virtual disk file (for a
    differencing chain libvhdi lists the base as vhdi1 and the leaf last)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    run("vhdimount", *extra, image, mountpoint)
    try:
        for _ in range(100):
            if (mountpoint / "vhdi1").exists():
                break
            time.sleep(0.05)
        found = sorted(mountpoint.glob("vhdi*"), key=lambda p: int(p.name[4:] or 0))
        yield found[-1]
    finally:
        for attempt in range(20):
            lazy = ["-z"] if attempt == 19 else []  # last resort: detach even if busy
            if subprocess.run(["fusermount3", "-u", *lazy, str(mountpoint)],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
