"""The HTML pages: the calendar of recovery points, the browser, search and versions.

Pages are rendered on the server (Jinja2, autoescaped) from the same nodes and queries as
the JSON API; every URL is a namespace path, so a page can be bookmarked and shared.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections import defaultdict
from pathlib import Path

import jinja2
from markupsafe import Markup, escape
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.templating import Jinja2Templates

from streams.errors import NotFoundError, RpfsError, UsageError
from rpfs import nspath
from rpfs.progress import human
from streams.times import parse_point_name
from rpfs.web import api, queries
from rpfs.heap import give_back
from rpfs.web.nodes import (attribute_letters, clean_path, decode_cursor, in_thread,
                            link_target, page_of, query, resolve, url_path, url_query)

PAGE_SIZE = 500
PREVIEW_BYTES = 64 << 10
SEARCH_LIMIT = 200

ESCAPED_TITLE = ("bytes that are not UTF-8, shown as \\xHH: the name holds an unpaired "
                 "UTF-16 surrogate, or a / or NUL that Linux names cannot hold")


def _escapes(text: str) -> list[tuple[bool, str]]:
    """``text`` cut into (escaped?, piece): runs of escaped bytes (U+DC80-DCFF, as
    ``ntfs_reader.names`` and ``os.fsdecode`` carry them) become ``\\xHH`` text."""
    out: list[tuple[bool, str]] = []
    for c in text:
        esc = "\udc80" <= c <= "\udcff"
        piece = f"\\x{ord(c) - 0xDC00:02X}" if esc else (
            "\ufffd" if "\ud800" <= c <= "\udfff" else c)
        if out and out[-1][0] == esc:
            out[-1] = (esc, out[-1][1] + piece)
        else:
            out.append((esc, piece))
    return out


def printable(value):
    """Every value a template prints: text that UTF-8 cannot hold is shown escaped (a name
    with escaped bytes used to make the whole page fail)."""
    if isinstance(value, str) and not isinstance(value, Markup):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "".join(piece for _, piece in _escapes(value))
    return value


def shown(name) -> Markup:
    """A name for the eye: escaped bytes as ``\\xHH`` in a marked span."""
    if not isinstance(name, str):
        return name
    return Markup("").join(
        Markup('<span class="escaped" title="{}">{}</span>').format(ESCAPED_TITLE, piece)
        if esc else escape(piece) for esc, piece in _escapes(name))


templates = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=True, trim_blocks=True, lstrip_blocks=True, finalize=printable))
templates.env.filters["human"] = lambda n: "" if n is None else human(n)
templates.env.filters["url"] = url_path
templates.env.filters["q"] = url_query
templates.env.filters["shown"] = shown
templates.env.filters["attributes"] = attribute_letters
templates.env.filters["when"] = lambda t: (t[:19].replace("T", " ") if isinstance(t, str)
                                           else "" if t is None else str(t))


def page(request: Request, name: str, status: int = 200, **context):
    tree = request.app.state.tree
    context.setdefault("title", "rpfs")
    return templates.TemplateResponse(request, name, {"source": request.app.state.source,
                                                      "repository": tree.kind == "repository",
                                                      **context}, status_code=status)


def crumbs(path: str) -> list[tuple[str, str]]:
    """``/a/b`` -> [("a", "/a"), ("b", "/a/b")] for the breadcrumb trail."""
    out, acc = [], ""
    for part in nspath.parts(path):
        acc += "/" + part
        out.append((part, acc))
    return out


# -- the calendar -------------------------------------------------------------------------


async def home(request: Request):
    tree = request.app.state.tree
    if tree.kind != "repository":
        return RedirectResponse("/browse/", status_code=303)
    vms = await in_thread(_vm_summaries, tree)
    if len(vms) == 1:
        return RedirectResponse("/vm/" + url_path(vms[0]["name"]), status_code=303)
    return page(request, "home.html", vms=vms)


def _vm_summaries(tree) -> list[dict]:
    out = []
    for vm in sorted(tree.root.iterdir(), key=lambda n: n.name):
        names = sorted(n.name for n in vm.iterdir() if n.kind == "dir")
        out.append({"name": vm.name, "count": len(names), "newest": names[-1] if names else None})
    return out


def _month_arg(value: str | None, what: str) -> dt.date | None:
    if not value:
        return None
    try:
        return dt.date.fromisoformat(value + "-01" if len(value) == 7 else value)
    except ValueError:
        raise UsageError(f"{what}: not a date: {value}") from None


async def vm_page(request: Request):
    tree = request.app.state.tree
    vm = request.path_params["vm"]
    month = _month_arg(query(request).get("month"), "month")
    day = _month_arg(query(request).get("day"), "day")
    cal = await in_thread(vm_calendar, tree, vm, month, day)
    return page(request, "vm.html", title=f"{vm} — rpfs", vm=vm, **cal)


def vm_calendar(tree, vm: str, month: dt.date | None, day: dt.date | None) -> dict:
    """A month of recovery points: which days have some, and those of the selected day."""
    vm_node = resolve(tree, "/" + vm)
    times = {}
    for n in vm_node.iterdir():
        t = parse_point_name(n.name) if n.kind == "dir" else None
        if t:
            times[n.name] = t
    by_day: dict[dt.date, list[str]] = defaultdict(list)
    for name, t in sorted(times.items(), key=lambda kv: kv[1]):
        by_day[t.date()].append(name)
    newest = max(times, key=times.get) if times else None
    if day is None:
        day = (month and max((d for d in by_day if (d.year, d.month) == (month.year, month.month)),
                             default=None)) or (times[newest].date() if newest else dt.date.today())
    month = month or day.replace(day=1)
    ym = (month.year, month.month)
    months = sorted({(d.year, d.month) for d in by_day})
    prev = max((m for m in months if m < ym), default=None)
    nxt = min((m for m in months if m > ym), default=None)
    shown = {d for week in calendar.Calendar(firstweekday=0).monthdatescalendar(*ym) for d in week}
    scans = {name: _analysis(tree, vm, name) for d in shown | {day} for name in by_day.get(d, ())}
    weeks = [[{"date": d, "in_month": d.month == month.month, "count": len(by_day.get(d, ())),
               "selected": d == day,
               "suspicious": [r for n in by_day.get(d, ()) for r in scans[n].get("reasons", [])
                              if scans[n].get("verdict") == "suspicious"]} for d in week]
             for week in calendar.Calendar(firstweekday=0).monthdatescalendar(*ym)]
    chosen = []
    for name in by_day.get(day, []):
        try:
            info = vm_node.child(name).info()
        except RpfsError as e:
            info = {"error": str(e)}
        chosen.append({"name": name, "time": times[name], "newest": name == newest, "info": info,
                       "analysis": scans[name]})
    return {"month": month, "weeks": weeks, "day": day, "chosen": chosen, "newest": newest,
            "prev": prev and "%04d-%02d" % prev, "next": nxt and "%04d-%02d" % nxt,
            "total": len(times)}


def _analysis(tree, vm: str, name: str) -> dict:
    """The stored change analysis of a recovery point ({} if none: not analysed)."""
    from rpfs.analysis import stored
    repo = tree.repo
    return (stored(repo, vm, name) or {}) if repo is not None else {}


# -- the browser --------------------------------------------------------------------------


async def browse(request: Request):
    tree = request.app.state.tree
    path = clean_path(request.path_params.get("path", ""))
    q = query(request)
    after, before = decode_cursor(q.get("after")), decode_cursor(q.get("before"))
    data = await in_thread(_browse_data, tree, path, after, before)
    name = path.rsplit("/", 1)[-1] or request.app.state.source
    response = page(request, "browse.html", title=f"{name} — rpfs", path=path,
                    crumbs=crumbs(path), page_size=PAGE_SIZE, **data)
    if data.get("total", 0) > PAGE_SIZE:  # a big folder: its pages go back once sent
        response.background = BackgroundTask(give_back)
    return response


def _browse_data(tree, path: str, after=None, before=None) -> dict:
    node = resolve(tree, path, follow=False)
    out = {"kind": node.kind, "node_name": node.name}
    parts = nspath.parts(path)
    in_rp = tree.kind != "repository" or len(parts) >= 2
    out["zip_ok"] = in_rp  # a whole VM or repository is not one download
    if node.kind == "dir":
        listing = page_of(node, detail=True, after=after, before=before, limit=PAGE_SIZE)
        out.update(entries=listing["entries"], total=listing["total"], first=listing["first"],
                   next=listing["next"], previous=listing["previous"])
        rp_root = tree.kind == "repository" and len(parts) == 2
        if rp_root or (len(parts) >= 2 and parts[-2] == "volumes"):  # what it is, folded
            out["info"] = _safe_info(node)
    elif node.kind == "symlink":
        out["info"] = _safe_info(node)
        out["target"] = node.readlink()
        out["target_path"] = link_target(path, out["target"])
    else:
        out["info"] = _safe_info(node)
        out["history"] = tree.kind == "repository" and len(parts) >= 4
        out.update(_preview(node))
    return out


def _safe_info(node) -> dict:
    try:
        return node.info()
    except RpfsError as e:
        return {"error": str(e)}


def _preview(node) -> dict:
    """``preview_text`` for text, ``preview_image`` for a PNG/JPEG/GIF/BMP/WebP, or neither."""
    try:
        stream = node.open()
        head = stream.read(0, min(PREVIEW_BYTES, stream.size))
    except RpfsError as e:
        return {"preview_error": str(e)}
    if api.image_type(head):
        return {"preview_image": True}
    text = decode_text(head, complete=stream.size <= PREVIEW_BYTES)
    if text is None:
        return {}
    return {"preview_text": text, "preview_cut": stream.size > PREVIEW_BYTES}


def decode_text(data: bytes, complete: bool = True) -> str | None:
    """``data`` as text if it is text (UTF-8, or UTF-16 with a BOM), else None. When the
    preview cut the file, a character cut at the end does not make it binary."""
    if not data:
        return None
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = data[: len(data) // 2 * 2].decode("utf-16", "replace")
    else:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            if complete or e.start < len(data) - 3:
                return None
            text = data[: e.start].decode("utf-8")
    controls = sum(1 for c in text if ord(c) < 32 and c not in "\t\n\r\f")
    return text if controls <= len(text) // 100 else None


# -- search and versions ------------------------------------------------------------------


async def search(request: Request):
    q = query(request)
    pattern = q.get("pattern", "")
    vm = q.get("vm") or None
    results, truncated = [], False
    if pattern:
        results, truncated = await in_thread(api.find, request.app.state.tree, pattern,
                                             SEARCH_LIMIT, vm=vm, type=q.get("type") or None)
    for r in results:
        r["href"] = "".join(f"/{x}" for x in (r["vm"], r["recovery_point"]) if x) + \
            f"/volumes/{r['volume']}{r['path']}"
    return page(request, "search.html", title=f"search {pattern} — rpfs", pattern=pattern,
                vm=vm or "", results=results, truncated=truncated, limit=SEARCH_LIMIT)


async def history(request: Request):
    tree = request.app.state.tree
    path = clean_path(request.path_params.get("path", ""))
    parts = nspath.parts(path)
    result = await in_thread(queries.file_history, tree, path)
    inner = "/".join(parts[2:])
    rest = "/".join(parts[4:])   # the path inside the volume

    def link(rp: str) -> str:
        rp_name, sep, store = rp.partition("/")   # <rp>/<volume>.vss/<time>: a shadow copy
        return f"/{parts[0]}/{rp_name}/volumes/{store}/{rest}" if sep else f"/{parts[0]}/{rp}/{inner}"
    for v in result["versions"]:
        v["links"] = [(rp, link(rp)) for rp in v["recovery_points"]]
    return page(request, "history.html", title=f"versions of {parts[-1]} — rpfs", path=path,
                crumbs=crumbs(path), vm=parts[0], inner=inner, versions=result["versions"],
                absent=result["absent"])


def error_page(request: Request, error: Exception, status: int):
    message = (str(error) if isinstance(error, RpfsError)
               else "internal error (see the server's log)")
    return page(request, "error.html", status=status, title="error — rpfs", message=message,
                missing=isinstance(error, NotFoundError))
