"""VHDX/AVHDX containers ([MS-VHDX]): reader with in-memory log replay and differencing, and a writer."""

from .reader import VhdxDisk

__all__ = ["VhdxDisk", "write_vhdx"]


def __getattr__(name: str):
    """``write_vhdx``, imported on first use: reading a disk (every command) needs only the
    reader; the writer is for ``rpfs export`` and the test factories."""
    if name == "write_vhdx":
        from .writer import write_vhdx

        return write_vhdx
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
