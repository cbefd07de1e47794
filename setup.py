"""Builds the optional C extensions ntfs_reader._lznt1, ntfs_reader._wofdecomp,
ntfs_reader._ntfsparse, streams._crc32c and formats.bitlocker._fvecrypt (metadata lives in
pyproject.toml).

``optional=True``: if gcc or the Python headers are missing the install still succeeds and
ntfs_reader.lznt1 / xpress / lzx fall back to their pure-Python decoders (with a warning) and
ntfs_reader.native to the Python metadata parser, streams.crc32c to the crc32c package.
"""

from setuptools import Extension, setup

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
    ]
)
