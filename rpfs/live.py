"""Copies of running VMs: is a disk file the same after reading it as before, and which
files ``--frozen`` stores.

A file's identity is its size, mtime, ctime, inode and device, and for a VHDX/AVHDX also
the first 64 bytes of both headers (signature, checksum, sequence number, file-write,
data-write and log GUIDs): Hyper-V bumps the sequence number and changes the GUIDs when it
opens a disk for writing or starts a log, even where the times move coarsely. The kernel
stamps a write with its coarse clock (one tick, 1-10 ms, behind the precise one), so an
identity taken while the file's times are within ``RACY_NS`` (50 ms) of the clock proves
nothing: a write in the same tick would leave them as they are. ``settle`` waits that
long once for the files of a backup that are racy and looks again; a file written all the
time stays racy and is read twice (compared chunk by chunk).

``--frozen``: a disk with a checkpoint chain is stored up to the newest parent (Hyper-V
never writes to a parent once a checkpoint has a child: the state the checkpoint froze,
application-consistent when it was a production checkpoint); the running AVHDX (the
chain's leaf) is left out, and the backup says so.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

RACY_NS = 50_000_000
VHDX_HEADERS = (64 << 10, 128 << 10)


@dataclass(frozen=True)
class Identity:
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    dev: int
    headers: bytes      # VHDX header fields, b"" for other files
    racy: bool          # the times were too recent to prove anything

    def same(self, other: "Identity") -> bool:
        return (self.size, self.mtime_ns, self.ctime_ns, self.inode, self.dev, self.headers) == \
            (other.size, other.mtime_ns, other.ctime_ns, other.inode, other.dev, other.headers)


def identity(path: str) -> Identity:
    st = os.stat(path)
    age = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns)
    headers = b""
    if path.lower().endswith((".vhdx", ".avhdx")):
        try:
            with open(path, "rb") as f:
                headers = b"".join(os.pread(f.fileno(), 64, off) for off in VHDX_HEADERS)
        except OSError:
            headers = b""
    return Identity(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev, headers,
                    age < RACY_NS)


def settle(paths: dict[str, Identity]) -> dict[str, Identity]:
    """Identities again, after one wait of ``RACY_NS``, for those that were racy."""
    racy = [p for p, i in paths.items() if i.racy]
    if not racy:
        return paths
    time.sleep(RACY_NS / 1e9)
    return {**paths, **{p: identity(p) for p in racy}}


def changed_ranges(a: list, b: list, chunk_size: int) -> list[tuple[int, int]]:
    """Byte ranges [start, end) where two reads' chunk hashes differ."""
    out: list[tuple[int, int]] = []
    for i in range(max(len(a), len(b))):
        if (a[i] if i < len(a) else 0) != (b[i] if i < len(b) else 0):
            s = i * chunk_size
            if out and out[-1][1] == s:
                out[-1] = (out[-1][0], s + chunk_size)
            else:
                out.append((s, s + chunk_size))
    return out


def frozen_selection(paths: dict[str, str]) -> tuple[set[str], list[str]]:
    """``paths``: relative path -> file. Returns (relative paths to leave out, notes): the
    leaf of every checkpoint chain is left out; a disk without a checkpoint is read live."""
    from formats.chain import is_disk_file, resolve_all
    from streams.stream import FileStream

    streams = {rel: FileStream(p, name=rel) for rel, p in paths.items() if is_disk_file(rel)}
    try:
        res = resolve_all(streams)
        leave: set[str] = set()
        notes: list[str] = []
        for key, leaves in sorted(res.leaves.items()):
            for leaf in leaves:
                rel = res.paths[id(leaf)]
                parent = leaf.parent
                if parent is None:
                    notes.append(f"{rel}: no checkpoint, read while it may be running"
                                 " (checked for changes)")
                    continue
                leave.add(rel)
                notes.append(f"{rel}: running disk left out (--frozen); stored the checkpoint"
                             f" state in {res.paths[id(parent)]}")
        for rel, err in sorted(res.errors.items()):
            notes.append(f"{rel}: {err} (stored as it is)")
        return leave, notes
    finally:
        for s in streams.values():
            s.close()
