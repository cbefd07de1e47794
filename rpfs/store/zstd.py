"""zstd decompression for reading a repository (chunks, frames, chunk maps).

Through ``rpfs.store._zstd`` (C, the system's libzstd) when it is built, else the zstandard
package, which stays the reference twin (tests/test_store_zstd.py runs both on the same
frames, good and damaged) and what writes every frame (compression is a backup's work).
Why not zstandard for reading too: its wheel's extension is 11.6 MB with debug information,
all of which a cold start reads (the disk's read-ahead is larger than the file): ~13 MB
and ~20 ms of a cold mount's way to its first listing, for one call.

``across=False`` decodes the first frame only (what follows is ignored, as zstandard's
``decompress``); ``across=True`` every frame (as its stream reader across frames). Output
beyond the room given is an error, never a larger allocation; a frame whose window is
larger than ``window_max`` is refused. Every failure is ``Error``.
"""

from __future__ import annotations

try:
    import rpfs.store._zstd as _zstd
except ImportError:   # not built (no libzstd-dev): the zstandard package
    _zstd = None

    class Error(ValueError):
        """A frame that does not decode: damaged, truncated, too large for the room given."""
else:
    from streams.builds import check

    check(_zstd)
    Error = _zstd.Error   # the same, raised by the C code itself (the twin raises it too)

WINDOW_MAX = 1 << 31   # zstd's own limit for a decoder (ZSTD_WINDOWLOG_MAX_64 is larger)


def content_size(src) -> int:
    """The first frame's declared size, -1 if it declares none."""
    if _zstd is None:
        return py_content_size(src)
    return _zstd.content_size(src)


def decompress(src, capacity: int, *, across: bool = False, window_max: int = WINDOW_MAX) -> bytes:
    """At most ``capacity`` bytes decoded from ``src``."""
    if _zstd is None:
        return py_decompress(src, capacity, across=across, window_max=window_max)
    return _zstd.decompress(src, capacity, window_max, across)


def decompress_into(src, out, *, across: bool = True, window_max: int = WINDOW_MAX) -> int:
    """Decode ``src`` into the writable buffer ``out``; the number of bytes written."""
    if _zstd is None:
        return py_decompress_into(src, out, across=across, window_max=window_max)
    return _zstd.decompress_into(src, out, window_max, across)


# The zstandard package's way: the reference, and what runs without the extension. Its own
# checks differ (its one-shot decode allocates what a frame declares; its stream reader
# returns a truncated frame's bytes without an error), so the declared size and the window
# are checked here as the C code checks them; a caller checks the size it got.


def py_content_size(src) -> int:
    import zstandard

    try:
        return zstandard.frame_content_size(src)
    except zstandard.ZstdError as e:
        raise Error(str(e)) from None


def py_decompress(src, capacity: int, *, across: bool = False, window_max: int = WINDOW_MAX) -> bytes:
    import zstandard

    if across:
        out = bytearray(capacity)
        return bytes(out[:py_decompress_into(src, out, window_max=window_max)])
    try:
        declared = zstandard.frame_content_size(src)
        if declared > capacity:
            raise Error(f"frame declares {declared} bytes, more than there is room for")
        window = zstandard.get_frame_parameters(src).window_size
        if window > window_max:
            raise Error(f"frame requires too much memory for decoding (a window of {window} bytes)")
        return zstandard.ZstdDecompressor().decompress(src, max_output_size=capacity)
    except zstandard.ZstdError as e:
        raise Error(str(e)) from None


def py_decompress_into(src, out, *, across: bool = True, window_max: int = WINDOW_MAX) -> int:
    import zstandard

    if not across:
        raise ValueError("the zstandard twin decodes into a buffer across frames only")
    if not len(src):
        raise Error("no frame")
    out = memoryview(out).cast("B")
    got = 0
    try:
        d = zstandard.ZstdDecompressor(max_window_size=window_max)
        with d.stream_reader(src, read_size=len(src), read_across_frames=True) as r:
            while got < len(out):
                n = r.readinto(out[got:])
                if not n:
                    break
                got += n
            if r.read(1):
                raise Error("more bytes than there is room for")
    except zstandard.ZstdError as e:
        raise Error(str(e)) from None
    return got
