"""Every cache size of the NTFS reader in one place; the caches are ``streams.lru.LRU``.

The FUSE layer calls from many worker threads at once; parsed objects are immutable once
built, so a lock around the dictionary is all the sharing needs. Two threads may parse the
same record at the same moment; both results are equal and the second one wins.
"""

from __future__ import annotations

from streams.lru import LRU  # noqa: F401  (re-exported: the reader's modules import it here)

RECORD_CACHE = 8192          # parsed MFT records (about 1-4 KiB of bytes each)
MFT_BLOCK = 64 << 10         # $MFT is read in blocks this size (64 records of 1 KiB)
MFT_BLOCK_CACHE = 64         # raw $MFT blocks kept (4 MiB): a directory's children sit together
ENTRY_ATTRS_CACHE = 4096     # merged attribute sets of files (base + extension records)
INDEX_NODE_CACHE = 1024      # parsed INDX records (4 KiB each)
INDEX_WHOLE_READ = 64 << 20  # a whole listing reads $INDEX_ALLOCATION up to this size at once
INDEX_READ_CHUNK = 1 << 20   # ... in reads of this size
# Decoded runlists live in their parsed attribute, so RECORD_CACHE bounds them too.
COMPRESSED_UNIT_CACHE = 64   # decompressed compression units (64 KiB each typically)
SECURITY_CACHE = 1024        # security descriptors by security id

MAX_INDEX_DEPTH = 64         # B+tree depth bound (a real tree of 2^32 names is < 10 deep)
MAX_EXTENSION_RECORDS = 4096 # extension records one file may have through its attribute list
MAX_RESIDENT_READ = 1 << 20  # bound on metadata we read whole (attribute lists, reparse data)
MAX_COMPRESSION_UNIT = 1 << 20  # bytes; NTFS writes 16 clusters of <= 4 KiB (64 KiB)
