"""The NTFS boot sector: geometry of the volume and where $MFT starts.

If the first sector is damaged, the backup copy in the volume's last sector is used
(for both 512- and 4096-byte sectors); which one was used is reported in warnings.
"""

from __future__ import annotations

from streams.errors import FormatError
from streams.layout import Layout
from streams.record import Value
from streams.stream import Stream

BOOT_SECTOR = Layout(
    "NtfsBootSector", "<3s8sHB7xB18xQQQb3xb3xQ4s426x2s",
    "jump oem bytes_per_sector sectors_per_cluster media total_sectors mft_lcn mftmirr_lcn "
    "clusters_per_record clusters_per_index serial checksum signature")
assert BOOT_SECTOR.sizeof() == 512


class BootSector(Value):
    """The NTFS boot sector's geometry: sizes and where $MFT is."""

    __slots__ = _fields = ("sector_size", "cluster_size", "total_sectors", "mft_lcn",
                           "mftmirr_lcn", "record_size", "index_record_size", "serial", "offset")

    def __init__(self, sector_size: int, cluster_size: int, total_sectors: int, mft_lcn: int,
                 mftmirr_lcn: int, record_size: int, index_record_size: int, serial: int,
                 offset: int):
        self.sector_size = sector_size
        self.cluster_size = cluster_size
        self.total_sectors = total_sectors
        self.mft_lcn = mft_lcn
        self.mftmirr_lcn = mftmirr_lcn
        self.record_size = record_size
        self.index_record_size = index_record_size
        self.serial = serial
        self.offset = offset  # where it was read (0, or the backup's offset)

    @property
    def total_clusters(self) -> int:
        return self.total_sectors * self.sector_size // self.cluster_size

    @property
    def volume_size(self) -> int:
        return self.total_sectors * self.sector_size


def _size(value: int, cluster_size: int) -> int:
    """Record sizes: positive = clusters, negative = 2**-value bytes."""
    if value > 0:
        return value * cluster_size
    if -31 <= value < 0:
        return 1 << -value
    return 0


def parse_boot_sector(data: bytes, source: str = "<volume>", offset: int = 0) -> BootSector:
    """Validates and decodes one boot sector; any nonsense is a FormatError."""
    def bad(msg: str) -> FormatError:
        return FormatError(msg, source=source, structure="NTFS boot sector", offset=offset)

    if len(data) < 512:
        raise bad("truncated")
    b = BOOT_SECTOR.parse(data)
    if b.oem != b"NTFS    ":
        raise bad("no NTFS signature")
    if b.signature != b"\x55\xaa":
        raise bad("missing 55 AA end marker")
    bps = b.bytes_per_sector
    if bps not in (256, 512, 1024, 2048, 4096):
        raise bad(f"bad sector size {bps}")
    spc = b.sectors_per_cluster
    if spc > 0x80:  # 2**(256-x) sectors (clusters above 64 KiB, Windows 10 1709+)
        shift = 256 - spc
        if shift > 12:
            raise bad(f"bad sectors per cluster {spc:#x}")
        spc = 1 << shift
    if spc == 0 or spc & (spc - 1):
        raise bad(f"bad sectors per cluster {spc}")
    cluster = bps * spc
    if cluster > 2 << 20:
        raise bad(f"cluster size {cluster} too large")
    record = _size(b.clusters_per_record, cluster)
    index = _size(b.clusters_per_index, cluster)
    for what, n in (("MFT record", record), ("index record", index)):
        if n < 256 or n > 65536 or n & (n - 1):
            raise bad(f"bad {what} size {n}")
    if record < bps and record % 512:
        raise bad(f"MFT record size {record} below sector size {bps}")
    if b.total_sectors == 0 or b.total_sectors > (1 << 48):
        raise bad(f"bad sector count {b.total_sectors}")
    clusters = b.total_sectors * bps // cluster
    if b.mft_lcn >= clusters or b.mftmirr_lcn >= clusters:
        raise bad(f"$MFT cluster {b.mft_lcn} outside the volume ({clusters} clusters)")
    return BootSector(bps, cluster, b.total_sectors, b.mft_lcn, b.mftmirr_lcn,
                      record, index, b.serial, offset)


def read_boot_sector(stream: Stream, warnings: list[str]) -> BootSector:
    """The primary boot sector, else the backup at the end of the volume."""
    try:
        return parse_boot_sector(stream.read(0, 512), stream.name, 0)
    except FormatError as first:
        tried = set()
        for sector in (512, 4096, 1024, 2048):
            off = stream.size - sector
            if off <= 0 or off in tried:
                continue
            tried.add(off)
            try:
                boot = parse_boot_sector(stream.read(off, 512), stream.name, off)
            except FormatError:
                continue
            if boot.sector_size == sector and boot.volume_size <= off + sector:
                warnings.append(f"primary boot sector damaged ({first.message}); "
                                f"using the backup at offset {off:#x}")
                return boot
        raise first
