"""Fixed-size on-disk records declared as a ``struct`` format and field names: ``parse``
gives a named tuple, ``build`` packs a mapping. The partition, VHDX and NTFS boot/attribute
parsers use this instead of ``construct``, which cost 8-13 ms of every command's start-up
(tests/test_startup.py keeps it off the mount and restore paths)."""

from __future__ import annotations

import struct
import uuid
from collections import namedtuple
from collections.abc import Mapping


class Layout:
    """A record: ``fmt`` (a ``struct`` format with its byte order; padding as ``x``) and the
    names of its values in order. Fields in ``guids`` are 16 bytes in Microsoft's
    mixed-endian GUID layout, parsed to and built from ``uuid.UUID``."""

    def __init__(self, name: str, fmt: str, fields: str, guids: tuple[str, ...] = ()):
        self._struct = struct.Struct(fmt)
        self.name = name
        self.fields = tuple(fields.split())
        # the named tuple is made at the first parse: ``namedtuple`` compiles its
        # ``__new__``, and of the ~20 layouts a mount imports, a first listing parses few
        self._tuple = None
        self._guids = tuple(self.fields.index(g) for g in guids)
        self.size = self._struct.size
        if len(self._struct.unpack(bytes(self.size))) != len(self.fields):
            raise ValueError(f"{name}: {fmt!r} does not hold {len(self.fields)} fields")

    def sizeof(self) -> int:
        return self.size

    def parse(self, data, offset: int = 0):
        """The record at ``offset`` of ``data`` (which may be longer); ``struct.error`` if
        ``data`` is too short."""
        values = self._struct.unpack_from(data, offset)
        if self._guids:
            values = list(values)
            for i in self._guids:
                values[i] = uuid.UUID(bytes_le=values[i])
        t = self._tuple
        if t is None:
            t = self._tuple = namedtuple(self.name, self.fields)
        return t._make(values)

    def build(self, values: Mapping) -> bytes:
        out = [values[f] for f in self.fields]
        for i in self._guids:
            out[i] = out[i].bytes_le
        return self._struct.pack(*out)
