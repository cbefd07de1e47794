"""The kernel as the oracle for the Linux file system readers: walk a read-only loop mount
and an rpfs node tree into the same shape (path -> what stat, readlink, listxattr and the
bytes say) and compare them. Used for ext2/3/4, LVM logical volumes, XFS and Btrfs alike.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
         stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo",
         stat.S_IFSOCK: "socket"}


def _digest(read, size: int) -> str:
    h = hashlib.sha256()
    pos = 0
    while pos < size:
        data = read(pos, min(4 << 20, size - pos))
        if not data:
            break
        h.update(data)
        pos += len(data)
    return h.hexdigest()


@contextlib.contextmanager
def kernel_mount(img: str | os.PathLike, *, fstype: str | None = None, offset: int | None = None,
                 sizelimit: int | None = None, replay: bool = False):
    """A read-only kernel mount of ``img``. ``replay``: the image needs journal recovery,
    which the kernel does only on a writable device: a copy is mounted instead."""
    import pytest

    from tools.fixtures.linux import loop_available

    if not loop_available():
        pytest.skip("no loop device (the kernel's mount is the oracle: needs root)")
    with tempfile.TemporaryDirectory(prefix="rpfs-oracle-") as tmp:
        mnt = Path(tmp) / "mnt"
        mnt.mkdir()
        src = Path(img)
        if replay:
            src = Path(tmp) / "copy.img"
            shutil.copyfile(img, src)
        cmd = ["losetup", "-f", "--show"] + ([] if replay else ["-r"])
        if offset is not None:
            cmd += ["-o", str(offset)]
        if sizelimit is not None:
            cmd += ["--sizelimit", str(sizelimit)]
        dev = subprocess.run(cmd + [str(src)], capture_output=True, text=True,
                             check=True).stdout.strip()
        try:
            subprocess.run(["mount", "-o", "ro"] + (["-t", fstype] if fstype else [])
                           + [dev, str(mnt)], capture_output=True, text=True, check=True)
            try:
                yield mnt
            finally:
                subprocess.run(["umount", str(mnt)], check=True)
        finally:
            subprocess.run(["losetup", "-d", dev], capture_output=True)


def kernel_tree(mnt: Path, *, skip=("lost+found",)) -> dict[str, dict]:
    out: dict[str, dict] = {}
    root = os.fsencode(mnt)

    def walk(rel: bytes) -> None:
        full = root + rel
        for name in sorted(os.listdir(full)):
            p = rel + b"/" + name
            if rel == b"" and os.fsdecode(name) in skip:
                continue
            st = os.lstat(root + p)
            kind = KINDS[stat.S_IFMT(st.st_mode)]
            e = {"kind": kind, "mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid,
                 "nlink": st.st_nlink, "mtime": st.st_mtime_ns, "ctime": st.st_ctime_ns,
                 "atime": st.st_atime_ns, "ino": st.st_ino,
                 "xattrs": {n: os.getxattr(root + p, n, follow_symlinks=False)
                            for n in sorted(os.listxattr(root + p, follow_symlinks=False))}}
            if kind in ("file", "symlink", "dir"):
                e["size"] = st.st_size
            if kind in ("chardev", "blockdev"):
                e["rdev"] = st.st_rdev
            if kind == "symlink":
                e["target"] = os.fsdecode(os.readlink(root + p))
            if kind == "file":
                with open(root + p, "rb") as f:
                    e["sha256"] = _digest(lambda off, n: os.pread(f.fileno(), n, off), st.st_size)
            out[os.fsdecode(p)] = e
            if kind == "dir":
                walk(p)

    walk(b"")
    return out


def node_tree(node, *, skip=("lost+found",)) -> dict[str, dict]:
    """The same shape from an rpfs node (a POSIX volume root)."""
    out: dict[str, dict] = {}

    def walk(n, rel: str) -> None:
        for child in sorted(n.iterdir(), key=lambda c: os.fsencode(c.name)):
            p = f"{rel}/{child.name}"
            if rel == "" and child.name in skip:
                continue
            a = child.attr()
            e = {"kind": child.kind, "mode": a.mode, "uid": a.uid, "gid": a.gid,
                 "nlink": a.nlink, "mtime": a.mtime_ns, "ctime": a.ctime_ns,
                 "atime": a.atime_ns, "ino": child.key[-1],
                 "xattrs": {x: child.getxattr(x) for x in sorted(child.xattr_names())}}
            if child.kind in ("file", "symlink", "dir"):
                e["size"] = a.size
            if child.kind in ("chardev", "blockdev"):
                e["rdev"] = a.rdev
            if child.kind == "symlink":
                e["target"] = child.readlink()
            if child.kind == "file":
                s = child.open()
                e["sha256"] = _digest(s.read, s.size)
            out[p] = e
            if child.kind == "dir":
                walk(child, p)

    walk(node, "")
    return out


def differences(kernel: dict, ours: dict, *, ignore=("atime",), limit: int = 20) -> list[str]:
    """What differs, one line per field (at most ``limit`` lines)."""
    diffs = []
    for p in sorted(set(kernel) | set(ours)):
        k, o = kernel.get(p), ours.get(p)
        if k is None or o is None:
            diffs.append(f"{p}: only in {'rpfs' if k is None else 'the kernel'}")
            continue
        for field in sorted(set(k) | set(o)):
            if field in ignore:
                continue
            if k.get(field) != o.get(field):
                diffs.append(f"{p}: {field}: kernel {k.get(field)!r} rpfs {o.get(field)!r}")
        if len(diffs) >= limit:
            break
    return diffs[:limit]


def link_groups(tree: dict) -> set[frozenset]:
    """Paths that are one inode (hard links), as sets: comparable across mounts whose inode
    numbers differ."""
    by_ino: dict = {}
    for p, e in tree.items():
        if e["kind"] != "dir":
            by_ino.setdefault(e["ino"], set()).add(p)
    return {frozenset(g) for g in by_ino.values() if len(g) > 1}


def without(tree: dict, *, fields=(), dir_size: bool = True, kinds=()) -> dict:
    """``tree`` without some fields (and directory sizes, and entries of some kinds)."""
    out = {}
    for p, e in tree.items():
        if e["kind"] in kinds:
            continue
        e = {k: v for k, v in e.items() if k not in fields}
        if not dir_size and e["kind"] == "dir":
            e.pop("size", None)
        out[p] = e
    return out
