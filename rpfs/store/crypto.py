"""Keys and sealing: what turns a repository's objects into ciphertext, and chunks into ids.

Two flavours with one interface. ``Plain`` (no encryption): chunk ids are BLAKE3 of the
data, chunk payloads are stored as they are (the id check on read is their integrity), and
small objects carry a BLAKE3 digest. ``Sealed``: a random 256-bit data key encrypts every
chunk payload and every small object with AES-256-GCM (12-byte random nonce in front, tag
behind; the associated data binds a ciphertext to its chunk id or object key, so objects
cannot be swapped), and chunk ids are BLAKE3 *keyed* with a second random key, so equal
plaintext gives unrelated ids in two repositories and no id reveals a known file's hash.

Both keys live in the repository's key file (``keys/default``), wrapped with a key derived
from the passphrase by scrypt (memory-hard). The passphrase is asked of
``StoreOptions.passphrase`` (the CLI's reads ``RPFS_PASSWORD``, the file named by
``RPFS_PASSWORD_FILE``, or the terminal: rpfs/cli/options.py); never argv, never logged.
"""

from __future__ import annotations

import json
import os

import blake3

from streams.errors import FormatError, IntegrityError, RpfsError, UsageError

KEY_OBJECT = "keys/default"
NONCE = 12
TAG = 16
# scrypt N=2^15, r=8: 32 MiB and ~0.1 s per open here; RFC 7914's interactive setting
SCRYPT = {"n": 1 << 15, "r": 8, "p": 1}


class WrongPassphrase(RpfsError):
    """The passphrase does not open the repository's key file."""


class Plain:
    encrypted = False

    @staticmethod
    def chunk_id(data) -> bytes:
        return blake3.blake3(data).digest()

    def object_id(self, data: bytes) -> str:
        """A name for a content-addressed object (chunk maps): 128 bits of its id, hex."""
        return self.chunk_id(data)[:16].hex()

    @staticmethod
    def seal_chunk(payload: bytes, chunk_id: bytes) -> bytes:
        return payload

    @staticmethod
    def open_chunk(stored: bytes, chunk_id: bytes) -> bytes:
        return stored

    # framed chunks (frames.py): the table carries a digest bound to the chunk id, and
    # one plaintext digest per frame; frames themselves are stored as they are
    @staticmethod
    def frame_digest(data) -> bytes:
        return blake3.blake3(data).digest()

    @staticmethod
    def seal_frame(payload, chunk_id: bytes, index: int) -> bytes:
        return payload

    @staticmethod
    def open_frame(stored: bytes, chunk_id: bytes, index: int) -> bytes:
        return stored

    @staticmethod
    def seal_table(table: bytes, chunk_id: bytes) -> bytes:
        return table + blake3.blake3(b"frames\0" + chunk_id + table).digest()

    @staticmethod
    def open_table(stored: bytes, chunk_id: bytes) -> bytes:
        table, digest = stored[:-32], stored[-32:]
        if len(stored) < 32 or blake3.blake3(b"frames\0" + chunk_id + table).digest() != digest:
            raise IntegrityError(f"chunk {chunk_id.hex()[:16]}: frame table fails its checksum")
        return table

    @staticmethod
    def seal_object(data: bytes, key: str) -> bytes:
        return data + blake3.blake3(key.encode() + b"\0" + data).digest()

    @staticmethod
    def open_object(stored: bytes, key: str) -> bytes:
        data, digest = stored[:-32], stored[-32:]
        if len(stored) < 32 or blake3.blake3(key.encode() + b"\0" + data).digest() != digest:
            raise IntegrityError(f"object {key} fails its checksum")
        return data


class Sealed(Plain):
    encrypted = True

    def __init__(self, data_key: bytes, id_key: bytes):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(data_key)
        self._id_key = id_key

    def chunk_id(self, data) -> bytes:
        return blake3.blake3(data, key=self._id_key).digest()

    def _seal(self, data, aad: bytes) -> bytes:
        nonce = os.urandom(NONCE)
        return nonce + self._aead.encrypt(nonce, bytes(data), aad)

    def _open(self, stored: bytes, aad: bytes, what: str) -> bytes:
        from cryptography.exceptions import InvalidTag

        if len(stored) < NONCE + TAG:
            raise IntegrityError(f"{what} too short to be sealed ({len(stored)} bytes)")
        try:
            return self._aead.decrypt(stored[:NONCE], stored[NONCE:], aad)
        except InvalidTag:
            raise IntegrityError(f"{what} fails authentication") from None

    def seal_chunk(self, payload, chunk_id: bytes) -> bytes:
        return self._seal(payload, b"chunk\0" + chunk_id)

    def open_chunk(self, stored: bytes, chunk_id: bytes) -> bytes:
        return self._open(stored, b"chunk\0" + chunk_id, f"chunk {chunk_id.hex()[:16]}")

    # framed chunks: the table and every frame are AEAD messages of their own, bound to the
    # chunk id (and the frame to its number), so a frame is authenticated alone
    @staticmethod
    def frame_digest(data) -> bytes:
        return b""

    def seal_frame(self, payload, chunk_id: bytes, index: int) -> bytes:
        return self._seal(payload, b"frame\0" + chunk_id + index.to_bytes(4, "little"))

    def open_frame(self, stored, chunk_id: bytes, index: int) -> bytes:
        return self._open(bytes(stored), b"frame\0" + chunk_id + index.to_bytes(4, "little"),
                          "ciphertext")

    def seal_table(self, table: bytes, chunk_id: bytes) -> bytes:
        return self._seal(table, b"frames\0" + chunk_id)

    def open_table(self, stored: bytes, chunk_id: bytes) -> bytes:
        return self._open(stored, b"frames\0" + chunk_id, f"chunk {chunk_id.hex()[:16]} frame table")

    def seal_object(self, data: bytes, key: str) -> bytes:
        return self._seal(data, b"object\0" + key.encode())

    def open_object(self, stored: bytes, key: str) -> bytes:
        return self._open(stored, b"object\0" + key.encode(), f"object {key}")


def _kek(passphrase: str, salt: bytes, p: dict) -> bytes:
    import hashlib

    return hashlib.scrypt(passphrase.encode(), salt=salt, n=p["n"], r=p["r"], p=p["p"],
                          maxmem=256 << 20, dklen=32)


def new_key_file(passphrase: str) -> tuple[bytes, Sealed]:
    """A fresh pair of random keys, wrapped with ``passphrase``: (key file bytes, keys)."""
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    data_key, id_key = os.urandom(32), os.urandom(32)
    salt, nonce = os.urandom(16), os.urandom(NONCE)
    wrapped = AESGCM(_kek(passphrase, salt, SCRYPT)).encrypt(nonce, data_key + id_key, b"rpfs key")
    import base64   # here: only encrypted repositories have a key file

    b64 = lambda b: base64.b64encode(b).decode()   # noqa: E731
    doc = {"version": 1, "kdf": "scrypt", **SCRYPT, "salt": b64(salt), "cipher": "aes-256-gcm",
           "nonce": b64(nonce), "keys": b64(wrapped)}
    return (json.dumps(doc, indent=1) + "\n").encode(), Sealed(data_key, id_key)


def open_key_file(raw: bytes, passphrase: str, where: str) -> Sealed:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    import base64

    try:
        doc = json.loads(raw)
        p = {k: int(doc[k]) for k in ("n", "r", "p")}
        salt, nonce, wrapped = (base64.b64decode(doc[k]) for k in ("salt", "nonce", "keys"))
        if doc.get("kdf") != "scrypt" or doc.get("cipher") != "aes-256-gcm":
            raise ValueError("unknown kdf or cipher")
        if not (2 <= p["n"] <= 1 << 20 and p["r"] * p["p"] <= 64 and len(nonce) == NONCE):
            raise ValueError("kdf parameters out of range")
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"unreadable key file: {e}", source=where, structure="key file") from None
    try:
        keys = AESGCM(_kek(passphrase, salt, p)).decrypt(nonce, wrapped, b"rpfs key")
    except InvalidTag:
        raise WrongPassphrase(f"{where}: wrong passphrase") from None
    if len(keys) != 64:
        raise FormatError("key file holds keys of the wrong size", source=where, structure="key file")
    return Sealed(keys[:32], keys[32:])
