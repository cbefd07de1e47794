"""The C heap of a long-running process (``rpfs mount``, ``rpfs serve``).

glibc gives each new thread its own malloc arena, and a page freed in one arena is not
reused by another: after a 100,000-file folder was zipped and listed by the web server's
worker threads, it kept 100-170 MiB more than it started with, although its live objects
(the bounded caches) were about 70 MiB. Two arenas kept it to 84-101 MiB in the same run,
with no measurable cost in speed (the workers spend their time in I/O, zstd and the C
parsers, not in malloc)."""

import ctypes

M_ARENA_MAX = -8  # mallopt parameter, glibc's malloc.h
ARENAS = 2

_libc = None


def _c():
    global _libc
    if _libc is None:
        try:
            lib = ctypes.CDLL(None)
            _libc = (lib.mallopt, lib.malloc_trim)
        except (OSError, AttributeError):  # not glibc: nothing to tune
            _libc = False
    return _libc


def limit_arenas(arenas: int = ARENAS) -> None:
    """Call before the worker threads start: later threads share ``arenas`` arenas."""
    if _c():
        _libc[0](M_ARENA_MAX, arenas)


def give_back() -> None:
    """Return the heap's free pages to the system after a big answer (a zip or a listing of
    a huge folder frees many small objects; glibc keeps their pages otherwise)."""
    if _c():
        _libc[1](0)
