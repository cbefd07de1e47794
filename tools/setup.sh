#!/usr/bin/env bash
# Installs everything rpfs and its tests need on Debian 12 (run as root), then the project
# into ./.venv. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(python3 python3-venv python3-dev gcc fuse3 libfuse3-dev pkg-config ntfs-3g dosfstools
      mtools gdisk fdisk qemu-utils sleuthkit libvhdi-utils libfsntfs-utils b3sum restic
      borgbackup wimtools)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.rpfs-installed
# Reinstall when the metadata or a C source changed: the editable install builds the C
# extension (ntfs_reader/_lznt1.c) in place once, and nothing else would rebuild it.
if [[ ! -f $stamp || -n $(find pyproject.toml setup.py rpfs formats ntfs_reader -newer "$stamp" \
                              \( -name '*.c' -o -name '*.h' -o -name pyproject.toml -o -name setup.py \) \
                              -print -quit 2>/dev/null) ]]; then
  echo "setup: installing rpfs into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi
