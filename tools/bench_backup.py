"""Backup throughput side by side: rpfs vs restic vs borg, with sha256sum/b3sum as ceiling.

One multi-GiB dynamic VHDX made by qemu-img from mixed data (4 MiB stripes cycling random /
real files of this machine's /usr / zero, so every VHDX payload block holds some of each, then 512 MiB of zeros;
``-S 0`` so zero blocks are allocated and written, as a fixed/busy VHDX has them) is cached under ``.cache/bench/``. Each tool backs it up twice into a
fresh repository (first = everything new, second = unchanged file); wall-clock seconds of
the real command, MB/s of the file size, and the repository size are reported. The file is
read once beforehand so every run reads from the page cache (no cache dropping: the
machine is shared).

    .venv/bin/python -m tools.bench_backup [--gib 3] [--json] [--skip restic,borg]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / ".cache" / "bench"
VERSION = 2   # bump when the image recipe changes
MiB = 1 << 20
STRIPE = 4 * MiB


def _corpus():
    """Real files of this machine (/usr/lib, /usr/share), concatenated: compressible the
    way disk contents are (executables, libraries, text), and mostly unique."""
    for top in ("/usr/lib", "/usr/share", "/usr/bin"):
        for root, dirs, names in os.walk(top):
            dirs.sort()
            for n in sorted(names):
                p = os.path.join(root, n)
                try:
                    if os.path.isfile(p) and not os.path.islink(p):
                        with open(p, "rb") as f:
                            yield f.read()
                except OSError:
                    continue


def image(gib: int) -> Path:
    """The cached benchmark VHDX (built on first use)."""
    out = BENCH / f"mixed-v{VERSION}-{gib}g.vhdx"
    if out.exists():
        return out
    BENCH.mkdir(parents=True, exist_ok=True)
    raw = BENCH / f"mixed-v{VERSION}-{gib}g.raw.tmp"
    data_bytes = gib * 1024 * MiB
    corpus, buf = _corpus(), bytearray()
    with open(raw, "wb") as f:
        for i in range(data_bytes // STRIPE):
            kind = i % 3
            if kind == 0:
                f.write(os.urandom(STRIPE))
            elif kind == 1:
                while len(buf) < STRIPE:
                    buf += next(corpus, None) or os.urandom(STRIPE)
                f.write(buf[:STRIPE])
                del buf[:STRIPE]
            else:
                f.seek(STRIPE, os.SEEK_CUR)
        f.truncate(data_bytes + 512 * MiB)
    tmp = out.with_suffix(".tmp")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "vhdx", "-S", "0",
                    str(raw), str(tmp)], check=True)
    raw.unlink()
    tmp.rename(out)
    return out


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(cmd: list[str], env=None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=int, default=3, help="GiB of data in the image (plus 512 MiB zeros)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--skip", default="", help="comma-separated: restic,borg,rpfs,hash")
    a = ap.parse_args(argv)
    skip = set(filter(None, a.skip.split(",")))
    img = image(a.gib)
    size = img.stat().st_size
    subprocess.run(["cat", str(img)], stdout=subprocess.DEVNULL, check=True)   # page cache
    work = BENCH / "run"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    env = dict(os.environ, RESTIC_PASSWORD="bench", BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
               BORG_RELOCATED_REPO_ACCESS_IS_OK="yes", RESTIC_CACHE_DIR=str(work / "restic-cache"),
               BORG_BASE_DIR=str(work / "borg-base"))
    py = str(ROOT / ".venv" / "bin" / "python")
    rows = []

    def add(tool, first, second=None, repo=None):
        rows.append({"tool": tool, "first_s": round(first, 2), "first_MBps": round(size / 1e6 / first),
                     "second_s": None if second is None else round(second, 2),
                     "second_MBps": None if second is None else round(size / 1e6 / second),
                     "repo_bytes": None if repo is None else du(repo)})

    try:
        if "hash" not in skip:
            add("sha256sum", timed(["sha256sum", str(img)]))
            add("b3sum", timed(["b3sum", str(img)]))
        if "rpfs" not in skip:
            r = work / "rpfs"
            subprocess.run([py, "-m", "rpfs", "init", str(r)], check=True, capture_output=True)
            t1 = timed([py, "-m", "rpfs", "backup", str(r), str(img), "--time", "2024-01-01T00:00:00Z"])
            t2 = timed([py, "-m", "rpfs", "backup", str(r), str(img), "--time", "2024-01-02T00:00:00Z"])
            add("rpfs backup", t1, t2, r)
            # like restic, the plain second run skips the unchanged file; --force-read reads it
            t3 = timed([py, "-m", "rpfs", "backup", str(r), str(img), "--time", "2024-01-03T00:00:00Z",
                        "--force-read"])
            rows.append(dict(rows[-1], tool="rpfs backup (2nd with --force-read)",
                             second_s=round(t3, 2), second_MBps=round(size / 1e6 / t3)))
            tv = timed([py, "-m", "rpfs", "verify", str(r), "--read-data"])
            add("rpfs verify --read-data (3 RPs)", tv)
            shutil.rmtree(r)
        if "restic" not in skip and shutil.which("restic"):
            r = work / "restic"
            subprocess.run(["restic", "init", "-r", str(r)], check=True, capture_output=True, env=env)
            t1 = timed(["restic", "-r", str(r), "backup", str(img)], env)
            t2 = timed(["restic", "-r", str(r), "backup", str(img)], env)
            add("restic backup", t1, t2, r)
            # restic's second run skips the file by its metadata; --force reads it like rpfs does
            t3 = timed(["restic", "-r", str(r), "backup", "--force", str(img)], env)
            rows.append(dict(rows[-1], tool="restic backup (2nd with --force)",
                             second_s=round(t3, 2), second_MBps=round(size / 1e6 / t3)))
            shutil.rmtree(r)
        if "borg" not in skip and shutil.which("borg"):
            r = work / "borg"
            subprocess.run(["borg", "init", "--encryption", "none", str(r)], check=True,
                           capture_output=True, env=env)
            t1 = timed(["borg", "create", "--compression", "zstd", f"{r}::a", str(img)], env)
            t2 = timed(["borg", "create", "--compression", "zstd", f"{r}::b", str(img)], env)
            add("borg create --compression zstd", t1, t2, r)
            shutil.rmtree(r)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    cond = {"file": str(img), "file_bytes": size, "cpus": len(os.sched_getaffinity(0)),
            "loadavg": os.getloadavg(), "page_cache": True,
            "restic": subprocess.run(["restic", "version"], capture_output=True, text=True).stdout.strip()
            if shutil.which("restic") else None,
            "borg": subprocess.run(["borg", "--version"], capture_output=True, text=True).stdout.strip()
            if shutil.which("borg") else None}
    if a.json:
        print(json.dumps({"conditions": cond, "results": rows}, indent=1))
        return 0
    print(f"{img.name}: {size / 2**30:.2f} GiB; {cond['cpus']} cpus, load {cond['loadavg'][0]:.1f}; "
          "file in page cache; restic encrypts (0.14 has no plaintext mode)")
    hdr = ["tool", "1st s", "1st MB/s", "2nd s", "2nd MB/s", "repo MiB"]
    out = [hdr] + [[r["tool"], str(r["first_s"]), str(r["first_MBps"]),
                    "" if r["second_s"] is None else str(r["second_s"]),
                    "" if r["second_MBps"] is None else str(r["second_MBps"]),
                    "" if r["repo_bytes"] is None else f"{r['repo_bytes'] / MiB:.0f}"] for r in rows]
    w = [max(len(r[i]) for r in out) for i in range(len(hdr))]
    for r in out:
        print("  ".join(c.ljust(x) if i == 0 else c.rjust(x) for i, (c, x) in enumerate(zip(r, w))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
