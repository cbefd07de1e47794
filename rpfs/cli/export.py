"""``rpfs export`` (one disk as VHDX/VHD/raw) and ``rpfs export-vm`` (a VM folder as stored).

Alternate-location recovery: a differencing chain exports as one merged disk, and holes
(unallocated blocks, zero chunks) are neither read nor written.
"""

from __future__ import annotations

import json
import os
import sys
import time

from rpfs import heap, nspath
from rpfs.cli.browse import SOURCE_HELP, add_keys_option, open_tree
from rpfs.sizes import positive_size
from streams.errors import UsageError
from rpfs.progress import Progress, human
from rpfs.ratelimit import add_limit_option, limit_of, paced
from rpfs.source import open_source

FORMATS = ("vhdx", "vhd", "raw")
# An export reads each chunk once: the chunk cache only has to hold the read-ahead window
# (a quarter of the cache: 16 chunks) and the few chunks of metadata a disk's layers parse.
# A smaller cache is filled with fewer fresh pages (each 1 MiB chunk faults in 256 of them
# the first time); with 32 MiB (8 chunks ahead) the exporting thread decoded 19 chunks
# itself instead of 2 on the bench disk.
EXPORT_CHUNK_CACHE = 64 << 20
EXPORT_ARENAS = 1
EXPORT_HEAP_PAD = 64 << 20


def register(sub) -> None:
    p = sub.add_parser("export", help="export a virtual disk as VHDX, VHD or raw, or a volume as raw")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("path", help="a disk: /<vm>/<rp>/disks/<disk>.raw (or /disks/<disk>.raw); "
                                "a volume: /<vm>/<rp>/volumes/<disk>-p<N> (raw only)")
    p.add_argument("dest", help="file to write")
    p.add_argument("--format", choices=FORMATS, help="default: from DEST's suffix, else vhdx")
    p.add_argument("--fixed", action="store_true", help="fixed-size VHDX/VHD instead of dynamic")
    p.add_argument("--block-size", type=positive_size, help="dynamic block size, e.g. 32M (VHDX) or 2M (VHD)")
    p.add_argument("--force", action="store_true", help="replace DEST if it exists")
    p.add_argument("--json", action="store_true")
    add_limit_option(p, "the writes")
    add_keys_option(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("export-vm", help="write a recovery point's VM files to a folder, as stored")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("path", help="a recovery point: /<vm>/<rp> (or / for an image or folder)")
    p.add_argument("destdir")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--json", action="store_true")
    add_limit_option(p, "the writes")
    p.set_defaults(func=cmd_export_vm)


def cmd_export(args) -> int:
    import formats

    fmt = args.format or next((f for f in FORMATS if args.dest.lower().endswith("." + f)), "vhdx")
    if os.path.exists(args.dest) and not args.force:
        raise UsageError(f"{args.dest}: exists (use --force to replace it)")
    if getattr(args, "store", None) is not None and args.store.chunk_cache_bytes is None:
        args.store = args.store.with_(chunk_cache_bytes=EXPORT_CHUNK_CACHE)
    # One malloc arena for every thread, before any starts: a chunk is read and decoded on a
    # read-ahead worker and freed on the writer thread once written, and a heap of its own
    # per worker was emptied and handed back to the system in turn, so each chunk faulted
    # in fresh pages (bench disk to raw: 37,000-46,000 minor faults, 14,000-23,000 with one
    # arena, 14,300-14,600 with the heap's top kept too)
    heap.limit_arenas(EXPORT_ARENAS)
    heap.keep_chunk_buffers()   # evicted chunks' pages serve the next ones (rpfs/heap.py)
    heap.pad_heap(EXPORT_HEAP_PAD)
    with open_tree(args) as tree:
        node = tree.resolve(args.path)
        parts = nspath.parts(args.path)
        if len(parts) >= 2 and parts[-2] == "volumes" and node.volume_stream is not None:
            disk = _volume(node, fmt)  # a volume as Windows presents it (decrypted)
        elif node.kind != "file" or len(parts) < 2 or parts[-2] != "disks":
            raise UsageError(f"{args.path}: not a disk or volume (expected .../disks/<disk>.raw "
                             "or .../volumes/<disk>-p<N>)")
        else:
            disk = node.open()
        progress = Progress(disk.size, f"export {node.name}")
        start = time.monotonic()
        tmp = args.dest + ".rpfs-partial"
        try:
            formats.write_image(disk, tmp, fmt, block_size=args.block_size, fixed=args.fixed,
                                progress=paced(lambda done, total=None: progress.update(done),
                                               limit_of(args)))
            os.replace(tmp, args.dest)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        progress.close()
    seconds = time.monotonic() - start
    summary = {"dest": args.dest, "format": fmt, "virtual_size": disk.size,
               "file_size": os.path.getsize(args.dest),
               "allocated": os.stat(args.dest).st_blocks * 512, "seconds": round(seconds, 3)}
    if args.json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
    else:
        what = "volume" if parts[-2] == "volumes" else "disk"
        print(f"exported {human(disk.size)} {what} to {args.dest} ({fmt}, "
              f"{human(summary['allocated'])} allocated) in {seconds:.1f} s", file=sys.stderr)
    return 0


def _volume(node, fmt: str):
    if fmt != "raw":
        raise UsageError(f"{node.name}: a volume exports as a raw image only (--format raw)")
    stream = node.volume_stream
    if isinstance(stream, Exception):
        raise stream
    return stream


def cmd_export_vm(args) -> int:
    from rpfs.restore import Restorer   # export of a disk does not need it (~10 ms of imports)

    with open_source(args.source, store=args.store) as tree:
        rp = tree.resolve(args.path)
        files = rp.child("files")
        total = sum(child.attr().size for child in files.iterdir() if child.kind == "file")
        progress = Progress(total, "export-vm")
        r = Restorer(args.destdir, overwrite=args.overwrite,
                     progress=paced(lambda done, total=None: progress.update(done), limit_of(args)))
        try:
            for child in files.iterdir():
                r.run(child)
        finally:
            r.close()
        progress.close()
    res = r.result
    if args.json:
        json.dump(res.as_dict(), sys.stdout)
        sys.stdout.write("\n")
    else:
        for e in res.errors:
            print(f"rpfs: {e}", file=sys.stderr)
        print(f"exported {res.files} files ({human(res.bytes)}) to {args.destdir}",
              file=sys.stderr)
    return 1 if res.errors else 0
