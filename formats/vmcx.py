"""Hyper-V configuration files (``.vmcx``, ``.VMRS``): the HyperVStorage key-value store.

Layout after openvmm's ``support/hvs_file/FORMAT.md`` (all little-endian):

- two file headers at 0 and 4096 (signature 0x01282014, CRC-32, sequence, format version);
  the valid one with the higher sequence wins;
- object tables from 8192 (signature 0x01110001, 18-byte entries: type, checksum, offset,
  size, flags); an entry of type 1 chains to another object table;
- key tables (signature 0x0002, index, sequence): packed 21-byte-header entries (type,
  flags, size, parent table index and offset, checksum, insertion sequence, name length)
  followed by a NUL-terminated UTF-8 name and the value; nodes are directories, the rest
  typed values (int, uint, double, UTF-16 string, byte array, bool); values of 2 KiB and
  more live in a file object elsewhere in the file. Key table headers and key entries carry
  a CRC-32 (header with the checksum zeroed, then name and value), checked here.

``read_keys`` gives the tree as nested dicts. ``vm_config`` picks out of a ``.vmcx`` what
``rpfs info`` shows: the VM's name, id, generation, processors, memory, drives and
checkpoints. Everything is bounded (tables, entries, value sizes, parent chains) and checked
against the file: a damaged file is a FormatError, never a hang or a huge allocation.
"""

from __future__ import annotations

import struct
import zlib

from streams.errors import FormatError, UnsupportedError
from streams.stream import Stream
from streams.times import nt_to_datetime

HEADER_SIGNATURE = 0x01282014
OBJECT_TABLE_SIGNATURE = 0x01110001
KEY_TABLE_SIGNATURE = 0x0002
HEADER_OFFSETS = (0, 4096)
FIRST_OBJECT_TABLE = 8192
HEADER = struct.Struct("<IIHIIIIQQI")       # signature .. replay log header size (46 bytes)
OBJECT_ENTRY = struct.Struct("<BIQIB")      # 18 bytes
KEY_TABLE_HEADER = 10
KEY_ENTRY = struct.Struct("<BBIHIIIB")      # 21 bytes

OBJ_OBJECT_TABLE, OBJ_KEY_TABLE = 1, 2
T_FREE, T_INT, T_UINT, T_DOUBLE, T_STRING, T_ARRAY, T_BOOL, T_NODE = 1, 3, 4, 5, 6, 7, 8, 9
FLAG_FILE_OBJECT = 0x01

MAX_OBJECT_TABLES = 64
MAX_OBJECT_ENTRIES = 65536
MAX_KEY_TABLE = 1 << 20          # bytes in one key table
MAX_KEY_BYTES = 64 << 20         # all key tables together
MAX_VALUE = 64 << 10             # a value read from a file object (larger: skipped, size said;
                                 # a .VMRS keeps the guest's RAM in 1 MiB values)
MAX_FILE_OBJECT_BYTES = 16 << 20  # all values read from file objects together
MAX_DEPTH = 64                   # nesting of nodes


def _err(stream: Stream, message: str, structure: str, offset: int | None = None) -> FormatError:
    return FormatError(message, source=stream.name, structure=structure, offset=offset)


def _header(stream: Stream) -> tuple:
    """(format version, sequence) of the newest valid header."""
    best = None
    for off in HEADER_OFFSETS:
        raw = stream.read(off, HEADER.size)
        if len(raw) < HEADER.size:
            continue
        f = HEADER.unpack(raw)
        if f[0] != HEADER_SIGNATURE:
            continue
        if zlib.crc32(raw[:4] + b"\0\0\0\0" + raw[8:]) != f[1]:
            continue
        if best is None or f[2] > best[1]:
            best = (f[3], f[2])
    if best is None:
        raise _err(stream, "no valid HyperVStorage header (signature and CRC-32 at 0 and 4096)",
                   "file header", 0)
    if not 0x0200 <= best[0] <= 0x04FF:
        raise UnsupportedError(f"HyperVStorage format version {best[0] >> 8}.{best[0] & 0xFF} "
                               "is not supported (2.0 to 4.x)", source=stream.name,
                               structure="file header")
    return best


def _key_tables(stream: Stream) -> dict[int, bytes]:
    """Key table index -> its bytes (the copy with the highest sequence)."""
    tables: dict[int, tuple[int, bytes]] = {}
    total = 0
    seen = set()
    queue = [FIRST_OBJECT_TABLE]
    while queue:
        off = queue.pop()
        if off in seen:
            raise _err(stream, "object tables chain in a loop", "object table", off)
        seen.add(off)
        if len(seen) > MAX_OBJECT_TABLES:
            raise _err(stream, f"more than {MAX_OBJECT_TABLES} object tables", "object table", off)
        head = stream.read(off, 8)
        if len(head) < 8:
            raise _err(stream, "object table past the end of the file", "object table", off)
        sig, count = struct.unpack("<II", head)
        if sig != OBJECT_TABLE_SIGNATURE:
            raise _err(stream, f"object table signature 0x{sig:08x}", "object table", off)
        if count > MAX_OBJECT_ENTRIES or off + 8 + count * OBJECT_ENTRY.size > stream.size:
            raise _err(stream, f"object table of {count} entries does not fit the file",
                       "object table", off)
        raw = stream.read(off + 8, count * OBJECT_ENTRY.size)
        for i in range(count):
            otype, _, ooff, osize, _ = OBJECT_ENTRY.unpack_from(raw, i * OBJECT_ENTRY.size)
            if otype == OBJ_OBJECT_TABLE:
                queue.append(ooff)
            elif otype == OBJ_KEY_TABLE:
                where = f"key table at {ooff}"
                if osize < KEY_TABLE_HEADER or osize > MAX_KEY_TABLE or ooff + osize > stream.size:
                    raise _err(stream, f"key table of {osize} bytes does not fit the file",
                               where, ooff)
                total += osize
                if total > MAX_KEY_BYTES:
                    raise _err(stream, f"key tables exceed {MAX_KEY_BYTES} bytes", where, ooff)
                data = stream.read(ooff, osize)
                sig, index, seq = struct.unpack_from("<HHH", data)
                if sig != KEY_TABLE_SIGNATURE:
                    raise _err(stream, f"key table signature 0x{sig:04x}", where, ooff)
                if zlib.crc32(data[:6] + b"\0\0\0\0") != struct.unpack_from("<I", data, 6)[0]:
                    raise _err(stream, "key table header checksum mismatch", where, ooff)
                if index not in tables or seq > tables[index][0]:
                    tables[index] = (seq, data)
    return {i: d for i, (_, d) in tables.items()}


def _value(stream: Stream, etype: int, flags: int, data: bytes, where: str, budget: list[int]):
    if flags & FLAG_FILE_OBJECT:
        if len(data) < 12:
            raise _err(stream, "file object pointer cut short", where)
        size, off = struct.unpack_from("<IQ", data)
        if off + size > stream.size:
            raise _err(stream, f"file object of {size} bytes at {off} past the end", where, off)
        if size > MAX_VALUE or size > budget[0]:
            return {"skipped_bytes": size}
        budget[0] -= size
        data = stream.read(off, size)
        body = data
    elif etype in (T_STRING, T_ARRAY):
        if len(data) < 4:
            raise _err(stream, "value length cut short", where)
        (n,) = struct.unpack_from("<I", data)
        if 4 + n > len(data):
            raise _err(stream, f"value of {n} bytes overruns its entry", where)
        body = data[4:4 + n]
    else:
        body = data
    need = {T_INT: 8, T_UINT: 8, T_DOUBLE: 8, T_BOOL: 4}.get(etype, 0)
    if len(body) < need:
        raise _err(stream, f"value of type {etype} cut short", where)
    if etype == T_INT:
        return struct.unpack_from("<q", body)[0]
    if etype == T_UINT:
        return struct.unpack_from("<Q", body)[0]
    if etype == T_DOUBLE:
        return struct.unpack_from("<d", body)[0]
    if etype == T_BOOL:
        return struct.unpack_from("<I", body)[0] != 0
    if etype == T_STRING:
        return bytes(body).decode("utf-16-le", "replace").rstrip("\0")
    if etype == T_ARRAY:
        return bytes(body)
    raise _err(stream, f"unknown key type {etype}", where)


def _value_size(etype: int, flags: int, body: bytes, nlen: int) -> int:
    """Bytes of the value the entry checksum covers (the rest of the entry is slack)."""
    if flags & FLAG_FILE_OBJECT:
        return 12
    if etype in (T_STRING, T_ARRAY):
        if len(body) < nlen + 4:
            return len(body) - nlen
        return 4 + struct.unpack_from("<I", body, nlen)[0]
    return {T_INT: 8, T_UINT: 8, T_DOUBLE: 8, T_BOOL: 4, T_NODE: 12}.get(etype, 0)


def read_keys(stream: Stream) -> dict:
    """The key tree of a HyperVStorage file as nested dicts (nodes are dicts)."""
    _header(stream)
    tables = _key_tables(stream)
    # (table, offset) -> (parent (table, offset) or None, name, value or None for a node)
    entries: dict[tuple[int, int], tuple] = {}
    budget = [MAX_FILE_OBJECT_BYTES]
    for index, data in tables.items():
        pos = KEY_TABLE_HEADER
        while pos + KEY_ENTRY.size < len(data):
            etype, flags, size, ptab, poff, crc, _, nlen = KEY_ENTRY.unpack_from(data, pos)
            where = f"key table {index} entry at {pos}"
            if size == 0:
                break
            if size < KEY_ENTRY.size or pos + size > len(data):
                raise _err(stream, f"entry of {size} bytes overruns its key table", where)
            if etype != T_FREE:
                body = data[pos + KEY_ENTRY.size:pos + size]
                if nlen == 0 or nlen > len(body):
                    raise _err(stream, f"key name of {nlen} bytes overruns its entry", where)
                if zlib.crc32(data[pos:pos + 12] + b"\0\0\0\0" + data[pos + 16:pos + KEY_ENTRY.size]
                              + body[:nlen + _value_size(etype, flags, body, nlen)]) != crc:
                    raise _err(stream, "key entry checksum mismatch", where)
                name = body[:nlen - 1].decode("utf-8", "replace")
                value = None if etype == T_NODE else _value(stream, etype, flags, body[nlen:], where, budget)
                parent = None if ptab == 0 else (ptab, poff)
                entries[(index, pos)] = (parent, name, etype, value)
            pos += size
    root: dict = {}
    dicts: dict[tuple[int, int], dict] = {}

    def node_dict(key: tuple[int, int], depth: int) -> dict:
        if key in dicts:
            return dicts[key]
        if depth > MAX_DEPTH:
            raise _err(stream, f"keys nested deeper than {MAX_DEPTH} (a loop?)",
                       f"key table {key[0]} entry at {key[1]}")
        ent = entries.get(key)
        if ent is None or ent[2] != T_NODE:
            raise _err(stream, "a key's parent is not a node", f"key table {key[0]} entry at {key[1]}")
        parent = root if ent[0] is None else node_dict(ent[0], depth + 1)
        d = dicts[key] = {}
        parent[ent[1]] = d
        return d

    for key, (parent, name, etype, value) in entries.items():
        if etype == T_NODE:
            node_dict(key, 0)
        else:
            (root if parent is None else node_dict(parent, 0))[name] = value
    return root


# ---------------------------------------------------------------------------------------
# What a .vmcx says about its VM


def _get(tree: dict, path: str):
    for part in path.split("/"):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def vm_config(keys: dict) -> dict:
    """Name, id, generation, processors, memory, drives and checkpoints of a ``.vmcx``."""
    cfg = keys.get("configuration")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("properties"), dict):
        raise FormatError("no configuration/properties: not a VM configuration",
                          structure="configuration")
    subtype = _get(cfg, "properties/subtype")
    memory = _get(cfg, "settings/memory/bank/size")
    out = {
        "name": _get(cfg, "properties/name"),
        "id": _get(cfg, "properties/global_id"),
        "generation": subtype + 1 if isinstance(subtype, int) else None,
        "version": _get(cfg, "properties/version"),
        "created": filetime(_get(cfg, "properties/creation_time")),
        "processors": _get(cfg, "settings/processors/count"),
        "memory_mib": memory,
        "dynamic_memory": _get(cfg, "settings/memory/bank/dynamic_memory_enabled"),
        "drives": drives(cfg),
        "checkpoints": checkpoints(cfg),
    }
    return out


def filetime(value) -> str | None:
    """A Windows FILETIME (8 bytes, 100 ns since 1601) as ISO 8601 UTC, None if not one."""
    if not isinstance(value, bytes) or len(value) != 8:
        return None
    ticks = struct.unpack("<Q", value)[0]
    if not ticks or ticks >= 2650467743999999999:   # past 9999-12-31
        return None
    t = nt_to_datetime(ticks)
    return t.isoformat() if t else None


def drives(cfg: dict) -> list[dict]:
    """Each drive slot of the IDE and SCSI controllers, in controller order."""
    manifest = cfg.get("manifest") if isinstance(cfg.get("manifest"), dict) else {}
    out = []
    scsi = 0
    for vname in sorted(k for k in manifest if k.startswith("vdev")):
        vdev = manifest[vname]
        if not isinstance(vdev, dict) or not isinstance(vdev.get("name"), str):
            continue
        kind = "ide" if "IDE Controller" in vdev["name"] else \
            "scsi" if "SCSI Controller" in vdev["name"] else None
        instance = vdev.get("instance") or vdev.get("device")
        device = cfg.get(f"_{str(instance).lower()}_")
        if kind is None or not isinstance(device, dict):
            continue
        for cname in sorted(k for k in device if k.startswith("controller")):
            ctrl = device[cname]
            if not isinstance(ctrl, dict):
                continue
            number = int(cname[10:]) if cname[10:].isdigit() else None
            if kind == "scsi":
                number = scsi
            for dname in sorted((k for k in ctrl if k.startswith("drive")),
                                key=lambda k: int(k[5:]) if k[5:].isdigit() else 0):
                drive = ctrl[dname]
                if not isinstance(drive, dict):
                    continue
                out.append({"controller_type": kind, "controller": number,
                            "location": int(dname[5:]) if dname[5:].isdigit() else None,
                            "type": drive.get("type"), "path": drive.get("pathname") or ""})
        if kind == "scsi":
            scsi += 1
    return out


def checkpoints(cfg: dict) -> list:
    """The checkpoint ids the configuration lists (``global_settings/snapshots/list``: a
    ``size`` and one value per checkpoint, in the order of the number ending each key, as
    Hyper-V's older XML configurations numbered ``Snapshot0``, ``Snapshot1``...). The only
    real file at hand has ``{"size": 0}``, so the entries' key names are unverified; any
    name is taken."""
    lst = _get(cfg, "global_settings/snapshots/list")
    if not isinstance(lst, dict):
        return []

    def order(key: str) -> tuple:
        digits = key[len(key.rstrip("0123456789")):]
        return (int(digits) if digits else -1, key)

    return [lst[k] for k in sorted(lst, key=order)
            if k != "size" and isinstance(lst[k], str)]
