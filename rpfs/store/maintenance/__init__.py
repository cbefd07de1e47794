"""The store's maintenance layer: what keeps a catalog true to the repository's objects and
the repository small. It uses ``Repository`` and is never imported by it (or by the
backends): the repository calls back into it only through ``StoreOptions``.

- ``sync``: recovery point objects into the catalog; an s3:// cache follows prunes and gcs
  done elsewhere (``follow_gc``, ``GcFollower``);
- ``gc`` (mark: ``marks``), ``prune``: retention, then garbage collection; ``forget``: how
  prune forgets recovery points in one step, whenever it is killed;
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
    options = options or StoreOptions()
    if options.catch_up is None:
        options = options.with_(catch_up=_catch_up)
    if options.on_missing_pack is None:
        options = options.with_(on_missing_pack=_FollowGc())
    return Repository.open(str(address), options, register=register, _crypto=_crypto)


def _catch_up(repo):
    # sync is imported only here: only an s3:// catalog cache catches up (a local mount never)
    from rpfs.store.maintenance.sync import sync

    return sync(repo)


class _FollowGc:
    """``GcFollower``, made on the first missing pack: most repositories never meet one, so
    opening them does not import the sync module."""

    def __init__(self):
        self._follower = None

    def __call__(self, repo, loc):
        if self._follower is None:
            from rpfs.store.maintenance.sync import GcFollower

            self._follower = GcFollower()
        return self._follower(repo, loc)
