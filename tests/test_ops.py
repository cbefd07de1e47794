"""Nightly operation through the real ``rpfs`` command: a configuration with two protection
groups (a directory repository and an s3:// one on a real Ceph RGW), a month of nights
played with ``--time``, retention, a VM made to fail and a group made overdue, the notify
command's JSON, status / Prometheus text, job records surviving a catalog rebuild, systemd
units checked by ``systemd-analyze verify``, and the OnCalendar reader against systemd's."""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.helpers.store_fixtures import rpfs

MiB = 1 << 20
OLD = 1_600_000_000


def _disk(path: Path, size: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    os.utime(path, (OLD, OLD))


def _notify_script(tmp: Path) -> tuple[Path, Path]:
    """A notify command that keeps each JSON document it is given, one file per call."""
    out = tmp / "notices"
    out.mkdir()
    script = tmp / "notify.sh"
    script.write_text(f'#!/bin/sh\ncat > "{out}/$(date +%s%N)-$$.json"\n')
    script.chmod(0o755)
    return script, out


def _notices(d: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(d.iterdir())]


@contextlib.contextmanager
def _serve(source, conf, log: Path):
    """``rpfs serve`` on a free loopback port; yields its base URL."""
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "rpfs", "serve", str(source), "--config", str(conf),
                                 "--listen", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=err)
    try:
        for _ in range(600):
            text = log.read_text(errors="replace")
            if " at http://" in text:
                break
            assert proc.poll() is None, text
            time.sleep(0.1)
        yield text.split(" at ", 1)[1].split("/ ", 1)[0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_config_check_names_file_line_and_key(tmp_path):
    conf = tmp_path / "rpfs.toml"
    conf.write_text("""
[repositories.main]
path = "relative/repo"
colour = "blue"

[groups.nightly]
repository = "nosuch"
vms = ["/hyperv/vms/*"]
schedule = "*-*-* 25:00"
keep = { daily = 14, fortnightly = 2 }
verify = "lots"
parallel = 0
""")
    p = rpfs("config", "check", "--config", str(conf), check=False)
    assert p.returncode == 1
    lines = p.stdout.splitlines()
    want = [(3, "repositories.main.path"), (4, "repositories.main.colour"),
            (7, "groups.nightly.repository"), (9, "groups.nightly.schedule"),
            (10, "groups.nightly.keep.fortnightly"), (11, "groups.nightly.verify"),
            (12, "groups.nightly.parallel")]
    assert len(lines) == len(want), p.stdout
    for line, (no, key) in zip(lines, want):
        assert line.startswith(f"{conf}:{no}: {key}: "), line
    bad = tmp_path / "bad.toml"
    bad.write_text("[groups.x]\nvms = [\n")
    p = rpfs("config", "check", "--config", str(bad), check=False)
    assert p.returncode == 1 and p.stdout.startswith(f"{bad}:") and "not TOML" in p.stdout
    # run refuses the same file in one line
    p = rpfs("run", "--config", str(conf), check=False)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("expr", ["*-*-* 02:00", "Mon..Fri 22:30", "weekly", "hourly", "monthly",
                                  "Sat,Sun *-*-* 04:05:06", "*:0/15", "*-*-01,15 03:00 UTC",
                                  "quarterly", "2027-02-29 00:00"])
def test_calendar_agrees_with_systemd(expr):
    """Our reading of OnCalendar against systemd-analyze calendar, from a fixed base time."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (tools/setup.sh installs systemd)")
    from rpfs.ops import calendar
    base = datetime(2026, 11, 30, 13, 7, 5, tzinfo=timezone.utc)
    p = subprocess.run(["systemd-analyze", "calendar", "--iterations=4",
                        f"--base-time=@{int(base.timestamp())}", expr],
                       capture_output=True, text=True, env={**os.environ, "TZ": "UTC"})
    cal = calendar.parse(expr)
    ours, t = [], base
    for _ in range(4):
        t = cal.next(t)
        if t is None:
            break
        ours.append(t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S"))
    theirs = [" ".join(line.split(": ", 1)[1].split()[1:3]) for line in p.stdout.splitlines()
              if ("Next elapse:" in line or "Iter. #" in line) and "never" not in line]
    assert p.returncode == 0 and (theirs or "never" in p.stdout), p.stdout + p.stderr
    assert ours == theirs, p.stdout
    for t in theirs:   # previous() of an occurrence is itself
        at = datetime.strptime(t, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
        assert cal.previous(at) == at and cal.previous(at - timedelta(seconds=1)) < at


def test_a_month_of_nights_two_groups(tmp_path, s3_gateway):
    vms = tmp_path / "vms"
    _disk(vms / "a" / "web01" / "web01.vhdx", 3 * MiB, 1)
    _disk(vms / "a" / "web01" / "Virtual Machines" / "web01.vmcx", 5000, 2)
    _disk(vms / "a" / "db01" / "db01.vhdx", 2 * MiB, 3)
    _disk(vms / "b" / "app01" / "app01.vhdx", 2 * MiB, 4)
    (vms / "b" / "broken").mkdir()          # no files: its backup fails every night
    script, notices = _notify_script(tmp_path)
    local = tmp_path / "repo"
    offsite = s3_gateway.address("ops")
    rpfs("init", str(local))
    rpfs("init", offsite)
    conf = tmp_path / "rpfs.toml"
    conf.write_text(f"""
[repositories.main]
path = "{local}"

[repositories.offsite]
path = "{offsite}"
cache = "{tmp_path / 'cache'}"

[groups.local]
repository = "main"
vms = ["{vms}/a/*"]
schedule = "*-*-* 02:00"
keep = {{ daily = 7, weekly = 4 }}
verify = "2M"
parallel = 2
notify = "{script}"

[groups.offsite]
repository = "offsite"
vms = ["{vms}/b/*"]
schedule = "*-*-* 03:00"
keep = {{ daily = 3, monthly = 2 }}
notify = "{script}"
""")
    rpfs("config", "check", "--config", str(conf))
    first = datetime(2026, 11, 1, tzinfo=timezone.utc)
    sizes = {}
    for night in range(31):                   # 2026-11-01 .. 2026-12-01
        day = first + timedelta(days=night)
        web = vms / "a" / "web01" / "web01.vhdx"
        data = bytearray(web.read_bytes())
        data[night * 4096:(night + 1) * 4096] = random.Random(night).randbytes(4096)
        web.write_bytes(bytes(data))
        os.utime(web, (OLD + night, OLD + night))
        sizes[night] = len(data)
        last = ["local", "--json"] if night == 30 else []    # the last night offsite does not run
        p = rpfs("run", "--config", str(conf), *last,
                 "--time", (day + timedelta(hours=2)).isoformat(), check=False)
        if night < 30:     # broken fails every night
            assert p.returncode == 1 and "failed broken: " in p.stdout, p.stdout + p.stderr
        else:
            assert p.returncode == 0, p.stdout + p.stderr
    # the last job record, as run --json printed it
    (rec,) = json.loads(p.stdout)
    assert rec["group"] == "local" and rec["result"] == "ok" and rec["start"] == "2026-12-01T02:00:00+00:00"
    assert [(v["vm"], v["result"], v["recovery_point"]) for v in rec["vms"]] == [
        ("db01", "ok", "2026-12-01T020000Z"), ("web01", "ok", "2026-12-01T020000Z")]
    web_rec = rec["vms"][1]
    assert web_rec["bytes_read"] == sizes[30] and 0 < web_rec["bytes_new"] <= MiB  # one 4 KiB change
    assert rec["vms"][0]["bytes_read"] == 0                 # db01 did not change: not read
    assert rec["prune"]["removed"] == ["db01/2026-11-24T020000Z", "web01/2026-11-24T020000Z"]
    assert rec["verify"]["ok"] and 0 < rec["verify"]["bytes_read"] <= 2 * MiB
    # retention, as the rules say in words: local keeps the last 7 nights and the newest
    # of each of the last 4 ISO weeks; offsite the last 3 nights (November is one month)
    listed = json.loads(rpfs("list", str(local), "web01", "--json").stdout)
    assert [r["rp"] for r in listed] == [
        "2026-11-15T020000Z", "2026-11-22T020000Z", *[f"2026-11-{d}T020000Z" for d in range(25, 31)],
        "2026-12-01T020000Z"]
    listed = json.loads(rpfs("list", offsite, "app01", "--json").stdout)
    assert [r["rp"] for r in listed] == [f"2026-11-{d}T020000Z" for d in (28, 29, 30)]

    # status the morning after the last night: local fine; offsite overdue, broken failed
    at = "2026-12-01T08:00:00Z"
    p = rpfs("status", "--config", str(conf), "--json", "--time", at,
             "--prometheus", str(tmp_path / "rpfs.prom"), check=False)
    assert p.returncode == 1
    st = json.loads(p.stdout)
    by = {v["vm"]: v for v in st["vms"]}
    assert set(by) == {"web01", "db01", "app01", "broken"}
    web = by["web01"]
    assert web["last_success"] == "2026-12-01T02:00:00+00:00" and not web["overdue"]
    assert web["last_result"] == "ok" and web["error"] is None and web["ok"]
    assert web["recovery_points"] == 9 and web["logical_size"] == sizes[30] + 5000
    assert web["stored_size"] == sum(r["stored_size"] for r in
                                     json.loads(rpfs("list", str(local), "web01", "--json").stdout))
    assert by["app01"]["overdue"] and by["app01"]["last_result"] == "ok"
    assert by["app01"]["last_success"] == "2026-11-30T02:00:00+00:00"
    assert by["broken"]["overdue"] and by["broken"]["last_result"] == "failed"
    assert by["broken"]["last_success"] is None and "no files to back up" in by["broken"]["error"]
    groups = {g["group"]: g for g in st["groups"]}
    assert groups["local"]["last_job"]["result"] == "ok"
    assert groups["offsite"]["last_job"]["result"] == "failed"
    assert groups["offsite"]["last_job"]["start"] == "2026-11-30T02:00:00+00:00"
    # the same in the Prometheus text file
    from prometheus_client.parser import text_string_to_metric_families
    fam = {f.name: f for f in text_string_to_metric_families((tmp_path / "rpfs.prom").read_text())}
    overdue = {s.labels["vm"]: s.value for s in fam["rpfs_vm_overdue"].samples}
    assert overdue == {"web01": 0, "db01": 0, "app01": 1, "broken": 1}
    okay = {s.labels["vm"]: s.value for s in fam["rpfs_vm_last_result_ok"].samples}
    assert okay == {"web01": 1, "db01": 1, "app01": 1, "broken": 0}

    # notify: every offsite job called it once with the failure; status --notify the overdue
    docs = _notices(notices)
    failed = [d for d in docs if d["event"] == "failed"]
    assert len(failed) == 30 and all(d["group"] == "offsite" for d in failed)
    assert [v["vm"] for v in failed[-1]["vms"]] == ["broken"]
    assert failed[-1]["vms"][0]["error"].startswith("broken: ") and failed[-1]["job"]
    rpfs("status", "--config", str(conf), "--notify", "--quiet", "--time", at, check=False)
    late = [d for d in _notices(notices) if d["event"] == "overdue"]
    assert len(late) == 1 and late[0]["group"] == "offsite"
    assert sorted(v["vm"] for v in late[0]["vms"]) == ["app01", "broken"]
    assert late[0]["vms"][0]["overdue"] is True and "overdue" in late[0]["summary"]
    # status at a time when the last offsite night is still within its grace
    p = rpfs("status", "--config", str(conf), "offsite", "--json", "--time", "2026-11-30T06:00:00Z",
             check=False)
    assert not json.loads(p.stdout)["vms"][0]["overdue"]

    # rpfs serve: /metrics and the dashboard say what status says (at the real clock)
    now = json.loads(rpfs("status", "--config", str(conf), "local", "--json", check=False).stdout)
    with _serve(local, conf, tmp_path / "serve.log") as base:
        import httpx
        from prometheus_client.parser import text_string_to_metric_families
        metrics = httpx.get(base + "/metrics", timeout=60)
        assert metrics.status_code == 200
        fam = {f.name: f for f in text_string_to_metric_families(metrics.text)}
        for v in now["vms"]:
            got = {f: next(s.value for s in fam[f].samples if s.labels["vm"] == v["vm"])
                   for f in ("rpfs_vm_overdue", "rpfs_vm_recovery_points", "rpfs_vm_logical_size_bytes",
                             "rpfs_vm_stored_size_bytes", "rpfs_vm_last_result_ok")}
            assert got == {"rpfs_vm_overdue": int(v["overdue"]), "rpfs_vm_recovery_points": v["recovery_points"],
                           "rpfs_vm_logical_size_bytes": v["logical_size"],
                           "rpfs_vm_stored_size_bytes": v["stored_size"], "rpfs_vm_last_result_ok": 1}
        assert {s.labels["vm"] for s in fam["rpfs_vm_overdue"].samples} == {"web01", "db01"}
        page = httpx.get(base + "/dashboard", timeout=60).text
        assert "Group local" in page and "Group offsite" not in page   # offsite is another repository
        for v in now["vms"]:
            cls = "healthy" if v["ok"] else "broken"
            assert f'<tr class="{cls}" data-vm="{v["vm"]}">' in page
        assert page.count("<td>local</td>") == 31                       # the job history
        assert '<polyline class="logical"' in page and '<polyline class="stored"' in page

    # job records are repository objects: a rebuilt catalog gives the same status
    before = json.loads(rpfs("status", "--config", str(conf), "local", "--json", "--time", at).stdout)
    os.unlink(local / "catalog.sqlite")
    rpfs("repair", str(local))
    after = json.loads(rpfs("status", "--config", str(conf), "local", "--json", "--time", at).stdout)
    assert after == before and len(before["vms"]) == 2


def test_dry_run_changes_nothing(tmp_path):
    _disk(tmp_path / "vms" / "web01" / "web01.vhdx", MiB, 1)
    rpfs("init", str(tmp_path / "repo"))
    conf = tmp_path / "c.toml"
    conf.write_text(f"""[repositories.r]\npath = "{tmp_path / 'repo'}"\n
[groups.g]\nrepository = "r"\nvms = ["{tmp_path}/vms/*"]\nschedule = "daily"\nkeep = {{ last = 1 }}\n""")
    p = rpfs("run", "--config", str(conf), "--dry-run")
    assert f"would back up web01 from {tmp_path}/vms/web01" in p.stdout
    assert json.loads(rpfs("list", str(tmp_path / "repo"), "--json").stdout) == []
    assert not (tmp_path / "repo" / "jobs").exists()


def test_schedule_units_pass_systemd_analyze_verify(tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed (tools/setup.sh installs systemd)")
    conf = tmp_path / "rpfs.toml"
    conf.write_text(f"""[repositories.r]\npath = "{tmp_path / 'repo'}"\n
[groups.nightly]\nrepository = "r"\nvms = ["/x/*"]\nschedule = "*-*-* 02:00"\n
[groups.week-ends]\nrepository = "r"\nvms = ["/y/*"]\nschedule = "Sat,Sun 04:30 UTC"\n""")
    units = tmp_path / "units"
    p = rpfs("schedule", "install", "--config", str(conf), "--dir", str(units))
    names = sorted(os.listdir(units))
    assert names == ["rpfs-run-nightly.service", "rpfs-run-nightly.timer",
                     "rpfs-run-week-ends.service", "rpfs-run-week-ends.timer",
                     "rpfs-status.service", "rpfs-status.timer"]
    timer = (units / "rpfs-run-week-ends.timer").read_text()
    assert "OnCalendar=Sat,Sun 04:30 UTC\n" in timer and "Persistent=true\n" in timer
    service = (units / "rpfs-run-nightly.service").read_text()
    assert f"run --config {conf} nightly" in service
    v = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(str(units / n) for n in names)],
                       capture_output=True, text=True)
    ours = [line for line in v.stderr.splitlines() if "rpfs-" in line]
    assert v.returncode == 0 and not ours, v.stderr
    listed = rpfs("schedule", "list", "--dir", str(units)).stdout
    assert "rpfs-run-nightly.timer  OnCalendar=*-*-* 02:00  next " in listed
    # a group taken out of the file loses its units at the next install; remove takes the rest
    conf.write_text(conf.read_text().split("[groups.week-ends]")[0])
    p = rpfs("schedule", "install", "--config", str(conf), "--dir", str(units))
    assert "rpfs-run-week-ends.timer (no such group any more)" in p.stdout
    (units / "other.service").write_text("[Service]\nExecStart=/bin/true\n")
    rpfs("schedule", "remove", "--dir", str(units))
    assert os.listdir(units) == ["other.service"]


def test_the_readme_configuration_is_valid(tmp_path):
    """The configuration file the README shows passes `rpfs config check` but for the files
    it names that this machine does not have."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    toml = text.split("## Nightly backups", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    conf = tmp_path / "rpfs.toml"
    conf.write_text(toml)
    p = rpfs("config", "check", "--config", str(conf), check=False)
    lines = p.stdout.splitlines()
    assert [ln.split(": ", 2)[1] for ln in lines] == ["repositories.offsite.passphrase_file",
                                                       "groups.nightly.notify"], p.stdout
    assert "no such file" in lines[0] and "not an executable file" in lines[1]
