"""LZNT1 decoder against data compressed by the real tool (ntfs-3g), cross-checked with icat.

The fixture: small NTFS images (cluster sizes 512 and 4096, so 8 KiB and 64 KiB units) made
with mkntfs, a directory flagged compressed through ntfs-3g, and files of known content
written into it. Each file's compression units are located with sleuthkit's ``istat`` (its
cluster list shows sparse clusters as 0), read from the image and decoded; the result must
equal what was written and what ``icat`` (sleuthkit's own decoder) returns. Hypothesis then
feeds random, structured and bit-flipped units to both decoders: they must agree exactly
(bytes, or the same FormatError at the same offset) and never exceed ``unit_size``.
"""

from __future__ import annotations

import hashlib
import inspect
import itertools
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from ntfs_reader import lznt1
from streams.errors import FormatError

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache" / "lznt1"
UNIT_CLUSTERS = 16  # NTFS compression unit: 2**4 clusters (the only one Windows writes)
TOOLS = ("mkntfs", "ntfs-3g", "ntfsinfo", "istat", "icat", "fls")

needs_tools = pytest.mark.skipif(
    any(shutil.which(t) is None for t in TOOLS) or not os.path.exists("/dev/fuse"),
    reason="needs mkntfs, ntfs-3g (FUSE) and sleuthkit",
)


# ---------------------------------------------------------------- file contents (ground truth)

@lru_cache(maxsize=1)
def _vocabulary() -> tuple[list[str], list[float]]:
    """Made-up words and Zipf-like cumulative weights (fixed seed)."""
    rng = random.Random(7)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    words = ["".join(rng.choices(letters[: rng.randint(6, 26)], k=rng.randint(1, 11)))
             for _ in range(1500)]
    return words, list(itertools.accumulate(1 / (i + 1) for i in range(len(words))))


def _text(rng: random.Random, n: int) -> bytes:
    """English-like text: Zipf-ish choice of words, lines of varying width."""
    words, cum = _vocabulary()
    out: list[str] = []
    size = width = 0
    limit = rng.randint(40, 100)
    while size < n:
        for word in rng.choices(words, cum_weights=cum, k=max(16, (n - size) // 5)):
            if width > limit:
                out.append("\n")
                width, limit = 0, rng.randint(40, 100)
            elif out:
                out.append(" ")
            out.append(word)
            width += len(word) + 1
            size += len(word) + 1
    return "".join(out).encode()[:n]


def _initial_files() -> dict[str, bytes]:
    """The files first written into the compressed directory, each in one go."""
    rng = random.Random(20261124)
    files: dict[str, bytes] = {}
    files["text.txt"] = _text(rng, 300_001)
    isl = bytearray(1_200_000)  # zeros with islands: all-zero units become sparse
    for _ in range(30):
        at, n = rng.randrange(len(isl) - 4000), rng.randint(1, 3000)
        isl[at:at + n] = rng.randbytes(n)
    isl[500_000:520_000] = _text(rng, 20_000)
    files["zeros_islands.bin"] = bytes(isl)
    files["random.bin"] = rng.randbytes(200_000)  # incompressible: units stored raw
    parts, size = [], 0
    while size < 900_000:  # every kind of content, boundaries anywhere
        kind = rng.randrange(6)
        if kind == 0:
            p = _text(rng, rng.randint(1, 20_000))
        elif kind == 1:
            p = rng.randbytes(rng.randint(100, 5000))
        elif kind == 2:
            p = bytes(rng.randint(1, 70_000))
        elif kind == 3:
            p = bytes([rng.randrange(256)]) * rng.randint(3, 9000)
        elif kind == 4:
            period = rng.randbytes(rng.randint(2, 40))
            p = (period * 9000)[: rng.randint(100, 8000)]
        else:
            p = bytes(rng.randrange(4) for _ in range(rng.randint(10, 3000)))
        parts.append(p)
        size += len(p)
    files["mixed.bin"] = b"".join(parts)[:899_999]
    # Random 4 KiB blocks between text ones: compressed units holding uncompressed chunks.
    files["alt_blocks.bin"] = b"".join(
        rng.randbytes(4096) if i % 3 == 0 else _text(rng, 4096) for i in range(64))
    files["tail_random.bin"] = _text(rng, 95_536) + rng.randbytes(3001)
    files["one_unit.bin"] = _text(rng, 65_536)
    files["small.txt"] = _text(rng, 5000)
    files["run_A.bin"] = b"A" * 200_000  # longest overlapping matches
    files["abc.bin"] = b"abc" * 70_001
    files["rewritten.bin"] = _text(rng, 300_000)
    files["backwards.bin"] = b""
    return files


def _rewrites() -> list[tuple[str, int, bytes]]:
    """Writes into existing compressed files, each through its own open(): ntfs-3g then
    recompresses units in place, writes past the end and fills holes later."""
    rng = random.Random(4)
    out = [("rewritten.bin", 100_000, rng.randbytes(10_000)),
           ("rewritten.bin", 150_003, bytes(70_000)),
           ("rewritten.bin", 290_000, _text(rng, 20_000)),
           ("rewritten.bin", 5, b"x")]
    out += [("backwards.bin", k * 20_000, _text(rng, 20_000)) for k in reversed(range(10))]
    return out


@lru_cache(maxsize=1)
def fixture_files() -> dict[str, bytes]:
    """What each file of the compressed directory holds in the end: name -> exact content."""
    files = _initial_files()
    for name, offset, data in _rewrites():
        buf = bytearray(files[name])
        buf[len(buf):offset] = bytes(max(0, offset - len(buf)))
        buf[offset:offset + len(data)] = data
        files[name] = bytes(buf)
    return files


# ---------------------------------------------------------------- image built by ntfs-3g

def _builder_key(cluster_size: int) -> str:
    h = hashlib.sha256()
    for fn in (_vocabulary, _text, _initial_files, _rewrites, fixture_files, _build_image):
        h.update(inspect.getsource(fn).encode())
    h.update(str(cluster_size).encode())
    h.update(subprocess.run(["ntfs-3g", "--version"], capture_output=True, text=True).stderr.encode())
    return h.hexdigest()[:16]


def _build_image(path: Path, cluster_size: int, files: dict[str, bytes],
                 rewrites: list[tuple[str, int, bytes]] = ()) -> None:
    """mkntfs, mount with ntfs-3g, flag a directory compressed (FILE_ATTRIBUTE_COMPRESSED,
    0x800, through ntfs-3g's system.ntfs_attrib_be), write the files there, then the
    rewrites (name, offset, data) in order, unmount."""
    total = sum(len(v) for v in files.values())
    with open(path, "wb") as f:
        f.truncate(max(16 << 20, 2 * total + (8 << 20)))
    subprocess.run(["mkntfs", "-q", "-F", "-f", "-c", str(cluster_size), "-s", "512", "-L", "lznt1",
                    str(path)], check=True, capture_output=True)
    mnt = Path(tempfile.mkdtemp(prefix="lznt1-mnt-"))
    try:
        subprocess.run(["ntfs-3g", "-o", "compression", str(path), str(mnt)], check=True,
                       capture_output=True)
        try:
            d = mnt / "c"
            d.mkdir()
            os.setxattr(d, "system.ntfs_attrib_be", (0x800).to_bytes(4, "big"))
            for name, data in files.items():
                (d / name).write_bytes(data)
                attrib = int.from_bytes(os.getxattr(d / name, "system.ntfs_attrib_be"), "big")
                assert attrib & 0x800, f"{name} was not created compressed"
            for name, offset, data in rewrites:
                with open(d / name, "r+b") as f:
                    f.seek(offset)
                    f.write(data)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        mnt.rmdir()


def _ntfs3g_reads(path: Path, files: dict[str, bytes]) -> None:
    """Mounted afresh read-only, ntfs-3g (the oracle) must read every file back as expected."""
    mnt = Path(tempfile.mkdtemp(prefix="lznt1-ro-"))
    try:
        subprocess.run(["ntfs-3g", "-o", "ro", str(path), str(mnt)], check=True, capture_output=True)
        try:
            for name, data in files.items():
                assert (mnt / "c" / name).read_bytes() == data, f"ntfs-3g reads {name} differently"
        finally:
            subprocess.run(["umount", str(mnt)], check=True)
    finally:
        mnt.rmdir()


def image(cluster_size: int) -> Path:
    """The cached image for ``cluster_size`` (built once, keyed by what built it)."""
    path = CACHE / f"c{cluster_size}-{_builder_key(cluster_size)}.img"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        for stale in CACHE.glob(f"c{cluster_size}-*.img"):
            stale.unlink(missing_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        try:
            _build_image(tmp, cluster_size, _initial_files(), _rewrites())
            _ntfs3g_reads(tmp, fixture_files())
            tmp.rename(path)
        finally:
            tmp.unlink(missing_ok=True)
    return path


def inode_of(img: Path, name: str) -> int:
    out = subprocess.run(["fls", "-r", "-p", str(img)], check=True, capture_output=True,
                         text=True).stdout
    m = re.search(r"^r/r (\d+)-128-\d+:\tc/" + re.escape(name) + "$", out, re.M)
    assert m, f"{name} not found by fls"
    return int(m.group(1))


def _istat_clusters(img: Path, inode: int) -> list[int] | None:
    """Cluster of each VCN of the unnamed $DATA attribute per sleuthkit's istat (0 = sparse),
    or None if resident. istat stops at the data size, not the allocated size."""
    out = subprocess.run(["istat", str(img), str(inode)], check=True, capture_output=True,
                         text=True).stdout
    lines = out.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Type: $DATA (128-") and "Name: N/A" in line:
            if "Non-Resident" not in line:
                return None
            clusters = []
            for more in lines[i + 1:]:
                if not re.fullmatch(r"[\d ]+", more.strip() or "x"):
                    break
                clusters += [int(x) for x in more.split()]
            return clusters
    raise AssertionError(f"no $DATA attribute for inode {inode}")


def data_clusters(img: Path, name: str) -> list[int] | None:
    """Cluster of each VCN of ``c/<name>``'s unnamed $DATA up to its allocated size (0 =
    sparse), or None if resident.

    The runlist comes from ntfsinfo, because the last unit's compressed data may run into
    clusters past the data size (ntfs-3g does that for nearly incompressible tails) and
    istat does not list those; istat must agree on every VCN it does list.
    """
    out = subprocess.run(["ntfsinfo", "-F", f"/c/{name}", "-v", str(img)], check=True,
                         capture_output=True, text=True).stdout
    lcn_of: dict[int, int] = {}
    for section in out.split("Dumping attribute ")[1:]:  # one per extent (attribute list)
        if not section.startswith("$DATA"):
            continue
        if re.search(r"Resident:\s+Yes", section):
            return None
        for line in section.split("Runlist:", 1)[1].splitlines()[1:]:
            m = re.fullmatch(r"\s*(0x[0-9a-f]+)\s+(0x[0-9a-f]+|<HOLE>|<RL_NOT_MAPPED>)\s+"
                             r"(0x[0-9a-f]+)", line)
            if not m:
                break
            vcn, lcn, n = int(m[1], 16), m[2], int(m[3], 16)
            if lcn != "<RL_NOT_MAPPED>":  # mapped by another extent
                first = 0 if lcn == "<HOLE>" else int(lcn, 16)
                lcn_of.update((vcn + k, first and first + k) for k in range(n))
    clusters = [lcn_of[v] for v in range(len(lcn_of))]  # KeyError = a gap in the runlist
    listed = _istat_clusters(img, inode_of(img, name))
    assert listed is not None and clusters[:len(listed)] == listed, f"istat disagrees on {name}"
    return clusters


def units(img: Path, cluster_size: int, name: str):
    """Yields (index, kind, raw bytes) for each compression unit of ``name``: kind is
    "sparse", "raw" (stored uncompressed) or "lznt1" (raw = its allocated clusters)."""
    clusters = data_clusters(img, name)
    if clusters is None:
        return
    with open(img, "rb") as f:
        for u in range(0, len(clusters), UNIT_CLUSTERS):
            lcns = clusters[u:u + UNIT_CLUSTERS]
            lcns += [0] * (UNIT_CLUSTERS - len(lcns))
            used = [c for c in lcns if c]
            if not used:
                yield u // UNIT_CLUSTERS, "sparse", b""
                continue
            assert lcns[:len(used)] == used, "a compressed unit's sparse clusters come last"
            raw = b"".join(os.pread(f.fileno(), cluster_size, c * cluster_size) for c in used)
            yield u // UNIT_CLUSTERS, ("raw" if len(used) == UNIT_CLUSTERS else "lznt1"), raw


@lru_cache(maxsize=None)
def real_units(cluster_size: int) -> tuple[tuple[str, int, bytes], ...]:
    """Every LZNT1 unit ntfs-3g wrote in the fixture image: (file, unit index, raw)."""
    img = image(cluster_size)
    return tuple((name, i, raw) for name in fixture_files()
                 for i, kind, raw in units(img, cluster_size, name) if kind == "lznt1")


def chunk_kinds(raw: bytes) -> list[tuple[bool, int]]:
    """(compressed, stored size) of each chunk of a unit, to check what the data covers."""
    out, sp = [], 0
    while sp + 2 <= len(raw) and (hdr := int.from_bytes(raw[sp:sp + 2], "little")):
        out.append((bool(hdr & 0x8000), (hdr & 0xFFF) + 1))
        sp += 2 + (hdr & 0xFFF) + 1
    return out


# ---------------------------------------------------------------- tests on real data

@needs_tools
@pytest.mark.parametrize("cluster_size", [512, 4096])
def test_real_units_match_written_content_and_icat(cluster_size):
    img = image(cluster_size)
    unit = cluster_size * UNIT_CLUSTERS
    seen = {"sparse": 0, "raw": 0, "lznt1": 0}
    uncompressed_chunks = short_tails = 0
    for name, content in fixture_files().items():
        icat = subprocess.run(["icat", str(img), str(inode_of(img, name))], check=True,
                              capture_output=True).stdout
        assert icat == content, f"{name}: icat disagrees with what was written (harness bug)"
        decoded = bytearray()
        for i, kind, raw in units(img, cluster_size, name):
            seen[kind] += 1
            if kind == "sparse":
                part = bytes(unit)
            elif kind == "raw":
                part = raw
            else:
                part = lznt1.decompress(raw, unit)
                assert len(part) <= unit
                assert lznt1.decompress_py(raw, unit) == part, f"{name} unit {i}: twins differ"
                kinds = chunk_kinds(raw)
                uncompressed_chunks += sum(1 for c, _ in kinds if not c)
                short_tails += len(part) % 4096 != 0
                part = part + bytes(unit - len(part))  # the caller pads the tail
            assert len(decoded) == i * unit
            decoded += part
        assert bytes(decoded[:len(content)]) == content, name
        assert not any(decoded[len(content):]), f"{name}: non-zero bytes past the end"
    # The data must cover what it claims to: every kind of unit and chunk.
    assert seen["lznt1"] >= 20 and seen["sparse"] >= 3 and seen["raw"] >= 2, seen
    assert uncompressed_chunks >= 5 and short_tails >= 3, (uncompressed_chunks, short_tails)


@needs_tools
def test_memoryview_and_trailing_garbage_after_end_marker():
    name, i, raw = max(real_units(4096), key=lambda u: len(u[2]))
    want = lznt1.decompress(raw, 65536)
    assert lznt1.decompress(memoryview(bytearray(raw)), 65536) == want
    end = sum(2 + s for _, s in chunk_kinds(raw))
    assert raw[end:end + 2] == b"\0\0"
    garbage = raw[:end + 2] + os.urandom(100)
    assert lznt1.decompress(garbage, 65536) == want == lznt1.decompress_py(garbage, 65536)


@needs_tools
def test_threads_share_the_decoder():
    """The C decoder drops the GIL while it works: concurrent calls must not interfere."""
    from concurrent.futures import ThreadPoolExecutor
    raws = [raw for _, _, raw in real_units(4096)]
    want = [lznt1.decompress(r, 65536) for r in raws]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            assert list(pool.map(lambda r: lznt1.decompress(r, 65536), raws)) == want


@needs_tools
def test_unit_size_limits_output():
    """Output stops at unit_size even inside a chunk (both decoders the same)."""
    raws = [raw for _, _, raw in real_units(4096)][:40]
    for raw in raws:
        full = lznt1.decompress(raw, 65536)
        for limit in (0, 1, 3000, 4096, 4097, 10_000, 65535):
            got = lznt1.decompress(raw, limit)
            assert got == full[:limit] or (len(got) < limit and full.startswith(got)), limit
            assert got == lznt1.decompress_py(raw, limit)


# ---------------------------------------------------------------- hand-made corner cases

def _err(data: bytes, unit: int = 65536) -> FormatError:
    with pytest.raises(FormatError) as native:
        lznt1.decompress(data, unit, source="f")
    with pytest.raises(FormatError) as py:
        lznt1.decompress_py(data, unit, source="f")
    e = native.value
    assert (e.message, e.offset, e.structure, e.source) == (
        py.value.message, py.value.offset, py.value.structure, py.value.source)
    assert e.structure == "LZNT1 chunk" and e.source == "f"
    return e


def _chunk(payload: bytes, compressed: bool = True) -> bytes:
    return ((0xB000 if compressed else 0x3000) | (len(payload) - 1)).to_bytes(2, "little") + payload


def test_ms_xca_example():
    """The worked example of [MS-XCA] 3.3 (an overlapping back-reference included)."""
    data = bytes.fromhex(
        "38b0884623200020472041 0010a24701a0452044000845 01507900c0452005241388"
        "05b4024a44ef0358028c09 1601484500be009e00040118 9000")
    want = (b"F# F# G A A G F# E D D E F# F# E E F# F# G A A G F# E D D E F# E D D E E F# D E "
            b"F# G F# D E F# G F# E D E A F# F# G A A G F# E D D E F# E D D\0")
    assert len(data) == 59 and len(want) == 142
    assert lznt1.decompress(data, 4096) == want == lznt1.decompress_py(data, 4096)


def test_errors_name_the_offset():
    # back-reference as the very first token
    assert _err(_chunk(b"\x01\x00\x00")).offset == 3
    # back-reference 2 bytes back after 1 byte of output (offset field 1 -> distance 2)
    assert _err(_chunk(b"\x02a\x00\x10")).offset == 4
    assert "before the start" in _err(_chunk(b"\x02a\x00\x10")).message
    # second chunk: the offset is within data, not within the chunk
    first = _chunk(b"\x00abcdefgh")
    assert _err(first + _chunk(b"\x01\x00\x00")).offset == len(first) + 3
    # chunk size past the end of data
    assert _err(_chunk(b"\x00abcdefgh")[:-1]).offset == 0
    # bad signature
    assert "signature" in _err(b"\x05\x80abcdef").message
    # header cut in half
    assert _err(first + b"\x07").offset == len(first)
    # back-reference cut by the end of the chunk
    assert _err(_chunk(b"\x02a\x00")).offset == 4


def test_chunk_output_past_4096_is_an_error():
    # 'a', then back-references at distance 1 (offset field 0) until past 4096 bytes
    tokens = [b"a"]
    pos = 1
    while pos <= 4096:
        lg = max(0, (pos - 1).bit_length() - 4)
        length = min(0xFFF >> lg, 1997) + 3
        tokens.append((length - 3).to_bytes(2, "little"))
        pos += length
    body = b""
    for g in range(0, len(tokens), 8):
        group = tokens[g:g + 8]
        tag = sum(1 << k for k, t in enumerate(group) if len(t) == 2)
        body += bytes([tag]) + b"".join(group)
    e = _err(_chunk(body))
    assert "past 4096" in e.message
    # The same chunk is fine when the unit ends inside it: output clipped to the unit.
    assert lznt1.decompress(_chunk(body), 3000) == b"a" * 3000 == lznt1.decompress_py(_chunk(body), 3000)


def test_short_chunks_are_zero_filled_between_chunks_not_at_the_end():
    data = _chunk(b"\x00hello, w") + _chunk(b"x" * 10, compressed=False) + _chunk(b"\x00tail")
    want = b"hello, w" + bytes(4088) + b"x" * 10 + bytes(4086) + b"tail"
    assert lznt1.decompress(data, 65536) == want == lznt1.decompress_py(data, 65536)
    assert lznt1.decompress(data, 4096) == want[:8]  # stops at the unit's end
    assert lznt1.decompress(b"", 65536) == b"" == lznt1.decompress(b"\0", 65536)


def test_hostile_sizes_do_not_allocate():
    # unit_size far beyond memory: allocation is bounded by what the input can produce
    assert lznt1.decompress(b"\0" * 10, 1 << 60) == b""
    many_empty = b"\x00\xb0\x00" * 1000 + _chunk(b"\x00abcdefgh")
    out = lznt1.decompress(many_empty, 1 << 60)
    assert len(out) == 1000 * 4096 + 8 and out == lznt1.decompress_py(many_empty, 1 << 60)
    with pytest.raises(ValueError):
        lznt1.decompress(b"", -1)


def test_fallback_warns_and_works_without_the_extension():
    code = (
        "import sys, warnings\n"
        "sys.modules['ntfs_reader._lznt1'] = None\n"
        "from ntfs_reader import lznt1\n"
        "assert not lznt1.NATIVE\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    assert lznt1.decompress(b'\\x08\\xb0\\x00abcdefgh', 4096) == b'abcdefgh'\n"
        "assert any('pure-Python' in str(x.message) for x in w), w\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_native_extension_is_built():
    """The C decoder must be there wherever setup ran (gcc and python3-dev are installed)."""
    assert lznt1.NATIVE, "ntfs_reader._lznt1 missing: run tools/setup.sh (pip install -e .)"


# ---------------------------------------------------------------- property tests

def _same(data: bytes, unit: int) -> None:
    """Both decoders agree exactly, and the result respects unit_size."""
    try:
        a = lznt1.decompress(data, unit)
    except FormatError as e:
        with pytest.raises(FormatError) as py:
            lznt1.decompress_py(data, unit)
        assert (py.value.message, py.value.offset) == (e.message, e.offset)
        assert e.offset is not None and 0 <= e.offset <= len(data)
        return
    assert lznt1.decompress_py(data, unit) == a
    assert len(a) <= unit


UNITS = st.sampled_from([0, 1, 512, 4096, 5000, 8192, 65536])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000), UNITS)
def test_random_bytes(data, unit):
    _same(data, unit)


@st.composite
def lznt1_streams(draw):
    """Well-framed chunks with random tags and tokens: reaches deep into the decoder."""
    out = b""
    for _ in range(draw(st.integers(1, 4))):
        if draw(st.booleans()):
            # near_mask keeps back-reference offsets small (mostly valid), 0xFF lets them roam
            near_mask = draw(st.sampled_from([0x00, 0x01, 0x0F, 0xFF]))
            body = bytearray()
            for _ in range(draw(st.integers(0, 40))):
                tag = draw(st.integers(0, 255))
                items = draw(st.binary(min_size=16, max_size=16))
                body.append(tag)
                for k in range(8):
                    if tag >> k & 1:
                        body += bytes([items[2 * k], items[2 * k + 1] & near_mask])
                    else:
                        body.append(items[2 * k])
            body = body[: draw(st.integers(1, max(1, len(body))))] or b"\0"
            out += _chunk(bytes(body[:4096]))
        else:
            out += _chunk(draw(st.binary(min_size=1, max_size=4096)), compressed=False)
    if draw(st.booleans()):
        out += b"\0\0"
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lznt1_streams(), UNITS)
def test_structured_streams(data, unit):
    _same(data, unit)


@needs_tools
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_mutated_real_units(data):
    units_ = real_units(4096) + real_units(512)
    _, _, raw = data.draw(st.sampled_from(units_))
    raw = bytearray(raw)
    how = data.draw(st.sampled_from(["flip", "truncate", "splice"]))
    if how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            bit = data.draw(st.integers(0, len(raw) * 8 - 1))
            raw[bit // 8] ^= 1 << (bit % 8)
    elif how == "truncate":
        del raw[data.draw(st.integers(0, len(raw))):]
    else:
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(max_size=64))
    _same(bytes(raw), data.draw(st.sampled_from([8192, 65536])))
