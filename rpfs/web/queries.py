"""Search and version history for the web page: ``rpfs.index``'s (the metadata index, which
walks recovery points that are not indexed yet), and recovery point names as times.

Results stream: the caller stops when it has enough.
"""

from __future__ import annotations

from typing import Iterator

from rpfs.index import file_history as _file_history
from rpfs.index import find_entries as _find_entries
from rpfs.tree import Tree
from rpfs.log import get_logger

log = get_logger(__name__)


def _notice(text: str) -> None:
    log.info("%s", text)


def find_entries(tree: Tree, pattern: str, **filters) -> Iterator[dict]:
    return _find_entries(tree, pattern, notice=_notice, **filters)


def file_history(tree: Tree, path: str, *, verify: bool = False) -> dict:
    return _file_history(tree, path, verify=verify, notice=_notice)
