"""Benchmark: LZNT1 decoders on compression units written by ntfs-3g.

Builds (once, cached under .cache/lznt1/) an NTFS image holding one compressed file made of
real files from this machine (Python's standard library and /usr/bin programs: a mix of
text and machine code, like a system volume), extracts its compression units, and reports
MB/s of decompressed output for:

- ntfs_reader.lznt1 native (the C extension) over the whole file, best of --repeat runs
  (the decoded file is first checked against what was written);
- the pure-Python fallback, and any other LZNT1 library importable here (dissect.util's
  dissect.util.compression.lznt1, the `lznt1` package), over the first --sample-mib MiB,
  with whether each one's output matches ours.

Usage: .venv/bin/python tools/bench_lznt1.py [--mib 100] [--repeat 3] [--sample-mib 4]
(to include other libraries without adding them to the project, put them on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ntfs_reader import lznt1  # noqa: E402
from tests import test_lznt1 as fx  # noqa: E402  (image builder and unit extraction)

SOURCES = ("/usr/lib/python3.11", "/usr/bin")
CLUSTER = 4096
UNIT = CLUSTER * fx.UNIT_CLUSTERS


def corpus_files() -> list[Path]:
    files = []
    for top in SOURCES:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            for name in sorted(filenames):
                p = Path(dirpath, name)
                if p.is_file() and not p.is_symlink():
                    files.append(p)
    return files


def corpus(mib: int) -> bytes:
    """``mib`` MiB of real files, concatenated in a fixed order."""
    want, parts, size = mib << 20, [], 0
    for p in corpus_files():
        try:
            data = p.read_bytes()
        except OSError:
            continue
        parts.append(data)
        size += len(data)
        if size >= want:
            break
    return b"".join(parts)[:want]


def bench_image(mib: int) -> Path:
    h = hashlib.sha256(inspect.getsource(fx._build_image).encode() + inspect.getsource(corpus).encode())
    h.update(str((mib, SOURCES)).encode())
    for p in corpus_files():  # names and sizes: any real data will do, so mtimes don't count
        h.update(f"{p}\0{p.lstat().st_size}\n".encode())
    path = fx.CACHE / f"bench-{mib}m-{h.hexdigest()[:16]}.img"
    if not path.exists():
        fx.CACHE.mkdir(parents=True, exist_ok=True)
        for old in fx.CACHE.glob(f"bench-{mib}m-*.img"):
            old.unlink()
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            print(f"building {path.name} ...", file=sys.stderr)
            fx._build_image(tmp, CLUSTER, {"bench.bin": corpus(mib)})
            tmp.rename(path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def trim(raw: bytes) -> bytes:
    """The unit's chunks without the end marker and slack (for decoders that don't stop)."""
    end = sum(2 + size for _, size in fx.chunk_kinds(raw))
    return raw[:end]


def others():
    """Other LZNT1 decoders importable here: name -> callable(raw) -> bytes."""
    found = {}
    try:
        from dissect.util.compression import lznt1 as dissect_lznt1
        found["dissect.util (pure Python)"] = lambda raw: dissect_lznt1.decompress(trim(raw))
    except ImportError:
        pass
    try:
        import lznt1 as pkg  # the `lznt1` package on PyPI
        found["lznt1 package (pure Python)"] = lambda raw: pkg.decompress(trim(raw))
    except ImportError:
        pass
    return found


def timed(fn, units, repeat):
    """Best wall time and best CPU time (this thread's: steadier on a shared machine)."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.thread_time()
        out = [fn(raw) for raw in units]
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.thread_time() - c)
    return wall, cpu, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=100, help="size of the compressed file")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sample-mib", type=float, default=4, help="data for the slow decoders")
    args = ap.parse_args()

    img = bench_image(args.mib)
    kinds = {"sparse": 0, "raw": 0, "lznt1": 0}
    units, stored, whole = [], 0, bytearray()
    for _, kind, raw in fx.units(img, CLUSTER, "bench.bin"):
        kinds[kind] += 1
        if kind == "lznt1":
            units.append(raw)
            stored += len(raw)
            raw = lznt1.decompress(raw, UNIT)
        whole += raw.ljust(UNIT, b"\0")
    if whole[: args.mib << 20] != corpus(args.mib):
        sys.exit("decoded file differs from what was written (stale image? delete it)")
    print(f"image {img.name}: {args.mib} MiB file from {', '.join(SOURCES)}; units: {kinds}; "
          f"LZNT1 units stored in {stored / (len(units) * UNIT):.1%} of their size; "
          f"decoded file == what was written")
    if not units:
        sys.exit("no compressed units")

    rows = []
    if lznt1.NATIVE:
        dt, cpu, ref = timed(lambda raw: lznt1.decompress(raw, UNIT), units, args.repeat)
        out = sum(map(len, ref))
        rows.append(("ntfs_reader.lznt1 native (C)", out, dt, cpu, "reference"))
        # The C decoder releases the GIL: two threads on halves of the units.
        half = len(units) // 2
        t = time.perf_counter()
        th = [threading.Thread(target=lambda part: [lznt1.decompress(r, UNIT) for r in part], args=(p,))
              for p in (units[:half], units[half:])]
        for x in th:
            x.start()
        for x in th:
            x.join()
        rows.append(("ntfs_reader.lznt1 native, 2 threads", out, time.perf_counter() - t, 0.0,
                     "wall time only: needs 2 idle cores"))
    else:
        ref = [lznt1.decompress_py(raw, UNIT) for raw in units]
        print("native extension not built: only the fallback is measured", file=sys.stderr)

    n = max(1, min(len(units), int(args.sample_mib * (1 << 20)) // UNIT))
    sample, want = units[:n], ref[:n]
    contenders = {"ntfs_reader.lznt1 fallback (Python)": lambda raw: lznt1.decompress_py(raw, UNIT)}
    contenders.update(others())
    for name, fn in contenders.items():
        try:
            dt, cpu, got = timed(fn, sample, 1)
        except Exception as e:  # a foreign decoder failing on real data is a result too
            rows.append((name, 0, 0.0, 0.0, f"failed: {type(e).__name__}: {e}"))
            continue
        same = all(g == w or g.ljust(UNIT, b"\0") == w.ljust(UNIT, b"\0") for g, w in zip(got, want))
        rows.append((name, sum(map(len, got)), dt, cpu, "matches" if same else "DIFFERS"))

    print(f"{'decoder':40} {'output MiB':>10} {'seconds':>8} {'MB/s':>7} {'MB/s cpu':>8}  check")
    for name, out, dt, cpu, note in rows:
        rate = out / dt / 1e6 if dt else 0.0
        crate = f"{out / cpu / 1e6:8.1f}" if cpu else f"{'-':>8}"
        print(f"{name:40} {out / (1 << 20):10.1f} {dt:8.3f} {rate:7.1f} {crate}  {note}")


if __name__ == "__main__":
    main()
