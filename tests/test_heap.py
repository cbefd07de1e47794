"""rpfs.heap: the mount's malloc settings, checked by counting page faults (never time)."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc: Linux only")

# read-ahead decodes chunk-sized buffers in bursts and the cache lets them go in bursts:
# 8 buffers made, then all freed, 6 times over; print the minor page faults of the last 5
_PROGRAM = """
import resource, sys
if sys.argv[1] == "ctypes":
    sys.modules["rpfs._malloc"] = None   # as if it were not built
from rpfs import heap
if sys.argv[1] in ("keep", "ctypes"):
    heap.keep_chunk_buffers()
piece = b"x" * 65536
for burst in range(6):
    if burst == 1:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    live = [b"".join([piece] * 16) for _ in range(8)]    # 1 MiB each, like decoded chunks
    del live
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
assert ("ctypes" in sys.modules) == (sys.argv[1] == "ctypes"), "ctypes only without rpfs._malloc"
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _PROGRAM, mode], capture_output=True, text=True,
                         check=True)
    return int(out.stdout)


@pytest.mark.parametrize("mode", ["keep", "ctypes"])   # rpfs._malloc, or ctypes without it
def test_chunk_buffers_reuse_freed_pages_instead_of_faulting_them_in_again(mode):
    kept = _faults(mode)
    # 40 buffers of 256 pages each: fresh pages for each would fault 10,240 times
    assert kept < 40 * 256 // 10, kept


def test_without_the_setting_each_buffer_faults_its_pages_in():
    # the test above can fail: glibc's defaults map (or trim) and fault again
    assert _faults("default") > 40 * 256 // 2


# an export's pattern: more chunks freed at once than the trim threshold keeps (24 MiB
# against 16), then as many made again; print the minor page faults of the last 5 bursts
_BURSTS = """
import resource, sys
from rpfs import heap
heap.keep_chunk_buffers()
if sys.argv[1] == "pad":
    heap.pad_heap(64 << 20)
piece = b"x" * 65536
for burst in range(6):
    if burst == 1:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    live = [b"".join([piece] * 16) for _ in range(24)]
    del live
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def test_a_padded_heap_keeps_the_pages_an_export_frees_in_bursts():
    """``pad_heap`` (rpfs export): the heap keeps its freed top, so the next burst reuses
    those pages; without it each burst past the trim threshold faults them in again."""
    faults = {mode: int(subprocess.run([sys.executable, "-c", _BURSTS, mode], capture_output=True,
                                       text=True, check=True).stdout) for mode in ("pad", "trim")}
    assert faults["pad"] < 5 * 24 * 256 // 10 < faults["trim"], faults
