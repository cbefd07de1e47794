"""Files and directories as the namespace layer sees them (docs/architecture.md).

An Entry is cheap: iterdir builds one per index entry from the index key alone, and the
MFT record (with its extension records) is read only when a property needs it.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator, Mapping

from streams.errors import FormatError, NotFoundError, UnsupportedError, UsageError
from streams.stream import Stream

from . import names
from .attrs import (
    FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_ENCRYPTED, FILE_ATTRIBUTE_OFFLINE,
    FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS, FILE_ATTRIBUTE_RECALL_ON_OPEN,
    FILE_ATTRIBUTE_REPARSE_POINT, FILE_ATTRIBUTE_SYSTEM, FILE_NAME_INDEX_PRESENT, NS_DOS, NS_POSIX, NS_WIN32,
    NS_WIN32_AND_DOS, FileName, parse_file_name, parse_object_id,
    parse_standard_information,
)
from .cache import MAX_INDEX_DEPTH
from .record import (
    AT_DATA, AT_EA, AT_FILE_NAME, AT_INDEX_ALLOCATION, AT_INDEX_ROOT, AT_OBJECT_ID,
    AT_REPARSE_POINT, AT_SECURITY_DESCRIPTOR, AT_STANDARD_INFORMATION, ATTR_ENCRYPTED,
    REC_DIRECTORY, REC_IN_USE, ref_number, ref_sequence,
)
from .reparse import (
    CONTENT_ELSEWHERE, IO_REPARSE_TAG_LX_SYMLINK, IO_REPARSE_TAG_MOUNT_POINT,
    IO_REPARSE_TAG_SYMLINK, IO_REPARSE_TAG_WOF, Reparse, is_cloud, parse_reparse, tag_name,
    wof_description,
)
from .times import Times

FILE_ROOT = 5
INTERIX_SYMLINK = b"IntxLNK\x01"
_NS_PREFERENCE = {NS_WIN32: 0, NS_WIN32_AND_DOS: 0, NS_POSIX: 1, NS_DOS: 2}
_ZERO_TIMES = Times(0, 0, 0, 0)


def _lazy(fn):
    """A read-only property computed once per Entry (kept in ``_cache``)."""
    key = fn.__name__

    def get(self):
        cache = self._cache
        if cache is None:  # most listed entries never compute one: no dict for them
            cache = self._cache = {}
        try:
            return cache[key]
        except KeyError:
            value = cache[key] = fn(self)
            return value
    get.__doc__ = fn.__doc__
    return property(get)


def _compare_keys(a, b) -> int:
    return (a > b) - (a < b)


def _component(part: str) -> str:
    """One component of a link target: '', '.' and '..' keep their path meaning."""
    return part if part in ("", ".", "..") else names.to_linux(part)


class _Where(Mapping):
    """Error context (source, structure, offset) computed only when an error is raised:
    finding the record's offset on the volume costs more than parsing it."""

    __slots__ = ("entry", "structure", "_d")

    def __init__(self, entry, structure):
        self.entry, self.structure, self._d = entry, structure, None

    def _dict(self) -> dict:
        if self._d is None:
            e = self.entry
            self._d = {"source": e.volume.name,
                       "structure": self.structure or f"MFT record {e.ref}",
                       "offset": e.volume.mft_offset_safe(e.ref)}
        return self._d

    def __getitem__(self, key):
        return self._dict()[key]

    def __iter__(self):
        return iter(self._dict())

    def __len__(self):
        return 3


def _index_kind(flags: int) -> str | None:
    """What the flags of an index's $FILE_NAME tell of the kind (see Entry.index_kind)."""
    if flags & FILE_ATTRIBUTE_REPARSE_POINT:
        return None
    if flags & FILE_NAME_INDEX_PRESENT:
        return "dir"
    return None if flags & FILE_ATTRIBUTE_SYSTEM else "file"



def quick_stat(q: tuple | None, sequence: int) -> tuple | None:
    """``Entry.quick_stat`` from its record's ``Volume.stat_summary`` ``q``, listed with
    ``sequence``, without an Entry (a listing's children stat'ed in a batch make none)."""
    if q is None:
        return None
    seq, flags, times, nondos, size, allocated, dir_allocated = q
    if not flags & REC_IN_USE or (sequence and seq != sequence):
        return None  # the record path raises the error
    if flags & REC_DIRECTORY:
        return True, 0, Times(*times), max(1, nondos), dir_allocated
    return False, size, Times(*times), max(1, nondos), allocated

class Entry:
    """One file or directory, reached by ``name`` (a hard link has one Entry per name)."""

    __slots__ = ("volume", "ref", "sequence", "_fn", "_fa", "_cache")

    def __init__(self, volume, ref: int, fn: FileName | None, sequence: int = 0):
        self.volume = volume
        self.ref = ref
        self.sequence = sequence
        self._fn = fn
        self._fa = None
        self._cache: dict | None = None

    # -- record-level ----------------------------------------------------------------

    def _attrs(self):
        if self._fa is None:
            self._fa = self.volume.file(self.ref, self.sequence)
        return self._fa

    def release(self) -> None:
        """Drop the parsed record and the values computed from it (the volume's caches
        keep recent records): a namespace node may outlive its first use by hours."""
        self._fa = None
        self._cache = None

    def _where(self, structure: str | None = None) -> "_Where":
        return _Where(self, structure)

    def _memo(self, key, fn):  # for the few values that are not properties
        if self._cache is None:
            self._cache = {}
        try:
            return self._cache[key]
        except KeyError:
            value = self._cache[key] = fn()
            return value

    @_lazy
    def file_names(self) -> list[FileName]:
        """Every $FILE_NAME of the file (all links, all namespaces)."""
        out = []
        for a in self._attrs().all(AT_FILE_NAME):
            if a.resident:
                out.append(parse_file_name(a.value, self._where()))
        return out

    @property
    def _name_attr(self) -> FileName | None:
        if self._fn is None:
            fns = sorted(self.file_names, key=lambda f: _NS_PREFERENCE.get(f.namespace, 3))
            self._fn = fns[0] if fns else None
        return self._fn

    @property
    def name(self) -> str:
        """The Linux name of this link ('' for the root)."""
        if self.ref == FILE_ROOT:
            return ""
        fn = self._name_attr
        if fn is None:
            return f"<record {self.ref}>"
        if fn.namespace == NS_DOS:  # reached by its 8.3 alias: show the long name
            for f in self.file_names:
                if f.namespace != NS_DOS and f.parent_ref == fn.parent_ref:
                    fn = self._fn = f
                    break
        return names.from_raw(fn.raw_name)

    @property
    def ntfs_name(self) -> str:
        """The full name as stored (may hold unpaired surrogates and exceed 255 bytes)."""
        fn = self._name_attr
        return names.decode(fn.raw_name) if fn else ""

    @property
    def parent_ref(self) -> int | None:
        fn = self._name_attr
        return ref_number(fn.parent_ref) if fn else None

    @_lazy
    def _si(self):
        a = self._attrs().first(AT_STANDARD_INFORMATION)
        if a is None or not a.resident:
            return None
        return parse_standard_information(a.value, self._where())

    def quick_stat(self) -> tuple | None:
        """(is_dir, size, times, nlink, allocated_size) as the properties of that name give
        them, read by the C parser without building the record's objects; None unless the
        file is a plain file or directory (no reparse point, no attribute list, not a
        possible Interix symlink, times in a resident $STANDARD_INFORMATION) or when the
        parser is absent or the record damaged or stale: then the properties answer."""
        return quick_stat(self.volume.stat_summary(self.ref), self.sequence)

    @property
    def times(self) -> Times:
        si = self._si
        if si is not None:
            return si.times
        fn = self._name_attr
        return fn.times if fn else _ZERO_TIMES

    @property
    def attributes(self) -> int:
        si = self._si
        flags = si.file_attributes if si else 0
        if self._attrs().record.is_directory:
            flags |= FILE_ATTRIBUTE_DIRECTORY
        return flags

    @property
    def nlink(self) -> int:
        return max(1, sum(1 for f in self.file_names if f.namespace != NS_DOS))

    @property
    def hard_links(self) -> list[tuple[int, str]]:
        """(parent record, Linux name) of every link of the file."""
        return [(ref_number(f.parent_ref), names.from_raw(f.raw_name))
                for f in self.file_names if f.namespace != NS_DOS]

    @property
    def short_name(self) -> str | None:
        for f in self.file_names:
            if f.namespace == NS_DOS:
                return names.from_raw(f.raw_name)
        return None

    # -- kind ----------------------------------------------------------------------

    @_lazy
    def reparse(self) -> Reparse | None:
        a = self._attrs().first(AT_REPARSE_POINT)
        if a is None:
            return None
        value = self.volume.read_attribute(self._attrs(), AT_REPARSE_POINT)
        return parse_reparse(value, self._where(f"$REPARSE_POINT of MFT record {self.ref}"))

    @property
    def reparse_tag(self) -> int:
        r = self.reparse
        return r.tag if r else 0

    @property
    def reparse_tag_name(self) -> str | None:
        r = self.reparse
        return tag_name(r.tag) if r else None

    def reparse_data(self) -> bytes:
        r = self.reparse
        return r.data if r else b""

    @_lazy
    def _interix_target(self) -> str | None:
        si = self._si
        if not si or not si.file_attributes & FILE_ATTRIBUTE_SYSTEM:
            return None
        if self._attrs().record.is_directory:
            return None
        a = self._attrs().first(AT_DATA)
        if a is None or not 8 < a.size <= 8 + 2 * 4096:
            return None
        data = self.volume.read_attribute(self._attrs(), AT_DATA)
        if not data.startswith(INTERIX_SYMLINK) or len(data) & 1:
            return None
        return data[8:].decode("utf-16-le", "surrogatepass").rstrip("\0")

    @_lazy
    def is_symlink(self) -> bool:
        tag = self.reparse_tag
        if tag in (IO_REPARSE_TAG_SYMLINK, IO_REPARSE_TAG_MOUNT_POINT, IO_REPARSE_TAG_LX_SYMLINK):
            return True
        return not tag and self._interix_target is not None

    @property
    def is_dir(self) -> bool:
        return self._attrs().record.is_directory and not self.is_symlink

    @property
    def index_kind(self) -> str | None:
        """"dir" or "file" from the directory index's copy of $FILE_NAME alone (no MFT
        record read), or None when only the record can tell: reparse points (symlink,
        junction or plain file) and system files (an Interix symlink is one). Windows and
        ntfs-3g keep these two flags of the index copy in step with the record."""
        fn = self._fn
        return None if fn is None else _index_kind(fn.flags)

    @property
    def is_encrypted(self) -> bool:
        if self._si and self._si.file_attributes & FILE_ATTRIBUTE_ENCRYPTED:
            return True
        a = self._attrs().first(AT_DATA)
        return bool(a is not None and a.flags & ATTR_ENCRYPTED)

    # -- sizes ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        if self.is_symlink:
            return len(self.readlink().encode("utf-8", "surrogateescape"))
        fa = self._attrs()
        if fa.record.is_directory:
            a = fa.first(AT_INDEX_ALLOCATION, "$I30")
            return a.data_size if a is not None and not a.resident else 0
        a = fa.first(AT_DATA)
        return a.size if a is not None else 0

    @property
    def allocated_size(self) -> int:
        fa = self._attrs()
        a = fa.first(AT_INDEX_ALLOCATION, "$I30") if fa.record.is_directory else fa.first(AT_DATA)
        if a is None:
            return 0
        if a.resident:
            return 0
        if a.compression_unit or a.flags & 0x8001:
            return a.compressed_size
        return a.allocated_size

    # -- contents --------------------------------------------------------------------

    def streams(self) -> list[tuple[str, int]]:
        """(name, size) of every alternate data stream (named $DATA), in record order."""
        out = []
        for a in self._attrs().all(AT_DATA):
            if a.name and (a.resident or a.lowest_vcn == 0):
                out.append((names.to_linux(a.name), a.size))
        return out

    def _check_readable(self, unnamed: bool = True) -> None:
        r = self.reparse if unnamed else None  # named streams are plain data
        if r is not None:
            if r.tag in CONTENT_ELSEWHERE:
                raise UnsupportedError(f"{tag_name(r.tag)} reparse point: contents are "
                                       "stored outside this file", **self._where())
        si = self._si
        flags = si.file_attributes if si else 0
        not_here = (FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS | FILE_ATTRIBUTE_RECALL_ON_OPEN
                    | FILE_ATTRIBUTE_OFFLINE)
        if unnamed and is_cloud(self.reparse_tag) and flags & not_here:
            raise UnsupportedError("cloud files placeholder: contents not downloaded",
                                   **self._where())
        if self.is_encrypted:
            raise UnsupportedError("EFS-encrypted file: contents need the user's key",
                                   **self._where())

    def open(self, stream_name: str = "") -> Stream:
        """The unnamed data (or the named stream): a Stream, never silent zeros."""
        if not stream_name and self._fa is None:
            plain = self._open_plain()
            if plain is not None:
                return plain
        fa = self._attrs()
        if not stream_name and fa.record.is_directory and fa.first(AT_DATA) is None:
            raise UsageError(f"{self.volume.name}: MFT record {self.ref} is a directory")
        r = self.reparse
        if not stream_name and r is not None and r.tag == IO_REPARSE_TAG_WOF:
            return self._open_wof(r)
        self._check_readable(not stream_name)
        try:
            ntfs = names.to_ntfs(stream_name)
        except (UnicodeError, ValueError):
            raise NotFoundError(f"{self.volume.name}: no stream {stream_name!r}") from None
        if fa.first(AT_DATA, ntfs) is None:
            if not stream_name:
                from streams.stream import BytesStream
                return BytesStream(b"", f"{self.volume.name}:record {self.ref}")
            raise NotFoundError(f"{self.volume.name}: record {self.ref} has no stream "
                                f"{stream_name!r}")
        return self.volume.attribute_stream(
            fa, AT_DATA, ntfs, f"{self.volume.name}:record {self.ref}" +
            (f":{stream_name}" if stream_name else ""))

    def _open_plain(self) -> Stream | None:
        """``open()`` of a plain file from its unnamed $DATA alone (Volume.data_attribute:
        no reparse point or attribute list) when it is not encrypted (a compressed one
        is read as the whole-record path reads it); None for the whole-record path, which also reports damage and stale references."""
        q = self.volume.data_attribute(self.ref)
        if q is None:
            return None
        seq, flags, file_attributes, attr = q
        if flags & (REC_IN_USE | REC_DIRECTORY) != REC_IN_USE or (
                self.sequence and seq != self.sequence):
            return None
        if file_attributes & FILE_ATTRIBUTE_ENCRYPTED or attr.flags & ATTR_ENCRYPTED:
            return None
        return self.volume.extents_stream([attr], self.ref,
                                          f"{self.volume.name}:record {self.ref}")

    def _open_wof(self, r: Reparse) -> Stream:
        from .wof import WOF_STREAM, WofStream, wof_algorithm
        provider, algorithm = wof_algorithm(r.data)
        fa = self._attrs()
        if provider != 2 or fa.first(AT_DATA, WOF_STREAM) is None:
            raise UnsupportedError(f"{wof_description(r.data)}: contents are not in this "
                                   "volume's WofCompressedData stream", **self._where())
        if self.is_encrypted:
            raise UnsupportedError("EFS-encrypted file", **self._where())
        source = self.volume.attribute_stream(fa, AT_DATA, WOF_STREAM)
        a = fa.first(AT_DATA)
        size = a.size if a is not None else 0
        return WofStream(source, size, algorithm, f"{self.volume.name}:record {self.ref}")

    def security_descriptor(self) -> bytes:
        """The raw self-relative security descriptor (own attribute or through $Secure)."""
        fa = self._attrs()
        if fa.first(AT_SECURITY_DESCRIPTOR) is not None:
            return self.volume.read_attribute(fa, AT_SECURITY_DESCRIPTOR)
        si = self._si
        if si and si.security_id:
            sd = self.volume.security_descriptor(si.security_id)
            if sd is not None:
                return sd
            raise FormatError(f"security id {si.security_id} not found in $Secure",
                              **self._where())
        return b""

    @property
    def object_id(self):
        a = self._attrs().first(AT_OBJECT_ID)
        return parse_object_id(a.value) if a is not None and a.resident else None

    def eas(self) -> dict[str, bytes]:
        """Extended attributes ($EA): name -> value."""
        fa = self._attrs()
        if fa.first(AT_EA) is None:
            return {}
        data = self.volume.read_attribute(fa, AT_EA)
        out = {}
        pos = 0
        for _ in range(65536):
            if pos + 8 > len(data):
                break
            nxt, _flags, nlen, vlen = struct.unpack_from("<IBBH", data, pos)
            if pos + 8 + nlen + 1 + vlen > len(data):
                raise FormatError(f"$EA entry at {pos} overruns", **self._where("$EA"))
            name = data[pos + 8:pos + 8 + nlen].decode("latin-1")
            out[name] = data[pos + 9 + nlen:pos + 9 + nlen + vlen]
            if nxt == 0:
                break
            if nxt < 8:
                raise FormatError(f"$EA entry at {pos} has next offset {nxt}",
                                  **self._where("$EA"))
            pos += nxt
        return out

    # -- directories -----------------------------------------------------------------

    def _index(self):
        def load():
            fa = self._attrs()
            if not fa.record.is_directory or fa.first(AT_INDEX_ROOT, "$I30") is None:
                raise UsageError(f"{self.volume.name}: MFT record {self.ref} is not a directory")
            return self.volume.index(fa)
        return self._memo("index", load)

    def iterdir(self, after: str | None = None):
        """Children in index order (DOS 8.3 aliases skipped; metadata hidden at the root).

        ``after``: resume after the child of that name (as yielded before), seeking in the
        B+tree rather than re-reading everything before it (paged readdir).
        """
        index = self._index()
        where = self._where(f"$I30 of MFT record {self.ref}")
        root = self.ref == FILE_ROOT
        volume = self.volume
        if after is None:
            source = iter(index)
        else:
            try:
                raw = names.to_utf16(after)
            except (UnicodeError, ValueError):
                raise NotFoundError(f"{after!r}: not a name this volume can hold") from None
            if names.is_shortened(after):  # the key is the full name the short form stands for
                try:
                    raw = self.child(after)._name_attr.raw_name
                except NotFoundError:
                    pass
            key = self._collation_key(raw)
            source = index.iter_after(lambda e: _compare_keys(self._entry_key(e, where), key))
        for e in source:
            fn = parse_file_name(e.key, where)
            if fn.namespace == NS_DOS:
                continue
            num = e.ref & 0xFFFFFFFFFFFF
            if root and num < 16 and fn.raw_name[:2] == b"$\x00" or (root and num == FILE_ROOT):
                continue
            yield Entry(volume, num, fn, e.ref >> 48)

    def listing(self) -> Iterator[tuple[str, "Entry", str | None]]:
        """Every child as (name, entry, index_kind), in ``iterdir`` order, in one pass: what
        a directory listing needs, without a property call per child for its name and kind."""
        index = self._index()
        where = self._where(f"$I30 of MFT record {self.ref}")
        root = self.ref == FILE_ROOT
        volume = self.volume
        from_raw = names.from_raw
        for e in index:
            fn = parse_file_name(e.key, where)
            if fn.namespace == NS_DOS:
                continue
            num = e.ref & 0xFFFFFFFFFFFF
            raw = fn.raw_name
            if root and (num < 16 and raw[:2] == b"$\x00" or num == FILE_ROOT):
                continue
            entry = Entry(volume, num, fn, e.ref >> 48)
            yield (entry.name if num == FILE_ROOT else from_raw(raw), entry,
                   _index_kind(fn.flags))

    def listing_arrays(self):
        """Every child as arrays (ntfs_reader.listing.Listing), in ``iterdir`` order with
        ``listing``'s names and kinds: no object per child (built in C when it can)."""
        from .listing import list_directory
        return list_directory(self._index(), self.ref == FILE_ROOT,
                              self._where(f"$I30 of MFT record {self.ref}"))

    def child(self, name: str) -> "Entry":
        """The child called ``name`` (case-insensitive; an exact-case match wins)."""
        try:
            raw = names.to_utf16(name)
        except (UnicodeError, ValueError):
            raise NotFoundError(f"{name!r}: no such file") from None
        found = self._find(raw) if len(raw) <= 510 else []
        if not found and names.is_shortened(name):
            for e in self.iterdir():
                if e.name == name:
                    return e
        if not found:
            raise NotFoundError(f"{name}: no such file or directory in record {self.ref}")
        found.sort(key=lambda f: (f[0].raw_name != raw, f[0].namespace == NS_DOS))
        fn, ref = found[0]
        return Entry(self.volume, ref_number(ref), fn, ref_sequence(ref))

    def _collation_key(self, raw: bytes) -> tuple[list, bytes]:
        """NTFS file-name collation: upcased UTF-16 units, then (for names equal but for
        case, POSIX namespace) the units themselves."""
        up = self.volume.upcase
        units = array("H")
        units.frombytes(raw)
        return [up[c] for c in units], units.tolist()

    def _entry_key(self, e, where):
        k = e.key
        if len(k) < 66 or 66 + 2 * k[64] > len(k):
            raise FormatError("index key shorter than its $FILE_NAME", **where)
        return self._collation_key(k[66:66 + 2 * k[64]])

    def _find(self, raw: bytes) -> list:
        key = self._collation_key(raw)[0]
        where = self._where(f"$I30 of MFT record {self.ref}")

        def compare(e):
            other = self._entry_key(e, where)[0]
            return (other > key) - (other < key)

        out = []
        for e in self._index().find(compare):
            fn = parse_file_name(e.key, where)
            out.append((fn, e.ref))
        return out

    # -- links ---------------------------------------------------------------------

    def _depth(self) -> int:
        """How many directories lie between the volume root and this entry's directory."""
        depth = 0
        ref = self.parent_ref
        seen = set()
        while ref is not None and ref != FILE_ROOT:
            if ref in seen or depth > MAX_INDEX_DEPTH * 64:
                raise FormatError("parent chain loops", **self._where())
            seen.add(ref)
            depth += 1
            ref = Entry(self.volume, ref, None).parent_ref
        return depth

    def readlink(self) -> str:
        """The link target, translated into the volume (conventions in reparse.py)."""
        return self._memo("link", self._readlink)

    def _readlink(self) -> str:
        r = self.reparse
        if r is None or r.target is None:
            t = self._interix_target if r is None else None
            if t is None:
                raise UsageError(f"{self.volume.name}: MFT record {self.ref} is not a symlink")
            # Interix targets are POSIX paths already (written by ntfs-3g's ln -s)
            return "/".join(_component(p) for p in t.split("/"))
        if r.tag == IO_REPARSE_TAG_LX_SYMLINK:
            return r.target
        target = r.target
        up = "../" * self._depth()
        if r.tag == IO_REPARSE_TAG_SYMLINK and r.relative:
            if target.startswith("\\"):      # drive-relative: from the volume root
                return up + self._inside(target.strip("\\"))
            return "/".join(_component(p) for p in target.split("\\"))
        prefix = None
        for p in ("\\??\\", "\\\\?\\", "\\\\.\\"):
            if target.startswith(p):
                prefix = p
                break
        if prefix is None:
            return up + self._inside(target.lstrip("\\"))
        rest = target[len(prefix):]
        if len(rest) >= 2 and rest[1] == ":" and rest[0].isalpha():
            path = rest[2:].strip("\\")
            found = self._fix_case(path)
            if found is not None:
                return (up + found) if found else (up.rstrip("/") or ".")
            return up + ".NTFS-3G/" + rest[0].upper() + ":" + (
                "/" + self._inside(path) if path else "")
        return up + ".NTFS-3G/" + self._inside(rest.strip("\\"))

    @staticmethod
    def _inside(path: str) -> str:
        return "/".join(_component(p) for p in path.split("\\") if p)

    def _fix_case(self, path: str) -> str | None:
        """The path as named on this volume ('' = the root), or None if it is not here.

        Like ntfs-3g, the walk stops at another symlink or junction: the rest of the path
        is kept as written, to be resolved when the link itself is followed.
        """
        e = self.volume.root
        parts = []
        items = [x for x in path.split("\\") if x]
        for i, p in enumerate(items):
            try:
                if not e._attrs().record.is_directory:
                    return None
                if e.ref != FILE_ROOT and e.is_symlink:
                    return "/".join(parts + [_component(x) for x in items[i:]])
                e = e.child(names.to_linux(p))
            except (NotFoundError, UsageError, FormatError):
                return None
            parts.append(e.name)
        return "/".join(parts)

    def __repr__(self) -> str:
        return f"<ntfs Entry {self.ref} {self.name!r}>"
