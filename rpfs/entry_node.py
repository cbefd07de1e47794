"""The part every file system's entry node shares (NTFS, ext4, XFS, Btrfs): made from a
directory entry, the kind known early, the attributes read once, and damage remembered —
an entry whose metadata failed to parse is still listed (as a file) and raises the same
error whenever used, without parsing again, so damage stays confined to it.
"""

from __future__ import annotations

from streams.errors import FormatError, RpfsError
from rpfs.node import Attr, Node


class EntryNode(Node):
    """Subclasses set ``entry``, ``volume_key``, ``name`` and ``_kind`` (None if the
    directory entry did not tell), give ``key`` (a slot, or made when asked) and implement ``_read_kind`` and ``_read_attr``;
    ``_attr_read`` runs once after the attributes were read (to let parsed data go)."""

    __slots__ = ("entry", "volume_key", "name", "_kind", "_attr", "_error")

    def _damaged(self, e: RpfsError) -> RpfsError:
        """Remember a parse error (not a passing I/O one) and hand it back to raise."""
        if isinstance(e, FormatError):
            self._error = e
        return e

    def _check(self) -> None:
        if self._error is not None:
            raise self._error

    def _read_kind(self) -> str:
        raise NotImplementedError

    def _read_attr(self) -> Attr:
        raise NotImplementedError

    def _attr_read(self) -> None:
        pass

    @property
    def kind(self) -> str:
        if self._kind is None:
            if self._error is not None:
                return "file"
            try:
                self._kind = self._read_kind()
            except RpfsError as err:  # listed, and answers EIO when used
                self._damaged(err)
                return "file"
        return self._kind

    def attr(self) -> Attr:
        if self._attr is None:
            self._check()
            try:
                self._attr = self._read_attr()
            except RpfsError as err:
                raise self._damaged(err) from None
            self._attr_read()
        return self._attr

    def attr_if_known(self) -> Attr | None:
        return self._attr
