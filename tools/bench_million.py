#!/usr/bin/env python3
"""Memory of the mount on a 1,000,000-entry volume: ``sudo .venv/bin/python tools/bench_million.py``.

Issue 8's bound: the serving daemon stays under 300 MiB RSS while a volume of a million
entries is walked and 10 GiB are copied out of it. The volume is made by the real tools
(mkntfs, then ntfs-3g populates it): 1,000 directories of 1,000 small files, and ten 1 GiB
files (each MiB unique, compressible). It is backed up as a raw disk (``rpfs backup``),
then, side by side, each of

- ``repo``: ``rpfs mount`` of the repository (the user's path),
- ``image``: ``rpfs mount`` of the raw image,
- ``ntfs-3g``: ``ntfs-3g -o ro`` of the raw image (the peer),

is walked cold (caches dropped; ``find -printf`` stats every entry) and the 10 GiB are
read out (``cat > /dev/null``); the daemon's RSS is taken after each, and its peak
(``VmHWM``, after the walk and at the end). A sample of the files is checked against what
was written. Results go to ``docs/bench_million.json``; the last line is the million row
of issue 17 (peak RSS during the walk, target 150 MiB). ``--big-files 0`` builds the
million entries alone (minutes, not an hour) and skips the copy; ``--checkout DIR``
serves the mount from another checkout, to compare versions on one volume. The image and repository are kept in ``.cache/bench_million``
(~12 GiB of disk; ``--rebuild`` makes them again).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tools.bench_mount import drop_caches, rss_of, run, serving_pids, unmount, wait_mounted  # noqa: E402

CACHE = REPO / ".cache" / "bench_million"
MiB, GiB = 1 << 20, 1 << 30
DIRS, FILES = 1000, 1000
BIG_FILES, BIG_SIZE = 10, GiB
VOLUME_SIZE = 12 * GiB
VM = "million"
LIMIT = 300 * MiB
TARGET = 150 * MiB  # issue 17: the daemon's peak RSS during the walk


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def small_content(d: int, i: int) -> bytes:
    return f"directory {d} file {i}\n".encode()


def big_block(n: int, b: int) -> bytes:
    """MiB ``b`` of big file ``n``: unique (its own header), compressible."""
    head = f"big file {n} MiB {b}\n".encode()
    return (head + bytes(64 - len(head)) + b"rpfs million-entry benchmark text. " * 2) * (MiB // 134) \
        + bytes(MiB - (MiB // 134) * 134)


def build(rebuild: bool, big_files: int) -> tuple[Path, Path]:
    cache = CACHE if big_files == BIG_FILES else CACHE.with_name(f"{CACHE.name}-big{big_files}")
    image, repo = cache / "million.img", cache / "repo"
    if (cache / "done").exists() and not rebuild:
        return image, repo
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    with open(image, "wb") as f:
        f.truncate(VOLUME_SIZE)
    run(["mkntfs", "-F", "-Q", "-q", "-L", "million", str(image)], timeout=600)
    mnt = cache / "populate"
    mnt.mkdir()
    run(["ntfs-3g", "-o", "big_writes", str(image), str(mnt)])
    try:
        t0 = time.monotonic()
        for d in range(DIRS):
            top = mnt / "tree" / f"d{d:04d}"
            top.mkdir(parents=True)
            for i in range(FILES):
                fd = os.open(top / f"f{i:04d}.txt", os.O_CREAT | os.O_WRONLY, 0o644)
                os.write(fd, small_content(d, i))
                os.close(fd)
            if d % 100 == 99:
                log(f"{(d + 1) * FILES:,} files ({time.monotonic() - t0:.0f} s)")
        (mnt / "big").mkdir()
        for n in range(big_files):
            with open(mnt / "big" / f"part-{n:02d}.bin", "wb") as f:
                for b in range(BIG_SIZE // MiB):
                    f.write(big_block(n, b))
            log(f"big file {n + 1}/{big_files}")
    finally:
        unmount(mnt)
    log("rpfs backup")
    rpfs = [sys.executable, "-m", "rpfs"]
    run(rpfs + ["init", str(repo)], cwd=REPO)
    run(rpfs + ["backup", str(repo), str(image), "--vm", VM, "--no-index"], cwd=REPO, timeout=7200)
    (cache / "done").touch()
    return image, repo


def measure(kind: str, image: Path, repo: Path, big_files: int, checkout: Path = REPO) -> dict:
    mp = image.parent / f"mnt-{kind}"
    mp.mkdir(exist_ok=True)
    rpfs = [str(checkout / ".venv" / "bin" / "python"), "-m", "rpfs"]
    if kind == "repo":
        run(rpfs + ["mount", str(repo), str(mp)], cwd=checkout)
    elif kind == "image":
        run(rpfs + ["mount", str(image), str(mp)], cwd=checkout)
    else:
        run(["ntfs-3g", "-o", "ro", str(image), str(mp)])
    try:
        wait_mounted(mp)
        pids = serving_pids([str(mp)])
        if kind == "repo":
            rp = os.readlink(mp / VM / "latest")
            vol = mp / VM / rp / "volumes" / f"{image.stem}-p0"
        elif kind == "image":
            vol = mp / "volumes" / f"{image.stem}-p0"
        else:
            vol = mp
        out = {"rss_start": rss_of(pids)}
        drop_caches()
        t0 = time.monotonic()
        walk = subprocess.run(["find", str(vol), "-printf", "%y %s\\n"], capture_output=True,
                              check=True).stdout
        out["walk_seconds"] = round(time.monotonic() - t0, 2)
        out["entries"] = walk.count(b"\n")
        out["rss_after_walk"] = rss_of(pids)
        out["rss_peak_walk"] = rss_of(pids, "VmHWM")
        t0 = time.monotonic()
        if big_files:
            run(["sh", "-c", f"cat {vol}/big/*.bin > /dev/null"], timeout=7200)
        out["copy_seconds"] = round(time.monotonic() - t0, 2)
        out["rss_after_copy"] = rss_of(pids)
        out["rss_peak"] = rss_of(pids, "VmHWM")
        out["sample_ok"] = check_sample(vol, big_files)
        return out
    finally:
        unmount(mp)


def check_sample(vol: Path, big_files: int) -> bool:
    rnd = random.Random(7)
    for _ in range(200):
        d, i = rnd.randrange(DIRS), rnd.randrange(FILES)
        if (vol / "tree" / f"d{d:04d}" / f"f{i:04d}.txt").read_bytes() != small_content(d, i):
            return False
    for _ in range(20 if big_files else 0):
        n, b = rnd.randrange(big_files), rnd.randrange(BIG_SIZE // MiB)
        with open(vol / "big" / f"part-{n:02d}.bin", "rb") as f:
            f.seek(b * MiB)
            if f.read(MiB) != big_block(n, b):
                return False
    return True


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rebuild", action="store_true", help="make the volume and repository again")
    ap.add_argument("--only", choices=["repo", "image", "ntfs-3g"], action="append")
    ap.add_argument("--big-files", type=int, default=BIG_FILES, metavar="N",
                    help=f"1 GiB files to copy out after the walk (default {BIG_FILES}; 0: the "
                         "walk only, a volume built in minutes, kept apart)")
    ap.add_argument("--checkout", type=Path, default=REPO,
                    help="the rpfs checkout (with its .venv) that serves the mount: compare "
                         "two versions on one volume")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_million: needs root (drop_caches, mounts)", file=sys.stderr)
        return 2
    image, repo = build(args.rebuild, args.big_files)
    results = {}
    for kind in args.only or ["repo", "image", "ntfs-3g"]:
        log(f"{kind}: walk and copy")
        results[kind] = r = measure(kind, image, repo, args.big_files, args.checkout.resolve())
        log(f"{kind}: {r}")
    print(f"\n{'':10} {'entries':>9} {'walk':>8} {'copy 10 GiB':>12} {'RSS walk':>9} "
          f"{'RSS copy':>9} {'peak':>9}  sample")
    for kind, r in results.items():
        print(f"{kind:10} {r['entries']:>9,} {r['walk_seconds']:>7.1f}s {r['copy_seconds']:>11.1f}s "
              f"{r['rss_after_walk'] / MiB:>8.0f}M {r['rss_after_copy'] / MiB:>8.0f}M "
              f"{r['rss_peak'] / MiB:>8.0f}M  {'ok' if r['sample_ok'] else 'WRONG'}")
    for kind in ("repo", "image"):  # issue 17's row, as bench_peers prints its rows
        if kind in results:
            peak = results[kind]["rss_peak_walk"]
            print(f"daemon RSS in the 1,000,000-entry walk ({kind} mount): {peak / MiB:.0f} MiB "
                  f"(target <= {TARGET / MiB:.0f} MiB: {'met' if peak <= TARGET else 'missed'})")
    doc = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "load_average": os.getloadavg(), "limit_bytes": LIMIT, "target_walk_bytes": TARGET,
           "big_files": args.big_files, "checkout": str(args.checkout), "results": results}
    out = REPO / "docs" / "bench_million.json"
    if args.big_files != BIG_FILES or args.only or args.checkout.resolve() != REPO:
        out = image.parent / "bench_million.json"  # a partial run: not the record
    out.write_text(json.dumps(doc, indent=1) + "\n")
    log(f"results in {out}")
    bad = [k for k in ("repo", "image") if k in results and results[k]["rss_peak"] >= LIMIT]
    return 1 if bad or not all(r["sample_ok"] for r in results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
