"""``rpfs mount`` and ``rpfs umount``.

Without ``--foreground`` the mount runs in a forked, detached child process; the command
returns once the mount point is live (or prints why the child could not mount), like ntfs-3g.

What only ``umount`` or a failing child uses (shutil, subprocess, traceback) is imported
there: the mount command waits for everything it imports (tests/test_startup.py).
"""

from __future__ import annotations

import gc
import os
import select
import signal
import sys
import time

from streams.errors import RpfsError, UsageError
from rpfs import heap
from rpfs.cli.opening import SOURCE_HELP, add_keys_option, open_tree


# decoded chunks a mount (and ``rpfs serve``) keeps: read-ahead (a quarter of it: 4 chunks
# ahead) and the metadata being parsed; file data lives in the kernel's page cache. 32 MiB
# cost the million-entry walk ~20 MiB more peak RSS than 16, with the same cat of a 384 MiB
# file (daemon CPU 0.44-0.55 s both)
MOUNT_CHUNK_CACHE = 16 << 20
# ... growing to this when a reader comes back to chunks it just lost (rpfs/store/cache.py:
# cp -r of the bench's 4,000 small files decoded 3,817 frames at 16 MiB, 713 at 64 MiB;
# daemon user CPU 0.60 -> 0.42 s)
MOUNT_CHUNK_CACHE_GROW = 64 << 20


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
        _serve(args)
        return 0
    code = _daemon(args)
    # The mount is live and the child serves it: this process has nothing left to do, so it
    # skips the interpreter's teardown of its ~390 modules (~20 ms of every mount command).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _serve(args, ready=None) -> None:
    from rpfs.fuse import mount

    if args.store.chunk_cache_bytes is None:
        # file data read through a mount lives in the kernel's page cache; the chunk cache
        # only has to hold read-ahead and the chunks of metadata being parsed
        args.store = args.store.with_(chunk_cache_bytes=MOUNT_CHUNK_CACHE,
                                      chunk_cache_grow_to=MOUNT_CHUNK_CACHE_GROW)
    heap.limit_arenas()  # before the worker threads start
    heap.keep_chunk_buffers()
    if os.environ.get("RPFS_MEMDEBUG"):
        heap.dump_on_signal(os.environ["RPFS_MEMDEBUG"])
    tree = open_tree(args)
    try:
        mount(tree, args.mountpoint, allow_other=args.allow_other,
              debug=getattr(args, "debug_fuse", False), ready=ready)
    finally:
        tree.close()


def _daemon(args) -> int:
    """Fork a child that serves the mount (like ntfs-3g: no second interpreter to start)
    and return once it says the mount is live, or print why it is not. The child's later
    messages go to a log file in /tmp, removed when the mount ends with nothing in it."""
    from rpfs.cli import loading

    with loading():
        import rpfs.fuse  # noqa: F401  (imported once, before the fork)

    _ask_passphrase(args.source, args.store)
    if args.keys:  # a bad keys file is reported here, before the fork
        from formats.bitlocker import KeyRing

        KeyRing.load(args.keys)
    log_fd, log_name = _log_file()
    r, w = os.pipe()
    gc.freeze()  # what was loaded stays out of the child's collections (and shared pages)
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(r)
        code = 1
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(log_fd, 1)
            os.dup2(log_fd, 2)

            def ready():
                os.write(w, b"\n")
                os.close(w)

            _serve(args, ready)
            code = 0
            if os.fstat(log_fd).st_size == 0:  # unmounted with nothing to say
                os.unlink(log_name)
        except RpfsError as e:
            _tell(w, str(e))
            code = e.exit_code
        except BaseException as e:  # noqa: BLE001  (reported to the parent, then exit)
            import traceback

            traceback.print_exc()
            _tell(w, f"mount failed: {type(e).__name__}: {e} (log: {log_name})")
        finally:
            os._exit(code)
    os.close(w)
    deadline = time.monotonic() + 60
    answer = b""
    with os.fdopen(r, "rb", buffering=0) as pipe:
        while not answer.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([pipe], [], [], left)[0]:
                os.kill(pid, signal.SIGKILL)
                raise RpfsError(f"{args.mountpoint}: mount did not come up within 60 s "
                                f"(log: {log_name})")
            chunk = pipe.read(4096)
            if not chunk:
                break
            answer += chunk
    if answer == b"\n":
        return 0
    os.waitpid(pid, 0)
    raise RpfsError(answer.decode(errors="replace").strip() or f"mount process failed "
                    f"(log: {log_name})")


def _log_file() -> tuple[int, str]:
    """A new file ``rpfs-mount-*.log`` (mode 0600) in $TMPDIR, else /tmp, made like
    ``tempfile.mkstemp`` (O_EXCL, no symlink followed) without importing tempfile, which
    brings random and hashlib (~1.2 ms of every mount command)."""
    base = os.environ.get("TMPDIR") or "/tmp"
    if not os.path.isdir(base):
        base = "/tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        name = os.path.join(base, f"rpfs-mount-{os.urandom(6).hex()}.log")
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            continue
    raise RpfsError(f"{base}: cannot make a log file for the mount")


def _tell(fd: int, message: str) -> None:
    try:
        os.write(fd, message.replace("\n", " ").encode(errors="replace") + b"\n")
    except OSError:
        pass


def _ask_passphrase(source: str, store) -> None:
    """The forked child has no terminal: an encrypted repository's passphrase is asked here,
    before the fork, and kept in memory for the child (never argv or the environment)."""
    from rpfs.store import Repository

    pw = store.passphrase
    if pw is not None and pw.prompt_needed() and sys.stdin.isatty() \
            and Repository.is_encrypted(source, store):
        pw.keep(pw(source))


def cmd_umount(args) -> int:
    mp = args.mountpoint
    if not os.path.ismount(mp):
        raise UsageError(f"{mp}: not mounted")
    import shutil
    import subprocess

    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = [tool, "-u", mp] if tool else ["umount", mp]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RpfsError(f"{mp}: {r.stderr.strip() or 'unmount failed'}")
    return 0
