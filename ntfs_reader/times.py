"""NTFS's four $STANDARD_INFORMATION timestamps (NT ticks; conversions in streams.times)."""

from __future__ import annotations

from typing import NamedTuple

from streams.times import nt_to_unix_ns


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
