#!/usr/bin/env bash
# Installs everything (tools/setup.sh), then shows what rpfs does on a built-in sample VM.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
exec .venv/bin/python -m tools.demo "$@"
