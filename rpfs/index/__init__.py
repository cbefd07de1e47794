"""The metadata index of every NTFS volume of every recovery point (``index.sqlite``
beside the catalog): find files by name across recovery points, and the versions of one
file, without opening a volume.

Public API (the CLI and the web UI use these):

- ``find_entries(tree, pattern, *, regex=False, vm=None, since=None, until=None,
  size=None, modified_after=None, modified_before=None, type=None) -> Iterator[dict]``
- ``file_history(tree, path, *, verify=False) -> dict``
- ``update_index(repo, vm=None, *, only=None, progress=None) -> dict``

``tree`` is what ``rpfs.source.open_source()`` returns. Modules: place (where it lives),
db (schema), scan (MFT records -> FileInfo), build (incremental writes), query (find, history),
versions (the ``/<vm>/.versions/`` view), background (indexing after ``rpfs backup`` in a
process of its own, and on demand).
"""

from rpfs.index.place import INDEX_NAME, index_path  # noqa: F401  (a mount asks it first)

__all__ = ["find_entries", "file_history", "update_index"]


def __getattr__(name: str):
    # Loaded on first use: build and query import the NTFS reader, which a mount listing a
    # VM (rpfs.index.versions imports this package) or `rpfs --help` must not pay for.
    if name == "update_index":
        from rpfs.index.build import update_index
        return update_index
    if name in ("file_history", "find_entries"):
        from rpfs.index import query
        return getattr(query, name)
    raise AttributeError(f"module 'rpfs.index' has no attribute {name!r}")
