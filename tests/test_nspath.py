"""rpfs.nspath: the one split of namespace paths the CLI, web pages and index use."""

import pytest

from rpfs import nspath
from streams.errors import UsageError


def test_parts_and_dot_dot():
    assert nspath.parts("//web01/./latest/volumes/") == ["web01", "latest", "volumes"]
    assert nspath.parts("a/../b") == ["a", "..", "b"]          # resolve() follows links: kept
    assert nspath.normal_parts("/a/../../b/./c/..") == ["b"]  # never above the root


def test_repository_paths_by_role():
    n = nspath.parse("/web01/2026-12-07T043509Z/volumes/disk0-p2/Users/alice/x.txt",
                     repository=True)
    assert (n.vm, n.point, n.section, n.volume, n.inner) == (
        "web01", "2026-12-07T043509Z", "volumes", "disk0-p2", "/Users/alice/x.txt")
    n = nspath.parse("/web01/latest/files/notes.txt", repository=True)
    assert (n.section, n.volume, n.inner) == ("files", None, "/notes.txt")
    n = nspath.parse("/web01", repository=True)
    assert (n.vm, n.point, n.section, n.inner) == ("web01", None, None, "/")
    n = nspath.parse("volumes/p1/Windows/../x", repository=False)
    assert (n.vm, n.point, n.volume, n.inner) == (None, None, "p1", "/x")


def test_volume_files_and_recovery_points():
    assert nspath.volume_file("/vm/rp/volumes/v/a", repository=True).inner == "/a"
    for bad in ("/vm/rp/volumes/v", "/vm/rp/files/a", "/vm"):
        with pytest.raises(UsageError, match="not a file under /<vm>/<recovery point>/volumes"):
            nspath.volume_file(bad, repository=True)
    with pytest.raises(UsageError, match="not a file under volumes/<volume>/"):
        nspath.volume_file("disks/x.raw", repository=False)
    assert nspath.recovery_point("/web01/latest/") == ("web01", "latest")
    with pytest.raises(UsageError, match="not /<vm>/<recovery point>"):
        nspath.recovery_point("/web01/latest/files")
    assert nspath.vm_of("/web01/latest") == "web01" and nspath.vm_of("/") is None
