"""``StoreOptions``: everything a caller decides about how a repository is opened, in one
explicit object (restic's habit: options arrive as a struct from the command line).

The store never reads the environment: the CLI reads it once (``rpfs.cli.options``) and
passes these down; a library caller builds them itself. Callbacks let the maintenance layer
serve the repository without the repository importing it (docs/architecture.md "Store").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Callable

SCHEME = "s3://"


def is_s3(address) -> bool:
    return isinstance(address, str) and address.startswith(SCHEME)


@dataclass(frozen=True)
class StoreOptions:
    """How the store is reached and cached, from the CLI and the environment (rpfs/cli/options.py)."""

    # s3:// repositories: where the local catalog, locks and block cache live
    cache_dir: str | None = None           # this exact directory
    cache_home: str | None = None          # else <cache_home>/rpfs/<hash of the address> (default ~/.cache)
    block_cache_bytes: int = 2 << 30       # bound of the block cache of pack pieces
    endpoint: str | None = None            # S3 endpoint URL (None: boto3's own resolution)
    region: str | None = None
    s3_attempts: int = 6                   # tries of one request before it fails
    # every repository
    chunk_cache_bytes: int | None = None   # decompressed-chunk cache (None: the config's cache_mb)
    chunk_cache_grow_to: int = 0           # how far that bound may grow on re-reads (store/cache.py)
    passphrase: Callable[[str, bool], str] | None = None   # (where, new) -> passphrase of an encrypted one
    # the maintenance layer's services (rpfs.store.maintenance.open_repository fills them in)
    on_missing_pack: Callable | None = None   # (repo, ChunkLoc) -> ChunkLoc | None: where it is now
    catch_up: Callable | None = None          # (repo) -> None: an s3:// catalog cache brought up to date

    def with_(self, **kw) -> "StoreOptions":
        return replace(self, **kw)

    def local_dir(self, address: str) -> str:
        """The local directory of an s3:// repository (catalog, locks, readers, blocks)."""
        if self.cache_dir:
            return os.path.abspath(self.cache_dir)
        base = self.cache_home or os.path.join(os.path.expanduser("~"), ".cache")
        import hashlib   # here: only an s3:// address needs it (start-up of every command)

        return os.path.join(base, "rpfs", hashlib.sha256(address.rstrip("/").encode()).hexdigest()[:16])
