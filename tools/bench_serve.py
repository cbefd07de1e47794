"""Benchmark a download from ``rpfs serve`` against ``rpfs cat`` to a file, side by side.

    .venv/bin/python tools/bench_serve.py [--repo DIR] [--rounds 3] [--path /vm/rp/disks/x.raw]

Both read the same object of a repository holding the fixture VM (built in a temp dir
unless --repo is given) into a file on the same disk. Rounds alternate the two peers so a
loaded machine disturbs both alike; each figure is the best of the rounds, and the ratio is
download / cat. The server is started once (a download is served by a warm server, as in
use), and once more per round freshly started (its caches cold; the start is not timed);
``rpfs cat`` is a new process each time (as in use), so its time includes the start.
A second figure, "download x4", runs four downloads of the object at once and reports
their aggregate rate (they share the server's caches and worker threads).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RPFS = [sys.executable, "-m", "rpfs"]


def build_repo(work: Path) -> Path:
    from tools.fixtures import build

    fx = build("small")
    repo = work / "repo"
    subprocess.run(RPFS + ["init", str(repo)], check=True, capture_output=True)
    for i, state in enumerate(fx.vm_states, 1):
        subprocess.run(RPFS + ["backup", str(repo), str(state), "--vm", "web01", "--time",
                               f"2026-11-0{i}T02:00:00Z"], check=True, capture_output=True)
    return repo


def start(repo: Path, log: Path) -> tuple[subprocess.Popen, str]:
    with open(log, "wb") as err:
        proc = subprocess.Popen(RPFS + ["serve", str(repo), "--listen", "127.0.0.1:0"],
                                stderr=err, stdout=subprocess.DEVNULL)
    for _ in range(600):
        text = log.read_text()
        if " at http://" in text:
            return proc, text.split(" at ", 1)[1].split("/ ", 1)[0]
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("bench_serve: rpfs serve did not start")


def cat(repo: Path, path: str, dest: Path) -> float:
    t = time.perf_counter()
    with open(dest, "wb") as out:
        subprocess.run(RPFS + ["cat", str(repo), path], stdout=out, check=True)
    return time.perf_counter() - t


def download(base: str, path: str, dest: Path) -> float:
    t = time.perf_counter()
    url = f"{base}/api/download?{urllib.parse.urlencode({'path': path})}"
    with urllib.request.urlopen(url) as r, open(dest, "wb") as out:
        while block := r.read(1 << 20):
            out.write(block)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path)
    ap.add_argument("--path", default="/web01/latest/disks/system.raw")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-serve-", dir=ROOT / ".cache") as tmp:
        work = Path(tmp)
        repo = args.repo or build_repo(work)
        proc, base = start(repo, work / "serve.log")
        try:
            size = None
            best = {"rpfs cat > file": float("inf"), "download (new server)": float("inf"),
                    "download": float("inf"), "download x4": float("inf")}
            for _ in range(args.rounds):
                best["rpfs cat > file"] = min(best["rpfs cat > file"], cat(repo, args.path, work / "a"))
                fresh, fresh_base = start(repo, work / "fresh.log")
                try:
                    best["download (new server)"] = min(best["download (new server)"],
                                                        download(fresh_base, args.path, work / "b"))
                finally:
                    fresh.terminate()
                    fresh.wait(timeout=30)
                best["download"] = min(best["download"], download(base, args.path, work / "b"))
                size = os.path.getsize(work / "a")
                assert os.path.getsize(work / "b") == size
                assert subprocess.run(["cmp", "-s", work / "a", work / "b"]).returncode == 0
                t = time.perf_counter()
                with concurrent.futures.ThreadPoolExecutor(4) as pool:
                    list(pool.map(lambda i: download(base, args.path, work / f"c{i}"), range(4)))
                best["download x4"] = min(best["download x4"], (time.perf_counter() - t) / 4)
                for i in range(4):
                    os.unlink(work / f"c{i}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    print(f"{args.path}: {size / 2**20:.0f} MiB, best of {args.rounds} rounds "
          f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)")
    for name, secs in best.items():
        print(f"  {name:<22} {size / secs / 1e6:8.0f} MB/s")
    for name in ("download (new server)", "download"):
        print(f"  {name + ' / cat':<22} {best['rpfs cat > file'] / best[name]:8.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
