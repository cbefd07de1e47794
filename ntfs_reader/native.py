"""The C metadata parser (``_ntfsparse.c``), or None: record.py, runlist.py, attrs.py and
index.py try it first and are its reference twins.

``parser`` is the loaded module once ``load()`` has handed it the classes it builds
(ntfs_reader/__init__.py does at import: the package sits above both this module and the
twins, which read ``native.parser``, so neither imports the other). It stays None when the extension was not built
(setup.py builds it optionally, like _lznt1) or when ``RPFS_NTFS_PYTHON=1`` asks for the
pure-Python parser. A C function answers None for anything it does not accept (bad input
above all): the twin then runs and raises the typed error, so messages and offsets come
from one place. ``use(False)`` switches to the twins at run time (the tests compare both).
"""

from __future__ import annotations

import os

parser = None
_module = None


def load(attribute: type, mft_record: type, index_entry: type, file_name: type,
         times: type) -> None:
    """Load the extension and hand it the Python classes whose instances it builds."""
    global parser, _module
    if os.environ.get("RPFS_NTFS_PYTHON") == "1":
        return
    try:
        from ntfs_reader import _ntfsparse
    except ImportError:  # pragma: no cover - depends on the build
        return
    from streams.builds import check
    check(_ntfsparse)
    _ntfsparse.init(attribute, mft_record, index_entry, file_name, times)
    _module = parser = _ntfsparse


def use(native: bool) -> bool:
    """Parse with C (True) or with the Python twins only (False); returns the previous
    choice. True has no effect when the extension is not available."""
    global parser
    before = parser is not None
    parser = _module if native else None
    return before


def available() -> bool:
    return _module is not None
