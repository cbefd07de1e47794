"""The kinds of POSIX file system entries, in the names ``rpfs.node`` uses, decoded once for
every reader: from an inode's mode, and from a directory entry's file type byte (1-7 in the
same order in ext4, XFS and Btrfs), which tells the kind without reading the inode.
"""

from __future__ import annotations

import stat

MODE_KINDS = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
              stat.S_IFCHR: "chardev", stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo",
              stat.S_IFSOCK: "socket"}
FT_KINDS = {1: "file", 2: "dir", 3: "chardev", 4: "blockdev", 5: "fifo", 6: "socket",
            7: "symlink"}


def kind_of_mode(mode: int) -> str | None:
    """The kind of an inode's mode; None for a file type bit pattern that names none."""
    return MODE_KINDS.get(stat.S_IFMT(mode))
