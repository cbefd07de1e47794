"""BitLocker volumes: detection, unlocking with the user's keys, decryption as a stream.

    is_bitlocker(stream) -> bool                  one 512-byte read
    open_volume(stream, keys) -> BitLockerVolume  decrypted view; LockedError without a key
    describe(stream, keys) -> dict                what ``rpfs info`` shows (never a key)

A partition is passed through ``unwrap(stream, keys)`` before NTFS is looked for: a plain
partition comes back as it is, a BitLocker one decrypted (or an error saying what to give).
"""

from __future__ import annotations

from streams.errors import FormatError, LockedError
from streams.stream import Stream

__all__ = ["KeyRing", "BitLockerVolume", "is_bitlocker", "open_volume", "describe", "unwrap",
           "partition_info"]

# The OEM id (bytes 3-10) of every BitLocker volume header (To Go: "MSWIN4.1"). Every
# partition is checked, so the check costs one 8-byte read and imports nothing: the
# parsers and the cipher (construct, ~15 modules) load with the first BitLocker volume.
SIGNATURES = (b"-FVE-FS-", b"MSWIN4.1")
_LAZY = {"KeyRing": "keys", "NO_KEYS": "keys", "LockedReason": "keys", "unlock": "keys",
         "Metadata": "metadata", "probe": "metadata", "read_copies": "metadata",
         "BitLockerVolume": "volume"}


def __getattr__(name: str):
    """The names this package re-exports from its modules, imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


def is_bitlocker(stream: Stream) -> bool:
    if stream.read(3, 8) not in SIGNATURES:
        return False
    from formats.bitlocker.metadata import probe

    try:
        return probe(stream) is not None
    except FormatError:
        return True  # recognised (e.g. a Vista header naming no metadata) but not readable


def _copies(stream: Stream) -> list[Metadata]:
    from formats.bitlocker.metadata import probe, read_copies

    found = probe(stream)
    if found is None:
        raise FormatError("not a BitLocker volume", source=stream.name,
                          structure="BitLocker volume header", offset=0)
    return read_copies(stream, found)


def open_volume(stream: Stream, keys: KeyRing | None = None) -> BitLockerVolume:
    """The decrypted volume. Each metadata copy that parses is tried in turn, so damage to
    one copy's key entries does not lock the volume."""
    from formats.bitlocker.keys import NO_KEYS, LockedReason, unlock
    from formats.bitlocker.volume import BitLockerVolume

    keys = keys or NO_KEYS
    copies = _copies(stream)
    reasons = []
    if copies[0].fvek is None:  # decrypted, keys removed: nothing to unlock
        return BitLockerVolume(stream, copies[0], None)
    for meta in copies:
        try:
            fvek, _ = unlock(meta, keys)
        except LockedReason as e:
            reasons.append(str(e))
            continue
        return BitLockerVolume(stream, meta, fvek)
    raise LockedError(f"{stream.name}: {reasons[0]}")


def unwrap(stream: Stream, keys: KeyRing | None = None) -> Stream:
    """``stream`` itself if it is not BitLocker, else its decrypted view (or an error)."""
    if not is_bitlocker(stream):
        return stream
    return open_volume(stream, keys)


def describe(stream: Stream, keys: KeyRing | None = None) -> dict:
    """Version, method, state, protectors and whether ``keys`` unlock it (never a key)."""
    from formats.bitlocker.keys import NO_KEYS

    keys = keys or NO_KEYS
    out = _copies(stream)[0].summary()
    try:
        vol = open_volume(stream, keys)
        out["unlocked"] = True
        out["conversion"] = vol.map.summary
    except LockedError as e:
        out["unlocked"] = False
        out["locked"] = str(e).split(": ", 1)[-1]
    return out


def partition_info(stream: Stream, keys: KeyRing | None, open_fs) -> dict:
    """The ``rpfs info`` fields of a BitLocker partition: ``bitlocker`` (see ``describe``)
    and, once unlocked, what ``open_fs`` finds in the decrypted volume."""
    try:
        out = {"bitlocker": describe(stream, keys), "filesystem": None}
    except FormatError as e:
        return {"filesystem": None, "error": f"BitLocker: {e}"}
    if not out["bitlocker"]["unlocked"]:
        out["note"] = out["bitlocker"].pop("locked")
        return out
    vol = open_fs(open_volume(stream, keys))
    if isinstance(vol, Exception):
        out["error"] = str(vol)
    elif vol is None:
        out["note"] = "BitLocker volume unlocked; no NTFS file system inside (export it raw)"
    else:
        out["filesystem"] = "ntfs"
    return out
