"""Paths of the namespace, split in one place: ``/<vm>/<recovery point>/<section>/...`` in a
repository (``section``: ``volumes``, ``disks``, ``files``, ...), ``<section>/...`` for an
image or a folder (DESIGN.md). The CLI, the web pages and the index read a path's parts
from here; ``Tree.resolve`` walks the same parts (it follows symlinks, so it keeps ``..``).
"""

from __future__ import annotations

from streams.errors import UsageError
from streams.record import Value


def parts(path: str) -> list[str]:
    """The components of ``path``: empty and ``.`` components dropped, ``..`` kept."""
    return [p for p in str(path).split("/") if p not in ("", ".")]


def normal_parts(path: str) -> list[str]:
    """The components of ``path`` with ``..`` taking one off (never above the root)."""
    out: list[str] = []
    for p in parts(path):
        if p == "..":
            del out[-1:]
        else:
            out.append(p)
    return out


class NamespacePath(Value):
    """One path, by role. ``vm``/``point`` are None for an image or folder, and past the
    parts the path has; ``volume`` is set under ``volumes/<volume>``; ``inner`` is the path
    below the volume (or below the section), ``/`` at its top."""

    __slots__ = _fields = ("parts", "vm", "point", "section", "volume", "inner")

    def __init__(self, parts: tuple[str, ...], vm: str | None, point: str | None,
                 section: str | None, volume: str | None, inner: str):
        self.parts = parts
        self.vm = vm
        self.point = point
        self.section = section
        self.volume = volume
        self.inner = inner


def parse(path: str, *, repository: bool) -> NamespacePath:
    """Split ``path`` (``..`` resolved lexically) for a repository's namespace or, with
    ``repository=False``, an image's or folder's."""
    p = tuple(normal_parts(path))
    head = 2 if repository else 0
    vm = p[0] if repository and len(p) > 0 else None
    point = p[1] if repository and len(p) > 1 else None
    section = p[head] if len(p) > head else None
    below = p[head + 1:]
    volume = None
    if section == "volumes" and below:
        volume, below = below[0], below[1:]
    return NamespacePath(p, vm, point, section, volume, "/" + "/".join(below))


def volume_file(path: str, *, repository: bool) -> NamespacePath:
    """A path to something inside a volume: ``/<vm>/<rp>/volumes/<vol>/<inner>``, or
    ``volumes/<vol>/<inner>`` for an image or folder; UsageError otherwise."""
    n = parse(path, repository=repository)
    if n.volume is None or n.inner == "/":
        where = "/<vm>/<recovery point>/volumes/<volume>/" if repository else "volumes/<volume>/"
        raise UsageError(f"{path}: not a file under {where}")
    return n


def recovery_point(path: str) -> tuple[str, str]:
    """``/<vm>/<rp>`` -> (vm, recovery point name as written, ``latest`` included)."""
    p = parts(path)
    if len(p) != 2:
        raise UsageError(f"{path}: not /<vm>/<recovery point>")
    return p[0], p[1]


def vm_of(path: str) -> str | None:
    """The VM of a ``/<vm>/...`` path of a repository's namespace (None if it names none)."""
    p = parts(path)
    return p[0] if p else None
