#!/usr/bin/env python3
"""The concurrency soak for N minutes: ``tools/soak.py [--minutes N]`` (default 10).

Runs tests/test_soak.py (readers through a real mount while backups and prunes with gc run
on the same repository) with RPFS_SOAK_SECONDS set; CI runs the same test for 20 seconds.
Prints the summary line (backups, prunes, reads, peak RSS of the mount, gc) at the end.
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    args = ap.parse_args()
    env = dict(os.environ, RPFS_SOAK_SECONDS=str(int(args.minutes * 60)))
    py = ROOT / ".venv" / "bin" / "python"
    return subprocess.run([str(py if py.exists() else sys.executable), "-m", "pytest", "-q", "-s",
                           "-p", "no:cacheprovider", "tests/test_soak.py"], cwd=ROOT,
                          env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
