"""The README's first command: build a sample Hyper-V VM, back it up twice, and do what a
user would do with it — list recovery points, browse a volume, copy a file out, mount,
export a disk. Every step is a real ``rpfs`` command, printed before it runs.

    python -m tools.demo [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RPFS = [sys.executable, "-m", "rpfs"]


def run(*args, show: int | None = 25, check: bool = True) -> subprocess.CompletedProcess:
    printable = " ".join(shlex.quote(str(a)) for a in args)
    print(f"\n$ rpfs {printable}", flush=True)
    r = subprocess.run(RPFS + [str(a) for a in args], capture_output=True, text=True,
                       errors="replace", cwd=ROOT)
    lines = r.stdout.splitlines()
    for line in lines[:show] if show else lines:
        print("  " + line)
    if show and len(lines) > show:
        print(f"  ... ({len(lines) - show} more lines)")
    for line in r.stderr.splitlines():
        print("  " + line)
    if check and r.returncode != 0:
        raise SystemExit(f"demo: step failed: rpfs {printable}")
    return r


def shell(cmd: str) -> None:
    print(f"\n$ {cmd}", flush=True)
    r = subprocess.run(cmd, shell=True, capture_output=True, text=True, errors="replace")
    for line in (r.stdout + r.stderr).splitlines()[:25]:
        print("  " + line)
    if r.returncode:
        raise SystemExit(f"demo: step failed: {cmd}")


def serve_step(repo: Path, vm: str, system: str, work: Path) -> None:
    """Starts ``rpfs serve`` in the background, uses its JSON API as a script would, stops it."""
    import json
    import urllib.parse
    import urllib.request
    import zipfile

    log = work / "serve.log"
    print(f"\n$ rpfs serve {shlex.quote(str(repo))} --listen 127.0.0.1:0 &", flush=True)
    with open(log, "wb") as err:
        proc = subprocess.Popen(RPFS + ["serve", str(repo), "--listen", "127.0.0.1:0"],
                                stderr=err, stdout=subprocess.DEVNULL, cwd=ROOT)
    try:
        for _ in range(300):
            if " at http://" in log.read_text() or proc.poll() is not None:
                break
            time.sleep(0.1)
        first = log.read_text().strip()
        print("  " + first)
        if " at http://" not in first:
            raise SystemExit("demo: step failed: rpfs serve")
        base = first.split(" at ", 1)[1].split("/ ", 1)[0]

        def get(route: str, **query) -> bytes:
            url = f"{base}{route}?{urllib.parse.urlencode(query)}"
            print(f"\n$ curl '{url}'")
            with urllib.request.urlopen(url, timeout=120) as r:
                return r.read()

        docs = f"/{vm}/latest/volumes/{system}/Users/alice/Documents"
        for e in json.loads(get("/api/ls", path=docs)):
            print(f"  {e['type']:<7} {e['size']:>9}  {e['modified'][:19]}  {e['name']}")
        data = get("/api/download", path=f"{docs}/report.docx")
        print(f"  {len(data)} bytes (report.docx)")
        (work / "Documents.zip").write_bytes(get("/api/download", path=docs, format="zip"))
        with zipfile.ZipFile(work / "Documents.zip") as zf:
            for info in zf.infolist():
                print(f"  {info.file_size:>9}  {info.filename}")
        print(f"\n  In a browser: rpfs serve {shlex.quote(str(repo))}   then open http://127.0.0.1:8080/")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", help="where the repository and outputs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)

    from tools.fixtures import build

    t0 = time.monotonic()
    print("== Building the sample VM (real tools: mkntfs, ntfs-3g, sgdisk, qemu-img; cached) ==")
    fx = build("small")
    state1, state2 = fx.vm_states
    vm = state1.name
    print(f"sample VM folders: {state1}  and a later state {state2}  ({time.monotonic() - t0:.0f} s)")

    work = Path(args.workdir or tempfile.mkdtemp(prefix="rpfs-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    repo = work / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    try:
        print("\n== Back up two recovery points (the second stores only what changed) ==")
        run("init", repo)
        run("backup", repo, state1, "--vm", vm, "--time", "2026-11-01T02:00:00Z")
        run("backup", repo, state2, "--vm", vm, "--time", "2026-11-02T02:00:00Z")
        run("list", repo)
        run("list", repo, vm)

        print("\n== Browse: every disk and NTFS volume of every recovery point ==")
        run("ls", repo, f"/{vm}")
        run("ls", repo, f"/{vm}/latest/disks")
        run("info", repo, f"/{vm}/latest/disks/system.raw", show=40)
        volumes = run("ls", repo, f"/{vm}/latest/volumes").stdout.split()
        system = next(v for v in volumes if v.startswith("system-"))
        run("ls", "-l", repo, f"/{vm}/latest/volumes/{system}/Users")
        docs = f"/{vm}/latest/volumes/{system}/Users/alice/Documents"
        run("ls", repo, docs)
        print("\n== Find files and their versions across recovery points (the index) ==")
        run("find", repo, "*report*", "--vm", vm)
        run("find", repo, "setup.exe", "--type", "f", "--json")
        run("history", repo, f"{docs}/notes.txt")

        print("\n== Item-level recovery: copy files out ==")
        run("restore", repo, docs, work / "restored")
        shell(f"ls -la {shlex.quote(str(work / 'restored' / 'Documents'))}")

        print("\n== Mount everything read-only with FUSE ==")
        mnt = work / "mnt"
        mnt.mkdir(exist_ok=True)
        if os.path.exists("/dev/fuse"):
            run("mount", repo, mnt)
            try:
                shell(f"ls {shlex.quote(str(mnt))}/{vm}")
                shell(f"ls {shlex.quote(str(mnt))}/{vm}/latest/volumes/{system}")
                shell(f"ls -l {shlex.quote(str(mnt))}/{vm}/.versions/{system}/Users/alice/Documents/notes.txt")
                shell(f"cp -a {shlex.quote(str(mnt))}/{vm}/2026-11-01T020000Z/volumes/{system}"
                      f"/Users/alice/Documents {shlex.quote(str(work / 'from-mount'))}")
                shell(f"diff -r {shlex.quote(str(work / 'from-mount'))} "
                      f"{shlex.quote(str(mnt))}/{vm}/2026-11-01T020000Z/volumes/{system}/Users/alice/Documents"
                      " && echo identical")
            finally:
                run("umount", mnt)
        else:
            print("(no /dev/fuse on this machine: skipping the mount)")

        print("\n== Alternate-location recovery: export a disk and the whole VM ==")
        run("export", repo, f"/{vm}/latest/disks/system.raw", work / "system.vhdx", "--format", "vhdx")
        shell(f"qemu-img info {shlex.quote(str(work / 'system.vhdx'))} | head -6")
        run("export-vm", repo, f"/{vm}/latest", work / "vm-export")

        print("\n== The web page: calendar, browser, search, downloads (rpfs serve) ==")
        serve_step(repo, vm, system, work)

        print("\n== Consistency check ==")
        run("verify", repo)
    finally:
        if not args.keep and not args.workdir:
            if os.path.ismount(work / "mnt"):
                subprocess.run(["fusermount3", "-u", str(work / "mnt")])
            shutil.rmtree(work, ignore_errors=True)
    print(f"\ndemo: done in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
