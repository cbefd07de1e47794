"""NTFS names (UTF-16 code units) <-> Linux names (str that encode to <= 255 UTF-8 bytes).

Scheme, reversible and the same as ntfs-3g's for surrogates:

* Well-formed UTF-16 decodes to the obvious str.
* An unpaired surrogate (legal in NTFS, not in UTF-8) is first written as its 3-byte
  generalised-UTF-8 form (``ED A0 80`` for U+D800, exactly the bytes ntfs-3g shows), and
  those bytes are then carried in the str with Python's ``surrogateescape`` convention
  (U+DC80+byte). ``os.fsencode(name)`` therefore yields ntfs-3g's bytes, and
  :func:`to_ntfs` undoes the mapping exactly. Well-formed names never contain U+DC80-DCFF
  code points, so no two NTFS names share one Linux name.
* A name longer than 255 UTF-8 bytes (NTFS allows 255 UTF-16 units, up to 765 bytes) is
  shown as its longest prefix that fits in 237 bytes followed by ``~`` and 16 lowercase hex
  digits of BLAKE2b-64 over the UTF-16LE name (``prefix~0123456789abcdef``, <= 255 bytes).
  ``Entry.child``/``Volume.lookup`` accept that form (it is resolved by a scan of the
  directory, since it cannot be collated) as well as the full name.
"""

from __future__ import annotations

import hashlib
import re

NAME_MAX = 255
_LONG_PREFIX_MAX = NAME_MAX - 1 - 16 - 1  # room for "~" + 16 hex, one byte spare
_LONG_RE = re.compile(r"~[0-9a-f]{16}\Z")


def decode(raw: bytes) -> str:
    """UTF-16LE bytes -> the full NTFS name as str (unpaired surrogates kept as code points)."""
    return raw.decode("utf-16-le", "surrogatepass")


def to_linux(ntfs_name: str) -> str:
    """An NTFS name (from :func:`decode`) -> its Linux name (escaped, <= 255 bytes)."""
    try:
        data = ntfs_name.encode("utf-8")
        name = ntfs_name
    except UnicodeEncodeError:  # unpaired surrogates: generalised UTF-8, then escape
        data = ntfs_name.encode("utf-8", "surrogatepass")
        name = data.decode("utf-8", "surrogateescape")
    if len(data) <= NAME_MAX:
        return name
    digest = hashlib.blake2b(ntfs_name.encode("utf-16-le", "surrogatepass"),
                             digest_size=8).hexdigest()
    cut = data[:_LONG_PREFIX_MAX]
    prefix = cut.decode("utf-8", "ignore")  # drop a split trailing sequence
    try:
        prefix.encode("utf-8")
    except UnicodeEncodeError:
        prefix = cut.decode("utf-8", "surrogateescape")
    return f"{prefix}~{digest}"


def from_raw(raw: bytes) -> str:
    """UTF-16LE bytes -> Linux name."""
    try:
        name = raw.decode("utf-16-le")
        if len(name) * 3 <= NAME_MAX or len(name.encode("utf-8")) <= NAME_MAX:
            return name
        return to_linux(name)
    except UnicodeDecodeError:
        return to_linux(decode(raw))


def to_ntfs(linux_name: str) -> str:
    """Linux name -> NTFS name (inverse of :func:`to_linux` for names that fit).

    Raises ValueError for a str that no NTFS name maps to (e.g. stray escapes).
    """
    try:
        linux_name.encode("utf-8")
        return linux_name
    except UnicodeEncodeError:
        data = linux_name.encode("utf-8", "surrogateescape")
        return data.decode("utf-8", "surrogatepass")


def to_utf16(linux_name: str) -> bytes:
    """Linux name -> UTF-16LE bytes as stored on the volume."""
    return to_ntfs(linux_name).encode("utf-16-le", "surrogatepass")


def is_shortened(linux_name: str) -> bool:
    """True if the name has the shape of a shortened long name (``...~<16 hex>``)."""
    return (len(linux_name.encode("utf-8", "surrogateescape")) > _LONG_PREFIX_MAX
            and _LONG_RE.search(linux_name) is not None)
