"""Native XPRESS Huffman / LZX decoders (ntfs_reader._wofdecomp) against real WOF data.

The fixture: wimlib compresses varied files (text, programs from /usr/bin, random, zeros,
sizes that are not a multiple of the chunk, many chunks, one byte, empty) with XPRESS in
4/8/16 KiB chunks and LZX in 32 KiB chunks; WIM resources have the chunk table + chunks
layout WOF uses, so each is written as a file's WofCompressedData stream with the WOF
reparse point, through ntfs-3g, into an NTFS image cached under .cache/wofnative/. Every
file must read back exactly through ntfs_reader with the native decoders and with the
Python twins, and each chunk must decode the same with both. Hypothesis then feeds
bit-flipped, truncated, spliced and random chunks to both: same bytes, or the same
FormatError (message, structure, offset).

Sanitizers, by hand (2026-11-24: this file plus 80,000 mutated chunks, clean): build
_wofdecomp.c with ``-O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined``
into a copy of the ntfs_reader package, and run pytest from a ``python -c`` that imports
that copy first, with ``LD_PRELOAD="$(gcc -print-file-name=libasan.so)
$(gcc -print-file-name=libubsan.so)" ASAN_OPTIONS=detect_leaks=0``.
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
import sys
import tempfile
import threading
import warnings
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ntfs_reader import Volume, lzx, wof, xpress
from streams.errors import FormatError
from streams.stream import FileStream

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.helpers.ntfs_images import mounted, run, tag_buffer, wim_resources  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "wofnative"
# WOF algorithm number -> (chunk size, wimlib method)
ALGOS = {0: (4096, "XPRESS"), 2: (8192, "XPRESS"), 3: (16384, "XPRESS"), 1: (32768, "LZX")}
ALGO_IDS = {0: "xpress4k", 2: "xpress8k", 3: "xpress16k", 1: "lzx"}

needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("mkntfs", "ntfs-3g", "wimlib-imagex"))
    or not os.path.exists("/dev/fuse"), reason="needs mkntfs, ntfs-3g (FUSE) and wimlib")
needs_native = pytest.mark.skipif(not xpress.NATIVE, reason="_wofdecomp not built")


# ---------------------------------------------------------------- contents

def _text(rng: random.Random, n: int) -> bytes:
    words = [bytes(rng.choices(b"etaoinshrdlcumwfgypbvk", k=rng.randint(1, 9)))
             for _ in range(400)]
    out = bytearray()
    while len(out) < n:
        out += b" ".join(rng.choices(words, k=12)) + b"\n"
    return bytes(out[:n])


def usr_programs(limit: int, min_size: int = 200_000, max_size: int = 3 << 20) -> list[Path]:
    """Real x86 programs and libraries (E8 calls for LZX), in a fixed order, up to ``limit``
    bytes in total."""
    out, total = [], 0
    for d in ("/usr/bin", "/usr/lib/x86_64-linux-gnu"):
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            p = Path(d, name)
            if p.is_symlink() or not p.is_file():
                continue
            size = p.stat().st_size
            if min_size <= size <= max_size and total + size <= limit:
                out.append(p)
                total += size
    return out


def contents() -> dict[str, bytes]:
    """name -> bytes of the files each algorithm's directory holds."""
    rng = random.Random(1124)
    files = {
        "empty": b"",
        "one-byte": b"x",
        "short-text": _text(rng, 100),
        "text": _text(rng, 300_007),
        "zeros": bytes(200_000),
        "random": rng.randbytes(100_003),
        "mixed": rng.randbytes(20_000) + _text(rng, 50_001) + bytes(30_000)
        + bytes([7]) * 9999 + (rng.randbytes(33) * 3000),
        "calls": bytes(rng.choice([0xE8, 0, 1, 2, 0xFF, rng.randrange(256)])
                       for _ in range(90_000)),
    }
    for i, p in enumerate(usr_programs(5 << 20)[:8]):
        files[f"prog{i}-{p.name}"] = p.read_bytes()
    return files


def wof_resource(data: bytes, chunk: int, res: tuple[bytes, int] | None) -> bytes:
    """WofCompressedData for ``data``: wimlib's resource if it compressed it, else a chunk
    table of chunks stored as they are (what Windows writes for incompressible data)."""
    if res is not None and res[1] & 0x04:
        return res[0]
    n = (len(data) + chunk - 1) // chunk
    ends = [min(len(data), (i + 1) * chunk) for i in range(n - 1)]
    return struct.pack(f"<{len(ends)}I", *ends) + data


def _populate(m: str, files: dict[str, bytes], manifest: dict, cache: Path) -> None:
    for algo, (chunk, method) in ALGOS.items():
        d = f"/{ALGO_IDS[algo]}"
        os.mkdir(m + d)
        nonempty = {f"{d}/{k}": v for k, v in files.items() if v}
        res = wim_resources(nonempty, chunk, method)
        for name, data in files.items():
            path = f"{d}/{name}"
            raw = wof_resource(data, chunk, res.get(path))
            with open(m + path, "wb") as fh:
                fh.truncate(len(data))
            with open(f"{m}{path}:WofCompressedData", "wb") as fh:
                fh.write(raw)
            os.setxattr(m + path, "system.ntfs_reparse_data",
                        tag_buffer(0x80000017, struct.pack("<IIII", 1, 2, 1, algo)))
            sha = hashlib.sha256(data).hexdigest()
            (cache / "data" / sha).write_bytes(data)
            rsha = hashlib.sha256(raw).hexdigest()
            (cache / "data" / rsha).write_bytes(raw)
            manifest[path] = {"algo": algo, "size": len(data), "sha256": sha,
                              "resource": rsha}


def build_wof_image(name: str, files: dict[str, bytes], image_size: int,
                    populate=_populate) -> tuple[Path, dict]:
    """mkntfs + ntfs-3g + WOF files, cached under .cache/wofnative/<name>-<key>/ by the
    builder's source and the files' contents. Returns (image, {path: entry})."""
    h = hashlib.sha256()
    for fn in (build_wof_image, wof_resource, populate, wim_resources, mounted):
        h.update(inspect.getsource(fn).encode())
    for k, v in files.items():
        h.update(k.encode() + hashlib.sha256(v).digest())
    h.update(str(image_size).encode())
    cache = CACHE / f"{name}-{h.hexdigest()[:16]}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cache / "manifest.json").exists():
            shutil.rmtree(cache, ignore_errors=True)
            (cache / "data").mkdir(parents=True)
            tmp = cache / "image.tmp"
            with open(tmp, "wb") as fh:
                fh.truncate(image_size)
            run(["mkntfs", "-F", "-Q", "-q", "-s", 512, "-c", 4096, tmp])
            manifest: dict = {}
            mnt = Path(tempfile.mkdtemp(prefix="wofn-"))
            try:
                with mounted(tmp, mnt):
                    populate(str(mnt), files, manifest, cache)
            finally:
                shutil.rmtree(mnt, ignore_errors=True)
            tmp.rename(cache / "image.img")
            (cache / "manifest.json").write_text(json.dumps(manifest))
            for old in CACHE.glob(f"{name}-*"):
                if old != cache and old.is_dir():  # built by an older version
                    shutil.rmtree(old, ignore_errors=True)
    return cache / "image.img", json.loads((cache / "manifest.json").read_text())


@lru_cache(maxsize=1)
def fixture() -> tuple[Path, dict]:
    return build_wof_image("files", contents(), 96 << 20)


def blob(cache_image: Path, sha: str) -> bytes:
    return (cache_image.parent / "data" / sha).read_bytes()


def split_chunks(raw: bytes, size: int, chunk: int) -> list[tuple[bytes, int]]:
    """(stored chunk, its decoded size) for each chunk of a WOF resource (4-byte table)."""
    n = (size + chunk - 1) // chunk
    table = max(0, n - 1) * 4
    starts = [0] + list(struct.unpack_from(f"<{n - 1}I", raw)) if n else []
    ends = starts[1:] + [len(raw) - table]
    return [(raw[table + s:table + e], min(chunk, size - i * chunk))
            for i, (s, e) in enumerate(zip(starts, ends))]


def decoders(algo: int):
    return (lzx.decompress, lzx.decompress_py) if algo == 1 else \
        (xpress.decompress, xpress.decompress_py)


@lru_cache(maxsize=None)
def compressed_chunks(algo: int) -> list[tuple[bytes, int]]:
    """Every compressed chunk (stored size < decoded size) of the fixture for ``algo``."""
    image, man = fixture()
    out = []
    for e in man.values():
        if e["algo"] == algo:
            for c, want in split_chunks(blob(image, e["resource"]), e["size"],
                                        ALGOS[algo][0]):
                if len(c) < want:
                    out.append((c, want))
    return out


def outcome(fn, data, size):
    try:
        return ("ok", fn(data, size))
    except FormatError as e:
        assert e.structure in ("XPRESS chunk", "XPRESS Huffman table", "LZX chunk")
        return ("error", e.message, e.structure, e.offset)


# ---------------------------------------------------------------- real data

@needs_tools
@needs_native
@pytest.mark.parametrize("algo", list(ALGOS), ids=ALGO_IDS.get)
def test_every_chunk_native_equals_python_equals_original(algo):
    image, man = fixture()
    native, py = decoders(algo)
    compressed = 0
    for path, e in man.items():
        if e["algo"] != algo:
            continue
        data = blob(image, e["sha256"])
        got = bytearray()
        for c, want in split_chunks(blob(image, e["resource"]), e["size"], ALGOS[algo][0]):
            if len(c) == want:
                got += c
                continue
            compressed += 1
            a = native(c, want)
            assert a == py(c, want), path
            got += a
        assert got == data, path
    assert compressed * ALGOS[algo][0] > 4 << 20  # MiB of compressed chunks


@needs_tools
@needs_native
@pytest.mark.parametrize("twin", ["native", "python"])
def test_files_read_through_ntfs_reader(twin, monkeypatch):
    """Volume(...).lookup(path).open().read: whole files and reads across chunk ends."""
    if twin == "python":
        monkeypatch.setattr(wof, "xpress_decompress", xpress.decompress_py)
        monkeypatch.setattr(wof, "lzx_decompress", lzx.decompress_py)
    image, man = fixture()
    vol = Volume(FileStream(image))
    rng = random.Random(5)
    for path, e in man.items():
        data = blob(image, e["sha256"])
        s = vol.lookup(path).open()
        assert s.size == len(data)
        if twin == "python" and len(data) > 400_000:
            for _ in range(3):  # the twin is slow: a few spans of big files
                off = rng.randrange(len(data))
                assert s.read(off, 70_000) == data[off:off + 70_000], path
            continue
        assert hashlib.sha256(s.read(0, len(data))).hexdigest() == e["sha256"], path
        chunk = ALGOS[e["algo"]][0]
        for _ in range(5):
            if len(data) > chunk:
                off = rng.randrange(chunk // 2, len(data))
                n = rng.randrange(1, 2 * chunk)
                assert s.read(off, n) == data[off:off + n], path


# ---------------------------------------------------------------- hostile input

def _mutate(data: st.DataObject, c: bytes, want: int) -> tuple[bytes, int]:
    kind = data.draw(st.sampled_from(["flip", "flips", "truncate", "splice", "size", "zero"]))
    b = bytearray(c)
    if kind == "flip":
        i = data.draw(st.integers(0, len(b) * 8 - 1))
        b[i // 8] ^= 1 << (i % 8)
    elif kind == "flips":
        for _ in range(data.draw(st.integers(2, 40))):
            i = data.draw(st.integers(0, len(b) - 1))
            b[i] = data.draw(st.integers(0, 255))
    elif kind == "truncate":
        b = b[:data.draw(st.integers(0, len(b)))]
    elif kind == "splice":
        i = data.draw(st.integers(0, len(b)))
        b[i:] = data.draw(st.binary(max_size=300))
    elif kind == "size":
        want = data.draw(st.integers(0, 70_000))
    else:
        i = data.draw(st.integers(0, len(b)))
        b[i:i + data.draw(st.integers(1, 64))] = bytes(64)
    return bytes(b), want


@needs_tools
@needs_native
@pytest.mark.parametrize("algo", list(ALGOS), ids=ALGO_IDS.get)
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_mutated_real_chunks_agree(algo, data):
    chunks = compressed_chunks(algo)
    c, want = chunks[data.draw(st.integers(0, len(chunks) - 1))]
    b, want = _mutate(data, c, want)
    native, py = decoders(algo)
    assert outcome(native, b, want) == outcome(py, b, want)


@needs_native
@pytest.mark.parametrize("algo", [0, 1], ids=ALGO_IDS.get)
@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=2000), want=st.integers(-2, 70_000))
def test_random_input_agrees(algo, raw, want):
    native, py = decoders(algo)
    assert outcome(native, raw, want) == outcome(py, raw, want)


@needs_native
@settings(max_examples=300, deadline=None)
@given(lens=st.binary(min_size=256, max_size=256), body=st.binary(max_size=600),
       want=st.integers(1, 3000))
def test_random_xpress_tables_agree(lens, body, want):
    """Past the table check more often: random code lengths, then random symbols."""
    b = lens + body
    assert outcome(xpress.decompress, b, want) == outcome(xpress.decompress_py, b, want)


@needs_native
@settings(max_examples=300, deadline=None)
@given(btype=st.sampled_from([1, 2, 3]), small=st.integers(1, 4000), body=st.binary(max_size=3000),
       explicit=st.booleans())
def test_random_lzx_blocks_agree(btype, small, body, explicit):
    """Valid block headers followed by random bits: reaches the code-length and match
    paths far more often than fully random input."""
    if explicit:  # 3-bit type, 0, 16-bit size (MSB first in the first 16-bit word)
        v = btype << 13 | (small >> 8) << 4 | (small >> 4) & 15
        head = struct.pack("<HH", v, (small & 15) << 12)
        want = small
    else:
        head = struct.pack("<H", (btype << 13 | 1 << 12))
        want = 32768
    b = head + body
    assert outcome(lzx.decompress, b, want) == outcome(lzx.decompress_py, b, want)


# ---------------------------------------------------------------- hand-made edge cases

def _xpress_a_then_match(length_bytes: bytes) -> bytes:
    """XPRESS chunk: literal 'a' (code 0) then a match with offset 1 and length nibble 15
    (code 1), whose length continues in ``length_bytes`` right after the first two words."""
    table = bytearray(256)
    table[97 // 2] = 1 << 4   # symbol 97 ('a'): length 1
    table[271 // 2] = 1 << 4  # symbol 256 + 15 (match, 0 offset bits, length 15+): length 1
    return bytes(table) + struct.pack("<HH", 0x4000, 0) + length_bytes + bytes(8)


@needs_native
@pytest.mark.parametrize("length_bytes, size, expect", [
    (b"\x02", 21, b"a" * 21),                                    # 15 + 2 + 3
    (b"\xff\x64\x00", 104, b"a" * 104),                          # 16-bit length 100
    (b"\xff\x00\x00\xe8\x03\x00\x00", 1004, b"a" * 1004),        # 32-bit length 1000
    (b"\xff\x00\x00\xff\xff\xff\xff", 65536, b"a" * 65536),      # clipped at the size
    (b"\xff\x05\x00", 50, "XPRESS match length below 15"),
    (b"\xff\x00\x00", 50, "XPRESS match length below 15"),        # 32-bit 0
])
def test_xpress_long_match_lengths(length_bytes, size, expect):
    chunk = _xpress_a_then_match(length_bytes)
    a, b = outcome(xpress.decompress, chunk, size), outcome(xpress.decompress_py, chunk, size)
    assert a == b
    assert a[1] == expect


def _lzx_uncompressed(block: bytes, r=(1, 1, 1)) -> bytes:
    """One uncompressed LZX block: type 3, explicit size, aligned R0..R2, bytes, pad."""
    n = len(block)
    head = struct.pack("<HH", 3 << 13 | (n >> 8) << 4 | (n >> 4) & 15, (n & 15) << 12)
    return head + struct.pack("<3I", *r) + block + bytes(n & 1)


@needs_native
def test_lzx_uncompressed_blocks_and_e8():
    assert lzx.decompress(_lzx_uncompressed(b"hello"), 5) == b"hello"
    # E8 translation is undone after an uncompressed block: absolute 10 at 1 -> relative 9;
    # a negative value within reach becomes value + 12000000; others stay.
    raw = b"\x90\xe8\x0a\0\0\0" + b"\xe8\xff\xff\xff\xff" + b"\xe8\0\0\0\x80" + bytes(10)
    want = (b"\x90\xe8\x09\0\0\0" + b"\xe8" + (0xFFFFFFFF + 12_000_000 & 0xFFFFFFFF)
            .to_bytes(4, "little") + b"\xe8\0\0\0\x80" + bytes(10))
    for fn in (lzx.decompress, lzx.decompress_py):
        assert fn(_lzx_uncompressed(raw), len(raw)) == want
    for chunk, size in ((_lzx_uncompressed(b"abc", (1, 0, 1)), 3),   # repeat offset 0
                        (_lzx_uncompressed(b"abcdef")[:-4], 6),       # block past the input
                        (_lzx_uncompressed(b"abc"), 2)):              # block past the size
        a = outcome(lzx.decompress, chunk, size)
        assert a[0] == "error" and a == outcome(lzx.decompress_py, chunk, size)


# ---------------------------------------------------------------- API

@needs_native
def test_sizes_and_buffers():
    for fn, cap in ((xpress.decompress, 65536), (lzx.decompress, 32768)):
        assert fn(b"", 0) == b"" and fn(b"junk", 0) == b""
        for bad in (-1, cap + 1):
            with pytest.raises(FormatError) as ei:
                fn(b"\0" * 300, bad)
            assert ei.value.offset is None and "chunk of" in ei.value.message
    with pytest.raises(FormatError, match="too short"):
        xpress.decompress(b"\x11" * 259, 10)
    with pytest.raises(FormatError) as ei:
        xpress.decompress(bytes(300), 10)
    assert ei.value.structure == "XPRESS Huffman table"


@needs_tools
@needs_native
def test_memoryview_bytearray_and_threads():
    """Buffers of any kind; many threads at once (GIL released) get the right bytes."""
    jobs = [(a, c, w) for a in (0, 1) for c, w in compressed_chunks(a)[:40]]
    expect = [decoders(a)[1](c, w) for a, c, w in jobs]
    for (a, c, w), e in zip(jobs[:10], expect):
        assert decoders(a)[0](memoryview(c), w) == e == decoders(a)[0](bytearray(c), w)
    errors = []

    def work():
        for _ in range(20):
            for (a, c, w), e in zip(jobs, expect):
                if decoders(a)[0](c, w) != e:
                    errors.append((a, w))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_fallback_warns_once(monkeypatch):
    """Without the extension both codecs use the twins, with one RuntimeWarning in all."""
    monkeypatch.setattr(xpress, "_wofdecomp", None)
    monkeypatch.setattr(lzx, "_wofdecomp", None)
    monkeypatch.setattr(xpress, "_warned", False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with pytest.raises(FormatError):
            xpress.decompress(b"\0" * 300, 5)
        with pytest.raises(FormatError):
            lzx.decompress(b"\xff" * 10, 5)
        xpress.decompress(b"", 0)
    assert [x.category for x in w] == [RuntimeWarning]


def test_missing_extension_falls_back(tmp_path):
    """A build without the extension (import fails): both codecs still work, one warning."""
    import subprocess
    code = (
        "import sys, warnings\n"
        "sys.modules['ntfs_reader._wofdecomp'] = None  # import now raises ImportError\n"
        "warnings.simplefilter('always')\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    from ntfs_reader import lzx, xpress\n"
        "    assert not xpress.NATIVE\n"
        "    u = bytes(range(256))\n"
        "    for f, d, n in ((lzx.decompress, b'', 0), (xpress.decompress, b'', 0)):\n"
        "        assert f(d, n) == b''\n"
        "    try:\n"
        "        lzx.decompress(b'\\xff' * 8, 100)\n"
        "    except ValueError as e:\n"
        "        assert type(e).__name__ == 'FormatError', e\n"
        "print(sorted({x.category.__name__ for x in w}), len(w))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['RuntimeWarning'] 1"
