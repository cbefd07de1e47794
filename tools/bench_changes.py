"""The change analysis, measured: the verdict table of the scenarios, and what the analysis
adds to a backup of the sample VM.

    python -m tools.bench_changes table            # markdown table (docs/changes.md)
    python -m tools.bench_changes cost [--repeat 5]

``table`` backs up every scenario of tools/fixtures/scenarios.py into one repository with
``rpfs backup`` (index and analysis included) and prints each state's verdict and reasons.
``cost`` backs up the small fixture set's VM, state 1 then state 2, into fresh repositories
with ``rpfs backup`` and with ``rpfs backup --no-scan``, alternating, and prints the
medians of the wall times of the state-2 backup (the one with something to analyse) and
the analysis' own time as the backup reports it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def rpfs(*args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "rpfs", *map(str, args)], capture_output=True)
    if r.returncode:
        raise SystemExit(r.stderr.decode())
    return r


def _iso(name: str) -> str:
    return f"{name[:13]}:{name[13:15]}:{name[15:17]}Z"


def table() -> None:
    from tools.fixtures import scenarios
    s = scenarios.build()
    with tempfile.TemporaryDirectory() as d:
        repo = Path(d) / "repo"
        rpfs("init", repo)
        print("| scenario | state | changes (diff) | verdict | reasons | analysis |")
        print("|---|---|---|---|---|---|")
        for name, sc in s.index["scenarios"].items():
            for i, st in enumerate(sc["states"]):
                out = json.loads(rpfs("backup", repo, s.image(st), "--vm", name, "--time",
                                      _iso(st["time"]), "--json", "--index=now").stdout)["scan"]
                if i < 2 and name != "encrypt-in-place":
                    continue        # the two clean states are the same for every scenario
                c = out["counts"]
                what = ("clean day" if i == 1 else "first" if i == 0 else
                        f"{'attack' if sc['attack'] else 'benign'} {i - 1}")
                n = ", ".join(f"{c.get(k, 0)} {k}" for k in
                              ("added", "removed", "modified", "renamed", "metadata")
                              if c.get(k)) or "-"
                reasons = "; ".join(out["reasons"]) or "-"
                print(f"| {name if i >= 2 else '(every scenario)'} | {what} | {n} |"
                      f" **{out['verdict']}** | {reasons} | {c.get('sampled', 0)} files sampled,"
                      f" {out['seconds']:.2f} s |")


def cost(repeat: int) -> None:
    from tools.fixtures import build
    fx = build("small")
    s1, s2 = fx.vm_states
    times = {"scan": [], "no-scan": []}
    analysis = []
    for k in range(repeat):
        for mode in (("scan", "no-scan") if k % 2 == 0 else ("no-scan", "scan")):
            with tempfile.TemporaryDirectory() as d:
                repo = Path(d) / "repo"
                rpfs("init", repo)
                extra = ["--index=now"] + (["--no-scan"] if mode == "no-scan" else [])
                rpfs("backup", repo, s1, "--vm", "vm", "--time", "2026-11-01T02:00:00Z", *extra)
                t0 = time.monotonic()
                out = json.loads(rpfs("backup", repo, s2, "--vm", "vm", "--time",
                                      "2026-11-02T02:00:00Z", "--json", *extra).stdout)
                times[mode].append(time.monotonic() - t0)
                if mode == "scan":
                    analysis.append(out["scan"]["seconds"])
                    counts = out["scan"]["counts"]
    a, b = statistics.median(times["scan"]), statistics.median(times["no-scan"])
    print(json.dumps({"repeat": repeat, "backup_state2_with_scan_s": round(a, 3),
                      "backup_state2_no_scan_s": round(b, 3),
                      "added_percent": round((a - b) / b * 100, 1),
                      "analysis_seconds_median": statistics.median(analysis),
                      "analysis_counts": counts,
                      "runs": {k: [round(x, 3) for x in v] for k, v in times.items()}}, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["table", "cost"])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    table() if args.what == "table" else cost(args.repeat)


if __name__ == "__main__":
    main()
