"""Unlocking: from what the user gave in ``--keys FILE`` to the volume's FVEK.

Each protector wraps the volume master key (VMK) with AES-CCM under a key of its own: a
password or a recovery password stretched with SHA-256 (2^20 rounds over the protector's
salt), the 32-byte key in a startup key (.BEK) file, or — when protection is suspended — a
clear key stored beside it. The VMK unwraps the FVEK. A wrong key fails CCM's
authentication, so a wrong guess is never mistaken for a right one.

Secrets live only in memory: nothing here logs, prints or puts them in an error message.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from formats.bitlocker.fvecrypt import stretch
from formats.bitlocker.metadata import (ENTRY_STARTUP_KEY, VALUE_EXTERNAL_KEY, VALUE_KEY,
                                        Metadata, Protector, WrappedKey, parse_entries)
from streams.errors import FormatError, UsageError

RECOVERY_RE = re.compile(r"^\d{6}(-?\d{6}){7}$")
MAX_KEYS_FILE = 1 << 20
MAX_BEK = 64 << 10


@dataclass(frozen=True, repr=False)
class Key:
    """One line of the keys file. ``repr`` never shows the secret."""

    kind: str        # "password", "recovery password", "startup key"
    secret: bytes    # UTF-16LE password / 16-byte recovery key / BEK file contents
    line: int

    def __repr__(self) -> str:
        return f"<Key {self.kind} (line {self.line})>"


def recovery_key(text: str) -> bytes | None:
    """The 16 bytes a 48-digit recovery password stands for, or None if it is not one:
    each 6-digit group is a multiple of 11 whose quotient fits 16 bits."""
    if not RECOVERY_RE.match(text):
        return None
    digits = text.replace("-", "")
    out = bytearray()
    for i in range(0, 48, 6):
        n = int(digits[i:i + 6])
        if n % 11 or n // 11 > 0xFFFF:
            return None
        out += (n // 11).to_bytes(2, "little")
    return bytes(out)


class KeyRing:
    """The keys from ``--keys FILE``, tried on every BitLocker volume; stretched keys are
    cached per salt so a key is stretched once per protector, not once per read."""

    def __init__(self, keys: list[Key], source: str = "keys"):
        self.keys = keys
        self.source = source
        self._stretched: dict[tuple, bytes] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "KeyRing":
        """Read a keys file: one recovery password, password or .BEK path per line; blank
        lines and lines starting with ``#`` are skipped. Errors name the line, never its text."""
        p = Path(path)
        try:
            with open(p, "rb") as f:
                raw = f.read(MAX_KEYS_FILE + 1)
        except OSError as e:
            raise UsageError(f"{path}: cannot read keys file ({e.strerror})") from None
        if len(raw) > MAX_KEYS_FILE:
            raise UsageError(f"{path}: keys file is larger than {MAX_KEYS_FILE} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UsageError(f"{path}: keys file is not UTF-8 text") from None
        keys = []
        for n, line in enumerate(text.splitlines(), 1):
            line = line.rstrip("\r")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            rk = recovery_key(line.strip())
            if rk is not None:
                keys.append(Key("recovery password", rk, n))
            elif line.strip().lower().endswith(".bek"):
                bek = (p.parent / line.strip()).expanduser()
                try:
                    with open(bek, "rb") as f:
                        data = f.read(MAX_BEK + 1)
                except OSError as e:
                    raise UsageError(f"{path}: line {n}: cannot read the .BEK file it names "
                                     f"({e.strerror})") from None
                keys.append(Key("startup key", data, n))
            else:
                keys.append(Key("password", line.encode("utf-16-le"), n))
        if not keys:
            raise UsageError(f"{path}: no keys in the keys file")
        return cls(keys, str(path))

    # -- unwrapping ----------------------------------------------------------------------

    def _stretch(self, key: Key, salt: bytes) -> bytes:
        ck = (id(key), salt)
        with self._lock:
            hit = self._stretched.get(ck)
        if hit is None:
            if key.kind == "password":
                initial = sha256(sha256(key.secret).digest()).digest()
            else:
                initial = sha256(key.secret).digest()
            hit = stretch(initial, salt)
            with self._lock:
                self._stretched[ck] = hit
        return hit

    def candidates(self, p: Protector):
        """Wrapping keys to try on protector ``p`` (only those that can fit it)."""
        if p.kind == 0x0000 and p.clear_key:
            yield p.clear_key
            return
        for key in self.keys:
            if p.kind == 0x2000 and key.kind == "password" and p.salt:
                yield self._stretch(key, p.salt)
            elif p.kind == 0x0800 and key.kind == "recovery password" and p.salt:
                yield self._stretch(key, p.salt)
            elif p.kind == 0x0200 and key.kind == "startup key":
                k = bek_key(key.secret, p.guid)
                if k is not None:
                    yield k


NO_KEYS = KeyRing([], "no keys")


def bek_key(data: bytes, vmk_guid: uuid.UUID) -> bytes | None:
    """The 32-byte external key in a .BEK file made for the VMK ``vmk_guid``, else None."""
    if len(data) < 48 + 8 or int.from_bytes(data[:4], "little") != len(data):
        return None
    if uuid.UUID(bytes_le=data[16:32]) != vmk_guid:
        return None
    try:
        entries = parse_entries(data, 48, len(data), "BEK file", 0)
    except FormatError:
        return None
    for e in entries:
        if e.type == ENTRY_STARTUP_KEY and e.value_type == VALUE_EXTERNAL_KEY and len(e.data) > 24:
            start = e.offset + 8 + 24
            try:
                subs = parse_entries(data, start, e.offset + 8 + len(e.data), "BEK file", 0)
            except FormatError:
                return None
            for s in subs:
                if s.value_type == VALUE_KEY and len(s.data) >= 4 + 32:
                    return s.data[4:4 + 32]
    return None


def unwrap(wrapped: WrappedKey, key: bytes) -> bytes | None:
    """The key inside an AES-CCM key entry, or None if ``key`` is not the one that wrapped it.

    The plaintext is itself a key entry: size (2), type, value type, version, method (4),
    then the key bytes."""
    if len(key) not in (16, 24, 32):
        return None
    # cryptography costs ~20 ms to import: only volumes that are BitLocker need it
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESCCM

    try:
        plain = AESCCM(key, tag_length=16).decrypt(wrapped.nonce, wrapped.ciphertext + wrapped.tag, None)
    except (InvalidTag, ValueError):
        return None
    if len(plain) < 12 + 16 or int.from_bytes(plain[:2], "little") != len(plain):
        return None
    return plain[12:]


class LockedReason(Exception):
    """Why no key unlocked a volume (turned into a one-line error by the caller)."""


def unlock(meta: Metadata, keys: KeyRing) -> tuple[bytes, Protector]:
    """The FVEK (key bytes as stored) and the protector that gave it; LockedReason if none."""
    for p in meta.protectors:
        if not p.usable:
            continue
        for wrapping in keys.candidates(p):
            vmk = unwrap(p.wrapped, wrapping)
            if vmk is None:
                continue
            fvek = unwrap(meta.fvek, vmk[:32])
            if fvek is None:
                raise LockedReason(f"the {p.name} protector opened the VMK but the FVEK "
                                   "does not unwrap with it (damaged metadata)")
            return fvek, p
    raise LockedReason(explain(meta, keys))


def explain(meta: Metadata, keys: KeyRing) -> str:
    """One line: which protectors exist, and what to give (or why nothing can be given)."""
    names = [p.name if p.usable else f"{p.name} (cannot be used here)" for p in meta.protectors]
    have = ", ".join(dict.fromkeys(names)) or "none"
    usable = [p for p in meta.protectors if p.usable]
    if not usable:
        return (f"BitLocker volume is locked and has no protector rpfs can use (protectors: "
                f"{have}): TPM and smart card keys stay in the machine or card that holds "
                "them; give the recovery password with --keys FILE")
    if not keys.keys:
        return (f"BitLocker volume is locked (protectors: {have}): give its recovery "
                "password, password or .BEK file with --keys FILE")
    n = len(keys.keys)
    return (f"BitLocker volume is locked: none of the {n} key{'s' if n != 1 else ''} in "
            f"{keys.source} unlocks it (protectors: {have})")
