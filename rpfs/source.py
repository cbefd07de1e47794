"""A SOURCE opened as the namespace every front end shows: the tree of recovery points
(rpfs.tree) with what the layers above it add to each VM (``/<vm>/.versions``, served from
the index). The tree sits below the index and never imports it; this is where they meet."""

from __future__ import annotations

import os

from rpfs.index.versions import versions_dir
from rpfs.tree import Tree, source_tree

VM_VIEWS = (versions_dir,)   # /<vm>/.versions, once the VM is indexed


def open_source(source: str | os.PathLike, keys=None, store=None) -> Tree:
    """A repository (a directory or s3://BUCKET/PREFIX), a VM folder, or one disk image, as a
    Tree. ``keys`` (a ``formats.bitlocker.KeyRing``) unlock the BitLocker volumes in it;
    ``store``: the ``StoreOptions`` a repository is opened with."""
    return source_tree(source, keys, store, VM_VIEWS)
