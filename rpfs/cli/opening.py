"""How a command opens its SOURCE, with the BitLocker keys of ``--keys``: apart from the
commands that read the namespace (rpfs/cli/browse.py), so a mount does not load their
output helpers (json output, progress, rate limits) on its way to a first listing."""

from __future__ import annotations

from rpfs.source import open_source

SOURCE_HELP = "a repository, a disk image (VHDX, AVHDX, VHD, raw) or a VM folder"
KEYS_HELP = ("BitLocker: a file with one recovery password, password or .BEK file path per "
             "line, tried on every encrypted volume")


def add_keys_option(p) -> None:
    p.add_argument("--keys", metavar="FILE", help=KEYS_HELP)


def load_keys(args):
    """The BitLocker keys of ``--keys`` (read once, kept in memory only), or None."""
    if not getattr(args, "keys", None):
        return None
    from formats.bitlocker import KeyRing

    return KeyRing.load(args.keys)


def open_tree(args):
    """``open_source`` with the keys of ``--keys``."""
    return open_source(args.source, keys=load_keys(args), store=getattr(args, "store", None))
