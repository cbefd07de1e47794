"""Benchmark: WOF decoders (XPRESS4K/8K/16K Huffman and LZX), native C vs the Python twins.

Builds (once, cached under .cache/wofnative/) an NTFS image holding one WOF-compressed file
per algorithm, each the same --mib MiB of real files from this machine (Python's standard
library and /usr/bin programs, as tools/bench_lznt1.py uses), compressed by wimlib and
written as WofCompressedData + WOF reparse point through ntfs-3g. Then, per algorithm:

- chunk level: MB/s of decoded output over every compressed chunk for the native decoder
  (best of --repeat; also with 2 threads, the GIL being released) and over the first
  --sample-mib MiB for the Python twin, with whether the outputs match;
- end to end: ``Volume(FileStream(image)).lookup(path).open().read`` in 1 MiB reads over
  the whole file (native; checked against what was written) and over --sample-mib MiB with
  the Python twins patched in.

Usage: .venv/bin/python tools/bench_wof.py [--mib 100] [--repeat 3] [--sample-mib 4]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ntfs_reader import Volume, lzx, wof, xpress  # noqa: E402
from streams.stream import FileStream  # noqa: E402
from tests import test_wof_native as fx  # noqa: E402  (image builder, chunk splitting)
from tools.bench_lznt1 import SOURCES, corpus  # noqa: E402


def timed(fn, repeat: int) -> tuple[float, float]:
    """Best wall time and best CPU time of this thread (steadier on a shared machine)."""
    wall = cpu = float("inf")
    for _ in range(repeat):
        t, c = time.perf_counter(), time.thread_time()
        fn()
        wall = min(wall, time.perf_counter() - t)
        cpu = min(cpu, time.thread_time() - c)
    return wall, cpu


def read_all(image: Path, path: str, limit: int) -> bytes:
    s = Volume(FileStream(image)).lookup(path).open()
    out = bytearray()
    n = min(limit, s.size)
    for off in range(0, n, 1 << 20):
        out += s.read(off, min(1 << 20, n - off))
    return bytes(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=int, default=100, help="size of each compressed file")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sample-mib", type=float, default=4, help="data for the Python twins")
    args = ap.parse_args()
    if not xpress.NATIVE:
        sys.exit("ntfs_reader._wofdecomp is not built (run tools/setup.sh)")

    data = corpus(args.mib)
    print(f"building/finding the image ({len(data) >> 20} MiB file per algorithm) ...",
          file=sys.stderr)
    image, man = fx.build_wof_image(f"bench{args.mib}m", {"bench.bin": data},
                                    (args.mib * 6 + 64) << 20)
    sample = int(args.sample_mib * (1 << 20))
    print(f"image {image.parent.name}: {args.mib} MiB from {', '.join(SOURCES)} per algorithm")
    print(f"{'algorithm':10} {'what':34} {'MiB':>6} {'seconds':>8} {'MB/s':>7} {'MB/s cpu':>8}"
          f"  check")

    def row(algo, what, nbytes, dt, cpu, note):
        crate = f"{nbytes / cpu / 1e6:8.1f}" if cpu else f"{'-':>8}"
        print(f"{fx.ALGO_IDS[algo]:10} {what:34} {nbytes / (1 << 20):6.1f} {dt:8.3f} "
              f"{nbytes / dt / 1e6:7.1f} {crate}  {note}", flush=True)

    for algo, (chunk, _) in fx.ALGOS.items():
        path = f"/{fx.ALGO_IDS[algo]}/bench.bin"
        e = man[path]
        raw = fx.blob(image, e["resource"])
        chunks = fx.split_chunks(raw, e["size"], chunk)
        comp = [(c, w) for c, w in chunks if len(c) < w]
        out_bytes = sum(w for _, w in comp)
        native, py = fx.decoders(algo)
        print(f"{fx.ALGO_IDS[algo]:10} stored {len(raw) / e['size']:.1%} of {e['size']} bytes; "
              f"{len(comp)} of {len(chunks)} chunks compressed")

        ref: list[bytes] = []
        dt, cpu = timed(lambda: ref.__setitem__(slice(None), [native(c, w) for c, w in comp]),
                        args.repeat)
        row(algo, "chunks, native", out_bytes, dt, cpu, "reference")
        half = len(comp) // 2

        def two_threads():
            th = [threading.Thread(target=lambda part: [native(c, w) for c, w in part],
                                   args=(p,)) for p in (comp[:half], comp[half:])]
            for x in th:
                x.start()
            for x in th:
                x.join()
        dt, _ = timed(two_threads, args.repeat)
        row(algo, "chunks, native, 2 threads", out_bytes, dt, 0.0, "wall time: 2 idle cores?")

        k, n = 0, 0
        while k < len(comp) and n < sample:
            n += comp[k][1]
            k += 1
        got: list[bytes] = []
        dt, cpu = timed(lambda: got.__setitem__(slice(None), [py(c, w) for c, w in comp[:k]]), 1)
        row(algo, "chunks, Python twin", n, dt, cpu,
            "matches" if got == ref[:k] else "DIFFERS")

        whole: list[bytes] = []
        dt, cpu = timed(lambda: whole.__setitem__(slice(None), [read_all(image, path, e["size"])]),
                        args.repeat)
        ok = hashlib.sha256(whole[0]).hexdigest() == e["sha256"]
        row(algo, "end to end (ntfs_reader), native", e["size"], dt, cpu,
            "== written" if ok else "DIFFERS from written")

        saved = wof.xpress_decompress, wof.lzx_decompress
        wof.xpress_decompress, wof.lzx_decompress = xpress.decompress_py, lzx.decompress_py
        try:
            part: list[bytes] = []
            dt, cpu = timed(lambda: part.__setitem__(slice(None), [read_all(image, path, sample)]),
                            1)
        finally:
            wof.xpress_decompress, wof.lzx_decompress = saved
        row(algo, "end to end (ntfs_reader), Python", len(part[0]), dt, cpu,
            "== written" if part[0] == data[:len(part[0])] else "DIFFERS from written")


if __name__ == "__main__":
    main()
