"""NTFS's four $STANDARD_INFORMATION timestamps (NT ticks; conversions in streams.times)."""

from __future__ import annotations

from collections import namedtuple

from streams.times import nt_to_unix_ns


class Times(namedtuple("Times", "created modified changed accessed")):
    """The four $STANDARD_INFORMATION times as raw NT ticks (ints), with Unix-ns views (a
    named tuple: one is made for every directory index entry listed; collections', as every
    named tuple on a mount's way to its first listing: typing's is a 157 KB module to load).

    ``changed`` is NTFS's "MFT record changed" time, which is what ctime means on Linux
    (ntfs-3g maps it the same way).
    """

    __slots__ = ()

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
