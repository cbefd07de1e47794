"""What a walk through a fresh repository mount costs the daemon, counted (not timed), for an
A/B of two checkouts of rpfs: bench_peers' ``cp -r`` of the 4,000 small files, its ``find``
over the system volume (after ``ls -f`` and ``ls -l`` of the big directory, as bench_peers
runs it; ``--alone``: on a fresh mount) and ``ls -l`` of the big directory (after ``ls -f``).

    python tools/bench_walk.py CHECKOUT cp|find|lsl [--alone] [--cold] [--callgrind]

Counted over the command alone (the mount, its first listing and the commands before it
are not): FUSE requests by opcode, received and handed to Python (``_fusell.counts()``);
worker jobs and READs answered on the loop (``Operations.worker_calls``, ``loop_reads``);
bytes the daemon read from storage (``/proc/PID/io``); its CPU (10 ms ticks); with
``--callgrind`` its instructions, every thread (valgrind, instrumentation on only around
the command, ``fuse_loop.SPIN = 0``: the spin is time, not work). ``--cold``: the
repository's pages are dropped from the page cache first (``POSIX_FADV_DONTNEED`` on its
files; ``drop_caches`` would disturb everyone else on the machine).

The daemon waits until it has been idle for a second before the command starts (read-ahead
of the commands before it done). ``find`` after ``ls -l`` still varies between runs with
what the kernel forgot in between (FORGET, LOOKUP): compare its requests, not only its
instructions. CHECKOUT holds rpfs with its C extensions built; the data is bench_peers'
(``.cache/bench_peers``). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from tools.bench_mount import unmount, wait_mounted  # noqa: E402
from tools.bench_peers import evict  # noqa: E402

DATA = {"cp": "v5", "find": "system-*", "lsl": "system-*"}
# the mount, with SIGUSR2 writing the adapter's counts to $BENCH_WALK_OUT
DAEMON = """
import json, os, signal, sys
sys.path.insert(0, os.getcwd())
import rpfs.fuse as F, rpfs.fuse_loop as loop
from rpfs import _fusell as ll
if os.environ.get("BENCH_WALK_NOSPIN"):
    loop.SPIN = 0
made = []
init = F.Operations.__init__
def keep(self, *a, **k):
    init(self, *a, **k)
    made.append(self)
F.Operations.__init__ = keep
def dump(signum, frame):
    out = os.environ["BENCH_WALK_OUT"]
    with open(out + ".tmp", "w") as f:
        json.dump({"worker_calls": made[0].worker_calls, "loop_reads": made[0].loop_reads,
                   "requests": ll.counts()}, f)
    os.replace(out + ".tmp", out)
signal.signal(signal.SIGUSR2, dump)
from rpfs.cli import main
sys.exit(main(["mount", "-f", sys.argv[1], sys.argv[2]]))
"""


def repository(what: str) -> Path:
    found = sorted((HERE / ".cache/bench_peers").glob(f"{DATA[what]}/repo"))
    if not found:
        raise SystemExit(f"bench_walk: no bench_peers data for {what} (tools/bench_peers.py builds it)")
    return found[-1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkout")
    ap.add_argument("what", choices=sorted(DATA))
    ap.add_argument("--alone", action="store_true", help="find: on a fresh mount, no ls before")
    ap.add_argument("--cold", action="store_true")
    ap.add_argument("--callgrind", action="store_true")
    args = ap.parse_args()
    repo = repository(args.what)
    if args.cold:
        evict([p for p in repo.rglob("*") if p.is_file()])   # its pages only, not drop_caches
    work = Path(tempfile.mkdtemp(prefix="bench-walk-"))
    mp, counts_file = work / "mnt", work / "counts.json"
    mp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["BENCH_WALK_OUT"] = str(counts_file)
    cmd = [sys.executable, "-c", DAEMON, str(repo), str(mp)]
    if args.callgrind:
        env["BENCH_WALK_NOSPIN"] = "1"
        cmd = ["valgrind", "--tool=callgrind", "--instr-atstart=no",
               f"--callgrind-out-file={work}/cg.out"] + cmd
    daemon = subprocess.Popen(cmd, cwd=args.checkout, env=env, stderr=subprocess.DEVNULL)
    pid = str(daemon.pid)

    def counts() -> dict:
        os.kill(daemon.pid, 12)
        for _ in range(400):
            time.sleep(0.05)
            if counts_file.exists():
                got = json.loads(counts_file.read_text())
                counts_file.unlink()
                return got
        raise SystemExit("bench_walk: the daemon gave no counts")

    def stat(field: str) -> float:
        if field == "io":
            return int(re.search(r"read_bytes: (\d+)", Path(f"/proc/{pid}/io").read_text())[1])
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")

    def run(*argv) -> None:
        subprocess.run([str(a) for a in argv], stdout=subprocess.DEVNULL, check=True)

    out: dict = {"checkout": args.checkout, "what": args.what}
    try:
        wait_mounted(mp, timeout=600)
        vm = mp / ("bench" if args.what == "cp" else sorted(os.listdir(mp))[0])
        vols = vm / os.readlink(vm / "latest") / "volumes"
        root = vols / sorted(os.listdir(vols))[0]
        os.listdir(root)
        if args.what == "lsl" or (args.what == "find" and not args.alone):
            run("ls", "-f", root / "bigdir")
        if args.what == "find" and not args.alone:
            run("ls", "-l", root / "bigdir")
        while True:   # idle: what the commands before started is done
            before = stat("cpu")
            time.sleep(1.0)
            if stat("cpu") - before < 0.02:
                break
        c0, io0, cpu0 = counts(), stat("io"), stat("cpu")
        if args.callgrind:
            subprocess.run(["callgrind_control", "-i", "on", pid], capture_output=True)
        t = time.perf_counter()
        if args.what == "cp":
            dest = work / "out"
            run("cp", "-r", root / "small", dest)
            shutil.rmtree(dest)
        elif args.what == "lsl":
            run("ls", "-l", root / "bigdir")
        else:
            run("find", root)
        out["wall_s"] = round(time.perf_counter() - t, 3)   # secondary: the load moves it
        if args.callgrind:
            subprocess.run(["callgrind_control", "-d", "command", pid], capture_output=True)
        out["daemon_cpu_s"] = round(stat("cpu") - cpu0, 2)
        out["storage_read_bytes"] = stat("io") - io0
        c1 = counts()
        out["worker_jobs"] = c1["worker_calls"] - c0["worker_calls"]
        out["reads_on_loop"] = c1["loop_reads"] - c0["loop_reads"]
        out["requests"] = {}   # opcode -> [received, handed to Python]
        for op, (got, py) in c1["requests"].items():
            was = c0["requests"].get(op, [0, 0])
            if got - was[0]:
                out["requests"][op] = [got - was[0], py - was[1]]
        out["load"] = round(os.getloadavg()[0], 1)
    finally:
        unmount(mp)
        try:
            daemon.wait(600)
        except subprocess.TimeoutExpired:
            daemon.kill()
    if args.callgrind:
        for dump in work.glob("cg.out*"):
            text = dump.read_text(errors="replace")
            if re.search(r"^desc: Trigger: .*command", text, re.M):
                out["instructions"] = int(re.search(r"^totals: (\d+)", text, re.M)[1])
    if not os.path.ismount(mp):   # never walk into a mount left behind
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
