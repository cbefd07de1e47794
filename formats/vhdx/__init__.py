"""VHDX/AVHDX containers ([MS-VHDX]): reader with in-memory log replay and differencing, and a writer."""

from .reader import VhdxDisk
from .writer import write_vhdx

__all__ = ["VhdxDisk", "write_vhdx"]
