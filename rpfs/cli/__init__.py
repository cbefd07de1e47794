"""The ``rpfs`` command. One module per group of commands registers its subcommands.

Errors reach the user as one line (``rpfs: <message>``) and an exit status; a traceback
only with ``RPFS_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sqlite3
import sys

from streams.errors import IntegrityError, RpfsError

# Modules that define ``register(subparsers)``; each owns its commands.
COMMAND_MODULES = ["rpfs.cli.repo", "rpfs.cli.browse", "rpfs.cli.export", "rpfs.cli.mount",
                   "rpfs.cli.serve", "rpfs.cli.index", "rpfs.cli.ops", "rpfs.cli.changes"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rpfs",
        description="Browse, restore and export Hyper-V recovery points on Linux.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="rpfs: %(levelname)s: %(message)s",
    )
    debug = bool(os.environ.get("RPFS_DEBUG"))
    try:
        from rpfs.cli.options import store_options
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
