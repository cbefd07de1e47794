"""rpfs against what a Linux admin does today with a Linux guest's VHDX (issue 18): libvhdi's
``vhdimount`` + a read-only loop device at the partition + the host kernel's own ext4, XFS
or Btrfs (``mount -o ro``), side by side in one run.

    sudo .venv/bin/python tools/bench_linux.py [--fs ext4|xfs|btrfs] [--repeat 3] [--json F]

(``--json`` defaults to docs/bench_linux.json for ext4, docs/bench_linux_<fs>.json else.)

The data (built once per file system into ``.cache/bench_linux/``): a 1.2 GB dynamic VHDX
with GPT and one partition of that file system holding a 384 MiB random file, a 384 MiB text log, 4,000 files of 1-16 KiB
in 40 directories and a directory of 50,000 empty files, written through the kernel's loop
mount; then ``rpfs backup`` into a repository beside it. Two ways to see the volume:

  repo    ``rpfs mount REPO MNT``, then MNT/<vm>/<recovery point>/volumes/bench-p1
  peer    ``vhdimount`` + ``losetup -r -o OFFSET`` + ``mount -o ro -t FS``

Workloads, each cold (``sync; echo 3 > drop_caches`` and fresh mounts) and warm (again on
the same mounts): ``cat`` of each big file, ``cp -r`` of the small files, ``ls -l`` of the
50,000-entry directory; and ``rpfs restore`` of the small files from the repository
against ``cp -a`` of them from the peer's mount. Medians of --repeat runs. A benchmark,
never a test: nothing asserts a time. Needs root.
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

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tools.bench_mount import detach_loop, drop_caches, run, unmount, wait_mounted  # noqa: E402
from tools.bench_peers import BIG, BIG_SIZE, SMALL_FILES, built_once, small_files, timed  # noqa: E402

CACHE = REPO / ".cache" / "bench_linux"
MiB = 1 << 20
DATA_VERSION = 1
DISK_SIZE = 1200 * MiB
BIGDIR = 50_000
VM = "linuxbench"
MKFS = {"ext4": ["mkfs.ext4", "-q", "-F", "-L", "bench", "-N", "80000"],
        "xfs": ["mkfs.xfs", "-q", "-f", "-L", "bench"],
        "btrfs": ["mkfs.btrfs", "-q", "-f", "-L", "bench"]}
TARGETS = {"cat random.bin": 1.5, "cat log.txt": 1.5, "cp -r small": 1.0,
           "ls -l bigdir": 1.0, "restore small": 1.0}


def log(msg: str) -> None:
    print(f"[bench_linux {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rpfs_cmd(*args) -> list:
    return [sys.executable, "-m", "rpfs", *map(str, args)]


def build_data(fs: str = "ext4") -> dict:
    root = CACHE / (f"v{DATA_VERSION}" if fs == "ext4" else f"v{DATA_VERSION}-{fs}")
    return built_once(root, lambda tmp: _make_data(tmp, root, fs))


def _make_data(tmp: Path, root: Path, fs: str) -> dict:
    from tools.fixtures.content import Content
    from tools.fixtures.linux import mounted

    t0 = time.monotonic()
    offset, size = MiB, DISK_SIZE - 2 * MiB
    vol = tmp / "volume.img"
    with open(vol, "wb") as f:
        f.truncate(size)
    run([*MKFS[fs], vol])
    log(f"writing the files through the kernel's {fs}")
    with mounted(vol, tmp / "mnt") as mnt:
        for name, kind in BIG.items():
            with open(mnt / name, "wb") as f:
                for chunk in Content(kind, BIG_SIZE, 1).chunks(4 * MiB):
                    f.write(chunk)
        for rel, n, seed in small_files():
            p = mnt / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(Content("text" if seed % 2 else "random", n, seed).bytes())
        big = mnt / "bigdir"
        big.mkdir()
        fd = os.open(big, os.O_RDONLY)
        for i in range(BIGDIR):
            os.close(os.open(f"entry-{i:06d}.dat", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
        os.close(fd)
    (tmp / "mnt").rmdir()
    raw = tmp / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(DISK_SIZE)
    run(["sgdisk", "-n", f"1:{offset // 512}:{(offset + size) // 512 - 1}", "-t", "1:8300", raw])
    run(["dd", f"if={vol}", f"of={raw}", "bs=4M", f"seek={offset}", "oflag=seek_bytes",
         "conv=sparse,notrunc", "status=none"])
    vol.unlink()
    image = tmp / "bench.vhdx"
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vhdx", "-o", "subformat=dynamic",
         raw, image], timeout=1800)
    raw.unlink()
    log("rpfs backup of the VHDX")
    repo = tmp / "repo"
    run(rpfs_cmd("init", repo), cwd=REPO)
    run(rpfs_cmd("backup", repo, image, "--vm", VM), cwd=REPO, timeout=1800)
    d = {"fs": fs, "image": str(root / "bench.vhdx"), "repo": str(root / "repo"),
         "partition": {"offset": offset, "size": size},
         "built_seconds": round(time.monotonic() - t0, 1)}
    return d


class Mounts:
    """Both ways to see the volume; ``mount()`` -> {kind: volume root}; undone in close()."""

    def __init__(self, data: dict, work: Path):
        self.data, self.work = data, work
        self.undo: list = []

    def _dir(self, name: str) -> Path:
        d = self.work / name
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _rpfs(self, name: str) -> Path:
        mp = self._dir(name)
        run(rpfs_cmd("mount", self.data["repo"], mp), cwd=REPO, timeout=120)
        self.undo.append(lambda: unmount(mp))
        wait_mounted(mp)
        return mp

    def mount(self) -> dict[str, Path]:
        # ls -l of 50,000 entries gets a mount of its own: past 50,000 held inodes a mount
        # asks the kernel to let go of the oldest (RPFS_MOUNT_INODES), and a file let go of
        # while cp runs gets a new inode number ("replaced while being copied")
        mp = self._rpfs("repo-mnt")
        ls_mp = self._rpfs("repo-ls")
        vm = mp / VM
        rp = os.readlink(vm / "latest")
        repo_root = vm / rp / "volumes" / "bench-p1"
        vmp = self._dir("vhdi")
        run(["vhdimount", self.data["image"], vmp], timeout=120)
        self.undo.append(lambda: unmount(vmp))
        wait_mounted(vmp)
        part = self.data["partition"]
        dev = run(["losetup", "-r", "-f", "--show", "-o", part["offset"], "--sizelimit",
                   part["size"], vmp / "vhdi1"]).stdout.strip()
        self.undo.append(lambda: detach_loop(dev))
        kmp = self._dir("kernel")
        run(["mount", "-o", "ro", "-t", self.data.get("fs", "ext4"), dev, kmp])
        self.undo.append(lambda: unmount(kmp))
        return {"repo": repo_root, "peer": kmp, "rp": rp,
                "repo-ls": ls_mp / VM / rp / "volumes" / "bench-p1", "peer-ls": kmp}

    def close(self) -> None:
        while self.undo:
            try:
                self.undo.pop()()
            except Exception as e:  # keep undoing the rest
                log(f"cleanup: {e}")


def bench(data: dict, repeat: int, budget: float, dest: Path) -> dict:
    samples: dict[tuple, list] = {}
    out = dest / "out"

    def fresh(fn):
        shutil.rmtree(out, ignore_errors=True)
        return fn()

    for rep in range(repeat):
        with tempfile.TemporaryDirectory(prefix="bench-linux-") as tmp:
            m = Mounts(data, Path(tmp))
            try:
                drop_caches()
                roots = m.mount()
                for phase in ("cold", "warm"):
                    if phase == "cold":
                        drop_caches()
                    for kind in ("repo", "peer"):
                        root = roots[kind]
                        work = {
                            "cat random.bin": lambda: timed(["cat", root / "random.bin"], budget),
                            "cat log.txt": lambda: timed(["cat", root / "log.txt"], budget),
                            "cp -r small": lambda: fresh(lambda: timed(["cp", "-r", root / "small", out], budget)),
                        }
                        if kind == "repo":
                            work["restore small"] = lambda: fresh(lambda: timed(
                                rpfs_cmd("restore", data["repo"],
                                         f"/{VM}/{roots['rp']}/volumes/bench-p1/small", out),
                                budget, cwd=REPO))
                        else:
                            work["restore small"] = lambda: fresh(lambda: timed(
                                ["cp", "-a", root / "small", out], budget))
                        work["ls -l bigdir"] = lambda: timed(
                            ["ls", "-l", roots[f"{kind}-ls"] / "bigdir"], budget)
                        for name, fn in work.items():
                            t = fn()
                            samples.setdefault((name, phase), {}).setdefault(kind, []).append(t)
                            log(f"rep {rep + 1} {phase} {kind} {name}: {t if t is None else round(t, 3)} s")
            finally:
                m.close()
    rows = []
    for (name, phase), by in samples.items():
        med = {k: statistics.median([v for v in vs if v is not None]) if any(v is not None for v in vs)
               else None for k, vs in by.items()}
        ratio = med["peer"] / med["repo"] if med.get("repo") and med.get("peer") else None
        rows.append({"workload": name, "phase": phase, "rpfs_s": med.get("repo"),
                     "peer_s": med.get("peer"), "speedup": ratio, "target": TARGETS[name],
                     "met": None if ratio is None else ratio >= TARGETS[name]})
    return {"rows": rows, "repeat": repeat,
            "fs": data.get("fs", "ext4"),
            "peer": f"vhdimount + losetup -r + mount -o ro -t {data.get('fs', 'ext4')} "
                    "(restore: cp -a from it)",
            "load": os.getloadavg(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def table(result: dict) -> str:
    lines = [f"{'workload':<18} {'phase':<5} {'rpfs s':>8} {'peer s':>8} {'peer/rpfs':>9} target"]
    for r in result["rows"]:
        f = lambda v: "-" if v is None else f"{v:.3f}"
        sp = "-" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        lines.append(f"{r['workload']:<18} {r['phase']:<5} {f(r['rpfs_s']):>8} {f(r['peer_s']):>8} "
                     f"{sp:>9} >= {r['target']}x {'met' if r['met'] else 'NOT met' if r['met'] is False else ''}")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--budget", type=float, default=600.0, help="seconds per command at most")
    ap.add_argument("--dest", type=Path, default=None, help="where cp/restore write (default: a temp dir)")
    ap.add_argument("--fs", choices=sorted(MKFS), default="ext4")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.json is None:
        args.json = REPO / "docs" / ("bench_linux.json" if args.fs == "ext4"
                                     else f"bench_linux_{args.fs}.json")
    if os.geteuid() != 0:
        print("bench_linux: needs root (loop devices, mounts, drop_caches)", file=sys.stderr)
        return 2
    data = build_data(args.fs)
    with tempfile.TemporaryDirectory(prefix="bench-linux-dest-") as d:
        dest = args.dest or Path(d)
        result = bench(data, args.repeat, args.budget, dest)
    print(table(result))
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
