"""Comparing a Linux file system reader's view with the kernel's (a fixture manifest)."""

from __future__ import annotations

import hashlib

from streams.stream import Stream

ATTRS = ("kind", "mode", "uid", "gid", "nlink", "rdev", "atime_ns", "mtime_ns", "ctime_ns")


def entry_diffs(entry, want: dict, *, times: bool = True) -> list[str]:
    """What differs between a reader's Entry and one manifest entry (empty if equal)."""
    out = []
    for k in ATTRS:
        if k not in want or (not times and k.endswith("time_ns")):
            continue
        got = getattr(entry, k)
        if got != want[k]:
            out.append(f"{k}: {got!r} != {want[k]!r}")
    if "blocks" in want and want.get("kind") in ("file", "dir") and \
            -(-entry.allocated // 512) != want["blocks"]:
        out.append(f"allocated: {entry.allocated} bytes != {want['blocks']} blocks of 512")
    if want.get("kind") != "dir" and "size" in want and entry.size != want["size"]:
        out.append(f"size: {entry.size} != {want['size']}")
    if "sha256" in want:
        s = entry.open()
        h = hashlib.sha256()
        for off in range(0, s.size, 1 << 20):
            h.update(s.read(off, 1 << 20))
        if h.hexdigest() != want["sha256"]:
            out.append("bytes differ")
    if "target" in want and entry.readlink() != want["target"]:
        out.append(f"target: {entry.readlink()!r} != {want['target']!r}")
    if "xattrs" in want:
        got = {k: v.hex() for k, v in entry.xattrs().items()}
        if got != want["xattrs"]:
            out.append(f"xattrs: {sorted(got)} != {sorted(want['xattrs'])}")
    return out


def compare_volume(vol, manifest: dict, *, skip_times=lambda path, want: False) -> list[str]:
    """Every manifest entry looked up by path and compared; hard links share an ino."""
    problems = []
    groups: dict[tuple, set[int]] = {}
    back: dict[int, set[tuple]] = {}
    for path, want in sorted(manifest["entries"].items()):
        e = vol.lookup(path)
        for d in entry_diffs(e, want, times=not skip_times(path, want)):
            problems.append(f"{path}: {d}")
        if "ino" in want:
            kernel = (want["ino"], want.get("dev"))
            groups.setdefault(kernel, set()).add(e.ino)
            back.setdefault(e.ino, set()).add(kernel)
    problems += [f"one kernel inode, several reader inodes: {sorted(v)}"
                 for v in groups.values() if len(v) != 1]
    problems += [f"reader inode {k} is several kernel inodes: {sorted(v)}"
                 for k, v in back.items() if len(v) != 1]
    return problems


def walk(entry, prefix: str = ""):
    """(path, Entry) of everything below ``entry`` through iterdir."""
    for child in entry.iterdir():
        path = f"{prefix}/{child.name}"
        yield path, child
        if child.is_dir:
            yield from walk(child, path)



class Overlay(Stream):
    """A stream with some bytes replaced (damage without copying a 1 GiB image)."""

    def __init__(self, base: Stream, patches: dict[int, bytes]):
        self.base = base
        self.patches = patches
        self.size = base.size
        self.name = base.name + " (damaged)"

    def _read(self, offset: int, length: int) -> bytes:
        data = bytearray(self.base.read(offset, length))
        for at, b in self.patches.items():
            lo, hi = max(at, offset), min(at + len(b), offset + length)
            if lo < hi:
                data[lo - offset:hi - offset] = b[lo - at:hi - at]
        return bytes(data)
