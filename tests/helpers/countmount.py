"""An image served by the real mount code (rpfs.fuse.mount over open_source), with every
NTFS node the mount makes counted, for tests/test_fuse_ops.py:
``python -m tests.helpers.countmount IMAGE MOUNTPOINT REPORT``.

When the mount ends (unmounted) REPORT gets JSON: ``{"ntfs_nodes": made, "ntfs_opens":
streams opened by ``NtfsNode.open``, "binding": {opcode: [received, handed to Python]}}``
(``_fusell.counts()``).
"""

from __future__ import annotations

import json
import sys

from rpfs import _fusell, fuse
from rpfs.ntfs_nodes import NtfsNode
from rpfs.source import open_source


def main(image: str, mountpoint: str, report: str) -> None:
    made, opened = [0], [0]
    real, real_open = NtfsNode.__init__, NtfsNode.open

    def counted(self, *args, **kw):
        made[0] += 1
        real(self, *args, **kw)

    def counted_open(self):
        opened[0] += 1
        return real_open(self)

    NtfsNode.__init__ = counted
    NtfsNode.open = counted_open
    try:
        fuse.mount(open_source(image), mountpoint, ready=lambda: print("ready", flush=True))
    finally:
        with open(report, "w") as f:
            json.dump({"ntfs_nodes": made[0], "ntfs_opens": opened[0], "binding": _fusell.counts()}, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
