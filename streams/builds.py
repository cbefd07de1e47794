"""One warning when a C extension in a source checkout is older than its ``.c`` file.

An editable install builds the extensions in place once; after a pull that changes a ``.c``
file the old build still loads, and code that asks it for a newer function falls back,
silently, to the Python twin (correct, many times slower: one BitLocker read through an old
``_fvecrypt`` took minutes). ``check(module)`` is called where each optional extension is
imported; it looks only at a module loaded from outside site-/dist-packages (a checkout),
with two ``stat`` calls, and says so once per process on stderr.
"""

from __future__ import annotations

import os
import sys

_warned = False


def check(module) -> bool:
    """Warn (once per process) if ``module``, a C extension, is older than the ``.c`` file
    of the same name beside it; True if it is."""
    global _warned
    path = getattr(module, "__file__", None)
    if _warned or not path or "-packages" in path:
        return False
    source = os.path.join(os.path.dirname(path), module.__name__.rpartition(".")[2] + ".c")
    try:
        stale = os.stat(path).st_mtime < os.stat(source).st_mtime
    except OSError:   # no source beside it: not a checkout
        return False
    if stale:
        _warned = True
        sys.stderr.write(f"rpfs: warning: {source} is newer than its build "
                         f"({os.path.basename(path)}): run tools/setup.sh to rebuild (until "
                         f"then slower Python code may run in its place)\n")
    return stale
