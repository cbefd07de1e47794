"""ext4's CRC32C (metadata_csum) and CRC16 (gdt_csum): the kernel's raw forms."""

from __future__ import annotations

from streams import crc32c as _crc32c


def crc32c_raw(crc: int, data) -> int:
    """The kernel's ``crc32c_le(crc, data)``: no inversion before or after (the library's
    ``crc32c`` inverts both, so invert around it)."""
    return _crc32c.crc32c(data, crc ^ 0xFFFFFFFF) ^ 0xFFFFFFFF


def _crc16_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0xA001 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC16 = _crc16_table()


def crc16(crc: int, data) -> int:
    """CRC-16 (polynomial 0x8005, reflected) as lib/crc16.c, for gdt_csum descriptors."""
    for b in bytes(data):
        crc = (crc >> 8) ^ _CRC16[(crc ^ b) & 0xFF]
    return crc
