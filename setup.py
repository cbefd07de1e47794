"""Builds the optional C extensions ntfs_reader._lznt1, ntfs_reader._wofdecomp,
ntfs_reader._ntfsparse, streams._crc32c, formats.bitlocker._fvecrypt, rpfs._writeout, rpfs._malloc and
rpfs.store._zstd (metadata lives in
pyproject.toml), and rpfs._fusell, the mount's binding of libfuse3 (libfuse3-dev and
pkg-config, tools/setup.sh).

``optional=True`` (all but rpfs._fusell): if gcc or the Python headers are missing the install still succeeds and
ntfs_reader.lznt1 / xpress / lzx fall back to their pure-Python decoders (with a warning) and
ntfs_reader.native to the Python metadata parser, streams.crc32c to the crc32c package,
rpfs.restore to writing small files one system call at a time from Python, rpfs.heap to ctypes,
rpfs.store.zstd to the zstandard package.
"""

import shlex
import subprocess

from setuptools import Extension, setup


def pkg_config(*args: str) -> list[str]:
    """Flags from pkg-config (empty if it or the package is missing: the build then fails)."""
    try:
        out = subprocess.run(["pkg-config", *args], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return []
    return shlex.split(out.stdout)


setup(
    ext_modules=[
        Extension(
            "ntfs_reader._lznt1",
            ["ntfs_reader/_lznt1.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "ntfs_reader._wofdecomp",
            ["ntfs_reader/_wofdecomp.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "ntfs_reader._ntfsparse",
            ["ntfs_reader/_ntfsparse.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        # the mount's FUSE binding (libfuse3's low-level API): required, the mount needs it
        Extension(
            "rpfs._fusell",
            ["rpfs/_fusell.c"],
            extra_compile_args=["-O2", *pkg_config("--cflags", "fuse3")],
            extra_link_args=pkg_config("--libs", "fuse3"),
        ),
        # restore's small files written in one call per batch (rpfs/restore.py's fallback)
        Extension(
            "rpfs._writeout",
            ["rpfs/_writeout.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "streams._crc32c",
            ["streams/_crc32c.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        Extension(
            "formats.bitlocker._fvecrypt",
            ["formats/bitlocker/_fvecrypt.c"],
            extra_compile_args=["-O3"],
            optional=True,
        ),
        # zstd decompression through the system's libzstd (libzstd-dev) for reading a
        # repository (rpfs/store/zstd.py; else the zstandard package)
        Extension(
            "rpfs.store._zstd",
            ["rpfs/store/_zstd.c"],
            extra_compile_args=["-O2"],
            libraries=["zstd"],
            optional=True,
        ),
        # glibc's mallopt/malloc_trim for rpfs/heap.py (else ctypes)
        Extension(
            "rpfs._malloc",
            ["rpfs/_malloc.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
    ]
)
