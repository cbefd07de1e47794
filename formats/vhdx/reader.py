"""VHDX virtual disks ([MS-VHDX]): fixed, dynamic and differencing, read lazily.

Opening reads the identifier, both headers, the region table and the metadata; the log is
replayed in memory first when it is not empty. BAT pages and sector bitmaps are read on
demand. Reads are planned as runs (file ranges, zeros, parent ranges) and each contiguous
file run is one ``readinto`` on the source, so large reads go at file speed.
"""

from __future__ import annotations

import re
import uuid
from array import array
from functools import lru_cache
from collections.abc import Iterator


from formats.disk import Disk, ParentRef
from streams.errors import ChainError, FormatError, UnsupportedError
from streams.stream import DATA, ZERO, Extent, Stream, merge_extents

from . import structures as S

_BAT_PAGE_ENTRIES = 1 << 15        # 256 KiB of BAT read at a time
_ZEROS = bytes(1 << 20)
_LITTLE = array("Q", [1]).tobytes()[0] == 1

# Run kinds in a read plan
_FILE, _ZERO, _PARENT, _MIXED = 0, 1, 2, 3
MAX_CHAIN_DEPTH = 128   # reads recurse through parents; Hyper-V allows 50 checkpoints
_MIXED_RUNS = 16        # a bitmap span with more runs is read as one parent read + file runs
_RUN = re.compile(r"0+|1+")
_UNALLOCATED = (S.PAYLOAD_BLOCK_NOT_PRESENT, S.PAYLOAD_BLOCK_UNDEFINED, S.PAYLOAD_BLOCK_ZERO,
                S.PAYLOAD_BLOCK_UNMAPPED)


def _zero_fill(view: memoryview) -> None:
    n = len(view)
    pos = 0
    while pos < n:
        k = min(n - pos, len(_ZEROS))
        view[pos:pos + k] = _ZEROS[:k]
        pos += k


class VhdxDisk(Disk):
    """A VHDX (or AVHDX) file's virtual disk.

    ``identity`` is the current header's DataWriteGuid (what children record as
    parent_linkage); ``parent_ref`` lists the locator's paths in the order relative_path,
    volume_path, absolute_win32_path.
    """

    format = "vhdx"

    def __init__(self, stream: Stream, name: str | None = None):
        self.source = stream
        self.name = name or stream.name
        self.parent = None
        self.parent_ref = None
        self._check_identifier()
        self.header, self.header_index = self._current_header()
        self.identity = self.header.data_write_guid
        self.file_write_guid = self.header.file_write_guid
        h = self.header
        self.log_replayed = False
        self.warnings: list[str] = []
        self.file: Stream = stream
        if h.log_guid != uuid.UUID(int=0) and h.log_length:   # no log region: nothing to replay (as qemu)
            if h.log_version != 0:
                raise UnsupportedError(f"log version {h.log_version}", source=self.name,
                                       structure=f"VHDX header {self.header_index + 1}",
                                       offset=S.HEADER_OFFSETS[self.header_index])
            self._check_log_placement(h.log_offset, h.log_length)
            from .log import NoActiveSequence, replay_log   # only a file left open has a log

            try:
                self.file = replay_log(stream, h.log_offset, h.log_length, h.log_guid)
                self.log_replayed = True
            except NoActiveSequence as e:
                # [MS-VHDX] 2.3.3 says fail; but the log is write-ahead: an entry that is not
                # valid and complete was never applied in place, so the file as it stands is
                # consistent. qemu opens such files too (a live copy taken right after open).
                self.warnings.append(f"{e}; read without replay")
        self.regions = self._region_table()
        self._parse_metadata()
        self._layout()
        self._bat_page = lru_cache(maxsize=64)(self._load_bat_page)
        self._bitmap = lru_cache(maxsize=256)(self._load_bitmap)

    # ----------------------------------------------------------------- errors
    def _err(self, message: str, structure: str, offset: int | None, cls=FormatError):
        return cls(message, source=self.name, structure=structure, offset=offset)

    def _read_exact(self, stream: Stream, offset: int, length: int, structure: str) -> bytes:
        data = stream.read(offset, length)
        if len(data) != length:
            raise self._err(f"truncated: {len(data)} of {length} bytes", structure, offset)
        return data

    # ------------------------------------------------------------ header section
    def _check_identifier(self) -> None:
        if self.source.size < S.HEADER_SECTION_SIZE:
            raise self._err(f"file of {self.source.size} bytes is smaller than the 1 MiB header section",
                            "VHDX file identifier", 0)
        ident = S.FileIdentifier.parse(self._read_exact(self.source, 0, 520, "VHDX file identifier"))
        if ident.signature != S.FILE_SIGNATURE:
            raise self._err("not a VHDX file (no 'vhdxfile' signature)", "VHDX file identifier", 0)
        self.creator = ident.creator.decode("utf-16-le", "replace").split("\0", 1)[0]

    def _current_header(self):
        valid = []
        problems = []
        for i, off in enumerate(S.HEADER_OFFSETS):
            raw = self._read_exact(self.source, off, S.HEADER_SIZE, f"VHDX header {i + 1}")
            h = S.Header.parse(raw)
            if h.signature != S.HEADER_SIGNATURE:
                problems.append(f"header {i + 1}: bad signature")
            elif S.checksum_with_field_zeroed(raw) != h.checksum:
                problems.append(f"header {i + 1}: bad checksum")
            else:
                valid.append((h.sequence_number, i, h))
        if not valid:
            raise self._err("no valid header (" + "; ".join(problems) + ")", "VHDX headers",
                            S.HEADER_OFFSETS[0])
        if len(valid) == 2 and valid[0][0] == valid[1][0]:
            # The spec calls this "no current header"; both copies then normally agree.
            if valid[0][2] != valid[1][2]:
                raise self._err("both headers have the same sequence number but differ",
                                "VHDX headers", S.HEADER_OFFSETS[0])
        seq, index, h = max(valid, key=lambda v: (v[0], -v[1]))
        if h.version != 1:
            raise self._err(f"unsupported VHDX version {h.version}", f"VHDX header {index + 1}",
                            S.HEADER_OFFSETS[index], UnsupportedError)
        return h, index

    def _check_log_placement(self, offset: int, length: int) -> None:
        structure = f"VHDX header {self.header_index + 1}"
        where = S.HEADER_OFFSETS[self.header_index]
        if offset % S.MiB or length % S.MiB or offset < S.HEADER_SECTION_SIZE or length == 0:
            raise self._err(f"log at {offset:#x}+{length:#x} is not 1 MiB aligned", structure, where)
        if offset + length > self.source.size:
            raise self._err(f"log at {offset:#x}+{length:#x} extends past end of file", structure, where)

    def _region_table(self) -> dict[uuid.UUID, tuple[int, int]]:
        problems = []
        for i, off in enumerate(S.REGION_TABLE_OFFSETS):
            structure = f"VHDX region table {i + 1}"
            raw = self._read_exact(self.file, off, S.REGION_TABLE_SIZE, structure)
            h = S.RegionTableHeader.parse(raw)
            if h.signature != S.REGION_SIGNATURE:
                problems.append(f"table {i + 1}: bad signature")
                continue
            if S.checksum_with_field_zeroed(raw) != h.checksum:
                problems.append(f"table {i + 1}: bad checksum")
                continue
            if h.entry_count > S.MAX_TABLE_ENTRIES:
                problems.append(f"table {i + 1}: {h.entry_count} entries")
                continue
            regions = {}
            for k in range(h.entry_count):
                e = S.RegionTableEntry.parse(raw[16 + 32 * k:])
                eoff = off + 16 + 32 * k
                if e.guid in regions:
                    raise self._err(f"region {e.guid} listed twice", structure, eoff)
                if e.guid not in (S.BAT_GUID, S.METADATA_GUID):
                    if e.required & 1:
                        raise self._err(f"required region {e.guid} is not understood", structure,
                                        eoff, UnsupportedError)
                    continue
                if (e.file_offset % S.MiB or e.length % S.MiB or e.file_offset < S.HEADER_SECTION_SIZE
                        or e.length == 0):
                    raise self._err(f"region {e.guid} at {e.file_offset:#x}+{e.length:#x} is not 1 MiB aligned",
                                    structure, eoff)
                if e.file_offset + e.length > self.file.size:
                    raise self._err(f"region {e.guid} at {e.file_offset:#x}+{e.length:#x} extends past end of file",
                                    structure, eoff)
                regions[e.guid] = (e.file_offset, e.length)
            for g, label in ((S.BAT_GUID, "BAT"), (S.METADATA_GUID, "metadata")):
                if g not in regions:
                    raise self._err(f"no {label} region", structure, off)
            (ba, bl), (ma, ml) = regions[S.BAT_GUID], regions[S.METADATA_GUID]
            if ba < ma + ml and ma < ba + bl:
                raise self._err("BAT and metadata regions overlap", structure, off)
            if self.header.log_length:   # the log region, in use or not, is reserved (qemu checks too)
                la, ll = self.header.log_offset, self.header.log_length
                for a, n in ((ba, bl), (ma, ml)):
                    if ll and a < la + ll and la < a + n:
                        raise self._err("a region overlaps the log", structure, off)
            self.region_table_index = i
            return regions
        raise self._err("no valid region table (" + "; ".join(problems) + ")", "VHDX region tables",
                        S.REGION_TABLE_OFFSETS[0])

    # ------------------------------------------------------------------ metadata
    def _parse_metadata(self) -> None:
        base, length = self.regions[S.METADATA_GUID]
        structure = "VHDX metadata table"
        if length < S.METADATA_TABLE_SIZE:
            raise self._err("metadata region smaller than its table", structure, base)
        raw = self._read_exact(self.file, base, S.METADATA_TABLE_SIZE, structure)
        h = S.MetadataTableHeader.parse(raw)
        if h.signature != S.METADATA_SIGNATURE:
            raise self._err("bad signature", structure, base)
        if h.entry_count > S.MAX_TABLE_ENTRIES:
            raise self._err(f"{h.entry_count} entries (at most 2047)", structure, base)
        items: dict[uuid.UUID, bytes] = {}
        item_offsets: dict[uuid.UUID, int] = {}
        known = {S.FILE_PARAMETERS_GUID, S.VIRTUAL_DISK_SIZE_GUID, S.VIRTUAL_DISK_ID_GUID,
                 S.LOGICAL_SECTOR_SIZE_GUID, S.PHYSICAL_SECTOR_SIZE_GUID, S.PARENT_LOCATOR_GUID}
        self.user_metadata: dict[uuid.UUID, tuple[int, int]] = {}
        for k in range(h.entry_count):
            eoff = base + 32 + 32 * k
            e = S.MetadataTableEntry.parse(raw[32 + 32 * k:])
            if e.flags & S.META_IS_USER:
                self.user_metadata[e.item_id] = (e.offset, e.length)
                if len(self.user_metadata) > 1024:
                    raise self._err("more than 1024 user metadata items", structure, eoff)
                continue
            if e.item_id not in known:
                if e.flags & S.META_IS_REQUIRED:
                    raise self._err(f"required metadata item {e.item_id} is not understood",
                                    structure, eoff, UnsupportedError)
                continue
            if e.length == 0:
                continue
            if e.length > S.MiB or e.offset < S.METADATA_TABLE_SIZE or e.offset + e.length > length:
                raise self._err(f"metadata item {e.item_id} at {e.offset:#x}+{e.length:#x} is outside the region",
                                structure, eoff)
            if e.item_id in items:
                raise self._err(f"metadata item {e.item_id} listed twice", structure, eoff)
            items[e.item_id] = self._read_exact(self.file, base + e.offset, e.length,
                                                f"VHDX metadata item {e.item_id}")
            item_offsets[e.item_id] = base + e.offset

        def need(guid, size, label):
            data = items.get(guid)
            if data is None:
                raise self._err(f"missing {label}", structure, base)
            if len(data) < size:
                raise self._err(f"{label} is {len(data)} bytes", f"VHDX {label}", item_offsets[guid])
            return data

        fp = S.FileParameters.parse(need(S.FILE_PARAMETERS_GUID, 8, "file parameters"))
        self.block_size = fp.block_size
        self.leave_block_allocated = bool(fp.flags & S.FP_LEAVE_BLOCK_ALLOCATED)
        self.has_parent = bool(fp.flags & S.FP_HAS_PARENT)
        bs = self.block_size
        if bs < S.MiB or bs > 256 * S.MiB or bs & (bs - 1):
            raise self._err(f"block size {bs} (must be a power of 2 from 1 to 256 MiB)",
                            "VHDX file parameters", item_offsets[S.FILE_PARAMETERS_GUID])
        self.size = int.from_bytes(need(S.VIRTUAL_DISK_SIZE_GUID, 8, "virtual disk size")[:8], "little")
        self.virtual_disk_id = uuid.UUID(bytes_le=need(S.VIRTUAL_DISK_ID_GUID, 16, "virtual disk id")[:16])
        self.page83_data = self.virtual_disk_id
        self.logical_sector_size = int.from_bytes(
            need(S.LOGICAL_SECTOR_SIZE_GUID, 4, "logical sector size")[:4], "little")
        self.physical_sector_size = int.from_bytes(
            need(S.PHYSICAL_SECTOR_SIZE_GUID, 4, "physical sector size")[:4], "little")
        for label, v, g in (("logical sector size", self.logical_sector_size, S.LOGICAL_SECTOR_SIZE_GUID),
                            ("physical sector size", self.physical_sector_size, S.PHYSICAL_SECTOR_SIZE_GUID)):
            if v not in (512, 4096):
                raise self._err(f"{label} {v} (must be 512 or 4096)", f"VHDX {label}", item_offsets[g])
        if self.size % self.logical_sector_size or self.size > S.MAX_VIRTUAL_SIZE:
            raise self._err(f"virtual disk size {self.size} is not a multiple of the sector size or above 64 TiB",
                            "VHDX virtual disk size", item_offsets[S.VIRTUAL_DISK_SIZE_GUID])
        if self.has_parent:
            self.kind = "differencing"
            loc = items.get(S.PARENT_LOCATOR_GUID)
            if loc is None:
                raise self._err("differencing disk without a parent locator", structure, base)
            self.parent_locator = self._parse_locator(loc, item_offsets[S.PARENT_LOCATOR_GUID])
            self.parent_ref = self._parent_ref(self.parent_locator, item_offsets[S.PARENT_LOCATOR_GUID])
        else:
            self.parent_locator = None
            self.kind = "fixed" if self.leave_block_allocated else "dynamic"

    def _parse_locator(self, data: bytes, at: int) -> dict[str, str]:
        structure = "VHDX parent locator"
        if len(data) < 20:
            raise self._err("truncated", structure, at)
        h = S.ParentLocatorHeader.parse(data)
        if h.locator_type != S.VHDX_LOCATOR_TYPE_GUID:
            raise self._err(f"parent locator type {h.locator_type} is not VHDX", structure, at,
                            UnsupportedError)
        if 20 + 12 * h.key_value_count > len(data):
            raise self._err(f"{h.key_value_count} entries do not fit in {len(data)} bytes", structure, at)
        out: dict[str, str] = {}
        for k in range(h.key_value_count):
            e = S.ParentLocatorEntry.parse(data[20 + 12 * k:])
            for off, n in ((e.key_offset, e.key_length), (e.value_offset, e.value_length)):
                if off == 0 or n == 0 or off + n > len(data):
                    raise self._err(f"entry {k} points outside the locator", structure, at + 20 + 12 * k)
            try:
                key = data[e.key_offset:e.key_offset + e.key_length].decode("utf-16-le")
                value = data[e.value_offset:e.value_offset + e.value_length].decode("utf-16-le")
            except UnicodeDecodeError:
                raise self._err(f"entry {k} is not UTF-16", structure, at + 20 + 12 * k) from None
            out[key] = value
        return out

    def _parent_ref(self, loc: dict[str, str], at: int) -> ParentRef:
        def guid(text):
            try:
                return uuid.UUID(text.strip().strip("{}"))
            except ValueError:
                raise self._err(f"parent linkage {text!r} is not a GUID", "VHDX parent locator", at) from None
        if "parent_linkage" not in loc:
            raise self._err("no parent_linkage", "VHDX parent locator", at)
        paths = tuple(loc[k] for k in ("relative_path", "volume_path", "absolute_win32_path") if loc.get(k))
        extra = {"locator": dict(loc)}
        if "parent_linkage2" in loc:
            extra["identity2"] = guid(loc["parent_linkage2"])
        return ParentRef(paths=paths, identity=guid(loc["parent_linkage"]), extra=extra)

    # ----------------------------------------------------------------------- BAT
    def _layout(self) -> None:
        lss, bs = self.logical_sector_size, self.block_size
        (self.chunk_ratio, self.data_blocks, self.bitmap_blocks,
         self.bat_entries) = S.bat_layout(self.size, bs, lss, self.has_parent)
        self.sectors_per_block = bs // lss
        bat_off, bat_len = self.regions[S.BAT_GUID]
        if self.bat_entries * 8 > bat_len:
            raise self._err(f"BAT region of {bat_len} bytes is too small for {self.bat_entries} entries",
                            "VHDX BAT", bat_off)
        self.bat_offset = bat_off
        # Structures a block must not overlap (spec 2.1: all objects are non-overlapping).
        self._reserved = [(0, S.HEADER_SECTION_SIZE), self.regions[S.BAT_GUID], self.regions[S.METADATA_GUID]]
        if self.header.log_length:
            self._reserved.append((self.header.log_offset, self.header.log_length))

    def _load_bat_page(self, page: int) -> tuple[array, bytes]:
        first = page * _BAT_PAGE_ENTRIES
        count = min(_BAT_PAGE_ENTRIES, self.bat_entries - first)
        raw = self._read_exact(self.file, self.bat_offset + first * 8, count * 8, "VHDX BAT")
        a = array("Q")
        a.frombytes(raw)
        if not _LITTLE:
            a.byteswap()
        return a, raw

    def bat_entry(self, index: int) -> int:
        return self._bat_page(index // _BAT_PAGE_ENTRIES)[0][index % _BAT_PAGE_ENTRIES]

    def _same_entry_end(self, block: int) -> int:
        """The first block after ``block`` whose BAT entry differs from this one's (at most the
        end of the BAT page). Found by comparing the page's bytes with the entry repeated
        (memcmp speed, binary search), so the unallocated stretches of a sparse multi-TiB
        disk do not cost a Python step per block."""
        index = block + block // self.chunk_ratio
        page = index // _BAT_PAGE_ENTRIES
        raw = memoryview(self._bat_page(page)[1])
        pos = (index % _BAT_PAGE_ENTRIES) * 8
        n = (len(raw) - pos) // 8
        pattern = memoryview(bytes(raw[pos:pos + 8]) * n)
        rest = raw[pos:]
        if rest == pattern:
            same = n
        else:
            lo, hi = 1, n - 1               # rest[:8*lo] matches, rest[:8*(hi+1)] does not
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if rest[:8 * mid] == pattern[:8 * mid]:
                    lo = mid
                else:
                    hi = mid - 1
            same = lo
        j = page * _BAT_PAGE_ENTRIES + (index % _BAT_PAGE_ENTRIES) + same   # first differing index
        return max(block + 1, j - j // (self.chunk_ratio + 1))             # payload blocks below j

    def block_state(self, block: int) -> tuple[int, int]:
        """(state, file offset) of payload block ``block``; the offset is checked when used."""
        entry = self.bat_entry(block + block // self.chunk_ratio)
        return entry & S.BAT_STATE_MASK, (entry >> S.BAT_OFFSET_SHIFT) * S.MiB

    def _checked_offset(self, block: int, state: int, offset: int, length: int, what: str = "payload block") -> int:
        index = block + block // self.chunk_ratio if what == "payload block" else block
        where = self.bat_offset + 8 * index
        if state not in S.PAYLOAD_STATES and what == "payload block":
            raise self._err(f"{what} {block} has reserved state {state}", "VHDX BAT entry", where)
        if offset < S.HEADER_SECTION_SIZE:
            raise self._err(f"{what} {block} at {offset:#x} overlaps the header section", "VHDX BAT entry", where)
        if offset + length > self.file.size:
            raise self._err(f"{what} {block} at {offset:#x}+{length:#x} lies past end of file "
                            f"({self.file.size} bytes)", "VHDX BAT entry", where)
        for a, n in self._reserved[1:]:
            if offset < a + n and a < offset + length:
                raise self._err(f"{what} {block} at {offset:#x} overlaps VHDX metadata structures",
                                "VHDX BAT entry", where)
        return offset

    def _load_bitmap(self, block: int) -> int:
        """Sector bitmap bits of payload block ``block`` as an int (bit i = sector i)."""
        chunk = block // self.chunk_ratio
        index = chunk * (self.chunk_ratio + 1) + self.chunk_ratio
        entry = self.bat_entry(index) if index < self.bat_entries else 0
        state, offset = entry & S.BAT_STATE_MASK, (entry >> S.BAT_OFFSET_SHIFT) * S.MiB
        if state != S.SB_BLOCK_PRESENT:
            raise self._err(f"payload block {block} is partially present but its sector bitmap block "
                            f"{chunk} is not (state {state})", "VHDX BAT entry", self.bat_offset + 8 * index)
        self._checked_offset(index, state, offset, S.SECTOR_BITMAP_BLOCK_SIZE, "sector bitmap block")
        nbytes = self.sectors_per_block // 8
        within = (block % self.chunk_ratio) * nbytes
        raw = self._read_exact(self.file, offset + within, nbytes, f"VHDX sector bitmap {chunk}")
        return int.from_bytes(raw, "little")

    def _pieces_into(self, offset: int, length: int, out) -> bool:
        """Present blocks are pieces of the file, absent ones zeros or the parent's; a
        partly present block (a sector bitmap to merge) is read instead."""
        for what, voff, n, foff in self._plan(offset, length):
            if what == _FILE:
                ok = self.file.pieces(foff, n, out)
            elif what == _ZERO:
                out.append(("Z", n))
                ok = True
            elif what == _PARENT and self.parent is not None:
                ok = self.parent.pieces(voff, n, out)
            else:
                ok = False
            if not ok:
                return False
        return True

    def _span(self, offset: int, length: int):
        """The range as one run of the file (a present block), else None."""
        runs = self._plan(offset, length)
        kind, _, n, foff = next(runs)
        return (self.file, foff) if kind == _FILE and n == length else None

    # ------------------------------------------------------------------ planning
    def _plan(self, offset: int, length: int):
        """Yield (kind, virtual offset, length, file offset) runs, merging neighbours."""
        bs = self.block_size
        end = offset + length
        pending = None
        pos = offset
        differencing = self.has_parent
        while pos < end:
            block = pos // bs
            bstart = block * bs
            bend = min(bstart + bs, end, self.size)
            state, foff = self.block_state(block)
            if state in _UNALLOCATED and end > bstart + bs:   # identical entries: one run
                bend = min(self._same_entry_end(block) * bs, end, self.size)
            runs: list[tuple[int, int, int, int]]
            if state == S.PAYLOAD_BLOCK_FULLY_PRESENT:
                used = min(bs, self.size - bstart)
                self._checked_offset(block, state, foff, used)
                runs = [(_FILE, pos, bend - pos, foff + pos - bstart)]
            elif state == S.PAYLOAD_BLOCK_NOT_PRESENT:
                runs = [(_PARENT if differencing else _ZERO, pos, bend - pos, 0)]
            elif state in (S.PAYLOAD_BLOCK_ZERO, S.PAYLOAD_BLOCK_UNMAPPED, S.PAYLOAD_BLOCK_UNDEFINED):
                # UNMAPPED/UNDEFINED may read as zeros (spec 2.5.1.1): the one stable choice.
                runs = [(_ZERO, pos, bend - pos, 0)]
            elif state == S.PAYLOAD_BLOCK_PARTIALLY_PRESENT and differencing:
                used = min(bs, self.size - bstart)
                self._checked_offset(block, state, foff, used)
                runs = list(self._bitmap_runs(block, pos, bend, foff))
                if len(runs) > _MIXED_RUNS:
                    runs = [(_MIXED, pos, bend - pos, (foff + pos - bstart, [r for r in runs if r[0] == _FILE]))]
            else:
                raise self._err(f"payload block {block} has state {state} "
                                f"({S.PAYLOAD_STATES.get(state, 'reserved')}) not valid for a {self.kind} disk",
                                "VHDX BAT entry", self.bat_offset + 8 * (block + block // self.chunk_ratio))
            for run in runs:
                if pending is not None and pending[0] == run[0] != _MIXED and pending[1] + pending[2] == run[1] and (
                        run[0] != _FILE or pending[3] + pending[2] == run[3]):
                    pending = (pending[0], pending[1], pending[2] + run[2], pending[3])
                else:
                    if pending is not None:
                        yield pending
                    pending = run
            pos = bend
        if pending is not None:
            yield pending

    def _bitmap_runs(self, block: int, start: int, end: int, foff: int):
        """(kind, virtual offset, length, file offset) runs of present/absent sectors."""
        lss = self.logical_sector_size
        bstart = block * self.block_size
        s0 = (start - bstart) // lss
        n = -(-(end - bstart) // lss) - s0
        bits = (self._bitmap(block) >> s0) & ((1 << n) - 1)
        if bits == 0:
            yield (_PARENT, start, end - start, 0)
            return
        if bits == (1 << n) - 1:
            yield (_FILE, start, end - start, foff + start - bstart)
            return
        text = format(bits, f"0{n}b")[::-1]          # text[i] is sector s0 + i
        for m in _RUN.finditer(text):
            i, j = m.span()
            a = max(start, bstart + (s0 + i) * lss)
            b = min(end, bstart + (s0 + j) * lss)
            if text[i] == "1":
                yield (_FILE, a, b - a, foff + a - bstart)
            else:
                yield (_PARENT, a, b - a, 0)

    # ---------------------------------------------------------------------- reads
    def _read(self, offset: int, length: int) -> bytes:
        buf = bytearray(length)          # already zeros: zero runs need no filling
        self._fill(offset, memoryview(buf), zeroed=True)
        return bytes(buf)

    def _readinto(self, offset: int, view: memoryview) -> None:
        self._fill(offset, view, zeroed=False)

    def _fill(self, offset: int, view: memoryview, zeroed: bool) -> None:
        for kind, voff, length, foff in self._plan(offset, len(view)):
            part = view[voff - offset:voff - offset + length]
            if kind == _FILE:
                got = self.file.readinto(foff, part)
                if got != length:
                    raise self._err(f"short read: wanted {length} bytes, got {got}", "VHDX payload", foff)
            elif kind == _ZERO:
                if not zeroed:
                    _zero_fill(part)
            else:
                parent = self._require_parent()
                got = parent.readinto(voff, part) if voff < parent.size else 0
                if got < length:   # a smaller parent reads as zeros past its end
                    _zero_fill(part[got:])
                if kind == _MIXED:  # then the sectors this file holds, copied from one file read
                    self._overlay_runs(view, offset, voff, length, *foff)

    def _overlay_runs(self, view, offset: int, voff: int, length: int, fpos: int, runs) -> None:
        """Copy the file's present runs of [voff, voff+length) into ``view`` (at ``offset``),
        reading the file in windows instead of one small read per run."""
        window = min(length, 8 << 20)
        tmp = memoryview(bytearray(window))
        i = 0
        for w in range(voff, voff + length, window):
            wend = min(w + window, voff + length)
            got = self.file.readinto(fpos + w - voff, tmp[:wend - w])
            if got != wend - w:
                raise self._err(f"short read: wanted {wend - w} bytes, got {got}", "VHDX payload", fpos + w - voff)
            while i < len(runs) and runs[i][1] < wend:
                _, a, k, _ = runs[i]
                lo, hi = max(a, w), min(a + k, wend)
                view[lo - offset:hi - offset] = tmp[lo - w:hi - w]
                if a + k > wend:
                    break          # the run continues in the next window
                i += 1

    def _require_parent(self) -> Disk:
        if self.parent is None:
            ref = self.parent_ref
            raise ChainError(
                "differencing disk needs its parent"
                + (f" ({ref.paths[0]}, identity {ref.identity})" if ref and ref.paths else ""),
                source=self.name, structure="VHDX parent locator")
        return self.parent

    def set_parent(self, parent: Disk) -> None:
        if not self.has_parent:
            raise ChainError("not a differencing disk", source=self.name, structure="VHDX file parameters")
        chain, d = set(), parent
        while d is not None:   # refuse cycles (a disk its own ancestor) and absurd depths
            if d is self or id(d) in chain:
                raise ChainError("parent chain loops back to this disk", source=self.name,
                                 structure="VHDX parent locator")
            if len(chain) >= MAX_CHAIN_DEPTH:
                raise ChainError(f"parent chain deeper than {MAX_CHAIN_DEPTH} disks", source=self.name,
                                 structure="VHDX parent locator")
            chain.add(id(d))
            d = getattr(d, "parent", None)
        if getattr(parent, "logical_sector_size", self.logical_sector_size) != self.logical_sector_size:
            raise ChainError(f"parent {parent.name} has {parent.logical_sector_size}-byte sectors, "
                             f"child {self.logical_sector_size}", source=self.name,
                             structure="VHDX logical sector size")
        self.parent = parent

    def _extents(self, offset: int, end: int) -> Iterator[Extent]:
        return merge_extents(self._plan_extents(offset, end))

    def _plan_extents(self, offset: int, end: int):
        for kind, voff, length, foff in self._plan(offset, end - offset):
            if kind == _ZERO:
                yield Extent(voff, length, ZERO)
            elif kind == _MIXED:   # finely interleaved child/parent sectors: data (conservative)
                yield Extent(voff, length, DATA)
            elif kind == _PARENT:
                parent = self._require_parent()
                inside = max(0, min(length, parent.size - voff))
                if inside:
                    yield from parent.extents(voff, inside)
                if inside < length:
                    yield Extent(voff + inside, length - inside, ZERO)
            else:  # holes in the file (sparse fixed VHDX, absent store chunks) are zeros too
                for e in self.file.extents(foff, length):
                    yield Extent(e.offset - foff + voff, e.length, e.kind)

    # --------------------------------------------------------------------- info
    def describe(self) -> dict:
        """What ``rpfs info`` shows about the container."""
        return {
            "format": "vhdx", "kind": self.kind, "virtual_size": self.size,
            "block_size": self.block_size, "logical_sector_size": self.logical_sector_size,
            "physical_sector_size": self.physical_sector_size, "identity": str(self.identity),
            "virtual_disk_id": str(self.virtual_disk_id), "log_replayed": self.log_replayed,
            "warnings": list(self.warnings),
            "parent": None if self.parent_ref is None else {
                "paths": list(self.parent_ref.paths), "identity": str(self.parent_ref.identity)},
        }
