"""``--limit-rate``: the token bucket on a clock the test moves (waits counted, not timed),
and every byte of a backup's reads, a restore's and an export's writes and a web download
going through it."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from rpfs.ratelimit import RateLimit, paced

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def _limit(rate: int) -> tuple[RateLimit, FakeClock]:
    c = FakeClock()
    return RateLimit(rate, clock=c, sleep=c.sleep), c


def test_bucket_waits_what_the_rate_says():
    limit, clock = _limit(MiB)
    for _ in range(10):
        limit.take(MiB)
    assert limit.slept == pytest.approx(9.0) and clock.now == pytest.approx(9.0)
    clock.now += 100                    # a long pause refills at most one second's worth
    limit.take(3 * MiB)
    assert limit.slept == pytest.approx(11.0) and limit.passed == 13 * MiB


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    from rpfs.backup import backup
    from rpfs.store import Repository
    base = tmp_path_factory.mktemp("rate")
    vm = base / "web01"
    vm.mkdir()
    (vm / "web01.vhdx").write_bytes(random.Random(1).randbytes(5 * MiB + 123))
    (vm / "notes.txt").write_bytes(b"hello\n" * 1000)
    with Repository.init(base / "repo") as r:
        backup(r, [str(vm)], time="2026-11-01T02:00:00Z", show_progress=False)
    return base


def test_backup_reads_go_through_the_bucket(repo, tmp_path):
    from rpfs.backup import backup
    from rpfs.store import Repository
    limit, clock = _limit(2 * MiB)
    with Repository.open(repo / "repo") as r:
        res = backup(r, [str(repo / "web01")], time="2026-11-02T02:00:00Z", show_progress=False,
                     force_read=True, limit=limit)
    assert limit.passed == res.read_bytes == 5 * MiB + 123 + 6000
    assert limit.slept == pytest.approx((limit.passed - 2 * MiB) / (2 * MiB))


def test_restore_writes_are_paced(repo, tmp_path):
    from rpfs.restore import restore
    from rpfs.source import open_source
    limit, clock = _limit(MiB)
    with open_source(repo / "repo") as tree:
        node = tree.resolve("/web01/2026-11-01T020000Z/files", follow=False)
        r = restore(node, str(tmp_path / "out"), progress=paced(None, limit))
    assert limit.passed == r.bytes == 5 * MiB + 123 + 6000
    assert limit.slept == pytest.approx((limit.passed - MiB) / MiB)
    assert (tmp_path / "out" / "files" / "web01.vhdx").read_bytes() == \
        (repo / "web01" / "web01.vhdx").read_bytes()


def test_web_downloads_share_the_bucket(repo):
    import httpx

    from rpfs.source import open_source
    from rpfs.web.app import create_app
    limit = RateLimit(64 * MiB)
    with open_source(repo / "repo") as tree:
        app = create_app(tree, source="repo", limit=limit)
        transport = httpx.ASGITransport(app=app)

        async def get(path, **params):
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
                return await c.get("/api/download", params={"path": path, **params})
        import anyio
        one = anyio.run(get, "/web01/latest/files/web01.vhdx")
        assert one.status_code == 200 and one.content == (repo / "web01" / "web01.vhdx").read_bytes()
        assert limit.passed == len(one.content)
        z = anyio.run(lambda: get("/web01/latest/files", format="zip"))
        assert z.status_code == 200
        assert limit.passed == len(one.content) + len(z.content)


def test_cli_takes_the_option(repo, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "RPFS_DEBUG"}
    for args in (["restore", str(repo / "repo"), "/web01/latest/files/notes.txt", str(tmp_path / "r")],
                 ["export-vm", str(repo / "repo"), "/web01/latest", str(tmp_path / "e")]):
        p = subprocess.run([sys.executable, "-m", "rpfs", *args, "--limit-rate", "100M"],
                           capture_output=True, text=True, cwd=ROOT, env=env)
        assert p.returncode == 0, p.stderr
    assert (tmp_path / "r" / "notes.txt").read_bytes() == b"hello\n" * 1000
    assert (tmp_path / "e" / "web01.vhdx").read_bytes() == (repo / "web01" / "web01.vhdx").read_bytes()
    p = subprocess.run([sys.executable, "-m", "rpfs", "restore", str(repo / "repo"), "/web01", str(tmp_path / "x"),
                        "--limit-rate", "fast"], capture_output=True, text=True, cwd=ROOT, env=env)
    assert p.returncode == 2 and "not a rate: 'fast'" in p.stderr
