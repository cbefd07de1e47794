"""Where a repository's index lives: beside its catalog. Its own module, which imports
nothing of the index: a mount asks whether there is an index (rpfs/source.py) before it
loads any of the index's modules, and db takes the name from here without importing the
package that lazily imports db's users (no import cycle)."""

import os

INDEX_NAME = "index.sqlite"


def index_path(repo) -> str:
    return os.path.join(os.path.dirname(repo.catalog_path), INDEX_NAME)
