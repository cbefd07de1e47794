"""Throughput through the mount: a BitLocker volume beside the same volume unencrypted.

    .venv/bin/python tools/bench_bitlocker.py [--methods xts128,cbc128,elephant128] [--repeat 3]
    .venv/bin/python tools/bench_bitlocker.py --cipher [--repeat 5]   # in process, no mount

A 1.1 GiB NTFS volume holding four 192 MiB files of random data (mkntfs + ntfs-3g) is
encrypted by the factory's BitLocker writer once per method (all cached under
.cache/bench-bitlocker/). Each run mounts one image with
``rpfs mount`` (fresh mount, so nothing comes from the page cache), reads every file of at
the files in 1 MiB reads (timed), and unmounts; the plain image and each
encrypted one take turns, and each figure is the best of --repeat runs (the machine is
shared). Opening the volume (which unlocks it: a 2^20-round key stretch) is timed apart.
Prints MiB/s per image and its ratio to the plain volume, and the CPU time the mount
process spent per MiB (less disturbed by other load than wall time) and its ratio.

``--cipher`` times the cipher alone, in process: ``SectorCipher.decrypt_into`` per method
and read size, Elephant's one C pass after the AES on each path this CPU runs (AVX-512,
AVX2, portable), and Elephant all in C (``cbc_elephant_sectors``) on each of those with each
AES path (VAES, AES-NI), as CPU ms per MiB, best and worst of --repeat rounds (the rounds
alternate).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tools.fixtures import bitlocker as blfx  # noqa: E402
from tools.fixtures import ntfs  # noqa: E402

MiB = 1 << 20
FILES = 4
FILE_SIZE = 192 * MiB
METHODS = {"xts128": 0x8004, "xts256": 0x8005, "cbc128": 0x8002, "elephant128": 0x8000}


def rpfs(*args) -> None:
    subprocess.run([sys.executable, "-m", "rpfs", *map(str, args)], check=True, cwd=REPO)


def read_all(root: Path, paths: list[str]) -> int:
    total = 0
    buf = bytearray(MiB)
    for rel in paths:
        with open(root / rel, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                total += n
    return total


def mount_cpu(mp: str) -> float:
    """CPU seconds (user + system) used so far by the process serving mount point ``mp``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if mp.encode() in args and b"mount" in args:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except OSError:
            continue
    raise RuntimeError(f"no process serves {mp}")


def one_run(image: Path, volume: str, keys: Path | None, paths: list[str]):
    with tempfile.TemporaryDirectory(prefix="rpfs-bench-bl-") as mp:
        extra = ["--keys", keys] if keys else []
        rpfs("mount", image, mp, *extra)
        try:
            root = Path(mp) / "volumes" / volume
            t = time.perf_counter()
            os.listdir(root)  # opens the volume: unlocking (the key stretch) is not throughput
            unlock = time.perf_counter() - t
            cpu = mount_cpu(mp)
            t = time.perf_counter()
            n = read_all(root, paths)
            return n, time.perf_counter() - t, unlock, mount_cpu(mp) - cpu
        finally:
            rpfs("umount", mp)


def cipher_only(repeat: int) -> int:
    """CPU ms/MiB of the cipher without a mount (see the module docstring)."""
    import random

    from formats.bitlocker import cipher, fvecrypt

    rnd = random.Random(1)
    cases = {}
    for m in ("xts128", "cbc128", "elephant128"):
        for size in (128 << 10, 1 << 20, 4 << 20):
            c = cipher.SectorCipher(METHODS[m], rnd.randbytes(64), 512)
            data, out = rnd.randbytes(size), bytearray(size)
            cases[f"{m} decrypt_into {size >> 10} KiB"] = (
                lambda c=c, d=data, o=out: c.decrypt_into(d, 1 << 30, o), size)
    n, ss = 128 << 10, 512
    ecb, ct, out = rnd.randbytes(n), rnd.randbytes(n), bytearray(n)
    ivs, keys = rnd.randbytes(n // ss * 16), rnd.randbytes(n // ss * 32)
    for path in fvecrypt.PATHS:
        cases[f"elephant C pass [{path}] 128 KiB"] = (
            lambda p=path: fvecrypt.cbc_elephant_decrypt(out, ecb, ct, ivs, keys, ss, p), n)
    key, tweak = rnd.randbytes(16), rnd.randbytes(16)
    for path in fvecrypt.PATHS:
        for aes in fvecrypt.AES_PATHS:
            cases[f"elephant all in C [{path}, {aes}] 128 KiB"] = (
                lambda p=path, a=aes: fvecrypt.cbc_elephant_sectors(out, ct, 1 << 30, key, tweak,
                                                                     ss, p, a), n)
    times: dict[str, list[float]] = {}
    for _ in range(repeat):
        for name, (fn, size) in cases.items():
            reps = max(1, (32 << 20) // size)
            t = time.process_time()
            for _ in range(reps):
                fn()
            times.setdefault(name, []).append((time.process_time() - t) * 1000 / (reps * size / MiB))
    print(f"CPU ms/MiB, best-worst of {repeat}, 512-byte sectors, load {os.getloadavg()[0]:.1f}")
    for name, v in times.items():
        print(f"  {name:40s} {min(v):6.3f} - {max(v):6.3f}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default="xts128,cbc128,elephant128")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--cipher", action="store_true", help="time the cipher in process, no mount")
    args = ap.parse_args()
    if args.cipher:
        return cipher_only(args.repeat)
    work = REPO / ".cache" / "bench-bitlocker"
    work.mkdir(parents=True, exist_ok=True)
    plain = work / "plain.img"
    paths = [f"random-{i}.bin" for i in range(FILES)]
    if not plain.exists():
        ntfs.mkntfs(plain, FILES * FILE_SIZE + 256 * MiB, cluster=4096, sector=512,
                    label="bench", hidden_sectors=2048, serial=0x1234)
        with tempfile.TemporaryDirectory(prefix="rpfs-bench-mk-") as mnt:
            with ntfs.mounted(plain, Path(mnt)):
                for p in paths:
                    with open(Path(mnt) / p, "wb") as f:
                        for _ in range(FILE_SIZE // MiB):
                            f.write(os.urandom(MiB))
    images = {"plain": (plain, f"{plain.stem}-p0", None)}
    for m in args.methods.split(","):
        img = work / f"{m}.img"
        keys = work / f"{m}.keys"
        if not img.exists():
            info = blfx.encrypt_volume(plain, img, method=METHODS[m], protectors=("recovery",))
            keys.write_text(info["recovery_password"] + "\n")
        images[m] = (img, f"{m}-p0", keys)
    best: dict[str, float] = {}
    cpu: dict[str, float] = {}
    for _ in range(args.repeat):
        for name, (img, vol, keys) in images.items():
            n, s, unlock, used = one_run(img, vol, keys, paths)
            best[name] = max(best.get(name, 0.0), n / MiB / s)
            cpu[name] = min(cpu.get(name, 1e9), used * 1000 / (n / MiB))
            print(f"  {name:12s} {n / MiB:7.1f} MiB in {s:5.2f} s = {n / MiB / s:6.1f} MiB/s, "
                  f"mount process CPU {used * 1000 / (n / MiB):.2f} ms/MiB "
                  f"(opening the volume: {unlock:.2f} s)", file=sys.stderr)
    print(f"{'image':12s} {'MiB/s':>8s} {'vs plain':>9s} {'CPU ms/MiB':>11s} {'plain/this':>11s}")
    for name, v in best.items():
        print(f"{name:12s} {v:8.1f} {v / best['plain']:8.0%} {cpu[name]:11.2f} "
              f"{cpu['plain'] / cpu[name]:10.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
