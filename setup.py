"""Builds the optional C extension ntfs_reader._lznt1 (metadata lives in pyproject.toml).

``optional=True``: if gcc or the Python headers are missing the install still succeeds and
ntfs_reader.lznt1 falls back to its pure-Python decoder (with a warning).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "ntfs_reader._lznt1",
            ["ntfs_reader/_lznt1.c"],
            extra_compile_args=["-O3"],
            optional=True,
        )
    ]
)
