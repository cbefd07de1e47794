"""Runlists (mapping pairs): VCN -> LCN runs of a non-resident attribute.

Decoding is the hot loop of every file open, so it uses plain int.from_bytes on slices,
not construct. A run is ``(vcn, length, lcn)`` with ``lcn`` None for a sparse run.
"""

from __future__ import annotations

from streams.errors import FormatError

from . import native

Run = tuple  # (vcn, length, lcn | None)


def decode_runlist(data: bytes, pos: int, end: int, first_vcn: int, total_clusters: int,
                   source: str = "<volume>", structure: str = "runlist",
                   base_offset: int = 0) -> list[Run]:
    """Mapping pairs in ``data[pos:end]`` -> runs starting at ``first_vcn``.

    Every run must have a positive length and lie inside the volume (``total_clusters``);
    anything else is a FormatError naming the byte where it was found.
    """
    p = native.parser
    if p is not None:
        runs = p.decode_runlist(data, pos, end, first_vcn, total_clusters)
        if runs is not None:
            return runs
    return decode_runlist_python(data, pos, end, first_vcn, total_clusters, source, structure,
                                 base_offset)


def decode_runlist_python(data: bytes, pos: int, end: int, first_vcn: int,
                          total_clusters: int, source: str = "<volume>",
                          structure: str = "runlist", base_offset: int = 0) -> list[Run]:
    """The reference twin of decode_runlist (and what reports a bad runlist)."""
    runs: list[Run] = []
    vcn = first_vcn
    lcn = 0
    from_bytes = int.from_bytes
    while pos < end:
        header = data[pos]
        if header == 0:
            return runs
        len_size = header & 0x0F
        off_size = header >> 4
        start = pos + 1
        mid = start + len_size
        nxt = mid + off_size
        if len_size == 0 or len_size > 8 or off_size > 8 or nxt > end:
            raise FormatError(f"bad mapping pair header {header:#04x}", source=source,
                              structure=structure, offset=base_offset + pos)
        length = from_bytes(data[start:mid], "little", signed=True)
        if length <= 0:
            raise FormatError(f"run length {length}", source=source, structure=structure,
                              offset=base_offset + pos)
        if off_size == 0:
            runs.append((vcn, length, None))
        else:
            lcn += from_bytes(data[mid:nxt], "little", signed=True)
            if lcn < 0 or lcn + length > total_clusters:
                raise FormatError(
                    f"run of {length} clusters at LCN {lcn} lies outside the volume "
                    f"({total_clusters} clusters)",
                    source=source, structure=structure, offset=base_offset + pos)
            runs.append((vcn, length, lcn))
        vcn += length
        pos = nxt
    raise FormatError("runlist not terminated", source=source, structure=structure,
                      offset=base_offset + pos)
