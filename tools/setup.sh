#!/usr/bin/env bash
# Installs everything rpfs and its tests need on Debian 12 (run as root), then the project
# into ./.venv. Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

# Runs a command with its output kept aside: shown only if it fails (apt's debconf notes and
# setuptools' deprecation banners are noise on a first run).
quiet() {
  local log rc=0
  log=$(mktemp)
  "$@" >"$log" 2>&1 || rc=$?
  if ((rc)); then
    cat "$log" >&2
    echo "setup: failed ($rc): $*" >&2
  fi
  rm -f "$log"
  return "$rc"
}

DEBS=(python3 python3-venv python3-dev gcc fuse3 libfuse3-dev libzstd-dev pkg-config ntfs-3g dosfstools
      mtools gdisk fdisk qemu-utils sleuthkit libvhdi-utils libfsntfs-utils b3sum restic
      borgbackup wimtools make 7zip
      # BitLocker tests: an independent decrypter to cross-check the factory's writer
      dislocker
      # in-guest shadow copies: libvshadow reads back every store the factory writes
      libvshadow-utils
      # rpfs serve's tests: Playwright drives this chromium (never its own); Info-ZIP unzip
      chromium unzip
      # Linux guests: the file system and LVM tools that build the test images, and the
      # kernel's own readers (loop mounts) that check them; attr/acl set xattrs and ACLs
      e2fsprogs xfsprogs btrfs-progs lvm2 attr acl
      # a real S3 server for the tests (a single-node Ceph RADOS Gateway, ../shared/s3/s3-start.sh)
      ceph-mon ceph-osd radosgw ceph-common
      # Windows dynamic disks: libldm's ldmtool reads back the factory's LDM databases
      ldmtool
      # rpfs schedule's tests check the units with systemd-analyze (verify, calendar)
      systemd)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  quiet apt-get update -qq
  quiet apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

PY=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.rpfs-installed
# Reinstall when the metadata or a C source changed: the editable install builds the C
# extension (ntfs_reader/_lznt1.c) in place once, and nothing else would rebuild it. Also
# when the install is setuptools' default editable kind: its import finder loads pathlib,
# urllib.parse and ipaddress in every command's interpreter (~45 M of the 78 M instructions
# before rpfs's first import); "compat" is one plain path in a .pth file.
if [[ ! -f $stamp || -n $(find pyproject.toml setup.py rpfs formats ntfs_reader streams -newer "$stamp" \
                              \( -name '*.c' -o -name '*.h' -o -name pyproject.toml -o -name setup.py \) \
                              -print -quit 2>/dev/null) ]] \
   || grep -qs finder .venv/lib/python3*/site-packages/__editable__.rpfs-*.pth; then
  echo "setup: installing rpfs into .venv"
  quiet .venv/bin/python -m pip install -q --upgrade pip
  quiet .venv/bin/python -m pip install -q -e '.[test]' --config-settings editable_mode=compat
  touch "$stamp"
fi

# cryptsetup's BitLocker test images (written by Windows) from Debian's cryptsetup source
# package, into .cache/bitlk-images (adds a deb-src entry for the same mirror if none).
if [[ ! -f .cache/bitlk-images/images.conf ]]; then
  echo "setup: fetching cryptsetup's BitLocker test images"
  .venv/bin/python -m tools.fixtures.bitlk_images >/dev/null \
    || echo "setup: warning: no BitLocker test images (their tests will skip and say why)" >&2
fi
# BitLocker volumes written by Windows from dissect.fve's source distribution (pip download,
# sha256 pinned): used space only paused half-way, decrypted, Vista.
if [[ ! -f .cache/dissect-fve-images/vista.img ]]; then
  echo "setup: fetching dissect.fve's BitLocker test volumes"
  .venv/bin/python -m tools.fixtures.dissect_fve_images >/dev/null \
    || echo "setup: warning: no dissect.fve test volumes (their tests will skip and say why)" >&2
fi
# Dynamic disks written by Windows Server 2003 R2 / 2008 R2 (libldm's test data) from
# Debian's libldm source package, into .cache/libldm-images (inner tarball sha256 pinned).
if [[ ! -f .cache/libldm-images/ldm-2008r2-raid5-3.img ]]; then
  echo "setup: fetching libldm's Windows dynamic disks"
  .venv/bin/python -m tools.fixtures.libldm_images >/dev/null \
    || echo "setup: warning: no libldm test disks (their tests will skip and say why)" >&2
fi
# A .vmcx and a .VMRS written by Hyper-V, from dissect.hypervisor's source distribution
# (pip download, sha256 pinned).
if [[ ! -f .cache/dissect-hyperv-files/test.VMRS ]]; then
  echo "setup: fetching dissect.hypervisor's Hyper-V configuration files"
  .venv/bin/python -m tools.fixtures.dissect_hyperv_files >/dev/null \
    || echo "setup: warning: no dissect.hypervisor test files (their tests will skip and say why)" >&2
fi
