"""ext2/ext3/ext4 read-only, in user space, over any ``streams.stream.Stream``.

The reader contract (probe, open_volume, Volume, Entry) is docs/filesystems.md. A journal
left with committed transactions that were not yet written home (a crash-consistent copy of
a running guest) is replayed in memory (journal.py): reads see what the guest's kernel
would see after recovery, and nothing is ever written.
"""

from ext4_reader.superblock import probe
from ext4_reader.volume import Entry, Volume, open_volume

__all__ = ["probe", "open_volume", "Volume", "Entry"]
