"""Small NTFS volumes for the reader's own feature tests, made with mkntfs + ntfs-3g
(reparse tags, odd names, case, times, security, compression); tests/test_ntfs_images.py
reads them back.

The shared fixture factory (tools.fixtures) covers the broad trees; these images cover what
it does not ask ntfs-3g for. Each image is cached under .cache/ntfs_reader/ keyed by the hash
of this file's builder source, and its manifest records what was put in.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import random
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path

from ntfs_reader import names
from tools.fixtures.ntfs import mounted

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "ntfs_reader"
NT_EPOCH = 116_444_736_000_000_000

TAG_SYMLINK = 0xA000000C
TAG_JUNCTION = 0xA0000003


def run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, **kw)
    if r.returncode:
        raise RuntimeError(f"{cmd} failed: {r.stderr[-2000:]!r}")
    return r.stdout


def link_buffer(kind: str, target: str, relative: bool = False) -> bytes:
    """A symlink/junction REPARSE_DATA_BUFFER ([MS-FSCC] 2.1.2.4/2.1.2.5)."""
    sub = target.encode("utf-16-le")
    prn = (target[4:] if target.startswith("\\??\\") else target).encode("utf-16-le")
    if kind == "symlink":
        buf = prn + sub
        body = struct.pack("<HHHHI", len(prn), len(sub), 0, len(prn), 1 if relative else 0) + buf
        return struct.pack("<IHH", TAG_SYMLINK, len(body), 0) + body
    buf = sub + b"\0\0" + prn + b"\0\0"
    body = struct.pack("<HHHH", 0, len(sub), len(sub) + 2, len(prn)) + buf
    return struct.pack("<IHH", TAG_JUNCTION, len(body), 0) + body


def tag_buffer(tag: int, data: bytes) -> bytes:
    return struct.pack("<IHH", tag, len(data), 0) + data


def _rand(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _text(n: int, seed: int) -> bytes:
    r = random.Random(seed)
    words = b"alpha beta gamma delta volume cluster record index stream sector".split()
    out = bytearray()
    while len(out) < n:
        out += r.choice(words) + b" "
    return bytes(out[:n])


def _set_times(p: str, created: int, modified: int, accessed: int, changed: int) -> None:
    os.setxattr(p, "system.ntfs_times", struct.pack("<qqqq", created, modified, accessed,
                                                    changed), follow_symlinks=False)


def populate_features(m: str, man: dict) -> None:
    """The feature tree. Every path is recorded in ``man['entries']`` as it is made."""
    E = man["entries"]

    def f(path, data, **extra):
        with open(m + path, "wb") as fh:
            fh.write(data)
        E[path] = {"type": "file", "size": len(data),
                   "sha256": hashlib.sha256(data).hexdigest(), **extra}

    def d(path):
        os.mkdir(m + path)
        E[path] = {"type": "dir"}

    f("/hello.txt", b"hello, world\n")
    f("/empty", b"")
    d("/dir")
    d("/dir/sub")
    d("/dir/sub/deep")
    f("/dir/sub/deep/file.bin", _rand(100_000, 1))
    f("/MixedCase.TXT", b"mixed")
    f("/posix", b"lower")
    f("/POSIX", b"upper")              # case-distinct POSIX names in one directory
    f("/caf\u00e9 \u65e5\u672c \U0001F600.txt", b"unicode")
    man["surrogate_raw"] = "sur\ud800x"   # unpaired high surrogate
    fd = os.open(m.encode() + b"/sur\xed\xa0\x80x", os.O_CREAT | os.O_WRONLY)
    os.write(fd, b"surrogate")
    os.close(fd)
    long = "\u65e5" * 255
    f("/" + long, b"long name")
    man["long_name"] = long
    f("/streams.txt", b"main")
    for name, data in (("one", b"first stream"), ("big", _rand(70_000, 2)), ("empty", b"")):
        with open(f"{m}/streams.txt:{name}", "wb") as fh:
            fh.write(data)
        E["/streams.txt"].setdefault("ads", {})[name] = {
            "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    with open(f"{m}/dir:dirstream", "wb") as fh:
        fh.write(b"on a directory")
    E["/dir"]["ads"] = {"dirstream": {"size": 14,
                                      "sha256": hashlib.sha256(b"on a directory").hexdigest()}}
    f("/links/a", b"hard linked") if os.path.isdir(m + "/links") else (d("/links"), f("/links/a", b"hard linked"))
    os.link(m + "/links/a", m + "/links/b")
    os.link(m + "/links/a", m + "/dir/c")
    E["/links/b"] = dict(E["/links/a"])
    E["/dir/c"] = dict(E["/links/a"])
    man["hardlinks"] = [["/links/a", "/links/b", "/dir/c"]]
    # sparse: islands of data in 8 MiB
    sp = bytearray(8 << 20)
    with open(m + "/sparse.bin", "wb") as fh:
        for off, seed in ((0, 3), (3 << 20, 4), ((8 << 20) - 5000, 5)):
            chunk = _rand(5000, seed)
            fh.seek(off)
            fh.write(chunk)
            sp[off:off + 5000] = chunk
    E["/sparse.bin"] = {"type": "file", "size": len(sp), "sha256": hashlib.sha256(sp).hexdigest()}
    # compressed directory: everything written in it is LZNT1-compressed by ntfs-3g
    d("/packed")
    attrib = int.from_bytes(os.getxattr(m + "/packed", "system.ntfs_attrib"), "little")
    os.setxattr(m + "/packed", "system.ntfs_attrib", (attrib | 0x800).to_bytes(4, "little"))
    f("/packed/text.txt", _text(300_000, 6))
    f("/packed/random.bin", _rand(100_000, 7))
    with open(m + "/packed/holes.bin", "wb") as fh:
        hb = bytearray(400_000)
        t = _text(20_000, 8)
        fh.seek(200_000)
        fh.write(t)
        hb[200_000:220_000] = t
        fh.truncate(len(hb))
    E["/packed/holes.bin"] = {"type": "file", "size": len(hb),
                              "sha256": hashlib.sha256(hb).hexdigest()}
    # fragmented: two files written alternately, 64 KiB at a time
    a, b = _rand(40 * 65536, 9), _rand(40 * 65536, 10)
    fa = os.open(m + "/frag_a.bin", os.O_CREAT | os.O_WRONLY)
    fb = os.open(m + "/frag_b.bin", os.O_CREAT | os.O_WRONLY)
    for i in range(40):
        os.write(fa, a[i * 65536:(i + 1) * 65536])
        os.fsync(fa)
        os.write(fb, b[i * 65536:(i + 1) * 65536])
        os.fsync(fb)
    os.close(fa)
    os.close(fb)
    for n, data in (("a", a), ("b", b)):
        E[f"/frag_{n}.bin"] = {"type": "file", "size": len(data),
                               "sha256": hashlib.sha256(data).hexdigest()}
    # a run before the previous one (negative LCN delta): fill the volume after the file,
    # free a hole before it, then let the file grow into the hole
    neg = _rand(300_000, 12)
    fillers = []
    for i in range(16):
        if i == 8:
            with open(m + "/neg.bin", "wb") as fh:
                fh.write(neg[:100_000])
        fillers.append(f"{m}/filler-{i}.bin")
        with open(fillers[-1], "wb") as fh:
            fh.write(_rand(128 << 10, 100 + i))
        os.sync()
    with open(m + "/full.bin", "wb") as fh:
        try:
            while True:
                fh.write(os.urandom(1 << 20))
                fh.flush()
        except OSError:
            pass
    for p in fillers[:8]:      # the ones written before neg.bin: holes at lower LCNs
        os.unlink(p)
    os.sync()
    with open(m + "/neg.bin", "ab") as fh:
        fh.write(neg[100_000:])
    os.unlink(m + "/full.bin")
    for p in fillers[8:]:
        os.unlink(p)
    E["/neg.bin"] = {"type": "file", "size": len(neg), "sha256": hashlib.sha256(neg).hexdigest()}
    # an active hibernation file: the volume must say so in its warnings
    f("/hiberfil.sys", b"hibr" + bytes(8188))
    # links: Windows symlinks and junctions written as reparse data, one Interix symlink
    links = {
        "/dir/sub/rel": ("symlink", "..\\..\\hello.txt", True, False, "../../hello.txt"),
        "/dir/sub/abs": ("symlink", "\\??\\C:\\DIR\\sub\\DEEP\\file.bin", False, False,
                         "../../dir/sub/deep/file.bin"),
        "/dir/junction": ("junction", "\\??\\C:\\dir\\sub", False, True, "../dir/sub"),
        "/rootjunction": ("junction", "\\??\\C:\\dir", False, True, "dir"),
        "/missing": ("junction", "\\??\\D:\\elsewhere\\x", False, True, ".NTFS-3G/D:/elsewhere/x"),
        "/volj": ("junction", "\\??\\Volume{01234567-89ab-cdef-0123-456789abcdef}\\", False,
                  True, ".NTFS-3G/Volume{01234567-89ab-cdef-0123-456789abcdef}"),
        "/dir/driverel": ("symlink", "\\dir\\sub", True, False, "../dir/sub"),
        "/dir/sub/through": ("symlink", "\\??\\C:\\ROOTJUNCTION\\Sub\\deep", False, True,
                             "../../rootjunction/Sub/deep"),
    }
    for path, (kind, target, rel, isdir, expect) in links.items():
        (os.mkdir if isdir else (lambda p: open(p, "wb").close()))(m + path)
        buf = link_buffer(kind, target, rel)
        os.setxattr(m + path, "system.ntfs_reparse_data", buf)
        E[path] = {"type": "symlink", "target": expect, "reparse_hex": buf.hex()}
    os.symlink("dir/sub/deep/file.bin", m + "/interix")
    E["/interix"] = {"type": "symlink", "target": "dir/sub/deep/file.bin"}
    # other reparse tags: contents elsewhere -> open() must refuse
    wof = struct.pack("<IIII", 1, 2, 1, 1)  # WOF v1, FILE provider, v1, LZX
    others = {"/wof.dll": (0x80000017, wof, "LZX"), "/dedup.vhdx": (0x80000013, b"\0" * 16, "Deduplication"),
              "/cloud.docx": (0x9000001A, b"\0" * 8, "cloud"), "/sis.bin": (0x80000007, b"\0" * 8, "SIS")}
    for path, (tag, data, why) in others.items():
        with open(m + path, "wb") as fh:
            fh.write(b"x" * 100)
        os.setxattr(m + path, "system.ntfs_reparse_data", tag_buffer(tag, data))
        if tag == 0x9000001A:
            at = int.from_bytes(os.getxattr(m + path, "system.ntfs_attrib"), "little")
            os.setxattr(m + path, "system.ntfs_attrib",
                        (at | 0x1000).to_bytes(4, "little"))
        E[path] = {"type": "file", "reparse_tag": tag, "unsupported": why}
    populate_wof(m, man)
    # a Win32 name with its DOS 8.3 alias, an object id, extended attributes
    f("/A long file name.text", b"has a short name")
    os.setxattr(m + "/A long file name.text", "system.ntfs_dos_name", b"ALONGF~1.TEX")
    man["dos_name"] = ["/A long file name.text", "ALONGF~1.TEX"]
    oid = bytes(range(1, 17))
    os.setxattr(m + "/hello.txt", "system.ntfs_object_id", oid)
    man["object_id"] = oid.hex()
    eas = b""
    items = [(b"FIRST.EA", b"value one"), (b"$KERNEL.X", b"\0\1\2")]
    for n, v in items:  # ntfs-3g wants every "next" offset set, the last one too
        body = struct.pack("<IBBH", 0, 0, len(n), len(v)) + n + b"\0" + v
        body += b"\0" * (-len(body) % 4)
        eas += struct.pack("<I", len(body)) + body[4:]
    os.setxattr(m + "/dir/sub/deep/file.bin", "system.ntfs_ea", eas)
    man["eas"] = {n.decode(): v.hex() for n, v in items}
    # security descriptors as ntfs-3g reads them, for an exact comparison
    man["acls"] = {p: os.getxattr(m + p, "system.ntfs_acl").hex()
                   for p in ("/hello.txt", "/dir", "/links/a", "/dir/sub/deep")}
    # times: pre-1970, far future, 100 ns resolution
    f("/old.txt", b"old")
    f("/future.txt", b"future")
    tt = {"/old.txt": (NT_EPOCH - 10**15 - 7, NT_EPOCH - 3 * 10**14 + 1, NT_EPOCH - 5, NT_EPOCH - 1),
          "/future.txt": (NT_EPOCH * 3 + 1, NT_EPOCH * 3 + 2, NT_EPOCH * 3 + 3, NT_EPOCH * 3 + 4),
          "/hello.txt": (132_000_000_000_000_001, 132_000_000_000_000_123,
                         132_000_000_000_000_456, 132_000_000_000_000_789)}
    os.sync()
    for path, (c, mo, a_, ch) in tt.items():
        _set_times(m + path, c, mo, a_, ch)
        E[path]["times"] = {"created": c, "modified": mo, "accessed": a_, "changed": ch}


def wim_resources(paths: dict[str, bytes], chunk: int,
                  method: str = "XPRESS") -> dict[str, tuple[bytes, int]]:
    """Compress files with wimlib (XPRESS Huffman or LZX in ``chunk``-byte chunks; WIM and
    WOF share both the chunk layout and these two codecs) and return each
    one's raw WIM resource (chunk table + chunks: the layout WOF's WofCompressedData uses)
    and its resource flags, found in the WIM's blob table by SHA-1."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "src")
        src.mkdir()
        for i, data in enumerate(paths.values()):
            (src / f"f{i}").write_bytes(data)
        wim = Path(tmp, "x.wim")
        run(["wimlib-imagex", "capture", src, wim, f"--compress={method}",
             f"--chunk-size={chunk}"])
        d = wim.read_bytes()
    assert d[:8] == b"MSWIM\0\0\0"

    def reshdr(off):  # size (7 bytes), flags, offset, original size
        return int.from_bytes(d[off:off + 7], "little"), d[off + 7], *struct.unpack_from("<QQ", d, off + 8)
    size, _, table, _ = reshdr(48)
    blobs = {}
    for i in range(0, size, 50):
        s, flags, off, _ = reshdr(table + i)
        blobs[d[table + i + 30:table + i + 50]] = (d[off:off + s], flags)
    return {p: blobs[hashlib.sha1(data).digest()] for p, data in paths.items()}


def populate_wof(m: str, man: dict) -> None:
    """WOF-compressed files as CompactOS leaves them: an empty sparse unnamed stream of the
    real size, the WofCompressedData stream, and the WOF reparse point (FILE provider)."""
    E = man["entries"]
    if shutil.which("wimlib-imagex") is None:  # tools/setup.sh installs wimtools
        man["wof_skipped"] = "wimlib-imagex not installed"
        return
    os.mkdir(m + "/wof")
    E["/wof"] = {"type": "dir"}
    for algo, chunk in ((0, 4096), (2, 8192), (3, 16384), (1, 32768)):
        files = {f"/wof/text-{chunk}.txt": _text(150_000 + chunk + 7, 20 + algo),
                 f"/wof/mixed-{chunk}.bin": _rand(chunk * 2, 30 + algo) + _text(chunk * 3 + 1, algo),
                 f"/wof/one-chunk-{chunk}.txt": _text(chunk // 3, 40 + algo)}
        if algo == 1:  # x86-like bytes: LZX's E8 call translation must be undone
            r = random.Random(50)
            files["/wof/calls-32768.exe"] = bytes(
                r.choice([0xE8, 0, 1, 2, 0xFF, r.randrange(256)]) for _ in range(90_000))
        res = wim_resources(files, chunk, "LZX" if algo == 1 else "XPRESS")
        for path, data in files.items():
            raw, flags = res[path]
            assert flags & 0x04, "wimlib stored it uncompressed"
            with open(m + path, "wb") as fh:
                fh.truncate(len(data))
            with open(f"{m}{path}:WofCompressedData", "wb") as fh:
                fh.write(raw)
            os.setxattr(m + path, "system.ntfs_reparse_data",
                        tag_buffer(0x80000017, struct.pack("<IIII", 1, 2, 1, algo)))
            E[path] = {"type": "file", "size": len(data), "wof": algo,
                       "sha256": hashlib.sha256(data).hexdigest(),
                       "ads": {"WofCompressedData": {
                           "size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}}}


def _builder_key(*funcs) -> str:
    h = hashlib.sha256()
    for fn in funcs:
        h.update(inspect.getsource(fn).encode())
    return h.hexdigest()[:16]


def build_image(name: str, size: int, sector: int, cluster: int, fill, label: str = "Feat") -> tuple[Path, dict]:
    """mkntfs + ntfs-3g + ``fill(mountpoint, manifest)``, cached by builder source."""
    key = _builder_key(fill, populate_features, mounted, link_buffer, build_image,
                       populate_wof, wim_resources)
    CACHE.mkdir(parents=True, exist_ok=True)
    image = CACHE / f"{name}-s{sector}-c{cluster}-{key}.img"
    manifest = image.with_suffix(".json")
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not manifest.exists():
            tmp = image.with_suffix(".tmp")
            with open(tmp, "wb") as fh:
                fh.truncate(size)
            run(["mkntfs", "-F", "-Q", "-q", "-L", label, "-s", sector, "-c", cluster, tmp])
            man = {"entries": {"/": {"type": "dir"}}, "label": label, "sector": sector,
                   "cluster": cluster}
            mnt = Path(tempfile.mkdtemp(prefix="ntfsr-"))
            try:
                with mounted(tmp, mnt):
                    fill(str(mnt), man)
            finally:
                shutil.rmtree(mnt, ignore_errors=True)
            tmp.rename(image)
            manifest.write_text(json.dumps(man))
            for old in CACHE.glob(f"{name}-s{sector}-c{cluster}-*"):
                if key not in old.name:  # built by an older version of this file
                    old.unlink()
    return image, json.loads(manifest.read_text())


def features_image(sector: int = 512, cluster: int = 4096):
    return build_image("features", 64 << 20, sector, cluster, populate_features)


def populate_mftfrag(m: str, man: dict) -> None:
    """Fill a 512-byte-cluster volume with small files, delete every other one, then create
    thousands of files: $MFT grows into the holes, ending in hundreds of runs, and its
    $DATA overflows record 0 into an extension record through an $ATTRIBUTE_LIST."""
    os.mkdir(m + "/fill")
    n = 0
    try:
        while True:
            with open(f"{m}/fill/{n:06d}", "wb") as fh:
                fh.write(_rand(6000, n))
            n += 1
    except OSError:
        pass
    os.sync()
    for i in range(0, n, 2):
        os.unlink(f"{m}/fill/{i:06d}")
    os.sync()
    os.mkdir(m + "/many")
    made = 0
    try:
        for k in range(6000):
            with open(f"{m}/many/{k:05d}", "wb") as fh:
                fh.write(b"file %d" % k)
            made = k + 1
    except OSError:
        pass
    man["fill_left"] = sorted(os.listdir(m + "/fill"))  # as ntfs-3g lists them
    man["many"] = made


def mftfrag_image():
    return build_image("mftfrag", 24 << 20, 512, 512, populate_mftfrag, "Frag")


def sha256_of(stream) -> str:
    h = hashlib.sha256()
    pos = 0
    while pos < stream.size:
        chunk = stream.read(pos, min(1 << 20, stream.size - pos))
        h.update(chunk)
        pos += len(chunk)
    return h.hexdigest()


def linux_path(path: str) -> str:
    return "/".join(names.to_linux(p) if p else p for p in path.split("/"))


ODD_NAMES = ["50%", "back\\slash", "plain.txt", "per%cent\\both", "x" * 200]


def populate_oddnames(m: str, man: dict) -> None:
    """Plain small files whose names ``safe_name`` rewrites (``%`` and ``\\``, which ntfs-3g
    stores as they are) beside names it keeps."""
    os.mkdir(m + "/odd")
    for k, name in enumerate(ODD_NAMES):
        with open(f"{m}/odd/{name}", "wb") as fh:
            fh.write(b"odd %d\n" % k * (k + 1))
    man["odd"] = ODD_NAMES


def oddnames_image():
    return build_image("oddnames", 8 << 20, 512, 4096, populate_oddnames, "Odd")
