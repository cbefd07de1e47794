"""What starting an ``rpfs`` command costs, for two versions of the code side by side.

    .venv/bin/python tools/bench_startup.py --before DIR [--runs 5] [--json OUT] [--only TEXT]

DIR holds an older source tree (e.g. ``mkdir DIR && git archive main | tar -x -C DIR``);
the current tree is "after". Each workload runs alternately before/after, ``--runs``
times; medians of wall time are printed with their ratio, and the modules' own import
time (``-X importtime``, summed) of one run of each. Bytecode is written and used (as in an
installed rpfs: PYTHONDONTWRITEBYTECODE is removed; ``--no-bytecode`` compiles rpfs's
modules at each start instead), caches are warm (nothing is dropped:
the machine is shared). Workloads:

- ``rpfs --help``; ``rpfs ls`` of a repository's root and of a VM with 1,000 recovery points;
- ``rpfs restore`` of the 4,000 small files of tools/bench_peers.py's data (reused, never built
  here) to /dev/shm;
- mount to first listing (``rpfs mount``, ``readlink <vm>/latest``, list its directory): the
  1,000-recovery-point repository's ``files/``, and the bench_peers volume's root;
- ``rpfs backup`` of the fixture VM's second state on top of its first, with and without
  ``--no-index`` (the first state indexed beforehand, as a user's repository is).

The 1,000-recovery-point repository is built once (``rpfs backup --time`` of a two-file folder,
in one process) under ``--work`` (default /tmp/rpfs-bench-startup).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools.bench_mount import run, unmount, wait_mounted  # noqa: E402

PEERS = ROOT / ".cache" / "bench_peers" / "v2"


NO_BYTECODE = False  # --no-bytecode


def env_for(code: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")}
    env["PYTHONPATH"] = str(code)
    if NO_BYTECODE:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def rpfs(code: Path, *args, importtime: bool = False) -> subprocess.CompletedProcess:
    flags = ["-X", "importtime"] if importtime else []
    return run([sys.executable, *flags, "-m", "rpfs", *args], env=env_for(code), cwd="/",
               timeout=600)


def import_ms(stderr: str) -> float:
    return sum(int(m) for m in re.findall(r"^import time:\s+(\d+) \|", stderr, re.M)) / 1000


def build_1000(code: Path, repo: Path) -> None:
    if (repo / "catalog.sqlite").exists():
        return
    tiny = repo.parent / "tiny"
    (tiny / "Virtual Machines").mkdir(parents=True, exist_ok=True)
    (tiny / "a.txt").write_text("hello\n")
    (tiny / "Virtual Machines" / "x.vmcx").write_text("cfg\n")
    script = f"""
import datetime as dt
from rpfs.cli import main
assert main(["init", {str(repo)!r}]) == 0
t0 = dt.datetime(2024, 1, 1, 2, tzinfo=dt.timezone.utc)
for i in range(1000):
    t = (t0 + dt.timedelta(hours=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert main(["backup", {str(repo)!r}, {str(tiny)!r}, "--vm", "vm1", "--time", t,
                 "--no-index"]) == 0
"""
    run([sys.executable, "-c", script], env=env_for(code), timeout=1800)


def mount_and_list(code: Path, repo: Path, vm: str, inner: str, mp: Path) -> None:
    mp.mkdir(parents=True, exist_ok=True)
    rpfs(code, "mount", repo, mp)
    try:
        wait_mounted(mp)
        rp = os.readlink(mp / vm / "latest")
        os.listdir(mp / vm / rp / inner)
    finally:
        unmount(mp)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", type=Path, required=True, help="the older source tree")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", type=Path, default=Path("/tmp/rpfs-bench-startup"))
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--only", action="append", metavar="TEXT",
                    help="run only the workloads whose name contains TEXT (repeatable)")
    ap.add_argument("--no-bytecode", action="store_true",
                    help="compile rpfs's modules at each start (their .pyc removed, "
                         "PYTHONDONTWRITEBYTECODE=1), as in a checkout whose environment sets it")
    args = ap.parse_args(argv)
    global NO_BYTECODE
    NO_BYTECODE = args.no_bytecode
    sides = {"before": args.before.resolve(), "after": ROOT}
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    rp1000 = work / "repo1000"
    build_1000(ROOT, rp1000)
    peers = json.loads((PEERS / "data.json").read_text()) if (PEERS / "data.json").exists() else None
    peers_repo = PEERS / "repo"
    from tools.fixtures import build

    s1, s2 = build("small").vm_states[:2]
    out_dir = Path("/dev/shm/rpfs-bench-startup")

    def restore(code):
        shutil.rmtree(out_dir, ignore_errors=True)
        rpfs(code, "restore", peers_repo, f"/bench/latest/volumes/{peers['disk']}-p1/small", out_dir)

    def backup_setup(code, indexed):
        repo = work / "bk"
        shutil.rmtree(repo, ignore_errors=True)
        rpfs(code, "init", repo)
        rpfs(code, "backup", repo, s1, "--vm", "web01", "--time", "2026-11-01T02:00:00Z",
             *([] if indexed else ["--no-index"]))
        return repo

    # name -> (setup(code) -> arg, timed(code, arg), argv for -X importtime or None)
    workloads = {
        "rpfs --help": (None, lambda c, _: rpfs(c, "--help"), ["--help"]),
        "rpfs ls REPO / (bench_peers repo)": (None, lambda c, _: rpfs(c, "ls", peers_repo, "/"),
                                              ["ls", str(peers_repo), "/"]),
        "rpfs ls REPO /vm1 (1,000 RPs)": (None, lambda c, _: rpfs(c, "ls", rp1000, "/vm1"),
                                          ["ls", str(rp1000), "/vm1"]),
        "rpfs restore 4,000 small files": (None, lambda c, _: restore(c), None),
        "mount to first listing (1,000 RPs, files/)": (
            None, lambda c, _: mount_and_list(c, rp1000, "vm1", "files", work / "mnt"), None),
        "mount to first listing (bench_peers volume root)": (
            None, lambda c, _: mount_and_list(c, peers_repo, "bench", "volumes/bench-p1",
                                              work / "mnt"), None),
        "rpfs backup state 2 --no-index": (
            lambda c: backup_setup(c, False),
            lambda c, repo: rpfs(c, "backup", repo, s2, "--vm", "web01", "--time",
                                 "2026-11-02T02:00:00Z", "--no-index"), None),
        "rpfs backup state 2 (indexing)": (
            lambda c: backup_setup(c, True),
            lambda c, repo: rpfs(c, "backup", repo, s2, "--vm", "web01", "--time",
                                 "2026-11-02T02:00:00Z"), None),
    }
    if peers is None:
        print(f"bench_startup: no {PEERS} (tools/bench_peers.py builds it): its rows skipped")
        workloads = {k: v for k, v in workloads.items() if "bench_peers" not in k
                     and "restore" not in k}
    if args.only:
        workloads = {k: v for k, v in workloads.items() if any(t in k for t in args.only)}
    if not os.path.exists("/dev/fuse"):
        workloads = {k: v for k, v in workloads.items() if not k.startswith("mount")}

    for code in sides.values():  # write both sides' bytecode once, or remove it
        if NO_BYTECODE:
            for pkg in ("rpfs", "formats", "ntfs_reader"):
                for d in (code / pkg).rglob("__pycache__"):
                    shutil.rmtree(d)
        else:
            rpfs(code, "ls", rp1000, "/")
    results = {}
    for name, (setup, timed, itargv) in workloads.items():
        samples = {side: [] for side in sides}
        for _ in range(args.runs):
            for side, code in sides.items():
                arg = setup(code) if setup else None
                t = time.perf_counter()
                timed(code, arg)
                samples[side].append(time.perf_counter() - t)
        row = {side: statistics.median(v) for side, v in samples.items()}
        if itargv:
            for side, code in sides.items():
                row[f"{side}_import_ms"] = import_ms(rpfs(code, *itargv, importtime=True).stderr)
        results[name] = row
        imp = (f"   imports {row['before_import_ms']:.0f} -> {row['after_import_ms']:.0f} ms"
               if itargv else "")
        print(f"{name:50s} {row['before']:6.3f} s -> {row['after']:6.3f} s "
              f"({row['after'] / row['before']:.2f}x){imp}", flush=True)
    shutil.rmtree(out_dir, ignore_errors=True)
    shutil.rmtree(work / "bk", ignore_errors=True)
    if args.json:
        load = os.getloadavg()
        args.json.write_text(json.dumps({"when": dt.datetime.now(dt.timezone.utc).isoformat(),
                                         "runs": args.runs, "loadavg": load,
                                         "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
