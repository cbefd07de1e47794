"""Reparse points: tags, symlink/junction targets translated into the volume, and which
tags mean "the contents are elsewhere" (WOF, dedup, cloud, HSM, SIS).

Target convention (after ntfs-3g, made independent of the mount point). A link at
``/a/b/link`` (its directory is ``depth`` = 2 levels below the volume root):

* relative symlink ``..\\x\\y``        -> ``../x/y`` (backslashes become slashes, as stored)
* absolute ``\\??\\C:\\Users\\x`` (symlink or junction), found on this volume ->
  ``../../Users/x`` with the volume's real case (ntfs-3g: ``<mountpoint>/Users/x``)
* the same, not found on this volume -> ``../../.NTFS-3G/C:/Users/x`` (drive letter upper
  case; ntfs-3g: ``<mountpoint>/.NTFS-3G/C:/Users/x``, a place the user may populate)
* volume junction ``\\??\\Volume{guid}\\`` -> ``../../.NTFS-3G/Volume{guid}``
* drive-relative symlink ``\\Users\\x`` -> ``../../Users/x``
* other absolute forms (``\\??\\UNC\\srv\\share``) -> ``../../.NTFS-3G/UNC/srv/share``

A link in the root gets no ``../`` prefix. Targets are Linux names (names.py escaping).
"""

from __future__ import annotations

import struct

from streams.errors import FormatError
from streams.layout import Layout
from streams.record import Value

IO_REPARSE_TAG_MOUNT_POINT = 0xA0000003
IO_REPARSE_TAG_SYMLINK = 0xA000000C
IO_REPARSE_TAG_HSM = 0xC0000004
IO_REPARSE_TAG_HSM2 = 0x80000006
IO_REPARSE_TAG_SIS = 0x80000007
IO_REPARSE_TAG_WIM = 0x80000008
IO_REPARSE_TAG_CSV = 0x80000009
IO_REPARSE_TAG_DFS = 0x8000000A
IO_REPARSE_TAG_DFSR = 0x80000012
IO_REPARSE_TAG_DEDUP = 0x80000013
IO_REPARSE_TAG_NFS = 0x80000014
IO_REPARSE_TAG_WOF = 0x80000017
IO_REPARSE_TAG_WCI = 0x80000018
IO_REPARSE_TAG_GLOBAL_REPARSE = 0xA0000019
IO_REPARSE_TAG_CLOUD = 0x9000001A
IO_REPARSE_TAG_APPEXECLINK = 0x8000001B
IO_REPARSE_TAG_PROJFS = 0x9000001C
IO_REPARSE_TAG_LX_SYMLINK = 0xA000001D
IO_REPARSE_TAG_STORAGE_SYNC = 0x8000001E
IO_REPARSE_TAG_ONEDRIVE = 0x80000021
IO_REPARSE_TAG_AF_UNIX = 0x80000023
IO_REPARSE_TAG_LX_FIFO = 0x80000024
IO_REPARSE_TAG_LX_CHR = 0x80000025
IO_REPARSE_TAG_LX_BLK = 0x80000026

TAG_NAMES = {
    IO_REPARSE_TAG_MOUNT_POINT: "junction", IO_REPARSE_TAG_SYMLINK: "symlink",
    IO_REPARSE_TAG_HSM: "HSM", IO_REPARSE_TAG_HSM2: "HSM2", IO_REPARSE_TAG_SIS: "SIS",
    IO_REPARSE_TAG_WIM: "WIM", IO_REPARSE_TAG_CSV: "CSV", IO_REPARSE_TAG_DFS: "DFS",
    IO_REPARSE_TAG_DFSR: "DFSR", IO_REPARSE_TAG_DEDUP: "Data Deduplication",
    IO_REPARSE_TAG_NFS: "NFS", IO_REPARSE_TAG_WOF: "WOF (CompactOS)",
    IO_REPARSE_TAG_WCI: "Windows Container Isolation",
    IO_REPARSE_TAG_GLOBAL_REPARSE: "global reparse",
    IO_REPARSE_TAG_APPEXECLINK: "app execution alias", IO_REPARSE_TAG_PROJFS: "ProjFS",
    IO_REPARSE_TAG_LX_SYMLINK: "WSL symlink", IO_REPARSE_TAG_STORAGE_SYNC: "Azure File Sync",
    IO_REPARSE_TAG_ONEDRIVE: "OneDrive", IO_REPARSE_TAG_AF_UNIX: "WSL socket",
    IO_REPARSE_TAG_LX_FIFO: "WSL fifo", IO_REPARSE_TAG_LX_CHR: "WSL char device",
    IO_REPARSE_TAG_LX_BLK: "WSL block device",
}

WOF_ALGORITHMS = {0: "XPRESS4K", 1: "LZX", 2: "XPRESS8K", 3: "XPRESS16K"}

REPARSE_HEADER = Layout("ReparseHeader", "<IHH", "tag data_length reserved")
NAMES_HEADER = Layout("ReparseNames", "<HHHH", "subst_offset subst_length print_offset print_length")
SYMLINK_RELATIVE = 0x1


def tag_name(tag: int) -> str:
    if tag in TAG_NAMES:
        return TAG_NAMES[tag]
    if tag & 0xFFFF0FFF == IO_REPARSE_TAG_CLOUD:
        return "cloud files placeholder"
    return f"reparse tag {tag:#010x}"


def is_cloud(tag: int) -> bool:
    return tag & 0xFFFF0FFF == IO_REPARSE_TAG_CLOUD


# Tags whose file contents live outside the $DATA we can read.
CONTENT_ELSEWHERE = {IO_REPARSE_TAG_WOF, IO_REPARSE_TAG_DEDUP, IO_REPARSE_TAG_SIS,
                     IO_REPARSE_TAG_HSM, IO_REPARSE_TAG_HSM2, IO_REPARSE_TAG_WIM,
                     IO_REPARSE_TAG_STORAGE_SYNC, IO_REPARSE_TAG_PROJFS,
                     IO_REPARSE_TAG_ONEDRIVE}


class Reparse(Value):
    """A reparse point: its tag and what rpfs makes of it."""

    __slots__ = _fields = ("tag", "data", "target", "print_name", "relative")

    def __init__(self, tag: int, data: bytes, target: str | None = None,
                 print_name: str | None = None, relative: bool = False):
        self.tag = tag
        self.data = data              # the whole attribute value
        self.target = target          # substitute name (symlinks, junctions, WSL links)
        self.print_name = print_name
        self.relative = relative

    @property
    def name(self) -> str:
        return tag_name(self.tag)


def parse_reparse(value: bytes, where: dict) -> Reparse:
    if len(value) < 8:
        raise FormatError("reparse point too short", **where)
    h = REPARSE_HEADER.parse(value)
    body = value[8:8 + h.data_length]
    if len(body) < h.data_length:
        raise FormatError(f"reparse data length {h.data_length} past the attribute", **where)
    if h.tag in (IO_REPARSE_TAG_SYMLINK, IO_REPARSE_TAG_MOUNT_POINT):
        fixed = 12 if h.tag == IO_REPARSE_TAG_SYMLINK else 8
        if len(body) < fixed:
            raise FormatError("truncated link reparse data", **where)
        n = NAMES_HEADER.parse(body)
        flags = struct.unpack_from("<I", body, 8)[0] if fixed == 12 else 0
        buf = body[fixed:]

        def name(off, length):
            if off + length > len(buf) or length & 1:
                raise FormatError(f"link name ({off}+{length}) outside reparse data", **where)
            return buf[off:off + length].decode("utf-16-le", "surrogatepass")

        return Reparse(h.tag, value, name(n.subst_offset, n.subst_length),
                       name(n.print_offset, n.print_length),
                       bool(flags & SYMLINK_RELATIVE))
    if h.tag == IO_REPARSE_TAG_LX_SYMLINK:
        if len(body) < 4:
            raise FormatError("truncated WSL symlink", **where)
        return Reparse(h.tag, value, body[4:].decode("utf-8", "surrogateescape"), None, True)
    return Reparse(h.tag, value)


def wof_description(value: bytes) -> str:
    """'WOF (CompactOS) XPRESS4K' etc., from WOF_EXTERNAL_INFO + provider info."""
    if len(value) >= 16:
        _ver, provider = struct.unpack_from("<II", value, 8)
        if provider == 2 and len(value) >= 24:
            algo = struct.unpack_from("<I", value, 20)[0]
            return f"WOF-compressed ({WOF_ALGORITHMS.get(algo, f'algorithm {algo}')})"
        if provider == 1:
            return "WOF-backed by a WIM image"
    return "WOF-compressed (unknown provider)"
