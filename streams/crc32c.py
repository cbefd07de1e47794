"""CRC-32C (Castagnoli), the checksum of VHDX, ext4, XFS and btrfs metadata.

``crc32c(data, value=0)``: ``value`` is a previous result, so ``crc32c(b, crc32c(a)) ==
crc32c(a + b)``. Computed by our C extension (``streams._crc32c``); the ``crc32c`` package,
which imports ``importlib.metadata`` (~12 ms of start-up), is only the fallback when the
extension was not built, and the oracle of tests/test_crc32c.py.
"""

from __future__ import annotations

try:
    from streams._crc32c import crc32c
except ImportError:  # built without a C compiler (setup.py: optional=True)
    from crc32c import crc32c  # noqa: F401
else:
    from streams import _crc32c, builds
    builds.check(_crc32c)
