"""s3:// repositories beside local ones, in one run: backup, mount reads, attach.

    .venv/bin/python tools/bench_s3.py                   # starts its own gateway (shared/s3)
    .venv/bin/python tools/bench_s3.py --size 1024 --rps 100 --json out.json

With AWS_ENDPOINT_URL (and keys) already set, that server is used instead of a new gateway.
Every figure is the best of --repeat runs (the machine is shared: the best run is the least
disturbed), and peers run side by side, so read the ratios rather than the absolutes.

  backup   ``rpfs backup`` of a synthetic VM (--size MiB: half random, a quarter text, a
           quarter zeros; or --source DIR) into: a directory; a directory with --encrypt; s3:// (encrypted,
           the default); s3:// --no-encrypt. MB/s of source while backing up (the run's own
           time, as ``backup --json`` reports it) and the ratio to the directory; beside it
           the whole command's time (start-up, key derivation, catalog sync included).
  read     the stored disk file read through ``rpfs mount`` with 1 MiB reads: from the
           directory (page cache warm: the best a local repository does); from the bucket
           with a cold cache (new cache directory, new mount); again after a remount (the
           block cache on disk warm, the mount's memory cache cold).
  attach   --rps recovery points of a small VM in a bucket; then ``rpfs list`` with a new,
           empty cache directory (a fresh machine: the catalog is built from the objects).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
MiB = 1 << 20


def log(msg: str) -> None:
    print(f"[bench_s3 {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rpfs(*args, env=None) -> subprocess.CompletedProcess:
    r = subprocess.run([PY, "-m", "rpfs", *map(str, args)], capture_output=True, cwd=ROOT,
                       env={**os.environ, **(env or {})})
    if r.returncode:
        raise SystemExit(f"rpfs {' '.join(map(str, args))}: {r.stderr.decode().strip()}")
    return r


def make_source(d: Path, size_mib: int, seed: int = 1) -> Path:
    vm = d / "bench01"
    disk = vm / "Virtual Hard Disks" / "disk0.vhdx"
    disk.parent.mkdir(parents=True, exist_ok=True)
    rnd = random.Random(seed)
    words = [bytes(rnd.choices(b"abcdefghijklmnopqrstuvwxyz", k=rnd.randrange(2, 10))) for _ in range(4000)]
    with open(disk, "wb") as f:
        for i in range(size_mib):
            kind = i % 4
            if kind < 2:
                f.write(rnd.randbytes(MiB))
            elif kind == 2:
                text = b" ".join(rnd.choices(words, k=MiB // 5))
                f.write(text[:MiB].ljust(MiB, b"."))
            else:
                f.write(bytes(MiB))
    (vm / "vm.vmcx").write_bytes(b"config" * 100)
    return vm


def start_gateway(tmp: Path) -> tuple[dict, Path | None]:
    if os.environ.get("AWS_ENDPOINT_URL"):
        return {}, None
    for base in (ROOT.parent / "shared", Path("/work/shared")):
        script = base / "s3" / "s3-start.sh"
        if script.exists():
            break
    else:
        raise SystemExit("no shared/s3/s3-start.sh and no AWS_ENDPOINT_URL")
    gw = tmp / "gw"
    subprocess.run([str(script), str(gw)], check=True, capture_output=True,
                   env={**os.environ, "S3_STORE": os.environ.get("S3_STORE", "memstore")})
    env = dict(line.strip().split("=", 1) for line in open(gw / "s3.env") if "=" in line)
    return {"AWS_ENDPOINT_URL": env["S3_ENDPOINT"], "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
            "AWS_DEFAULT_REGION": env.get("AWS_DEFAULT_REGION", "us-east-1")}, gw


def bench_backup(tmp: Path, src: Path, size: int, repeat: int) -> dict:
    peers = {"local": ([], False), "local-encrypted": (["--encrypt"], False),
             "s3": ([], True), "s3-no-encrypt": (["--no-encrypt"], True)}
    out = {}
    for name, (flags, remote) in peers.items():
        def run():
            addr = (f"s3://rpfs-bench/{name}-{os.urandom(4).hex()}" if remote
                    else str(tmp / f"{name}-{os.urandom(4).hex()}"))
            rpfs("init", addr, *flags, "--cache-dir", tmp / f"cache-{os.urandom(4).hex()}")
            t0 = time.monotonic()
            r = rpfs("backup", addr, src, "--time", "2026-11-01T02:00:00Z", "--json")
            return json.loads(r.stdout)["seconds"], time.monotonic() - t0
        runs = [run() for _ in range(repeat)]
        s, wall = min(r[0] for r in runs), min(r[1] for r in runs)
        out[name] = {"seconds": round(s, 2), "mb_per_s": round(size / s * MiB / 1e6, 1),
                     "command_seconds": round(wall, 2)}
        log(f"backup {name}: {out[name]['mb_per_s']} MB/s ({s:.2f} s backing up, {wall:.2f} s the whole command)")
    for name in out:
        out[name]["ratio_to_local"] = round(out[name]["mb_per_s"] / out["local"]["mb_per_s"], 2)
    return out


def read_through_mount(addr: str, cache: Path, mnt: Path) -> float:
    rpfs("mount", addr, mnt, "--cache-dir", cache)
    try:
        f = mnt / "bench01" / "latest" / "files" / "Virtual Hard Disks" / "disk0.vhdx"
        t0 = time.monotonic()
        n = 0
        with open(f, "rb", buffering=0) as fh:
            while True:
                b = fh.read(MiB)
                if not b:
                    break
                n += len(b)
        return n / (time.monotonic() - t0) / 1e6
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)


def bench_read(tmp: Path, src: Path, repeat: int) -> dict:
    local, remote = tmp / "read-local", f"s3://rpfs-bench/read-{os.urandom(4).hex()}"
    rpfs("init", local)
    rpfs("init", remote, "--cache-dir", tmp / "read-cache-0")
    for a in (local, remote):
        rpfs("backup", a, src, "--time", "2026-11-01T02:00:00Z", "--cache-dir", tmp / "read-cache-0")
    mnt = tmp / "mnt"
    mnt.mkdir(exist_ok=True)
    out = {}
    read_through_mount(str(local), tmp / "unused", mnt)          # page cache warm
    out["local"] = max(read_through_mount(str(local), tmp / "unused", mnt) for _ in range(repeat))
    cold, warm = [], []
    for i in range(repeat):
        cache = tmp / f"read-cache-{i + 1}"
        cold.append(read_through_mount(remote, cache, mnt))     # new cache: every block from the bucket
        warm.append(read_through_mount(remote, cache, mnt))     # remounted: blocks from the disk cache
    out["s3_cold"], out["s3_cache"] = max(cold), max(warm)
    res = {k: {"mb_per_s": round(v, 1), "ratio_to_local": round(v / out["local"], 2)} for k, v in out.items()}
    for k, v in res.items():
        log(f"read {k}: {v['mb_per_s']} MB/s ({v['ratio_to_local']}x local)")
    return res


def bench_attach(tmp: Path, n: int) -> dict:
    from rpfs.backup import backup
    from rpfs.cli.options import store_options
    from rpfs.store import Repository

    addr = f"s3://rpfs-bench/attach-{os.urandom(4).hex()}"
    vm = tmp / "attach" / "small01"
    vm.mkdir(parents=True)
    (vm / "base.vhdx").write_bytes(os.urandom(4 * MiB))
    with Repository.init(addr, store_options().with_(cache_dir=str(tmp / "attach-writer")),
                         chunk_size=256 << 10) as repo:
        for i in range(n):
            (vm / "diff.avhdx").write_bytes(os.urandom(256 << 10) + bytes(256 << 10))
            (vm / "vm.vmcx").write_bytes(b"config %d" % i)
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1767225600 + i * 3600))
            backup(repo, [str(vm)], time=when, show_progress=False)
    log(f"attach: {n} recovery points stored")
    times = []
    for i in range(2):
        t0 = time.monotonic()
        r = rpfs("list", addr, "small01", "--json", "--cache-dir", tmp / f"attach-fresh-{i}")
        times.append(time.monotonic() - t0)
        assert len(json.loads(r.stdout)) == n
    t0 = time.monotonic()
    rpfs("list", addr, "small01", "--json", "--cache-dir", tmp / "attach-fresh-0")
    again = time.monotonic() - t0
    res = {"recovery_points": n, "fresh_machine_seconds": round(min(times), 2),
           "warm_cache_seconds": round(again, 2)}
    log(f"attach: fresh cache {res['fresh_machine_seconds']} s, warm {res['warm_cache_seconds']} s")
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=512, help="source size in MiB (default 512)")
    ap.add_argument("--rps", type=int, default=100, help="recovery points for the attach test")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--only", default="backup,read,attach")
    ap.add_argument("--source", help="back up this VM folder instead of the synthetic one"
                                     " (backup only; e.g. the fixture VM .cache/fixtures/small-*/vm/state1)")
    ap.add_argument("--json", help="write the results here too")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    tmp = Path(tempfile.mkdtemp(prefix="rpfs-bench-s3-"))
    gw = None
    try:
        env, gw = start_gateway(tmp)
        os.environ.update(env)
        os.environ.setdefault("RPFS_PASSWORD", "bench passphrase")
        os.environ["XDG_CACHE_HOME"] = str(tmp / "xdg")
        src = make_source(tmp / "src", args.size)
        only = args.only.split(",")
        res = {"size_mib": args.size, "source": args.source or "synthetic", "load": os.getloadavg()[0], "cpus": len(os.sched_getaffinity(0))}
        if "backup" in only:
            if args.source:
                size = sum(p.stat().st_size for p in Path(args.source).rglob("*") if p.is_file()) / MiB
                res["backup"] = bench_backup(tmp, Path(args.source), size, args.repeat)
            else:
                res["backup"] = bench_backup(tmp, src, args.size, args.repeat)
        if "read" in only:
            res["read"] = bench_read(tmp, src, args.repeat)
        if "attach" in only:
            res["attach"] = bench_attach(tmp, args.rps)
        print(json.dumps(res, indent=1))
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    finally:
        if gw is not None:
            for base in (ROOT.parent / "shared", Path("/work/shared")):
                stop = base / "s3" / "s3-stop.sh"
                if stop.exists():
                    subprocess.run([str(stop), str(gw), "--purge"], capture_output=True)
                    break
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
