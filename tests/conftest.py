"""Shared pytest set-up: the repository root on sys.path (for tools.fixtures and
tests.helpers), the fixture sets, and the rule that an error-level log line fails the test
that logged it unless the test is marked ``allow_error_log`` (warnings are errors through
``filterwarnings`` in pyproject.toml)."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import os

# `rpfs backup` indexes in a background process by default; the suite's tests read what a
# backup printed and the index right after it, so they index before returning unless a
# test asks for the background (tests/test_index_background.py passes --index=background).
os.environ.setdefault("RPFS_BACKUP_INDEX", "now")

# -- the test-image factory (tools/fixtures) as session fixtures ---------------------------
import logging
import shutil
import signal
import subprocess
import tempfile
import time
import uuid

import pytest


@pytest.fixture(scope="session")
def small_fixtures():
    """The "small" fixture set (built on first use, then cached across runs)."""
    from tools.fixtures import build
    return build("small")


@pytest.fixture(scope="session")
def hostile_fixtures():
    """The hostile VM (tools/fixtures/hostile.py: patched names, symlinks out of their
    folder, a 50 GiB sparse stream, a 100,000-file folder), built on first use, then cached."""
    from tools.fixtures import hostile
    return hostile.build()


@pytest.fixture(scope="session")
def hostile_repo(hostile_fixtures, tmp_path_factory):
    """A repository holding the hostile VM as ``/evil/2026-11-01T020000Z``."""
    from tests.helpers.cli import rpfs
    repo = tmp_path_factory.mktemp("hostile") / "repo"
    rpfs("init", repo)
    rpfs("backup", repo, hostile_fixtures.vm, "--vm", "evil", "--time", "2026-11-01T02:00:00Z",
         "--no-index")
    return repo


@pytest.fixture(scope="session")
def linuxfs_images():
    """XFS and Btrfs images written by mkfs and the kernel, with manifests read back through
    the kernel's read-only mount (tools/fixtures/linuxfs.py; built once, then cached)."""
    from tools.fixtures import linuxfs
    if not linuxfs.loop_available():
        pytest.skip("no loop device (building XFS/Btrfs images needs root and loop mounts)")
    return linuxfs.build()


@pytest.fixture(scope="session")
def bitlk_images_dir():
    """cryptsetup's BitLocker test images (written by Windows) and their images.conf:
    (directory, conf by image name); skipped where they cannot be fetched."""
    from tools.fixtures import bitlk_images
    try:
        d = bitlk_images.fetch()
    except bitlk_images.Unavailable as e:
        pytest.skip(f"cryptsetup's BitLocker images: {e}")
    return d, bitlk_images.load_conf(d)


@pytest.fixture(scope="session")
def dissect_fve_dir():
    """BitLocker volumes written by Windows from dissect.fve's sdist (a used-space-only
    volume paused half-way, one decrypted, a Vista one); skipped where pip cannot fetch it."""
    from tools.fixtures import dissect_fve_images
    try:
        return dissect_fve_images.fetch()
    except dissect_fve_images.Unavailable as e:
        pytest.skip(f"dissect.fve's BitLocker images: {e}")


@pytest.fixture(scope="session")
def libldm_images_dir():
    """Dynamic disks written by Windows Server 2003 R2 and 2008 R2 (libldm's test data, from
    Debian's libldm source); skipped where apt cannot fetch it."""
    from tools.fixtures import libldm_images
    try:
        return libldm_images.fetch()
    except libldm_images.Unavailable as e:
        pytest.skip(f"libldm's Windows dynamic disks: {e}")


@pytest.fixture(scope="session")
def dissect_hyperv_dir():
    """A .vmcx and a .VMRS written by Hyper-V, from dissect.hypervisor's sdist; skipped where
    pip cannot fetch it."""
    from tools.fixtures import dissect_hyperv_files
    try:
        return dissect_hyperv_files.fetch()
    except dissect_hyperv_files.Unavailable as e:
        pytest.skip(f"dissect.hypervisor's Hyper-V files: {e}")


@pytest.fixture(scope="session")
def large_fixtures():
    """The "large" set: multi-GiB, for benchmarks; only with RPFS_LARGE=1."""
    if os.environ.get("RPFS_LARGE") != "1":
        pytest.skip("large fixture set: set RPFS_LARGE=1 to build/use it")
    from tools.fixtures import build
    return build("large")


# -- a real S3 server (single-node Ceph RADOS Gateway) for s3:// repositories --------------
S3_ENV = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION",
          "XDG_CACHE_HOME", "RPFS_PASSWORD")


class Gateway:
    """The running gateway: its endpoint, fresh repository addresses, and a kill switch
    for fault tests (the monitor and OSD keep the data; only the gateway dies)."""

    def __init__(self, d: str, env: dict):
        self.dir, self.env = d, env
        self.endpoint = env["AWS_ENDPOINT_URL"]

    def address(self, what: str = "repo") -> str:
        return f"s3://rpfs-test/{what}-{uuid.uuid4().hex[:8]}"

    def _pid(self) -> int:
        with open(os.path.join(self.dir, "run", "client.rgw.gw.pid")) as f:
            return int(f.read())

    def kill(self) -> None:
        pid = self._pid()
        os.kill(pid, signal.SIGKILL)
        for _ in range(200):
            try:
                with open(f"/proc/{pid}/status") as f:
                    if "\nState:\tZ" in f.read():
                        break
            except FileNotFoundError:
                break
            time.sleep(0.05)

    def start(self) -> None:
        subprocess.run(["radosgw", "-c", os.path.join(self.dir, "ceph.conf"), "-n", "client.rgw.gw"],
                       check=True, capture_output=True)
        import urllib.request
        for _ in range(600):
            try:
                urllib.request.urlopen(self.endpoint, timeout=1).close()
                return
            except OSError as e:
                if getattr(e, "code", None):   # an HTTP answer (403): it is up
                    return
            time.sleep(0.05)
        raise RuntimeError("the S3 gateway did not come back")


def _shared_script(name: str) -> str | None:
    for base in (ROOT.parent / "shared", Path("/work/shared")):
        p = base / "s3" / name
        if p.exists():
            return str(p)
    return None


@pytest.fixture(scope="session")
def s3_gateway():
    """Starts the gateway once per session (~6 s); its credentials go into os.environ the
    way the AWS tools take them, with a throw-away cache home and a test passphrase."""
    start = _shared_script("s3-start.sh")
    if start is None:
        pytest.skip("shared/s3/s3-start.sh not found beside the repository")
    for tool in ("radosgw", "ceph-mon", "ceph-osd"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (tools/setup.sh installs the Ceph packages)")
    base = tempfile.mkdtemp(prefix="rpfs-s3-")
    d = os.path.join(base, "gw")
    r = subprocess.run([start, d], capture_output=True, text=True,
                       env={**os.environ, "S3_STORE": os.environ.get("S3_STORE", "memstore")})
    if r.returncode:
        raise RuntimeError(f"s3-start.sh failed: {r.stderr[-2000:]}")
    env = {}
    with open(os.path.join(d, "s3.env")) as f:
        for line in f:
            k, _, v = line.strip().partition("=")
            env[k] = v
    env = {"AWS_ENDPOINT_URL": env["S3_ENDPOINT"], "AWS_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
           "AWS_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
           "AWS_DEFAULT_REGION": env.get("AWS_DEFAULT_REGION", "us-east-1"),
           "XDG_CACHE_HOME": os.path.join(base, "cache"), "RPFS_PASSWORD": "rpfs test passphrase"}
    saved = {k: os.environ.get(k) for k in S3_ENV}
    os.environ.update(env)
    try:
        yield Gateway(d, env)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        subprocess.run([_shared_script("s3-stop.sh"), d, "--purge"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


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
