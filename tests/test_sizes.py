"""rpfs.sizes: the one size syntax (the union of what the CLI, RPFS_CACHE_SIZE, the ops
config and find --size accepted before) and its one error wording."""

import argparse

import pytest

from rpfs.index.query import parse_size_filter
from rpfs.sizes import parse_size, positive_size
from streams.errors import UsageError


@pytest.mark.parametrize("text,want", [
    ("4096", 4096), ("0", 0), ("512K", 512 << 10), ("512k", 512 << 10), ("1M", 1 << 20),
    ("32MiB", 32 << 20), ("32mib", 32 << 20), ("1G", 1 << 30), ("2T", 2 << 40),
    (" 1.5G ", 3 << 29), ("4096B", 4096), ("10 M", 10 << 20), (7, 7),
])
def test_accepted(text, want):
    assert parse_size(text) == want


@pytest.mark.parametrize("text", ["", "M", "1X", "-1", "1MM", "big", "1e3", True, -1, None])
def test_refused_in_one_wording(text):
    with pytest.raises(ValueError, match=r"^not a size: .* \(e\.g\. 512K, 100M, 1G\)$"):
        parse_size(text)


def test_options_want_a_positive_size():
    assert positive_size("1M") == 1 << 20
    for bad in ("0", "abc"):
        with pytest.raises(argparse.ArgumentTypeError, match="not a size"):
            positive_size(bad)


def test_find_size_filter_uses_the_same_syntax():
    more, less, exact = parse_size_filter("+1M"), parse_size_filter("-10KiB"), parse_size_filter("4096")
    assert more((1 << 20) + 1) and not more(1 << 20)
    assert less(10239) and not less(10240)
    assert exact(4096) and not exact(4097)
    with pytest.raises(UsageError, match="--size: not a size"):
        parse_size_filter("+lots")
