"""Damaged ext4 images: truncated, bit-flipped, a directory linked below itself (made with
debugfs, e2fsprogs' own editor), a journal whose log is damaged. Every answer is a typed
error for the object concerned (or good data), never another exception or a hang, and
the rest of the volume stays readable."""

import random
import shutil
import subprocess

import pytest

from streams.errors import RpfsError
from rpfs.restore import restore
from streams.stream import BytesStream, FileStream
from rpfs.source import open_source
from tools.fixtures import linux

import ext4_reader


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A small ext4 (metadata_csum) and the same without checksums, from mkfs -d."""
    d = tmp_path_factory.mktemp("ext4h")
    src = d / "src"
    (src / "a" / "b").mkdir(parents=True)
    for i in range(60):
        (src / "a" / f"f{i:02d}").write_bytes(bytes([i]) * (i * 300))
    (src / "a" / "b" / "deep").write_text("deep\n")
    (src / "big").write_bytes(random.Random(2).randbytes(200_000))
    out = {}
    for name, opts in (("csum", "metadata_csum"), ("plain", "^metadata_csum")):
        img = d / f"{name}.img"
        subprocess.run(["mkfs.ext4", "-q", "-F", "-O", opts, "-N", "128", "-d", str(src),
                        str(img), "4M"], check=True, capture_output=True)
        out[name] = img.read_bytes()
    return out


def walk_everything(vol) -> int:
    """Walk and read all; returns how many objects answered with a typed error."""
    errors = 0
    try:
        stack = [vol.root]
    except RpfsError:
        return 1
    seen = set()
    while stack:
        d = stack.pop()
        try:
            children = list(d.iterdir())
        except RpfsError:
            errors += 1
            continue
        for e in children:
            try:
                e.kind, e.mode, e.size, e.nlink, e.mtime_ns, e.xattrs()
                if e.kind == "dir" and e.ino not in seen:
                    seen.add(e.ino)
                    stack.append(e)
                elif e.kind == "symlink":
                    e.readlink()
                elif e.kind == "file":
                    s = e.open()
                    for off in range(0, min(s.size, 1 << 20), 65536):
                        s.read(off, 65536)
                    list(s.extents())
            except RpfsError:
                errors += 1
    return errors


@pytest.mark.parametrize("kind", ["csum", "plain"])
def test_bit_flips_give_typed_errors_only(small, kind):
    data = small[kind]
    rnd = random.Random(7)
    vol = ext4_reader.open_volume(BytesStream(data))
    assert walk_everything(vol) == 0
    hot = [i for i in range(0, 1 << 20, 1024) if data[i:i + 1024].strip(b"\0")]
    typed = 0
    for _ in range(150):
        bad = bytearray(data)
        for _ in range(rnd.randint(1, 8)):
            block = rnd.choice(hot)
            bad[block + rnd.randrange(1024)] ^= 1 << rnd.randrange(8)
        try:
            v = ext4_reader.open_volume(BytesStream(bytes(bad)))
        except RpfsError:
            typed += 1
            continue
        typed += walk_everything(v) > 0
    assert typed > 10          # the flips did hit something the reader checks


def test_checksums_catch_what_a_plain_volume_cannot(small):
    """The same flip in an inode: with metadata_csum a typed error naming the inode."""
    vol = ext4_reader.open_volume(BytesStream(small["csum"]))
    e = vol.lookup("/a/f10")
    g, i = divmod(e.ino - 1, vol.sb.inodes_per_group)
    off = vol._desc(g).inode_table * vol.block_size + i * vol.sb.inode_size + 4   # i_size
    bad = bytearray(small["csum"])
    bad[off] ^= 0x10
    v = ext4_reader.open_volume(BytesStream(bytes(bad)))
    with pytest.raises(RpfsError, match=rf"ext4 inode {e.ino}: .*checksum"):
        v.lookup("/a/f10").size
    assert v.lookup("/a/f11").size == 11 * 300


def test_truncated_images(small):
    data = small["csum"]
    for cut in (0, 1000, 1024 + 512, 2048, 4096, 20_000, 100_000, 1 << 20, len(data) - 4096):
        s = BytesStream(data[:cut])
        if not ext4_reader.probe(s):
            continue
        try:
            v = ext4_reader.open_volume(s)
        except RpfsError:
            continue
        walk_everything(v)


@pytest.mark.allow_error_log       # restore logs the cycle it did not follow
def test_directory_cycle_does_not_hang(small, tmp_path):
    """debugfs links a directory below itself; walking, restoring and indexing end."""
    img = tmp_path / "cycle.img"
    img.write_bytes(small["plain"])
    subprocess.run(["debugfs", "-w", "-R", "ln /a /a/b/loop", str(img)], check=True,
                   capture_output=True)
    tree = open_source(img)
    vol_name = next(n.name for n in tree.resolve("/volumes").iterdir())
    node = tree.resolve(f"/volumes/{vol_name}/a/b/loop")
    assert node.kind == "dir" and node.key == tree.resolve(f"/volumes/{vol_name}/a").key
    result = restore(tree.resolve(f"/volumes/{vol_name}"), str(tmp_path / "out"))
    assert any("contains itself" in e for e in result.errors)
    assert (tmp_path / "out" / vol_name / "a" / "b" / "deep").read_text() == "deep\n"
    from rpfs.index.query import find_entries
    hits = list(find_entries(tree, "deep", notice=lambda text: None))
    assert [h["path"] for h in hits] == ["/a/b/deep"]


def test_damaged_journal_is_not_replayed_past_the_damage():
    """The journal fixture with its commit block damaged: the transaction does not count
    (as for the kernel), the volume opens and reads what is at home."""
    try:
        img = linux.image("ext4-journal") / "journal.img"
    except linux.Unavailable as e:
        pytest.skip(str(e))
    data = bytearray(img.read_bytes())
    vol = ext4_reader.open_volume(BytesStream(bytes(data)))
    assert vol.replayed_transactions >= 1
    j = vol._journal
    run = vol.block_map(vol.inode(vol.sb.journal_inum)).runs[0]
    bs = vol.block_size
    # find the first commit block in the log and break its checksum
    for n in range(j.start, j.maxlen):
        at = (run.physical + n) * bs
        if data[at:at + 4] == b"\xc0\x3b\x39\x98" and data[at + 7] == 2:
            data[at + 60] ^= 0xFF
            break
    else:
        pytest.fail("no commit block in the log")
    damaged = ext4_reader.open_volume(BytesStream(bytes(data)))
    assert damaged.replayed_transactions < vol.replayed_transactions
    walk_everything(damaged)


def test_fixture_images_stay_readable_after_copy(small, tmp_path):
    """FileStream over a sparse copy (the common case: images on disk) reads as bytes do."""
    p = tmp_path / "x.img"
    p.write_bytes(small["csum"])
    assert walk_everything(ext4_reader.open_volume(FileStream(p))) == 0
