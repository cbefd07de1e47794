"""Benchmark ntfs_reader next to sleuthkit on the same NTFS volume, in one run.

    .venv/bin/python tools/bench_ntfs.py                 # small fixture set, volume system-p3
    .venv/bin/python tools/bench_ntfs.py IMAGE [--json]  # any raw NTFS volume image

Measures (page cache warm: the image is read once first):
  walk   full-volume enumeration + stat of every entry (files/s) vs ``fls -r -p``
  read   the largest plain / LZNT1-compressed / sparse files read whole (MB/s) vs ``icat``
         of the same inodes (icat's figure includes one process start per file)
  lookup one random path lookup on a fresh Volume (median µs)
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ntfs_reader import Volume  # noqa: E402
from streams.stream import FileStream  # noqa: E402


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def warm(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(8 << 20):
            pass


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", nargs="?", help="raw NTFS volume (default: fixture system-p3)")
    ap.add_argument("--files", type=int, default=20, help="largest N files for the read test")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.image is None:
        from tools.fixtures import build
        args.image = str(build("small").volumes["system-p3"].image)
    warm(args.image)
    out = {"image": args.image}

    # walk: ours (wall and CPU time: the machine may be shared)
    t, c = time.perf_counter(), time.process_time()
    vol = Volume(FileStream(args.image))
    entries = []
    for p, e in vol.walk():
        entries.append((p, e, e.size, e.times.modified, e.is_symlink))
    ours = time.perf_counter() - t
    out["entries"] = len(entries)
    out["walk_ours_s"] = ours
    out["walk_ours_cpu_s"] = time.process_time() - c
    out["walk_ours_files_per_s"] = len(entries) / ours
    t, c = time.perf_counter(), _children_cpu()
    fls = subprocess.run(["fls", "-r", "-p", args.image], capture_output=True, check=True)
    theirs = time.perf_counter() - t
    out["walk_fls_cpu_s"] = _children_cpu() - c
    out["walk_fls_s"] = theirs
    out["walk_fls_lines"] = fls.stdout.count(b"\n")
    out["walk_fls_files_per_s"] = out["walk_fls_lines"] / theirs

    # read: the largest regular files of each kind, whole, ours vs icat
    def kind(e):
        a = e.attributes
        return "compressed" if a & 0x800 else "sparse" if a & 0x200 else "plain"
    files = sorted(((size, p, e) for p, e, size, _, link in entries
                    if not link and not e.is_dir and size), key=lambda x: -x[0])
    buf = bytearray(4 << 20)
    out["read"] = {}
    for k in ("plain", "compressed", "sparse"):
        chosen = []
        for size, p, e in files:
            if kind(e) != k:
                continue
            try:
                e.open()
            except Exception:  # e.g. dedup placeholders: not readable by design
                continue
            chosen.append((size, p, e))
            if len(chosen) == args.files:
                break
        if not chosen:
            continue
        total = sum(s for s, _, _ in chosen)
        t = time.perf_counter()
        for size, p, e in chosen:
            s = e.open()
            pos = 0
            while pos < s.size:
                pos += s.readinto(pos, buf)
        ours = time.perf_counter() - t
        t = time.perf_counter()
        for size, p, e in chosen:
            subprocess.run(["icat", args.image, str(e.ref)], stdout=subprocess.DEVNULL,
                           check=True)
        theirs = time.perf_counter() - t
        out["read"][k] = dict(files=len(chosen), bytes=total, ours_s=ours,
                              ours_mb_s=total / ours / 1e6, icat_s=theirs,
                              icat_mb_s=total / theirs / 1e6)

    # lookup on a fresh volume
    sample = random.Random(1).sample([p for p, *_ in entries], min(200, len(entries)))
    times = []
    vol2 = Volume(FileStream(args.image))
    for p in sample:
        t = time.perf_counter()
        vol2.lookup(p)
        times.append(time.perf_counter() - t)
    out["lookup_median_us"] = statistics.median(times) * 1e6

    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(f"volume  {args.image}  ({out['entries']} entries)")
        print(f"walk    ntfs_reader {out['walk_ours_s']:.2f}s = {out['walk_ours_files_per_s']:,.0f} "
              f"files/s (CPU {out['walk_ours_cpu_s']:.2f}s)   fls -r {out['walk_fls_s']:.2f}s = "
              f"{out['walk_fls_files_per_s']:,.0f} lines/s (CPU {out['walk_fls_cpu_s']:.2f}s)")
        for k, r in out["read"].items():
            print(f"read    {k:10s} {r['files']} files, {r['bytes'] / 1e6:.1f} MB: ntfs_reader "
                  f"{r['ours_mb_s']:.0f} MB/s   icat {r['icat_mb_s']:.0f} MB/s")
        print(f"lookup  median {out['lookup_median_us']:.0f} µs (fresh volume, cold caches)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
