"""The repository: packs of compressed chunks addressed by hash, and a SQLite catalog.

Three layers (docs/architecture.md "Store"): backends (``backend``, ``s3``, ``locks``), the
``Repository`` (``repository``: objects, packs, catalog), and ``maintenance`` (sync, gc,
repair, prune, verify). Public API: ``open_repository``, ``Repository``, ``RecoveryPointRecord``,
``StoreOptions``.
"""

from rpfs.store.maintenance import open_repository
from rpfs.store.options import StoreOptions
from rpfs.store.repository import RecoveryPointRecord, Repository

__all__ = ["Repository", "RecoveryPointRecord", "StoreOptions", "open_repository"]
