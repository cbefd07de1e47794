"""Hyper-V configuration (.vmcx/.VMRS): formats/vmcx against dissect.hypervisor on files
written by Hyper-V, and what ``rpfs info`` says of a VM folder and a recovery point."""

from __future__ import annotations

import json
import random
import shutil
import struct
import subprocess

import pytest

from formats import vmcx
from streams.errors import FormatError, RpfsError
from streams.stream import BytesStream, FileStream
from tests.helpers.cli import rpfs

VMCX_NAME = "282874FC-59D6-4F30-BC04-5FDD909C82E0.vmcx"
CONFIGURED = r"C:\Users\Public\Documents\Hyper-V\Virtual Hard Disks\Other Location.vhdx"
FACTS = {"name": "Other Location", "id": "282874FC-59D6-4F30-BC04-5FDD909C82E0",
         "generation": 1, "processors": 1, "memory_mib": 1024, "checkpoints": [],
         "created": "2021-08-22T21:41:00.717226+00:00"}   # properties/creation_time, a FILETIME


@pytest.mark.parametrize("name", ["test.vmcx", "test.VMRS"])
def test_keys_equal_dissect(dissect_hyperv_dir, name):
    from dissect.hypervisor.descriptor.hyperv import HyperVFile

    path = dissect_hyperv_dir / name
    ours = vmcx.read_keys(FileStream(path))
    with open(path, "rb") as f:
        assert ours == HyperVFile(f).as_dict()


def _vm_folder(dissect_hyperv_dir, root, with_disk=True):
    (root / "Virtual Machines").mkdir(parents=True)
    shutil.copy(dissect_hyperv_dir / "test.vmcx", root / "Virtual Machines" / VMCX_NAME)
    shutil.copy(dissect_hyperv_dir / "test.VMRS",
                root / "Virtual Machines" / VMCX_NAME.replace(".vmcx", ".VMRS"))
    if with_disk:
        (root / "Virtual Hard Disks").mkdir()
        subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx",
                        str(root / "Virtual Hard Disks" / "Other Location.vhdx"), "4M"], check=True)
    return root


def _check_facts(cfg, stored):
    assert {k: cfg[k] for k in FACTS} == FACTS
    assert cfg["file"] == f"Virtual Machines/{VMCX_NAME}"
    assert [(d["controller_type"], d["controller"], d["location"], d["type"])
            for d in cfg["drives"]] == [("ide", 0, 0, "VHD"), ("ide", 0, 1, "NONE"),
                                       ("ide", 1, 0, "ISO"), ("ide", 1, 1, "NONE")]
    disk = cfg["drives"][0]
    assert disk["path"] == CONFIGURED
    assert disk["stored_file"] == stored


def test_info_folder(dissect_hyperv_dir, tmp_path):
    vm = _vm_folder(dissect_hyperv_dir, tmp_path / "vm")
    info = json.loads(rpfs("info", vm, "/", "--json").stdout)
    _check_facts(info["hyperv_config"], "Virtual Hard Disks/Other Location.vhdx")
    assert "note" not in info["hyperv_config"]["drives"][0]


def test_info_folder_disk_missing(dissect_hyperv_dir, tmp_path):
    vm = _vm_folder(dissect_hyperv_dir, tmp_path / "vm", with_disk=False)
    cfg = json.loads(rpfs("info", vm, "/", "--json").stdout)["hyperv_config"]
    _check_facts(cfg, None)
    assert cfg["drives"][0]["note"] == f"{CONFIGURED}: no stored file matches this configured path"
    text = rpfs("info", vm, "/").stdout.decode()
    assert f"note: {CONFIGURED}: no stored file matches" in text


def test_info_recovery_point(dissect_hyperv_dir, tmp_path):
    """After a backup; a checkpoint's configuration (Snapshots/<id>.vmcx) is listed."""
    from tools.fixtures import vmcx_writer

    vm = _vm_folder(dissect_hyperv_dir, tmp_path / "vm")
    snap = vmcx_writer.gen2_config()
    snap["configuration"]["properties"].update(name="before update", global_id="5A1E")
    (vm / "Snapshots").mkdir()
    (vm / "Snapshots" / "5A1E.vmcx").write_bytes(vmcx_writer.write(snap))
    repo = tmp_path / "repo"
    rpfs("init", repo)
    rpfs("backup", repo, vm, "--vm", "other", "--time", "2026-11-01T02:00:00Z", "--no-index")
    info = json.loads(rpfs("info", repo, "/other/2026-11-01T020000Z", "--json").stdout)
    _check_facts(info["hyperv_config"], "Virtual Hard Disks/Other Location.vhdx")
    assert info["hyperv_config"]["checkpoint_configs"] == [
        {"file": "Snapshots/5A1E.vmcx", "name": "before update", "id": "5A1E", "created": None}]

    import httpx

    from tests.helpers.web import start_server
    proc, base = start_server(repo, log=tmp_path / "serve.log")
    try:   # the web page of the recovery point says the same
        page = httpx.get(f"{base}/browse/other/2026-11-01T020000Z", timeout=60).text
    finally:
        proc.terminate()
        proc.wait()
    assert "name: Other Location" in page and "processors: 1" in page
    assert ("IDE 0:0 VHD C:\\Users\\Public\\Documents\\Hyper-V\\Virtual Hard Disks\\"
            "Other Location.vhdx &rarr; <a href=\"/browse/other/2026-11-01T020000Z/files/"
            "Virtual%20Hard%20Disks/Other%20Location.vhdx\">") in page
    assert "checkpoint: before update" in page


def _object_table_loop(data: bytes) -> bytes:
    """The first object table entry turned into a link back to the table itself."""
    b = bytearray(data)
    struct.pack_into("<BIQIB", b, 8192 + 8, 1, 0, 8192, 4096, 1)
    return bytes(b)


def _hostile(data: bytes) -> dict[str, bytes]:
    entry = 3 * 4096 + 10    # the first entry of the first key table (after the object table)
    flipped = bytearray(data)
    flipped[entry + 25] ^= 0x20
    return {"truncated-header": data[:30], "truncated-tables": data[:9000],
            "no-header": b"\0" * 8192 + data[8192:], "flipped-entry": bytes(flipped),
            "object-table-loop": _object_table_loop(data)}


@pytest.mark.parametrize("case", ["truncated-header", "truncated-tables", "no-header",
                                  "flipped-entry", "object-table-loop"])
def test_hostile_vmcx_one_line(dissect_hyperv_dir, tmp_path, case):
    data = _hostile((dissect_hyperv_dir / "test.vmcx").read_bytes())[case]
    with pytest.raises(FormatError):
        vmcx.read_keys(BytesStream(data))
    vm = tmp_path / "vm"
    vm.mkdir()
    (vm / "bad.vmcx").write_bytes(data)
    r = rpfs("info", vm, "/", "--json", check=False)
    assert b"Traceback" not in r.stderr
    cfg = json.loads(r.stdout)["hyperv_config"]
    assert cfg["error"].startswith("bad.vmcx: ") and "\n" not in cfg["error"]
    assert cfg["error"].count("bad.vmcx") == 1
    text = rpfs("info", vm, "/").stdout.decode()
    assert sum("error: bad.vmcx: " in line for line in text.splitlines()) == 1


def test_mutations_typed(dissect_hyperv_dir):
    """Truncated and bit-flipped copies: parsed or a typed error, nothing else (counted)."""
    data = (dissect_hyperv_dir / "test.vmcx").read_bytes()
    rnd = random.Random(19)
    errors = 0
    for i in range(400):
        b = bytearray(data[:rnd.randrange(len(data))] if i % 2 else data)
        for _ in range(rnd.randint(1, 6)):
            if b:
                b[rnd.randrange(len(b))] ^= 1 << rnd.randrange(8)
        try:
            vmcx.vm_config(vmcx.read_keys(BytesStream(bytes(b))))
        except RpfsError:
            errors += 1
    assert errors > 200   # checksums catch most flips: the test can see a parser that accepts all


def test_writer_generation2_scsi(tmp_path):
    """A configuration our writer makes: dissect.hypervisor and formats/vmcx read back the
    same tree; SCSI controllers are numbered in manifest order, drives by location."""
    import io

    from dissect.hypervisor.descriptor.hyperv import HyperVFile

    from tools.fixtures import vmcx_writer

    tree = vmcx_writer.gen2_config()
    data = vmcx_writer.write(tree)
    assert HyperVFile(io.BytesIO(data)).as_dict() == tree
    assert vmcx.read_keys(BytesStream(data)) == tree
    vm = tmp_path / "fs01"
    (vm / "Virtual Machines").mkdir(parents=True)
    (vm / "Virtual Machines" / "fs01.vmcx").write_bytes(data)
    (vm / "Virtual Hard Disks").mkdir()
    subprocess.run(["qemu-img", "create", "-q", "-f", "vhdx",
                    str(vm / "Virtual Hard Disks" / "system.vhdx"), "4M"], check=True)
    cfg = json.loads(rpfs("info", vm, "/", "--json").stdout)["hyperv_config"]
    assert (cfg["name"], cfg["generation"], cfg["processors"], cfg["memory_mib"],
            cfg["dynamic_memory"]) == ("fs01", 2, 4, 4096, True)
    assert [(d["controller_type"], d["controller"], d["location"], d["type"], d["stored_file"])
            for d in cfg["drives"]] == [
        ("scsi", 0, 0, "VHD", "Virtual Hard Disks/system.vhdx"),
        ("scsi", 0, 1, "ISO", None), ("scsi", 1, 0, "VHD", None)]
    assert [d.get("note", "").split(": ")[-1] for d in cfg["drives"]][1:] == \
        ["no stored file matches this configured path"] * 2


def test_key_loop_is_an_error():
    """A key whose parent chain loops back on itself: a FormatError, not a hang."""
    from tools.fixtures import vmcx_writer

    data = bytearray(vmcx_writer.write({"a": {"b": {"c": 1}}}))
    table = 3 * 4096
    first = table + 10                       # node "a", a child of the root
    size = struct.unpack_from("<I", data, first + 2)[0]
    second = first + size                    # node "b", child of "a"
    struct.pack_into("<HI", data, first + 6, 1, second - table)   # a's parent := b
    struct.pack_into("<I", data, first + 12, 0)
    import zlib
    entry = bytearray(data[first:first + size])
    struct.pack_into("<I", entry, 12, 0)
    struct.pack_into("<I", data, first + 12, zlib.crc32(bytes(entry)))
    with pytest.raises(FormatError):
        vmcx.read_keys(BytesStream(bytes(data)))


def test_file_objects_bounded():
    """Values of 2 KiB and more live in file objects: read equal to dissect.hypervisor up to
    64 KiB each, larger ones (a .VMRS's RAM blocks) and those past 16 MiB in all only sized."""
    import io

    from dissect.hypervisor.descriptor.hyperv import HyperVFile

    from tools.fixtures import vmcx_writer

    tree = {"a": {"big": b"x" * 5000, "text": "y" * 3000, "n": 1}}
    data = vmcx_writer.write(tree)
    assert HyperVFile(io.BytesIO(data)).as_dict() == tree == vmcx.read_keys(BytesStream(data))
    many = {"m": {f"v{i}": bytes([i % 251]) * 60_000 for i in range(300)}, "huge": b"z" * 70_000}
    keys = vmcx.read_keys(BytesStream(vmcx_writer.write(many)))
    assert keys["huge"] == {"skipped_bytes": 70_000}
    read = [v for v in keys["m"].values() if isinstance(v, bytes)]
    assert len(read) == (16 << 20) // 60_000 and read[0] == bytes(60_000)


def test_old_format_version_unsupported():
    """A version 1.x file (WCHAR key names): UnsupportedError saying which version."""
    import zlib

    from streams.errors import UnsupportedError
    from tools.fixtures import vmcx_writer

    data = bytearray(vmcx_writer.write({"a": 1}))
    for at in (0, 4096):
        struct.pack_into("<II", data, at + 4, 0, 0)          # checksum and sequence zeroed
        struct.pack_into("<I", data, at + 10, 0x0101)
        struct.pack_into("<I", data, at + 4, zlib.crc32(bytes(data[at:at + 46])))
    with pytest.raises(UnsupportedError, match="version 1.1 is not supported"):
        vmcx.read_keys(BytesStream(bytes(data)))


def test_checkpoint_list_equals_dissect(dissect_hyperv_dir):
    """global_settings/snapshots/list, as dissect.hypervisor reads it: on Hyper-V's own file
    ``{"size": 0}`` (no checkpoint); on the writer's, the ids in the order of their keys."""
    import io

    from dissect.hypervisor.descriptor.hyperv import HyperVFile

    from tools.fixtures import checkpoints as cpfix
    from tools.fixtures import vmcx_writer

    with open(dissect_hyperv_dir / "test.vmcx", "rb") as f:
        theirs = HyperVFile(f).as_dict()["configuration"]["global_settings"]["snapshots"]
    ours = vmcx.read_keys(FileStream(dissect_hyperv_dir / "test.vmcx"))
    assert ours["configuration"]["global_settings"]["snapshots"] == theirs
    assert theirs["list"] == {"size": 0}
    assert vmcx.vm_config(ours)["checkpoints"] == []
    ids = [f"1A2B3C4D-0000-4000-8000-0000000000{i:02d}" for i in range(12)]
    tree = cpfix.config("vm", "6C0E8A52-0000-4000-8000-00000000C4E1", "2026-11-01T00:00:00Z",
                        0, ids)
    data = vmcx_writer.write(tree)
    theirs = HyperVFile(io.BytesIO(data)).as_dict()
    assert vmcx.read_keys(BytesStream(data)) == theirs == tree
    assert theirs["configuration"]["global_settings"]["snapshots"]["list"]["size"] == 12
    assert vmcx.vm_config(theirs)["checkpoints"] == ids   # Snapshot10 after Snapshot9
    for name in (f"{cid}.vmcx" for cid in ids[:3]):   # a checkpoint's own configuration
        one = vmcx_writer.write(cpfix.config("Before update", name[:-5], "2026-11-02T09:15:00Z", 1))
        facts = vmcx.vm_config(vmcx.read_keys(BytesStream(one)))
        assert facts == vmcx.vm_config(HyperVFile(io.BytesIO(one)).as_dict())
        assert (facts["name"], facts["id"], facts["created"]) == (
            "Before update", name[:-5], "2026-11-02T09:15:00+00:00")
        assert [d["path"].rsplit("\\", 1)[-1] for d in facts["drives"]] == [
            "system_9F7C5B31-6D2E-4A8B-8C1D-2E3F4A5B6C01.avhdx",
            "data_9F7C5B31-6D2E-4A8B-8C1D-2E3F4A5B6C01.avhdx", "install.iso"]


def test_fixture_vm_has_a_real_configuration(small_fixtures):
    """The factory's VM folders hold a .vmcx from tools/fixtures/vmcx_writer (not random
    bytes): dissect.hypervisor reads it equal, and rpfs info maps each drive to its disk."""
    from dissect.hypervisor.descriptor.hyperv import HyperVFile

    for state in small_fixtures.vm_states:
        (path,) = (state / "Virtual Machines").glob("*.vmcx")
        with open(path, "rb") as f:
            assert vmcx.read_keys(FileStream(path)) == HyperVFile(f).as_dict()
        cfg = json.loads(rpfs("info", state, "/", "--json").stdout)["hyperv_config"]
        assert "error" not in cfg
        assert (cfg["name"], cfg["id"], cfg["generation"]) == (
            state.name, path.stem, 2)
        assert [(d["controller_type"], d["location"], d["type"], d.get("stored_file"))
                for d in cfg["drives"]] == [
            ("scsi", 0, "VHD", "Virtual Hard Disks/system.vhdx"),
            ("scsi", 1, "VHD", "Virtual Hard Disks/data.vhdx"), ("scsi", 2, "NONE", None)]
        assert not any("note" in d for d in cfg["drives"]) and cfg["checkpoints"] == []


def test_linux_fixture_vm_has_a_real_configuration():
    """linux01 (tools/fixtures/linux.py) has a .vmcx naming its four disks, all stored."""
    from tools.fixtures import linux

    try:
        vm = linux.image("vm")
    except linux.Unavailable as e:
        pytest.skip(str(e))
    for state in ("state1", "state2"):
        cfg = json.loads(rpfs("info", vm / state / "linux01", "/", "--json").stdout)["hyperv_config"]
        assert (cfg["name"], cfg["id"], cfg["processors"], cfg["memory_mib"]) == (
            "linux01", linux.VM_ID, 1, 1024)
        assert [d["stored_file"] for d in cfg["drives"]] == [
            f"Virtual Hard Disks/{d}" for d in ("root.vhdx", "lvm.vhdx", "lvm2.vhdx", "data.vhdx")]
