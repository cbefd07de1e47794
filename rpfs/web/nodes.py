"""What the web front end needs from nodes: work off the event loop, paths, entries.

Every call that may parse or decompress (resolve, iterdir, attr, info, read) goes through
``in_thread``: the event loop only moves bytes. One limiter bounds the worker threads that
all requests share, like the FUSE adapter's; the tree and its caches are shared too.
"""

from __future__ import annotations

import base64
import functools
import heapq
import json
import os
import posixpath
from urllib.parse import quote, unquote_to_bytes

import anyio
from starlette.datastructures import MultiDict

from streams.errors import RpfsError, UsageError
from rpfs import nspath
from rpfs.tree import Node, Tree
from streams.times import ns_to_iso

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
    return "/" + "/".join(nspath.parts(path))


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
    if a.posix_mode is not None:   # a Linux volume: the guest's mode, owner and group
        import stat

        out.update(mode=stat.filemode(a.posix_mode), uid=a.uid, gid=a.gid)
    elif detail and (more := node.detail()):  # NTFS: attributes and alternate data streams
        out["attributes"] = attribute_letters(more.get("attributes"))
        out["streams"] = more.get("streams") or {}
    return out


def entries(node: Node, detail: bool = False) -> list[dict]:
    """A directory's entries (or the node's own), directories first then by name."""
    if node.kind != "dir":
        return [entry(node, detail)]
    return page_of(node, detail, limit=None)["entries"]


def sort_key(node: Node) -> tuple:
    """Where an entry goes in a listing: directories first, then by name ignoring case. The
    node's key breaks ties between equal names (a hostile index may hold one name twice)."""
    return (node.kind != "dir", node.name.lower(), node.name, repr(node.key))


def encode_cursor(key: tuple) -> str:
    """An opaque, URL-safe cursor for a listing position (the sort key of an entry)."""
    data = json.dumps(key, ensure_ascii=True).encode("ascii")
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def decode_cursor(cursor: str | None) -> tuple | None:
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if (isinstance(key, list) and len(key) == 4 and isinstance(key[0], bool)
                and all(isinstance(k, str) for k in key[1:])):
            return tuple(key)
    except (ValueError, UnicodeError):
        pass
    raise UsageError("cursor: not a cursor this server gave")


def page_of(node: Node, detail: bool = False, *, after: tuple | None = None,
            before: tuple | None = None, limit: int | None = 500) -> dict:
    """One page of a directory's entries in listing order: the ``limit`` first after
    ``after`` (or the last before ``before``), in one pass over the directory that holds
    ``limit`` nodes at most, whatever its size; only the page's entries are stat'ed.

    Returns ``entries``, ``total`` (entries in the directory), ``first`` (the page's
    position, 0-based), and cursors ``next``/``previous`` (None at either end). A broken
    child is shown with its error, the others as usual."""
    seen = {"total": 0, "before": 0, "candidates": 0}

    listing = node.listing()   # names, kinds and keys without a node per child

    def candidates():
        for i, raw in enumerate(listing.names()):
            seen["total"] += 1
            name = os.fsdecode(raw)
            k = (listing.kind(i) != "dir", name.lower(), name, repr(listing.key(i)))  # sort_key
            if after is not None and k <= after:
                seen["before"] += 1
                continue
            if before is not None and k >= before:
                continue
            seen["candidates"] += 1
            yield k, i

    first_key = lambda kc: kc[0]  # noqa: E731
    if limit is None:
        chosen = sorted(candidates(), key=first_key)
        first = seen["before"]
    elif before is None:
        chosen = heapq.nsmallest(limit, candidates(), key=first_key)
        first = seen["before"]
    else:
        chosen = sorted(heapq.nlargest(limit, candidates(), key=first_key), key=first_key)
        first = seen["candidates"] - len(chosen)
    out = []
    for _, i in chosen:
        child = listing.node(i)
        try:
            out.append(entry(child, detail))
        except RpfsError as e:
            out.append({"name": child.name, "type": child.kind, "size": None, "modified": None,
                        "error": str(e)})
    last = first + len(chosen)
    return {"entries": out, "total": seen["total"], "first": first,
            "next": encode_cursor(chosen[-1][0]) if chosen and last < seen["total"] else None,
            "previous": encode_cursor(chosen[0][0]) if chosen and first > 0 else None}


def url_path(path: str) -> str:
    """A namespace path as the path part of a URL (each name percent-encoded; an escaped
    name's bytes as they are, which ``request_path`` and ``query`` decode back)."""
    return "/".join(quote(p, safe="", errors="surrogateescape") for p in path.split("/"))


def url_query(value: str) -> str:
    """A value for a URL's query string (``?path=...``), escaped names included."""
    return quote(value, safe="/", errors="surrogateescape")


def decode_url(text: str) -> str:
    """Percent-decoding that keeps bytes that are not UTF-8 (escaped names) as they were."""
    return os.fsdecode(unquote_to_bytes(text))


def query(request) -> MultiDict:
    """The query string's parameters, decoded like ``decode_url`` (Starlette's own
    ``query_params`` turns the bytes of an escaped name into U+FFFD, which names nothing)."""
    raw = request.scope.get("query_string", b"").decode("latin-1")
    pairs = []
    for part in raw.split("&"):
        if part:
            k, _, v = part.partition("=")
            pairs.append((decode_url(k.replace("+", " ")), decode_url(v.replace("+", " "))))
    return MultiDict(pairs)


def link_target(path: str, target: str) -> str:
    """Where a symlink at ``path`` points, as a namespace path (targets are relative)."""
    return posixpath.normpath(posixpath.join(posixpath.dirname(path), target))

