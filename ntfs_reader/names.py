"""NTFS names (UTF-16 code units) <-> Linux names (str that encode to <= 255 UTF-8 bytes).

Scheme, reversible and the same as ntfs-3g's for surrogates:

* Well-formed UTF-16 decodes to the obvious str.
* An unpaired surrogate (legal in NTFS, not in UTF-8) is first written as its 3-byte
  generalised-UTF-8 form (``ED A0 80`` for U+D800, exactly the bytes ntfs-3g shows), and
  those bytes are then carried in the str with Python's ``surrogateescape`` convention
  (U+DC80+byte). ``os.fsencode(name)`` therefore yields ntfs-3g's bytes, and
  :func:`to_ntfs` undoes the mapping exactly. Well-formed names never contain U+DC80-DCFF
  code points, so no two NTFS names share one Linux name.
* Characters a Linux name cannot hold are written as their overlong 2-byte UTF-8 forms
  (never produced by any valid or generalised UTF-8), carried the same way: ``/`` ->
  ``C0 AF``, NUL -> ``C0 80``; the names ``.`` and ``..`` (only a damaged or hostile
  index holds them) get each dot as ``C0 AE``. So no name read from a volume can contain
  a path separator or climb out of its directory.
* A name longer than 255 UTF-8 bytes (NTFS allows 255 UTF-16 units, up to 765 bytes) is
  shown as its longest prefix that fits in 237 bytes followed by ``~`` and 16 lowercase hex
  digits of BLAKE2b-64 over the UTF-16LE name (``prefix~0123456789abcdef``, <= 255 bytes).
  ``Entry.child``/``Volume.lookup`` accept that form (it is resolved by a scan of the
  directory, since it cannot be collated) as well as the full name.
"""

from __future__ import annotations

import codecs
import re

NAME_MAX = 255
_LONG_PREFIX_MAX = NAME_MAX - 1 - 16 - 1  # room for "~" + 16 hex, one byte spare
_LONG_RE = re.compile(r"~[0-9a-f]{16}\Z")


def decode(raw: bytes) -> str:
    """UTF-16LE bytes -> the full NTFS name as str (unpaired surrogates kept as code points)."""
    return raw.decode("utf-16-le", "surrogatepass")


_SLASH, _NUL, _DOT = "\udcc0\udcaf", "\udcc0\udc80", "\udcc0\udcae"


def to_linux(ntfs_name: str) -> str:
    """An NTFS name (from :func:`decode`) -> its Linux name (escaped, <= 255 bytes)."""
    if "/" in ntfs_name or "\0" in ntfs_name or ntfs_name in (".", ".."):
        return _to_linux(ntfs_name)
    return _plain_to_linux(ntfs_name)


def _to_linux(ntfs_name: str) -> str:
    if ntfs_name in (".", ".."):
        return _DOT * len(ntfs_name)
    parts = ntfs_name.replace("\0", "/").split("/")
    # escape each piece, then join with the escapes (so the length rule sees the result)
    out, pos = [], 0
    for piece in parts:
        out.append(_plain_to_linux(piece, limit=False))
        pos += len(piece)
        if pos < len(ntfs_name):
            out.append(_SLASH if ntfs_name[pos] == "/" else _NUL)
            pos += 1
    name = "".join(out)
    if len(name.encode("utf-8", "surrogateescape")) <= NAME_MAX:
        return name
    return _shorten(ntfs_name, name.encode("utf-8", "surrogateescape"))


def _plain_to_linux(ntfs_name: str, limit: bool = True) -> str:
    try:
        data = ntfs_name.encode("utf-8")
        name = ntfs_name
    except UnicodeEncodeError:  # unpaired surrogates: generalised UTF-8, then escape
        data = ntfs_name.encode("utf-8", "surrogatepass")
        name = data.decode("utf-8", "surrogateescape")
    if len(data) <= NAME_MAX or not limit:
        return name
    return _shorten(ntfs_name, data)


def _shorten(ntfs_name: str, data: bytes) -> str:
    import hashlib   # here: names past 255 bytes are rare (and OpenSSL's load is not free)

    digest = hashlib.blake2b(ntfs_name.encode("utf-16-le", "surrogatepass"),
                             digest_size=8).hexdigest()
    cut = data[:_LONG_PREFIX_MAX]
    try:
        prefix = cut.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start >= len(cut) - 3 and e.end == len(cut):  # a character split by the cut
            prefix = cut[:e.start].decode("utf-8", "surrogateescape")
        else:  # escaped bytes (unpaired surrogates) stay escaped: dropping them would leave
            # a name too short to be recognised as shortened (and so never found again)
            prefix = cut.decode("utf-8", "surrogateescape")
    return f"{prefix}~{digest}"


_utf16_decode = codecs.utf_16_le_decode


def from_raw(raw: bytes) -> str:
    """UTF-16LE bytes -> Linux name."""
    try:
        # the codec function itself: bytes.decode looks "utf-16-le" up on every call, 3/4
        # of the cost of decoding a short name (21 -> 5 ms for 50,000); final=True: a
        # trailing odd byte is an error, as with bytes.decode
        name = _utf16_decode(raw, "strict", True)[0]
        if "/" not in name and "\0" not in name and name not in (".", "..") and (
                len(name) * 3 <= NAME_MAX or len(name.encode("utf-8")) <= NAME_MAX):
            return name
        return to_linux(name)
    except UnicodeDecodeError:
        return to_linux(decode(raw))


def to_ntfs(linux_name: str) -> str:
    """Linux name -> NTFS name (inverse of :func:`to_linux` for names that fit).

    Raises ValueError (UnicodeError) for a str that no NTFS name maps to.
    """
    try:
        linux_name.encode("utf-8")
        return linux_name
    except UnicodeEncodeError:
        pass
    if linux_name in (_DOT, _DOT * 2):
        return "." * (len(linux_name) // 2)
    if "\udcc0" not in linux_name:
        return _from_wtf8(linux_name)
    pieces = linux_name.replace(_NUL, _SLASH + "\0").split(_SLASH)
    out = [_from_wtf8(pieces[0])]
    for piece in pieces[1:]:
        if piece.startswith("\0"):
            out.append("\0")
            piece = piece[1:]
        else:
            out.append("/")
        out.append(_from_wtf8(piece))
    return "".join(out)


def _from_wtf8(name: str) -> str:
    """Escaped bytes back to code points (generalised UTF-8: lone surrogates allowed)."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "surrogatepass")


def to_utf16(linux_name: str) -> bytes:
    """Linux name -> UTF-16LE bytes as stored on the volume."""
    return to_ntfs(linux_name).encode("utf-16-le", "surrogatepass")


def is_shortened(linux_name: str) -> bool:
    """True if the name has the shape of a shortened long name (``...~<16 hex>``)."""
    return (len(linux_name.encode("utf-8", "surrogateescape")) > _LONG_PREFIX_MAX
            and _LONG_RE.search(linux_name) is not None)
