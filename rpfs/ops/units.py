"""systemd timer and service units: ``rpfs run GROUP`` on the group's ``OnCalendar``
(``Persistent=true``: a night the machine was off runs at the next boot), and one hourly
``rpfs status --notify``, so an overdue VM is reported even when no run started at all.

Units are named ``rpfs-run-<group>.{service,timer}`` and ``rpfs-status.{service,timer}``;
every file carries ``MARK`` so ``remove`` and ``list`` touch only what rpfs wrote.
"""

from __future__ import annotations

import os
import shlex
import sys

from rpfs.ops.config import Config

DEFAULT_DIR = "/etc/systemd/system"
MARK = "# written by rpfs schedule install"


def command() -> list[str]:
    """How a unit starts rpfs: this interpreter with ``-m rpfs`` (works in a virtualenv)."""
    return [sys.executable, "-m", "rpfs"]


def _exec(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def units(cfg: Config) -> dict[str, str]:
    """File name -> contents of every unit for ``cfg``."""
    conf = os.path.abspath(cfg.path)
    out: dict[str, str] = {}
    for name, g in cfg.groups.items():
        out[f"rpfs-run-{name}.service"] = f"""{MARK}
[Unit]
Description=rpfs: back up protection group {name}
Wants=network-online.target
After=network-online.target local-fs.target remote-fs.target

[Service]
Type=oneshot
ExecStart={_exec(command() + ["run", "--config", conf, name])}
Nice=10
IOSchedulingClass=best-effort
IOSchedulingPriority=7
"""
        out[f"rpfs-run-{name}.timer"] = f"""{MARK}
[Unit]
Description=rpfs: schedule of protection group {name}

[Timer]
OnCalendar={g.schedule.text}
Persistent=true
AccuracySec=1s
Unit=rpfs-run-{name}.service

[Install]
WantedBy=timers.target
"""
    out["rpfs-status.service"] = f"""{MARK}
[Unit]
Description=rpfs: report overdue and failed VMs to the notify commands

[Service]
Type=oneshot
ExecStart={_exec(command() + ["status", "--config", conf, "--notify", "--quiet"])}
SuccessExitStatus=1
"""
    out["rpfs-status.timer"] = f"""{MARK}
[Unit]
Description=rpfs: hourly check of every protection group

[Timer]
OnCalendar=hourly
Persistent=true
Unit=rpfs-status.service

[Install]
WantedBy=timers.target
"""
    return out


def installed(directory: str) -> list[str]:
    """Unit files in ``directory`` that rpfs wrote."""
    out = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    for n in names:
        if n.startswith("rpfs-") and n.endswith((".service", ".timer")):
            try:
                with open(os.path.join(directory, n), encoding="utf-8") as f:
                    if f.readline().rstrip("\n") == MARK:
                        out.append(n)
            except OSError:
                continue
    return out


def write(cfg: Config, directory: str) -> tuple[list[str], list[str]]:
    """Write the units; remove rpfs's units of groups no longer configured.
    Returns (written, removed)."""
    os.makedirs(directory, exist_ok=True)
    want = units(cfg)
    for name, text in want.items():
        tmp = os.path.join(directory, f".{name}.tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, os.path.join(directory, name))
    stale = [n for n in installed(directory) if n not in want]
    for n in stale:
        os.unlink(os.path.join(directory, n))
    return sorted(want), stale


def remove(directory: str) -> list[str]:
    gone = installed(directory)
    for n in gone:
        os.unlink(os.path.join(directory, n))
    return gone


def timer_calendar(directory: str, name: str) -> str | None:
    try:
        with open(os.path.join(directory, name), encoding="utf-8") as f:
            for line in f:
                if line.startswith("OnCalendar="):
                    return line.split("=", 1)[1].strip()
    except OSError:
        return None
    return None
