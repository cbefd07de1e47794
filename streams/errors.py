"""Typed errors shared by every layer.

Each subclasses the builtin it resembles so a boundary can map it mechanically: the CLI
prints ``str(error)`` as one line and exits with ``exit_code``; the mount turns it into the
``errno`` (EIO for damage, ENOENT for a missing name) for that object only.
"""

from __future__ import annotations

import errno as _errno


class RpfsError(Exception):
    """Base of every error a user may see. ``str()`` is one complete line."""

    exit_code = 1
    errno = _errno.EIO


class FormatError(RpfsError, ValueError):
    """A structure is corrupt, truncated or hostile.

    ``source`` names the file or stream, ``structure`` the thing being parsed (e.g.
    "VHDX header 2", "MFT record 1234", "GPT entry array") and ``offset`` where it sits
    in ``source``.
    """

    def __init__(self, message: str, *, source: str | None = None,
                 structure: str | None = None, offset: int | None = None):
        self.message = message
        self.source = source
        self.structure = structure
        self.offset = offset
        super().__init__(message)

    def __str__(self) -> str:
        where = []
        if self.source:
            where.append(str(self.source))
        if self.structure:
            where.append(self.structure)
        if self.offset is not None:
            where.append(f"offset {self.offset:#x}")
        return f"{': '.join(where)}: {self.message}" if where else self.message


class UnsupportedError(FormatError):
    """Recognised but not readable (LDM, Storage Spaces, WOF-compressed, EFS, ...).

    Never returned as zeros: the caller gets this and says why.
    """

    errno = _errno.EOPNOTSUPP


class ChainError(FormatError):
    """A differencing disk's parent is missing or does not match."""


class IntegrityError(RpfsError):
    """Stored data does not match its hash, or a referenced chunk is missing."""


class NotFoundError(RpfsError, FileNotFoundError):
    """A path in the namespace, a VM or a recovery point does not exist."""

    errno = _errno.ENOENT
    exit_code = 2


class UsageError(RpfsError):
    """The user asked for something that cannot be done as asked."""

    exit_code = 2
    errno = _errno.EINVAL


class TooLargeError(RpfsError):
    """A value too large for where it was asked to go: an alternate data stream asked for
    as an extended attribute when it is over the 64 KiB an extended attribute can hold.
    Nothing is read: the size is checked first."""

    errno = _errno.E2BIG


class LockedError(RpfsError, PermissionError):
    """An encrypted volume (BitLocker) that no key given unlocks. Never names a key."""

    errno = _errno.EACCES
