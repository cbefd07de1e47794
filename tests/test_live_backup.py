"""A disk written by another process while ``rpfs run`` backs it up is never stored torn:
what is stored equals a state the writer's own log says the file passed through, or the VM
fails in one line. ``--frozen`` stores a checkpoint chain up to its newest parent and leaves
the running AVHDX out. The writer (tests/helpers/disk_writer.py) follows the backup's reads
through /proc, not a clock, and the backup's reads are slowed with ``--limit-rate`` so that
its three 8 MiB batches are apart."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import uuid
from pathlib import Path

from tests.helpers.disk_writer import MiB, block
from tests.helpers.store_fixtures import PY, ROOT, rpfs

SIZE = 24 * MiB
OLD = 1_600_000_000


def _config(tmp: Path, frozen: bool = False) -> Path:
    rpfs("init", str(tmp / "repo"))
    conf = tmp / "rpfs.toml"
    conf.write_text(f'[repositories.r]\npath = "{tmp / "repo"}"\n\n[groups.live]\nrepository = "r"\n'
                    f'vms = ["{tmp}/vms/*"]\nschedule = "daily"\nfrozen = {str(frozen).lower()}\n')
    return conf


def _run_with_writer(conf: Path, mode: str, target: Path, log: Path, *extra: str):
    env = {k: v for k, v in os.environ.items() if k != "RPFS_DEBUG"}
    backup = subprocess.Popen([PY, "-m", "rpfs", "run", "--config", str(conf), "--json", *extra],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
    writer = subprocess.Popen([PY, "-m", "tests.helpers.disk_writer", mode, str(backup.pid),
                               str(target), str(log)], cwd=ROOT)
    out, err = backup.communicate(timeout=300)
    writer.wait(timeout=60)
    assert writer.returncode == 0
    return backup.returncode, json.loads(out) if out.strip() else None, err


def _states(initial: bytes, log: Path) -> set[str]:
    """sha256 of every state the file passed through, from the writer's log."""
    data = bytearray(initial)
    seen = {hashlib.sha256(data).hexdigest()}
    for line in log.read_text().splitlines():
        i, gen = map(int, line.split())
        data[i * MiB:(i + 1) * MiB] = block(gen, i)
        seen.add(hashlib.sha256(data).hexdigest())
    return seen


def _stored(repo: Path, vm: str, rp: str, path: str) -> bytes:
    return subprocess.run([PY, "-m", "rpfs", "cat", str(repo), f"/{vm}/{rp}/files/{path}"],
                          capture_output=True, check=True, cwd=ROOT).stdout


def _disk(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (OLD, OLD))


def test_a_disk_written_during_its_backup_is_read_again(tmp_path):
    conf = _config(tmp_path)
    disk = tmp_path / "vms" / "live01" / "live01.vhdx"
    initial = b"".join(block(0, i) for i in range(SIZE // MiB))
    _disk(disk, initial)
    log = tmp_path / "writes.log"
    rc, records, err = _run_with_writer(conf, "burst", disk, log, "--limit-rate", "8M")
    assert rc == 0, err
    vm = records[0]["vms"][0]
    assert vm["result"] == "ok"
    assert len(log.read_text().splitlines()) == SIZE // MiB       # the writer did write
    assert any("live01.vhdx changed while it was read: read" in w for w in vm["warnings"]), vm
    stored = _stored(tmp_path / "repo", "live01", vm["recovery_point"], "live01.vhdx")
    assert hashlib.sha256(stored).hexdigest() in _states(initial, log)
    assert stored == disk.read_bytes()        # the burst ended before the copy that was kept
    assert vm["bytes_read"] > SIZE            # read more than once


def test_a_disk_written_all_the_time_fails_its_vm_only(tmp_path):
    conf = _config(tmp_path)
    disk = tmp_path / "vms" / "live01" / "live01.vhdx"
    _disk(disk, b"".join(block(0, i) for i in range(SIZE // MiB)))
    _disk(tmp_path / "vms" / "quiet01" / "quiet01.vhdx", block(7, 0) * 2)
    log = tmp_path / "writes.log"
    rc, records, err = _run_with_writer(conf, "continuous", disk, log, "--limit-rate", "16M")
    assert rc == 1
    by = {v["vm"]: v for v in records[0]["vms"]}
    assert by["quiet01"]["result"] == "ok"
    assert by["live01"]["result"] == "failed" and by["live01"]["recovery_point"] is None
    assert by["live01"]["error"].startswith("live01: live01.vhdx changed while it was read, 4 reads")
    assert "--frozen" in by["live01"]["error"] and "\n" not in by["live01"]["error"]
    listed = json.loads(rpfs("list", str(tmp_path / "repo"), "--json").stdout)
    assert [v["vm"] for v in listed] == ["quiet01"]   # nothing of live01 was stored


def test_frozen_stores_the_checkpoint_and_leaves_the_running_disk_out(tmp_path):
    from formats.vhdx.writer import write_vhdx
    from streams.stream import BytesStream
    conf = _config(tmp_path, frozen=True)
    folder = tmp_path / "vms" / "live02"
    folder.mkdir(parents=True)
    base_data = b"".join(block(3, i) for i in range(8))
    child_data = bytearray(base_data)
    child_data[MiB:2 * MiB] = block(4, 1)
    base = folder / "live02.vhdx"
    child = folder / f"live02_{str(uuid.uuid4()).upper()}.avhdx"
    write_vhdx(BytesStream(base_data), str(base), block_size=MiB)
    write_vhdx(BytesStream(bytes(child_data)), str(child), block_size=MiB, parent=str(base),
               parent_path=str(base))
    os.chmod(base, 0o444)
    for p in (base, child):
        os.utime(p, (OLD, OLD))
    (folder / "Virtual Machines").mkdir()
    _disk(folder / "Virtual Machines" / "live02.vmcx", b"config" * 100)
    base_bytes = base.read_bytes()
    log = tmp_path / "writes.log"
    rc, records, err = _run_with_writer(conf, "timer", child, log)
    assert rc == 0, err
    vm = records[0]["vms"][0]
    assert vm["result"] == "ok" and vm["left_out"] == [child.name]
    assert any(f"{child.name}: running disk left out (--frozen)" in w for w in vm["warnings"])
    assert log.read_text()                       # it was being written all along
    repo, rp = tmp_path / "repo", vm["recovery_point"]
    names = rpfs("ls", str(repo), f"/live02/{rp}/files").stdout.split()
    assert child.name not in names and "live02.vhdx" in names
    assert _stored(repo, "live02", rp, "live02.vhdx") == base_bytes
    disk = subprocess.run([PY, "-m", "rpfs", "cat", str(repo), f"/live02/{rp}/disks/live02.raw"],
                          capture_output=True, check=True, cwd=ROOT).stdout
    assert disk == base_data                      # the state the checkpoint froze

    # without --frozen the same running chain cannot be copied: the VM fails in one line
    rc, records, err = _run_with_writer(conf, "timer", child, log, "--time", "2030-01-01T00:00:00Z")
    assert rc == 0                                # group says frozen = true
    conf.write_text(conf.read_text().replace("frozen = true", "frozen = false"))
    # (its own time: a run in the same second as the first would be refused for its name)
    rc, records, err = _run_with_writer(conf, "continuous", child, log, "--limit-rate", "16M",
                                        "--time", "2031-01-01T00:00:00Z")
    assert rc == 1 and "changed while it was read" in records[0]["vms"][0]["error"]
