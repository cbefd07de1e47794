"""Recovery points and chunk maps as repository objects: the truth the catalog is rebuilt from.

- ``maps/<name>``: one file's chunk map as the chunk ids (32 bytes each; 32 zero bytes = an
  all-zero chunk). Content-addressed (name = keyed id of the map), so an unchanged file
  shares one map object across recovery points.
- ``index/<name>``: a pack manifest (the prefix is the on-disk name, kept so existing
  repositories open): the packs one backup (or gc) wrote, per pack its name, size and
  entries (the same entries as the pack's own entry table), so a rebuild reads one object
  per backup instead of the tail of every pack (like restic's index files). Only an
  accelerator: a pack no manifest covers is read from its own tail.
- ``rps/<name>``: one recovery point as JSON (VM, name, time, sizes, and per file its path,
  size, map name and source identity). The name is derived from (VM, recovery point name),
  so the catalog knows which object each of its recovery points has.
- ``scans/<name>``: the change analysis of that recovery point (rpfs/analysis.py), JSON,
  under the same name as its ``rps/`` object; not part of the catalog (read when asked
  for), so a catalog rebuild keeps every verdict. prune deletes it with the recovery point.
- ``forget/<name>``: a prune's decision, JSON: the recovery points (VM, name) it forgets,
  written with one put before any of them is touched; while it exists they count as gone
  (maintenance/forget.py). Name: 128 random bits.

Every object is ``RPFSOBJ1`` + sealed(zstd(body)) (crypto.py: a digest, or AES-256-GCM bound
to the object's key). Packs carry their own entry table (packs.py), so with these two kinds every
catalog row can be rebuilt. Write order in a backup: packs, maps, the recovery point object,
then the catalog transaction; the recovery point object is what makes it exist.
"""

from __future__ import annotations

import json
import os
import struct

import zstandard

from streams.errors import FormatError, IntegrityError
from rpfs.store.packs import TABLE_ENTRY_SIZE, TRAILER_SIZE, PackEntry, encode_entry_table, parse_entry_table

MAGIC = b"RPFSOBJ1"
RPS, MAPS, PACK_MANIFESTS, SCANS, FORGET = "rps", "maps", "index", "scans", "forget"
_PACK = struct.Struct("<16sQI")     # pack name (128 bits), size, entry count
ZERO_ID = bytes(32)
MAX_OBJECT = 1 << 30


def rp_object_name(crypto, vm: str, name: str) -> str:
    return crypto.object_id(b"rp\0" + vm.encode() + b"\0" + name.encode())


def encode(crypto, key: str, body: bytes) -> bytes:
    return MAGIC + crypto.seal_object(zstandard.ZstdCompressor(level=3).compress(body), key)


def decode(crypto, key: str, raw: bytes) -> bytes:
    if raw[:8] != MAGIC:
        raise FormatError("bad magic", source=key, structure="repository object", offset=0)
    packed = crypto.open_object(raw[8:], key)
    try:
        # a frame declaring its size gets that much allocated whatever max_output_size says
        declared = zstandard.frame_content_size(packed)
        if declared > MAX_OBJECT:
            raise IntegrityError(f"object {key}: zstd frame declares {declared} bytes")
        return zstandard.ZstdDecompressor().decompress(packed, max_output_size=MAX_OBJECT)
    except zstandard.ZstdError as e:
        raise IntegrityError(f"object {key}: {e}") from None


def put_map(repo, hashes) -> str:
    """Store a chunk map (hashes, None = zeros); returns its name. Existing: left as it is."""
    body = b"".join(h or ZERO_ID for h in hashes)
    name = repo.crypto.object_id(b"map\0" + body)
    key = f"{MAPS}/{name}"
    repo.backend.put_object(key, encode(repo.crypto, key, body))
    return name


def get_map(repo, name: str) -> list[bytes | None]:
    key = f"{MAPS}/{name}"
    raw = repo.backend.get_object(key)
    if raw is None:
        raise IntegrityError(f"chunk map {name} is missing")
    body = decode(repo.crypto, key, raw)
    if len(body) % 32:
        raise FormatError(f"length {len(body)} not a multiple of 32", source=key, structure="chunk map")
    return [None if body[i:i + 32] == ZERO_ID else body[i:i + 32] for i in range(0, len(body), 32)]


def put_recovery_point(repo, info: dict, files: list[dict]) -> str:
    """``info``: vm, name, time, logical_size, stored_size, file_count, new_chunks,
    chunk_size, created; ``files``: path, size, map, mtime_ns, ctime_ns, inode, dev."""
    name = rp_object_name(repo.crypto, info["vm"], info["name"])
    key = f"{RPS}/{name}"
    body = json.dumps({"version": 1, **info, "files": files}, separators=(",", ":")).encode()
    raw = encode(repo.crypto, key, body)
    if not repo.backend.put_object(key, raw):
        # left by a run killed before its catalog commit: this run replaces it (writer lock held)
        repo.backend.delete_object(key)
        repo.backend.put_object(key, raw)
    return name


def get_recovery_point(repo, name: str) -> dict:
    key = f"{RPS}/{name}"
    raw = repo.backend.get_object(key)
    if raw is None:
        raise IntegrityError(f"recovery point object {name} is missing")
    try:
        d = json.loads(decode(repo.crypto, key, raw))
        ok = (isinstance(d, dict) and isinstance(d.get("vm"), str) and isinstance(d.get("name"), str)
              and isinstance(d.get("files"), list) and isinstance(d.get("chunk_size"), int)
              and all(isinstance(f, dict) and isinstance(f.get("path"), str)
                      and isinstance(f.get("size"), int) and isinstance(f.get("map"), str)
                      for f in d["files"]))
    except (ValueError, UnicodeDecodeError):
        ok = False
    if not ok:
        raise FormatError("not a recovery point", source=key, structure="recovery point object")
    return d


def put_pack_manifest(repo, packs: list[tuple[str, int, list[PackEntry]]]) -> str:
    """One pack manifest object for ``packs`` (name, size, entries)."""
    body = b"".join(_PACK.pack(bytes.fromhex(n), size, len(es)) + encode_entry_table(es) for n, size, es in packs)
    name = repo.crypto.object_id(b"index\0" + body)
    key = f"{PACK_MANIFESTS}/{name}"
    repo.backend.put_object(key, encode(repo.crypto, key, body))
    return name


def get_pack_manifest(repo, name: str) -> dict[str, tuple[int, list[PackEntry]]]:
    """pack name -> (size, entries), every entry checked as a pack's own entry table is."""
    key = f"{PACK_MANIFESTS}/{name}"
    raw = repo.backend.get_object(key)
    if raw is None:
        raise IntegrityError(f"index object {name} is missing")
    body = decode(repo.crypto, key, raw)
    out, at = {}, 0
    while at < len(body):
        if at + _PACK.size > len(body):
            raise FormatError("truncated", source=key, structure="index object", offset=at)
        pack, size, count = _PACK.unpack_from(body, at)
        at += _PACK.size
        table_offset = size - TRAILER_SIZE - count * TABLE_ENTRY_SIZE
        out[pack.hex()] = (size, parse_entry_table(body[at:at + count * TABLE_ENTRY_SIZE], count,
                                                   table_offset, key, at))
        at += count * TABLE_ENTRY_SIZE
    return out


def put_scan(repo, vm: str, name: str, result: dict) -> None:
    """Store (or replace) the change analysis of one recovery point."""
    key = f"{SCANS}/{rp_object_name(repo.crypto, vm, name)}"
    raw = encode(repo.crypto, key, json.dumps({"version": 1, **result}).encode())
    if not repo.backend.put_object(key, raw):   # a rescan replaces the older result
        repo.backend.delete_object(key)
        repo.backend.put_object(key, raw)


def get_scan(repo, vm: str, name: str) -> dict | None:
    """The stored change analysis of one recovery point, or None if it has none."""
    return _get_json(repo, f"{SCANS}/{rp_object_name(repo.crypto, vm, name)}",
                     "scan object", "not a change analysis",
                     lambda d: isinstance(d, dict) and d.get("verdict") in ("clean", "suspicious")
                     and isinstance(d.get("reasons"), list))


def put_forget(repo, rps: list[tuple[str, str]]) -> str:
    """Write a new forget intent naming ``rps`` (VM, name) in one put; returns its name."""
    while True:
        name = os.urandom(16).hex()
        key = f"{FORGET}/{name}"
        body = json.dumps({"version": 1, "recovery_points": [list(r) for r in rps]}).encode()
        if repo.backend.put_object(key, encode(repo.crypto, key, body)):
            return name


def get_forget(repo, name: str) -> list[tuple[str, str]] | None:
    """The recovery points (VM, name) a forget intent names; None once it is gone."""
    def valid(d) -> bool:
        rps = d.get("recovery_points") if isinstance(d, dict) else None
        return isinstance(rps, list) and all(
            isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r) for r in rps)

    d = _get_json(repo, f"{FORGET}/{name}", "forget object", "not a forget intent", valid)
    return None if d is None else [(vm, rp) for vm, rp in d["recovery_points"]]


def _get_json(repo, key: str, structure: str, what: str, valid):
    """The JSON object stored at ``key``, None if there is none; FormatError(``what``)
    when it does not decode or ``valid`` refuses it."""
    raw = repo.backend.get_object(key)
    if raw is None:
        return None
    try:
        d = json.loads(decode(repo.crypto, key, raw))
    except (ValueError, UnicodeDecodeError):
        d = None
    if not valid(d):
        raise FormatError(what, source=key, structure=structure)
    return d
