"""Is the internal log clean? The kernel replays a log whose last record before the head
is not an unmount record; this module finds the head the way the kernel does (cycle
numbers stamped in every 512-byte log block, binary search) and looks at that record.
Replaying the log is not done: a dirty log is reported, the volume read as it is on disk.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from rpfs.errors import FormatError

if TYPE_CHECKING:
    from .volume import Volume

BB = 512
HEADER_MAGIC = 0xFEEDBABE
UNMOUNT_TRANS = 0x20
CYCLE_SIZE = 32768
MAX_BACK = 8192      # log blocks searched back from the head for a record header


def log_state(vol: "Volume") -> str:
    sb = vol.sb
    if sb.logstart == 0:
        return "external log (not checked)"
    base = sb.fsb_to_byte(sb.logstart)
    nbb = sb.logblocks * sb.block_size // BB
    if nbb < 2:
        raise FormatError("log too small", source=vol.name, structure="XFS log", offset=base)

    def block(i: int) -> bytes:
        return vol.read_meta(base + i * BB, BB, f"XFS log block {i}")

    def cycle(i: int) -> int:
        b = block(i)
        word = struct.unpack_from(">I", b, 0)[0]
        return struct.unpack_from(">I", b, 4)[0] if word == HEADER_MAGIC else word

    first, last = cycle(0), cycle(nbb - 1)
    if first == 0:
        return "log never written"
    if first == last:
        head = nbb              # one full pass: the head wraps to block 0
    else:
        lo, hi = 0, nbb - 1     # blocks [0, head) carry `first`, the rest `first - 1`
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cycle(mid) == first:
                lo = mid
            else:
                hi = mid
        head = hi
    for back in range(1, min(MAX_BACK, nbb) + 1):
        i = (head - back) % nbb
        b = block(i)
        if struct.unpack_from(">I", b, 0)[0] != HEADER_MAGIC:
            continue
        version, _len = struct.unpack_from(">II", b, 8)
        num_ops = struct.unpack_from(">i", b, 40)[0]
        h_size = struct.unpack_from(">I", b, 320)[0]
        hblks = max(1, -(-h_size // CYCLE_SIZE)) if version & 2 else 1
        data = bytearray(block((i + hblks) % nbb))
        data[0:4] = b[44:48]     # the first word of each data block holds the cycle
        flags = data[9]
        if num_ops >= 1 and flags & UNMOUNT_TRANS:
            return "clean"
        return "needs log recovery (not replayed: recent changes may be missing)"
    return "needs log recovery (no record header found near the log head)"
