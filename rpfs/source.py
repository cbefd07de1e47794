"""A SOURCE opened as the namespace every front end shows: the tree of recovery points
(rpfs.tree) with what the layers above it add to each VM (``/<vm>/.versions``, served from
the index). The tree sits below the index and never imports it; this is where they meet."""

from __future__ import annotations

import os

from rpfs.index import index_path
from rpfs.tree import Tree, source_tree


def versions_dir(tree: Tree, vm: str) -> list:
    """``/<vm>/.versions`` once the VM is indexed (rpfs.index.versions): its modules are
    loaded only for a repository that has an index."""
    if not os.path.exists(index_path(tree.repo)):
        return []
    from rpfs.index.versions import versions_dir

    return versions_dir(tree, vm)


VM_VIEWS = (versions_dir,)


def open_source(source: str | os.PathLike, keys=None, store=None) -> Tree:
    """A repository (a directory or s3://BUCKET/PREFIX), a VM folder, or one disk image, as a
    Tree. ``keys`` (a ``formats.bitlocker.KeyRing``) unlock the BitLocker volumes in it;
    ``store``: the ``StoreOptions`` a repository is opened with."""
    return source_tree(source, keys, store, VM_VIEWS)
