"""BitLocker volumes for the tests: every volume the suite has, opened; and the switch that
makes ``SectorCipher`` run as it does without the C extension's AES paths (the Python twins
and cryptography), for the differential tests."""

from __future__ import annotations

import pytest

from formats.bitlocker import KeyRing, fvecrypt, open_volume
from formats.bitlocker.keys import Key, recovery_key
from streams.stream import FileStream
from tools.fixtures import dissect_fve_images as dfx


def recovery(text: str) -> KeyRing:
    return KeyRing([Key("recovery password", recovery_key(text), 1)])


def every_volume(bitlk_images_dir, dissect_fve_dir, bl) -> dict:
    """name -> the opened volume, for every BitLocker image of the suite (cryptsetup's and
    dissect's Windows-written images, the factory's variants ``bl``)."""
    d, conf = bitlk_images_dir
    vols = {}
    for name, c in sorted(conf.items()):
        vols[name] = open_volume(FileStream(d / f"{name}.img"), recovery(c["RP"]))
    vols["dissect eow_partial"] = open_volume(
        FileStream(dissect_fve_dir / "eow_partial.img"),
        KeyRing([Key("password", dfx.PASSWORD.encode("utf-16-le"), 1)]))
    vols["dissect vista"] = open_volume(FileStream(dissect_fve_dir / "vista.img"),
                                        recovery(dfx.VISTA_RECOVERY))
    for name, v in sorted(bl.volumes.items()):
        vols[f"factory {name}"] = open_volume(FileStream(v.image),
                                              recovery(v.info["recovery_password"]))
    return vols


def python_only(mp: pytest.MonkeyPatch) -> None:
    """``SectorCipher`` as on a CPU without AES instructions and a build without the
    Elephant C pass: cryptography's AES and the Python twin of the Elephant decryption."""
    mp.setattr(fvecrypt, "AES_PATHS", ())
    mp.setattr(fvecrypt, "ELEPHANT_IN_C", False)
    mp.setattr(fvecrypt, "cbc_elephant_decrypt", fvecrypt.py_cbc_elephant_decrypt)
