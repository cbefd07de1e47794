"""Repository configuration: a small JSON file written once at ``init``.

It pins what every reader must agree on (format version, chunk size, hash) and holds the
tunables a writer uses (zstd level, pack size, frame size).

Format 2 (this rpfs's ``rpfs init``) may hold framed chunks (frames.py: each chunk's
plaintext in ``frame_size`` pieces compressed one by one, so a 4 KiB read decompresses one
64 KiB frame instead of a 1 MiB chunk); an rpfs that reads only format 1 refuses it in one
line instead of failing chunk by chunk. A format-1 repository (no ``frame_size``: 0) is
read and written as it always was: its chunks stay unframed (docs/store.md "Framed chunks").
``raw_frame_size`` (8 KiB; absent from configs written before it: the same default) is the
frame of a chunk none of whose frames compresses; any rpfs that reads format 2 reads those
chunks, since each table says its frame size. Unknown keys are kept so a newer rpfs can
add settings without breaking an older reader of the same format version.
"""

from __future__ import annotations

import json
import os

from streams.errors import FormatError, UsageError
from streams.record import Record

FORMAT_VERSION = 2                  # what ``init`` writes
READ_FORMATS = (1, 2)               # format 1: no framed chunks (frame_size 0)
CONFIG_NAME = "config.json"
HASHES = ("blake3",)
MIN_CHUNK = 4096
MAX_CHUNK = 64 << 20
FRAME_SIZE = 64 << 10               # the default frame (docs/store.md "Framed chunks")
RAW_FRAME_SIZE = 8 << 10            # the default frame of an incompressible chunk (docs/store.md)
MIN_FRAME = 4096


class Config(Record):
    """A repository's config file: format, chunking and cache settings."""

    _fields = ("format", "chunk_size", "hash", "zstd_level", "pack_size", "cache_mb",
               "repack_threshold", "id", "encryption", "frame_size", "raw_frame_size", "extra")
    chunk_size = 1 << 20               # the default (from_kwargs reads it)

    def __init__(self, format: int = FORMAT_VERSION, chunk_size: int = 1 << 20,
                 hash: str = "blake3", zstd_level: int = 1, pack_size: int = 32 << 20,
                 cache_mb: int = 128, repack_threshold: float = 0.5, id: str = "",
                 encryption: str = "none", frame_size: int = FRAME_SIZE,
                 raw_frame_size: int = RAW_FRAME_SIZE, extra: dict | None = None):
        self.format = format
        self.chunk_size = chunk_size       # chosen by tools/bench_chunks.py, see docs/store.md
        self.hash = hash                   # fastest well-kept 256-bit hash here, releases the GIL
        self.zstd_level = zstd_level       # level 1: ~1.45x the CPU throughput of 3 for ~1.5% more bytes (docs/store.md)
        self.pack_size = pack_size         # target pack size; a pack closes once past it
        self.cache_mb = cache_mb           # decompressed-chunk cache bound (StoreOptions.chunk_cache_bytes wins); a
                                           # mount's file data is in the page cache: this holds read-ahead
        self.repack_threshold = repack_threshold   # gc rewrites a pack whose live fraction is below this
        self.id = id                       # random at init: tells a cache which repository it holds
        self.encryption = encryption       # "none" | "aes-256-gcm" (keys in keys/default, crypto.py)
        self.frame_size = frame_size       # new chunks framed in pieces of this much plaintext; 0: unframed
        self.raw_frame_size = raw_frame_size   # ... of this much when no frame compresses; 0: frame_size
        self.extra = {} if extra is None else extra   # keys this rpfs does not know, kept

    def validate(self, source: str = CONFIG_NAME) -> "Config":
        def bad(msg):
            raise FormatError(msg, source=source, structure="repository config")
        if self.format not in READ_FORMATS:
            bad(f"format version {self.format} not supported (this rpfs reads"
                f" {', '.join(map(str, READ_FORMATS))})")
        cs = self.chunk_size
        if not isinstance(cs, int) or cs < MIN_CHUNK or cs > MAX_CHUNK or cs & (cs - 1):
            bad(f"chunk_size {cs!r} must be a power of two between {MIN_CHUNK} and {MAX_CHUNK}")
        if self.hash not in HASHES:
            bad(f"hash {self.hash!r} not supported")
        if not isinstance(self.zstd_level, int) or not -7 <= self.zstd_level <= 22:
            bad(f"zstd_level {self.zstd_level!r} out of range")
        if not isinstance(self.pack_size, int) or not (1 << 16) <= self.pack_size <= (1 << 32):
            bad(f"pack_size {self.pack_size!r} out of range")
        if not isinstance(self.cache_mb, int) or self.cache_mb < 0:
            bad(f"cache_mb {self.cache_mb!r} out of range")
        if not isinstance(self.repack_threshold, (int, float)) or not 0 <= self.repack_threshold <= 1:
            bad(f"repack_threshold {self.repack_threshold!r} out of range")
        if self.encryption not in ("none", "aes-256-gcm"):
            bad(f"encryption {self.encryption!r} not supported")
        fs = self.frame_size
        if not isinstance(fs, int) or fs and (fs < MIN_FRAME or fs > cs or fs & (fs - 1)):
            bad(f"frame_size {fs!r} must be 0 or a power of two between {MIN_FRAME} and the chunk size")
        if fs and self.format < 2:
            bad(f"frame_size {fs} needs format 2 (this config says {self.format})")
        rfs = self.raw_frame_size
        if not isinstance(rfs, int) or rfs and (rfs < MIN_FRAME or rfs > fs or rfs & (rfs - 1)):
            bad(f"raw_frame_size {rfs!r} must be 0 or a power of two between {MIN_FRAME} and"
                f" frame_size ({fs})")
        return self

    @classmethod
    def from_kwargs(cls, **kw) -> "Config":
        known = set(cls._fields) - {"extra"}
        unknown = set(kw) - known
        if unknown:
            raise UsageError(f"unknown repository setting(s): {', '.join(sorted(unknown))}")
        if "frame_size" not in kw:     # the default frame, never past the chunk
            kw["frame_size"] = max(MIN_FRAME, min(FRAME_SIZE, kw.get("chunk_size", cls.chunk_size)))
        kw.setdefault("raw_frame_size", _raw_default(kw["frame_size"]))
        try:
            return cls(**kw).validate("<settings>")
        except FormatError as e:
            raise UsageError(e.message) from None

    def dumps(self) -> str:
        d = self._asdict()
        d.update(d.pop("extra"))
        return json.dumps(d, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load(cls, path: str) -> "Config":
        src = os.path.join(path, CONFIG_NAME)
        try:
            with open(src, "rb") as f:
                raw = f.read(1 << 16)
        except FileNotFoundError:
            raise FormatError("not an rpfs repository (no config.json)", source=path) from None
        return cls.loads(raw, src)

    @classmethod
    def loads(cls, raw: bytes, src: str) -> "Config":
        try:
            d = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise FormatError(f"unreadable config: {e}", source=src, structure="repository config") from None
        if not isinstance(d, dict):
            raise FormatError("config is not an object", source=src, structure="repository config")
        known = set(cls._fields) - {"extra"}
        kw = {k: v for k, v in d.items() if k in known}
        extra = {k: v for k, v in d.items() if k not in known}
        kw.setdefault("frame_size", 0)    # written before framed chunks: none
        if isinstance(kw["frame_size"], int):  # written before raw frames: the default
            kw.setdefault("raw_frame_size", _raw_default(kw["frame_size"]))
        try:
            cfg = cls(**kw, extra=extra)
        except TypeError as e:
            raise FormatError(str(e), source=src, structure="repository config") from None
        return cfg.validate(src)


def _raw_default(frame_size: int) -> int:
    """The raw frame a repository framing in ``frame_size`` gets unless told (0: none)."""
    return min(RAW_FRAME_SIZE, frame_size)
