"""What the metadata index adds to ``rpfs backup``: CPU (user+sys) and wall time of the
real command with and without the index, for a first backup and an incremental one.

The fixture system VHDX (``small`` set: ``vm/state1`` then ``vm/state2`` of TestVM's
``system.vhdx``) is backed up into a fresh repository twice per mode: ``--index=none``
(the backup alone), ``--index=now`` (the backup, then indexing in the same process), and
``--index=background`` (the backup commits, an indexer process runs after it: the
backup's own cost is what the command costs; the indexer's is reported beside it). Each
run is a child process; CPU comes from its rusage (children included), so another
engineer's load changes wall time but hardly CPU. Medians of ``--repeat`` rounds, modes
alternated; the load average is printed.

    .venv/bin/python -m tools.bench_index [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(argv: list[str], env: dict) -> tuple[float, float]:
    """(CPU seconds user+sys, wall seconds) of one command and its children."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    err = p.stderr.read().decode(errors="replace")
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(argv)}\n{err}")
    return ru.ru_utime + ru.ru_stime, wall


def one_round(fixtures: Path, mode: str, env: dict) -> dict:
    disks = [fixtures / "vm" / s / "TestVM" / "Virtual Hard Disks" / "system.vhdx"
             for s in ("state1", "state2")]
    tmp = tempfile.mkdtemp(prefix="bench-index-")
    try:
        repo = os.path.join(tmp, "repo")
        rpfs = [sys.executable, "-m", "rpfs"]
        _run(rpfs + ["init", repo], env)
        out = {}
        for label, disk, when in (("first", disks[0], "2026-01-01T00:00:00Z"),
                                  ("incremental", disks[1], "2026-01-02T00:00:00Z")):
            cpu, wall = _run(rpfs + ["backup", repo, str(disk), "--vm", "TestVM", "--time", when,
                                     "--no-scan", f"--index={mode}"], env)
            row = {"cpu": cpu, "wall": wall}
            if mode == "background":
                _, w2 = _run(rpfs + ["index", repo], env)   # waits for the indexer's lock
                row["indexer_wait_wall"] = w2
            out[label] = row
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--modes", default="none,now,background")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from tools.fixtures import build
    fixtures = build("small").root
    env = dict(os.environ)
    modes = args.modes.split(",")
    samples: dict = {m: {"first": [], "incremental": []} for m in modes}
    for _ in range(args.repeat):
        for m in modes:
            r = one_round(fixtures, m, env)
            for k in ("first", "incremental"):
                samples[m][k].append(r[k])
    load = os.getloadavg()
    result = {"load_average": load, "repeat": args.repeat, "modes": {}}
    for m in modes:
        result["modes"][m] = {k: {"cpu": statistics.median(s["cpu"] for s in v),
                                  "wall": statistics.median(s["wall"] for s in v),
                                  "cpu_samples": [round(s["cpu"], 2) for s in v],
                                  "wall_samples": [round(s["wall"], 2) for s in v]}
                              for k, v in samples[m].items()}
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    print(f"load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}; medians of {args.repeat}")
    base = result["modes"].get("none")
    for m in modes:
        for k in ("first", "incremental"):
            r = result["modes"][m][k]
            extra = ""
            if base and m != "none":
                extra = (f"  (+{100 * (r['cpu'] / base[k]['cpu'] - 1):.0f}% CPU,"
                         f" +{100 * (r['wall'] / base[k]['wall'] - 1):.0f}% wall)")
            print(f"{m:<11} {k:<12} cpu {r['cpu']:6.2f}s  wall {r['wall']:6.2f}s{extra}"
                  f"  samples cpu {r['cpu_samples']} wall {r['wall_samples']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
