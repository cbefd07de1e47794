"""Files compressed by the Windows Overlay Filter (CompactOS, ``compact /exe``).

The unnamed $DATA is an empty sparse stream of the real size; the bytes live in the
``WofCompressedData`` stream as a chunk table ((n-1) offsets, 4 bytes each, 8 if the file
is 4 GiB or more; relative to the end of the table; chunk 0 starts at 0) followed by the
chunks. A chunk whose stored size equals its real size is stored as is. XPRESS4K/8K/16K
chunks are decoded by xpress.py, LZX (32 KiB chunks) by lzx.py.
"""

from __future__ import annotations

import struct

from streams.errors import FormatError, UnsupportedError
from streams.stream import Stream

from .cache import COMPRESSED_UNIT_CACHE, LRU
from .lzx import decompress as lzx_decompress
from .xpress import decompress as xpress_decompress

WOF_CHUNK = {0: 4096, 2: 8192, 3: 16384, 1: 32768}
WOF_STREAM = "WofCompressedData"


def wof_algorithm(reparse_value: bytes) -> tuple[int, int]:
    """(provider, algorithm) from WOF_EXTERNAL_INFO + FILE_PROVIDER_EXTERNAL_INFO_V1."""
    if len(reparse_value) < 24:
        raise FormatError("WOF reparse data too short", structure="WOF reparse point")
    _ver, provider, _fver, algorithm = struct.unpack_from("<IIII", reparse_value, 8)
    return provider, algorithm


TABLE_PAGE = 64 << 10


class WofStream(Stream):
    def __init__(self, source: Stream, size: int, algorithm: int, name: str):
        if algorithm not in WOF_CHUNK:
            raise UnsupportedError(f"WOF-compressed with unknown algorithm {algorithm}",
                                   source=name, structure="WOF")
        self.algorithm = algorithm
        self.decompress = lzx_decompress if algorithm == 1 else xpress_decompress
        self.source = source
        self.size = size
        self.name = name
        self.chunk = WOF_CHUNK[algorithm]
        self.count = (size + self.chunk - 1) // self.chunk
        self.entry = 8 if size > 0xFFFFFFFF else 4
        self.table_size = max(0, self.count - 1) * self.entry
        if self.table_size > source.size:
            raise FormatError(f"chunk table of {self.table_size} bytes in a "
                              f"{source.size}-byte stream", source=name,
                              structure="WOF chunk table")
        self._cache = LRU(COMPRESSED_UNIT_CACHE)
        self._table = LRU(16)  # pages of the chunk offset table

    def _table_entry(self, j: int) -> int:
        """Entry ``j`` of the chunk offset table, read a 64 KiB page at a time (a whole-file
        read touches each page once instead of issuing two tiny reads per chunk)."""
        per_page = TABLE_PAGE // self.entry
        page_no = j // per_page
        page = self._table.get(page_no)
        if page is None:
            start = page_no * TABLE_PAGE
            page = self.source.read(start, min(TABLE_PAGE, self.table_size - start))
            self._table.put(page_no, page)
        fmt = "<Q" if self.entry == 8 else "<I"
        return struct.unpack_from(fmt, page, (j - page_no * per_page) * self.entry)[0]

    def _bounds(self, i: int) -> tuple[int, int]:
        es = self.entry
        start = 0 if i == 0 else self._table_entry(i - 1)
        if i + 1 < self.count:
            end = self._table_entry(i)
        else:
            end = self.source.size - self.table_size
        if not 0 <= start <= end <= self.source.size - self.table_size:
            raise FormatError(f"chunk {i} at {start}..{end} is outside the stream",
                              source=self.name, structure="WOF chunk table",
                              offset=i * es)
        return self.table_size + start, end - start

    def _chunk(self, i: int) -> bytes:
        data = self._cache.get(i)
        if data is None:
            want = min(self.chunk, self.size - i * self.chunk)
            offset, length = self._bounds(i)
            if length > want:  # a stored chunk is never larger than what it holds
                raise FormatError(f"chunk {i} stores {length} bytes for {want}",
                                  source=self.name, structure="WOF chunk table",
                                  offset=offset)
            raw = self.source.read(offset, length)
            if length == want:
                data = raw
            else:
                try:
                    data = self.decompress(raw, want)
                except FormatError as exc:
                    raise FormatError(exc.message, source=self.name,
                                      structure=f"WOF chunk {i}", offset=offset) from None
            self._cache.put(i, data)
        return data

    def _read(self, offset: int, length: int) -> bytes:
        out = bytearray()
        pos = offset
        end = offset + length
        while pos < end:
            i = pos // self.chunk
            data = self._chunk(i)
            start = pos - i * self.chunk
            piece = data[start:start + end - pos]
            if not piece:
                raise FormatError(f"chunk {i} is short", source=self.name,
                                  structure="WOF chunk", offset=pos)
            out += piece
            pos += len(piece)
        return bytes(out)
