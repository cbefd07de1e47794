"""``rpfs serve`` end to end: a real server (uvicorn) over a repository holding both states of
the fixture VM; bytes checked against the factory's manifests, zips against ``rpfs restore``,
hostile requests, the token, damage; and a real browser (Debian's chromium via Playwright)."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pytest

from streams.stream import BytesStream, ZeroStream
from rpfs.tree import StaticDir, StreamFile
from rpfs.web.api import content_disposition, parse_range
from rpfs.web.zipstream import BLOCK, zip_chunks
from tests.helpers.cli import rpfs, two_point_repo
from tests.helpers.web import start_server

RP1, RP2 = "2026-11-01T020000Z", "2026-11-02T020000Z"
VOL = "system-p3"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def repo(small_fixtures, tmp_path_factory):
    """A repository holding both states of the fixture VM."""
    return two_point_repo(small_fixtures, tmp_path_factory.mktemp("serve") / "repo")


@pytest.fixture(scope="module")
def server(repo, tmp_path_factory):
    proc, base = start_server(repo, log=tmp_path_factory.mktemp("log") / "serve.log")
    try:
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server, timeout=120) as client:
        yield client


def manifest(fx, state: int) -> dict:
    vol = fx.volumes[VOL]
    if state == 1:
        return vol.manifest["entries"]
    import json

    rel = fx.vm_changes["volumes"][VOL]["manifest_state2"]
    return json.loads((fx.root / rel).read_text())["entries"]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the JSON API ------------------------------------------------------------------------


def test_ls_lists_what_the_manifest_holds(http, small_fixtures):
    assert [e["name"] for e in http.get("/api/ls", params={"path": "/"}).json()] == ["web01"]
    rps = [e["name"] for e in http.get("/api/ls", params={"path": "/web01"}).json()]
    assert rps == [".versions", RP1, RP2, "latest"]
    entries = manifest(small_fixtures, 1)
    listed = http.get("/api/ls", params={"path": f"/web01/{RP1}/volumes/{VOL}/Users/alice/Documents"}).json()
    want = {p.rsplit("/", 1)[1]: v for p, v in entries.items()
            if p.startswith("/Users/alice/Documents/") and p.count("/") == 4}
    assert {e["name"] for e in listed} == set(want)
    for e in listed:
        assert e["type"] == "file" and e["size"] == want[e["name"]]["size"]
        assert set(e) >= {"name", "type", "size", "modified"}


@pytest.mark.parametrize("state", [1, 2])
def test_download_bytes_equal_the_manifest(http, small_fixtures, state):
    rp = RP1 if state == 1 else RP2
    entries = manifest(small_fixtures, state)
    paths = ["/Users/alice/Documents/notes.txt", "/Users/alice/Documents/report.docx",
             "/large/random-0.bin", "/sparse/islands.bin", "/unicode/emoji-😀🎉.txt",
             "/compressed/" + next(p.split("/")[2] for p in entries if p.startswith("/compressed/")
                                   and entries[p]["type"] == "file")]
    for p in paths:
        r = http.get("/api/download", params={"path": f"/web01/{rp}/volumes/{VOL}{p}"})
        assert r.status_code == 200, (p, r.text)
        assert sha(r.content) == entries[p]["sha256"], p
        assert int(r.headers["content-length"]) == entries[p]["size"]
        assert r.headers["content-type"] == "application/octet-stream"
    # an alternate data stream, as the CLI names it
    ads = entries["/ProgramData/Contoso/with-ads.txt"]["ads"]["bigger"]
    r = http.get("/api/download", params={"path": f"/web01/{rp}/volumes/{VOL}/ProgramData/Contoso/with-ads.txt:bigger"})
    assert sha(r.content) == ads["sha256"]


def test_range_requests(http, small_fixtures):
    entries = manifest(small_fixtures, 1)
    path = f"/web01/{RP1}/volumes/{VOL}/large/random-0.bin"
    whole = http.get("/api/download", params={"path": path}).content
    size = entries["/large/random-0.bin"]["size"]
    assert len(whole) == size
    cases = {"bytes=0-0": (0, 1), "bytes=100-2000000": (100, 2000001), "bytes=-10": (size - 10, size),
             f"bytes={size - 5}-": (size - 5, size), f"bytes=10-{size * 2}": (10, size)}
    for header, (start, end) in cases.items():
        r = http.get("/api/download", params={"path": path}, headers={"Range": header})
        assert r.status_code == 206, header
        assert r.content == whole[start:end], header
        assert r.headers["content-range"] == f"bytes {start}-{end - 1}/{size}"
    for header in ("bytes=5-1", "items=0-1", "bytes=0-1,5-6", "bytes=x-y"):  # ignored: all of it
        r = http.get("/api/download", params={"path": path}, headers={"Range": header})
        assert r.status_code == 200 and len(r.content) == size, header
    r = http.get("/api/download", params={"path": path}, headers={"Range": f"bytes={size}-"})
    assert r.status_code == 416 and r.headers["content-range"] == f"bytes */{size}"
    etag = r.headers["etag"]
    r = http.get("/api/download", params={"path": path}, headers={"Range": "bytes=0-9", "If-Range": etag})
    assert r.status_code == 206 and r.content == whole[:10]
    r = http.get("/api/download", params={"path": path}, headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert r.status_code == 200 and len(r.content) == size
    r = http.head("/api/download", params={"path": path})
    assert r.status_code == 200 and int(r.headers["content-length"]) == size and r.content == b""


def test_downloads_run_side_by_side(server, small_fixtures):
    """A download that waits on its client holds up nothing: other requests and four more
    downloads of the same file (sharing the tree's caches) complete meanwhile."""
    import concurrent.futures

    path = f"/web01/{RP1}/volumes/{VOL}/large/random-0.bin"
    want = manifest(small_fixtures, 1)["/large/random-0.bin"]["sha256"]
    with httpx.Client(base_url=server, timeout=120) as slow, \
            slow.stream("GET", "/api/download", params={"path": f"/web01/{RP1}/disks/system.raw"}) as held:
        first = next(held.iter_raw())  # then leave it waiting
        assert first

        def fetch(_):
            return sha(httpx.get(server + "/api/download", params={"path": path}, timeout=120).content)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert list(pool.map(fetch, range(4))) == [want] * 4
        assert httpx.get(server + "/api/ls", params={"path": "/web01"}, timeout=120).status_code == 200


def test_find_and_history_follow_the_changes(http, small_fixtures):
    changes = small_fixtures.vm_changes["volumes"][VOL]
    # from the metadata index the backups built (rpfs.index)
    found = http.get("/api/find", params={"pattern": "/Users/alice/Documents/new-*.docx"}).json()["results"]
    assert [(f["recovery_point"], f["path"]) for f in found] == [(RP2, "/Users/alice/Documents/new-report.docx")]
    assert found[0]["vm"] == "web01" and found[0]["volume"] == VOL and found[0]["type"] == "file"
    found = http.get("/api/find", params={"pattern": "/Program Files (x86)/*/LEGACY.dll",
                                          "vm": "web01"}).json()["results"]
    assert [f["recovery_point"] for f in found] == [RP1]  # deleted in the second state
    r = http.get("/api/find", params={"pattern": "/Users/**.txt", "limit": "3"}).json()
    assert len(r["results"]) == 3 and r["truncated"] is True

    e1, e2 = manifest(small_fixtures, 1), manifest(small_fixtures, 2)
    modified = changes["modified"][0]
    h = http.get("/api/history", params={"path": f"/web01/latest/volumes/{VOL}{modified}"}).json()
    assert [v["recovery_points"] for v in h["versions"]] == [[RP1], [RP2]]
    assert [v["size"] for v in h["versions"]] == [e1[modified]["size"], e2[modified]["size"]]
    assert h["absent"] == []
    added = changes["added"][0]
    h = http.get("/api/history", params={"path": f"/web01/{RP2}/volumes/{VOL}{added}"}).json()
    assert [v["recovery_points"] for v in h["versions"]] == [[RP2]] and h["absent"] == [RP1]
    same = "/Users/alice/Documents/report.docx"
    h = http.get("/api/history", params={"path": f"/web01/{RP1}/volumes/{VOL}{same}"}).json()
    assert [v["recovery_points"] for v in h["versions"]] == [[RP1, RP2]]


def test_errors_are_json_with_the_cli_line(http, repo):
    path = f"/web01/{RP1}/volumes/{VOL}/no/such/file.txt"
    r = http.get("/api/download", params={"path": path})
    cli = rpfs("cat", repo, path, check=False).stderr.decode().strip()
    assert r.status_code == 404 and cli == "rpfs: " + r.json()["error"]
    r = http.get("/api/download", params={"path": f"/web01/{RP1}/volumes"})
    assert r.status_code == 400 and "is a directory" in r.json()["error"]
    r = http.get("/api/history", params={"path": f"/web01/{RP1}/volumes"})
    assert r.status_code == 400
    r = http.get("/api/find", params={"pattern": "(", "regex": "1"})
    assert r.status_code == 400 and r.json()["error"].startswith("--regex '(':")


# -- zips ----------------------------------------------------------------------------------


SELECTION = ["ProgramData", "Users", "links", "unicode", "streams", "manylinks", "compressed",
             "sparse", "case", "empty", "times", "long"]


def test_zip_unpacks_identical_to_restore(http, repo, tmp_path):
    if not shutil.which("unzip"):
        pytest.skip("unzip (Info-ZIP) is not installed")
    base = f"/web01/{RP1}/volumes/{VOL}"
    r = http.get("/api/download", params=[("format", "zip")] + [("path", f"{base}/{n}") for n in SELECTION])
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert "transfer-encoding" in r.headers  # streamed while it was built: no length known ahead
    (tmp_path / "sel.zip").write_bytes(r.content)
    unzipped, restored = tmp_path / "unzipped", tmp_path / "restored"
    unzipped.mkdir()
    u = subprocess.run(["unzip", "-q", str(tmp_path / "sel.zip"), "-d", str(unzipped)],
                       capture_output=True, text=True, env={**os.environ, "TZ": "UTC"})
    assert u.returncode == 0, u.stderr
    for name in SELECTION:
        rpfs("restore", repo, f"{base}/{name}", restored)
    a, b = tree_of(unzipped), tree_of(restored)
    assert a.keys() == b.keys()
    for rel, (kind, content, mtime) in b.items():
        assert a[rel][:2] == (kind, content), rel
        # zip keeps times from 1980 to 2038, to the second; unzip sets no time on a symlink
        if kind != "symlink" and 315532800 <= mtime < (1 << 31):
            assert a[rel][2] == mtime, rel
    assert len(a) > 150


def tree_of(root: Path) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("symlink", os.readlink(p), st.st_mtime_ns // 10**9)
            elif p.is_dir():
                out[rel] = ("dir", None, st.st_mtime_ns // 10**9)
            else:
                out[rel] = ("file", sha(p.read_bytes()), st.st_mtime_ns // 10**9)
    return out


def test_zip_of_a_huge_file_is_zip64_in_bounded_memory(tmp_path):
    """A 4 GiB + 1 MiB file (zeros, so the zip can be kept as a sparse file) needs ZIP64; the
    zip leaves block by block, never holding more than one block of the file."""
    size = (4 << 30) + (1 << 20)
    big = StreamFile("big.bin", ("big",), size, lambda: ZeroStream(size), 1_700_000_000 * 10**9)
    folder = StaticDir("folder", ("folder",), lambda: [big], 1_700_000_000 * 10**9)
    out = tmp_path / "big.zip"
    largest = 0
    with open(out, "wb") as f:
        for chunk in zip_chunks([("folder", folder)]):
            largest = max(largest, len(chunk))
            if chunk == bytes(len(chunk)):
                f.seek(len(chunk), os.SEEK_CUR)  # zeros: leave a hole
            else:
                f.write(chunk)
        f.truncate()
    assert largest <= BLOCK + 4096
    with zipfile.ZipFile(out) as zf:
        info = zf.getinfo("folder/big.bin")
        assert info.file_size == size and info.date_time[:3] == (2023, 11, 14)
        assert int.from_bytes(info.extra[:2], "little") in (0x0001, 0x5455)
    with open(out, "rb") as f:
        f.seek(-200, os.SEEK_END)
        assert b"PK\x06\x06" in f.read()  # the ZIP64 end of central directory record


def test_zip_names_stay_unique_and_never_under_a_link():
    """Names that U+FFFD used to merge stay apart (their bytes as %XX), a name equal but for
    case to a symlink's gets " (2)" (so does a second selection of the same name); names are
    cut to 255 bytes and stay distinct; backslashes and % are escaped."""
    from rpfs.node import Symlink
    from rpfs.web.zipstream import zip_name

    t = 1_700_000_000 * 10**9
    payload = StreamFile("payload.txt", ("p",), 2, lambda: BytesStream(b"hi"), t)
    inner = lambda key: StaticDir("\udced\udca0\udc81", (key,), lambda: [payload], t)  # noqa
    long_a, long_b = "\udced\udca0\udc80" * 90 + "a", "\udced\udca0\udc80" * 90 + "b"
    children = [Symlink("\udced\udca0\udc80", ("l1",), "../../outside", t), inner("d1"),
                Symlink("Same", ("l2",), "../../outside", t),
                StaticDir("same", ("d2",), lambda: [payload], t),
                StreamFile("a\\..\\..\\evil.txt", ("f1",), 2, lambda: BytesStream(b"hi"), t),
                StreamFile("%5C", ("f2",), 2, lambda: BytesStream(b"hi"), t),
                StreamFile(long_a, ("f3",), 2, lambda: BytesStream(b"hi"), t),
                StreamFile(long_b, ("f4",), 2, lambda: BytesStream(b"hi"), t)]
    folder = StaticDir("z", ("z",), lambda: children, t)
    data = b"".join(zip_chunks([("z", folder), ("z", folder)]))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        infos = zf.infolist()
        assert zf.testzip() is None
    names = [i.filename for i in infos]
    assert len(names) == len(set(names)) == 2 * 11
    links = [i.filename for i in infos if (i.external_attr >> 16) & 0o170000 == 0o120000]
    assert sorted(links) == ["z (2)/%ED%A0%80", "z (2)/Same", "z/%ED%A0%80", "z/Same"]
    for link in links:
        assert not [n for n in names if n.casefold().startswith(link.casefold() + "/")], link
    assert {"z/%ED%A0%81/payload.txt", "z/same (2)/payload.txt",
            "z/a%5C..%5C..%5Cevil.txt", "z/%255C"} <= set(names)
    assert all(len(n.rsplit("/", 1)[-1].encode()) <= 255 for n in names)
    assert zip_name(long_a) != zip_name(long_b)


# -- safety ----------------------------------------------------------------------------------


def test_hostile_paths_get_4xx(http):
    for path in ["/../../../etc/passwd", "/web01/../../etc/passwd", "../etc/passwd",
                 "/web01/latest/volumes/system-p3/../../../../../../etc/passwd",
                 "/web01/%2e%2e/%2e%2e/etc/passwd", "a\x00b", "/" + "x/" * 5000]:
        for url in ("/api/ls", "/api/download", "/api/history"):
            r = http.get(url, params={"path": path})
            assert 400 <= r.status_code < 500, (url, path, r.status_code)
            assert "root:" not in r.text and r.headers["content-type"] == "application/json"
        r = http.get("/browse/" + path.lstrip("/").replace("\x00", "%00"))
        assert 400 <= r.status_code < 500, path
    assert http.post("/api/ls", params={"path": "/"}).status_code == 405
    assert http.request("DELETE", "/browse/web01").status_code == 405


def test_hostile_headers_get_4xx(server):
    host, port = server.removeprefix("http://").rsplit(":", 1)
    close = b"Connection: close\r\n"
    requests = [
        b"GET /api/ls?path=/ HTTP/1.1\r\nHost: evil.example\r\n" + close,  # DNS rebinding
        b"GET /api/ls?path=/ HTTP/1.1\r\nHost: 127.0.0.1.evil.example\r\n" + close,
        b"GET /api/ls?path=/ HTTP/1.1\r\n" + close,  # no Host
        b"GET /api/ls?path=/\r\nX: y HTTP/1.1\r\nHost: 127.0.0.1\r\n" + close,
        b"GET /api/download?path=/web01/latest/x%0d%0aSet-Cookie:%20a=b HTTP/1.1\r\n"
        b"Host: 127.0.0.1\r\n" + close,
    ]
    for raw in requests:
        with socket.create_connection((host, int(port)), timeout=30) as s:
            s.sendall(raw + b"\r\n")
            answer = b""
            while chunk := s.recv(65536):
                answer += chunk
        head = answer.split(b"\r\n\r\n", 1)[0]
        status = int(head.split(b" ", 2)[1])
        assert 400 <= status < 500, (raw[:60], head)
        assert b"set-cookie" not in head.lower()


def test_content_disposition_cannot_inject_headers():
    h = content_disposition('evil"\r\nSet-Cookie: a=b; x=\u00e9t\u00e9.txt')
    assert "\r" not in h and "\n" not in h and h.isascii()
    assert h == ('attachment; filename="evil___Set-Cookie: a=b_ x=_t_.txt"; '
                 "filename*=UTF-8''evil%22%0D%0ASet-Cookie%3A%20a%3Db%3B%20x%3D%C3%A9t%C3%A9.txt")
    with pytest.raises(ValueError):  # an empty file has no satisfiable range
        parse_range("bytes=0-", 0)


def test_every_response_has_a_strict_csp(http):
    for url in ("/", "/vm/web01", f"/browse/web01/{RP1}", "/api/ls?path=/", "/static/rpfs.css",
                "/api/ls?path=/nope", "/search?pattern=/Users/x*"):
        r = http.get(url, follow_redirects=False)
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp and "unsafe" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"


def test_a_token_is_asked_for_once(repo, tmp_path):
    token = "s3cret-token-0123456789"
    (tmp_path / "token").write_text(token + "\n")
    proc, base = start_server(repo, "--token-file", tmp_path / "token", log=tmp_path / "log")
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            r = c.get("/api/ls", params={"path": "/"})
            assert r.status_code == 403 and "token" in r.json()["error"]
            r = c.get("/vm/web01")
            assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fvm%2Fweb01"
            r = c.post("/login", data={"token": "wrong", "next": "/vm/web01"})
            assert r.status_code == 403 and "set-cookie" not in r.headers
            r = c.post("/login", data={"token": token, "next": "//evil.example/"})
            assert r.status_code == 303 and r.headers["location"] == "/"  # never elsewhere
            assert "httponly" in r.headers["set-cookie"].lower()
            assert c.get("/vm/web01").status_code == 200  # the cookie carries it from now on
            assert c.get("/api/ls", params={"path": "/"}).json()[0]["name"] == "web01"
        r = httpx.get(base + "/api/ls", params={"path": "/"}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_serve_refuses_an_open_address_without_a_token(repo, tmp_path):
    r = rpfs("serve", repo, "--listen", "0.0.0.0:0", check=False)
    err = r.stderr.decode()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and "--token-file" in err
    short = tmp_path / "token"
    short.write_text("abc\n")
    r = rpfs("serve", repo, "--listen", "127.0.0.1:0", "--token-file", short, check=False)
    assert r.returncode == 2 and "at least 16" in r.stderr.decode()
    r = rpfs("serve", repo, "--listen", "nonsense", check=False)
    assert r.returncode == 2 and "HOST:PORT" in r.stderr.decode()


def test_damage_is_500_for_that_object_only(small_fixtures, tmp_path):
    vm = tmp_path / "vm"
    shutil.copytree(small_fixtures.vm_states[0], vm)
    with open(vm / "Virtual Hard Disks" / "data.vhdx", "r+b") as f:
        for off in (64 << 10, 128 << 10, 192 << 10, 256 << 10):
            f.seek(off)
            f.write(os.urandom(4096))
    proc, base = start_server(vm, log=tmp_path / "log")
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            r = c.get("/api/download", params={"path": "/disks/data.raw"})
            assert r.status_code == 500 and "data.vhdx" in r.json()["error"]
            assert len(r.json()["error"].splitlines()) == 1
            assert c.get("/api/ls", params={"path": "/volumes/system-p3/Users"}).status_code == 200
            r = c.get("/browse/disks/data.raw")  # the page says why
            assert r.status_code == 200 and "data.vhdx" in r.text
            r = c.get("/api/download", params=[("format", "zip"), ("path", "/disks/data.raw"),
                                               ("path", "/volumes/system-p3/empty")])
            with zipfile.ZipFile(io.BytesIO(r.content)) as zf:  # the rest, and what is missing
                assert "empty/empty.txt" in zf.namelist() and "data.raw" not in zf.namelist()
                assert "data.vhdx" in zf.read("rpfs-errors.txt").decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert "Traceback" not in (tmp_path / "log").read_text()


def test_a_folder_source_previews_and_names(tmp_path):
    """A folder (no repository) opens at its tree; text and images are previewed, other bytes
    are not; a file name holding a quote and CR/LF reaches no header."""
    folder = tmp_path / "vm"
    (folder / "docs").mkdir(parents=True)
    picture = Path(__file__).resolve().parent.parent / "docs" / "screenshots" / "calendar.png"
    shutil.copy(picture, folder / "docs" / "picture.png")
    (folder / "docs" / "notes.txt").write_text("first line\nsecond <b>line</b>\n")
    (folder / "docs" / "random.bin").write_bytes(os.urandom(70000))
    hostile = 'say "hi"\r\nSet-Cookie: a=b.txt'
    (folder / "docs" / hostile).write_bytes(b"hello")
    proc, base = start_server(folder, log=tmp_path / "log")
    try:
        with httpx.Client(base_url=base, timeout=60) as c:
            r = c.get("/")
            assert r.status_code == 303 and r.headers["location"] == "/browse/"
            page = c.get("/browse/files/docs/picture.png").text
            assert '<img class="preview" src="/api/download?inline=1&amp;path=/files/docs/picture.png"' in page
            r = c.get("/api/download", params={"path": "/files/docs/picture.png", "inline": "1"})
            assert r.headers["content-type"] == "image/png" and r.headers["content-disposition"].startswith("inline;")
            assert r.content == picture.read_bytes()
            page = c.get("/browse/files/docs/notes.txt").text
            assert '<pre class="preview">first line\nsecond &lt;b&gt;line&lt;/b&gt;' in page  # escaped
            r = c.get("/api/download", params={"path": "/files/docs/notes.txt", "inline": "1"})
            assert r.headers["content-type"] == "application/octet-stream"  # never text/html
            assert r.headers["content-disposition"].startswith("attachment;")
            assert "preview" not in c.get("/browse/files/docs/random.bin").text.split("<main>")[1]
            r = c.get("/api/download", params={"path": f"/files/docs/{hostile}"})
            assert r.status_code == 200 and r.content == b"hello"
            assert "set-cookie" not in r.headers
            assert r.headers["content-disposition"] == (
                'attachment; filename="say _hi___Set-Cookie: a=b.txt"; '
                "filename*=UTF-8''say%20%22hi%22%0D%0ASet-Cookie%3A%20a%3Db.txt")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_damage_found_midway_cuts_the_download(small_fixtures, tmp_path):
    """A stored chunk that fails its hash after the response started: the connection closes
    short (never a complete-looking wrong file), the server logs one line and goes on."""
    from rpfs.store import Repository

    repo = tmp_path / "repo"
    rpfs("init", repo)
    rpfs("backup", repo, small_fixtures.vm_states[0], "--vm", "web01", "--time", "2026-11-01T02:00:00Z")
    stored = "Virtual Hard Disks/system.vhdx"
    with Repository.open(repo) as r:
        f = r.open_file(r.recovery_point("web01", RP1), stored)
        index = next(i for i, cid in enumerate(f.ids) if cid and i >= 2)
        loc = f.locs[f.ids[index]]
        size = f.size
    with open(repo / "packs" / loc.pack[:2] / f"{loc.pack}.pack", "r+b") as pack:
        pack.seek(loc.offset + loc.csize // 2)
        byte = pack.read(1)[0]
        pack.seek(loc.offset + loc.csize // 2)
        pack.write(bytes([byte ^ 0xFF]))
    proc, base = start_server(repo, log=tmp_path / "log")
    try:
        got = 0
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("GET", base + "/api/download", timeout=60,
                              params={"path": f"/web01/{RP1}/files/{stored}"}) as r:
                assert r.status_code == 200 and int(r.headers["content-length"]) == size
                for block in r.iter_raw():
                    got += len(block)
        assert got < size
        assert httpx.get(base + "/api/ls", params={"path": "/web01"}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    log = (tmp_path / "log").read_text()
    assert "Traceback" not in log and "system.vhdx" in log


# -- a real browser --------------------------------------------------------------------------


def test_in_a_real_browser(server, small_fixtures, tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.skip("chromium (Debian package) is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    shots = Path(os.environ.get("RPFS_SCREENSHOTS") or tmp_path / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    e1 = manifest(small_fixtures, 1)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 760}, accept_downloads=True)
            problems = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.goto(server + "/")
            assert page.url.endswith("/vm/web01")  # one VM: straight to its calendar
            assert page.locator(".calendar td.selected").inner_text().strip() == "2"  # newest
            page.screenshot(path=str(shots / "calendar.png"))

            page.click("a[data-day='2026-11-01']")
            page.click(".rp a.rp-link")
            assert page.url.endswith(f"/browse/web01/{RP1}")
            for name in ("volumes", VOL, "Users", "alice", "Documents"):
                page.click(f"#entries a:text-is('{name}')")
            assert page.locator(".crumbs").inner_text().split(" / ")[-1] == "Documents"
            page.screenshot(path=str(shots / "browse.png"))

            with page.expect_download() as dl:
                page.click("#download-folder")
            folder_zip = dl.value.path()
            with zipfile.ZipFile(folder_zip) as zf:
                names = {n for n in zf.namelist() if not n.endswith("/")}
                want = {p[len("/Users/alice/"):] for p, v in e1.items()
                        if p.startswith("/Users/alice/Documents/") and v["type"] == "file"}
                assert names == want
                for n in names:
                    assert sha(zf.read(n)) == e1["/Users/alice/" + n]["sha256"]

            page.check("#entries input[value$='/notes.txt']")
            page.check("#entries input[value$='/report.docx']")
            with page.expect_download() as dl:
                page.click("#download-selection")
            with zipfile.ZipFile(dl.value.path()) as zf:
                assert sorted(zf.namelist()) == ["notes.txt", "report.docx"]

            page.click("#entries a:text-is('notes.txt')")
            page.screenshot(path=str(shots / "file.png"))
            with page.expect_download() as dl:
                page.click("#download-file")
            assert dl.value.suggested_filename == "notes.txt"
            data = Path(dl.value.path()).read_bytes()
            assert sha(data) == e1["/Users/alice/Documents/notes.txt"]["sha256"]
            first_line = data.decode().splitlines()[0]
            assert page.locator("pre.preview").inner_text().startswith(first_line)
            page.click("#versions")
            page.wait_for_url("**/history/**")  # count only once the versions page is there
            assert page.locator("#versions tbody tr").count() == 2
            page.screenshot(path=str(shots / "versions.png"))

            page.fill("header input[name=pattern]", "/Users/**/report.docx")
            page.press("header input[name=pattern]", "Enter")
            rows = page.locator("#results tbody tr")
            assert rows.count() == 4  # alice's and bob's, in both recovery points
            page.screenshot(path=str(shots / "search.png"))
            rows.first.locator("td.name a").click()
            assert page.locator("h1").inner_text() == "report.docx"
            assert problems == []
        finally:
            browser.close()
    assert {p.name for p in shots.iterdir()} >= {"calendar.png", "browse.png", "file.png", "search.png"}
