"""Starting a command costs only what it uses: parsing any command line, or serving a plain
repository's mount, never imports the S3 client, cryptography, the web stack, or the VHDX and
NTFS readers before a disk is opened. Each check runs in a fresh interpreter (this process has
imported everything already) and first proves it can see the modules it looks for."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from tests.helpers.cli import rpfs

NEVER_UNASKED = ["boto3", "botocore", "cryptography", "starlette", "uvicorn", "jinja2",
                 "rpfs.web"]
NOT_FOR_PARSING = NEVER_UNASKED + ["zstandard", "construct", "formats.vhdx", "ntfs_reader",
                                   "rpfs.store", "rpfs.index.build", "importlib.metadata"]

# never imported by a mount of a local repository up to its first volume listing: the restore
# command's module, the s3:// catalog cache's sync, pyfuse3 (the mount's binding is rpfs._fusell),
# trio (the mount's loop is rpfs.fuse_loop; trio was 61% of the instructions a mount imported),
# what only ``rpfs umount`` or a failing mount child uses (shutil with bz2 and lzma, subprocess,
# tempfile with random: ~6 ms of every mount command at load 4), hashlib with OpenSSL (the inode
# numbers' blake2b is _blake2's: ~2.5 ms), getpass with termios (only when a passphrase is asked),
# dataclasses with inspect, ast and dis (the value classes are streams.record's: making ~20
# dataclasses and importing these was 118 M of the 515 M instructions to a first listing),
# logging with traceback, linecache and tokenize (rpfs.log loads it at the first message) and
# concurrent.futures, which imports logging (read-ahead's single flight is its own; its pool
# is made when a sequential reader appears): 25 M more; argparse with gettext and locale (a
# simple mount line is read by rpfs.cli.quick); ctypes with libffi (rpfs.heap's two glibc
# calls are rpfs._malloc's); the zstandard package (its extension is 11.6 MB with debug
# information, all read by a cold start: ~20 ms; a reader decodes with rpfs.store._zstd);
# the read commands' module with its json output, progress and rate limits (rpfs.cli.opening
# opens the source); the index's modules when there is no index (rpfs.source)
NOT_FOR_MOUNTING = ["rpfs.restore", "rpfs.store.maintenance.sync", "pyfuse3", "trio", "zstandard",
                    "rpfs.cli.browse", "rpfs.cli.jsonout", "rpfs.progress",
                    "rpfs.ratelimit", "rpfs.index.versions", "rpfs.index.db",
                    "shutil", "bz2", "lzma", "subprocess", "tempfile", "random",
                    "hashlib", "_hashlib", "getpass", "termios",
                    "dataclasses", "inspect", "ast", "dis", "logging", "traceback",
                    "linecache", "tokenize", "concurrent.futures", "argparse", "gettext",
                    "locale", "ctypes"]

# never imported on the way to a plain NTFS volume's files (a mount's first listing, a restore):
# construct (the on-disk records are streams.layout.Layout), the crc32c package and the
# importlib.metadata it imports (streams.crc32c is ours), the volume layers of disks that do not
# carry their marker (formats.probes), the VHDX log replay of a file closed cleanly, the index's
# readers behind /<vm>/.versions
NOT_FOR_READING = ["construct", "crc32c", "formats.ldm", "formats.lvm", "formats.vss",
                   "formats.vhdx.log", "rpfs.index.diff", "rpfs.index.query"]

# never imported by a restore from a plain (not encrypted) local repository: random names of
# new packs, locks and repositories are os.urandom's (secrets imports random, hmac, base64
# and hashlib, whose OpenSSL load alone is ~10 M instructions), a long NTFS name's digest
# and an s3:// cache directory's hash load hashlib when they are met, a key file's base64
# only for an encrypted repository; a simple restore line builds no argparse parser, whose
# help formatter imports shutil with bz2 and lzma (rpfs/cli/quick.py); the restore's writers
# and the read-ahead pool are rpfs.workers', not concurrent.futures, which imports logging
# with traceback, linecache and tokenize (27 M of a restore's 835 M instructions)
NOT_FOR_RESTORING = ["secrets", "random", "hmac", "hashlib", "_hashlib", "base64",
                     "shutil", "bz2", "lzma", "concurrent.futures", "logging", "traceback",
                     "linecache", "tokenize", "typing"]


def loaded_after(code: str) -> dict[str, set]:
    """Run ``code`` in a fresh interpreter; each ``snapshot(label)`` it calls records the
    modules loaded at that point."""
    prelude = ("import json, sys\n"
               "def snapshot(label):\n"
               "    print(json.dumps([label, sorted(sys.modules)]), flush=True)\n")
    r = subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return {label: set(mods) for label, mods in map(json.loads, r.stdout.splitlines())}


def heavy(loaded: set, names: list[str]) -> list[str]:
    return sorted(m for m in loaded if any(m == n or m.startswith(n + ".") for n in names))


@pytest.fixture(scope="module")
def plain_repo(small_fixtures, tmp_path_factory):
    """A local repository holding the small fixture VM once (no index): what these tests
    open. Tests that change it work on a copy."""
    repo = tmp_path_factory.mktemp("startup") / "repo"
    rpfs("init", repo)
    rpfs("backup", repo, small_fixtures.vm_states[0], "--vm", "web01", "--no-index",
         "--time", "2026-11-01T02:00:00Z")
    return repo


def test_parsing_any_command_line_imports_nothing_heavy():
    snaps = loaded_after("""
import contextlib, io
import rpfs.cli
parser = rpfs.cli.build_parser()
for argv in (["ls", "R", "/"], ["restore", "R", "/a", "D"], ["mount", "R", "M"],
             ["backup", "R", "S", "--vm", "x"], ["find", "R", "*.txt"], ["serve", "R"],
             ["ls", "--help"], ["--help"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        parser.parse_args(argv)
snapshot("parsed")
import rpfs.store  # the control: what opening a repository loads is seen
snapshot("store")
""")
    assert heavy(snaps["parsed"], NOT_FOR_PARSING) == []
    assert "rpfs.cli.mount" in snaps["parsed"]
    assert {"sqlite3", "rpfs.store"} <= snaps["store"]


def test_plain_repository_mount_opens_only_what_it_lists(plain_repo):
    repo = plain_repo
    snaps = loaded_after(f"""
snapshot("interpreter")   # site: a development install's finder may load pathlib (setup.sh: not)
import rpfs.cli.mount  # the command's module and what it imports
import rpfs.cli.options  # every command's StoreOptions
import rpfs.fuse  # the mount imports its adapter before it forks
from rpfs import heap
heap.limit_arenas()   # as the mount's child does (rpfs._malloc: no ctypes)
heap.keep_chunk_buffers()
from rpfs.source import open_source
tree = open_source({str(repo)!r})
ops = rpfs.fuse.Operations(tree)
[n.attr() for n in tree.root.iterdir()]
[n.attr() for n in tree.resolve("/web01").iterdir()]
snapshot("listed")
vols = tree.resolve("/web01/latest/volumes")
ntfs = next(v for v in vols.iterdir() if not v.name.startswith("lvm-"))
[n.attr() for n in ntfs.iterdir()]
snapshot("ntfs")
for vol in vols.iterdir():
    for n in vol.iterdir():
        n.attr()
snapshot("volumes")
""")
    listed, volumes = snaps["listed"], snaps["volumes"]
    assert heavy(listed, NEVER_UNASKED + ["formats.vhdx", "ntfs_reader", "rpfs.index.build"]) == []
    assert heavy(volumes, NEVER_UNASKED) == []
    assert {"formats.vhdx", "ntfs_reader"} <= volumes   # a volume really was read
    assert "formats.vhdx.writer" not in volumes          # reading needs no writer
    assert "formats.bitlocker.volume" not in volumes     # nor, with no BitLocker volume, its cipher
    assert heavy(volumes, NOT_FOR_MOUNTING) == []        # modules of other commands, or s3:// only
    assert heavy(volumes, NOT_FOR_READING + ["importlib.metadata"]) == []   # was pyfuse3's and crc32c's
    # typing (a 157 KB module, ~2 ms: collections.abc and collections.namedtuple serve) on
    # the way to an NTFS volume's first listing (the Linux file systems' readers use it)
    assert "ntfs_reader" in snaps["ntfs"] and heavy(snaps["ntfs"], ["typing"]) == []
    # pathlib with urllib.parse and ipaddress: a repository's path is os.path's (rpfs.tree)
    assert heavy(volumes - snaps["interpreter"], ["pathlib", "urllib", "ipaddress"]) == []


def test_a_simple_mount_line_builds_no_parser():
    """``rpfs mount SOURCE MOUNTPOINT`` is read without argparse (rpfs.cli.quick): the
    command's own code runs with none of NOT_FOR_MOUNTING loaded."""
    snaps = loaded_after("""
import rpfs.cli.mount
rpfs.cli.mount.cmd_mount = lambda args: snapshot("parsed" if args.cache_size else "simple")
from rpfs.cli import main
assert main(["mount", "R", "M"]) == 0
assert main(["mount", "R", "M", "--cache-size", "1G"]) == 0   # the control: argparse's to read
""")
    assert "rpfs.cli.options" in snaps["simple"]   # the command ran, with its StoreOptions
    assert heavy(snaps["simple"], NOT_FOR_MOUNTING) == []
    assert "argparse" in snaps["parsed"]


def test_restore_of_a_plain_volume_loads_nothing_it_does_not_read(tmp_path, plain_repo):
    repo = plain_repo
    ntfs = [n for n in rpfs("ls", repo, "/web01/latest/volumes").stdout.decode().split()
            if not n.startswith("lvm-")]
    dest = tmp_path / "out"
    snaps = loaded_after(f"""
from rpfs.cli import main
for vol in {ntfs!r}:
    assert main(["restore", {str(repo)!r}, "/web01/latest/volumes/" + vol, {str(dest)!r} + "/" + vol]) == 0
snapshot("restored")
""")
    restored = snaps["restored"]
    assert {"rpfs.restore", "formats.vhdx", "ntfs_reader"} <= restored   # it really read NTFS
    assert any(dest.rglob("*"))
    assert heavy(restored, NEVER_UNASKED + NOT_FOR_READING + ["importlib.metadata"]) == []
    assert heavy(restored, NOT_FOR_RESTORING) == []


def test_an_export_of_a_disk_builds_no_parser_and_loads_no_logging(tmp_path, plain_repo):
    """``rpfs export SOURCE DISK DEST --format raw`` is read without argparse
    (rpfs.cli.quick), and read-ahead runs on rpfs.workers' pool, not concurrent.futures
    (which imports logging, traceback and tokenize): 24 M and 30 M instructions of the start."""
    repo = plain_repo
    disk = rpfs("ls", repo, "/web01/latest/disks").stdout.decode().split()[0]
    dest = tmp_path / "out.raw"
    snaps = loaded_after(f"""
from rpfs.cli import main
assert main(["export", {str(repo)!r}, "/web01/latest/disks/{disk}", {str(dest)!r}, "--format", "raw"]) == 0
snapshot("exported")
""")
    exported = snaps["exported"]
    assert dest.stat().st_size > 0 and {"formats.raw_writer", "formats.writebehind"} <= exported
    assert "rpfs.workers" in exported   # the read-ahead pool ran
    assert heavy(exported, ["argparse", "concurrent.futures", "logging", "traceback", "tokenize",
                            "rpfs.restore", "shutil"]) == []


def test_reading_a_small_table_decodes_nothing_ahead(plain_repo):
    """Opening a file system reads small tables in a row ($UpCase: 128 KiB in 4 KiB reads);
    read-ahead waits until a run spans a whole chunk, so a mount's first listing decodes only
    the chunks it reads (it decoded 26 instead of 2 in the 1,000-recovery-point bench)."""
    from rpfs.store import Repository

    repo = plain_repo
    with Repository.open(repo) as r:
        rp = r.recovery_points("web01")[0]
        name, size = max(r.files(rp).items(), key=lambda f: f[1])
        f = r.open_file(rp, name)
        cs = f.chunk_size
        assert size > 4 * cs
        for pos in range(cs, cs + (128 << 10), 4096):   # a table read in clusters
            f.read(pos, 4096)
        assert r.loader.prefetched == 0
        for pos in range(cs + (128 << 10), 3 * cs, 64 << 10):   # the same run goes on
            f.read(pos, 64 << 10)
        assert r.loader.prefetched > 0   # the control: read-ahead is seen once it is due


def _first_listing(repo, monkeypatch) -> tuple[list[str], int, int, int, int]:
    """The catalog statements, read-ahead jobs, volumes opened, recovery points made and
    connections to the catalog opened from opening ``repo`` to looking up ``latest`` in its
    VM and listing (with attributes) its volumes and the first volume's root, as a mount's
    first listing does (in one thread)."""
    from rpfs import tree as tree_module
    from rpfs.source import open_source
    from rpfs.store import catalog

    statements: list[str] = []
    catalogs: list[str] = []
    opened: list[str] = []
    made: list[str] = []
    connect = catalog.connect
    open_probed = tree_module.open_probed
    rp_init = tree_module.RepoRecoveryPoint.__init__

    def traced(*a, **k):
        db = connect(*a, **k)
        db.set_trace_callback(statements.append)
        return db

    monkeypatch.setattr(catalog, "connect", traced)
    sqlite_connect = catalog.sqlite3.connect
    monkeypatch.setattr(catalog.sqlite3, "connect", lambda path, *a, **k: (
        catalog.CATALOG_NAME in str(path) and catalogs.append(path)) or sqlite_connect(path, *a, **k))
    monkeypatch.setattr(tree_module, "open_probed",
                        lambda kind, stream: opened.append(kind) or open_probed(kind, stream))
    monkeypatch.setattr(tree_module.RepoRecoveryPoint, "__init__",
                        lambda self, repo, rp, keys=None: made.append(rp.name) or
                        rp_init(self, repo, rp, keys))
    tree = open_source(repo)
    try:
        [n.attr() for n in tree.root.iterdir()]
        vm = tree.resolve("/web01")
        vm.attr()
        latest = vm.child("latest").readlink()
        vols = sorted(n.name for n in tree.resolve(f"/web01/{latest}/volumes").iterdir())
        assert opened == []   # listing volumes/ reads each one's signature, opens none
        [n.attr() for n in tree.resolve(f"/web01/latest/volumes/{vols[0]}").iterdir()]
        return statements, tree.repo.loader.prefetched, len(opened), len(made), len(catalogs)
    finally:
        tree.close()
        monkeypatch.undo()


def test_first_listing_costs_the_same_with_more_recovery_points(tmp_path, plain_repo,
                                                                small_fixtures, monkeypatch):
    """Counted, not timed: from opening a repository to a volume's first listing the catalog
    answers a fixed number of statements (``latest`` and the recovery point it names come by
    one row each, the VM's list is not read; the bench's VM has 1,000), read-ahead starts the
    same jobs and one recovery point is made (the one ``latest`` names: making the VM's 1,000
    was 2/3 of the mount's first lookups in the VM), however many recovery points there
    are."""
    repo = tmp_path / "repo"
    shutil.copytree(plain_repo, repo)
    statements, prefetched, opened, made, catalogs = _first_listing(repo, monkeypatch)
    assert 0 < len(statements) <= 14, statements   # the schema check's two included
    assert prefetched == 0   # the probes' and the volume's small reads start no read-ahead
    assert opened == 1       # of the VM's volumes, only the one listed is opened
    assert made == 1         # of the VM's recovery points, only latest's
    assert catalogs == 1     # checked and read through one connection (catalog.checked)
    # `latest` and the recovery point it names by one row each, not the VM's whole list
    assert not any("ORDER BY r.time, r.name" in s for s in statements), statements
    rpfs("backup", repo, small_fixtures.vm_states[0], "--vm", "web01", "--no-index",
         "--time", "2026-11-02T02:00:00Z")
    statements2, prefetched2, opened2, made2, catalogs2 = _first_listing(repo, monkeypatch)
    assert "2026-11-02T020000Z" in str(rpfs("ls", repo, "/web01").stdout)   # it was added
    assert len(statements2) == len(statements), (statements, statements2)
    assert (prefetched2, opened2, made2, catalogs2) == (prefetched, opened, made, catalogs)
    from rpfs.node import Node
    from rpfs.source import open_source

    with open_source(repo) as tree:   # what a lookup found is what the listing then has
        vm = tree.resolve("/web01")
        link = vm.child("latest")
        rp = vm.child(link.readlink())
        assert link.readlink() == "2026-11-02T020000Z"
        listed = {n.name: n for n in vm.iterdir()}
        assert listed["latest"] is link and listed["2026-11-02T020000Z"] is rp
        assert vm.child("2026-11-02T020000Z") is rp
    with open_source(repo) as tree:   # a listing of the VM makes each
        listed = list(tree.resolve("/web01").iterdir())
        assert {"latest", "2026-11-01T020000Z", "2026-11-02T020000Z"} <= {n.name for n in listed}
        assert all(isinstance(n, Node) for n in listed)
        assert tree.resolve("/web01/2026-11-01T020000Z") is tree.resolve("/web01/2026-11-01T020000Z")


def test_what_a_restore_imports_is_frozen_out_of_garbage_collection(tmp_path, plain_repo):
    """Objects made by imports live as long as the process: after a restore (parsing, the
    repository, the volume's readers imported while resolving the path) they are in
    ``gc.freeze``'s permanent generation, so neither the collections during the restore
    nor the interpreter's teardown traverse them again (~35 M instructions of a restore of
    4,000 small files). Counted: tracked objects frozen against those left to collect."""
    repo = plain_repo
    vol = next(n for n in rpfs("ls", repo, "/web01/latest/volumes").stdout.decode().split()
               if not n.startswith("lvm-"))
    code = f"""
import gc, sys
import rpfs.cli.browse
from rpfs.cli import main
sys.argv = ["rpfs", "restore", {str(repo)!r}, "/web01/latest/volumes/{vol}", {str(tmp_path / "out")!r}]
end = rpfs.cli.browse.end_of_command   # which ends the process (os._exit): counted before
def counted(code):
    print(gc.get_freeze_count(), len(gc.get_objects()), flush=True)
    return end(code)
rpfs.cli.browse.end_of_command = counted
raise SystemExit(main())   # the process's own command line, as `rpfs restore` runs it
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    frozen, young = map(int, r.stdout.split())
    assert any((tmp_path / "out").rglob("*"))
    assert frozen > 10_000 and young < frozen // 4, (frozen, young)   # (23,018, 1,674)
