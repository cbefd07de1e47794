"""The C heap of a long-running process (``rpfs mount``, ``rpfs serve``).

glibc gives each new thread its own malloc arena, and a page freed in one arena is not
reused by another: after a 100,000-file folder was zipped and listed by the web server's
worker threads, it kept 100-170 MiB more than it started with, although its live objects
(the bounded caches) were about 70 MiB. Two arenas kept it to 84-101 MiB in the same run,
with no measurable cost in speed (the workers spend their time in I/O, zstd and the C
parsers, not in malloc).

Decoded chunks (1 MiB each) are above glibc's first mmap threshold, and a freed chunk at
the top of an arena is handed back to the kernel: the next chunk then faults in every page
afresh (256 minor faults per 1 MiB, about 0.5 ms here: as much as decompressing it).
``keep_chunk_buffers`` keeps such buffers in the arenas, so a chunk evicted from the cache
gives its pages to the next one (cat of a 384 MiB text log through a repository: 68,000
faults before, 35,000 after, the rest being the cache's first fill).

The two glibc calls come from ``rpfs._malloc`` (C, optional): ctypes with libffi, the
fallback, was ~7 M instructions of a mount's way to its first listing."""

import os

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -2, -3, -8  # mallopt, glibc's malloc.h
ARENAS = 2
MMAP_THRESHOLD = 4 << 20     # buffers up to this (chunks, read-ahead) come from the arenas
TRIM_THRESHOLD = 16 << 20    # free memory an arena keeps at its top (a read-ahead window)

_libc = None


def _c():
    global _libc
    if _libc is None:
        try:
            from rpfs import _malloc
        except ImportError:   # not built: ctypes
            _malloc = None
        if _malloc is not None:
            from streams.builds import check

            check(_malloc)
            _libc = (_malloc.mallopt, _malloc.malloc_trim)
            return _libc
        try:
            import ctypes

            lib = ctypes.CDLL(None)
            _libc = (lib.mallopt, lib.malloc_trim)
        except (OSError, AttributeError):  # not glibc: nothing to tune
            _libc = False
    return _libc


def limit_arenas(arenas: int = ARENAS) -> None:
    """Call before the worker threads start: later threads share ``arenas`` arenas."""
    if _c():
        _libc[0](M_ARENA_MAX, arenas)


def keep_chunk_buffers() -> None:
    """Serve chunk-sized buffers from the arenas and keep up to ``TRIM_THRESHOLD`` free at
    an arena's top, instead of mapping and unmapping each one (fixed values also stop glibc
    from moving the thresholds itself)."""
    if _c():
        _libc[0](M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        _libc[0](M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def pad_heap(pad: int) -> None:
    """Grow the heap ``pad`` bytes at a time and keep that much free at its top when it
    shrinks (``M_TOP_PAD``; pages not touched cost nothing): a process that frees and
    allocates chunks in turn without end (an export) then reuses the same pages instead of
    handing them back and faulting them in again. Not for a long-running process: the
    memory kept is never given back."""
    if _c():
        _libc[0](M_TOP_PAD, pad)


def give_back() -> None:
    """Return the heap's free pages to the system after a big answer (a zip or a listing of
    a huge folder frees many small objects; glibc keeps their pages otherwise)."""
    if _c():
        _libc[1](0)


def dump_on_signal(path: str) -> None:
    """Debugging the daemon's memory (``RPFS_MEMDEBUG=FILE rpfs mount ...``): on each
    SIGUSR2, write glibc's ``malloc_stats`` and Python's allocator statistics to
    ``FILE.malloc`` and, when tracing (``PYTHONTRACEMALLOC=N``), a tracemalloc snapshot to
    ``FILE`` (``tracemalloc.Snapshot.load``) with its 40 biggest lines in ``FILE.txt``.
    Nothing is installed unless the variable is set."""
    import signal
    import sys
    import tracemalloc

    def dump(signum, frame):
        fd = os.open(path + ".malloc", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        saved = os.dup(2)
        try:
            os.dup2(fd, 2)
            import ctypes   # debugging only

            if _c():
                ctypes.CDLL(None).malloc_stats()
            sys._debugmallocstats()
            try:   # SQLite's own heap (a page cache per thread's catalog connection)
                lib = ctypes.CDLL("libsqlite3.so.0")
                lib.sqlite3_memory_used.restype = lib.sqlite3_memory_highwater.restype = ctypes.c_int64
                os.write(2, b"sqlite3 memory used %d, highwater %d\n"
                         % (lib.sqlite3_memory_used(), lib.sqlite3_memory_highwater(0)))
            except (OSError, AttributeError):
                pass
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(fd)
        if tracemalloc.is_tracing():
            snap = tracemalloc.take_snapshot()
            snap.dump(path)
            current, peak = tracemalloc.get_traced_memory()
            with open(path + ".txt", "w") as f:
                f.write(f"traced {current >> 20} MiB, peak {peak >> 20} MiB\n")
                for stat in snap.statistics("lineno")[:40]:
                    f.write(f"{stat}\n")

    signal.signal(signal.SIGUSR2, dump)
