"""An NTFS volume over a Stream: boot sector, $MFT, records with their extension records,
$UpCase, $Volume, $Secure. Opening reads the boot sector and a handful of system records;
everything else is read on demand and kept in bounded caches (cache.py).
"""

from __future__ import annotations

import threading
from array import array

from streams.errors import FormatError, NotFoundError, RpfsError
from streams.stream import BytesStream, Stream

from . import names, native
from .attrs import (
    VOLUME_IS_DIRTY, parse_attribute_list, parse_volume_information,
)
from .boot import read_boot_sector
from .cache import (
    ENTRY_ATTRS_CACHE, INDEX_NODE_CACHE, INDEX_WHOLE_READ, LRU, MAX_EXTENSION_RECORDS, MAX_RESIDENT_READ,
    MFT_BLOCK, MFT_BLOCK_CACHE, RECORD_CACHE, SECURITY_CACHE,
)
from .datastream import CompressedStream, RunlistStream
from .plain import PlainFiles, plain_files
from .record import (
    AT_ATTRIBUTE_LIST, AT_BITMAP, AT_DATA, AT_INDEX_ALLOCATION, AT_INDEX_ROOT,
    AT_VOLUME_INFORMATION, AT_VOLUME_NAME, ATTR_COMPRESSED, REF_MASK, MftRecord,
    data_attribute, parse_record, ref_number, ref_sequence,
)

FILE_MFT, FILE_MFTMIRR, FILE_LOGFILE, FILE_VOLUME, FILE_ATTRDEF, FILE_ROOT = 0, 1, 2, 3, 4, 5
FILE_BITMAP, FILE_BOOT, FILE_BADCLUS, FILE_SECURE, FILE_UPCASE, FILE_EXTEND = 6, 7, 8, 9, 10, 11
FIRST_USER_RECORD = 16
MFT_AHEAD = 32 << 20   # a $MFT up to this size is decoded ahead of a walk (``will_walk``)

METADATA_FILES = {"$MFT": 0, "$MFTMirr": 1, "$LogFile": 2, "$Volume": 3, "$AttrDef": 4,
                  "$Bitmap": 6, "$Boot": 7, "$BadClus": 8, "$Secure": 9, "$UpCase": 10,
                  "$Extend": 11}


class FileAttributes:
    """All attributes of one file: its base record plus extension records (attribute list),
    indexed once by (type, name) since every stat asks for several of them."""

    __slots__ = ("record", "attrs", "_by")

    def __init__(self, record: MftRecord, attrs: list):
        self.record = record
        self.attrs = attrs
        by: dict = {}
        for a in attrs:
            key = (a.type, a.name)
            if key in by:
                by[key].append(a)
            else:
                by[key] = [a]
        for lst in by.values():
            if len(lst) > 1:
                lst.sort(key=lambda a: a.lowest_vcn)
        self._by = by

    def extents(self, atype: int, name: str = "") -> list:
        """Every extent of one attribute, lowest VCN first."""
        return self._by.get((atype, name), [])

    def first(self, atype: int, name: str = ""):
        ext = self._by.get((atype, name))
        return ext[0] if ext else None

    def all(self, atype: int) -> list:
        return [a for a in self.attrs if a.type == atype]


class Volume:
    """A read-only NTFS volume. ``stream`` is the volume (a partition), not the disk."""

    def __init__(self, stream: Stream):
        self.stream = stream
        self.name = stream.name
        self.warnings: list[str] = []
        self.boot = read_boot_sector(stream, self.warnings)
        self.cluster_size = self.boot.cluster_size
        self.record_size = self.boot.record_size
        self.index_record_size = self.boot.index_record_size
        self.sector_size = self.boot.sector_size
        self.serial = self.boot.serial
        self.total_clusters = self.boot.total_clusters
        if self.boot.volume_size > stream.size:
            self.warnings.append(f"volume is {self.boot.volume_size} bytes but the stream "
                                 f"holds only {stream.size}: reads past the end will fail")
        self._records = LRU(RECORD_CACHE)
        self._mft_blocks = LRU(MFT_BLOCK_CACHE)
        self._files = LRU(ENTRY_ATTRS_CACHE)
        self.index_cache = LRU(INDEX_NODE_CACHE)
        self._security = LRU(SECURITY_CACHE)
        self._lock = threading.Lock()
        self._upcase: array | None = None
        self._secure = None
        self._walk_hinted = False   # will_walk: the $MFT is hinted once
        self._mft = self._open_mft()
        self.mft_records = self._mft.size // self.record_size
        self._read_volume_information()
        self._check_hibernation()

    # -- $MFT -------------------------------------------------------------------------

    def _where(self, structure: str, offset: int | None = None) -> dict:
        return {"source": self.name, "structure": structure, "offset": offset}

    def _open_mft(self) -> RunlistStream:
        off = self.boot.mft_lcn * self.cluster_size
        data = self.stream.read(off, self.record_size)
        if len(data) != self.record_size:
            raise FormatError("$MFT record 0 is past the end of the volume",
                              **self._where("MFT record 0", off))
        rec = parse_record(data, 0, self.name, off)
        if not rec.in_use or rec.base_ref:
            raise FormatError("$MFT record 0 is not a base record in use",
                              **self._where("MFT record 0", off))
        datas = [a for a in rec.attributes if a.type == AT_DATA and a.name == ""]
        if not datas or datas[0].resident:
            raise FormatError("$MFT has no non-resident $DATA", **self._where("MFT record 0", off))
        first = min(datas, key=lambda a: a.lowest_vcn)
        if first.lowest_vcn != 0:
            raise FormatError("$MFT $DATA does not start at VCN 0",
                              **self._where("MFT record 0", off))
        size = first.data_size
        if size < self.record_size * FIRST_USER_RECORD // 2 or size > self.boot.volume_size:
            raise FormatError(f"$MFT size {size} is absurd", **self._where("MFT record 0", off))
        partial = RunlistStream(self.stream, self.cluster_size,
                                first.decode_runs(self.total_clusters, self.name),
                                size, first.initialized_size, f"{self.name}:$MFT")
        self._mft = partial
        alist = [a for a in rec.attributes if a.type == AT_ATTRIBUTE_LIST]
        if alist:
            # $MFT's own extension records are found through the part mapped so far
            fa = self._gather(rec, alist[0])
            extents = fa.extents(AT_DATA)
            runs = self._merge_runs(extents, "$MFT $DATA")
            return RunlistStream(self.stream, self.cluster_size, runs, size,
                                 first.initialized_size, f"{self.name}:$MFT")
        return partial

    def mft_offset(self, number: int) -> int | None:
        """Volume byte offset of an MFT record (for error messages and tools)."""
        where = self._mft.span(number * self.record_size, 1)   # one run: no generator
        if where is not None:
            return where[1]
        for pos, n, disk in self._mft._map(number * self.record_size,
                                           number * self.record_size + 1):
            return disk
        return None

    def will_walk(self) -> int:
        """A walk of many directories begins (a restore). A walk parses $MFT records one
        64 KiB block after another on its own thread; on a stored volume each block is a
        frame decompressed and hashed there, in turn, while the other core waits. Here the
        whole $MFT (when up to ``MFT_AHEAD``), run by run where it lies on the volume, is
        hinted to the streams below (``Stream.will_need``), so a stored file decodes its
        chunks in the background and the walk finds them decoded. Returns the bytes hinted;
        nothing is read here."""
        if self._walk_hinted:
            return 0
        self._walk_hinted = True
        if self._mft.init > MFT_AHEAD:
            return 0   # a big volume: a walk of one folder needs a small part of it
        return self._will_need(self._mft)

    def will_list(self, number: int, sequence: int = 0) -> int:
        """Directory ``number`` will be listed soon (a restore has just listed its parent
        and walks into it next): its $INDEX_ALLOCATION (up to what a listing reads at
        once) is hinted as ``will_walk`` hints the $MFT. Reads the directory's record (the
        walk reads it next anyway); 0 when there is nothing to hint or it cannot tell."""
        try:
            fa = self.file(number, sequence)
            if fa.first(AT_INDEX_ALLOCATION, "$I30") is None:
                return 0
            alloc = self.attribute_stream(fa, AT_INDEX_ALLOCATION, "$I30")
        except RpfsError:
            return 0   # the walk reports it when it lists the directory
        if not isinstance(alloc, RunlistStream) or alloc.init > INDEX_WHOLE_READ:
            return 0
        return self._will_need(alloc)

    def _will_need(self, attr: RunlistStream) -> int:
        """Hint the volume ranges under ``attr``'s runs (``Stream.will_need``)."""
        hinted = 0
        try:
            for _, n, disk in attr._map(0, attr.init):
                if disk is not None:
                    hinted += self.stream.will_need(disk, n)
        except RpfsError:
            pass       # a damaged runlist: the walk reads (and reports) as before
        return hinted

    def record(self, number: int) -> MftRecord:
        """One MFT record, fixups applied (cached)."""
        rec = self._records.get(number)
        if rec is None:
            rec = self._parse_record(number)
            self._records.put(number, rec)
        return rec

    def _mft_bytes(self, number: int) -> bytes:
        """Record ``number``'s bytes, read with its 64 KiB block of neighbours (a listing
        touches them next). Damage elsewhere in the block must not fail this record, so
        a failed block read falls back to the record alone."""
        start = number * self.record_size
        block_no = start // MFT_BLOCK
        try:
            block = self._mft_block(block_no)
        except FormatError:
            return self._mft.read(start, self.record_size)
        at = start - block_no * MFT_BLOCK
        return block[at:at + self.record_size]

    def _mft_block(self, block_no: int) -> bytes:
        block = self._mft_blocks.get(block_no)
        if block is None:
            block = self._mft.read(block_no * MFT_BLOCK, MFT_BLOCK)
            self._mft_blocks.put(block_no, block)
        return block

    def plain_files(self, numbers, sequences, max_size: int) -> PlainFiles | None:
        """What a restore needs of the plain files among records ``numbers`` (a listing's
        arrays), from one C call over the $MFT blocks holding them (ntfs_reader/plain.py);
        None when records do not tile the blocks. A block that cannot be read leaves its
        files to the node path, which reads them one by one and reports what fails."""
        rs = self.record_size
        if MFT_BLOCK % rs:
            return None
        per = MFT_BLOCK // rs
        records = self.mft_records
        blocks = {}
        for no in {n // per for n in numbers if n < records}:
            try:
                blocks[no] = self._mft_block(no)
            except RpfsError:
                pass
        return plain_files(blocks, MFT_BLOCK, rs, records, numbers, sequences,
                           self.cluster_size, self.total_clusters, max_size)

    def _parse_record(self, number: int) -> MftRecord:
        if number < 0 or number >= self._mft.size // self.record_size:
            raise FormatError(f"MFT record {number} is beyond the end of $MFT "
                              f"({self._mft.size // self.record_size} records)",
                              **self._where(f"MFT record {number}"))
        data = self._mft_bytes(number)
        off = self.mft_offset_safe(number)
        return parse_record(data, number, self.name, off or 0)

    def stat_summary(self, number: int) -> tuple | None:
        """What a stat of a plain file or directory needs of record ``number``, read by the
        C parser without building its attribute objects (``stat_summary`` in _ntfsparse.c);
        None when only the full path can tell (Entry.quick_stat explains)."""
        p = native.parser
        if p is None or not 0 <= number < self.mft_records:
            return None
        try:
            data = self._mft_bytes(number)
        except RpfsError:
            return None
        return p.stat_summary(data, number)

    def stat_summaries(self, numbers) -> list:
        """``stat_summary`` of each of records ``numbers`` (a listing's children stat'ed in
        a batch), each from its 64 KiB $MFT block looked up once per run of records in it."""
        p = native.parser
        if p is None:
            return [None] * len(numbers)
        summary, rs, records = p.stat_summary, self.record_size, self.mft_records
        out = []
        block_no, block = -1, None
        for n in numbers:
            if not 0 <= n < records:
                out.append(None)
                continue
            start = n * rs
            if start // MFT_BLOCK != block_no:
                block_no = start // MFT_BLOCK
                try:
                    block = self._mft_block(block_no)
                except RpfsError:
                    block = None
            if block is None:   # read alone, or not at all, as _mft_bytes does
                out.append(self.stat_summary(n))
                continue
            at = start - block_no * MFT_BLOCK
            out.append(summary(block[at:at + rs], n))
        return out

    def data_attribute(self, number: int) -> tuple | None:
        """What opening a plain file needs of record ``number`` (``record.data_attribute``),
        without parsing its other attributes; None when only the whole record can tell."""
        if not 0 <= number < self.mft_records:
            return None
        try:
            data = self._mft_bytes(number)
        except RpfsError:
            return None
        return data_attribute(data, number, self.mft_offset_safe(number) or 0)

    # -- files: base record + extension records ------------------------------------

    def file(self, number: int, sequence: int = 0) -> FileAttributes:
        """The merged attributes of the file whose base record is ``number``.

        A non-zero ``sequence`` must match the record's (a stale reference otherwise).
        """
        fa = self._files.get(number)
        if fa is None:
            # base records live in the file cache; only extension records use _records
            rec = self._records.get(number) or self._parse_record(number)
            if not rec.in_use:
                raise FormatError("reference to an MFT record not in use",
                                  **self._where(f"MFT record {number}",
                                                self.mft_offset_safe(number)))
            if rec.base_ref:
                raise FormatError(f"MFT record {number} is an extension record of "
                                  f"{ref_number(rec.base_ref)}, not a file",
                                  **self._where(f"MFT record {number}",
                                                self.mft_offset_safe(number)))
            alist = [a for a in rec.attributes if a.type == AT_ATTRIBUTE_LIST]
            fa = self._gather(rec, alist[0]) if alist else FileAttributes(rec, rec.attributes)
            self._files.put(number, fa)
        if sequence and fa.record.sequence != sequence:
            raise FormatError(f"stale reference: sequence {sequence}, record has "
                              f"{fa.record.sequence}",
                              **self._where(f"MFT record {number}",
                                            self.mft_offset_safe(number)))
        return fa

    def mft_offset_safe(self, number: int) -> int | None:
        try:
            return self.mft_offset(number)
        except FormatError:
            return None

    def _gather(self, rec: MftRecord, alist_attr) -> FileAttributes:
        where = self._where(f"$ATTRIBUTE_LIST of MFT record {rec.number}", alist_attr.offset)
        if alist_attr.resident:
            value = alist_attr.value
        else:
            if alist_attr.data_size > MAX_RESIDENT_READ:
                raise FormatError(f"attribute list of {alist_attr.data_size} bytes", **where)
            runs = alist_attr.decode_runs(self.total_clusters, self.name)
            value = RunlistStream(self.stream, self.cluster_size, runs, alist_attr.data_size,
                                  alist_attr.initialized_size, self.name).read(
                0, alist_attr.data_size)
        entries = parse_attribute_list(value, where)
        wanted: dict[int, set] = {}
        seqs: dict[int, int] = {}
        for e in entries:
            num = ref_number(e.file_ref)
            if num == rec.number:
                continue
            wanted.setdefault(num, set()).add((e.type, e.attr_id))
            seqs[num] = ref_sequence(e.file_ref)
        if len(wanted) > MAX_EXTENSION_RECORDS:
            raise FormatError(f"{len(wanted)} extension records", **where)
        attrs = [a for a in rec.attributes if a.type != AT_ATTRIBUTE_LIST or a is alist_attr]
        for num, keys in wanted.items():
            ext = self.record(num)
            ewhere = self._where(f"MFT record {num} (extension of {rec.number})",
                                 self.mft_offset_safe(num))
            if not ext.in_use or ref_number(ext.base_ref) != rec.number:
                raise FormatError("attribute list points at a record that is not one of "
                                  "this file's extension records", **ewhere)
            if seqs[num] and ext.sequence != seqs[num]:
                raise FormatError(f"stale extension reference (sequence {seqs[num]} vs "
                                  f"{ext.sequence})", **ewhere)
            for a in ext.attributes:
                if (a.type, a.attr_id) in keys and a.type != AT_ATTRIBUTE_LIST:
                    attrs.append(a)
        return FileAttributes(rec, attrs)

    def _merge_runs(self, extents: list, what: str) -> list:
        runs: list = []
        expect = 0
        for a in extents:
            if a.resident:
                raise FormatError(f"{what}: resident and non-resident extents mixed",
                                  **self._where(what, a.offset))
            if a.lowest_vcn != expect:
                raise FormatError(f"{what}: extent starts at VCN {a.lowest_vcn}, expected "
                                  f"{expect}", **self._where(what, a.offset))
            r = a.decode_runs(self.total_clusters, self.name)
            runs.extend(r)
            expect = r[-1][0] + r[-1][1] if r else a.highest_vcn + 1
            if a.highest_vcn >= a.lowest_vcn and expect != a.highest_vcn + 1:
                expect = a.highest_vcn + 1
        return runs

    def attribute_stream(self, fa: FileAttributes, atype: int, name: str = "",
                         label: str | None = None) -> Stream:
        """The contents of one attribute as a Stream (resident, runlist or compressed)."""
        extents = fa.extents(atype, name)
        num = fa.record.number
        label = label or f"{self.name}:record {num}:{atype:#x}:{name}"
        if not extents:
            raise NotFoundError(f"{label}: no such attribute")
        return self.extents_stream(extents, num, label)

    def extents_stream(self, extents: list, num: int, label: str) -> Stream:
        """One attribute's extents (lowest VCN first) of record ``num`` as a Stream."""
        first = extents[0]
        if first.resident:
            if len(extents) > 1:
                raise FormatError("resident attribute with more than one extent",
                                  **self._where(f"MFT record {num}", first.offset))
            return BytesStream(first.value, label)
        if first.lowest_vcn != 0:
            raise FormatError("attribute's first extent does not start at VCN 0",
                              **self._where(f"MFT record {num}", first.offset))
        if first.data_size > self.boot.volume_size * 64 + (1 << 40):
            raise FormatError(f"absurd attribute size {first.data_size}",
                              **self._where(f"MFT record {num}", first.offset))
        runs = self._merge_runs(extents, label)
        if first.flags & ATTR_COMPRESSED and first.compression_unit:
            return CompressedStream(self.stream, self.cluster_size, runs, first.data_size,
                                    first.initialized_size, first.compression_unit, label)
        return RunlistStream(self.stream, self.cluster_size, runs, first.data_size,
                             first.initialized_size, label)

    def read_attribute(self, fa: FileAttributes, atype: int, name: str = "",
                       limit: int = MAX_RESIDENT_READ) -> bytes:
        """A whole (small) attribute value; refuses absurd sizes."""
        s = self.attribute_stream(fa, atype, name)
        if s.size > limit:
            raise FormatError(f"attribute of {s.size} bytes is larger than {limit}",
                              **self._where(f"MFT record {fa.record.number}"))
        return s.read(0, s.size)

    # -- indexes -------------------------------------------------------------------

    def index(self, fa: FileAttributes, name: str = "$I30"):
        from .index import Index
        root = fa.first(AT_INDEX_ROOT, name)
        num = fa.record.number
        if root is None or not root.resident:
            raise FormatError(f"no resident $INDEX_ROOT:{name}",
                              **self._where(f"MFT record {num}"))
        alloc = None
        bitmap = None
        if fa.first(AT_INDEX_ALLOCATION, name) is not None:
            alloc = self.attribute_stream(fa, AT_INDEX_ALLOCATION, name,
                                          f"{self.name}:record {num}:$INDEX_ALLOCATION:{name}")
            if fa.first(AT_BITMAP, name) is not None:
                bitmap = self.read_attribute(fa, AT_BITMAP, name)
        return Index(root.value, alloc, bitmap, self.cluster_size,
                     self._where(f"index {name} of MFT record {num}"), self.index_cache,
                     (num, fa.record.sequence, name))

    # -- $UpCase, $Volume, hibernation ---------------------------------------------

    @property
    def upcase(self) -> array:
        if self._upcase is None:
            table = None
            try:
                fa = self.file(FILE_UPCASE)
                data = self.read_attribute(fa, AT_DATA, "", 1 << 17)
                if len(data) == 1 << 17:
                    table = array("H")
                    table.frombytes(data)
                    import sys
                    if sys.byteorder == "big":
                        table.byteswap()
                    if table[0x61:0x7B] != array("H", range(0x41, 0x5B)) \
                            or table[0x41:0x5B] != array("H", range(0x41, 0x5B)):
                        # zeroed or garbage clusters: such a table breaks every lookup
                        self.warnings.append("$UpCase does not map a-z to A-Z; using "
                                             "Unicode upper case instead")
                        table = None
                else:
                    self.warnings.append(f"$UpCase has {len(data)} bytes; using Unicode "
                                         "upper case instead")
            except FormatError as exc:
                self.warnings.append(f"$UpCase unreadable ({exc}); using Unicode upper case")
            if table is None:
                table = array("H", (ord(c.upper()) if len(c.upper()) == 1 and
                                    ord(c.upper()) < 0x10000 else ord(c)
                                    for c in map(chr, range(65536))))
            self._upcase = table
        return self._upcase

    def _read_volume_information(self) -> None:
        self.label = ""
        self.version = ""
        self.dirty = False
        self.volume_flags = 0
        try:
            fa = self.file(FILE_VOLUME)
            vn = fa.first(AT_VOLUME_NAME)
            if vn is not None and vn.resident:
                self.label = names.from_raw(vn.value) if vn.value else ""
            vi = fa.first(AT_VOLUME_INFORMATION)
            if vi is not None and vi.resident:
                info = parse_volume_information(vi.value, self._where("$VOLUME_INFORMATION"))
                self.version = f"{info.major}.{info.minor}"
                self.volume_flags = info.flags
                self.dirty = bool(info.flags & VOLUME_IS_DIRTY)
        except FormatError as exc:
            self.warnings.append(f"$Volume unreadable: {exc}")
        if self.dirty:
            self.warnings.append("volume is marked dirty (not cleanly unmounted): reading it "
                                 "as it is; recent changes may be missing or inconsistent")

    def _check_hibernation(self) -> None:
        try:
            e = self.root.child("hiberfil.sys")
            head = e.open().read(0, 4).lower()
        except (RpfsError, OSError):  # no such file, or unreadable: nothing to warn about
            return
        if head in (b"hibr", b"wake", b"rstr"):
            self.hibernated = True
            self.warnings.append("Windows is hibernated on this volume (hiberfil.sys is "
                                 "active): reading it as it is; files may be out of date")

    hibernated = False

    # -- security ------------------------------------------------------------------

    def security_descriptor(self, security_id: int) -> bytes | None:
        """Descriptor for a $STANDARD_INFORMATION security id, through $Secure."""
        sd = self._security.get(security_id)
        if sd is not None:
            return sd
        with self._lock:
            if self._secure is None:
                from .security import SecureStore
                fa = self.file(FILE_SECURE)
                self._secure = SecureStore(self.index(fa, "$SII"),
                                           self.attribute_stream(fa, AT_DATA, "$SDS"),
                                           self.name)
        sd = self._secure.descriptor(security_id)
        if sd is not None:
            self._security.put(security_id, sd)
        return sd

    # -- the tree --------------------------------------------------------------------

    def entry(self, ref: int):
        """The file with this MFT record number (or full reference, sequence checked)."""
        from .entry import Entry
        number, seq = (ref_number(ref), ref_sequence(ref)) if ref > REF_MASK else (ref, 0)
        e = Entry(self, number, None, seq)
        e._attrs()  # fail now if the record is not a file
        return e

    @property
    def root(self):
        return self.entry(FILE_ROOT)

    def lookup(self, path: str):
        """``/a/b/c`` -> Entry, case-insensitive (exact case preferred). Symlinks and
        junctions along the path are not followed (the caller does that)."""
        e = self.root
        for part in path.split("/"):
            if part in ("", "."):
                continue
            e = e.child(part)
        return e

    def walk(self, top: str = "/"):
        """(path, Entry) for everything below ``top``, depth first, iteratively (no
        recursion limit); symlinks and junctions are listed, not followed."""
        stack = [(top.rstrip("/"), self.lookup(top))]
        while stack:
            path, e = stack.pop()
            for c in e.iterdir():
                p = f"{path}/{c.name}"
                yield p, c
                if c.is_dir:
                    stack.append((p, c))

    def metadata(self, name: str):
        """A metadata file by name ("$MFT", "$Bitmap", "$Extend/$Reparse", ...).

        They are hidden from the root's iterdir but reachable here and through lookup.
        """
        if name in METADATA_FILES:
            return self.entry(METADATA_FILES[name])
        return self.lookup("/" + name)

    def metadata_files(self) -> dict:
        """Every metadata file: the fixed ones and the contents of $Extend."""
        out = {n: self.entry(r) for n, r in METADATA_FILES.items()}
        try:
            for e in self.entry(FILE_EXTEND).iterdir():
                out["$Extend/" + e.name] = e
        except FormatError:
            pass
        return out

    def __repr__(self) -> str:
        return (f"<ntfs Volume {self.name} label={self.label!r} cluster={self.cluster_size} "
                f"record={self.record_size}>")
