"""Simple ``rpfs restore``, ``rpfs mount`` and ``rpfs export`` command lines read without
argparse.

Building the restore command's parser and parsing with it cost about 20 M instructions
(argparse's help formatter imports shutil with bz2, lzma and locale), a few per cent of
restoring 4,000 small files; importing and using argparse was ~8% of a mount's way to its
first listing, and 85 M instructions of an export's start. A command line made only of the
command, its operands, its on/off switches and (export) ``--format`` with one of its names
is read here into the same attributes argparse would give; any other (another option with a
value, an abbreviation, ``--format=x``, ``--help``, ``--``, a missing or extra operand, an
operand that starts with ``-``) returns None and goes to argparse, so every usage line and
error stays argparse's own. tests/test_cli.py checks both against each other.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace

# restore's switches (rpfs/cli/browse.py) -> attribute
RESTORE_SWITCHES = {"--xattrs": "xattrs", "--devices": "devices", "--overwrite": "overwrite",
                    "--dry-run": "dry_run", "--json": "json"}
# the options with a value every command has, left at their defaults here
RESTORE_DEFAULTS = {"keys": None, "limit_rate": None, "s3_endpoint": None, "cache_dir": None,
                    "cache_size": None, "verbose": False}


# mount's switches (rpfs/cli/mount.py) -> attribute, and its options' defaults
MOUNT_SWITCHES = {"-f": "foreground", "--foreground": "foreground",
                  "--allow-other": "allow_other", "--debug-fuse": "debug_fuse"}
MOUNT_DEFAULTS = {"keys": None, "s3_endpoint": None, "cache_dir": None, "cache_size": None,
                  "verbose": False}


# export's switches (rpfs/cli/export.py), its --format names, and its options' defaults
EXPORT_SWITCHES = {"--fixed": "fixed", "--force": "force", "--json": "json"}
EXPORT_CHOICES = {"--format": ("format", ("vhdx", "vhd", "raw"))}
EXPORT_DEFAULTS = {"format": None, "block_size": None, "limit_rate": None, "keys": None,
                   "s3_endpoint": None, "cache_dir": None, "cache_size": None, "verbose": False}


def _simple(argv: list[str], command: str, operands: tuple[str, ...], switches: dict,
            defaults: dict, choices: dict | None = None) -> SimpleNamespace | None:
    """``choices``: options whose value is one of a few names (option -> (attribute, names))."""
    if not argv or argv[0] != command:
        return None
    args = SimpleNamespace(command=command, **dict.fromkeys(switches.values(), False),
                           **defaults)
    values = []
    rest = iter(argv[1:])
    for a in rest:
        if a.startswith("-"):
            if choices and a in choices:
                name, names = choices[a]
                value = next(rest, None)
                if value not in names:
                    return None
                setattr(args, name, value)
                continue
            name = switches.get(a)
            if name is None:
                return None
            setattr(args, name, True)
        else:
            values.append(a)
    if len(values) != len(operands):
        return None
    for name, value in zip(operands, values):
        setattr(args, name, value)
    return args


def restore_args(argv: list[str]) -> SimpleNamespace | None:
    """The parsed ``rpfs restore SOURCE PATH DEST [switches]``, or None: argparse's to read."""
    args = _simple(argv, "restore", ("source", "path", "dest"), RESTORE_SWITCHES,
                   RESTORE_DEFAULTS)
    if args is not None:   # by name, as build_parser loads a command's module (no import cycle)
        args.func = importlib.import_module("rpfs.cli.browse").cmd_restore
    return args


def mount_args(argv: list[str]) -> SimpleNamespace | None:
    """The parsed ``rpfs mount SOURCE MOUNTPOINT [switches]``, or None: argparse's to read."""
    args = _simple(argv, "mount", ("source", "mountpoint"), MOUNT_SWITCHES, MOUNT_DEFAULTS)
    if args is not None:
        args.func = importlib.import_module("rpfs.cli.mount").cmd_mount
    return args


def export_args(argv: list[str]) -> SimpleNamespace | None:
    """The parsed ``rpfs export SOURCE PATH DEST [--format F] [switches]``, or None."""
    args = _simple(argv, "export", ("source", "path", "dest"), EXPORT_SWITCHES, EXPORT_DEFAULTS,
                   EXPORT_CHOICES)
    if args is not None:
        args.func = importlib.import_module("rpfs.cli.export").cmd_export
    return args
