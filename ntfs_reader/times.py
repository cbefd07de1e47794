"""NT timestamps: 100 ns ticks since 1601-01-01 UTC, converted to ns since the Unix epoch.

Pre-1970 times come out negative; far-future times stay plain Python ints (no overflow).
"""

from __future__ import annotations

from typing import NamedTuple

NT_EPOCH_OFFSET = 116_444_736_000_000_000  # ticks from 1601-01-01 to 1970-01-01


def nt_to_unix_ns(ticks: int) -> int:
    """NT ticks -> ns since 1970 (exact: one tick is 100 ns)."""
    return (ticks - NT_EPOCH_OFFSET) * 100


def unix_ns_to_nt(ns: int) -> int:
    """ns since 1970 -> NT ticks (truncated to 100 ns)."""
    return ns // 100 + NT_EPOCH_OFFSET


class Times(NamedTuple):
    """The four $STANDARD_INFORMATION times as raw NT ticks, with Unix-ns views (a named
    tuple: one is made for every directory index entry listed).

    ``changed`` is NTFS's "MFT record changed" time, which is what ctime means on Linux
    (ntfs-3g maps it the same way).
    """

    created: int
    modified: int
    changed: int
    accessed: int

    @property
    def st_birthtime_ns(self) -> int:
        return nt_to_unix_ns(self.created)

    @property
    def st_mtime_ns(self) -> int:
        return nt_to_unix_ns(self.modified)

    @property
    def st_ctime_ns(self) -> int:
        return nt_to_unix_ns(self.changed)

    @property
    def st_atime_ns(self) -> int:
        return nt_to_unix_ns(self.accessed)
