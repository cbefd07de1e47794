"""``rpfs mount`` and ``rpfs umount``.

Without ``--foreground`` the mount runs in a detached child process; the command returns
once the mount point is live (or prints why the child could not mount), like ntfs-3g.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time

from rpfs.errors import RpfsError, UsageError
from rpfs.cli.browse import add_keys_option, open_tree

SOURCE_HELP = "a repository, a disk image (VHDX, AVHDX, VHD, raw) or a VM folder"


def register(sub) -> None:
    p = sub.add_parser("mount", help="mount read-only with FUSE")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("mountpoint")
    p.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    p.add_argument("--allow-other", action="store_true",
                   help="let other users read the mount (guest ACLs are not enforced!)")
    p.add_argument("--debug-fuse", action="store_true", help=argparse_suppress())
    add_keys_option(p)
    p.set_defaults(func=cmd_mount)

    p = sub.add_parser("umount", help="unmount an rpfs mount")
    p.add_argument("mountpoint")
    p.set_defaults(func=cmd_umount)


def argparse_suppress():
    import argparse

    return argparse.SUPPRESS


def _check_mountpoint(mp: str) -> None:
    if not os.path.isdir(mp):
        raise UsageError(f"{mp}: mount point is not a directory")
    if os.path.ismount(mp):
        raise UsageError(f"{mp}: something is already mounted there")
    if not os.path.exists("/dev/fuse"):
        raise UsageError("/dev/fuse is missing: FUSE is not available on this machine")


def cmd_mount(args) -> int:
    _check_mountpoint(args.mountpoint)
    if args.foreground:
        from rpfs.fuse import mount

        tree = open_tree(args)
        try:
            mount(tree, args.mountpoint, allow_other=args.allow_other, debug=args.debug_fuse)
        finally:
            tree.close()
        return 0
    # Detached child in the foreground mode; wait until the kernel shows the mount.
    log = tempfile.NamedTemporaryFile(prefix="rpfs-mount-", suffix=".log", delete=False)
    cmd = [sys.executable, "-m", "rpfs", "mount", "--foreground", args.source, args.mountpoint]
    if args.allow_other:
        cmd.append("--allow-other")
    if args.keys:  # the file's name only: keys never reach a command line or process title
        from formats.bitlocker import KeyRing

        KeyRing.load(args.keys)  # a bad keys file is reported here, not by the child
        cmd += ["--keys", os.path.abspath(args.keys)]
    child = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                             start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if os.path.ismount(args.mountpoint):
            return 0
        if child.poll() is not None:
            with open(log.name, errors="replace") as f:
                lines = [line.strip() for line in f if line.strip()]
            msg = lines[-1] if lines else f"mount process exited with {child.returncode}"
            raise RpfsError(msg.removeprefix("rpfs: "))
        time.sleep(0.05)
    child.kill()
    raise RpfsError(f"{args.mountpoint}: mount did not come up within 60 s (log: {log.name})")


def cmd_umount(args) -> int:
    mp = args.mountpoint
    if not os.path.ismount(mp):
        raise UsageError(f"{mp}: not mounted")
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = [tool, "-u", mp] if tool else ["umount", mp]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RpfsError(f"{mp}: {r.stderr.strip() or 'unmount failed'}")
    return 0
