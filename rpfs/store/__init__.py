"""The repository: packs of compressed chunks addressed by hash, and a SQLite catalog.

Public API (docs/architecture.md "Store"): ``Repository``, ``RecoveryPoint``.
"""

from rpfs.store.repository import RecoveryPoint, Repository

__all__ = ["Repository", "RecoveryPoint"]
