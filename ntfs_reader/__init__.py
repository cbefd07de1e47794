"""Read-only NTFS over any random-access stream (rpfs.stream).

``Volume(stream)`` opens a volume lazily; ``volume.root``/``lookup``/``entry`` give
``Entry`` objects (entry.py). Layout of the package, bottom up: boot.py (boot sector),
record.py (MFT records, fixups, attribute headers), runlist.py, datastream.py (attribute
contents, compression), attrs.py (small attribute values), index.py (B+trees), names.py,
reparse.py, security.py, volume.py, entry.py; cache.py holds every cache size.
"""

from .entry import Entry
from .times import Times
from .volume import Volume

__all__ = ["Volume", "Entry", "Times"]
