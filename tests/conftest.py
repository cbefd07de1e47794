"""Shared pytest set-up: the repository root on sys.path (for tools.fixtures)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# -- the test-image factory (tools/fixtures) as session fixtures ---------------------------
import os

import pytest


@pytest.fixture(scope="session")
def small_fixtures():
    """The "small" fixture set (built on first use, then cached across runs)."""
    from tools.fixtures import build
    return build("small")


@pytest.fixture(scope="session")
def large_fixtures():
    """The "large" set: multi-GiB, for benchmarks; only with RPFS_LARGE=1."""
    if os.environ.get("RPFS_LARGE") != "1":
        pytest.skip("large fixture set: set RPFS_LARGE=1 to build/use it")
    from tools.fixtures import build
    return build("large")
