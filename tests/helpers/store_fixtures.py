"""Shared images for the store tests: two states of a small VM folder.

State 1: a dynamic VHDX made by ``qemu-img convert`` from 48 MiB of random, compressible and
zero data, a fixed VHD of a second disk, and a small config file. State 2: a copy in which
``qemu-io`` wrote guest data into the VHDX in place (as Hyper-V would: changed blocks are
rewritten where they are, new blocks appended, BAT/log/header updated) and the config
changed. The ground truth "what changed" is the set of 1 MiB-aligned chunks that differ
between the two files, computed here independently of the store.

Built once under ``.cache/store-tests/<key>`` (key: this file's source + qemu-img version).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import random
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PY = str(ROOT / ".venv" / "bin" / "python")
MiB = 1 << 20


def _key() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(subprocess.run(["qemu-img", "--version"], capture_output=True).stdout)
    return h.hexdigest()[:16]


def _content(size: int, seed: int) -> bytes:
    """Thirds: random, compressible text-like, zeros."""
    rnd = random.Random(seed)
    third = size // 3
    a = rnd.randbytes(third)
    words = [rnd.randbytes(rnd.randrange(3, 12)).hex().encode() for _ in range(500)]
    b = bytearray()
    while len(b) < third:
        b += b" ".join(rnd.choice(words) for _ in range(64)) + b"\n"
    return a + bytes(b[:third]) + bytes(size - 2 * third)


def vm_states() -> tuple[Path, Path]:
    """(state1 folder, state2 folder); each named ``web01``. Cached."""
    base = ROOT / ".cache" / "store-tests" / _key()
    done = base / "done"
    if done.exists():
        return base / "s1" / "web01", base / "s2" / "web01"
    base.mkdir(parents=True, exist_ok=True)
    with open(base.parent / (base.name + ".lock"), "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        if not done.exists():
            _build(base)
            done.touch()
    return base / "s1" / "web01", base / "s2" / "web01"


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def _build(base: Path) -> None:
    for d in ("s1", "s2", "raw"):
        shutil.rmtree(base / d, ignore_errors=True)
    s1 = base / "s1" / "web01"
    (s1 / "Virtual Hard Disks").mkdir(parents=True)
    (s1 / "Virtual Machines").mkdir(parents=True)
    raw = base / "raw"
    raw.mkdir()
    (raw / "disk0.raw").write_bytes(_content(48 * MiB, 1))
    (raw / "data.raw").write_bytes(_content(6 * MiB + 12345 * 512, 2))
    _run("qemu-img", "convert", "-f", "raw", "-O", "vhdx", str(raw / "disk0.raw"),
         str(s1 / "Virtual Hard Disks" / "disk0.vhdx"))
    _run("qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed",
         str(raw / "data.raw"), str(s1 / "Virtual Hard Disks" / "data.vhd"))
    (s1 / "Virtual Machines" / "web01.vmcx").write_bytes(random.Random(3).randbytes(70_000))
    s2 = base / "s2" / "web01"
    shutil.copytree(s1, s2)
    vhdx = str(s2 / "Virtual Hard Disks" / "disk0.vhdx")
    # in-place guest writes: one into random data, one into compressible data, one into the
    # zero third (allocates a new payload block at the end of the file)
    for cmd in ("write -P 0xa5 3M 64k", "write -P 0x5a 20M 1M", "write -P 0x33 40M 2M"):
        _run("qemu-io", "-f", "vhdx", "-c", cmd, vhdx)
    vmcx = bytearray((s1 / "Virtual Machines" / "web01.vmcx").read_bytes())
    vmcx[100:108] = b"CHANGED!"
    (s2 / "Virtual Machines" / "web01.vmcx").write_bytes(bytes(vmcx))
    shutil.rmtree(raw)


def changed_chunks(a: Path, b: Path, chunk: int = MiB) -> tuple[int, int]:
    """(chunks of ``b`` that differ from ``a`` and are not all zero, their byte count)."""
    n = nbytes = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(chunk), fb.read(chunk)
            if not y:
                return n, nbytes
            if x != y and y.count(0) != len(y):
                n += 1
                nbytes += len(y)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while blk := f.read(MiB):
            h.update(blk)
    return h.hexdigest()


def rpfs(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run the real ``rpfs`` command in a subprocess."""
    env = dict(os.environ)
    env.pop("RPFS_DEBUG", None)
    p = subprocess.run([PY, "-m", "rpfs", *args], capture_output=True, text=True, cwd=ROOT,
                       env=env, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"rpfs {' '.join(args)} -> {p.returncode}\n{p.stdout}\n{p.stderr}")
    return p


def files_of(folder: Path) -> dict[str, Path]:
    return {str(p.relative_to(folder)): p for p in sorted(folder.rglob("*")) if p.is_file()}


def _chunks(path: Path, chunk: int):
    with open(path, "rb") as f:
        while blk := f.read(chunk):
            yield blk


def new_contents(old: list[Path], new: list[Path], chunk: int = MiB) -> tuple[int, int]:
    """(distinct non-zero chunk contents of ``new`` found nowhere in ``old``, their bytes):
    what an ideal fixed-size dedup must store, computed with sha256 independently."""
    seen = {hashlib.sha256(b).digest() for p in old for b in _chunks(p, chunk)}
    n = nbytes = 0
    for p in new:
        for b in _chunks(p, chunk):
            if b.count(0) == len(b):
                continue
            h = hashlib.sha256(b).digest()
            if h not in seen:
                seen.add(h)
                n += 1
                nbytes += len(b)
    return n, nbytes
