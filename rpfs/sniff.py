"""What a few bytes of a file look like: a known format (by its magic bytes), text, or
bytes with no structure (high entropy, no magic): what encryption leaves behind.

The change analysis (rpfs/analysis.py) reads at most a few 4 KiB blocks of a file and asks
this module about them; it never needs a whole file. Compressed formats (zip, JPEG, cab,
gzip, ...) are high-entropy too, but they begin with their magic, which is how they are
told apart from encrypted bytes.
"""

from __future__ import annotations

import math

BLOCK = 4096
HIGH_ENTROPY = 7.2   # bits per byte over a 4 KiB block: random bytes give ~7.95,
                     # text 4-5, office XML inside zip is compressed but starts with PK

# (offset, magic, format name); longest/most specific first where they share a prefix
MAGIC = [
    (0, b"PK\x03\x04", "zip"), (0, b"PK\x05\x06", "zip"), (0, b"PK\x07\x08", "zip"),
    (0, b"%PDF", "pdf"), (0, b"\xff\xd8\xff", "jpeg"), (0, b"\x89PNG\r\n\x1a\n", "png"),
    (0, b"GIF87a", "gif"), (0, b"GIF89a", "gif"), (0, b"BM", "bmp"),
    (0, b"II*\x00", "tiff"), (0, b"MM\x00*", "tiff"), (0, b"RIFF", "riff"),
    (0, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole2"), (0, b"{\\rtf", "rtf"),
    (0, b"MZ", "exe"), (0, b"\x7fELF", "elf"), (0, b"MSCF", "cab"), (0, b"ISc(", "cab"),
    (0, b"\x1f\x8b", "gzip"), (0, b"BZh", "bzip2"), (0, b"\xfd7zXZ\x00", "xz"),
    (0, b"7z\xbc\xaf\x27\x1c", "7z"), (0, b"Rar!\x1a\x07", "rar"),
    (0, b"\x28\xb5\x2f\xfd", "zstd"), (0, b"SQLite format 3\x00", "sqlite"),
    (0, b"ID3", "mp3"), (0, b"OggS", "ogg"), (0, b"fLaC", "flac"), (4, b"ftyp", "mp4"),
    (0, b"\x1aE\xdf\xa3", "mkv"), (0, b"regf", "registry"), (0, b"Salted__", "openssl"),
    (0, b"-----BEGIN PGP", "pgp"), (0, b"\x00\x00\x01\x00", "ico"), (0, b"wOF", "woff"),
    (0, b"\xca\xfe\xba\xbe", "class"), (0, b"\x00asm", "wasm"), (0, b"!<arch>", "ar"),
    (0, b"MSWIM\x00", "wim"), (0, b"conectix", "vhd"), (0, b"vhdxfile", "vhdx"),
    (257, b"ustar", "tar"),
]


def entropy(data: bytes) -> float:
    """Shannon entropy in bits per byte (0 for no data)."""
    if not data:
        return 0.0
    counts = [0] * 256
    for b in data:
        counts[b] += 1
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in counts if c)


def magic(head: bytes) -> str | None:
    """The format whose magic bytes ``head`` (a file's first bytes) begins with."""
    for off, m, name in MAGIC:
        if head[off:off + len(m)] == m:
            return name
    return None


def is_text(data: bytes) -> bool:
    """UTF-8 (or UTF-16 with a BOM) with almost no control characters."""
    if not data:
        return False
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = data[: len(data) // 2 * 2].decode("utf-16", "replace")
    else:
        text = data.decode("utf-8", "replace")
        if text.count("\ufffd") > len(text) // 100 + 1:  # a cut character at the end is fine
            return False
    controls = sum(1 for c in text if ord(c) < 32 and c not in "\t\n\r\f")
    return controls <= len(text) // 100


def kind(head: bytes) -> str:
    """What a file's first block says it is: a format name, ``"text"``, ``"random"``
    (no magic, not text, high entropy: encrypted or raw random bytes), ``"empty"`` or
    ``"binary"`` (no magic, low entropy: some unknown structured format)."""
    if not head:
        return "empty"
    m = magic(head)
    if m is not None:
        return m
    if is_text(head):
        return "text"
    if len(head) >= 256 and entropy(head) >= (HIGH_ENTROPY if len(head) >= 1024 else 6.5):
        return "random"     # (a short sample cannot reach 8 bits: 256 random bytes give ~7.2)
    return "binary"


def structured(k: str) -> bool:
    """A kind a document has (recognisable: a format or text)."""
    return k not in ("random", "binary", "empty")
