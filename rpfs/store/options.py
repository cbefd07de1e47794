"""``StoreOptions``: everything a caller decides about how a repository is opened, in one
explicit object (restic's habit: options arrive as a struct from the command line).

The store never reads the environment: the CLI reads it once (``rpfs.cli.options``) and
passes these down; a library caller builds them itself. Callbacks let the maintenance layer
serve the repository without the repository importing it (docs/architecture.md "Store").
"""

from __future__ import annotations

import os
from collections.abc import Callable

from streams.record import Value

SCHEME = "s3://"


def is_s3(address) -> bool:
    return isinstance(address, str) and address.startswith(SCHEME)


class StoreOptions(Value):
    """How the store is reached and cached, from the CLI and the environment (rpfs/cli/options.py)."""

    __slots__ = _fields = ("cache_dir", "cache_home", "block_cache_bytes", "endpoint", "region",
                           "s3_attempts", "chunk_cache_bytes", "chunk_cache_grow_to",
                           "passphrase", "on_missing_pack", "catch_up", "huge_chunks")

    def __init__(self, cache_dir: str | None = None, cache_home: str | None = None,
                 block_cache_bytes: int = 2 << 30, endpoint: str | None = None,
                 region: str | None = None, s3_attempts: int = 6,
                 chunk_cache_bytes: int | None = None, chunk_cache_grow_to: int = 0,
                 passphrase: Callable[[str, bool], str] | None = None,
                 on_missing_pack: Callable | None = None, catch_up: Callable | None = None,
                 huge_chunks: bool = False):
        # s3:// repositories: where the local catalog, locks and block cache live
        self.cache_dir = cache_dir            # this exact directory
        self.cache_home = cache_home          # else <cache_home>/rpfs/<hash of the address> (default ~/.cache)
        self.block_cache_bytes = block_cache_bytes   # bound of the block cache of pack pieces
        self.endpoint = endpoint              # S3 endpoint URL (None: boto3's own resolution)
        self.region = region
        self.s3_attempts = s3_attempts        # tries of one request before it fails
        # every repository
        self.chunk_cache_bytes = chunk_cache_bytes   # decompressed-chunk cache (None: the config's cache_mb)
        self.chunk_cache_grow_to = chunk_cache_grow_to   # how far that bound may grow on re-reads (store/cache.py)
        self.passphrase = passphrase          # (where, new) -> passphrase of an encrypted one
        self.huge_chunks = huge_chunks        # decoded chunks in huge-page slabs (store/slabs.py: restore)
        # the maintenance layer's services (rpfs.store.maintenance.open_repository fills them in)
        self.on_missing_pack = on_missing_pack   # (repo, ChunkLoc) -> ChunkLoc | None: where it is now
        self.catch_up = catch_up              # (repo) -> None: an s3:// catalog cache brought up to date

    def with_(self, **kw) -> "StoreOptions":
        return self._replace(**kw)

    def local_dir(self, address: str) -> str:
        """The local directory of an s3:// repository (catalog, locks, readers, blocks)."""
        if self.cache_dir:
            return os.path.abspath(self.cache_dir)
        base = self.cache_home or os.path.join(os.path.expanduser("~"), ".cache")
        import hashlib   # here: only an s3:// address needs it (start-up of every command)

        return os.path.join(base, "rpfs", hashlib.sha256(address.rstrip("/").encode()).hexdigest()[:16])
