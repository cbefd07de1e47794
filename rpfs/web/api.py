"""The JSON API (``/api/ls``, ``/api/info``, ``/api/find``, ``/api/history``) and downloads.

Errors are ``{"error": "<the line the CLI would print>"}`` with 404 (no such path), 400 (a
request that cannot be done as asked), 403 (no token) or 500 (damage in that object only).
Downloads stream: a file block by block with ``Range`` support, a folder or a selection as
a zip built while it is sent (``zipstream``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import posixpath
import re
from urllib.parse import quote

import anyio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from streams.errors import NotFoundError, RpfsError, UsageError
from rpfs.restore import fsname
from rpfs.web import queries
from rpfs.heap import give_back
from rpfs.web.nodes import (clean_path, decode_cursor, decode_url, entry, in_thread,
                            page_of, query, resolve, url_query)
from rpfs.web.zipstream import zip_chunks
from rpfs.log import get_logger

log = get_logger(__name__)

BLOCK = 1 << 20
HEAD = 64 << 10  # read before answering: to tell an image, and to fail with a status, not midway
FIND_LIMIT = 1000
LS_LIMIT, LS_LIMIT_MAX = 1000, 10_000  # entries per /api/ls answer: by default, at most
IMAGE_MAGIC = [(b"\x89PNG\r\n\x1a\n", "image/png"), (b"\xff\xd8\xff", "image/jpeg"),
               (b"GIF87a", "image/gif"), (b"GIF89a", "image/gif"), (b"BM", "image/bmp")]


class Json(JSONResponse):
    """JSON as the CLI's ``--json`` writes it (UTF-8, odd values as strings)."""

    def render(self, content) -> bytes:
        text = json.dumps(content, ensure_ascii=False, default=str)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a name with an unpaired surrogate: escape it, stay valid
            return json.dumps(content, default=str).encode("ascii")


class StreamAborted(Exception):
    """Damage found after a response started: the connection is closed, not completed."""


def status_of(error: Exception) -> int:
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, UsageError):
        return 400
    return 500


def error_json(error: Exception) -> Json:
    message = (str(error) if isinstance(error, RpfsError)
               else f"internal error: {type(error).__name__}: {error}")
    return Json({"error": message}, status_code=status_of(error))


def _flag(request: Request, name: str) -> bool:
    return query(request).get(name, "") not in ("", "0", "false", "no")


def _number(request: Request, name: str, default: int, most: int) -> int:
    try:
        return max(1, min(int(query(request).get(name) or default), most))
    except ValueError:
        raise UsageError(f"{name}: not a number") from None


async def api_ls(request: Request):
    """A folder's entries, directories first then by name: at most ``limit`` (default 1000,
    at most 10,000) from ``cursor`` on. When more follow, the answer says where to go on:
    ``Link: </api/ls?...&cursor=C>; rel="next"`` and ``X-Rpfs-Next-Cursor: C``. Each answer
    is one pass over the folder holding one page, whatever the folder's size."""
    tree = request.app.state.tree
    q = query(request)
    path = clean_path(q.get("path", "/"))
    detail = _flag(request, "detail")
    limit = _number(request, "limit", LS_LIMIT, LS_LIMIT_MAX)
    after = decode_cursor(q.get("cursor"))

    def listing():
        node = resolve(tree, path)
        if node.kind != "dir":
            return [entry(node, detail)], None
        page = page_of(node, detail, after=after, limit=limit)
        return page["entries"], page["next"]

    items, nxt = await in_thread(listing)
    headers = {}
    if nxt:
        url = (f"/api/ls?path={url_query(path)}{'&detail=1' if detail else ''}"
               f"&limit={limit}&cursor={nxt}")
        headers = {"Link": f'<{url}>; rel="next"', "X-Rpfs-Next-Cursor": nxt}
    # a big folder's pass freed many small objects: give their pages back once it is sent
    return Json(items, headers=headers,
                background=BackgroundTask(give_back) if nxt or len(items) > 1000 else None)


async def api_info(request: Request):
    tree = request.app.state.tree
    path = query(request).get("path", "/")
    return Json(await in_thread(lambda: resolve(tree, path, follow=False).info()))


async def api_find(request: Request):
    q = query(request)
    pattern = q.get("pattern") or ""
    if not pattern:
        raise UsageError("pattern: missing")
    try:
        limit = max(1, min(int(q.get("limit") or FIND_LIMIT), FIND_LIMIT))
    except ValueError:
        raise UsageError("limit: not a number") from None
    results, truncated = await in_thread(find, request.app.state.tree, pattern, limit,
                                         regex=_flag(request, "regex"), vm=q.get("vm") or None,
                                         since=q.get("since") or None, until=q.get("until") or None,
                                         size=q.get("size") or None, type=q.get("type") or None,
                                         modified_after=q.get("modified_after") or None,
                                         modified_before=q.get("modified_before") or None)
    return Json({"results": results, "truncated": truncated})


def find(tree, pattern: str, limit: int, **filters) -> tuple[list[dict], bool]:
    """At most ``limit`` matches (the walk stops there) and whether there were more."""
    found = list(itertools.islice(queries.find_entries(tree, pattern, **filters), limit + 1))
    return found[:limit], len(found) > limit


async def api_history(request: Request):
    tree = request.app.state.tree
    path = clean_path(query(request).get("path"))
    return Json(await in_thread(queries.file_history, tree, path, verify=_flag(request, "verify")))


# -- downloads ----------------------------------------------------------------------------


def content_disposition(name: str, inline: bool = False) -> str:
    """``attachment; filename="ascii"; filename*=UTF-8''...``: whatever the name holds
    (quotes, CR/LF, non-ASCII), only printable ASCII reaches the header."""
    fallback = "".join(c if 0x20 <= ord(c) < 0x7F and c not in '"\\%;' else "_" for c in name)
    encoded = quote(fsname(name), safe="")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback or 'download'}\"; filename*=UTF-8''{encoded}"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range as ``(start, end)`` (end exclusive); None to send everything
    (no header, a malformed one, or several ranges); ``ValueError`` if unsatisfiable."""
    if not header:
        return None
    m = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", header)
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    first, last = m.group(1), m.group(2)
    if first == "":  # the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            raise ValueError("unsatisfiable")
        return max(0, size - n), size
    start = int(first)
    end = size if last == "" else int(last) + 1
    if last != "" and end <= start:
        return None
    if start >= size:
        raise ValueError("unsatisfiable")
    return start, min(end, size)


def _etag(node, size: int) -> str:
    """Names the object, not the path: ``latest/...`` changes its ETag when latest moves."""
    digest = hashlib.sha256(repr((node.key, size)).encode("utf-8", "surrogatepass")).hexdigest()
    return f'"{digest[:32]}"'


async def api_download(request: Request):
    tree = request.app.state.tree
    q = query(request)
    # qpath: a path percent-encoded (the page's checkboxes: an HTML form cannot carry the
    # bytes of an escaped name, its percent-encoding it can)
    paths = q.getlist("path") + [decode_url(p) for p in q.getlist("qpath")] or ["/"]
    if q.get("format", "") == "zip":
        return await _zip_response(tree, paths, head_only=request.method == "HEAD",
                                   limit=request.app.state.limit)
    if q.get("format", "") not in ("", "raw"):
        raise UsageError("format: zip, or none for the file itself")
    if len(paths) != 1:
        raise UsageError("path: several paths need format=zip")

    def open_file():
        node = resolve(tree, paths[0])
        if node.kind == "dir":
            raise UsageError(f"{clean_path(paths[0])}: is a directory (add format=zip)")
        stream = node.open()
        head = stream.read(0, min(HEAD, stream.size))
        return node, stream, head

    node, stream, head = await in_thread(open_file)
    size = stream.size
    etag = _etag(node, size)
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Cache-Control": "private, no-cache"}
    inline_type = image_type(head) if _flag(request, "inline") else None
    headers["Content-Disposition"] = content_disposition(node.name, inline=inline_type is not None)
    rng = request.headers.get("range")
    if_range = request.headers.get("if-range")
    if if_range is not None and if_range.strip() != etag:
        rng = None
    try:
        span = parse_range(rng, size)
    except ValueError:
        return Response(status_code=416, headers={"Content-Range": f"bytes */{size}", **headers})
    status = 200
    start, end = 0, size
    if span is not None:
        start, end = span
        status = 206
        headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    headers["Content-Length"] = str(end - start)
    head_only = request.method == "HEAD"
    body = _nothing() if head_only else _file_body(stream, start, end, head, node.name,
                                                   request.app.state.limit)
    return StreamingResponse(body, status_code=status, headers=headers,
                             media_type=inline_type or "application/octet-stream")


def image_type(head: bytes) -> str | None:
    """The image type the first bytes say (never SVG: it can hold script), or None."""
    for magic, kind in IMAGE_MAGIC:
        if head.startswith(magic):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


async def throttle(limit, n: int) -> None:
    """``rpfs serve --limit-rate``: every download shares one bucket."""
    if limit is not None:
        wait = limit.delay(n)
        if wait > 0:
            await anyio.sleep(wait)


async def _file_body(stream, start: int, end: int, head: bytes, name: str, limit=None):
    pos = start
    if start < len(head):  # read before answering (see HEAD)
        chunk = head[start:end]
        await throttle(limit, len(chunk))
        yield chunk
        pos += len(chunk)
    while pos < end:
        try:
            data = await in_thread(stream.read, pos, min(BLOCK, end - pos))
        except RpfsError as e:
            log.error("%s: %s", name, e)
            raise StreamAborted(str(e)) from None
        if not data:
            raise StreamAborted(f"{name}: unexpected end of data at offset {pos}")
        await throttle(limit, len(data))
        yield data
        pos += len(data)


async def _nothing():
    """The body of a HEAD answer: the headers say it all, nothing is read or built."""
    return
    yield


async def _zip_response(tree, paths: list[str], head_only: bool = False, limit=None):
    def collect():  # two selected names never collide: zip_chunks numbers the second
        return [(node.name or "rpfs", node) for node in (resolve(tree, p) for p in paths)]

    items = await in_thread(collect)
    name = items[0][0] if len(items) == 1 else posixpath.basename(
        posixpath.dirname(clean_path(paths[0]))) or "selection"
    chunks = zip_chunks(items)
    end = object()

    async def body():
        while True:
            try:
                chunk = await in_thread(next, chunks, end)
            except RpfsError as e:
                log.error("%s: %s", name, e)
                raise StreamAborted(str(e)) from None
            if chunk is end:
                await in_thread(give_back)
                return
            if chunk:
                await throttle(limit, len(chunk))
                yield chunk

    headers = {"Content-Disposition": content_disposition(name + ".zip"),
               "Cache-Control": "private, no-cache"}
    return StreamingResponse(_nothing() if head_only else body(), media_type="application/zip",
                             headers=headers)
