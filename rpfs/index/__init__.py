"""The metadata index of every NTFS volume of every recovery point (``index.sqlite``
beside the catalog): find files by name across recovery points, and the versions of one
file, without opening a volume.

Public API (the CLI and the web UI use these):

- ``find_entries(tree, pattern, *, regex=False, vm=None, since=None, until=None,
  size=None, modified_after=None, modified_before=None, type=None) -> Iterator[dict]``
- ``file_history(tree, path, *, verify=False) -> dict``
- ``update_index(repo, vm=None, *, only=None, progress=None) -> dict``

``tree`` is what ``rpfs.tree.open_source()`` returns. Modules: db (schema, where it
lives), scan (MFT records -> FileInfo), build (incremental writes), query (find, history),
versions (the ``/<vm>/.versions/`` view).
"""

from rpfs.index.build import update_index
from rpfs.index.query import file_history, find_entries

__all__ = ["find_entries", "file_history", "update_index"]
