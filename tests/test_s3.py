"""Repositories on S3 (a real Ceph RADOS Gateway started by the ``s3_gateway`` fixture),
encryption at rest and the catalog rebuilt from the repository's own objects (local and s3).

Every check reads the bytes back through ``rpfs`` and compares them with the source files.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import blake3
import pytest

from rpfs.cli.options import store_options
from rpfs.store import Repository, open_repository

MiB = 1 << 20
fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no /dev/fuse")


def rpfs(*args, check=True, env=None):
    """``env``: variables to add to ours (None as a value removes one)."""
    if env is not None:
        env = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    r = subprocess.run([sys.executable, "-m", "rpfs", *map(str, args)], capture_output=True,
                       stdin=subprocess.DEVNULL, env=env)
    if check and r.returncode:
        raise AssertionError(f"rpfs {' '.join(map(str, args))}: {r.stderr.decode()}")
    return r


def opts(**kw):
    """The options the CLI would pass, from this process's environment (the gateway's)."""
    return store_options().with_(**kw)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_vm(root, seed: int, *, size: int = 3 * MiB) -> dict[str, str]:
    """A small VM folder: random (incompressible) data, zeros, text. Returns path -> sha256."""
    rnd = random.Random(seed)
    files = {
        "Virtual Hard Disks/disk0.vhdx": rnd.randbytes(size) + bytes(MiB) + rnd.randbytes(MiB // 3),
        "Virtual Machines/vm.vmcx": b"config " * 1000 + str(seed).encode(),
        "notes.txt": b"the known plaintext of a file nobody should read in the bucket\n" * 64,
    }
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return {rel: sha(data) for rel, data in files.items()}


def store(addr, backups: list[tuple], **init) -> None:
    """Set-up in-process (the CLI is tested where it is the point): a new repository with
    ``init`` settings, then one backup per (source, time)."""
    from rpfs.backup import backup

    with Repository.init(str(addr), opts(), **init) as repo:
        for src, t in backups:
            backup(repo, [str(src)], time=t, show_progress=False)


def bucket_objects(address: str) -> dict[str, bytes]:
    """Every object under an s3:// address, read with boto3 directly (not through rpfs)."""
    import boto3

    bucket, _, prefix = address[5:].partition("/")
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            out[o["Key"]] = s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()
    return out


def dir_objects(path) -> dict[str, bytes]:
    out = {}
    for root, _, names in os.walk(path):
        for n in names:
            if not n.startswith("catalog.sqlite"):
                p = os.path.join(root, n)
                out[p] = Path(p).read_bytes()
    return out


@pytest.fixture(params=["local", "s3"])
def where(request, tmp_path):
    """A fresh repository address of each kind."""
    if request.param == "s3":
        return request.getfixturevalue("s3_gateway").address()
    return str(tmp_path / "repo")


def read_all(repo: str, vm: str, rp: str, names) -> dict[str, str]:
    """sha256 of stored files, read in-process (the CLI's cat is exercised elsewhere)."""
    with open_repository(repo, opts(), register=False) as r:
        point = r.recovery_points(vm)[-1] if rp == "latest" else r.recovery_point(vm, rp)
        out = {}
        for n in names:
            f = r.open_file(point, n)
            out[n] = sha(f.read(0, f.size))
        return out


def test_repository_commands(where, tmp_path):
    """list, restore, verify, prune through the CLI on a directory and on a bucket."""
    v1, v2 = tmp_path / "s1" / "web01", tmp_path / "s2" / "web01"
    want1, want2 = make_vm(v1, 1), make_vm(v2, 2)
    rpfs("init", where, "--chunk-size", "256K")
    rpfs("backup", where, v1, "--time", "2026-11-01T02:00:00Z")
    rpfs("backup", where, v2, "--time", "2026-11-02T02:00:00Z")
    rps = json.loads(rpfs("list", where, "web01", "--json").stdout)
    assert [r["rp"] for r in rps] == ["2026-11-01T020000Z", "2026-11-02T020000Z"]
    out = tmp_path / "out"
    rpfs("restore", where, "/web01/2026-11-01T020000Z/files/Virtual Hard Disks", out)
    assert sha((out / "Virtual Hard Disks" / "disk0.vhdx").read_bytes()) == want1["Virtual Hard Disks/disk0.vhdx"]
    assert read_all(where, "web01", "latest", want2) == want2
    assert json.loads(rpfs("verify", where, "--read-data", "--json").stdout)["ok"]
    rpfs("prune", where, "--keep-last", "1")
    rps = json.loads(rpfs("list", where, "web01", "--json").stdout)
    assert [r["rp"] for r in rps] == ["2026-11-02T020000Z"]
    assert json.loads(rpfs("verify", where, "--read-data", "--json").stdout)["ok"]
    assert read_all(where, "web01", "latest", want2) == want2


def test_catalog_deleted_then_repaired(where, tmp_path):
    """The catalog lost: ``rpfs repair`` rebuilds it from the objects and every file reads
    back identical; a fresh machine (new cache) attaches to the bucket the same way."""
    truth = {}
    backups = []
    for i in range(3):
        src = tmp_path / f"s{i}" / "web01"
        truth[f"2026-11-0{i + 1}T020000Z"] = make_vm(src, 10 + i)
        backups.append((src, f"2026-11-0{i + 1}T02:00:00Z"))
    store(where, backups, chunk_size=64 << 10, pack_size=256 << 10)
    with open_repository(where, opts(), register=False) as repo:
        cat = repo.catalog_path
    for s in ("", "-wal", "-shm"):
        if os.path.exists(cat + s):
            os.unlink(cat + s)
    if where.startswith("s3://"):
        # a fresh machine: no cache at all; opening it rebuilds the catalog by itself
        fresh = tmp_path / "fresh-cache"
        assert json.loads(rpfs("list", where, "web01", "--json", "--cache-dir", fresh).stdout)
    else:
        assert rpfs("list", where, check=False).returncode != 0
    r = rpfs("repair", where, "--json")
    rep = json.loads(r.stdout)
    assert rep["lost"] == [] and rep["imported"] == 3 and rep["files"] == 9
    assert rep["indexes_read"] == 3 and rep["packs_read"] == 0    # one index object per backup
    for rp, want in truth.items():
        assert read_all(where, "web01", rp, want) == want
    assert json.loads(rpfs("verify", where, "--read-data", "--json").stdout)["ok"]
    # and backups go on, reusing what is stored
    src = tmp_path / "s9" / "web01"
    make_vm(src, 12)
    res = json.loads(rpfs("backup", where, src, "--time", "2026-11-04T02:00:00Z", "--json").stdout)
    assert res["new_chunks"] == 0


def test_repair_names_what_it_cannot_recover_and_a_backup_heals_it(tmp_path):
    repo = tmp_path / "repo"
    src = tmp_path / "web01"
    want = make_vm(src, 5)
    store(repo, [(src, "2026-11-01T02:00:00Z")], chunk_size=64 << 10, pack_size=64 << 10)
    packs = sorted((repo / "packs").glob("*/*.pack"))
    # pack names are random: the pack lost is chosen by what it holds, one with only chunks
    # of disk0.vhdx (the first pack also holds notes.txt's chunk, which must survive)
    only_disk = packs_holding_only(repo, "Virtual Hard Disks/disk0.vhdx")
    lost = sorted(p for p in packs if p.stem in only_disk)[len(only_disk) // 2]
    data = lost.read_bytes()
    os.unlink(lost)
    os.unlink(repo / "catalog.sqlite")
    for p in (repo / "index").iterdir():      # index objects only speed a rebuild up
        p.unlink()
    r = rpfs("repair", repo, check=False)
    out = r.stdout.decode()
    assert r.returncode == 1
    assert f"{len(packs) - 1} pack tails read" in out
    assert "could not recover: web01/2026-11-01T020000Z/files/Virtual Hard Disks/disk0.vhdx: 1 of its" in out
    # what could be recovered is there, the rest fails to read where it is lost, and
    # nothing was deleted
    assert rpfs("cat", repo, "/web01/latest/files/notes.txt").stdout.startswith(b"the known plaintext")
    r = rpfs("cat", repo, "/web01/latest/files/Virtual Hard Disks/disk0.vhdx", check=False)
    assert r.returncode == 1 and len(r.stderr.decode().splitlines()) == 1
    assert len(list((repo / "packs").glob("*/*.pack"))) == len(packs) - 1
    r = rpfs("verify", repo, check=False)
    assert r.returncode == 1 and "damaged: web01/2026-11-01T020000Z/files/Virtual Hard Disks/disk0.vhdx" in r.stdout.decode()
    # the same data backed up again: the lost chunk is stored anew and the old recovery point heals
    rpfs("backup", repo, src, "--time", "2026-11-02T02:00:00Z")
    assert read_all(str(repo), "web01", "2026-11-01T020000Z", want) == want
    assert json.loads(rpfs("verify", repo, "--read-data", "--json").stdout)["ok"]
    assert data  # the pack we removed held real data


def packs_holding_only(repo, path: str) -> set[str]:
    """Names of the packs of a local repository whose chunks only ``path`` uses."""
    import sqlite3
    from rpfs.store.catalog import decode_map
    db = sqlite3.connect(repo / "catalog.sqlite")
    try:
        users: dict[str, set[str]] = {}
        for p, size, blob, cs in db.execute("SELECT f.path, f.size, f.chunk_map, r.chunk_size"
                                            " FROM files f JOIN recovery_points r ON r.id = f.rp_id"):
            ids = [i for i in decode_map(blob, (size + cs - 1) // cs) if i]
            for k in range(0, len(ids), 500):
                part = ids[k:k + 500]
                for (pack,) in db.execute("SELECT p.name FROM chunks c JOIN packs p ON p.id ="
                                          f" c.pack_id WHERE c.id IN ({','.join('?' * len(part))})",
                                          part):
                    users.setdefault(pack, set()).add(p)
    finally:
        db.close()
    return {pack for pack, paths in users.items() if paths == {path}}


def test_repair_writes_objects_for_an_older_repository(tmp_path):
    """A catalog whose recovery points have no objects (written before they existed) gets
    them from ``repair``, after which the catalog can be rebuilt from them."""
    repo = tmp_path / "repo"
    src = tmp_path / "web01"
    want = make_vm(src, 6)
    store(repo, [(src, "2026-11-01T02:00:00Z")])
    for d in ("rps", "maps"):
        for p in (repo / d).iterdir():
            p.unlink()
    rep = json.loads(rpfs("repair", repo, "--json").stdout)
    assert rep["objects_written"] == 1 and rep["lost"] == []
    os.unlink(repo / "catalog.sqlite")
    assert json.loads(rpfs("repair", repo, "--json").stdout)["imported"] == 1
    assert read_all(str(repo), "web01", "latest", want) == want


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_encrypted_objects_hold_no_plaintext(kind, tmp_path, request):
    """No object of an encrypted repository contains a known file's bytes or the plain
    BLAKE3 of any of its chunks; the same data in a plain repository does (so the check
    can fail)."""
    src = tmp_path / "web01"
    make_vm(src, 7)
    disk = (src / "Virtual Hard Disks" / "disk0.vhdx").read_bytes()
    cs = 64 << 10
    chunks = [disk[i:i + cs] for i in range(0, len(disk), cs)]
    ids = {blake3.blake3(c).digest() for c in chunks if c.strip(b"\0")}
    needles = [disk[:64], disk[len(disk) // 2:len(disk) // 2 + 64], b"the known plaintext"] + sorted(ids)

    def hits(objs: dict[str, bytes]) -> int:
        return sum(1 for data in objs.values() for n in needles if n in data)

    if kind == "s3":
        gw = request.getfixturevalue("s3_gateway")
        enc, plain = gw.address("enc"), gw.address("plain")
        rpfs("init", enc, "--chunk-size", "64K")                 # encrypted by default on s3
        rpfs("init", plain, "--chunk-size", "64K", "--no-encrypt")
        read = bucket_objects
    else:
        enc, plain = str(tmp_path / "enc"), str(tmp_path / "plain")
        rpfs("init", enc, "--chunk-size", "64K", "--encrypt", env={"RPFS_PASSWORD": "pw"})
        rpfs("init", plain, "--chunk-size", "64K")
        read = dir_objects
    env = {"RPFS_PASSWORD": "pw"} if kind == "local" else None
    for repo in (enc, plain):
        rpfs("backup", repo, src, "--time", "2026-11-01T02:00:00Z", env=env)
    assert hits(read(plain)) > len(ids)          # the plain one shows data and chunk hashes
    objs = read(enc)
    assert len(objs) > 5 and hits(objs) == 0
    assert rpfs("cat", enc, "/web01/latest/files/notes.txt", env=env).stdout.startswith(b"the known")


def test_wrong_or_missing_passphrase_is_one_line(tmp_path):
    repo = tmp_path / "repo"
    rpfs("init", repo, "--encrypt", env={"RPFS_PASSWORD": "right"})
    assert "wrong passphrase" not in rpfs("list", repo, env={"RPFS_PASSWORD": "right"}).stderr.decode()
    for env in ({"RPFS_PASSWORD": "wrong"}, {"RPFS_PASSWORD": None, "RPFS_PASSWORD_FILE": str(tmp_path / "nope")}):
        r = rpfs("list", repo, check=False, env=env)
        err = r.stderr.decode()
        assert r.returncode != 0 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "wrong passphrase" in rpfs("list", repo, check=False, env={"RPFS_PASSWORD": "wrong"}).stderr.decode()
    pwfile = tmp_path / "pw"
    pwfile.write_text("right\n")
    r = rpfs("list", repo, check=False, env={"RPFS_PASSWORD": None, "RPFS_PASSWORD_FILE": None})
    assert r.returncode != 0 and len(r.stderr.decode().splitlines()) == 1   # no terminal to ask on
    assert "RPFS_PASSWORD" in r.stderr.decode()
    assert rpfs("list", repo, env={"RPFS_PASSWORD": None, "RPFS_PASSWORD_FILE": str(pwfile)}).returncode == 0


def test_gateway_killed_mid_backup(s3_gateway, tmp_path):
    """The gateway dies while packs are uploading: the backup fails with one line, nothing
    committed is lost, and the next backup completes reusing what was uploaded."""
    repo = s3_gateway.address("kill")
    first = tmp_path / "a" / "web01"
    want1 = make_vm(first, 20)
    store(repo, [(first, "2026-11-01T02:00:00Z")], chunk_size=64 << 10, pack_size=256 << 10)
    src = tmp_path / "b" / "web01"
    want2 = make_vm(src, 21, size=16 * MiB)
    p = subprocess.Popen([sys.executable, "-m", "rpfs", "backup", repo, str(src), "--time",
                          "2026-11-02T02:00:00Z", "--json"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env={**os.environ, "RPFS_S3_ATTEMPTS": "2"})
    before = len([k for k in bucket_keys(repo) if "/packs/" in k])
    while len([k for k in bucket_keys(repo) if "/packs/" in k]) < before + 10:
        assert p.poll() is None, "the backup ended before the gateway could be killed"
        time.sleep(0.02)
    s3_gateway.kill()
    try:
        out, err = p.communicate(timeout=120)
    finally:
        s3_gateway.start()
    assert p.returncode != 0 and len(err.decode().splitlines()) == 1, err.decode()
    rps = json.loads(rpfs("list", repo, "web01", "--json").stdout)
    assert [r["rp"] for r in rps] == ["2026-11-01T020000Z"]
    assert read_all(repo, "web01", "2026-11-01T020000Z", want1) == want1
    res = json.loads(rpfs("backup", repo, src, "--time", "2026-11-02T02:00:00Z", "--json").stdout)
    assert res["reused_chunks"] >= 30          # the packs uploaded before the gateway died
    assert read_all(repo, "web01", "2026-11-02T020000Z", want2) == want2
    assert json.loads(rpfs("verify", repo, "--read-data", "--json").stdout)["ok"]


def bucket_keys(address: str) -> list[str]:
    import boto3

    bucket, _, prefix = address[5:].partition("/")
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    return [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
            for o in page.get("Contents", [])]


class CuttingProxy:
    """A TCP proxy in front of the gateway that cuts the connection in the middle of the
    body of every ``cut_every``-th response carrying pack data (a network fault a server
    cannot be asked for)."""

    def __init__(self, target: str, cut_every: int):
        host, port = target.removeprefix("http://").split(":")
        self.target = (host, int(port))
        self.cut_every, self.responses, self.cuts = cut_every, 0, 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            s = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(c, s, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(s, c, True), daemon=True).start()

    def _pipe(self, a, b, from_server):
        try:
            while True:
                data = a.recv(1 << 16)
                if not data:
                    break
                if from_server and data.startswith(b"HTTP/1.1 206"):
                    with self.lock:
                        self.responses += 1
                        cut = self.responses % self.cut_every == 0
                        self.cuts += cut
                    if cut:
                        b.sendall(data[:len(data) // 2])
                        break
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.sock.close()


def test_network_errors_mid_restore_are_retried(s3_gateway, tmp_path):
    repo = s3_gateway.address("cut")
    src = tmp_path / "web01"
    want = make_vm(src, 30, size=12 * MiB)
    store(repo, [(src, "2026-11-01T02:00:00Z")], chunk_size=64 << 10)
    proxy = CuttingProxy(s3_gateway.endpoint, cut_every=3)
    try:
        out = tmp_path / "out"
        rpfs("restore", repo, "/web01/latest/files", out, "--cache-dir", tmp_path / "cold",
             "--s3-endpoint", proxy.endpoint)
    finally:
        proxy.close()
    assert proxy.cuts >= 1
    assert {rel: sha((out / "files" / rel).read_bytes()) for rel in want} == want


class _Empty:
    def stream(self, **kw):
        return iter([b""])


def test_server_errors_are_retried(s3_gateway, tmp_path):
    """A 503 on the third GET (botocore's event hook answers in place of the server)."""
    import botocore.awsrequest

    repo = s3_gateway.address("503")
    src = tmp_path / "web01"
    want = make_vm(src, 31, size=12 * MiB)
    store(repo, [(src, "2026-11-01T02:00:00Z")], chunk_size=64 << 10)
    with open_repository(repo, opts(cache_dir=str(tmp_path / "cold"))) as r:
        calls = []

        def fault(request, **kw):
            calls.append(request.url)
            if len(calls) == 3:
                return botocore.awsrequest.AWSResponse(request.url, 503, {}, _Empty())
            return None
        r.backend.s3.meta.events.register("before-send.s3.GetObject", fault)
        rp = r.recovery_point("web01", "2026-11-01T020000Z")
        for rel, digest in want.items():
            f = r.open_file(rp, rel)
            assert sha(f.read(0, f.size)) == digest
    assert len(calls) > 3


def test_deleted_and_corrupted_objects_named_by_verify(s3_gateway, tmp_path):
    import boto3

    repo = s3_gateway.address("damage")
    backups = []
    for i, t in enumerate(("2026-11-01T02:00:00Z", "2026-11-02T02:00:00Z")):
        backups.append((tmp_path / f"s{i}" / "web01", t))
        make_vm(backups[-1][0], 40 + i)
    store(repo, backups, chunk_size=64 << 10, pack_size=128 << 10)
    with open_repository(repo, opts()) as r:
        packs = [n for (n,) in r.query("SELECT name FROM packs ORDER BY id")]
    bucket, _, prefix = repo[5:].partition("/")
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    s3.delete_object(Bucket=bucket, Key=f"{prefix}/packs/{packs[0]}")
    key = f"{prefix}/packs/{packs[-1]}"
    data = bytearray(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    data[100] ^= 0xFF
    s3.put_object(Bucket=bucket, Key=key, Body=bytes(data))
    with open_repository(repo, opts()) as r:
        path, mo = r.query("SELECT path, map_object FROM files WHERE path = 'notes.txt' LIMIT 1")[0]
    s3.delete_object(Bucket=bucket, Key=f"{prefix}/maps/{mo}")
    r = rpfs("verify", repo, "--read-data", check=False)
    out = r.stdout.decode()
    assert r.returncode == 1
    assert f"pack {packs[0]} is missing" in out
    assert f"files/notes.txt: its chunk map object maps/{mo} is missing" in out
    damaged = [line for line in out.splitlines() if line.startswith("damaged: web01/")]
    assert any("2026-11-01T020000Z" in line for line in damaged)
    assert any("fails authentication" in line for line in damaged)


@fuse
def test_mount_reads_from_the_bucket_and_then_from_the_cache(s3_gateway, tmp_path):
    repo = s3_gateway.address("mount")
    src = tmp_path / "web01"
    want = make_vm(src, 50, size=8 * MiB)
    store(repo, [(src, "2026-11-01T02:00:00Z")])
    cache = tmp_path / "cache"
    mp = tmp_path / "mnt"
    mp.mkdir()
    rpfs("mount", repo, mp, "--cache-dir", cache)
    try:
        f = mp / "web01" / "latest" / "files" / "Virtual Hard Disks" / "disk0.vhdx"
        assert sha(f.read_bytes()) == want["Virtual Hard Disks/disk0.vhdx"]
    finally:
        rpfs("umount", mp)
    blocks = os.listdir(cache / "blocks")
    assert blocks and sum(os.path.getsize(cache / "blocks" / b) for b in blocks) >= 8 * MiB


@fuse
def test_passphrase_asked_on_the_terminal_reaches_a_background_mount(tmp_path):
    """Asked once on the terminal; the detached mount gets it through a pipe: it is in
    neither the mount process's argv nor its environment."""
    import pty

    repo, mp = tmp_path / "repo", tmp_path / "mnt"
    mp.mkdir()
    src = tmp_path / "web01"
    want = make_vm(src, 60)
    secret = "terminal passphrase 60"
    rpfs("init", repo, "--encrypt", env={"RPFS_PASSWORD": secret})
    rpfs("backup", repo, src, env={"RPFS_PASSWORD": secret})
    env = {k: v for k, v in os.environ.items() if not k.startswith("RPFS_PASSWORD")}
    pid, fd = pty.fork()
    if pid == 0:
        os.execve(sys.executable, [sys.executable, "-m", "rpfs", "mount", str(repo), str(mp)], env)
    try:
        buf = b""
        while b"passphrase for" not in buf:
            buf += os.read(fd, 1024)
        os.write(fd, secret.encode() + b"\n")
        assert os.waitpid(pid, 0)[1] == 0
        f = mp / "web01" / "latest" / "files" / "notes.txt"
        assert sha(f.read_bytes()) == want["notes.txt"]
        for p in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{p}/cmdline").read_bytes()
                if b"rpfs\0mount" in cmd and str(mp).encode() in cmd:  # the forked server
                    assert secret.encode() not in cmd
                    assert secret.encode() not in Path(f"/proc/{p}/environ").read_bytes()
                    break
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
        else:
            raise AssertionError("no mount process found")
    finally:
        os.close(fd)
        rpfs("umount", mp, check=False)


def test_block_cache_stays_within_its_bound(tmp_path):
    from rpfs.store.diskcache import DiskCache

    c = DiskCache(str(tmp_path / "blocks"), 10 * 1000)
    for i in range(25):
        c.put(f"k{i}", bytes([i]) * 1000)
        if i == 3:
            assert c.get("k0") is not None           # used: now the newest of the four
    assert c.bytes <= 10 * 1000 and len(os.listdir(tmp_path / "blocks")) == 10
    assert c.get("k1") is None and c.get("k24", 10, 5) == bytes([24]) * 5
    again = DiskCache(str(tmp_path / "blocks"), 5 * 1000)    # a new process, a smaller bound
    assert again.bytes == 5 * 1000 and len(os.listdir(tmp_path / "blocks")) == 5


def test_one_writer_across_machines(s3_gateway, tmp_path):
    """A writer on another machine holds the lock object: a backup here is refused in one
    line; one left by a dead writer of this host is cleared; none is left behind."""
    import socket

    import boto3

    repo = s3_gateway.address("lock")
    src = tmp_path / "web01"
    make_vm(src, 70, size=MiB)
    rpfs("init", repo)
    bucket, _, prefix = repo[5:].partition("/")
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    other = json.dumps({"host": "hyperv-02", "pid": 4242, "what": "backup"}).encode()
    s3.put_object(Bucket=bucket, Key=f"{prefix}/locks/00000000000000aa", Body=other)
    r = rpfs("backup", repo, src, check=False)
    assert r.returncode == 75 and r.stderr.decode().splitlines() == [
        f"rpfs: repository {repo} is busy (backup pid 4242 on hyperv-02)"]
    s3.delete_object(Bucket=bucket, Key=f"{prefix}/locks/00000000000000aa")
    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = json.dumps({"host": socket.gethostname(), "pid": dead.pid, "what": "backup"}).encode()
    s3.put_object(Bucket=bucket, Key=f"{prefix}/locks/00000000000000bb", Body=mine)
    rpfs("backup", repo, src)
    assert [k for k in bucket_keys(repo) if "/locks/" in k] == []


def test_a_gc_on_another_machine_is_followed(s3_gateway, tmp_path):
    """Machine B prunes and its gc repacks (moves the chunks that live on into a new pack
    and deletes the old one). Machine A, whose catalog cache still points into the deleted
    pack, reads the surviving recovery point right: a file it had open before the gc (its
    chunk locations resolved then) and a fresh command; verify from A finds nothing wrong."""
    repo = s3_gateway.address("follow")
    a, b = {"RPFS_CACHE_DIR": str(tmp_path / "a")}, {"RPFS_CACHE_DIR": str(tmp_path / "b")}
    rnd = random.Random(8)
    shared = rnd.randbytes(2 * MiB)   # in both recovery points: copied by the repack
    rpfs("init", repo, env=b)
    want = {}
    for day in (1, 2):
        src = tmp_path / f"day{day}"
        src.mkdir()
        want[day] = rnd.randbytes(6 * MiB) + shared
        (src / "disk.vhdx").write_bytes(want[day])
        rpfs("backup", repo, src, "--vm", "vm", "--time", f"2026-01-0{day}T00:00:00Z", env=b)
    with open_repository(repo, opts(cache_dir=str(tmp_path / "a"))) as r:
        rp2 = r.recovery_point("vm", "2026-01-02T000000Z")
        f = r.open_file(rp2, "disk.vhdx")
        packs_before = {loc.pack for loc in f.locs.values()}
        out = rpfs("prune", repo, "--keep-last", "1", env=b).stdout.decode()
        assert "1 packs repacked, 1 deleted" in out, out
        assert not packs_before <= {n for n, _ in r.backend.list()}   # A's pack is gone
        assert f.read(0, f.size) == want[2]
    r = rpfs("cat", repo, "/vm/latest/files/disk.vhdx", env=a)
    assert r.stdout == want[2]
    assert "dropped from the local catalog" in r.stderr.decode()    # day 1, pruned by B
    v = rpfs("verify", repo, "--read-data", "--json", env=a)
    assert json.loads(v.stdout)["ok"] is True


def test_a_recovery_point_read_on_another_machine_is_kept_by_prune(s3_gateway, tmp_path):
    """A reader on machine A (its own cache, so not in B's readers/ directory) publishes the
    recovery points it has files of open; a prune on machine B keeps those, says why, and
    A reads on. Once A has closed, the next prune removes it; no reader object is left."""
    repo = s3_gateway.address("holds")
    b = {"RPFS_CACHE_DIR": str(tmp_path / "b")}
    rnd = random.Random(9)
    rpfs("init", repo, env=b)
    want = {}
    for day in (1, 2):
        src = tmp_path / f"day{day}"
        src.mkdir()
        want[day] = rnd.randbytes(3 * MiB)
        (src / "disk.vhdx").write_bytes(want[day])
        rpfs("backup", repo, src, "--vm", "vm", "--time", f"2026-01-0{day}T00:00:00Z", env=b)
    day1 = "vm/2026-01-01T000000Z"
    with open_repository(repo, opts(cache_dir=str(tmp_path / "a"))) as r:
        f = r.open_file(r.recovery_point("vm", "2026-01-01T000000Z"), "disk.vhdx")
        readers = {k: v for k, v in bucket_objects(repo).items() if "/readers/" in k}
        assert [json.loads(v)["holds"] for v in readers.values()] == [[day1]]
        out = rpfs("prune", repo, "--keep-last", "1", env=b).stdout.decode()
        line = next(x for x in out.splitlines() if day1 in x)
        assert line.startswith("keep") and f"open by a reader (pid {os.getpid()} on" in line, out
        assert f.read(0, f.size) == want[1]
    assert [k for k in bucket_keys(repo) if "/readers/" in k] == []
    out = rpfs("prune", repo, "--keep-last", "1", env=b).stdout.decode()
    assert next(x for x in out.splitlines() if day1 in x).startswith("remove"), out


def test_a_small_read_of_a_framed_chunk_fetches_its_frames_not_the_block(s3_gateway, tmp_path):
    """A cold 4 KiB read in the bucket: one ranged GET for the frame table and one for the
    64 KiB frame (kept in the block cache under their own keys), never the 4 MiB block."""
    repo = s3_gateway.address("frames")
    src = tmp_path / "web01"
    make_vm(src, 51, size=8 * MiB)
    store(repo, [(src, "2026-11-01T02:00:00Z")])
    data = (src / "Virtual Hard Disks" / "disk0.vhdx").read_bytes()
    cache = tmp_path / "cache"
    with open_repository(repo, opts(cache_dir=str(cache))) as r:
        f = r.open_file(r.recovery_points("web01")[-1], "Virtual Hard Disks/disk0.vhdx")
        off = 5 * MiB + 3 * 65536 + 100
        assert f.read(off, 4096) == data[off:off + 4096]
        assert (r.frames_decoded, r.loader.loaded) == (1, 0)
    kept = {p.name: p.stat().st_size for p in (cache / "blocks").iterdir()}
    assert kept and all("@" in k for k in kept), kept
    assert sum(kept.values()) < 80 * 1024


def copy_prefix(source: str, dest: str) -> None:
    """Every object under one s3:// address copied to another, in the bucket (the state of
    a repository, to run one command on it many times)."""
    import boto3

    bucket, _, src = source[5:].partition("/")
    dst = dest[5:].partition("/")[2]
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    for key in bucket_keys(source):
        s3.copy_object(Bucket=bucket, Key=dst + key[len(src):], CopySource={"Bucket": bucket, "Key": key})


def test_prune_killed_at_every_step_on_s3(s3_gateway, tmp_path):
    """An encrypted s3:// repository: machine B's prune (forgets two of four recovery points,
    then gc) is SIGKILLed before each PUT and DELETE it sends in turn. Right after, machine A
    (a fresh cache) and machine B (the killed prune's cache) both see all four recovery
    points or the two kept, all four exactly when the kill came before the forget intent's
    PUT, each reads its exact bytes, and verify from A is ok; the next prune on B finishes:
    verify ok with no notes, the bucket holds the objects of the recovery points left.
    (Also killed at B's catalog commits once it has decided: its own cache lags the bucket.)"""
    from rpfs.store.maintenance.prune import Policy, prune
    from rpfs.store.maintenance.verify import verify
    import rpfs.store.objects as objects

    pristine = s3_gateway.address("forget")
    rnd = random.Random(12)
    data = bytearray(rnd.randbytes(MiB))
    truth, srcs = {}, []
    for day in range(1, 5):
        for _ in range(4):
            k = rnd.randrange(16) << 16
            data[k:k + (64 << 10)] = rnd.randbytes(64 << 10)
        src = tmp_path / f"day{day}"
        src.mkdir()
        (src / "disk.raw").write_bytes(data)
        name = f"2026-01-0{day}T000000Z"
        truth[name] = sha(data)
        srcs.append((src, name))
    with Repository.init(pristine, opts(cache_dir=str(tmp_path / "init")), chunk_size=64 << 10,
                         pack_size=256 << 10, repack_threshold=0.7) as repo:
        from rpfs.backup import backup
        for src, name in srcs:
            backup(repo, [str(src)], vm="vm", time=name, show_progress=False)
    every, keep = sorted(truth), sorted(truth)[-2:]

    def killed_at(n):
        addr = s3_gateway.address("killed")
        copy_prefix(pristine, addr)
        log = tmp_path / f"steps{n}"
        env = {**os.environ, "RPFS_CACHE_DIR": str(tmp_path / f"b{n}")}
        r = subprocess.run([sys.executable, "-m", "tests.helpers.killpoints", str(log), str(n), "prune",
                            addr, "--keep-last", "2"], capture_output=True, text=True, env=env,
                           cwd=str(Path(__file__).resolve().parent.parent))
        return addr, r, log.read_text().splitlines()

    def check(r, expect):
        assert [rp.name for rp in r.recovery_points("vm")] == expect
        for rp in r.recovery_points("vm"):
            f = r.open_file(rp, "disk.raw")
            assert sha(f.read(0, f.size)) == truth[rp.name], rp.name

    _, done, steps = killed_at(0)
    assert done.returncode == 0, done.stderr
    # every request that changes the repository, and B's catalog commits once it has decided
    decided = [i for i, s in enumerate(steps, 1) if s.startswith(f"{i} put forget/")]
    kills = [i for i, s in enumerate(steps, 1) if s.split()[1] in ("put", "delete")
             and s.split()[2].split("/")[0] not in ("locks", "readers")
             or s.split()[1] == "commit" and decided and i > decided[0]]
    assert any(" packs/" in steps[i - 1] for i in kills), steps
    for n in kills:
        addr, p, _ = killed_at(n)
        assert p.returncode == -9, (steps[n - 1], p.stderr)
        expect = keep if decided and n > decided[0] else every
        with open_repository(addr, opts(cache_dir=str(tmp_path / f"a{n}"))) as r:
            check(r, expect)
            v = verify(r, read_data=True, show_progress=False)
            assert v.ok, (steps[n - 1], v.problems, v.damage)
        with open_repository(addr, opts(cache_dir=str(tmp_path / f"b{n}"))) as r:
            check(r, expect)
            prune(r, Policy())
            check(r, expect)
            v = verify(r, read_data=True, show_progress=False)
            assert v.ok and not v.notes, (steps[n - 1], v.as_dict())
            left = {objects.rp_object_name(r.crypto, "vm", rp) for rp in expect}
            assert set(r.backend.list_objects(objects.RPS)) == left, steps[n - 1]
            assert not list(r.backend.list_objects("forget")), steps[n - 1]
    assert len(decided) == 1, steps
