#!/usr/bin/env python3
"""Cold in-process listing of the benchmark's 50,000-entry directory (fixture set "small",
system-p3 /bigdir, as tools/bench_peers.py lists it through a mount):

    nice -n 19 .venv/bin/python tools/bench_listing.py [ROUNDS]

Prints CPU seconds (best and median of ROUNDS, each on a fresh Volume) of
``Node.listing()`` plus every name, of the same with a node made per entry (what
rpfs/fuse.py's readdir still does), and the memory blocks the listing keeps per entry
(sys.getallocatedblocks: a count, not a time). Say the machine's load with the figures.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ntfs_reader import Volume  # noqa: E402
from rpfs.ntfs_nodes import volume_root  # noqa: E402
from streams.stream import FileStream  # noqa: E402
from tools.fixtures import build  # noqa: E402


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    fx = build("small").volumes["system-p3"]
    path = fx.manifest["features"]["big_dir"]["path"]

    def bigdir():
        node = volume_root(Volume(FileStream(str(fx.image))), "v", ("v",))
        for part in path.strip("/").split("/"):
            node = node.child(part)
        return node

    names_cpu, nodes_cpu, kept = [], [], []
    for _ in range(rounds):
        d = bigdir()
        gc.collect()
        before = sys.getallocatedblocks()
        t0 = time.process_time()
        listing = d.listing()
        kept.append((sys.getallocatedblocks() - before) / len(listing))
        names = list(listing.names())
        names_cpu.append(time.process_time() - t0)
        del listing, names
        d = bigdir()
        t0 = time.process_time()
        listing = d.listing()
        pairs = [listing[i] for i in range(len(listing))]
        nodes_cpu.append(time.process_time() - t0)
        del listing, pairs, d
    print(f"listing + names: best {min(names_cpu):.3f} s, median "
          f"{statistics.median(names_cpu):.3f} s CPU; with a node per entry: best "
          f"{min(nodes_cpu):.3f} s, median {statistics.median(nodes_cpu):.3f} s; blocks kept "
          f"per entry {statistics.median(kept):.2f}; {rounds} rounds, load "
          f"{os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
