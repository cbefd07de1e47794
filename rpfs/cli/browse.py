"""Commands that read the namespace: ls, cat, info, restore (find: cli/index.py)."""

from __future__ import annotations

import os
import stat as statmod
import sys

from rpfs.cli import end_of_command, few_collections, jsonout, loading
from streams.errors import RpfsError, UsageError
from rpfs.progress import Progress, human
from rpfs.ratelimit import add_limit_option, limit_of, paced
from rpfs.cli.opening import (  # noqa: F401  (the other commands' modules take them from here)
    KEYS_HELP, SOURCE_HELP, add_keys_option, load_keys, open_tree,
)
from rpfs.tree import Node
from streams.times import ns_to_iso


def register(sub) -> None:
    p = sub.add_parser("ls", help="list a directory of the namespace")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("path", nargs="?", default="/")
    p.add_argument("-l", dest="long", action="store_true", help="long listing")
    p.add_argument("--json", action="store_true")
    add_keys_option(p)
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("cat", help="write a file (or file:stream) to standard output")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("path")
    add_keys_option(p)
    p.set_defaults(func=cmd_cat)

    p = sub.add_parser("info", help="what a VM, recovery point, disk, volume or file is")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("path", nargs="?", default="/")
    p.add_argument("--json", action="store_true")
    add_keys_option(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("restore", help="copy a file or directory out of the namespace")
    p.add_argument("source", help=SOURCE_HELP)
    p.add_argument("path")
    p.add_argument("dest", help="directory to restore into (created if missing)")
    p.add_argument("--xattrs", action="store_true",
                   help="also restore extended attributes: NTFS alternate data streams as "
                        "user.*; from Linux volumes user.*, POSIX ACLs, and as root "
                        "security.* and trusted.*")
    p.add_argument("--devices", action="store_true",
                   help="also make device nodes and FIFOs from POSIX volumes (else skipped)")
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--dry-run", action="store_true", help="show what would be restored")
    p.add_argument("--json", action="store_true")
    add_limit_option(p, "the writes")
    add_keys_option(p)
    p.set_defaults(func=cmd_restore)


# -- helpers ----------------------------------------------------------------------------


def node_json(node: Node) -> dict:
    a = node.attr()
    out = {"name": node.name, "type": node.kind, "size": a.size,
           "mtime": ns_to_iso(a.mtime_ns), "atime": ns_to_iso(a.atime_ns), "ctime": ns_to_iso(a.ctime_ns)}
    if a.crtime_ns is not None:
        out["crtime"] = ns_to_iso(a.crtime_ns)
    if node.kind == "symlink":
        out["target"] = node.readlink()
    return out


def long_line(node: Node) -> str:
    a = node.attr()
    mode = statmod.filemode(a.mode)
    when = ns_to_iso(a.mtime_ns) or "?"
    line = f"{mode} {a.nlink:>3} {a.size:>14} {when[:19].replace('T', ' ')} {node.name}"
    if node.kind == "symlink":
        line += f" -> {node.readlink()}"
    return line


def _out(text: str) -> None:
    from rpfs.restore import fsname  # the restore module only for the commands that print names

    sys.stdout.buffer.write(fsname(text) + b"\n")


# -- commands ---------------------------------------------------------------------------


def cmd_ls(args) -> int:
    failures = 0
    with open_tree(args) as tree:
        node = tree.resolve(args.path, follow=not args.long)
        if node.kind == "dir":   # names from the listing; a node only for -l and --json
            listing = node.listing()
            names = [os.fsdecode(n) for n in listing.names()]
            order = sorted(range(len(names)), key=names.__getitem__)
            children = [(names[i], lambda i=i: listing.node(i)) for i in order]
        else:
            children = [(node.name, lambda: node)]
        if args.json:
            items = []
            for name, child_of in children:
                child = child_of()
                try:
                    items.append(node_json(child))
                except RpfsError as e:
                    items.append({"name": child.name, "type": child.kind, "error": str(e)})
                    failures += 1
            sys.stdout.write(jsonout.dumps(items, indent=1))
            sys.stdout.write("\n")
        else:
            for name, child_of in children:
                if args.long:
                    child = child_of()
                    try:
                        _out(long_line(child))
                    except RpfsError as e:
                        print(f"rpfs: {child.name}: {e}", file=sys.stderr)
                        failures += 1
                else:
                    _out(name)
    return 1 if failures else 0


def cmd_cat(args) -> int:
    with open_tree(args) as tree:
        node = tree.resolve(args.path)
        if node.kind == "dir":
            raise UsageError(f"{args.path}: is a directory")
        stream = node.open()
        out = sys.stdout.buffer
        block = 4 << 20
        buf = bytearray(block)
        view = memoryview(buf)
        pos = 0
        while pos < stream.size:
            n = stream.readinto(pos, view[: min(block, stream.size - pos)])
            if n <= 0:
                break
            out.write(view[:n])
            pos += n
        out.flush()
    return 0


def _print_info(obj, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                _out(f"{pad}{k}:")
                _print_info(v, indent + 1)
            else:
                _out(f"{pad}{k}: {v}")
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, dict):
                first = True
                for k, v in item.items():
                    lead = "- " if first else "  "
                    first = False
                    if isinstance(v, (dict, list)) and v:
                        _out(f"{pad}{lead}{k}:")
                        _print_info(v, indent + 2)
                    else:
                        _out(f"{pad}{lead}{k}: {v}")
            else:
                _out(f"{pad}- {item}")


def cmd_info(args) -> int:
    with open_tree(args) as tree:
        node = tree.resolve(args.path, follow=False)
        info = node.info()
        if node is tree.root:
            info = {"source": str(args.source), "kind": tree.kind, **info}
            info.pop("name", None)
        if args.json:
            sys.stdout.write(jsonout.dumps(info, indent=1, default=str))
            sys.stdout.write("\n")
        else:
            _print_info(info)
    return 1 if "error" in info else 0


def cmd_restore(args) -> int:
    from rpfs.restore import restore  # here: mount, export and serve import this module too

    progress = Progress(0, "restore", enabled=False if args.json else None)
    if getattr(args, "store", None) is not None and not args.dry_run:
        # the chunks a restore decodes stay cached: in huge pages, not 256 faults each
        args.store = args.store.with_(huge_chunks=True)
    with open_tree(args) as tree:
        with loading():   # the volume's readers are imported on the way (rpfs.cli.loading)
            node = tree.resolve(args.path, follow=False)
        with few_collections():
            result = restore(node, args.dest, xattrs=args.xattrs, dry_run=args.dry_run,
                             overwrite=args.overwrite, devices=args.devices,
                             progress=paced(lambda done, total=None: progress.update(done),
                                            limit_of(args)))
    progress.close()
    if args.json:
        out = result.as_dict()
        if args.dry_run:
            out["planned"] = result.planned
        sys.stdout.write(jsonout.dumps(out, indent=1))
        sys.stdout.write("\n")
    else:
        if args.dry_run:
            for line in result.planned:
                _out(line)
        for e in result.errors:
            print(f"rpfs: {e}", file=sys.stderr)
        for s in result.skipped:
            print(f"rpfs: skipped {s} (--devices makes device nodes and FIFOs)", file=sys.stderr)
        verb = "would restore" if args.dry_run else "restored"
        print(f"{verb} {result.files} files ({human(result.bytes)}), {result.dirs} directories,"
              f" {result.symlinks} symlinks, {result.hardlinks} hard links"
              + (f", {result.special} device nodes/FIFOs" if result.special else "")
              + (f"; {len(result.skipped)} skipped" if result.skipped else "")
              + (f"; {len(result.errors)} errors" if result.errors else ""),
              file=sys.stderr)
    return end_of_command(1 if result.errors else 0)
