"""BitLocker version 1 (Windows Vista / Server 2008): a Windows-made volume's metadata, keys
and layout, and the factory's Vista volumes read file by file through the CLI, checked
against libbde (pybde) — Debian's dislocker 0.7.3 and libbde-utils cannot open Vista volumes.
"""

from __future__ import annotations

import errno
import hashlib
import json
import struct
import subprocess
import sys

import pytest

from formats.bitlocker import KeyRing, describe, open_volume
from formats.bitlocker.keys import Key, recovery_key
from formats.bitlocker.metadata import read_metadata, vista_area
from streams.errors import FormatError
from streams.stream import FileStream, Stream
from tools.fixtures import bitlocker as blfx
from tools.fixtures import dissect_fve_images as dfx

VISTA = sorted(n for n, v in blfx.VARIANTS.items() if v[3] == "vista")


def recovery(text: str) -> KeyRing:
    return KeyRing([Key("recovery password", recovery_key(text), 1)])


class Patched(Stream):
    def __init__(self, base: Stream, patches: dict[int, bytes]):
        self.base, self.patches = base, patches
        self.size, self.name = base.size, "patched"

    def _read(self, offset, length):
        data = bytearray(self.base.read(offset, length))
        for at, patch in self.patches.items():
            lo, hi = max(at, offset), min(at + len(patch), offset + length)
            if lo < hi:
                data[lo - offset:hi - offset] = patch[lo - at:hi - at]
        return bytes(data)


def test_windows_vista_volume(dissect_fve_dir):
    """dissect.fve's vista volume (made by Windows Vista, cut to 22 MiB): version 1 header
    and metadata, the recovery password unlocks it (the startup key protector is listed),
    the boot sector reads as NTFS's with the MFT mirror's cluster from the metadata block
    header, sectors 1-15 as stored, the metadata block's area as zeros, and a decrypted
    sector past them holds NTFS data (a security descriptor naming BUILTIN\\Users)."""
    stream = FileStream(dissect_fve_dir / "vista.img")
    keys = recovery(dfx.VISTA_RECOVERY)
    info = describe(stream, keys)
    assert info["type"] == "BitLocker (Windows Vista)" and info["version"] == 1
    assert info["encryption"] == "AES-CBC 128 + Elephant diffuser" and info["state"] == "encrypted"
    assert info["description"] == "USER-PC C: 10/21/2021" and info["unlocked"]
    assert [p["type"] for p in info["protectors"]] == ["startup key", "recovery password"]
    vol = open_volume(stream, keys)
    m = vol.meta
    assert m.metadata_offsets[0] == 0x1574 * 4096 and m.metadata_size == vista_area(4096) == 0x4000
    assert m.mft_mirror == 0xB35BFF
    raw = stream.read(0, 8192)
    boot = vol.read(0, 512)
    assert raw[3:11] == b"-FVE-FS-" and boot[3:11] == b"NTFS    "
    assert struct.unpack_from("<Q", boot, 56)[0] == 0xB35BFF
    assert boot[:3] + boot[11:56] + boot[64:] == raw[:3] + raw[11:56] + raw[64:512]
    assert vol.read(512, 8192 - 512) == raw[512:]
    assert vol.read(m.metadata_offsets[0], 0x4000) == bytes(0x4000)
    assert vol.read(0x3000, 16) == bytes.fromhex("01020000000000052000000021020000")
    with pytest.raises(OSError):
        open_volume(stream)  # locked without a key


@pytest.fixture(scope="module")
def bl(small_fixtures):
    return blfx.build(small_fixtures)


def rpfs(*args, check=True):
    r = subprocess.run([sys.executable, "-m", "rpfs", *map(str, args)], capture_output=True,
                       text=True)
    if check and r.returncode:
        raise AssertionError(r.stderr)
    return r


@pytest.mark.parametrize("name", VISTA)
def test_factory_vista_through_the_cli(bl, name, tmp_path):
    """`rpfs info`, `ls` and `cat --keys` on the factory's Vista volumes: the first files of the
    manifest read through `cat` equal (every file: restore, in test_bitlocker_fixtures)."""
    v = bl.volumes[name]
    keys = tmp_path / "keys.txt"
    keys.write_text("# Vista: recovery password\n" + v.info["recovery_password"] + "\n")
    info = json.loads(rpfs("info", v.image, f"/volumes/{name}-p0", "--json", "--keys", keys).stdout)
    assert info["bitlocker"]["type"] == "BitLocker (Windows Vista)" and info["bitlocker"]["version"] == 1
    assert info["filesystem"] == "ntfs"
    listed = rpfs("ls", v.image, f"/volumes/{name}-p0", "--keys", keys).stdout.split()
    assert "compressed" in listed
    n = 0
    for path, e in sorted(v.manifest["entries"].items()):
        if e["type"] == "file" and "sha256" in e and n < 5:
            r = subprocess.run([sys.executable, "-m", "rpfs", "cat", str(v.image),
                                f"/volumes/{name}-p0{path}", "--keys", str(keys)],
                               capture_output=True)
            assert r.returncode == 0 and hashlib.sha256(r.stdout).hexdigest() == e["sha256"], path
            n += 1
    assert n == 5
    r = rpfs("ls", v.image, f"/volumes/{name}-p0", check=False)
    assert r.returncode != 0 and r.stderr.count("\n") == 1 and "recovery password" in r.stderr


@pytest.mark.parametrize("name", VISTA)
def test_libbde_agrees(bl, name):
    """libbde (pybde) decrypts the factory's Vista volumes to the plain NTFS image — except
    the 8 bytes at 56 of the boot sector, where libbde puts 0 and rpfs (like dissect.fve and
    dislocker) the MFT mirror's cluster the metadata block header keeps, which is what NTFS
    wrote there."""
    pybde = pytest.importorskip("pybde", reason="libbde-python (pybde) is not installed")
    v = bl.volumes[name]
    plain = v.plain.read_bytes()
    b = pybde.volume()
    b.set_recovery_password(v.info["recovery_password"])
    b.open(str(v.image))
    try:
        theirs = bytearray(b.read_buffer_at_offset(len(plain), 0))
    finally:
        b.close()
    mine = open_volume(FileStream(v.image), recovery(v.info["recovery_password"])).read(0, len(plain))
    assert mine == plain
    assert theirs[56:64] == bytes(8) and mine[56:64] == struct.pack("<Q", v.info["mft_mirror"])
    theirs[56:64] = mine[56:64]
    assert bytes(theirs) == mine


def test_backup_boot_sector_altered_like_the_first(bl):
    """Where a Vista volume stores its backup boot sector in the clear with BitLocker's
    signature (dislocker reads Vista volumes so), it reads back as NTFS's; stored
    encrypted (libbde's reading, and the factory's), it is decrypted like any sector."""
    v = bl.volumes["vista-elephant128"]
    at = v.info["backup_boot"]
    plain = v.plain.read_bytes()
    stream = FileStream(v.image)
    altered = bytearray(plain[at:at + 512])
    altered[3:11] = b"-FVE-FS-"
    altered[56:64] = struct.pack("<Q", v.info["metadata"][0] // 4096)
    vol = open_volume(Patched(stream, {at: bytes(altered)}), recovery(v.info["recovery_password"]))
    assert vol.read(at, 512) == plain[at:at + 512]
    assert open_volume(stream, recovery(v.info["recovery_password"])).read(at, 512) == plain[at:at + 512]


def test_hostile_vista_headers(bl, tmp_path):
    v = bl.volumes["vista-elephant128"]
    stream = FileStream(v.image)
    keys = recovery(v.info["recovery_password"])
    for patch, expect in (({56: struct.pack("<Q", 1 << 40)}, "outside the volume"),
                          ({13: b"\x03"}, "sectors per cluster"),
                          ({v.info["metadata"][0]: b"XXXXXXXX"}, "FVE-FS")):
        with pytest.raises(FormatError) as e:
            read_metadata(Patched(stream, patch))
        assert expect in str(e.value), str(e.value)
    # a conversion that did not finish (state 2): where it stopped is unknown, so no sector
    # past the clear first 16 is read
    block = v.info["metadata"]
    vol = open_volume(Patched(stream, {m + 12: b"\x02\x00" for m in block}), keys)
    assert vol.read(0, 512)[3:11] == b"NTFS    "
    with pytest.raises(FormatError) as e:
        vol.read(1 << 20, 4096)
    assert e.value.errno == errno.EIO and "Vista" in str(e.value)
