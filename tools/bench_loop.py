"""The mount's cost per request, counted in the daemon (its CPU from /proc/PID/stat and,
with --strace, its system calls), for an A/B of two checkouts of rpfs:

- ``getxattr``: N getxattr calls of ``security.selinux`` (a GETXATTR the adapter answers
  from memory: the loop's own cost per request) and N of ``user.rpfs-bench`` (an alternate
  data stream's name, looked up in a worker thread each time: the cost of a hand-off).
- ``cold read``: one 4 KiB pread in each of K distinct 1 MiB chunks of ``random.bin`` (none
  read before in this mount, so each is a READ the daemon serves with a chunk fetch in a
  worker): the daemon's CPU per cold read, and with --strace the system calls of those reads
  (reads of /dev/fuse = requests, futex calls ~ thread hand-offs, poll calls).

    python tools/bench_loop.py CHECKOUT [--repo R] [--n 20000] [--k 200] [--random R]
        [--strace | --callgrind]

``--random R``: the cold-read batch is instead R preads of 4 KiB at random aligned offsets
of ``random.bin`` (seed 4096, as ``tools/bench_random_reads.py`` and bench_peers' "random
4 KiB read" row draw them): the row's own mix, where a chunk (and a MiB window of the
volume) is first touched by about a third of the reads and read again by the rest.

``--callgrind``: the daemon runs in the foreground under valgrind's callgrind with
instrumentation off until the requests start (``callgrind_control -i on``), one dump per
batch, and ``fuse_loop.SPIN = 0`` (the spin is time, not work): instructions per request of
the whole daemon, its worker threads included. Slow (minutes); use small N and K.

CHECKOUT is a directory holding rpfs (its C extensions built); the mount runs with this
interpreter and the checkout first on sys.path, from the bench_peers repository of the
vhdx part (``.cache/bench_peers/v2/repo``). Nothing is dropped from the page cache: the
daemon's CPU is what is compared, not wall time. Prints one JSON line.
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

from tools.bench_mount import serving_pids, unmount, wait_mounted  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid: str) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkout")
    ap.add_argument("--repo", default=str(HERE / ".cache/bench_peers/v2/repo"))
    ap.add_argument("--vm", default="vhdx")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--random", type=int, default=0)
    ap.add_argument("--strace", action="store_true")
    ap.add_argument("--callgrind", action="store_true")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-loop-"))
    mp = work / "mnt"
    mp.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    daemon = None
    if args.callgrind:
        code = ("import sys, rpfs.fuse_loop as loop; loop.SPIN = 0\n"
                "from rpfs.cli import main; sys.exit(main(['mount', '-f', sys.argv[1], sys.argv[2]]))")
        daemon = subprocess.Popen(["valgrind", "--tool=callgrind", "--instr-atstart=no",
                                   f"--callgrind-out-file={work}/cg.out", sys.executable, "-c",
                                   code, args.repo, str(mp)], cwd=args.checkout, env=env,
                                  stderr=subprocess.DEVNULL)
    else:
        subprocess.run([sys.executable, "-m", "rpfs", "mount", args.repo, str(mp)],
                       cwd=args.checkout, env=env, check=True)
    out: dict = {"checkout": args.checkout}
    try:
        wait_mounted(mp, timeout=600)
        pid = str(daemon.pid) if daemon else serving_pids([str(mp)])[0]

        def mark(label):   # --callgrind: instructions since the last mark
            if daemon:
                subprocess.run(["callgrind_control", "-d", label, pid], capture_output=True)
        vm = next(p for p in mp.iterdir())
        rp = os.readlink(vm / "latest")
        vols = vm / rp / "volumes"
        root = vols / sorted(os.listdir(vols))[0]
        f = root / "random.bin"
        size = f.stat().st_size
        os.listdir(root)
        # security.selinux: answered from memory (an NTFS file never has it); user.*: the
        # name of an alternate data stream, looked up in a worker each time (not cached)
        fd = os.open(f, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)   # no kernel read-ahead
        os.pread(fd, 4096, 0)   # the file's stream is opened
        if daemon:
            subprocess.run(["callgrind_control", "-i", "on", pid], capture_output=True)
            time.sleep(1.0)
            mark("start")
        for label, name in (("memory", "security.selinux"), ("worker", "user.rpfs-bench")):
            for i in range(args.n + 1):
                if i == 1:
                    mark(f"before-{label}")
                    c0, t0 = cpu(pid), time.perf_counter()
                try:
                    os.getxattr(f, name)
                except OSError:
                    pass
            mark(f"getxattr-{label}")
            out[f"getxattr_{label}_daemon_cpu_us"] = round((cpu(pid) - c0) / args.n * 1e6, 2)
            out[f"getxattr_{label}_wall_us"] = round((time.perf_counter() - t0) / args.n * 1e6, 2)
        chunks = size >> 20
        step = max(1, chunks // args.k)
        offsets = [(i * step << 20) + 4096 * (i % 200 + 1) for i in range(1, min(args.k, chunks))]
        if args.random:
            import random
            rnd = random.Random(4096)
            offsets = [rnd.randrange(size // 4096) * 4096 for _ in range(args.random)]
        tracer = None
        if args.strace:
            log = work / "strace"
            tracer = subprocess.Popen(["strace", "-f", "-c", "-o", str(log), "-p", pid],
                                      stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        mark("before-cold-read")
        c0, t0 = cpu(pid), time.perf_counter()
        for off in offsets:
            os.pread(fd, 4096, off)
        mark("cold-read")
        out["cold_read_daemon_cpu_us"] = round((cpu(pid) - c0) / len(offsets) * 1e6, 1)
        out["cold_read_wall_us"] = round((time.perf_counter() - t0) / len(offsets) * 1e6, 1)
        out["cold_reads"] = len(offsets)
        os.close(fd)
        if tracer is not None:
            time.sleep(0.5)
            tracer.terminate()
            tracer.wait(30)
            calls = {}
            for line in log.read_text().splitlines():
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
                if m:
                    calls[m.group(2)] = int(m.group(1))
            out["syscalls_per_cold_read"] = {k: round(v / len(offsets), 2)
                                             for k, v in sorted(calls.items())}
        out["load"] = round(os.getloadavg()[0], 1)
    finally:
        unmount(mp)
        if daemon:
            daemon.wait(600)
    if daemon:   # one file per dump, in order: the totals of the marked batches
        totals = {}
        for dump in sorted(work.glob("cg.out*"), key=lambda p: int(p.suffix[1:] or 0)
                           if p.suffix[1:].isdigit() else -1):
            text = dump.read_text(errors="replace")
            label = re.search(r"^desc: Trigger: Client Request: (?:dump )?(\S+)|"
                              r"^desc: Trigger: dump (\S+)", text, re.M)
            total = re.search(r"^totals: (\d+)", text, re.M)
            if label and total:
                totals[label.group(1) or label.group(2)] = int(total.group(1))
        out["instructions_per_request"] = {
            "getxattr_memory": totals.get("getxattr-memory", 0) // args.n,
            "getxattr_worker": totals.get("getxattr-worker", 0) // args.n,
            "cold_read": totals.get("cold-read", 0) // len(offsets)}
        out["dumps"] = totals
    if not os.path.ismount(mp):   # never walk into a mount left behind
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
