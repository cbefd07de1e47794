"""Shared pytest set-up: the repository root on sys.path (for tools.fixtures and
tests.helpers), the fixture sets, and the rule that an error-level log line fails the test
that logged it unless the test is marked ``allow_error_log`` (warnings are errors through
``filterwarnings`` in pyproject.toml)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# -- the test-image factory (tools/fixtures) as session fixtures ---------------------------
import logging
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


@pytest.fixture(scope="session")
def imgs():
    """Small disks made by real tools for the formats tests (tests/helpers/vhd_images.py)."""
    from tests.helpers.vhd_images import images
    return images()


@pytest.fixture(autouse=True)
def _no_unexpected_error_logs(request, caplog):
    """Fails the test if it logged at ERROR or above without ``@pytest.mark.allow_error_log``:
    an error a test did not ask for is a bug the test would otherwise hide."""
    yield
    if request.node.get_closest_marker("allow_error_log"):
        return
    bad = [r for when in ("setup", "call") for r in caplog.get_records(when)
           if r.levelno >= logging.ERROR]
    if bad:
        lines = "; ".join(f"{r.name}: {r.getMessage()}"[:300] for r in bad[:5])
        pytest.fail(f"unexpected error-level log lines ({len(bad)}): {lines}", pytrace=False)


# -- skips: only the reasons listed in the file given with --allowed-skips (CI) -----------

def pytest_addoption(parser):
    parser.addoption("--allowed-skips", metavar="FILE", default=None,
                     help="fail the run if a test is skipped for a reason not listed in FILE "
                          "(one regular expression per line, # comments)")


_SKIPS: list[tuple[str, str]] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPS.append((report.nodeid, reason.removeprefix("Skipped: ")))


def pytest_sessionfinish(session, exitstatus):
    listed = session.config.getoption("--allowed-skips")
    if not listed:
        return
    import re
    patterns = [re.compile(line.strip()) for line in Path(listed).read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    bad = [(node, why) for node, why in _SKIPS if not any(p.match(why) for p in patterns)]
    if bad:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        if tr:
            tr.ensure_newline()
        for node, why in bad:
            line = f"skip not allowed by {listed}: {node}: {why}"
            tr.write_line(line, red=True) if tr else print(line)
        session.exitstatus = 1
