"""Concurrency soak: readers through a real mount while backups and prunes with gc run on
the same repository.

Reader threads pick a random recovery point and file in the mount, open it and read random
ranges, each checked against the bytes that backup stored; a writer backs up a VM folder
whose files change between backups, and every third backup prunes to the newest three
(gc included). Required: no error (a recovery point pruned between listing and opening is
ENOENT, which is allowed; an open file must keep reading), no wrong byte, the mount's memory
bounded, and packs that gc retires while the mount is alive deleted only once it is gone.

CI runs it for RPFS_SOAK_SECONDS (default 20); ``tools/soak.py --minutes N`` runs it long.
"""

from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest

from tests.helpers.store_fixtures import ROOT, rpfs

KiB, MiB = 1 << 10, 1 << 20
FILES = {"disk0.vhdx": 3 * MiB + 4097, "disk1.vhdx": 2 * MiB, "config.vmcx": 70 * KiB}
CACHE_MB = 32
RSS_LIMIT = 400 * MiB  # the mount's resident memory: cache bound + interpreter + slack
MIN_BACKUPS, MIN_READS = 6, 100  # work done whatever the time (every third backup prunes)
MAX_BACKUPS = 30  # a slow machine runs longer, but not forever


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * KiB
    return 0


class Soak:
    def __init__(self, tmp_path, seconds: float):
        self.repo, self.src, self.mp = tmp_path / "repo", tmp_path / "src", tmp_path / "mnt"
        self.deadline = time.monotonic() + seconds
        self.truth: dict[str, dict[str, bytes]] = {}   # rp name -> file -> bytes
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self.reads = self.bytes = self.gone = self.backups = self.prunes = 0
        self.pending_seen = 0
        self.writer_done = threading.Event()
        self.rnd = random.Random(42)
        self.contents = {n: bytearray(self.rnd.randbytes(s)) for n, s in FILES.items()}

    # -- the writer ---------------------------------------------------------------------------
    def write_source(self) -> None:
        self.src.mkdir(exist_ok=True)
        for name, data in self.contents.items():
            for _ in range(3):  # a few changed 64 KiB blocks per backup
                at = self.rnd.randrange(0, len(data)) & ~(64 * KiB - 1)
                data[at:at + 64 * KiB] = self.rnd.randbytes(len(data[at:at + 64 * KiB]))
            (self.src / name).write_bytes(bytes(data))

    def writer(self) -> None:
        n = 0
        try:
            # for the time asked, and at least the work the test checks (6 backups, so a
            # prune that removes recovery points, and one whose gc retired a pack the mount
            # still holds): a slow machine runs longer rather than less
            while ((time.monotonic() < self.deadline or self.backups < MIN_BACKUPS
                    or not self.pending_seen) and self.backups < MAX_BACKUPS):
                self.write_source()
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_700_000_000 + n * 3600))
                rpfs("backup", str(self.repo), str(self.src), "--vm", "vm", "--time", when)
                name = when.replace(":", "")
                with self.lock:
                    self.truth[name] = {k: bytes(v) for k, v in self.contents.items()}
                self.backups += 1
                n += 1
                if n % 3 == 0:
                    out = json.loads(rpfs("prune", str(self.repo), "--keep-last", "3",
                                          "--json").stdout)
                    self.prunes += 1
                    self.pending_seen += out["gc"]["packs_pending"]
        except BaseException as e:  # reported by the test
            self.errors.append(f"writer: {e}")
        finally:
            self.writer_done.set()

    # -- the readers --------------------------------------------------------------------------
    def reader(self, seed: int) -> None:
        rnd = random.Random(seed)
        try:
            after = 0   # turns once the writer is done (bounded: a broken mount ends too)
            while (time.monotonic() < self.deadline or not self.writer_done.is_set()
                   or self.reads < MIN_READS) and after < 10_000 and not self.errors:
                after += self.writer_done.is_set()
                try:
                    rps = [n for n in os.listdir(self.mp / "vm") if n != "latest"]
                except FileNotFoundError:
                    continue  # no recovery point yet
                if not rps:
                    continue
                rp = rnd.choice(rps)
                name = rnd.choice(sorted(FILES))
                with self.lock:
                    want = self.truth.get(rp, {}).get(name)
                if want is None:
                    continue  # the backup's CLI returned just after the mount saw it
                try:
                    fd = os.open(self.mp / "vm" / rp / "files" / name, os.O_RDONLY)
                except FileNotFoundError:
                    self.gone += 1  # pruned between listing and opening: fine
                    continue
                try:
                    for _ in range(rnd.randrange(5, 40)):
                        off = rnd.randrange(0, len(want))
                        n = rnd.choice([1, 4096, 65536, 200_000, MiB])
                        got = os.pread(fd, n, off)
                        self.reads += 1
                        self.bytes += len(got)
                        if got != want[off:off + n]:
                            self.errors.append(f"wrong bytes: {rp}/{name} at {off}+{n}")
                            return
                finally:
                    os.close(fd)
        except OSError as e:
            if e.errno != errno.ENOENT:
                self.errors.append(f"reader {seed}: {e}")
        except BaseException as e:
            self.errors.append(f"reader {seed}: {type(e).__name__}: {e}")


def run_soak(tmp_path, seconds: float) -> Soak:
    s = Soak(tmp_path, seconds)
    rpfs("init", str(s.repo), "--chunk-size", "64K", "--pack-size", "1M")
    s.write_source()
    rpfs("backup", str(s.repo), str(s.src), "--vm", "vm", "--time", "2023-11-01T00:00:00Z")
    s.truth["2023-11-01T000000Z"] = {k: bytes(v) for k, v in s.contents.items()}
    s.mp.mkdir()
    env = dict(os.environ, RPFS_CACHE_MB=str(CACHE_MB))
    with subprocess.Popen([sys.executable, "-m", "rpfs", "mount", "--foreground", str(s.repo),
                           str(s.mp)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True) as mount:
        try:
            for _ in range(200):
                if os.path.ismount(s.mp):
                    break
                assert mount.poll() is None, mount.stderr.read()
                time.sleep(0.05)
            threads = [threading.Thread(target=s.reader, args=(i,)) for i in range(4)]
            threads.append(threading.Thread(target=s.writer))
            for t in threads:
                t.start()
            peak = 0
            while any(t.is_alive() for t in threads):
                peak = max(peak, _rss(mount.pid))
                time.sleep(0.2)
            for t in threads:
                t.join()
            s.peak_rss = peak
        finally:
            subprocess.run(["fusermount3", "-u", str(s.mp)], check=False)
            mount.wait(timeout=60)
        s.mount_log = mount.stderr.read()
    # the mount is gone: a prune now deletes every pack gc retired while it was alive
    s.final_gc = json.loads(rpfs("prune", str(s.repo), "--keep-last", "3", "--json").stdout)["gc"]
    s.verified = json.loads(rpfs("verify", str(s.repo), "--read-data", "--json").stdout)
    return s


@pytest.mark.soak
@pytest.mark.fuse
@pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")
def test_readers_through_a_mount_during_backups_and_prunes(tmp_path):
    seconds = float(os.environ.get("RPFS_SOAK_SECONDS", "20"))
    s = run_soak(tmp_path, seconds)
    summary = (f"{seconds:.0f}s: {s.backups} backups, {s.prunes} prunes, {s.reads} reads "
               f"({s.bytes >> 20} MiB), {s.gone} pruned before opening, peak RSS "
               f"{s.peak_rss >> 20} MiB, packs pending seen {s.pending_seen}, final gc "
               f"{s.final_gc}")
    print(summary)
    assert not s.errors, (s.errors[:5], summary)
    assert "Traceback" not in s.mount_log and "ERROR" not in s.mount_log, s.mount_log[-3000:]
    assert s.backups >= MIN_BACKUPS and s.prunes >= 2 and s.reads >= MIN_READS, summary
    assert s.peak_rss < RSS_LIMIT, summary
    # packs retired while the mount lived were kept for it (pending: its open files kept
    # reading right), and deleted once it was gone
    assert s.pending_seen > 0 and s.final_gc["packs_pending"] == 0, summary
    assert s.verified["ok"], s.verified
