"""Volume Shadow Copies stored inside an NTFS volume ("Previous Versions").

Windows keeps each shadow copy as a *store*: the 16 KiB blocks of the volume that were
overwritten after the copy was taken, saved before the write. A store therefore reads as
the volume at that time: the current volume with the store's saved blocks laid over it,
and, for an older store, the saved blocks of every newer store under its own (the newest
store is applied first). Layout after libyal's "Volume Shadow Snapshot (VSS) format":

- the volume header at 0x1e00 (inside $Boot) starts with the VSS identifier GUID and
  gives the catalog's offset;
- the catalog is a chain of 16 KiB blocks of 128-byte entries: type 2 (store id, volume
  size, creation time) and type 3 (store id, offsets of the store's header, block list,
  block range list and bitmaps);
- a store's block list is a chain of 16 KiB blocks of 32-byte block descriptors
  (original offset, relative store offset, store data offset, flags, overlay bitmap).

Every offset is checked against the volume, every chain is bounded and checked for loops:
a damaged store is a typed error for that store only.
"""

from __future__ import annotations

import struct
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from formats import probes
from streams.errors import FormatError
from streams.stream import Stream
from streams.times import nt_to_datetime, point_name

VSS_IDENTIFIER = probes.VSS_IDENTIFIER
HEADER_OFFSET = probes.VSS_HEADER_OFFSET
BLOCK = 0x4000            # catalog, list and data blocks are all 16 KiB
BLOCK_HEADER = 128
ENTRY = 128               # catalog entry
DESCRIPTOR = 32           # block descriptor
SECTOR = 512              # an overlay bitmap bit covers 512 bytes

RECORD_VOLUME_HEADER, RECORD_CATALOG, RECORD_BLOCK_LIST = 1, 2, 3
RECORD_STORE_HEADER, RECORD_RANGE_LIST, RECORD_BITMAP = 4, 5, 6

FLAG_FORWARDER, FLAG_OVERLAY, FLAG_NOT_USED = 0x1, 0x2, 0x4

_HEADER = probes.VSS_HEADER                          # volume header, first 96 bytes
_BLOCK_HEADER = struct.Struct("<16sII QQQQ")         # catalog/store block header, 56 bytes
_ENTRY2 = struct.Struct("<QQ16sQQQ")                 # type, size, id, seq, flags, time
_ENTRY3 = struct.Struct("<QQ16sQQQQQQ")              # type, list, id, header, ranges,
#                                                      bitmap, file ref, alloc, prev bitmap
_DESC = struct.Struct("<QQQII")
_STORE_INFO = struct.Struct("<16s16s16sIII4x")       # after the store header's block header


probe = probes.vss_probe   # the VSS identifier and a catalog in the header at 0x1e00


@dataclass
class Store:
    """One shadow copy, from its two catalog entries and its store header."""

    index: int                 # in creation order, oldest first
    store_id: str
    volume_size: int
    created: int               # FILETIME
    sequence: int
    flags: int
    block_list: int
    header: int
    range_list: int
    bitmap: int
    previous_bitmap: int
    shadow_copy_id: str | None = None
    shadow_copy_set_id: str | None = None
    attributes: int | None = None
    error: FormatError | None = None   # damage found while parsing this store

    @property
    def creation_time(self) -> datetime | None:
        return nt_to_datetime(self.created)

    @property
    def name(self) -> str:
        """``YYYY-MM-DDTHHMMSSZ``: the store's directory in the namespace."""
        t = self.creation_time
        return point_name(t) if t else f"store-{self.index}"

    def describe(self) -> dict:
        t = self.creation_time
        out = {"store_id": self.store_id, "name": self.name,
               "creation_time": t.isoformat() if t else None, "size": self.volume_size,
               "shadow_copy_id": self.shadow_copy_id,
               "shadow_copy_set_id": self.shadow_copy_set_id,
               "attributes": None if self.attributes is None else f"{self.attributes:#x}"}
        if self.error is not None:
            out["error"] = str(self.error)
        return out


@dataclass
class _Map:
    """A store's parsed block list: where each saved block of the volume is."""

    blocks: dict = field(default_factory=dict)    # original offset -> store data offset,
    #                                               or ("fwd", offset in the next store)
    overlays: dict = field(default_factory=dict)  # original offset -> [(data offset, bits)]
    reverse: dict = field(default_factory=dict)   # forwarder target -> original offset
    bitmap: bytes = b""                           # bit set: block not in use at the copy
    previous: bytes | None = None


class ShadowCopies:
    """The stores of one NTFS volume. ``stores`` is in creation order (oldest first);
    ``open(store)`` gives the volume as it was when that shadow copy was taken."""

    def __init__(self, volume: Stream):
        self.volume = volume
        self.name = volume.name
        self._lock = threading.Lock()
        self._maps: dict[int, _Map | FormatError] = {}
        self.version, catalog = self._volume_header()
        self.stores = self._catalog(catalog)
        for s in self.stores:
            self._store_header(s)

    # -- parsing -------------------------------------------------------------------------

    def _error(self, msg: str, structure: str, offset: int | None = None) -> FormatError:
        return FormatError(msg, source=self.name, structure=structure, offset=offset)

    def _block(self, offset: int, record: int, structure: str) -> bytes:
        """The 16 KiB block at ``offset``, its header checked (identifier, record type)."""
        if offset <= 0 or offset % SECTOR or offset + BLOCK > self.volume.size:
            raise self._error(f"{structure} block at {offset:#x} lies outside the volume "
                              f"({self.volume.size} bytes)", structure, offset)
        data = self.volume.read(offset, BLOCK)
        ident, _version, rtype, *_ = _BLOCK_HEADER.unpack_from(data)
        if ident != VSS_IDENTIFIER or rtype != record:
            raise self._error(f"{structure} block at {offset:#x} has no VSS header of record "
                              f"type {record}", structure, offset)
        return data

    def _chain(self, first: int, record: int, structure: str):
        """Yields each block of a chain; a loop or a chain longer than the volume is an
        error, not a hang."""
        seen: set[int] = set()
        offset = first
        limit = self.volume.size // BLOCK + 1
        while offset:
            if offset in seen or len(seen) > limit:
                raise self._error(f"{structure} chain loops back to {offset:#x}", structure,
                                  offset)
            seen.add(offset)
            data = self._block(offset, record, structure)
            yield offset, data
            offset = _BLOCK_HEADER.unpack_from(data)[5]

    def _volume_header(self) -> tuple[int, int]:
        if self.volume.size < HEADER_OFFSET + _HEADER.size:
            raise self._error("volume too small for a VSS header", "vss volume header")
        ident, version, rtype, _cur, _nxt, _x, catalog, _max, _vid, _sid = _HEADER.unpack(
            self.volume.read(HEADER_OFFSET, _HEADER.size))
        if ident != VSS_IDENTIFIER or rtype != RECORD_VOLUME_HEADER:
            raise self._error("no VSS volume header at 0x1e00", "vss volume header",
                              HEADER_OFFSET)
        if version not in (1, 2):
            raise self._error(f"VSS version {version} is not known (1 or 2)",
                              "vss volume header", HEADER_OFFSET)
        return version, catalog

    def _catalog(self, first: int) -> list[Store]:
        if not first:
            return []
        entries2: dict[bytes, tuple] = {}
        entries3: dict[bytes, tuple] = {}
        for offset, data in self._chain(first, RECORD_CATALOG, "vss catalog"):
            for pos in range(BLOCK_HEADER, BLOCK, ENTRY):
                etype = struct.unpack_from("<Q", data, pos)[0]
                if etype == 2:
                    e = _ENTRY2.unpack_from(data, pos)
                    entries2.setdefault(e[2], e)
                elif etype == 3:
                    e = _ENTRY3.unpack_from(data, pos)
                    entries3.setdefault(e[2], e)
        stores = []
        for sid, e2 in entries2.items():
            e3 = entries3.get(sid)
            if e3 is None:  # a shadow copy without a store (Windows 2003): nothing to read
                continue
            _t, size, _id, seq, flags, created = e2
            _t, blist, _id, header, ranges, bitmap, _ref, _alloc, prev = e3
            stores.append(Store(0, str(uuid.UUID(bytes_le=sid)), size, created, seq, flags,
                                blist, header, ranges, bitmap, prev))
        stores.sort(key=lambda s: (s.created, s.sequence))
        for i, s in enumerate(stores):
            s.index = i
            if not 0 < s.volume_size <= self.volume.size:
                s.error = self._error(f"store {s.store_id} says the volume was {s.volume_size} "
                                      f"bytes; it is {self.volume.size}", "vss catalog")
        return stores

    def _store_header(self, s: Store) -> None:
        try:
            data = self._block(s.header, RECORD_STORE_HEADER, "vss store header")
        except FormatError as e:
            s.error = s.error or e
            return
        _u, copy_id, set_id, _type, _provider, attrs = _STORE_INFO.unpack_from(
            data, BLOCK_HEADER)
        s.shadow_copy_id = str(uuid.UUID(bytes_le=copy_id))
        s.shadow_copy_set_id = str(uuid.UUID(bytes_le=set_id))
        s.attributes = attrs

    def _bitmap(self, first: int, structure: str) -> bytes:
        bits = bytearray()
        need = (self.volume.size // BLOCK + 7) // 8
        for _off, data in self._chain(first, RECORD_BITMAP, structure):
            bits += data[BLOCK_HEADER:]
            if len(bits) >= need:
                break
        return bytes(bits)

    def _map(self, index: int) -> _Map:
        """The parsed block list of store ``index`` (parsed once; damage remembered)."""
        with self._lock:
            m = self._maps.get(index)
            if m is None:
                try:
                    m = self._parse_map(self.stores[index])
                except FormatError as e:
                    m = e
                self._maps[index] = m
        if isinstance(m, FormatError):
            raise m
        return m

    def _parse_map(self, s: Store) -> _Map:
        if s.error is not None:
            raise s.error
        m = _Map()
        vsize = self.volume.size
        for offset, data in self._chain(s.block_list, RECORD_BLOCK_LIST, "vss block list"):
            for pos in range(BLOCK_HEADER, BLOCK, DESCRIPTOR):
                orig, rel, store_off, flags, bits = _DESC.unpack_from(data, pos)
                if not (orig or rel or store_off or flags):
                    continue
                if flags & FLAG_NOT_USED:
                    continue
                where = offset + pos
                if orig % BLOCK or orig + BLOCK > vsize:
                    raise self._error(f"block descriptor at {where:#x}: original offset "
                                      f"{orig:#x} is outside the volume", "vss block list",
                                      where)
                if flags & FLAG_FORWARDER:
                    if rel % BLOCK or rel + BLOCK > vsize:
                        raise self._error(f"block descriptor at {where:#x}: forwards to "
                                          f"{rel:#x}, outside the volume", "vss block list",
                                          where)
                    if orig in m.reverse:          # the forwarded block moved on
                        orig = m.reverse.pop(orig)
                    if orig != rel:
                        m.blocks[orig] = ("fwd", rel)
                        m.reverse[rel] = orig
                    continue
                if store_off % SECTOR or store_off + BLOCK > vsize or store_off <= 0:
                    raise self._error(f"block descriptor at {where:#x}: store data at "
                                      f"{store_off:#x} is outside the volume",
                                      "vss block list", where)
                if flags & FLAG_OVERLAY:
                    m.overlays.setdefault(orig, []).append((store_off, bits))
                    continue
                if orig in m.reverse:
                    orig = m.reverse.pop(orig)
                m.blocks[orig] = store_off
        if s.bitmap:
            m.bitmap = self._bitmap(s.bitmap, "vss store bitmap")
        if s.previous_bitmap:
            m.previous = self._bitmap(s.previous_bitmap, "vss store previous bitmap")
        return m

    # -- reading -------------------------------------------------------------------------

    def open(self, store: Store) -> "StoreStream":
        if store.error is not None:
            raise store.error
        for i in range(store.index, len(self.stores)):  # damage anywhere above shows now
            self._map(i)
        return StoreStream(self, store)

    def read_block(self, active: int, offset: int) -> bytes:
        """The 16 KiB block at ``offset`` as store ``active`` saw it: walks the newer stores
        (one step each, so never loops and never recurses) down to the current volume; the
        active store's overlays (512-byte sectors) are laid over what that walk found."""
        last = len(self.stores) - 1
        index = active
        overlays = self._map(active).overlays.get(offset, ())
        while True:
            m = self._map(index)
            saved = m.blocks.get(offset)
            if isinstance(saved, tuple):         # forwarder: the next store's block
                offset = saved[1]
                if index == last:
                    data = self.volume.read(offset, BLOCK)
                    break
                index += 1
                continue
            if saved is not None:
                data = self.volume.read(saved, BLOCK)
            elif index < last:
                index += 1
                continue
            elif offset in m.reverse:
                data = self.volume.read(offset, BLOCK)
            elif active == last and not overlays and _bit(m.bitmap, offset // BLOCK) and (
                    m.previous is None or _bit(m.previous, offset // BLOCK)):
                data = bytes(BLOCK)              # not in use when the copy was taken
            else:
                data = self.volume.read(offset, BLOCK)
            break
        if overlays:
            data = bytearray(data)
            for store_off, bits in overlays:
                for sector in range(BLOCK // SECTOR):
                    if bits >> sector & 1:
                        at = sector * SECTOR
                        data[at:at + SECTOR] = self.volume.read(store_off + at, SECTOR)
            data = bytes(data)
        return data


def _bit(bitmap: bytes, n: int) -> bool:
    return n // 8 < len(bitmap) and bool(bitmap[n // 8] >> (n % 8) & 1)


class StoreStream(Stream):
    """The volume as store ``store`` saw it, read in 16 KiB blocks."""

    def __init__(self, copies: ShadowCopies, store: Store):
        self.copies = copies
        self.store = store
        self.size = store.volume_size
        self.name = f"{copies.name} (shadow copy {store.name})"

    def describe(self) -> dict:
        return {"shadow_copy": self.store.describe()}

    def _read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        end = offset + length
        pos = offset
        while pos < end:
            base = pos - pos % BLOCK
            if base + BLOCK > self.copies.volume.size:  # the volume's last partial block
                out += self.copies.volume.read(pos, end - pos)
                break
            block = self.copies.read_block(self.store.index, base)
            take = min(end, base + BLOCK) - pos
            out += block[pos - base:pos - base + take]
            pos += take
        return bytes(out)
