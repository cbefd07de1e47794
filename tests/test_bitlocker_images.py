"""cryptsetup's BitLocker images (written by Windows): every protector unlocks, and the
exported volume is byte-identical to the sha256 cryptsetup records in images.conf.

The images' data areas hold no real files, so they prove decryption and the layout of the
volume (moved boot sectors, zeroed metadata areas), not browsing (see test_bitlocker_fixtures).
"""

from __future__ import annotations

import errno
import hashlib
import os

import pytest

from formats.bitlocker import BitLockerVolume, KeyRing, describe, open_volume
from formats.bitlocker.keys import Key, recovery_key
from formats.bitlocker.metadata import read_metadata
from rpfs.cli import main
from streams.errors import FormatError, LockedError
from streams.stream import FileStream
from tests.helpers.bitlocker import python_only


@pytest.fixture(scope="module")
def images(bitlk_images_dir):
    return bitlk_images_dir


def protectors(d, conf: dict) -> list[tuple[str, Key]]:
    out = []
    if conf.get("PW"):
        out.append(("password", Key("password", conf["PW"].encode("utf-16-le"), 1)))
    out.append(("recovery password", Key("recovery password", recovery_key(conf["RP"]), 1)))
    if conf.get("SK_VMK_GUID"):
        bek = d / f"{conf['SK_VMK_GUID'].upper()}.BEK"
        out.append(("startup key", Key("startup key", bek.read_bytes(), 1)))
    return out


NAMES = ["bitlk-aes-cbc-128", "bitlk-aes-cbc-256", "bitlk-aes-xts-128", "bitlk-aes-xts-256",
         "bitlk-aes-cbc-elephant-128", "bitlk-aes-cbc-elephant-256", "bitlk-togo-aes-cbc-128",
         "bitlk-togo-aes-xts-128", "bitlk-clearkey-aes-cbc-128", "bitlk-aes-xts-128-new-entry",
         "bitlk-aes-xts-128-smart-card", "bitlk-aes-xts-128-eow", "bitlk-aes-cbc-128-4k",
         "bitlk-aes-xts-128-4k", "bitlk-aes-xts-128-startup-key",
         "bitlk-aes-xts-128-startup-key-win11"]


# Used space only, with the FVE-EOW blocks (the map of which chunks are encrypted) wiped
# like the rest of the data area when cryptsetup cut the images down to what it parses.
WIPED_MAP = ("bitlk-clearkey-aes-cbc-128", "bitlk-aes-xts-128-eow")


def test_list_is_complete(images):
    d, conf = images
    assert sorted(conf) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_protector_unlocks_the_same_key(images, name):
    d, conf = images
    c = conf[name]
    stream = FileStream(d / f"{name}.img")
    info = describe(stream)
    kinds = {p["type"] for p in info["protectors"]}
    keys = {}
    for kind, key in protectors(d, c):
        assert kind in kinds
        vol = open_volume(stream, KeyRing([key]))
        keys[kind] = (vol.cipher.key, vol.cipher.tweak_key)
        if name in WIPED_MAP:
            with pytest.raises(FormatError, match="FVE-EOW"):
                vol.read(3, 8)
        else:
            assert vol.read(3, 8) in (b"NTFS    ", b"MSDOS5.0")
    assert len(set(keys.values())) == 1, keys
    if "clearkey" in name:  # suspended: opens with no key at all
        assert open_volume(stream).cipher.key == next(iter(keys.values()))[0]
    else:
        with pytest.raises(LockedError) as e:
            open_volume(stream)
        assert "--keys FILE" in str(e.value)
    if "smart-card" in name:
        assert "smart card (cannot be used here)" in describe(stream)["locked"]


def sha256_of(stream) -> str:
    h = hashlib.sha256()
    for off in range(0, stream.size, 4 << 20):
        h.update(stream.read(off, 4 << 20))
    return h.hexdigest()


@pytest.mark.parametrize("name", [n for n in NAMES if "clearkey" not in n and "eow" not in n])
def test_decrypted_volume_matches_cryptsetup(images, name):
    """The decrypted volume is what ``cryptsetup bitlkOpen`` maps, byte for byte."""
    d, conf = images
    c = conf[name]
    vol = open_volume(FileStream(d / f"{name}.img"), KeyRing([protectors(d, c)[-1][1]]))
    assert sha256_of(vol) == c["SHA256SUM"]


@pytest.mark.parametrize("name", ["bitlk-aes-cbc-elephant-128", "bitlk-togo-aes-xts-128",
                                  "bitlk-aes-xts-128-startup-key-win11"])
def test_export_matches_cryptsetup(images, name, tmp_path):
    """``rpfs export ... --format raw`` writes it too, keys taken from a keys file."""
    d, conf = images
    c = conf[name]
    kind, key = protectors(d, c)[-1]  # the BEK where there is one, else the recovery password
    keys = tmp_path / "keys.txt"
    secret = {"startup key": str(d / f"{c.get('SK_VMK_GUID', '').upper()}.BEK"),
              "recovery password": c["RP"]}[kind]
    keys.write_text(f"# one per line\nnot the password\n{secret}\n")
    out = tmp_path / "volume.raw"
    assert main(["export", str(d / f"{name}.img"), f"/volumes/{name}-p0", str(out),
                 "--format", "raw", "--keys", str(keys)]) == 0
    h = hashlib.sha256()
    with open(out, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    assert h.hexdigest() == c["SHA256SUM"]


def test_used_space_only_without_its_map_is_never_guessed(images, tmp_path, capsys):
    """Both used-space-only images lost their FVE-EOW blocks, so which chunks Windows had
    encrypted is unknown (in one the moved boot sectors are in the clear, in the other
    encrypted: only the map could say). Every read of data is a typed error naming the map,
    never bytes; the metadata areas still read as zeros; the CLI says why in one line. The
    data area of both images is all zeros on disk (never written), which a reader that
    ignores the map would hand out decrypted, as noise."""
    d, conf = images
    for name in WIPED_MAP:
        stream = FileStream(d / f"{name}.img")
        key = protectors(d, conf[name])[0][1]
        vol = open_volume(stream, KeyRing([key]))
        m = vol.meta
        assert m.eow and m.current_state == 4 and len(m.eow_offsets) == 2
        for off in (0, m.header_offset + m.header_size, 1 << 20, vol.size - 4096):
            with pytest.raises(FormatError) as e:
                vol.read(off, 4096)
            assert "FVE-EOW" in str(e.value) and "cannot be read" in str(e.value)
            assert e.value.errno == errno.EIO
        assert stream.read(1 << 20, 4096) == bytes(4096)  # on disk: never written
        assert vol.cipher.decrypt(bytes(4096), 1 << 20) != bytes(4096)  # what a guess gives
        for off in m.metadata_offsets:
            assert vol.read(off, 65536) == bytes(65536)
        assert vol.read(m.header_offset, m.header_size) == bytes(m.header_size)
        info = describe(stream, KeyRing([key]))
        assert info["unlocked"] and "FVE-EOW" in info["conversion"]["damaged"]
    keys = tmp_path / "keys.txt"
    keys.write_text(conf["bitlk-aes-xts-128-eow"]["RP"] + "\n")
    rc = main(["ls", str(d / "bitlk-aes-xts-128-eow.img"), "/volumes/bitlk-aes-xts-128-eow-p0",
               "--keys", str(keys)])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and "FVE-EOW" in err, err


def test_cli_errors_are_one_line_without_keys(images, tmp_path, capsys):
    d, conf = images
    name = "bitlk-aes-xts-128"
    img = str(d / f"{name}.img")
    wrong = tmp_path / "keys.txt"
    secret = "correct horse battery staple"
    wrong.write_text(f"{secret}\n111111-222222-333333-444444-555555-666666-777777-888888\n")
    for extra, expect in (([], "give its recovery password, password or .BEK file with --keys FILE"),
                          (["--keys", str(wrong)], "none of the 2 keys in")):
        rc = main(["ls", img, f"/volumes/{name}-p0", *extra])
        err = capsys.readouterr().err
        assert rc != 0
        assert err.count("\n") == 1 and expect in err, err
        assert secret not in err and "111111" not in err
    # a recovery-password-shaped line whose groups are not multiples of 11 is a password
    assert KeyRing.load(wrong).keys[1].kind == "password"


def test_damaged_metadata(images, tmp_path, capsys):
    """One damaged copy: the others unlock. All three damaged: one line naming the structure."""
    d, conf = images
    name = "bitlk-aes-xts-128"
    data = bytearray((d / f"{name}.img").read_bytes())
    c = conf[name]
    meta = read_metadata(FileStream(d / f"{name}.img"))
    keys = tmp_path / "keys.txt"
    keys.write_text(c["RP"] + "\n")
    first = meta.metadata_offsets[0]
    data[first + 64 + 48:first + 64 + 48 + 4096] = os.urandom(4096)  # entries of copy 1
    img = tmp_path / f"{name}.img"
    img.write_bytes(data)
    assert main(["info", str(img), f"/volumes/{name}-p0", "--keys", str(keys)]) != 0  # no NTFS files
    err = capsys.readouterr().err
    assert "locked" not in err and "FVE" not in err  # unlocked from copy 2 or 3
    for off in meta.metadata_offsets:
        data[off:off + 8] = b"XXXXXXXX"
    img.write_bytes(data)
    rc = main(["ls", str(img), f"/volumes/{name}-p0", "--keys", str(keys)])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1
    assert "all 3 copies of the FVE metadata are damaged" in err
    assert c["RP"] not in err
    img.write_bytes(data[:meta.metadata_offsets[0] + 100])  # truncated inside the metadata
    rc = main(["ls", str(img), "/volumes", "--keys", str(keys)])
    out = capsys.readouterr()
    assert rc == 0 and f"{name}-p0" in out.out  # listed; opening it says why
    rc = main(["ls", str(img), f"/volumes/{name}-p0", "--keys", str(keys)])
    err = capsys.readouterr().err
    assert rc != 0 and err.count("\n") == 1 and "outside the volume" in err


@pytest.mark.parametrize("name", ["bitlk-aes-cbc-elephant-128", "bitlk-aes-cbc-elephant-256"])
def test_elephant_volumes_same_through_c_and_python(images, name, monkeypatch):
    """Windows-written Elephant sectors decrypt to the same bytes through the C extension
    and through its Python twins with cryptography's AES (a sample: the twins are slow; the
    C path's whole volume is checked against cryptsetup above)."""
    d, conf = images
    vol = open_volume(FileStream(d / f"{name}.img"), KeyRing([protectors(d, conf[name])[-1][1]]))
    spots = [0, vol.size // 2 - (1 << 16), vol.size - (64 << 10)]
    fast = [vol.read(at, 64 << 10) for at in spots]
    python_only(monkeypatch)
    vol = open_volume(FileStream(d / f"{name}.img"), KeyRing([protectors(d, conf[name])[-1][1]]))
    assert [vol.read(at, 64 << 10) for at in spots] == fast
    assert any(any(b) for b in fast)
