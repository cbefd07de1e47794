"""The store's maintenance layer: what keeps a catalog true to the repository's objects and
the repository small. It uses ``Repository`` and is never imported by it (or by the
backends): the repository calls back into it only through ``StoreOptions``.

- ``sync``: recovery point objects into the catalog; an s3:// cache follows prunes and gcs
  done elsewhere (``follow_gc``, ``GcFollower``);
- ``gc`` (mark: ``marks``), ``prune``: retention, then garbage collection;
- ``repair``: the catalog rebuilt from the objects; ``verify``: what is damaged.

``open_repository`` is how the layers above open a repository: ``Repository.open`` with this
layer's services filled in.
"""

from __future__ import annotations

from rpfs.store.options import StoreOptions
from rpfs.store.repository import Repository


def open_repository(address, options: StoreOptions | None = None, *,
                    register: bool = True, _crypto=None) -> Repository:
    """``Repository.open`` whose s3:// catalog cache is brought up to date at open and
    follows a gc on another machine when a read meets a pack it deleted."""
    from rpfs.store.maintenance.sync import GcFollower, sync

    options = options or StoreOptions()
    if options.catch_up is None:
        options = options.with_(catch_up=sync)
    if options.on_missing_pack is None:
        options = options.with_(on_missing_pack=GcFollower())
    return Repository.open(str(address), options, register=register, _crypto=_crypto)
