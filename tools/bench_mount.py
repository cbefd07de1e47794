"""Benchmark the rpfs mount against the tools people use today, on the same VHDX, in one run.

    .venv/bin/python tools/bench_mount.py                       # small fixture set
    .venv/bin/python tools/bench_mount.py --set large           # multi-GiB set (built on demand)
    .venv/bin/python tools/bench_mount.py --peers rpfs,ntfs-3g --only walk,list --json out.json

Peers (each mounts the NTFS volume system-p3 of a dynamic VHDX of the fixture system disk):
  rpfs      ``rpfs mount IMAGE MNT``, then MNT/volumes/<disk>-p3
  ntfs-3g   libvhdi ``vhdimount`` + a read-only loop device at the partition offset + ``ntfs-3g -o ro``
  fsntfs    libvhdi ``vhdimount`` + libfsntfs ``fsntfsmount -o OFFSET`` (Debian 12's fsntfsmount is
            built without FUSE: the PyPI sdist of the same library is built once into .cache/)
  nbd       ``qemu-nbd -r`` + loop device + ntfs-3g (skipped when the nbd module is not there)

Workloads, each cold (page cache dropped, fresh mount) then warm (same mount, second pass):
  walk      os.walk + lstat of every entry (entries/s)
  list      names of the big directory (os.listdir)        ls-l  the same plus lstat of each
  lsf       the ``ls -f`` command on the big directory     lsl   the ``ls -l`` command on it
            (coreutils' ls also asks security.selinux and system.posix_acl_access of each file)
  find      the ``find`` command over the whole volume (names and d_type only)
  seq       sequential 1 MiB reads of the files in /large (MB/s)
  seqz      sequential read of the LZNT1-compressed /compressed/text.txt (MB/s)
  small     every file under Windows/System32 read whole (files/s)
  random    1,000 random 4 KiB preads in /large/random-0.bin (median / p99 latency)
  cp        ``cp -a Users/ TMP`` (s)
and afterwards checks that every mount gives the manifest's sha256 for a sample of files.
The RSS of each peer's FUSE processes (the rpfs daemon; vhdimount + ntfs-3g) is taken after
each workload's warm pass; the table's ``rss`` row is the largest.
Each workload runs in a child process killed after --budget seconds; every mount, loop device
and nbd connection is undone in ``finally`` blocks. Mount points live in a fresh directory
under /tmp (not in the repository, where someone's ``du``/``find`` would wander into them).
With --repeat N each figure is the best of N (the machine is shared: the best run is the one
least disturbed); cold runs remount and drop caches every time.
``--layers`` prints instead where a cold listing's time goes per entry, in-process (no FUSE):
index only, MFT record, attributes, raw $MFT reads one by one or in 64 KiB blocks.
``--rpfs-tree DIR`` runs the rpfs of another checkout; ``--before DIR`` adds it as one more
peer, "rpfs-before", for a before/after comparison in one table.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "bench_mount"
FSNTFS_VERSION = "20260827"  # libfsntfs-python sdist on PyPI (the library's full source)
IMAGE_KIND = "vhdx-dynamic-32M"  # Hyper-V's default block size
VOLUME = "system-p3"
WORKLOADS = ["walk", "list", "ls-l", "lsf", "lsl", "find", "seq", "seqz", "small", "random",
             "cp"]
PEERS = ["rpfs", "ntfs-3g", "fsntfs", "nbd"]


def log(msg: str) -> None:
    print(f"[bench_mount {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd, check=True, timeout=120, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if check and r.returncode:
        raise RuntimeError(f"{' '.join(map(str, cmd))}: {(r.stderr or r.stdout).strip()}")
    return r



def serving_pids(mountpoints: list[str]) -> list[str]:
    """Processes (not this one) with one of ``mountpoints`` as an argument: the daemons
    serving them."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if pid != str(os.getpid()) and any(m in argv for m in mountpoints):
            out.append(pid)
    return out


def rss_of(pids: list[str], field: str = "VmRSS") -> int:
    """Resident bytes of ``pids`` together (those gone meanwhile count 0); ``field="VmHWM"``
    for their peaks."""
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total

def wait_mounted(mp: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.ismount(mp):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{mp}: not mounted after {timeout:.0f} s")


def unmount(mp: Path) -> None:
    """fusermount3 -u, then umount, then a lazy umount: a benchmark must never leave a mount."""
    for cmd in (["fusermount3", "-u", mp], ["umount", mp], ["fusermount3", "-u", "-z", mp],
                ["umount", "-l", mp]):
        if not os.path.ismount(mp):
            return
        with contextlib.suppress(Exception):
            run(cmd, check=False, timeout=60)
        for _ in range(50):
            if not os.path.ismount(mp):
                return
            time.sleep(0.1)


def detach_loop(dev: str) -> None:
    for _ in range(50):
        if run(["losetup", "-d", dev], check=False).returncode == 0:
            return
        time.sleep(0.1)


def drop_caches() -> bool:
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# Peers: mount() returns the volume's root directory; unmount() undoes everything.


class Peer:
    name = ""

    def __init__(self, image: Path, part: dict, work: Path):
        self.image, self.part, self.work = image, part, work
        self.undo: list = []

    def available(self) -> str | None:
        """None, or why this peer cannot run here."""
        return None

    def mount(self) -> Path:
        raise NotImplementedError

    def unmount(self) -> None:
        while self.undo:
            fn = self.undo.pop()
            try:
                fn()
            except Exception as e:  # keep undoing the rest
                log(f"{self.name}: cleanup: {e}")
        for _ in range(100):  # a daemon still exiting would count in the next mount's RSS
            if not self.pids():
                break
            time.sleep(0.1)

    def pids(self) -> list[str]:
        """The processes serving this peer's mounts."""
        return serving_pids([str(self.work / f"{self.name}-{n}")
                             for n in ("mnt", "vhdi", "ntfs", "fsntfs")])

    def rss(self) -> int:
        """Resident bytes of the processes serving this peer's mounts."""
        return rss_of(self.pids())

    def _dir(self, name: str) -> Path:
        d = self.work / f"{self.name}-{name}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def _fuse(self, cmd: list, mp: Path) -> None:
        run(cmd, timeout=120)
        self.undo.append(lambda: unmount(mp))
        wait_mounted(mp)

    def _loop(self, backing: Path | str) -> str:
        dev = run(["losetup", "-r", "-f", "--show", "-o", self.part["offset"],
                   "--sizelimit", self.part["size"], backing]).stdout.strip()
        self.undo.append(lambda: detach_loop(dev))
        return dev

    def _vhdimount(self) -> Path:
        vmp = self._dir("vhdi")
        self._fuse(["vhdimount", self.image, vmp], vmp)
        return vmp / "vhdi1"

    def _ntfs3g(self, dev: str) -> Path:
        mp = self._dir("ntfs")
        self._fuse(["ntfs-3g", "-o", "ro", dev, mp], mp)
        return mp


class RpfsPeer(Peer):
    name = "rpfs"
    tree = REPO  # the checkout whose rpfs runs

    def mount(self) -> Path:
        mp = self._dir("mnt")
        env = dict(os.environ, PYTHONPATH=str(self.tree))
        r = run([sys.executable, "-m", "rpfs", "mount", self.image, mp], cwd=self.tree,
                env=env, check=False)
        if r.returncode:
            raise RuntimeError(f"rpfs mount: {r.stderr.strip()}")
        self.undo.append(lambda: unmount(mp))
        wait_mounted(mp)
        vols = mp / "volumes"
        want = f"-p{self.part['number']}"
        names = [n for n in os.listdir(vols) if n.endswith(want)]
        if len(names) != 1:
            raise RuntimeError(f"rpfs: no single volume *{want} in {sorted(os.listdir(vols))}")
        return vols / names[0]


class Ntfs3gPeer(Peer):
    name = "ntfs-3g"

    def available(self):
        return None if shutil.which("vhdimount") and shutil.which("ntfs-3g") else \
            "vhdimount or ntfs-3g missing"

    def mount(self) -> Path:
        return self._ntfs3g(self._loop(self._vhdimount()))


class FsntfsPeer(Peer):
    name = "fsntfs"

    def available(self):
        if not shutil.which("vhdimount"):
            return "vhdimount missing"
        try:
            self.binary = fsntfsmount_binary()
        except Exception as e:
            return f"no fsntfsmount with FUSE support: {e}"
        return None

    def mount(self) -> Path:
        vhdi = self._vhdimount()
        mp = self._dir("fsntfs")
        self._fuse([self.binary, "-o", self.part["offset"], vhdi, mp], mp)
        return mp


class NbdPeer(Peer):
    name = "nbd"

    def available(self):
        if not shutil.which("qemu-nbd"):
            return "qemu-nbd missing"
        if not os.path.exists("/dev/nbd0"):
            if shutil.which("modprobe"):
                run(["modprobe", "nbd", "max_part=0"], check=False)
            if not os.path.exists("/dev/nbd0"):
                return "nbd kernel module not available (no /dev/nbd0)"
        return None

    def mount(self) -> Path:
        dev = next((f"/dev/nbd{i}" for i in range(16) if os.path.exists(f"/dev/nbd{i}")
                    and Path(f"/sys/block/nbd{i}/size").read_text().strip() == "0"), None)
        if dev is None:
            raise RuntimeError("no free nbd device")
        run(["qemu-nbd", "-r", "-c", dev, "-f", "vhdx", self.image])
        self.undo.append(lambda: run(["qemu-nbd", "-d", dev], check=False))
        return self._ntfs3g(self._loop(dev))


PEER_CLASSES = {c.name: c for c in (RpfsPeer, Ntfs3gPeer, FsntfsPeer, NbdPeer)}


def fsntfsmount_binary() -> str:
    """An fsntfsmount built with FUSE: the system's if it has it, else built from PyPI's sdist."""
    sysbin = shutil.which("fsntfsmount")
    if sysbin and "libfuse" in run(["ldd", sysbin], check=False).stdout:
        return sysbin
    out = CACHE / f"fsntfsmount-{FSNTFS_VERSION}" / "fsntfsmount"
    if out.exists():
        return str(out)
    log(f"building fsntfsmount {FSNTFS_VERSION} from the libfsntfs-python sdist (~2 min)")
    with tempfile.TemporaryDirectory(dir=CACHE.parent) as tmp:
        run([sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps",
             f"libfsntfs-python=={FSNTFS_VERSION}", "-d", tmp], timeout=600)
        tarball = next(Path(tmp).glob("*.tar.gz"))
        run(["tar", "xzf", tarball, "-C", tmp])
        src = next(p for p in Path(tmp).iterdir() if p.is_dir())
        run(["./configure", "--enable-shared=no", "--disable-nls", "--disable-python"],
            cwd=src, timeout=900)
        run(["make", f"-j{os.cpu_count() or 1}"], cwd=src, timeout=1800)
        built = src / "fsntfstools" / "fsntfsmount"
        if "libfuse" not in run(["ldd", built]).stdout:
            raise RuntimeError("configure found no libfuse (install libfuse3-dev)")
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, out.with_suffix(".tmp"))
        os.replace(out.with_suffix(".tmp"), out)
    return str(out)


# ---------------------------------------------------------------------------------------
# Workloads: run in a child process (``--_work``) so a stuck mount is killed, not waited on.


def w_walk(root: Path, p: dict) -> dict:
    n = errors = 0
    t = time.perf_counter()
    for d, dirs, files in os.walk(root, onerror=lambda e: None):
        for name in dirs + files:
            try:
                os.lstat(os.path.join(d, name))
            except OSError:
                errors += 1
            n += 1
    return {"seconds": time.perf_counter() - t, "count": n, "errors": errors}


def w_list(root: Path, p: dict) -> dict:
    t = time.perf_counter()
    names = os.listdir(root / p["bigdir"])
    return {"seconds": time.perf_counter() - t, "count": len(names)}


def w_lsl(root: Path, p: dict) -> dict:
    d = root / p["bigdir"]
    t = time.perf_counter()
    names = os.listdir(d)
    for name in names:
        os.lstat(os.path.join(d, name))
    return {"seconds": time.perf_counter() - t, "count": len(names)}


def _command(cmd: list, count_lines: bool = True) -> dict:
    t = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, env=dict(os.environ, LC_ALL="C"))
    secs = time.perf_counter() - t
    if r.returncode:
        raise RuntimeError(f"{cmd[0]}: {r.stderr.decode(errors='replace').strip()[:200]}")
    return {"seconds": secs, "count": r.stdout.count(b"\n")}


def w_lsf(root: Path, p: dict) -> dict:
    return _command(["ls", "-f", str(root / p["bigdir"])])


def w_lsl_cmd(root: Path, p: dict) -> dict:
    return _command(["ls", "-l", str(root / p["bigdir"])])


def w_find(root: Path, p: dict) -> dict:
    return _command(["find", str(root)])


def _read_whole(path: str, buf: bytearray) -> int:
    total = 0
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            total += n
    return total


def w_seq(root: Path, p: dict) -> dict:
    buf = bytearray(1 << 20)
    t = time.perf_counter()
    total = sum(_read_whole(str(root / f), buf) for f in p["seq_files"])
    return {"seconds": time.perf_counter() - t, "bytes": total, "count": len(p["seq_files"])}


def w_seqz(root: Path, p: dict) -> dict:
    buf = bytearray(1 << 20)
    t = time.perf_counter()
    total = _read_whole(str(root / p["compressed_file"]), buf)
    return {"seconds": time.perf_counter() - t, "bytes": total, "count": 1}


def w_small(root: Path, p: dict) -> dict:
    buf = bytearray(1 << 20)
    n = total = errors = 0
    t = time.perf_counter()
    for d, dirs, files in os.walk(root / p["small_dir"]):
        for name in files:
            path = os.path.join(d, name)
            try:
                total += _read_whole(path, buf)
            except OSError:
                errors += 1
            n += 1
    return {"seconds": time.perf_counter() - t, "count": n, "bytes": total, "errors": errors}


def w_random(root: Path, p: dict) -> dict:
    path = root / p["random_file"]
    size = p["random_size"]
    rng = random.Random(4096)
    offsets = [rng.randrange(size // 4096) * 4096 for _ in range(1000)]
    lat = []
    fd = os.open(path, os.O_RDONLY)
    try:
        t = time.perf_counter()
        for off in offsets:
            t0 = time.perf_counter()
            if len(os.pread(fd, 4096, off)) != 4096:
                raise RuntimeError(f"short read at {off}")
            lat.append(time.perf_counter() - t0)
        total = time.perf_counter() - t
    finally:
        os.close(fd)
    lat.sort()
    return {"seconds": total, "count": len(lat), "median_us": lat[len(lat) // 2] * 1e6,
            "p99_us": lat[int(len(lat) * 0.99)] * 1e6}


def w_cp(root: Path, p: dict) -> dict:
    dest = Path(tempfile.mkdtemp(prefix="bench-cp-", dir=p["tmp"]))
    try:
        t = time.perf_counter()
        r = subprocess.run(["cp", "-a", str(root / p["cp_dir"]), str(dest / "out")],
                           capture_output=True, text=True)
        secs = time.perf_counter() - t
        n = sum(len(dirs) + len(files) for _, dirs, files in os.walk(dest / "out"))
        errs = [line for line in r.stderr.splitlines() if line.strip()]
        return {"seconds": secs, "count": n, "errors": len(errs), "first_error": errs[:1]}
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def w_verify(root: Path, p: dict) -> dict:
    """sha256 of the sample files (whole), compared with the manifest by the parent."""
    out = {}
    for rel in p["sample"]:
        h = hashlib.sha256()
        try:
            with open(root / rel.lstrip("/"), "rb", buffering=0) as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            out[rel] = h.hexdigest()
        except OSError as e:
            out[rel] = f"error: {e.strerror}"
    return {"seconds": 0.0, "hashes": out}


WORK_FNS = {"walk": w_walk, "list": w_list, "ls-l": w_lsl, "lsf": w_lsf, "lsl": w_lsl_cmd,
            "find": w_find, "seq": w_seq, "seqz": w_seqz,
            "small": w_small, "random": w_random, "cp": w_cp, "verify": w_verify}


def run_workload(name: str, root: Path, params: dict, budget: float) -> dict:
    cmd = [sys.executable, __file__, "--_work", name, str(root)]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=budget,
                           input=json.dumps(params))
    except subprocess.TimeoutExpired:
        return {"timeout": budget}
    if r.returncode:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(r.stdout)


def layer_costs(image: Path, part: dict, bigdir: str) -> None:
    """Per-entry cost of listing ``bigdir`` by layer (what FUSE cannot make cheaper)."""
    import gc

    from formats import open_image
    from ntfs_reader import Volume
    from ntfs_reader.record import parse_record
    from streams.stream import FileStream, SliceStream

    def volume():
        return Volume(SliceStream(open_image(FileStream(image)), part["offset"], part["size"]))

    def timed(label, fn, n):
        t = time.perf_counter()
        fn()
        dt = time.perf_counter() - t
        print(f"{label:58} {dt:6.2f} s  {dt / n * 1e6:6.1f} µs/entry")

    gc.set_threshold(100_000, 50, 100)  # as in the mount process
    kids = list(volume().lookup("/" + bigdir).iterdir())
    n = len(kids)
    print(f"{n} entries of /{bigdir} on {image.name}")
    vol = volume()
    kids = []
    timed("names from the index (Entry.iterdir, .name)",
          lambda: kids.extend(k for k in vol.lookup("/" + bigdir).iterdir() if k.name), n)
    timed("+ each child's MFT record (.is_dir)", lambda: [k.is_dir for k in kids], n)
    timed("+ times, size, nlink, is_symlink, allocated_size",
          lambda: [(k.times, k.size, k.nlink, k.is_symlink, k.allocated_size) for k in kids], n)
    mft, rs = vol._mft, vol.record_size
    refs = sorted(k.ref for k in kids)
    timed("raw $MFT reads, one record each", lambda: [mft.read(r * rs, rs) for r in refs], n)
    blocks = sorted({r * rs >> 16 for r in refs})
    timed("raw $MFT reads, 64 KiB blocks", lambda: [mft.read(b << 16, 1 << 16) for b in blocks], n)
    raw = [mft.read(r * rs, rs) for r in refs]
    timed("parse_record", lambda: [parse_record(x, r, "v", 0) for x, r in zip(raw, refs)], n)


# ---------------------------------------------------------------------------------------
# The run and the table


def plan(fx) -> tuple[Path, dict, dict, dict]:
    disk = fx.disks["system"]
    image = disk.images[IMAGE_KIND]
    part = next(p for p in disk.partitions if p.get("volume") == VOLUME)
    manifest = fx.volumes[VOLUME].manifest
    entries = manifest["entries"]
    large = sorted(p for p, e in entries.items() if p.startswith("/large/") and e["type"] == "file")
    rand = "/large/random-0.bin"
    files = sorted(p for p, e in entries.items() if e["type"] == "file" and "sha256" in e
                   and e["size"] <= 64 << 20)
    rng = random.Random(7)
    by_top: dict[str, list[str]] = {}
    for f in files:
        by_top.setdefault(f.split("/")[1], []).append(f)
    sample = set()
    for group in by_top.values():  # up to 25 per top-level directory: bigdir must not dominate
        sample.update(rng.sample(group, min(25, len(group))))
    sample |= {p for p in files if p.startswith(("/compressed/", "/frag/", "/sparse/", "/large/"))}
    sample = sorted(sample)
    params = {
        "bigdir": manifest["features"]["big_dir"]["path"].lstrip("/"),
        "seq_files": [p.lstrip("/") for p in large],
        "compressed_file": "compressed/text.txt",
        "small_dir": "Windows/System32",
        "random_file": rand.lstrip("/"), "random_size": entries[rand]["size"],
        "cp_dir": "Users",
        "sample": sample,
    }
    truth = {p: entries[p]["sha256"] for p in sample}
    return image, part, params, truth


def _better(a: dict | None, b: dict) -> dict:
    if a is None or "seconds" not in a:
        return b
    return b if "seconds" in b and b["seconds"] < a["seconds"] else a


def measure(peers: list[Peer], workloads: list[str], params: dict, truth: dict,
            budget: float, verify: bool, repeat: int = 1) -> dict:
    results: dict = {p.name: {} for p in peers}
    for w in workloads:
        for attempt in range(repeat):
            for peer in peers:  # peers interleaved, so a busy minute hits them alike
                res = results[peer.name]
                if attempt and any("timeout" in res.get(f"{w} {ph}", {}) for ph in ("cold", "warm")):
                    continue  # once over budget is enough
                try:
                    dropped = drop_caches()
                    root = peer.mount()
                    drop_caches()  # mounting reads headers: cold means cold for the workload too
                    for phase in ("cold", "warm"):
                        r = run_workload(w, root, params, budget)
                        r["caches_dropped"] = dropped if phase == "cold" else None
                        res[f"{w} {phase}"] = _better(res.get(f"{w} {phase}"), r)
                        log(f"{peer.name:8} {w:7} {phase}: {fmt(w, r)}")
                    res["rss"] = max(res.get("rss", 0), peer.rss())
                except Exception as e:
                    res.setdefault(f"{w} cold", {"error": str(e)})
                    res.setdefault(f"{w} warm", {"error": str(e)})
                    log(f"{peer.name}: {w}: {e}")
                finally:
                    peer.unmount()
    if verify:
        for peer in peers:
            try:
                root = peer.mount()
                r = run_workload("verify", root, params, budget * 4)
                hashes = r.get("hashes", {})
                bad = sorted(p for p in truth if hashes.get(p) != truth[p])
                results[peer.name]["verify"] = {
                    "files": len(truth), "mismatches": len(bad), "examples":
                    [f"{p}: {hashes.get(p, r.get('error') or r.get('timeout'))}" for p in bad[:5]]}
                log(f"{peer.name}: sha256 of {len(truth)} files: {len(bad)} differ from the manifest")
            except Exception as e:
                results[peer.name]["verify"] = {"error": str(e)}
            finally:
                peer.unmount()
    return results


UNITS = {"walk": "entries/s", "list": "ms", "ls-l": "ms", "lsf": "ms", "lsl": "ms", "find": "ms",
         "seq": "MB/s", "seqz": "MB/s",
         "small": "files/s", "random": "µs med", "cp": "s"}


def fmt(w: str, r: dict) -> str:
    if "timeout" in r:
        return f">{r['timeout']:.0f} s (timeout)"
    if "error" in r:
        return "error"
    s = r["seconds"]
    if w in ("walk", "small"):
        v = f"{r['count'] / s:,.0f}"
    elif w in ("list", "ls-l", "lsf", "lsl", "find"):
        v = f"{s * 1000:,.0f}"
    elif w in ("seq", "seqz"):
        v = f"{r['bytes'] / s / 1e6:,.0f}"
    elif w == "random":
        v = f"{r['median_us']:,.0f} (p99 {r['p99_us']:,.0f})"
    else:
        v = f"{s:.2f}"
    return v


def table(results: dict, workloads: list[str]) -> str:
    """Workloads down, peers across; in brackets the peer's time over rpfs's (>1: rpfs faster)."""
    names = list(results)
    rows = [["workload", "unit"] + names]
    for w in workloads:
        for phase in ("cold", "warm"):
            key = f"{w} {phase}"
            base = results.get("rpfs", {}).get(key, {})
            row = [key, UNITS[w]]
            for n in names:
                r = results[n].get(key)
                if r is None:
                    row.append("-")
                    continue
                cell = fmt(w, r)
                if n != "rpfs" and "seconds" in r and "seconds" in base and base["seconds"] > 0:
                    cell += f" [{r['seconds'] / base['seconds']:.2f}x]"
                elif n != "rpfs" and "timeout" in r and "seconds" in base:
                    cell += f" [>{r['timeout'] / base['seconds']:.0f}x]"
                row.append(cell)
            rows.append(row)
        counts = {n: results[n].get(f"{w} warm", {}).get("count") for n in names}
        if len(set(c for c in counts.values() if c is not None)) > 1:
            rows.append([f"  ({w}: items)", ""] + [str(counts[n]) for n in names])
    rows.append(["rss (max)", "MiB"] + [f"{results[n].get('rss', 0) / 2**20:,.0f}" for n in names])
    if any("verify" in results[n] for n in names):
        cells = []
        for n in names:
            v = results[n].get("verify", {})
            cells.append("error" if "error" in v else f"{v.get('files', 0) - v.get('mismatches', 0)}"
                         f"/{v.get('files', 0)} ok")
        rows.append(["sha256 sample", "files"] + cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip() for r in rows)


def _terminate(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--_work":
        _, _, name, root = sys.argv
        print(json.dumps(WORK_FNS[name](Path(root), json.loads(sys.stdin.read()))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="small", help="fixture set: small or large")
    ap.add_argument("--fixture-root", help="a built fixture set directory to use as is")
    ap.add_argument("--peers", default=",".join(PEERS))
    ap.add_argument("--only", default=",".join(WORKLOADS), help="workloads to run")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per workload and phase (default 120 small, 600 large)")
    ap.add_argument("--repeat", type=int, default=1, help="best of N runs of each figure")
    ap.add_argument("--rpfs-tree", help="run rpfs from this checkout (default: this one)")
    ap.add_argument("--before", help="also run the rpfs of this checkout, as peer rpfs-before")
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--layers", action="store_true",
                    help="only print where a cold listing's time goes, per entry (no FUSE)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # unmount in the finally blocks, then exit
    if os.geteuid() != 0 and "--layers" not in (argv or sys.argv):
        print("bench_mount: needs root (drop_caches, losetup, mounts)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(REPO))
    from tools.fixtures import FixtureSet, build

    fx = FixtureSet.load(Path(args.fixture_root)) if args.fixture_root else build(args.set)
    budget = args.budget or (600.0 if fx.name == "large" else 120.0)
    image, part, params, truth = plan(fx)
    if args.layers:
        layer_costs(image, part, params["bigdir"])
        return 0
    workloads = [w for w in args.only.split(",") if w]
    if args.rpfs_tree:
        RpfsPeer.tree = Path(args.rpfs_tree).resolve()
    work = Path(tempfile.mkdtemp(prefix="rpfs-bench-mount-"))
    params["tmp"] = str(work)
    peers, skipped = [], {}
    for name in args.peers.split(","):
        peer = PEER_CLASSES[name](image, part, work)
        if name == "rpfs" and args.before:
            before = RpfsPeer(image, part, work)
            before.name, before.tree = "rpfs-before", Path(args.before).resolve()
            peers.append(before)
        why = peer.available()
        if why:
            skipped[name] = why
            log(f"skipping {name}: {why}")
        else:
            peers.append(peer)
    log(f"image {image} ({image.stat().st_size / 2**30:.2f} GiB), volume {VOLUME} at "
        f"{part['offset']:#x}+{part['size']:#x}; budget {budget:.0f} s per workload")
    load_before = os.getloadavg()
    try:
        results = measure(peers, workloads, params, truth, budget, not args.no_verify,
                          args.repeat)
    finally:
        for p in peers:
            p.unmount()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nrpfs ({RpfsPeer.tree}) vs peers: fixture set {fx.name}, {image.name}, "
          f"volume {VOLUME}, best of {args.repeat}; "
          f"[x] = peer time / rpfs time (>1: rpfs faster); load average before "
          f"{load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}")
    print(table(results, workloads))
    for n, why in skipped.items():
        print(f"{n}: skipped ({why})")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "set": fx.name, "image": str(image), "volume": VOLUME, "budget": budget,
            "repeat": args.repeat, "rpfs_tree": str(RpfsPeer.tree),
            "skipped": skipped, "results": results, "load": [load_before, os.getloadavg()],
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
