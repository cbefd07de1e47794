"""What the web front end needs from nodes: work off the event loop, paths, entries.

Every call that may parse or decompress (resolve, iterdir, attr, info, read) goes through
``in_thread``: the event loop only moves bytes. One limiter bounds the worker threads that
all requests share, like the FUSE adapter's; the tree and its caches are shared too.
"""

from __future__ import annotations

import functools
import posixpath
from urllib.parse import quote

import anyio

from rpfs.errors import RpfsError, UsageError
from rpfs.tree import Node, Tree, ns_to_iso

WORKER_THREADS = 8
MAX_PATH = 8192
LIMITER: anyio.CapacityLimiter | None = None

# FILE_ATTRIBUTE_* flags shown as letters, in the order Windows' attrib uses.
ATTRIBUTE_LETTERS = [(0x1, "R"), (0x2, "H"), (0x4, "S"), (0x20, "A"), (0x100, "T"),
                     (0x200, "P"), (0x400, "L"), (0x800, "C"), (0x1000, "O"), (0x2000, "I"),
                     (0x4000, "E")]


async def in_thread(fn, *args, **kw):
    """``fn(*args, **kw)`` in a worker thread (bounded), awaited from the event loop."""
    global LIMITER
    if LIMITER is None:  # made inside the running loop
        LIMITER = anyio.CapacityLimiter(WORKER_THREADS)
    return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kw), limiter=LIMITER)


def clean_path(path: str | None) -> str:
    """A namespace path as given by a client, checked: ``/a/b`` form, no NUL, bounded.

    ``..`` needs no special care: ``Tree.resolve`` never climbs above the root and the
    namespace has no link out of itself."""
    if path is None or path == "":
        return "/"
    if "\0" in path or len(path) > MAX_PATH:
        raise UsageError("path: not a valid path")
    return "/" + "/".join(p for p in path.split("/") if p not in ("", "."))


def resolve(tree: Tree, path: str, follow: bool = True) -> Node:
    return tree.resolve(clean_path(path), follow=follow)


def attribute_letters(value) -> str:
    """``0x21`` -> ``RA`` (NTFS info() gives the flags as a hex string)."""
    if value is None:
        return ""
    flags = int(value, 16) if isinstance(value, str) else int(value)
    return "".join(letter for bit, letter in ATTRIBUTE_LETTERS if flags & bit)


def entry(node: Node, detail: bool = False) -> dict:
    """The JSON the API gives for one node (``detail`` adds what a listing page shows)."""
    a = node.attr()
    out = {"name": node.name, "type": node.kind, "size": a.size, "modified": ns_to_iso(a.mtime_ns)}
    if node.kind == "symlink":
        out["target"] = node.readlink()
    if detail and hasattr(node, "entry"):  # NTFS: attributes and alternate data streams
        info = node.info()
        out["attributes"] = attribute_letters(info.get("attributes"))
        out["streams"] = info.get("streams") or {}
    return out


def entries(node: Node, detail: bool = False) -> list[dict]:
    """A directory's entries (or the node's own), directories first then by name."""
    if node.kind != "dir":
        return [entry(node, detail)]
    return page_of(node, detail)[0]


def page_of(node: Node, detail: bool = False, offset: int = 0,
            limit: int | None = None) -> tuple[list[dict], int]:
    """One page of a directory's entries and how many there are in all: only the page's
    entries are stat'ed. A broken child is shown with its error, the others as usual."""
    children = sorted(node.iterdir(), key=lambda n: (n.kind != "dir", n.name.lower(), n.name))
    out = []
    for child in children[offset:None if limit is None else offset + limit]:
        try:
            out.append(entry(child, detail))
        except RpfsError as e:
            out.append({"name": child.name, "type": child.kind, "size": None, "modified": None,
                        "error": str(e)})
    return out, len(children)


def url_path(path: str) -> str:
    """A namespace path as the path part of a URL (each name percent-encoded)."""
    return "/".join(quote(p, safe="", errors="surrogateescape") for p in path.split("/"))


def link_target(path: str, target: str) -> str:
    """Where a symlink at ``path`` points, as a namespace path (targets are relative)."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(path), target))

