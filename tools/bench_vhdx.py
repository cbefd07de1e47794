#!/usr/bin/env python3
"""VHDX read throughput: our VhdxDisk stream next to `qemu-img convert -O raw` of the same
file, in one run with the page cache warm for both.

    .venv/bin/python tools/bench_vhdx.py [--size-mib 1024] [--block-mib 32] [--buffer-mib 4]

The image is a dynamic VHDX made by qemu-img from a raw disk of random data with holes
(cached under .cache/vhdx-bench/). Measured:
  - ours/read:    VhdxDisk.readinto over the whole virtual disk into one reused buffer
  - ours/convert: export to a raw file on tmpfs following extents (holes skipped), like qemu
  - qemu-img:     `qemu-img convert -f vhdx -O raw IMAGE /dev/shm/...` (skips holes too)
  - cat:          reading the VHDX file itself (the ceiling)
  - chain/read:   with --chain, readinto over the leaf of a 3-deep differencing chain
                  (children by our writer: scattered sectors, so many PARTIALLY_PRESENT
                  blocks whose reads are split between child and parent)
MB/s are of virtual disk bytes (file bytes for cat), 1 MB = 10^6 bytes.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from formats.vhdx import VhdxDisk  # noqa: E402
from streams.stream import DATA, FileStream  # noqa: E402

MiB = 1 << 20


def build(size_mib: int, block_mib: int) -> Path:
    d = ROOT / ".cache" / "vhdx-bench"
    d.mkdir(parents=True, exist_ok=True)
    image = d / f"bench-{size_mib}M-{block_mib}M.vhdx"
    if image.exists():
        return image
    raw = d / f"bench-{size_mib}M.raw"
    rng = random.Random(size_mib)
    with open(raw, "wb") as f:
        f.truncate(size_mib * MiB)
        pos = 0
        while pos < size_mib * MiB:   # ~80% data in runs of 1-64 MiB, the rest holes
            n = rng.randrange(1, 65) * MiB
            if rng.random() < 0.8:
                f.seek(pos)
                f.write(os.urandom(min(n, size_mib * MiB - pos)))
            pos += n
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-o",
                    f"subformat=dynamic,block_size={block_mib * MiB}", str(raw), str(image)], check=True)
    raw.unlink()
    return image


def build_chain(base: Path, depth: int = 3) -> list[Path]:
    """Children of ``base`` with 2000 scattered 4 KiB changes each (cached)."""
    from formats.vhdx import write_vhdx
    paths = [base]
    parent = VhdxDisk(FileStream(base))
    for level in range(1, depth):
        child = base.with_name(f"{base.stem}-child{level}.avhdx")
        if not child.exists():
            with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
                raw = Path(tmp) / "want.raw"
                with open(raw, "wb") as f:
                    f.truncate(parent.size)
                    pos = 0
                    while pos < parent.size:
                        n = min(32 * MiB, parent.size - pos)
                        f.write(parent.read(pos, n))
                        pos += n
                    rng = random.Random(level)
                    for _ in range(2000):
                        f.seek(rng.randrange(parent.size // 4096) * 4096)
                        f.write(os.urandom(4096))
                write_vhdx(FileStream(raw), child, block_size=2 * MiB, parent=parent, parent_path=str(paths[-1]))
        disk = VhdxDisk(FileStream(child))
        disk.set_parent(parent)
        parent = disk
        paths.append(child)
    return paths


def chain_read(paths: list[Path], buffer_mib: int) -> float:
    disk = None
    for p in paths:
        d = VhdxDisk(FileStream(p))
        if disk is not None:
            d.set_parent(disk)
        disk = d
    buf = bytearray(buffer_mib * MiB)
    t = time.perf_counter()
    pos = 0
    while pos < disk.size:
        pos += disk.readinto(pos, buf)
    return time.perf_counter() - t


def warm(path: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["cat", str(path)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t


def ours_read(path: Path, buffer_mib: int) -> tuple[float, int]:
    disk = VhdxDisk(FileStream(path))
    buf = bytearray(buffer_mib * MiB)
    t = time.perf_counter()
    pos = 0
    while pos < disk.size:
        pos += disk.readinto(pos, buf)
    return time.perf_counter() - t, disk.size


def ours_convert(path: Path, out: Path, buffer_mib: int) -> float:
    disk = VhdxDisk(FileStream(path))
    buf = bytearray(buffer_mib * MiB)
    t = time.perf_counter()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, disk.size)
        for e in disk.extents():
            if e.kind != DATA:
                continue
            pos = e.offset
            while pos < e.end:
                n = min(len(buf), e.end - pos)
                view = memoryview(buf)[:n]
                disk.readinto(pos, view)
                os.pwrite(fd, view, pos)
                pos += n
    finally:
        os.close(fd)
    return time.perf_counter() - t


def qemu_convert(path: Path, out: Path) -> float:
    t = time.perf_counter()
    subprocess.run(["qemu-img", "convert", "-f", "vhdx", "-O", "raw", str(path), str(out)], check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--block-mib", type=int, default=32)
    ap.add_argument("--buffer-mib", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chain", action="store_true", help="also read a 3-deep differencing chain")
    args = ap.parse_args()
    image = build(args.size_mib, args.block_mib)
    size = args.size_mib * MiB
    fsize = image.stat().st_size
    chain = build_chain(image) if args.chain else []
    for p in chain or [image]:
        warm(p)
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir="/dev/shm" if os.path.isdir("/dev/shm") else None) as tmp:
        out = Path(tmp) / "out.raw"
        for _ in range(args.repeat):
            best["cat"] = min(best.get("cat", 1e9), warm(image))
            best["ours/read"] = min(best.get("ours/read", 1e9), ours_read(image, args.buffer_mib)[0])
            best["ours/convert"] = min(best.get("ours/convert", 1e9), ours_convert(image, out, args.buffer_mib))
            out.unlink()
            best["qemu-img"] = min(best.get("qemu-img", 1e9), qemu_convert(image, out))
            out.unlink()
            if chain:
                best["chain/read"] = min(best.get("chain/read", 1e9), chain_read(chain, args.buffer_mib))
    print(f"image {image.name}: virtual {size / 1e6:.0f} MB, file {fsize / 1e6:.0f} MB, "
          f"buffer {args.buffer_mib} MiB, best of {args.repeat}")
    for name, secs in best.items():
        n = fsize if name == "cat" else size
        print(f"  {name:13s} {secs:7.3f} s  {n / secs / 1e6:8.0f} MB/s")


if __name__ == "__main__":
    main()
