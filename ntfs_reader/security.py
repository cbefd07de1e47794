"""Security descriptors shared through $Secure: $SII maps a security id to a place in the
$SDS stream, where each descriptor sits behind a 20-byte header that repeats the id."""

from __future__ import annotations

import struct

from streams.errors import FormatError

from .index import Index

# $SDS entry header: hash I, security_id I, offset Q, length I
_SDS = struct.Struct("<IIQI")


class SecureStore:
    def __init__(self, sii: Index, sds, source: str):
        self.sii = sii
        self.sds = sds
        self.source = source

    def descriptor(self, security_id: int) -> bytes | None:
        target = security_id

        def cmp(e):
            if len(e.key) < 4:
                raise FormatError("short $SII key", source=self.source, structure="$Secure:$SII")
            k = struct.unpack_from("<I", e.key, 0)[0]
            return (k > target) - (k < target)

        found = self.sii.find(cmp)
        if not found:
            return None
        data = found[0].data()
        if len(data) < 20:
            raise FormatError("short $SII entry", source=self.source, structure="$Secure:$SII")
        _hash, sid, offset, length = _SDS.unpack(data[:20])
        if sid != security_id or length < 20 or length > 1 << 20:
            raise FormatError(f"$SII entry for id {security_id} is inconsistent",
                              source=self.source, structure="$Secure:$SII")
        head = self.sds.read(offset, length)
        if len(head) != length or _SDS.unpack_from(head, 0)[1] != security_id:
            raise FormatError(f"$SDS entry for id {security_id} does not match",
                              source=self.source, structure="$Secure:$SDS", offset=offset)
        return head[20:]
