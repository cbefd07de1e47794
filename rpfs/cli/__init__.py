"""The ``rpfs`` command. One module per group of commands registers its subcommands.

Errors reach the user as one line (``rpfs: <message>``) and an exit status; a traceback
only with ``RPFS_DEBUG=1``.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import importlib
import os
import sqlite3
import sys

from streams.errors import IntegrityError, RpfsError
import rpfs.log

# Modules that define ``register(subparsers)``; each owns its commands.
COMMAND_MODULES = ["rpfs.cli.repo", "rpfs.cli.browse", "rpfs.cli.export", "rpfs.cli.mount",
                   "rpfs.cli.serve", "rpfs.cli.index", "rpfs.cli.ops", "rpfs.cli.changes"]
# The module that registers each command: a command line naming one imports only that
# module (starting ``rpfs restore`` need not load the mount's or the web server's code).
# tests/test_cli.py checks this table against what the modules register.
COMMAND_OWNERS = {
    "init": "rpfs.cli.repo", "backup": "rpfs.cli.repo", "list": "rpfs.cli.repo",
    "prune": "rpfs.cli.repo", "verify": "rpfs.cli.repo", "repair": "rpfs.cli.repo",
    "ls": "rpfs.cli.browse", "cat": "rpfs.cli.browse", "info": "rpfs.cli.browse",
    "restore": "rpfs.cli.browse", "export": "rpfs.cli.export", "export-vm": "rpfs.cli.export",
    "mount": "rpfs.cli.mount", "umount": "rpfs.cli.mount", "serve": "rpfs.cli.serve",
    "find": "rpfs.cli.index", "history": "rpfs.cli.index", "index": "rpfs.cli.index",
    "config": "rpfs.cli.ops", "run": "rpfs.cli.ops", "schedule": "rpfs.cli.ops",
    "status": "rpfs.cli.ops", "diff": "rpfs.cli.changes", "scan": "rpfs.cli.changes",
    "last-clean": "rpfs.cli.changes",
}


def command_of(argv: list[str]) -> str | None:
    """The command word of ``argv`` (the first argument that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or with ``argv`` naming a known command, of that
    command's module only (what ``main`` uses: the others' imports are not paid for)."""
    import argparse   # here: a simple restore or mount line is read without it (quick.py)

    parser = argparse.ArgumentParser(
        prog="rpfs",
        description="Browse, restore and export Hyper-V recovery points on Linux.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    owner = COMMAND_OWNERS.get(command_of(argv)) if argv is not None else None
    for name in [owner] if owner else COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # that group is not written yet
                continue
            raise
        module.register(sub)
    for p in sub.choices.values():
        add_repository_options(p)
    return parser


def add_repository_options(p: argparse.ArgumentParser) -> None:
    """Where an s3:// repository is and where its local cache lives (for every command,
    since any of them may be given one). With the environment they become ``args.store``
    (rpfs/cli/options.py), the ``StoreOptions`` every command passes down."""
    g = p.add_argument_group("s3:// repositories")
    g.add_argument("--s3-endpoint", metavar="URL", help="S3 endpoint (default: $AWS_ENDPOINT_URL, else AWS)")
    g.add_argument("--cache-dir", metavar="DIR",
                   help="local catalog and block cache (default: ~/.cache/rpfs/<hash of the address>)")
    from rpfs.sizes import positive_size
    g.add_argument("--cache-size", metavar="SIZE", type=positive_size,
                   help="bound of the block cache, e.g. 4G (default 2G)")


# What to do about the errors of the disk itself (one line with the error; see docs/hardening.md)
_HINTS = {
    errno.ENOSPC: ": free space on that filesystem and run the command again (what was "
                  "committed before is unchanged)",
    errno.EDQUOT: ": free space within your quota and run the command again (what was "
                  "committed before is unchanged)",
    errno.EIO: ": the disk reported a read error; `rpfs verify REPO --read-data` lists "
               "what it affects",
}
_DAMAGE_HINT = " (`rpfs verify REPO --read-data` lists everything the damage affects)"


@contextlib.contextmanager
def loading():
    """No garbage collection while modules load: imports make objects that live as long as
    the process, so a collection among them frees nothing (it cost ~5% of importing the
    command, the store and the FUSE adapter, counted in instructions). When the process is
    this command's own, they are then frozen (``gc.freeze``) so that no later collection,
    nor the interpreter's teardown, traverses them again (~35 M instructions of a restore
    of 4,000 small files). Not when ``main`` is called with a command line by a program of
    its own (a test): freezing is process-wide, and ``gc.get_referrers`` stops seeing what
    is frozen."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if _own_process:
            gc.freeze()
        if enabled:
            gc.enable()


_own_process = False   # main() runs this process's own command line (sys.argv)


@contextlib.contextmanager
def few_collections():
    """Rare young-generation collections while a command makes many short-lived objects
    that form no cycles (a restore's few per file, freed once their batch is written):
    every 700 allocations the collector went over them again (8 M instructions of a
    restore of 4,000 small files). Only when the process is this command's own, as for
    ``loading``; the threshold is put back after."""
    if not _own_process:
        yield
        return
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], 100_000), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def end_of_command(code: int) -> int:
    """``code``, returned; when the process is this command's own (``main`` with no command
    line), the process ends here instead: output flushed, then ``os._exit``, without the
    interpreter's teardown, which frees every module, the frozen objects and what the
    command left for the collector, and writes nothing (3.4 ms of a restore of 4,000
    small files, ~2.2 ms of it saved; the mount's parent does the same). Only for a command
    that has closed everything it opened (its ``with`` blocks are done) and started no
    thread that outlives it: atexit handlers do not run."""
    if not _own_process:
        return code
    sys.stdout.flush()   # a closed pipe raises here: main's BrokenPipeError handling
    sys.stderr.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    global _own_process
    if argv is None:
        _own_process = True
        argv = sys.argv[1:]
    with loading():
        from rpfs.cli.quick import export_args, mount_args, restore_args   # no parser for these

        args = restore_args(argv) or mount_args(argv) or export_args(argv)
        if args is None:
            args = build_parser(argv).parse_args(argv)
        from rpfs.cli.options import store_options  # the store, for every command
    rpfs.log.configure(   # applied when something logs (rpfs/log.py)
        level="INFO" if args.verbose else "WARNING",
        format="rpfs: %(levelname)s: %(message)s",
    )
    debug = bool(os.environ.get("RPFS_DEBUG"))
    try:
        args.store = store_options(args)
        return args.func(args) or 0
    except RpfsError as e:
        if debug:
            raise
        hint = _DAMAGE_HINT if isinstance(e, IntegrityError) else ""
        print(f"rpfs: {e}{hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("rpfs: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # e.g. `rpfs cat ... | head`: not an error for the user
        try:
            sys.stdout = None
        except Exception:
            pass
        return 0
    except OSError as e:
        if debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"rpfs: {where}{e.strerror or e}{_HINTS.get(e.errno, '')}", file=sys.stderr)
        return 1
    except sqlite3.DatabaseError as e:  # the catalog's disk full, failing or damaged
        if debug:
            raise
        text = str(e)
        hint = (_HINTS[errno.ENOSPC] if "full" in text else _HINTS[errno.EIO] if "I/O" in text
                else "; `rpfs repair REPO` rebuilds the catalog from the repository's objects")
        print(f"rpfs: catalog: {text}{hint}", file=sys.stderr)
        return 1
    except Exception as e:  # a bug: still one line, with a way to get the details
        if debug:
            raise
        print(f"rpfs: internal error: {type(e).__name__}: {e} (set RPFS_DEBUG=1 for a traceback)",
              file=sys.stderr)
        return 70
