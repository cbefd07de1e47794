#!/usr/bin/env bash
# Installs what is needed (tools/setup.sh), then runs the whole test suite.
# Extra arguments go to pytest (e.g. `tools/test.sh -k vhdx -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
exec .venv/bin/python -m pytest -ra "$@"
