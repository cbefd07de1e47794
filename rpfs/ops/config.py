"""The configuration file: repositories and protection groups (TOML, read with tomllib).

Found at ``--config FILE``, else ``$RPFS_CONFIG``, else ``/etc/rpfs/rpfs.toml``. Every
problem is one line ``FILE:LINE: KEY: what is wrong`` (tomllib gives no positions for keys,
so ``KeyLines`` finds them in the text: table headers, ``key =`` lines, inline tables).
Unknown keys are errors, so a typo never silently means "the default".
"""

from __future__ import annotations

import glob
import os
import re
import shlex
import tomllib
from dataclasses import dataclass, field

from streams.errors import RpfsError, UsageError
from rpfs.ops import calendar
from rpfs.sizes import parse_size
from rpfs.store.maintenance.prune import Policy

DEFAULT_PATH = "/etc/rpfs/rpfs.toml"
KEEP_KEYS = ("last", "hourly", "daily", "weekly", "monthly", "yearly")
REPO_KEYS = {"path", "cache", "passphrase_file", "s3_endpoint"}
GROUP_KEYS = {"repository", "vms", "schedule", "keep", "verify", "parallel", "notify", "keys",
              "limit_rate", "frozen", "grace", "name_from", "lock_wait"}
_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(RpfsError):
    """The file has problems; ``lines`` holds every one of them, one line each."""

    exit_code = 2

    def __init__(self, lines: list[str]):
        self.lines = lines
        more = f" (and {len(lines) - 1} more: `rpfs config check` lists them)" if len(lines) > 1 else ""
        super().__init__(lines[0] + more)


@dataclass
class RepositoryConfig:
    name: str
    path: str                          # a directory or s3://BUCKET/PREFIX
    cache: str | None = None           # the s3:// cache directory
    passphrase_file: str | None = None
    s3_endpoint: str | None = None


@dataclass
class VmSource:
    """A glob of VM folders, or one folder with an explicit name."""
    pattern: str
    name: str | None = None


@dataclass
class GroupConfig:
    name: str
    repository: str
    vms: list[VmSource]
    schedule: calendar.Calendar
    keep: Policy = field(default_factory=Policy)
    verify_bytes: int = 0
    parallel: int = 1
    notify: list[str] | None = None    # argv of the notify command
    keys: str | None = None
    limit_rate: int | None = None      # bytes per second of backup reads
    frozen: bool = False
    grace: int = 4 * 3600              # seconds after a due run before a VM is overdue
    name_from: str = "folder"          # "folder" or "vmcx"
    lock_wait: int = 3600              # seconds a backup waits for a busy repository


@dataclass
class Config:
    path: str
    repositories: dict[str, RepositoryConfig]
    groups: dict[str, GroupConfig]

    def group_names(self, wanted: list[str] | None) -> list[str]:
        if not wanted:
            return list(self.groups)
        unknown = [g for g in wanted if g not in self.groups]
        if unknown:
            raise UsageError(f"{self.path}: no group {', '.join(map(repr, unknown))}"
                             f" (groups: {', '.join(self.groups) or 'none'})")
        return wanted


def config_path(given: str | None) -> str:
    return given or os.environ.get("RPFS_CONFIG") or DEFAULT_PATH


def load(path: str | None = None) -> Config:
    """The configuration, or ConfigError listing every problem."""
    cfg, problems = check(path)
    if problems:
        raise ConfigError(problems)
    return cfg


def check(path: str | None = None) -> tuple[Config | None, list[str]]:
    """(config, problems): problems are ``FILE:LINE: KEY: message`` lines."""
    path = config_path(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        return None, [f"{path}: {e.strerror or e}"]
    try:
        text = raw.decode("utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError as e:
        return None, [f"{path}: not UTF-8 text (byte {e.start})"]
    except tomllib.TOMLDecodeError as e:
        m = re.search(r"\(at line (\d+), column (\d+)\)", str(e))
        where = f"{path}:{m.group(1)}" if m else path
        msg = re.sub(r"\s*\(at line \d+, column \d+\)", "", str(e))
        return None, [f"{where}: not TOML: {msg}"]
    return _Checker(path, text).run(data)


class KeyLines:
    """Line numbers of dotted keys in a TOML text (first occurrence)."""

    def __init__(self, text: str):
        self.lines: dict[str, int] = {}
        table = ""
        for no, line in enumerate(text.splitlines(), 1):
            s = line.split("#", 1)[0].strip() if not line.lstrip().startswith(("'", '"')) else line.strip()
            m = re.match(r"^\[\[?\s*([^\]]+?)\s*\]\]?$", s)
            if m:
                table = ".".join(_unquote(p) for p in _split_dotted(m.group(1)))
                self.lines.setdefault(table, no)
                continue
            m = re.match(r"^([A-Za-z0-9_.\-\"' ]+?)\s*=\s*(.*)$", s)
            if m:
                key = ".".join(_unquote(p) for p in _split_dotted(m.group(1)))
                full = f"{table}.{key}" if table else key
                self.lines.setdefault(full, no)
                for inner in re.finditer(r"([A-Za-z0-9_\-]+)\s*=", m.group(2)):
                    self.lines.setdefault(f"{full}.{inner.group(1)}", no)

    def of(self, key: str) -> int | None:
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key.rpartition(".")[0]
        return None


def _split_dotted(s: str) -> list[str]:
    return [p.strip() for p in re.findall(r'"[^"]*"|\'[^\']*\'|[^.]+', s)]


def _unquote(s: str) -> str:
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'" else s


def parse_duration(value) -> int:
    """``90``, ``"90s"``, ``"30m"``, ``"4h"``, ``"2d"`` -> seconds."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", value.lower())
        if m:
            return int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    raise ValueError("not a duration (e.g. 90s, 30m, 4h, 2d)")


class _Checker:
    def __init__(self, path: str, text: str):
        self.path = path
        self.keys = KeyLines(text)
        self.problems: list[str] = []

    def bad(self, key: str, message: str) -> None:
        line = self.keys.of(key)
        self.problems.append(f"{self.path}:{line}: {key}: {message}" if line
                             else f"{self.path}: {key}: {message}")

    def run(self, data: dict) -> tuple[Config | None, list[str]]:
        for k in data:
            if k not in ("repositories", "groups"):
                self.bad(k, "unknown key (expected [repositories.NAME] and [groups.NAME] tables)")
        repos = {}
        for name, t in self._tables(data, "repositories").items():
            r = self._repository(name, t)
            if r:
                repos[name] = r
        groups = {}
        for name, t in self._tables(data, "groups").items():
            g = self._group(name, t, data.get("repositories") or {})
            if g:
                groups[name] = g
        if not data.get("groups"):
            self.bad("groups", "no protection group: add a [groups.NAME] table")
        self.problems.sort(key=lambda line: int(m.group(1)) if (m := re.match(
            re.escape(self.path) + r":(\d+):", line)) else 0)
        return Config(self.path, repos, groups), self.problems

    def _tables(self, data: dict, kind: str) -> dict:
        t = data.get(kind, {})
        if not isinstance(t, dict):
            self.bad(kind, "must be tables ([" + kind + ".NAME])")
            return {}
        out = {}
        for name, v in t.items():
            if not isinstance(v, dict):
                self.bad(f"{kind}.{name}", "must be a table")
            elif not _GROUP_NAME.match(name):
                self.bad(f"{kind}.{name}", "a name is letters, digits, '.', '_' or '-' (at most 64)")
            else:
                out[name] = v
        return out

    def _unknown(self, prefix: str, t: dict, allowed: set[str]) -> None:
        for k in t:
            if k not in allowed:
                self.bad(f"{prefix}.{k}", f"unknown key (known: {', '.join(sorted(allowed))})")

    def _str(self, key: str, v, *, required: bool = False) -> str | None:
        if v is None:
            if required:
                self.bad(key, "missing")
            return None
        if not isinstance(v, str) or not v.strip():
            self.bad(key, "must be a non-empty string")
            return None
        return v

    def _repository(self, name: str, t: dict) -> RepositoryConfig | None:
        p = f"repositories.{name}"
        self._unknown(p, t, REPO_KEYS)
        path = self._str(f"{p}.path", t.get("path"), required=True)
        cache = self._str(f"{p}.cache", t.get("cache"))
        pw = self._str(f"{p}.passphrase_file", t.get("passphrase_file"))
        ep = self._str(f"{p}.s3_endpoint", t.get("s3_endpoint"))
        if path and not path.startswith("s3://") and not os.path.isabs(path):
            self.bad(f"{p}.path", "must be an absolute path or s3://BUCKET/PREFIX")
        if pw and not os.path.isfile(pw):
            self.bad(f"{p}.passphrase_file", f"{pw}: no such file")
        return RepositoryConfig(name, path, cache, pw, ep) if path else None

    def _group(self, name: str, t: dict, repos: dict) -> GroupConfig | None:
        p = f"groups.{name}"
        before = len(self.problems)
        self._unknown(p, t, GROUP_KEYS)
        repo = self._str(f"{p}.repository", t.get("repository"), required=True)
        if repo and repo not in repos:
            self.bad(f"{p}.repository", f"no [repositories.{repo}] table")
        vms = self._vms(f"{p}.vms", t.get("vms"))
        sched_text = self._str(f"{p}.schedule", t.get("schedule"), required=True)
        sched = None
        if sched_text:
            try:
                sched = calendar.parse(sched_text)
            except UsageError as e:
                self.bad(f"{p}.schedule", str(e))
        keep = Policy()
        kt = t.get("keep", {})
        if not isinstance(kt, dict):
            self.bad(f"{p}.keep", "must be a table, e.g. { daily = 14, weekly = 8 }")
        else:
            for k, v in kt.items():
                if k not in KEEP_KEYS:
                    self.bad(f"{p}.keep.{k}", f"unknown period (known: {', '.join(KEEP_KEYS)})")
                elif not isinstance(v, int) or isinstance(v, bool) or v < 0:
                    self.bad(f"{p}.keep.{k}", "must be a whole number >= 0")
                else:
                    setattr(keep, k, v)
        g = GroupConfig(name, repo or "", vms, sched, keep)
        for key, conv, attr in (("verify", parse_size, "verify_bytes"),
                                ("limit_rate", parse_size, "limit_rate"),
                                ("grace", parse_duration, "grace"),
                                ("lock_wait", parse_duration, "lock_wait")):
            if key in t:
                try:
                    setattr(g, attr, conv(t[key]))
                except ValueError as e:
                    self.bad(f"{p}.{key}", str(e))
        if g.limit_rate == 0:
            g.limit_rate = None
        if "parallel" in t:
            v = t["parallel"]
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 64:
                self.bad(f"{p}.parallel", "must be a whole number from 1 to 64")
            else:
                g.parallel = v
        if "frozen" in t:
            if not isinstance(t["frozen"], bool):
                self.bad(f"{p}.frozen", "must be true or false")
            else:
                g.frozen = t["frozen"]
        if "name_from" in t:
            if t["name_from"] not in ("folder", "vmcx"):
                self.bad(f"{p}.name_from", 'must be "folder" or "vmcx"')
            else:
                g.name_from = t["name_from"]
        keys = self._str(f"{p}.keys", t.get("keys"))
        if keys and not os.path.isfile(keys):
            self.bad(f"{p}.keys", f"{keys}: no such file")
        g.keys = keys
        notify = t.get("notify")
        if notify is not None:
            g.notify = self._command(f"{p}.notify", notify)
        return g if len(self.problems) == before else None

    def _vms(self, key: str, v) -> list[VmSource]:
        if not isinstance(v, list) or not v:
            self.bad(key, "missing or empty: a list of VM folders (globs), e.g. [\"/hyperv/vms/*\"]")
            return []
        out = []
        for i, item in enumerate(v):
            if isinstance(item, str) and os.path.isabs(item):
                out.append(VmSource(item))
            elif isinstance(item, dict) and set(item) <= {"name", "path"} and isinstance(item.get("path"), str) \
                    and os.path.isabs(item["path"]) and isinstance(item.get("name"), str):
                out.append(VmSource(item["path"], item["name"]))
            else:
                self.bad(key, f"item {i + 1}: an absolute folder path or glob, or"
                              " { name = \"vm\", path = \"/folder\" }")
        return out

    def _command(self, key: str, v) -> list[str] | None:
        if isinstance(v, str) and v.strip():
            argv = shlex.split(v)
        elif isinstance(v, list) and v and all(isinstance(x, str) for x in v):
            argv = list(v)
        else:
            self.bad(key, "must be a command line (string) or a list of arguments")
            return None
        exe = argv[0]
        if os.sep in exe and not os.access(exe, os.X_OK):
            self.bad(key, f"{exe}: not an executable file")
        return argv


# -- VMs of a group -----------------------------------------------------------------------


@dataclass
class Vm:
    name: str
    folder: str


def resolve_vms(group: GroupConfig) -> tuple[list[Vm], list[str]]:
    """The group's VMs now (one folder = one VM) and one line per pattern that found none
    or VM name used twice."""
    vms: dict[str, Vm] = {}
    errors: list[str] = []
    for src in group.vms:
        folders = sorted(p for p in glob.glob(src.pattern) if os.path.isdir(p))
        if not folders:
            errors.append(f"{src.pattern}: no VM folder there")
            continue
        for folder in folders:
            name = src.name
            if name is None:
                name, why = vm_name(folder, group.name_from)
                if name is None:
                    errors.append(why)
                    continue
            if name in vms and vms[name].folder != folder:
                errors.append(f"{folder}: VM name {name!r} is also {vms[name].folder}")
                continue
            vms[name] = Vm(name, os.path.abspath(folder))
    return list(vms.values()), errors


def vm_name(folder: str, how: str) -> tuple[str | None, str]:
    """The folder's name, or the stem of its ``Virtual Machines/*.vmcx`` (Hyper-V names that
    file by the VM's id, so the name survives renaming the VM or moving its folder)."""
    if how == "vmcx":
        found = sorted(glob.glob(os.path.join(glob.escape(folder), "Virtual Machines", "*.vmcx")))
        if len(found) != 1:
            return None, f"{folder}: {'no' if not found else 'more than one'} .vmcx in 'Virtual Machines'"
        return os.path.basename(found[0])[:-5], ""
    return os.path.basename(folder.rstrip("/")), ""
