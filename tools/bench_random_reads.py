"""Random 4 KiB reads and one big sequential read through a repository mount, cold (issue 17).

    nice .venv/bin/python tools/bench_random_reads.py REPO [REPO...] [--peer] [--repeat 3]
        [--workloads "random 4 KiB read,cat random.bin,cat log.txt"]

The smallest bench of ``tools/bench_peers.py``'s "random 4 KiB read" and "cat random.bin"
rows: each REPO (a repository holding ``tools/bench_peers.py``'s bench VHDX, e.g. one
unframed and one framed) is mounted with ``rpfs mount``, the page cache dropped, then 1,000
preads of 4 KiB at random aligned offsets of the 384 MiB random file (median latency) and
``cat`` of it (seconds), each on a fresh mount; ``--workloads`` picks among those and
``cat log.txt`` (the 384 MiB text log). ``--peer`` adds vhdimount + loop + ntfs-3g
on the VHDX itself, ``--image`` rpfs's own mount of the VHDX. Beside each time it prints
the serving daemons' CPU seconds (/proc/PID/stat) and the bytes they read from storage
(/proc/PID/io read_bytes) during the workload: counts that the machine's load does not
move the way it moves wall time. ``--rpfs DIR`` mounts with the rpfs of another checkout (its .venv),
to measure code before a change. Rounds alternate the sides. Needs root. A benchmark,
never a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tools import bench_peers  # noqa: E402
from tools.bench_mount import drop_caches, serving_pids  # noqa: E402


def daemon_counts(pids: list[str]) -> tuple[float, int]:
    """(CPU seconds, bytes read from storage) of ``pids`` so far (those gone count 0)."""
    tick = os.sysconf("SC_CLK_TCK")
    cpu = io = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(stat[11]) + int(stat[12])) / tick
            for line in Path(f"/proc/{pid}/io").read_text().splitlines():
                if line.startswith("read_bytes:"):
                    io += int(line.split()[1])
        except OSError:
            continue
    return cpu, io


WORKLOADS = ("random 4 KiB read", "cat random.bin", "cat log.txt")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repos", nargs="+", help="repositories holding the bench VHDX (label=PATH allowed)")
    ap.add_argument("--peer", action="store_true", help="also vhdimount + ntfs-3g on the VHDX")
    ap.add_argument("--image", action="store_true", help="also rpfs mount of the VHDX itself")
    ap.add_argument("--rpfs", default=None, help="label=CHECKOUT: mount REPOs labelled so with that checkout's rpfs")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--budget", type=float, default=300.0)
    ap.add_argument("--workloads", default="random 4 KiB read,cat random.bin",
                    help=f"comma-separated, of: {', '.join(WORKLOADS)}")
    args = ap.parse_args(argv)
    workloads = [w.strip() for w in args.workloads.split(",")]
    if set(workloads) - set(WORKLOADS):
        ap.error(f"unknown workload(s): {', '.join(sorted(set(workloads) - set(WORKLOADS)))}")
    data = json.loads((bench_peers.CACHE / f"v{bench_peers.DATA_VERSION}" / "data.json").read_text())
    data.setdefault("vm", bench_peers.VM)
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-random-{os.getpid()}"
    other = dict([args.rpfs.split("=", 1)]) if args.rpfs else {}
    sides = []
    for spec in args.repos:
        label, _, path = spec.rpartition("=")
        sides.append((label or path, path))
    if args.image:
        sides.append(("image", "image"))
    if args.peer:
        sides.append(("peer", None))
    samples: dict[str, dict[str, list]] = {}
    counts: dict[str, dict[str, list]] = {}
    orig_cmd = bench_peers.rpfs_cmd
    for rnd in range(args.repeat):
        for label, path in (sides if rnd % 2 == 0 else sides[::-1]):
            for workload in workloads:
                if path is None:
                    m = bench_peers.PeerMount(data, work)
                elif path == "image":
                    m = bench_peers.ImageMount(data, work)
                else:
                    m = bench_peers.RepoMount(dict(data, repo=path), work)
                    checkout = other.get(label)
                    if checkout:
                        py = Path(checkout) / ".venv" / "bin" / "python"
                        bench_peers.rpfs_cmd = lambda *a, py=py, c=checkout: [
                            "env", "-C", c, str(py), "-m", "rpfs", *map(str, a)]
                    else:
                        bench_peers.rpfs_cmd = orig_cmd
                try:
                    drop_caches()
                    root = m.mount()
                    os.listdir(root)
                    drop_caches()
                    pids = serving_pids(m.pids_of)
                    before = daemon_counts(pids)
                    if workload.startswith("random"):
                        v = bench_peers.random_reads(root / "random.bin", args.budget)
                    else:
                        v = bench_peers.timed(["cat", root / workload.split()[1]], args.budget)
                    cpu, io = (a - b for a, b in zip(daemon_counts(pids), before))
                finally:
                    m.unmount()
                samples.setdefault(label, {}).setdefault(workload, []).append(v)
                counts.setdefault(label, {}).setdefault(workload, []).append((round(cpu, 3), io))
                print(f"round {rnd + 1} {label:12} {workload:18} {v} daemon CPU {cpu:.3f} s"
                      f" read {io / 1e6:.1f} MB load {os.getloadavg()[0]:.1f}",
                      file=sys.stderr, flush=True)
    out = {label: {w: {"median": statistics.median([x for x in v if x is not None] or [0]),
                       "samples": v,
                       "daemon_cpu_s_read_bytes": counts[label][w]} for w, v in ws.items()} for label, ws in samples.items()}
    out["loadavg"] = os.getloadavg()
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
