"""Read-only NTFS over any random-access stream (streams.stream), parsed lazily in user space.

Public API (docs/architecture.md, "Filesystem"), plus:

* ``Volume(stream)``: ``label serial version dirty hibernated warnings cluster_size
  record_size sector_size index_record_size total_clusters mft_records``; ``root``,
  ``lookup(path)``, ``walk(top="/")`` -> (path, Entry) depth first, ``entry(ref)`` (record number, or full reference: sequence checked),
  ``metadata(name)`` / ``metadata_files()`` for $MFT, $Bitmap, $LogFile, $Secure,
  $Extend/... (hidden from the root's iterdir, also reachable by ``lookup("/$MFT")``),
  ``security_descriptor(security_id)``; ``record(n)`` / ``file(n)`` for tools.
* ``Entry``: ``ref name ntfs_name short_name parent_ref is_dir is_symlink is_encrypted
  size allocated_size times attributes nlink hard_links file_names reparse reparse_tag
  reparse_tag_name object_id``; ``iterdir(after=None)`` (``after`` resumes a paged
  listing by seeking in the B+tree), ``child(name)``, ``open(stream_name="")``,
  ``streams()`` -> [(name, size)], ``readlink()``, ``security_descriptor()``,
  ``reparse_data()``, ``eas()``.

Conventions: Linux names in names.py (unpaired surrogates, '/', NUL, long names), link
targets in reparse.py, times in times.py. Errors are streams.errors types: FormatError (with
source/structure/offset) for damage, UnsupportedError for contents we cannot produce
(dedup, HSM, SIS, cloud placeholders, EFS), NotFoundError, UsageError (not a directory).

Modules, bottom up: boot (boot sector), record (MFT records, fixups, attribute headers),
runlist, datastream (runs, sparse, VDL, LZNT1 units), attrs (small attribute values),
index ($I30/$SII B+trees), native (the C parser the four before try first), names, reparse, security ($Secure), xpress / lzx / wof (WOF
CompactOS files), volume, entry; cache holds every cache size and bound.
"""

from . import native
from .attrs import FileName
from .entry import Entry
from .index import IndexEntry
from .record import Attribute, MftRecord
from .times import Times
from .volume import Volume

native.load(Attribute, MftRecord, IndexEntry, FileName, Times)

__all__ = ["Volume", "Entry", "Times"]
