"""Which stored bytes a range of a stream comes from, without reading it.

Following the layers down (an NTFS runlist, a partition slice, a VHDX block map and its
differencing parents, a raw disk, a stored file's chunk map) turns a range into pieces:
``("C", chunk id, offset in chunk, length)`` or ``("Z", length)`` for known zeros. Chunk
ids name immutable contents, so two ranges with the same pieces hold the same bytes: an
$MFT block whose pieces are the same as in the previous recovery point need not be read.
Each stream answers for itself (``Stream.pieces``, overridden by the streams that know
where their bytes come from); any doubt (a stream that cannot tell, a range past an end, a
partly present VHDX block, a damaged map) answers None, and the caller reads and hashes
the bytes.
"""

from __future__ import annotations

from streams.errors import RpfsError
from streams.stream import Pieces, Stream


def pieces(stream: Stream, offset: int, length: int) -> list | None:
    """The pieces of ``stream``'s range (``Stream.pieces``: each layer that knows where its
    bytes come from says so), or None where they cannot be told: the caller reads."""
    out = Pieces()
    try:
        return list(out) if stream.pieces(offset, length, out) else None
    except (RpfsError, IndexError, ValueError):   # a damaged map: read, and meet the error there
        return None


def split(found: list, block: int) -> list[tuple]:
    """``found`` (pieces of a range) cut into consecutive ranges of ``block`` bytes."""
    blocks: list[tuple] = []
    cur: list = []
    room = block
    for p in found:
        n = p[-1]
        start = 0
        while n > 0:
            take = min(n, room)
            cur.append(("Z", take) if p[0] == "Z" else ("C", p[1], p[2] + start, take))
            start += take
            n -= take
            room -= take
            if room == 0:
                blocks.append(tuple(cur))
                cur, room = [], block
    if cur:
        blocks.append(tuple(cur))
    return blocks
