"""rpfs against the C tools an admin already has, side by side in one run (issue 8).

    .venv/bin/python tools/bench_peers.py                  # both parts, writes docs/bench_peers.json
    .venv/bin/python tools/bench_peers.py --part vhdx --repeat 1 --json /tmp/out.json

Part ``vhdx``: a 1.2 GB dynamic VHDX (GPT + one NTFS volume holding a 384 MiB random file,
a 384 MiB text log and 4,000 files of 1-16 KiB in 40 directories), built once with mkntfs,
ntfs-3g and qemu-img into ``.cache/bench_peers/`` and backed up there with ``rpfs backup``.
Three ways to see the volume:

  repo    ``rpfs mount REPO MNT``, then MNT/<vm>/<recovery point>/volumes/<disk>-p1 (the user's path)
  image   ``rpfs mount X.vhdx MNT``, then MNT/volumes/<disk>-p1
  peer    libvhdi ``vhdimount`` + a read-only loop device at the partition + ``ntfs-3g -o ro``

and on each: mount to first listing, ``cat`` of each big file, ``cp -r`` of the small files,
1,000 random 4 KiB preads of the random file; plus ``rpfs restore`` of the small files from
the repository and from the VHDX against ``7zz x`` of them from the VHDX, written to --dest
(a tmpfs by default) and to the repository's own file system.

Part ``export``: ``rpfs export`` of the whole disk (from the repository and from the VHDX)
to VHDX and to raw against ``qemu-img convert -O vhdx|raw`` of the same VHDX, all written
sparse to --dest; sides alternate between rounds and each sample's CPU (user+sys) and
load average are kept.

Part ``bitlocker``: a plain NTFS volume with one 256 MiB random file and the same volume
encrypted with AES-CBC 128 + Elephant (the factory's writer), as two images
(``bitlocker-v1/``) and backed up into one repository as two VMs' disks (``bitlocker-v2/``);
the file is read in 1 MiB reads through ``rpfs mount`` of the repository (``--keys``) and
of each image, cold (a fresh mount, then the part's files evicted from the page cache with
POSIX_FADV_DONTNEED after sync, not drop_caches, both images read first so the eviction
frees the same memory before every side; fincore's count of their resident bytes before
each cold read is a row) and warm (read again). One row per
mount: its own column is the Elephant volume, "peer" the plain one through the same kind
of mount, so the ratio is the share of the plain speed kept; the mount daemon's CPU per
MiB is kept per sample. The four (mount, volume) sides reverse their order every other
round, and the part runs 3 x --repeat rounds (--bitlocker-repeat): its ratio is noisy.

Part ``system``: the factory's system volume (fixture set ``small``, dynamic VHDX, volume
system-p3 with its 50,000-entry directory), mounted as an image by rpfs and by the peer:
``ls -f`` of the big directory cold, ``ls -l`` of it, ``find`` over the volume, and the
daemon's RSS after those.

Part ``rps``: a repository of 1,000 recovery points of that system VHDX (one ``rpfs backup``,
then 999 in process reusing its chunk map), mounted: mount to first listing of the newest
recovery point's volume, cold and warm (repository mount only), with what a cold one read
from the disk (the mount command's ``ru_inblock``, its daemon's /proc/<pid>/io) and, in one
more cold round under ``strace -f`` (not timed), how many files it opened.

Part ``cat``: only the vhdx part's two ``cat`` rows, for more rounds at little cost
(``--part cat --repeat 7``).

Every figure is the median of --repeat runs (default 3), cold (page cache dropped with
``sync; echo 3 > /proc/sys/vm/drop_caches`` and a fresh mount, every side: the peer's
vhdimount, loop device and ntfs-3g are set up anew, so none of its own caches survive) and
warm (same mount, run again). The sides alternate between rounds; the table gives each
figure's range and the ratio of each round's pair, since the peer's cold read spreads
with the host's cache of the VHDX (its whole 384 MiB comes from the disk, where the
repository reads 14 MB of packs for the text log). For the ``cat`` rows the serving
daemons' CPU and the load average are kept per sample. Mounts and loop devices are
always undone in ``finally`` blocks. Needs root. It is a benchmark, never a test:
nothing here asserts a time.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
import compileall
import json
import os
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tools.bench_mount import (  # noqa: E402
    detach_loop, drop_caches, rss_of, run, serving_pids, unmount, wait_mounted,
)

CACHE = REPO / ".cache" / "bench_peers"
MiB = 1 << 20
DATA_VERSION = 5          # bump when the data set below (or the repository's settings) changes; 3: 16 KiB raw frames; 4: zstd frames declare their size; 5: 8 KiB raw frames
DISK_SIZE = 1200 * MiB
BIG = {"random.bin": "random", "log.txt": "text"}
BIG_SIZE = 384 * MiB
SMALL_DIRS, SMALL_FILES = 40, 4000
VM = "bench"


def log(msg: str) -> None:
    print(f"[bench_peers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rpfs_cmd(*args) -> list:
    """The ``rpfs`` command a user runs (the venv's script beside this interpreter; ``-m``
    costs runpy's imports on top: ~2 ms of each command's start)."""
    script = os.path.join(os.path.dirname(sys.executable), "rpfs")
    head = [script] if os.access(script, os.X_OK) else [sys.executable, "-m", "rpfs"]
    return [*head, *map(str, args)]


# ---------------------------------------------------------------------------------------
# The data


def small_files() -> list[tuple[str, int, int]]:
    """(relative path, size, seed) of the 4,000 small files: 1-16 KiB, text and random."""
    rng = random.Random(8)
    out = []
    for i in range(SMALL_FILES):
        d = i % SMALL_DIRS
        out.append((f"small/d{d:02d}/f{i:04d}.{'txt' if i % 2 else 'bin'}",
                    rng.randint(1024, 16 * 1024), i))
    return out


def built_once(root: Path, make: Callable[[Path], dict], prefix: str = ".tmp") -> dict:
    """The data made by ``make(tmp)`` into ``root``, built once: ``make`` fills a fresh
    temporary directory beside ``root`` and returns what describes it (paths as they will be
    under ``root``), which is kept as ``root/data.json``; the directory then becomes ``root``
    in one rename, so a build cut short leaves nothing that looks finished."""
    info = root / "data.json"
    if info.exists():
        return json.loads(info.read_text())
    tmp = root.parent / f"{prefix}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        d = make(tmp)
        (tmp / "data.json").write_text(json.dumps(d, indent=1))
        shutil.rmtree(root, ignore_errors=True)
        os.rename(tmp, root)
        return d
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def build_data() -> dict:
    """The VHDX and the repository holding it (built once, then reused)."""
    root = CACHE / f"v{DATA_VERSION}"
    return built_once(root, lambda tmp: _make_data(tmp, root))


def _make_data(tmp: Path, root: Path) -> dict:
    from tools.fixtures.content import Content
    from tools.fixtures.disk import convert, copy_sparse, write_gpt
    from tools.fixtures.ntfs import mkntfs, mounted

    t0 = time.monotonic()
    part = {"type": "basic", "number": 1, "offset": MiB, "size": DISK_SIZE - 2 * MiB}
    vol = tmp / "volume.img"
    mkntfs(vol, part["size"], cluster=4096, sector=512, label="BENCH",
           hidden_sectors=part["offset"] // 512, serial=0x8B3C8B3C8B3C8B3C)
    log("writing the files into the NTFS volume (ntfs-3g)")
    with mounted(vol, tmp / "mnt") as mnt:
        for name, kind in BIG.items():
            with open(mnt / name, "wb") as f:
                for chunk in Content(kind, BIG_SIZE, 1).chunks(4 * MiB):
                    f.write(chunk)
        for rel, size, seed in small_files():
            p = mnt / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(Content("text" if seed % 2 else "random", size, seed).bytes())
    (tmp / "mnt").rmdir()
    raw = tmp / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(DISK_SIZE)
    write_gpt(raw, {"sector": 512, "size": DISK_SIZE, "name": "bench"}, [part])
    copy_sparse(vol, raw, part["offset"])
    vol.unlink()
    image = tmp / "bench.vhdx"
    convert(raw, "vhdx-dynamic-32M", image)
    raw.unlink()
    log("rpfs backup of the VHDX")
    repo = tmp / "repo"
    run(rpfs_cmd("init", repo), cwd=REPO)
    run(rpfs_cmd("backup", repo, image, "--vm", VM), cwd=REPO, timeout=1800)
    d = {"image": str(root / "bench.vhdx"), "repo": str(root / "repo"),
         "disk": "bench", "partition": part, "built_seconds": round(time.monotonic() - t0, 1)}
    log(f"data built in {d['built_seconds']} s: {root}")
    return d


def build_system() -> dict:
    """The factory's system disk (fixture set ``small``) and a repository holding it."""
    from tools.fixtures import build

    fx = build("small")
    disk = fx.disks["system"]
    image = disk.images["vhdx-dynamic-32M"]
    part = next(p for p in disk.partitions if p.get("volume") == "system-p3")
    root = CACHE / f"system-{fx.key}"
    repo = root / "repo"
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        log("rpfs backup of the system VHDX")
        run(rpfs_cmd("init", repo), cwd=REPO)
        run(rpfs_cmd("backup", repo, image, "--vm", "system"), cwd=REPO, timeout=1800)
        (root / "done").touch()
    bigdir = fx.volumes["system-p3"].manifest["features"]["big_dir"]["path"].lstrip("/")
    return {"image": str(image), "repo": str(repo), "disk": image.stem, "vm": "system",
            "partition": {"number": part["number"], "offset": part["offset"], "size": part["size"]},
            "bigdir": bigdir, "entries": fx.volumes["system-p3"].manifest["features"]["big_dir"]["entries"]}


RPS = 1000  # recovery points of the "rps" part


def build_rps() -> dict:
    """A repository holding ``RPS`` recovery points of the system VHDX, an hour apart: one
    ``rpfs backup`` (every chunk stored), then backups in this process through
    ``rpfs.backup.backup``, each reusing the unchanged file's chunk map unread (what a
    nightly backup of an unchanged disk does), so the thousand cost seconds, not hours."""
    from datetime import datetime, timedelta, timezone

    from rpfs.backup import backup
    from rpfs.store import open_repository

    system = build_system()
    root = CACHE / f"rps{RPS}-{Path(system['image']).parent.parent.parent.name}"
    repo = root / "repo"
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir(parents=True)
        log(f"a repository of {RPS} recovery points of the system VHDX")
        run(rpfs_cmd("init", repo), cwd=REPO)
        start = datetime(2026, 1, 1, tzinfo=timezone.utc)
        run(rpfs_cmd("backup", repo, system["image"], "--vm", "rps", "--no-index",
                     "--time", start.strftime("%Y-%m-%dT%H:%M:%SZ")), cwd=REPO, timeout=1800)
        t0 = time.monotonic()
        with open_repository(repo) as r:
            for i in range(1, RPS):
                backup(r, [system["image"]], vm="rps", time=start + timedelta(hours=i),
                       show_progress=False)
        log(f"{RPS - 1} more backups in {time.monotonic() - t0:.0f} s")
        (root / "done").touch()
    return {**system, "repo": str(repo), "vm": "rps", "recovery_points": RPS}


# ---------------------------------------------------------------------------------------
# The three ways to mount the volume


class Mount:
    """One way to see the NTFS volume as a directory; ``mount()`` returns the volume root."""

    kind = ""

    def __init__(self, data: dict, work: Path):
        self.data, self.work = data, work
        self.undo: list = []
        self.pids_of: list[str] = []    # mount points whose daemons' RSS is reported

    def _dir(self, name: str) -> Path:
        d = self.work / f"{self.kind}-{name}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _fuse(self, cmd: list, mp: Path) -> None:
        run(cmd, timeout=120, cwd=REPO)
        self.undo.append(lambda: unmount(mp))
        wait_mounted(mp)
        self.pids_of.append(str(mp))

    def unmount(self) -> None:
        while self.undo:
            fn = self.undo.pop()
            try:
                fn()
            except Exception as e:  # keep undoing the rest
                log(f"{self.kind}: cleanup: {e}")
        self.pids_of = []

    def rss(self) -> int:
        """Sum of the resident memory of the processes serving this mount (bytes)."""
        return rss_of(serving_pids(self.pids_of))


class RepoMount(Mount):
    kind = "repo"

    def mount(self) -> Path:
        mp = self._dir("mnt")
        self._fuse(rpfs_cmd("mount", self.data["repo"], mp), mp)
        vm = mp / self.data["vm"]
        rp = os.readlink(vm / "latest")  # the recovery point's own directory: see docs/benchmarks.md
        return vm / rp / "volumes" / f"{self.data['disk']}-p{self.data['partition']['number']}"


class ImageMount(Mount):
    kind = "image"

    def mount(self) -> Path:
        mp = self._dir("mnt")
        self._fuse(rpfs_cmd("mount", self.data["image"], mp), mp)
        return mp / "volumes" / f"{self.data['disk']}-p{self.data['partition']['number']}"


class PeerMount(Mount):
    """libvhdi's vhdimount + a read-only loop device at the partition + ntfs-3g -o ro."""

    kind = "peer"

    def mount(self) -> Path:
        vmp = self._dir("vhdi")
        self._fuse(["vhdimount", self.data["image"], vmp], vmp)
        part = self.data["partition"]
        dev = run(["losetup", "-r", "-f", "--show", "-o", part["offset"], "--sizelimit",
                   part["size"], vmp / "vhdi1"]).stdout.strip()
        self.undo.append(lambda: detach_loop(dev))
        mp = self._dir("ntfs")
        self._fuse(["ntfs-3g", "-o", "ro", dev, mp], mp)
        return mp


MOUNTS = [RepoMount, ImageMount, PeerMount]


# ---------------------------------------------------------------------------------------
# Timing


def timed(cmd: list, budget: float, **kw) -> float | None:
    """Seconds ``cmd`` took, None if it failed or ran past ``budget``."""
    t = time.perf_counter()
    try:
        r = subprocess.run([str(c) for c in cmd], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, timeout=budget, **kw)
    except subprocess.TimeoutExpired:
        log(f"{cmd[0]}: over {budget:.0f} s")
        return None
    if r.returncode:
        log(f"{' '.join(map(str, cmd))}: exit {r.returncode}: {r.stderr.decode(errors='replace')[-300:]}")
        return None
    return time.perf_counter() - t


def random_reads(path: Path, budget: float) -> float | None:
    """Median latency (s) of 1,000 preads of 4 KiB at random 4 KiB-aligned offsets."""
    from tools.bench_mount import run_workload

    r = run_workload("random", path.parent, {"random_file": path.name,
                                             "random_size": os.path.getsize(path)}, budget)
    return r["median_us"] / 1e6 if "median_us" in r else None


def mount_and_list(m: Mount) -> tuple[Path, float]:
    t = time.perf_counter()
    root = m.mount()
    os.listdir(root)
    return root, time.perf_counter() - t


class Results:
    """samples[(part, workload, phase)][kind] -> list of values; medians at the end."""

    def __init__(self):
        self.samples: dict[tuple, dict[str, list]] = {}

    def add(self, part: str, workload: str, phase: str, kind: str, value) -> None:
        self.samples.setdefault((part, workload, phase), {}).setdefault(kind, []).append(value)


CAT_ROWS = ("cat random.bin", "cat log.txt")


def sides(kinds: list, rep: int) -> list:
    """The order the sides run in round ``rep``: reversed every other round, so a side is not
    always the one that runs right after another's cold read (the host's cache, the
    machine's load drifting through a round)."""
    return list(kinds) if rep % 2 == 0 else list(reversed(kinds))


def children_cpu() -> float:
    """user+sys seconds of this process's finished children so far (a command's own CPU:
    it counts work, where the wall time on a shared machine also counts the others')."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cpu_of(pids: list[str], user: bool = True) -> float:
    """user+sys seconds of ``pids`` so far (their threads included; a kernel thread such as
    the loop device's worker is not counted); only sys with ``user=False``."""
    total = 0
    for pid in pids:
        try:
            f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(f[11]) if user else 0) + int(f[12])
    return total / os.sysconf("SC_CLK_TCK")


def bench_vhdx(data: dict, work: Path, repeat: int, budget: float, res: Results, dest: Path,
               only: tuple = ()) -> None:
    """The vhdx part (``only``: just these workloads, no restore rows: part ``cat``). Each
    workload gets a fresh mount after the page cache is dropped (cold), then runs again
    (warm); the sides alternate between rounds. For the ``cat`` rows the serving daemons'
    CPU (rpfs's mount; the peer's vhdimount + ntfs-3g) and the load average are kept per
    sample: counts that a busy machine disturbs less than the wall time."""
    small = dest / "out"
    workloads = {
        "cat random.bin": lambda root: timed(["cat", root / "random.bin"], budget),
        "cat log.txt": lambda root: timed(["cat", root / "log.txt"], budget),
        "cp -r small": lambda root: (shutil.rmtree(small, ignore_errors=True),
                                     timed(["cp", "-r", root / "small", small], budget))[1],
        "random 4 KiB read": lambda root: random_reads(root / "random.bin", budget),
    }
    if only:
        workloads = {k: v for k, v in workloads.items() if k in only}
    for rep in range(repeat):
        for cls in sides(MOUNTS, rep):
            m = cls(data, work)
            try:
                rss = 0
                for name, fn in workloads.items():
                    m.unmount()
                    drop_caches()
                    root, secs = mount_and_list(m)
                    res.add("vhdx", "mount to first listing", "cold", m.kind, secs)
                    for phase in ("cold", "warm"):
                        pids = serving_pids(m.pids_of)
                        cpu = cpu_of(pids)
                        res.add("vhdx", name, phase, m.kind, fn(root))
                        if name in CAT_ROWS:
                            res.add("vhdx", f"{name}: serving daemons' CPU", phase, m.kind,
                                    round(cpu_of(pids) - cpu, 2))
                            res.add("vhdx", f"{name}: load average", phase, m.kind,
                                    round(os.getloadavg()[0], 1))
                        log(f"rep {rep + 1} {m.kind}: {name} {phase}: {res.samples[('vhdx', name, phase)][m.kind][-1]}")
                    rss = max(rss, m.rss())   # each workload has its own mount: the largest
                if only:
                    continue
                res.add("vhdx", "daemon RSS after these", "", m.kind, rss)
                m.unmount()
                root, secs = mount_and_list(m)
                res.add("vhdx", "mount to first listing", "warm", m.kind, secs)
            finally:
                m.unmount()
                shutil.rmtree(small, ignore_errors=True)
        if not only:
            restore_round(data, rep, budget, res, small)


def restore_round(data: dict, rep: int, budget: float, res: Results, small: Path) -> None:
    """One round of the restore rows: ``rpfs restore`` from the repository and from the VHDX
    and ``7zz x``, to --dest (tmpfs: the readers' cost) and to the repository's own file
    system, cold then warm; the sides alternate within each phase. Part ``restore`` runs
    only these (``--part restore``)."""
    for label, out in (("", small), (" to disk", CACHE / f".out-{os.getpid()}")):
        restores = {
            "repo": rpfs_cmd("restore", data["repo"], f"/{VM}/latest/volumes/{data['disk']}-p1/small", out),
            "image": rpfs_cmd("restore", data["image"], f"/volumes/{data['disk']}-p1/small", out),
            "peer": ["7zz", "x", data["image"], f"-o{out}", "small", "-y"],
        }
        try:
            for phase in ("cold", "warm"):
                for kind, cmd in restores.items():
                    shutil.rmtree(out, ignore_errors=True)
                    os.sync()
                    if phase == "cold":
                        drop_caches()
                    res.add("vhdx", f"restore 4,000 small files{label} (peer: 7zz x)", phase, kind,
                            timed(cmd, budget, cwd=REPO))
                    log(f"rep {rep + 1} {kind}: restore{label} {phase}: {res.samples[('vhdx', f'restore 4,000 small files{label} (peer: 7zz x)', phase)][kind][-1]}")
                    if rep == 0 and phase == "cold" and not label:
                        check_small(out, kind, res)
        finally:
            shutil.rmtree(out, ignore_errors=True)


def check_small(out: Path, kind: str, res: Results) -> None:
    """The restored small files are the ones the data set was built with."""
    from tools.fixtures.content import Content

    bad = 0
    for rel, size, seed in small_files()[::97]:
        p = out / rel
        want = Content("text" if seed % 2 else "random", size, seed).bytes()
        if not p.exists() or p.read_bytes() != want:
            bad += 1
    res.add("vhdx", "restored sample matches the source", "", kind, bad == 0)


def bench_export(data: dict, repeat: int, budget: float, res: Results, dest: Path) -> None:
    """``rpfs export`` of the whole disk (from the repository and from the VHDX) to VHDX and
    to raw, against ``qemu-img convert`` of the same VHDX; every output is sparse (holes
    neither side writes), written to --dest and removed after each run. The sides take
    turns within each round; each sample records the load average it ran under."""
    for rep in range(repeat):
        for fmt in ("vhdx", "raw"):
            out = dest / f"export.{fmt}"
            runs = {
                "repo": rpfs_cmd("export", data["repo"], f"/{VM}/latest/disks/{data['disk']}.raw",
                                 out, "--format", fmt),
                "image": rpfs_cmd("export", data["image"], f"/disks/{data['disk']}.raw", out,
                                  "--format", fmt),
                "peer": ["qemu-img", "convert", "-O", fmt, data["image"], out],
            }
            order = sides(list(runs), rep)
            for phase in ("cold", "warm"):
                for kind in order:
                    out.unlink(missing_ok=True)
                    os.sync()
                    if phase == "cold":
                        drop_caches()
                    before = children_cpu()
                    secs = timed(runs[kind], budget, cwd=REPO)
                    workload = f"export whole disk to {fmt} (peer: qemu-img convert)"
                    res.add("export", workload, phase, kind, secs)
                    res.add("export", f"{workload}: CPU (user+sys)", phase, kind,
                            round(children_cpu() - before, 2) if secs is not None else None)
                    res.add("export", f"{workload}: load average", phase, kind,
                            round(os.getloadavg()[0], 1))
                    if phase == "cold" and secs is not None:
                        res.add("export", f"{workload}: allocated", "", kind,
                                os.stat(out).st_blocks * 512)
                    log(f"rep {rep + 1} {kind}: export {fmt} {phase}: {secs}")
                    out.unlink(missing_ok=True)


BL_FILE = 256 * MiB


def build_bitlocker() -> dict:
    """A plain NTFS volume holding one 256 MiB random file, and the same volume encrypted
    with AES-CBC 128 + Elephant by the factory's BitLocker writer (built once)."""
    root = CACHE / "bitlocker-v1"
    return built_once(root, lambda tmp: _make_bitlocker(tmp, root), ".tmp-bl")


def _make_bitlocker(tmp: Path, root: Path) -> dict:
    from tools.bench_bitlocker import METHODS as BL_METHODS
    from tools.fixtures import bitlocker as blfx
    from tools.fixtures.ntfs import mkntfs, mounted

    plain = tmp / "plain.img"
    mkntfs(plain, BL_FILE + 64 * MiB, cluster=4096, sector=512, label="bench",
           hidden_sectors=2048, serial=0x1234)
    with mounted(plain, tmp / "mnt") as mnt:
        with open(mnt / "random.bin", "wb") as f:
            for _ in range(BL_FILE // MiB):
                f.write(os.urandom(MiB))
    (tmp / "mnt").rmdir()
    log("encrypting the volume (AES-CBC 128 + Elephant)")
    enc = blfx.encrypt_volume(plain, tmp / "elephant128.img", method=BL_METHODS["elephant128"],
                              protectors=("recovery",))
    (tmp / "elephant128.keys").write_text(enc["recovery_password"] + "\n")
    return {"plain": str(root / "plain.img"), "elephant": str(root / "elephant128.img"),
            "keys": str(root / "elephant128.keys"), "file": "random.bin"}


BL_VMS = {"elephant": "elephant", "plain": "plain"}   # side -> the VM holding its image


def build_bitlocker_repo() -> dict:
    """The two images of ``build_bitlocker`` backed up into one repository, each as the
    disk of its own VM (``rpfs backup`` with the keys, indexed before returning), built once
    into its own directory (the images' ``bitlocker-v1`` stays as it is)."""
    images = build_bitlocker()
    root = CACHE / "bitlocker-v2"

    def make(tmp: Path) -> dict:
        log("rpfs backup of the two BitLocker bench images")
        run(rpfs_cmd("init", tmp / "repo"), cwd=REPO)
        for side, vm in BL_VMS.items():
            run(rpfs_cmd("backup", tmp / "repo", images[side], "--vm", vm, "--index", "now",
                         "--keys", images["keys"]), cwd=REPO, timeout=1800)
        return {**images, "repo": str(root.resolve() / "repo"), "vms": BL_VMS}

    return built_once(root, make, ".tmp-bl2")


BL_READ = "read 256 MiB file, BitLocker Elephant vs plain volume"
BL_CPU = "mount daemon CPU per MiB (ms)"
BL_SYS = "mount daemon system CPU per MiB (ms)"   # the kernel's copies: where the host's balloon showed
# (mount, volume) in the order of an even round; odd rounds run it reversed, so neither
# volume of a pair is always the one read right after the other (the host's cache, the load)
BL_SIDES = [("repo", "elephant"), ("repo", "plain"), ("image", "elephant"), ("image", "plain")]


def bl_workload(mount: str, what: str = BL_READ) -> str:
    """A bitlocker row's name: the encrypted volume is the row's ``mount`` side ("repo" or
    "image"), the plain one is its "peer", both seen through the same kind of mount."""
    return f"{what}, {'repository' if mount == 'repo' else 'image'} mount"


def bl_kind(mount: str, volume: str) -> str:
    """The Results side of one sample: the Elephant volume is the mount's own column, the
    plain volume the "peer" of that row (so the ratio is plain time / Elephant time)."""
    return mount if volume == "elephant" else "peer"


def bl_files(data: dict) -> list[Path]:
    """Every file the bitlocker part reads: both images and each regular file of the
    repository (packs, catalog, maps, ...). Its cold state is these files out of the page
    cache, the same for every side."""
    files = [Path(data["plain"]), Path(data["elephant"])]
    for dirpath, _, names in os.walk(data["repo"]):
        files += [Path(dirpath) / n for n in sorted(names)]
    return [f for f in files if f.is_file()]


def evict(files: list[Path]) -> None:
    """Drop ``files``' pages from the page cache (``sync``, then ``POSIX_FADV_DONTNEED`` on
    each) instead of ``drop_caches``: on a VM whose balloon has free page reporting, the
    gigabytes a global drop frees go back to the host within seconds, and the next cold
    read then copies out of pages that fault in the host, 0.5-1.3 ms/MiB of kernel time
    depending on when it lands after the drop (notes of bitlk7); evicting just these files
    keeps the rest of the free memory where it was, so the read measures rpfs."""
    os.sync()
    for f in files:
        try:
            fd = os.open(f, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def recycle(files: list[Path]) -> None:
    """Read ``files`` whole into the page cache (1 MiB reads), for ``evict`` to free next.
    The cold read reuses the memory the eviction has just freed; when that was what the
    previous side left (a repository's packs or an image, different each time) the cost
    followed the order: the Elephant image read after the repository's plain side spent
    0.8-2 ms/MiB of system time (pages the balloon had handed to the host), after the plain
    image 0.2-0.3. Reading the same files before every eviction makes the freed memory the
    same for every side: 0.4-0.55 ms/MiB of daemon CPU for that read in 14 of 15 rounds."""
    for f in files:
        with open(f, "rb", buffering=0) as fh:
            while fh.read(MiB):
                pass


def resident_bytes(files: list[Path]) -> int | None:
    """Bytes of ``files`` in the page cache now (``fincore``; None without it): 0 after
    ``evict`` when the eviction took."""
    if not shutil.which("fincore") or not files:
        return None
    out = subprocess.run(["fincore", "--bytes", "--raw", "--noheadings", "--output", "RES",
                          *map(str, files)], capture_output=True, text=True)
    counts = out.stdout.split()   # a file gone meanwhile (a reader's record) is left out
    if out.returncode != 0 and not counts:
        return None
    return sum(map(int, counts))


BL_COLD = ("cold = a fresh mount, then both images read (so the eviction frees the same"
           " memory before every side) and every file of the part (both images, the"
           " repository's packs, catalog and maps) evicted with POSIX_FADV_DONTNEED after sync,"
           " the read at once; not drop_caches, whose freed memory this VM's balloon reports"
           " to the host, so the next read's page-cache copy paid host faults (0.5-2 ms/MiB,"
           " by when it landed after the drop and what was freed)")
BL_RESIDENT = "bytes of the part's files in page cache before the cold read"


def bl_read(path: Path) -> int:
    """Bytes of ``path`` read in 1 MiB reads."""
    from tools.bench_bitlocker import read_all

    return read_all(path.parent, [path.name])


def bl_round(data: dict, work: Path, rep: int, budget: float, res: Results) -> None:
    """One round of the bitlocker part: each (mount, volume) of ``BL_SIDES`` in this round's
    order, cold (a fresh mount; unlocking, the 2^20-round key stretch, is done by the first
    listing and not timed; then the part's files evicted, see ``recycle`` and ``evict``)
    then warm (same mount, read again)."""
    files = bl_files(data)
    for mount, volume in sides(BL_SIDES, rep):
        mp = work / "bl-mnt"
        mp.mkdir(parents=True, exist_ok=True)
        keys = ["--keys", data["keys"]] if volume == "elephant" else []
        if mount == "repo":
            run(rpfs_cmd("mount", data["repo"], mp, *keys), timeout=budget, cwd=REPO)
        else:
            run(rpfs_cmd("mount", data[volume], mp, *keys), timeout=budget, cwd=REPO)
        try:
            wait_mounted(mp)
            if mount == "repo":
                vm = mp / data["vms"][volume]
                root = vm / os.readlink(vm / "latest") / "volumes"
            else:
                root = mp / "volumes"
            root = root / f"{Path(data[volume]).stem}-p0"
            os.listdir(root)   # opens (unlocks) the volume
            pids = serving_pids([str(mp)])
            kind = bl_kind(mount, volume)
            recycle([Path(data["plain"]), Path(data["elephant"])])
            evict(files)   # after the listing: what the mount and unlock read goes too
            resident = resident_bytes(files)
            res.add("bitlocker", bl_workload(mount, BL_RESIDENT), "cold", kind, resident)
            for phase in ("cold", "warm"):
                cpu, sys_cpu = cpu_of(pids), cpu_of(pids, user=False)
                t = time.perf_counter()
                n = bl_read(root / data["file"])
                secs = time.perf_counter() - t
                used, sys_used = cpu_of(pids) - cpu, cpu_of(pids, user=False) - sys_cpu
                res.add("bitlocker", bl_workload(mount), phase, kind, secs)
                res.add("bitlocker", bl_workload(mount, BL_CPU), phase, kind,
                        round(used * 1000 / (n / MiB), 3))
                res.add("bitlocker", bl_workload(mount, BL_SYS), phase, kind,
                        round(sys_used * 1000 / (n / MiB), 3))
                res.add("bitlocker", bl_workload(mount, "load average"), phase, kind,
                        round(os.getloadavg()[0], 1))
                log(f"rep {rep + 1} {mount} {volume} {phase}: {secs:.2f} s, "
                    f"daemon CPU {used * 1000 / (n / MiB):.3f} ms/MiB"
                    f" (sys {sys_used * 1000 / (n / MiB):.3f})"
                    + (f", {resident} bytes resident before" if phase == "cold" else ""))
        finally:
            unmount(mp)


def bench_bitlocker(data: dict, work: Path, repeat: int, budget: float, res: Results) -> None:
    """``cat``-like read of the 256 MiB file on the Elephant volume against the same on the
    plain volume, through a repository mount (both backed up) and an image mount (both
    images): the ratio is the share of a plain volume's read speed BitLocker keeps. The
    mount daemon's CPU per MiB is kept too (less disturbed by load than the wall time)."""
    for rep in range(repeat):
        bl_round(data, work, rep, budget, res)


def bench_system(data: dict, work: Path, repeat: int, budget: float, res: Results) -> None:
    workloads = {
        "ls -f bigdir": lambda root: timed(["ls", "-f", root / data["bigdir"]], budget),
        "ls -l bigdir": lambda root: timed(["ls", "-l", root / data["bigdir"]], budget),
        "find volume": lambda root: timed(["find", root], budget),
    }
    for rep in range(repeat):
        for cls in MOUNTS:
            m = cls(data, work)
            try:
                drop_caches()
                root, secs = mount_and_list(m)
                res.add("system", "mount to first listing", "cold", m.kind, secs)
                for phase in ("cold", "warm"):  # cold: the first pass after mounting
                    for name, fn in workloads.items():
                        res.add("system", name, phase, m.kind, fn(root))
                        log(f"rep {rep + 1} {m.kind}: {name} {phase}: {res.samples[('system', name, phase)][m.kind][-1]}")
                res.add("system", "daemon RSS after these", "", m.kind, m.rss())
            finally:
                m.unmount()


def bench_rps(data: dict, work: Path, repeat: int, res: Results) -> None:
    """Mount to first listing of a volume when its VM has 1,000 recovery points: the
    repository mount only (the peer has no repository; its figure is the system part's).
    Cold, also what it read from the disk (``read_bytes_cold``) and, in one more cold round
    under strace whose time is not kept, the files it opened (``files_opened_cold``)."""
    workload = f"mount to first listing ({data['recovery_points']:,} recovery points)"
    for _ in range(repeat):
        m = RepoMount(data, work)
        try:
            drop_caches()
            blocks = resource.getrusage(resource.RUSAGE_CHILDREN).ru_inblock
            _, secs = mount_and_list(m)
            res.add("rps", workload, "cold", m.kind, secs)
            res.add("rps", "bytes read from disk to first listing", "cold", m.kind,
                    read_bytes_cold(m, blocks))
            m.unmount()
            _, secs = mount_and_list(m)
            res.add("rps", workload, "warm", m.kind, secs)
        finally:
            m.unmount()
    res.add("rps", "files opened to first listing", "cold", "repo", files_opened_cold(data, work))


def read_bytes_cold(m: Mount, blocks_before: int) -> int:
    """What the mount command read from the disk (its ``ru_inblock``: it has exited and
    been waited for) and what its daemon has read so far (/proc/<pid>/io ``read_bytes``).
    Pages another process brought in meanwhile are nobody's here: a lower bound."""
    blocks = resource.getrusage(resource.RUSAGE_CHILDREN).ru_inblock - blocks_before
    daemon = 0
    for pid in serving_pids(m.pids_of):
        try:
            with open(f"/proc/{pid}/io") as f:
                daemon += sum(int(line.split()[1]) for line in f if line.startswith("read_bytes:"))
        except OSError:
            continue
    return blocks * 512 + daemon


def files_opened_cold(data: dict, work: Path) -> int | None:
    """Files (modules, libraries, the catalog, packs, ...) the mount command and its daemon
    open successfully from the start to the first listing of the volume, cold: every one
    is a disk read then. Counted with ``strace -f`` (None without strace)."""
    if not shutil.which("strace"):
        return None
    mp = work / "rps-opens"
    mp.mkdir(parents=True, exist_ok=True)
    trace = work / "rps-opens.strace"
    drop_caches()
    p = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=open,openat", "-e",
                          "status=successful", "-o", str(trace),
                          *map(str, rpfs_cmd("mount", data["repo"], mp))],
                         cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_mounted(mp)
        vm = mp / data["vm"]
        rp = os.readlink(vm / "latest")
        os.listdir(vm / rp / "volumes" / f"{data['disk']}-p{data['partition']['number']}")
        # what was written by now; a call another thread's interrupted shows twice (its
        # "<unfinished ...>" line and its "<... resumed>" one): counted once
        count = sum("resumed>" not in line for line in trace.read_text().splitlines())
    finally:
        unmount(mp)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
    return count


# ---------------------------------------------------------------------------------------
# The table

# (part, workload) -> (ratio the repository mount must reach, or an absolute bound): the
# targets of issue 17
TARGETS = {
    ("vhdx", "cat random.bin"): ">= 2x",
    ("vhdx", "cat log.txt"): ">= 2x",
    ("vhdx", "cp -r small"): ">= 1.5x",
    ("vhdx", "random 4 KiB read"): ">= 0.7x",
    ("vhdx", "restore 4,000 small files (peer: 7zz x)"): ">= 1x",
    ("vhdx", "restore 4,000 small files to disk (peer: 7zz x)"): ">= 1x",
    ("vhdx", "mount to first listing"): "<= 0.25 s",
    ("export", "export whole disk to vhdx (peer: qemu-img convert)"): ">= 1x",
    ("export", "export whole disk to raw (peer: qemu-img convert)"): ">= 1x",
    ("bitlocker", bl_workload("repo")): ">= 0.8x",
    ("bitlocker", bl_workload("image")): ">= 0.8x",
    ("system", "mount to first listing"): "<= 0.25 s",
    ("rps", f"mount to first listing ({RPS:,} recovery points)"): "<= 0.15 s",
    ("system", "ls -l bigdir"): ">= 1.5x",
    ("system", "ls -f bigdir"): ">= 0.5x",
    ("system", "find volume"): ">= 0.5x",
    ("vhdx", "daemon RSS after these"): "< 300 MiB",
    ("system", "daemon RSS after these"): "< 300 MiB",
}


def _median(values: list):
    vals = [v for v in values if v is not None]
    if not vals or len(vals) < len(values) / 2:
        return None
    if isinstance(vals[0], bool):
        return all(vals)
    return statistics.median(vals)


def rows(res: Results) -> list[dict]:
    out = []
    for (part, workload, phase), by_kind in res.samples.items():
        med = {k: _median(v) for k, v in by_kind.items()}
        row = {"part": part, "workload": workload, "phase": phase,
               "unit": ("bytes" if "RSS" in workload or "allocated" in workload
                        or "bytes read" in workload or "in page cache" in workload else "count" if "files opened" in workload
                        else "ok"
                        if "matches" in workload else "load" if "load average" in workload
                        else "ms" if "(ms)" in workload else "s"),
               "median": med, "samples": by_kind}
        peer = med.get("peer")
        for k in ("repo", "image"):
            v = med.get(k)
            if row["unit"] == "load":
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool) and isinstance(peer, (int, float)) and v > 0:
                row[f"{k}_ratio"] = round(peer / v, 3)   # > 1: rpfs faster (or smaller)
                each = round_ratios(by_kind.get(k, []), by_kind.get("peer", []))
                if len(each) > 1:
                    row[f"{k}_ratio_range"] = [min(each), max(each)]
        target = TARGETS.get((part, workload)) if phase != "warm" else None
        if target:
            row["target"] = target
            row["met"] = _met(target, row, med)
            key = f"{_judged(row)}_range"
            if target.endswith("x") and key in row:   # issue 17: "in every run"
                row["met_every_round"] = _met(target, {**row, key[:-6]: row[key][0]}, med)
        out.append(row)
    return out


def _judged(row: dict) -> str:
    """The ratio a row's target is about: the repository mount's, except for a bitlocker
    row of the image mount (there the Elephant image is the "image" side, the plain one the
    "peer")."""
    return "image_ratio" if row["part"] == "bitlocker" and "image mount" in row["workload"] else "repo_ratio"


def round_ratios(mine: list, peer: list) -> list[float]:
    """peer / rpfs for each round that has both samples (the sides of one round ran
    back to back): their spread says more than the ratio of two medians."""
    return [round(p / m, 3) for m, p in zip(mine, peer)
            if isinstance(m, (int, float)) and isinstance(p, (int, float))
            and not isinstance(m, bool) and m > 0]


def spread(values: list, unit: str) -> str:
    """`` (min-max)`` of a figure's samples when there are several, else nothing."""
    vals = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(vals) < 2 or unit in ("ok", "bytes", "count"):
        return ""
    return f" ({fmt(min(vals), unit)}-{fmt(max(vals), unit)})"


def _met(target: str, row: dict, med: dict) -> bool | None:
    op, num = target.split()[0], float(target.split()[1].rstrip("x"))
    if target.endswith("x"):
        value = row.get(_judged(row))
    elif target.endswith("MiB"):
        value, num = med.get("repo"), num * MiB
    else:
        value = med.get("repo")
    if value is None:
        return None
    return {">=": value >= num, ">": value > num, "<=": value <= num, "<": value < num}[op]


def fmt(v, unit: str) -> str:
    if v is None:
        return "failed"
    if unit == "bytes":
        return f"{v / MiB:.0f} MiB" if v >= 100 * MiB else f"{v / MiB:.1f} MiB"
    if unit == "count":
        return f"{v:,}"
    if unit == "ok":
        return "yes" if v else "NO"
    if unit == "load":
        return f"{v:.1f}"
    if unit == "ms":
        return f"{v:.2f} ms"
    if v < 0.01:
        return f"{v * 1e6:.0f} us"
    return f"{v:.2f} s"


def table(rs: list[dict]) -> str:
    head = ["part", "workload", "phase", "repo (range)", "image (range)", "peer (range)",
            "peer/repo (each round)", "peer/image (each round)", "target"]
    lines = [head]
    for r in rs:
        m = r["median"]
        lines.append([r["part"], r["workload"], r["phase"]] +
                     [fmt(m.get(k), r["unit"]) + spread(r["samples"][k], r["unit"]) if k in m else ""
                      for k in ("repo", "image", "peer")] +
                     [f"{r[k]:.2f}x" + (f" ({r[k + '_range'][0]:.2f}-{r[k + '_range'][1]:.2f}x)"
                                        if k + "_range" in r else "") if k in r else ""
                      for k in ("repo_ratio", "image_ratio")] +
                     [(r.get("target", "") + ("" if "met" not in r else
                                              (" ok" if r.get("met_every_round", True) else " ok (median; not every round)")
                                              if r["met"] else " MISSED" if r["met"] is False else " ?"))])
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def _terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--part", default="vhdx,export,system,rps,bitlocker",
                    help="any of vhdx, export, system, rps, bitlocker, comma-separated (default: all;"
                         " restore: only vhdx's restore rows; cat: only its two cat rows)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per figure (median)")
    ap.add_argument("--bitlocker-repeat", type=int, default=None,
                    help="rounds of the bitlocker part (default: 3 x --repeat, 9; its ratio is"
                         " noisy and a round costs a few seconds)")
    ap.add_argument("--budget", type=float, default=180.0, help="seconds per command")
    ap.add_argument("--json", default=str(REPO / "docs" / "bench_peers.json"),
                    help="where to write this run's results (default docs/bench_peers.json)")
    ap.add_argument("--build-only", action="store_true", help="build the data and stop")
    ap.add_argument("--dest", default="/dev/shm",
                    help="where cp -r, rpfs restore and 7zz x write (default /dev/shm: a tmpfs, so"
                         " the figures are the readers', not the target file system's)")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_peers: needs root (drop_caches, losetup, mounts)", file=sys.stderr)
        return 2
    for tool in ("vhdimount", "ntfs-3g", "losetup", "7zz", "mkntfs", "qemu-img"):
        if not shutil.which(tool):
            print(f"bench_peers: {tool} missing (run tools/setup.sh)", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _terminate)  # unmount in the finally blocks, then exit
    parts = [p for p in args.part.split(",") if p]
    data = {"vhdx": build_data() if {"vhdx", "export", "restore", "cat"} & set(parts) else None,
            "system": build_system() if "system" in parts else None,
            "rps": build_rps() if "rps" in parts else None,
            "bitlocker": build_bitlocker_repo() if "bitlocker" in parts else None}
    if data["vhdx"]:
        data["vhdx"].update(vm=VM)
    if args.build_only:
        print(json.dumps(data, indent=1))
        return 0
    # Measure rpfs as installed (pip writes the .pyc files): in an environment with
    # PYTHONDONTWRITEBYTECODE=1 and none written, every command would compile its modules.
    for pkg in ("rpfs", "formats", "ntfs_reader"):
        compileall.compile_dir(REPO / pkg, quiet=1)
    res = Results()
    load_before = os.getloadavg()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="rpfs-bench-peers-"))
    dest = Path(tempfile.mkdtemp(prefix="rpfs-bench-peers-", dir=args.dest))
    try:
        if "vhdx" in parts:
            bench_vhdx(data["vhdx"], work, args.repeat, args.budget, res, dest)
        if "cat" in parts and "vhdx" not in parts:
            bench_vhdx(data["vhdx"], work, args.repeat, args.budget, res, dest, only=CAT_ROWS)
        if "restore" in parts and "vhdx" not in parts:
            for rep in range(args.repeat):
                restore_round(data["vhdx"], rep, args.budget, res, dest / "out")
        if "export" in parts:
            bench_export(data["vhdx"], args.repeat, args.budget, res, dest)
        if data["system"]:
            bench_system(data["system"], work, args.repeat, args.budget, res)
        if data["rps"]:
            bench_rps(data["rps"], work, args.repeat, res)
        if data["bitlocker"]:
            bench_bitlocker(data["bitlocker"], work, args.bitlocker_repeat or 3 * args.repeat,
                            args.budget, res)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(dest, ignore_errors=True)
    rs = rows(res)
    load_after = os.getloadavg()
    bl_rounds = (f" (bitlocker: {args.bitlocker_repeat or 3 * args.repeat} rounds)"
                 if data["bitlocker"] else "")
    print(f"\ncp -r, restore and 7zz x write to {args.dest}. rpfs vs vhdimount + loop + ntfs-3g -o ro (restore: vs 7zz x); median of {args.repeat}{bl_rounds};"
          f" ratio = peer time / rpfs time (> 1: rpfs faster; RSS: peer / rpfs)."
          f" {os.cpu_count()} cores, load average {load_before[0]:.1f} before, {load_after[0]:.1f} after")
    print(table(rs))
    if data["bitlocker"]:
        print(f"bitlocker: {BL_COLD}")
    Path(args.json).write_text(json.dumps({
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": "tools/bench_peers.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "repeat": args.repeat, "bitlocker_rounds": args.bitlocker_repeat or 3 * args.repeat,
        "dest": args.dest, "cores": os.cpu_count(), "kernel": os.uname().release,
        "load_average": [load_before, load_after], "seconds": round(time.monotonic() - t0),
        "cold_state": {**({"bitlocker": BL_COLD} if data["bitlocker"] else {}),
                       "other parts": "sync; echo 3 > /proc/sys/vm/drop_caches"},
        "data": data, "rows": rs}, indent=1) + "\n")
    log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
