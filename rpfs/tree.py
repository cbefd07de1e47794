"""The one namespace every front end shares (DESIGN.md, "The namespace").

    /<vm>/<rp>/files/<relative path>    stored source files, byte for byte
    /<vm>/<rp>/disks/<disk>.raw         each virtual disk, chains resolved
    /<vm>/<rp>/volumes/<disk>-p<N>/     each volume found (NTFS, BitLocker, LVM, LDM, Linux)
    /<vm>/<rp>/checkpoints/<name>/      disks/ and volumes/ as a Hyper-V checkpoint left them
                                        (rpfs/checkpoints.py)

For a single image or a VM folder the tree starts at ``files/ disks/ volumes/`` (and
``checkpoints/`` for a folder).

Nodes are built lazily from the layers below and cached per recovery point, so listing a
VM never opens a disk, listing ``volumes/`` opens no volume's file system (``VolumeDir``)
and looking up one file never walks a volume. The CLI and the FUSE
adapter only translate nodes; neither knows about formats, NTFS or the store.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable

from streams.errors import FormatError, NotFoundError, RpfsError, UnsupportedError, UsageError
from rpfs.node import (  # noqa: F401  (the node contract, importable from here too)
    REFRESH_SECONDS, Attr, BrokenNode, Later, Node, StaticDir, StreamFile, Symlink,
)
from rpfs import checkpoints, nspath
from rpfs.checkpoints import Checkpoint, error_of, stored_match
from rpfs.once import once
from streams.stream import FileStream, Spans, Stream
from rpfs.log import get_logger

log = get_logger(__name__)

DISK_SUFFIXES = (".vhdx", ".avhdx", ".vhd", ".avhd")
MAX_SYMLINK_HOPS = 40
MAX_CHECKPOINT_CONFIGS = 256   # checkpoint .vmcx files read for rpfs info


# ---------------------------------------------------------------------------------------
# Recovery points: files/, disks/, volumes/


class RecoveryPoint:
    """The files of one recovery point and what is parsed from them (cached, lazily).

    Subclasses say which files there are and how to open one; disks and volumes are the
    same for a repository, a VM folder and a single image.
    """

    key: tuple = ()
    mtime_ns: int = 0
    keys = None  # formats.bitlocker.KeyRing from --keys: unlocks BitLocker volumes

    def file_sizes(self) -> dict[str, int]:
        raise NotImplementedError

    def open_file(self, path: str) -> Stream:
        raise NotImplementedError

    # -- disks ---------------------------------------------------------------------------

    @once
    def chains(self):
        """Every stored disk file opened and linked to its parent (a ``formats.Resolution``),
        None when there is none. Shared by ``disks`` and the checkpoints."""
        import formats

        sizes = self.file_sizes()
        streams = {path: _LazyStream(functools.partial(self.open_file, path), sizes[path], path)
                   for path in sizes if path.lower().endswith(DISK_SUFFIXES + (".raw", ".img"))}
        return formats.resolve_all(streams) if streams else None

    @once
    def disks(self) -> dict[str, object]:
        """stem -> Disk (the leaf of each chain), or a BrokenNode-worthy error."""
        res = self.chains
        if res is None:
            return {}
        disks: dict[str, object] = dict(res.disks)
        for stem, err in res.failed.items():  # one broken chain hides nothing else
            log.info("%s", err)  # reported by the disk's node when someone uses it
            disks.setdefault(stem, err)
        return disks

    @once
    def volume_streams(self) -> dict[str, object]:
        """``<disk>-p<N>`` -> the partition's bytes as Windows presents them (BitLocker
        volumes decrypted with ``self.keys``), or the error saying why they cannot be read."""
        import formats
        from formats import bitlocker

        out: dict[str, object] = {}
        for stem, disk in sorted(self.disks.items()):
            if isinstance(disk, Exception):
                continue
            try:
                table = formats.read_partitions(disk)
            except RpfsError as e:
                out[f"{stem}-p0"] = e
                continue
            for part in table.partitions:
                if not part.readable:
                    continue
                try:
                    out[f"{stem}-p{part.number}"] = bitlocker.unwrap(part.stream, self.keys)
                except RpfsError as e:  # locked or damaged: listed, and says why
                    out[f"{stem}-p{part.number}"] = e
        out.update(self.lvm_volumes)
        out.update(self.ldm_volumes)
        return out

    @once
    def ldm_volumes(self) -> dict[str, object]:
        """``ldm-<volume>`` -> each Windows dynamic volume's bytes (BitLocker ones decrypted
        with ``self.keys``), assembled across this recovery point's dynamic disks, or why not."""
        from formats import probes

        disks = {stem: d for stem, d in sorted(self.disks.items())
                 if not isinstance(d, Exception)}
        if not any(probes.ldm_privhead_offset(d) is not None for d in disks.values()):
            return {}
        from formats import bitlocker, ldm

        out: dict[str, object] = {}
        for name, value in ldm.assemble(disks).items():
            if isinstance(value, Exception):
                out[name] = value
                continue
            try:
                out[name] = bitlocker.unwrap(value, self.keys)
            except RpfsError as e:
                out[name] = e
        return out

    @once
    def lvm_volumes(self) -> dict[str, object]:
        """``lvm-<vg>-<lv>`` -> each LVM2 logical volume's bytes (its physical volumes may be
        partitions or whole disks of any of this recovery point's disks), or why not."""
        from formats import probes

        pvs = {}
        for stem, disk in sorted(self.disks.items()):
            if isinstance(disk, Exception):
                continue
            for name, stream in _partition_streams(stem, disk):
                if probes.lvm_label_sector(stream) is not None:
                    pvs[name] = stream
        if not pvs:
            return {}
        from formats import lvm

        return {f"lvm-{vg}-{lv}": value for (vg, lv), value in lvm.assemble(pvs).items()}

    @once
    def volume_kinds(self) -> dict[str, object]:
        """``<disk>-p<N>`` / ``lvm-<vg>-<lv>`` -> which reader knows the stream (``"ntfs"`` or a
        POSIX reader's module, from its signature: a sector or two, nothing parsed) or the
        error saying why it cannot be read. Streams holding no known file system (MSR, swap,
        LVM physical volumes) are left out. Listing ``volumes/`` needs only this."""
        out: dict[str, object] = {}
        for name, stream in self.volume_streams.items():
            if isinstance(stream, Exception):
                out[name] = stream
                continue
            kind = probe_filesystem(stream)
            if kind is None and _is_bitlocker_volume(stream):
                kind = UnsupportedError(f"{name}: the decrypted BitLocker volume holds no NTFS "
                                        "file system (export it with --format raw)")
            if kind is not None:
                out[name] = kind
        return out

    @once
    def _opened(self) -> tuple[threading.Lock, dict]:
        return threading.Lock(), {}

    def volume(self, name: str):
        """The Volume (NTFS, or a POSIX one per docs/filesystems.md) named ``name`` in
        ``volume_kinds``, opened on first use and kept, or the error saying why it cannot be
        read (KeyError: no such volume)."""
        kind = self.volume_kinds[name]
        if isinstance(kind, Exception):
            return kind
        lock, opened = self._opened
        with lock:   # one Volume per volume, however many threads ask
            vol = opened.get(name)
            if vol is None:
                vol = opened[name] = open_probed(kind, self.volume_streams[name])
        return vol

    @property
    def volumes(self) -> dict[str, object]:
        """``volume(name)`` of every volume: each one opened (``volume_kinds`` to list)."""
        return {name: self.volume(name) for name in self.volume_kinds}

    @once
    def shadow_copies(self) -> dict[str, object]:
        """``<disk>-p<N>`` -> the in-guest shadow copies (formats.vss.ShadowCopies) of each
        NTFS volume that holds VSS stores, or the error saying why they cannot be read (the
        VSS header is probed on the volume's bytes: its file system is not opened)."""
        from formats import probes

        out: dict[str, object] = {}
        for name, kind in self.volume_kinds.items():
            if kind != "ntfs":
                continue
            stream = self.volume_streams[name]
            try:
                if probes.vss_probe(stream):
                    from formats import vss
                    out[name] = vss.ShadowCopies(stream)
            except RpfsError as e:
                out[name] = e
        return out

    @once
    def shadow_volumes(self) -> dict[str, object]:
        """``<disk>-p<N>.vss/<creation time>`` -> the NTFS Volume of each shadow copy (what
        the index and ``find`` read besides ``volumes``), or the error saying why not."""
        from ntfs_reader import Volume

        out: dict[str, object] = {}
        for name, copies in sorted(self.shadow_copies.items()):
            if isinstance(copies, Exception):
                continue
            for sname, store in store_names(copies):
                try:
                    out[f"{name}.vss/{sname}"] = Volume(copies.open(store))
                except RpfsError as e:
                    out[f"{name}.vss/{sname}"] = e
        return out

    @once
    def hyperv_config(self) -> dict | None:
        """What the VM's ``.vmcx`` says (name, id, generation, processors, memory, drives
        mapped to stored files, checkpoints), or ``{"error": ...}`` for a damaged one; None
        when no ``.vmcx`` is stored. A ``.vmcx`` under a ``Snapshots`` folder is a
        checkpoint's configuration: listed under ``checkpoint_configs``."""
        sizes = self.file_sizes()
        found = sorted(p for p in sizes if p.lower().endswith(".vmcx"))
        if not found:
            return None
        snaps = [p for p in found if "snapshots" in p.lower().split("/")[:-1]]
        path = next((p for p in found if p not in snaps), found[0])
        out = self._read_vmcx(path)
        if "error" in out:
            return out
        for drive in out["drives"]:
            if drive["path"]:
                drive["stored_file"] = stored_match(drive["path"], sizes)
                if drive["stored_file"] is None:
                    drive["note"] = f"{drive['path']}: no stored file matches this configured path"
        configs = []
        for snap in snaps[:MAX_CHECKPOINT_CONFIGS]:
            if snap == path:
                continue
            cfg = self._read_vmcx(snap)
            configs.append(cfg if "error" in cfg else
                           {k: cfg[k] for k in ("file", "name", "id", "created")})
        if configs:
            out["checkpoint_configs"] = configs
        return out

    def _read_vmcx(self, path: str) -> dict:
        from formats import vmcx

        try:
            return {"file": path, **vmcx.vm_config(vmcx.read_keys(self.open_file(path)))}
        except RpfsError as e:   # one line, naming the file once (as stored)
            if isinstance(e, FormatError):
                e.source = path
            msg = str(e).replace("\n", " ")
            return {"file": path, "error": msg if msg.startswith(path) else f"{path}: {msg}"}

    def has_checkpoints(self) -> bool:
        """Whether ``checkpoints/`` is shown: decided from stored file names alone."""
        return checkpoints.may_have_checkpoints(self.file_sizes())

    @once
    def checkpoints(self) -> list:
        """The VM's Hyper-V checkpoints (``rpfs.checkpoints.Checkpoint``), named."""
        return checkpoints.find(self) if self.has_checkpoints() else []

    def describe(self) -> dict:
        cfg = self.hyperv_config
        out = {} if cfg is None else {"hyperv_config": cfg}
        if self.checkpoints:
            out["checkpoints"] = [cp.describe() for cp in self.checkpoints]
        return out

    def node(self, name: str, key: tuple) -> StaticDir:
        def children() -> list[Node]:
            nodes = [
                StaticDir("files", key + ("files",), lambda: files_tree(self, key + ("files",)),
                          self.mtime_ns),
                StaticDir("disks", key + ("disks",), lambda: disk_nodes(self, key + ("disks",)),
                          self.mtime_ns),
                StaticDir("volumes", key + ("volumes",),
                          lambda: volume_nodes(self, key + ("volumes",)), self.mtime_ns)]
            if self.has_checkpoints():
                nodes.append(checkpoints_node(self, key + ("checkpoints",)))
            return nodes

        return StaticDir(name, key, children, self.mtime_ns, info=self.describe)


# ---------------------------------------------------------------------------------------
# Hyper-V checkpoints (rpfs/checkpoints.py finds them): each a recovery point of its own
# with disks/ and volumes/


class CheckpointRecoveryPoint(RecoveryPoint):
    """Checkpoint ``cp`` of recovery point ``rp``: its disks are the chains ending at the
    checkpoint's files; volumes, LVM, LDM, BitLocker and shadow copies follow from them as
    for any recovery point. Stored files and Disk objects are shared with ``rp``."""

    def __init__(self, rp: RecoveryPoint, cp: Checkpoint):
        self.parent = rp
        self.checkpoint = cp
        self.key = rp.key + ("checkpoint", cp.name)
        self.mtime_ns = rp.mtime_ns

    @property
    def keys(self):
        return self.parent.keys

    def file_sizes(self) -> dict[str, int]:
        return self.parent.file_sizes()

    def open_file(self, path: str):
        return self.parent.open_file(path)

    @once
    def disks(self) -> dict[str, object]:
        res = self.parent.chains
        return {key: res.opened[path] for key, path in self.checkpoint.disks.items()}

    @property
    def checkpoints(self) -> list[Checkpoint]:
        return []

    def describe(self) -> dict:
        return {"checkpoint": self.checkpoint.describe()}

    def node(self, name: str, key: tuple) -> StaticDir:
        return StaticDir(name, key, lambda: [
            StaticDir("disks", key + ("disks",), lambda: disk_nodes(self, key + ("disks",)),
                      self.mtime_ns),
            StaticDir("volumes", key + ("volumes",),
                      lambda: volume_nodes(self, key + ("volumes",)), self.mtime_ns),
        ], self.mtime_ns, info=self.describe)


def checkpoints_node(rp: RecoveryPoint, key: tuple) -> StaticDir:
    """``checkpoints/``: one directory per checkpoint; one that cannot be read is listed
    and answers its one error (EIO in the mount)."""

    def children() -> list:
        nodes = []
        for cp in rp.checkpoints:
            k = key + (cp.name,)
            if cp.error:
                nodes.append(BrokenNode(cp.name, k, error_of(cp), kind="dir"))
            else:
                nodes.append(CheckpointRecoveryPoint(rp, cp).node(cp.name, k))
        return nodes

    def info() -> dict:
        return {"checkpoints": [cp.describe("") for cp in rp.checkpoints]}

    return StaticDir("checkpoints", key, children, rp.mtime_ns, info=info)


class _LazyStream(Stream):
    """Opens the underlying stream on first read (listing disks/ should not open files)."""

    def __init__(self, opener, size, name):
        self._opener = opener
        self._stream = None
        self._lock = threading.Lock()
        self.size = size
        self.name = name

    @property
    def stream(self) -> Stream:
        if self._stream is None:
            with self._lock:
                if self._stream is None:
                    self._stream = self._opener()
        return self._stream

    def _read(self, offset, length):
        return self.stream.read(offset, length)

    def _readinto(self, offset, view):
        got = self.stream.readinto(offset, view)
        if got != len(view):  # the opened stream is shorter than the catalog said
            raise self._short(offset, len(view), got)

    def _pieces_into(self, offset, length, out) -> bool:
        return self.stream.pieces(offset, length, out)

    def _span(self, offset, length):
        stream = self.stream
        return (stream, offset) if offset + length <= stream.size else None

    def _extents(self, offset, end):
        return self.stream.extents(offset, end - offset)


def _is_bitlocker_volume(stream) -> bool:
    """A decrypted BitLocker view? (Imported only when one could exist: formats.bitlocker
    loads its volume module with the first BitLocker volume.)"""
    import sys

    module = sys.modules.get("formats.bitlocker.volume")
    return module is not None and isinstance(stream, module.BitLockerVolume)


def _partition_streams(stem: str, disk) -> list[tuple[str, Stream]]:
    """(``<disk>-p<N>``, stream) for each readable partition (p0: a disk with no table)."""
    import formats

    try:
        table = formats.read_partitions(disk)
    except RpfsError:
        return []
    return [(f"{stem}-p{p.number}", p.stream) for p in table.partitions if p.readable]


# The Linux file system readers (docs/filesystems.md), tried in this order after NTFS.
POSIX_READERS = ("ext4_reader", "xfs_reader", "btrfs_reader")
# The magic each reader's probe needs first (offset, bytes): a reader is imported only for a
# volume that has it (importing the three took 0.1-0.25 s each on every mount whose disks have
# an EFI, MSR or recovery partition; tests/test_linux_vm.py checks these against the readers).
POSIX_MAGIC = {"ext4_reader": (1024 + 56, b"\x53\xef"), "xfs_reader": (0, b"XFSB"),
               "btrfs_reader": (65536 + 64, b"_BHRfS_M")}


def open_filesystem(stream: Stream):
    """The Volume on ``stream`` (NTFS, then each POSIX reader's ``probe``), None if no
    reader knows it; a damaged one is an error value."""
    kind = probe_filesystem(stream)
    return None if kind is None else open_probed(kind, stream)


def probe_filesystem(stream: Stream) -> str | None:
    """Which reader knows ``stream``: ``"ntfs"`` (its boot sector's OEM id), else the
    first POSIX reader whose magic is there and whose ``probe`` agrees (a damaged one's
    error comes when it is opened); None if none does. Nothing is parsed beyond that."""
    import importlib

    if stream.read(3, 8) == b"NTFS    ":
        return "ntfs"
    for module in POSIX_READERS:
        offset, magic = POSIX_MAGIC[module]
        if stream.size < offset + len(magic) or stream.read(offset, len(magic)) != magic:
            continue
        reader = importlib.import_module(module)
        try:
            if not reader.probe(stream):
                continue
        except RpfsError:
            pass
        return module
    return None


def open_probed(kind: str, stream: Stream):
    """The Volume ``probe_filesystem`` said ``kind`` is on ``stream``; damage is a value."""
    if kind == "ntfs":
        return open_ntfs(stream)
    import importlib

    reader = importlib.import_module(kind)
    try:
        reader.probe(stream)   # it said yes, or raised: then its error is this volume's
        return reader.open_volume(stream)
    except RpfsError as e:
        return e


def is_posix_volume(vol) -> bool:
    """True for a Volume of a POSIX reader (it says its ``fs_type``); NTFS has none."""
    return isinstance(getattr(vol, "fs_type", None), str)


def open_ntfs(stream: Stream):
    """An NTFS Volume over ``stream``, or None if it is not NTFS; damage is an error value."""
    head = stream.read(3, 8)
    if head != b"NTFS    ":
        return None
    from ntfs_reader import Volume

    Spans.on(stream)   # a file's reads go from its runs to the stored file in one step
    try:
        return Volume(stream)
    except RpfsError as e:
        return e


def files_tree(rp: RecoveryPoint, key: tuple) -> list[Node]:
    """Directories and files of ``rp.file_sizes()`` as a node tree."""
    root: dict = {}
    for path, size in rp.file_sizes().items():
        parts = [p for p in path.split("/") if p]
        d = root
        for p in parts[:-1]:
            d = d.setdefault(p, {})
            if not isinstance(d, dict):
                break
        else:
            d[parts[-1]] = (path, size)

    def build(tree: dict, prefix: tuple) -> list[Node]:
        nodes: list[Node] = []
        for name, v in sorted(tree.items()):
            k = key + prefix + (name,)
            if isinstance(v, dict):
                nodes.append(StaticDir(name, k, functools.partial(build, v, prefix + (name,)),
                                       rp.mtime_ns))
            else:
                path, size = v
                nodes.append(StreamFile(name, k, size, functools.partial(rp.open_file, path),
                                        rp.mtime_ns))
        return nodes

    return build(root, ())


def disk_nodes(rp: RecoveryPoint, key: tuple) -> list[Node]:
    nodes: list[Node] = []
    for stem, disk in sorted(rp.disks.items()):
        name = f"{stem}.raw"
        if isinstance(disk, Exception):
            nodes.append(BrokenNode(name, key + (name,), disk))
        else:
            nodes.append(StreamFile(name, key + (name,), disk.size, lambda d=disk: d,
                                    rp.mtime_ns, functools.partial(disk_info, disk, rp.keys)))
    return nodes


def disk_info(disk, keys=None) -> dict:
    import formats
    from formats import bitlocker

    chain = [{"file": d.name, "format": d.format, "kind": d.kind} for d in disk.chain]
    out = {
        "format": disk.format, "kind": disk.kind, "virtual_size": disk.size,
        "logical_sector_size": disk.logical_sector_size,
        "physical_sector_size": disk.physical_sector_size, "chain": chain,
    }
    try:
        table = formats.read_partitions(disk)
        out["partition_scheme"] = table.scheme
        parts = []
        for p in table.partitions:
            entry = {"number": p.number, "offset": p.offset, "size": p.size,
                     "type": p.type_name, "name": p.name, "readable": p.readable}
            if p.readable and bitlocker.is_bitlocker(p.stream):
                entry.update(bitlocker.partition_info(p.stream, keys, open_ntfs))
            elif p.readable:
                entry.update(filesystem_info(p.stream))
            else:
                entry["note"] = getattr(p, "reason", None) or "recognised but not readable"
            parts.append(entry)
        out["partitions"] = parts
    except RpfsError as e:
        out["partition_error"] = str(e)
    out.update(_ldm_info(disk))
    return out


def _ldm_info(disk) -> dict:
    """``{"ldm": ...}`` for a Windows dynamic disk (its group and volumes), else nothing."""
    from formats import probes

    if probes.ldm_privhead_offset(disk) is None:
        return {}
    from formats import ldm

    try:
        return {"ldm": ldm.describe_disk(disk, disk.name)}
    except RpfsError as e:
        return {"ldm": None, "ldm_error": str(e)}


def filesystem_info(stream: Stream) -> dict:
    """What ``rpfs info`` on a disk says of one partition's contents."""
    from formats import probes

    if probes.lvm_label_sector(stream) is not None:
        from formats import lvm
        try:
            return {"filesystem": None, "lvm": lvm.describe_pv(stream)}
        except RpfsError as e:
            return {"filesystem": None, "lvm": None, "error": str(e)}
    vol = open_filesystem(stream)
    if vol is None:
        return {"filesystem": None, "note": "no known file system found (not browsable)"}
    if isinstance(vol, Exception):
        return {"filesystem": None, "error": str(vol)}
    if is_posix_volume(vol):
        return {"filesystem": vol.fs_type, "label": vol.label, "uuid": vol.uuid,
                "state": vol.state}
    return {"filesystem": "ntfs"}


def volume_nodes(rp: RecoveryPoint, key: tuple) -> list[Node]:
    """``volumes/``: a VolumeDir per volume (its file system opened on first use), and
    ``<volume>.vss/`` beside each NTFS volume holding shadow copies."""
    nodes: list[Node] = []
    for name, kind in sorted(rp.volume_kinds.items()):
        k = key + (name,)
        stream = rp.volume_streams.get(name, kind)  # for export --format raw
        copies = rp.shadow_copies.get(name)
        if isinstance(kind, Exception):
            nodes.append(BrokenNode(name, k, kind, kind="dir", volume_stream=stream))
        else:
            nodes.append(VolumeDir(name, k, functools.partial(_volume_root, rp, name, k, copies),
                                   stream))
        if copies is not None:
            nodes.append(shadow_copies_node(copies, name + ".vss", key + (name + ".vss",),
                                            rp.mtime_ns))
    return nodes


def _volume_root(rp: RecoveryPoint, name: str, key: tuple, copies) -> Node:
    vol = rp.volume(name)
    stream = rp.volume_streams[name]
    if isinstance(vol, Exception):
        return BrokenNode(name, key, vol, kind="dir", volume_stream=stream)
    if is_posix_volume(vol):   # each kind's nodes imported when one is met
        from rpfs import posix_nodes

        return posix_nodes.volume_root(vol, name, key, stream)
    from rpfs import ntfs_nodes

    return ntfs_nodes.volume_root(vol, name, key, stream, copies)  # info lists the stores


class VolumeDir(Node):
    """A volume's root directory whose file system is opened on first use: listing
    ``volumes/`` (or looking up one volume) reads each volume's signature, not its MFT or
    superblock. Everything else is the opened root's (``ntfs_nodes.VolumeRoot``, a POSIX
    volume's root, or a BrokenNode saying why it cannot be read); until then its attributes
    are not known without I/O (``attr_if_known`` is None, and ``attr_opens`` says so: a
    listing of ``volumes/`` sends the kernel its kind alone)."""

    kind = "dir"

    def __init__(self, name: str, key: tuple, open_root: Callable[[], Node], volume_stream):
        self.name = name
        self.key = key
        self.volume_stream = volume_stream
        self._open_root = open_root

    @once
    def root(self) -> Node:
        return self._open_root()

    @property
    def attr_opens(self) -> bool:
        return "root" not in self.__dict__

    def __getattr__(self, name):   # what only the opened root has (volume, shadow_copies, ...)
        if name.startswith("__") or name in ("root", "_open_root"):
            raise AttributeError(name)
        return getattr(self.root, name)

    def attr_if_known(self):
        return None if self.attr_opens else self.root.attr_if_known()

    def may_have_xattr(self, name: str) -> bool:
        return True if self.attr_opens else self.root.may_have_xattr(name)   # no I/O here

    @property
    def xattr_namespace(self):
        return None if self.attr_opens else self.root.xattr_namespace

    def attr(self):
        return self.root.attr()

    def by_number(self, number: int) -> Node:
        return self.root.by_number(number)

    def iterdir(self):
        return self.root.iterdir()

    def listing(self):
        return self.root.listing()

    def child(self, name: str) -> Node:
        return self.root.child(name)

    def open(self):
        return self.root.open()

    def readlink(self) -> str:
        return self.root.readlink()

    def xattr_names(self) -> list[str]:
        return self.root.xattr_names()

    def getxattr(self, name: str) -> bytes:
        return self.root.getxattr(name)

    def info(self) -> dict:
        return self.root.info()

    def stream_node(self, stream: str) -> Node:
        return self.root.stream_node(stream)

    def detail(self) -> dict:
        return self.root.detail()


def store_names(copies) -> list[tuple[str, object]]:
    """(directory name, store) of each shadow copy: its creation time, made unique."""
    out, seen = [], set()
    for store in copies.stores:
        name = store.name if store.name not in seen else f"{store.name}-{store.index}"
        seen.add(name)
        out.append((name, store))
    return out


def shadow_copies_node(copies, name: str, key: tuple, mtime_ns: int) -> Node:
    """``<volume>.vss/<creation time>/``: each shadow copy as a read-only NTFS tree; a store
    that cannot be read is listed and answers EIO (the others still read)."""
    if isinstance(copies, Exception):
        return BrokenNode(name, key, copies, kind="dir")

    def children() -> list[Node]:
        from ntfs_reader import Volume
        from rpfs import ntfs_nodes

        nodes: list[Node] = []
        for sname, store in store_names(copies):
            try:
                stream = copies.open(store)
                node = ntfs_nodes.volume_root(Volume(stream), sname, key + (sname,), stream)
            except RpfsError as e:
                node = BrokenNode(sname, key + (sname,), e, kind="dir")
            nodes.append(node)
        return nodes

    def info() -> dict:
        return {"name": name, "type": "dir", "volume": copies.name, "vss_version": copies.version,
                "shadow_copies": [s.describe() for s in copies.stores]}

    return StaticDir(name, key, children, mtime_ns, info=info)


# ---------------------------------------------------------------------------------------
# Sources: a repository, a VM folder, a single image


class FolderRecoveryPoint(RecoveryPoint):
    """A VM folder (or a single image file) read in place, as one synthetic recovery point."""

    def __init__(self, path: Path):
        self.path = path
        self.key = ("folder", str(path))
        st = path.stat()
        self.mtime_ns = st.st_mtime_ns
        if path.is_dir():
            self._sizes = {}
            for p in sorted(path.rglob("*")):
                if p.is_file() and not p.is_symlink():
                    self._sizes[p.relative_to(path).as_posix()] = p.stat().st_size
            self._base = path
        else:
            self._sizes = {path.name: st.st_size}
            self._base = path.parent

    def file_sizes(self) -> dict[str, int]:
        return self._sizes

    def open_file(self, path: str) -> Stream:
        return FileStream(self._base / path, name=path)

    @once
    def disks(self) -> dict[str, object]:
        if self.path.is_dir():
            return super().disks
        # A single image: its parents may sit beside it in the folder.
        import formats

        try:
            return dict(formats.open_path(self.path))
        except RpfsError as e:
            return {self.path.stem: e}

    def has_checkpoints(self) -> bool:
        return self.path.is_dir() and super().has_checkpoints()


class RepoRecoveryPoint(RecoveryPoint):
    """A stored recovery point, parsed: ``rp`` is its catalog row (``RecoveryPointRecord``)."""

    def __init__(self, repo, rp, keys=None):
        self.repo = repo
        self.rp = rp
        self.keys = keys
        self.key = ("rp", rp.vm, rp.name)
        self.mtime_ns = int(rp.time.timestamp() * 1e9)

    @once
    def _sizes(self) -> dict[str, int]:
        return dict(self.repo.files(self.rp))

    def file_sizes(self) -> dict[str, int]:
        return self._sizes

    def open_file(self, path: str) -> Stream:
        return self.repo.open_file(self.rp, path)

    def describe(self) -> dict:
        rp = self.rp
        return {"vm": rp.vm, "recovery_point": rp.name, "time": rp.time.isoformat(),
                "logical_size": rp.logical_size, "stored_size": rp.stored_size,
                "file_count": rp.file_count, "disks": sorted(self.disks),
                **super().describe()}


class Tree:
    """The root of the namespace for one SOURCE, plus path resolution."""

    repo = None             # the Repository, for a repository
    recovery_point = None   # the one RecoveryPoint, for a VM folder or an image
    keys = None             # the formats.bitlocker.KeyRing its volumes were unlocked with

    def __init__(self, root: Node, closer: Callable[[], None] | None = None,
                 kind: str = "image"):
        self.root = root
        self.kind = kind
        self._closer = closer

    def close(self) -> None:
        if self._closer:
            self._closer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def resolve(self, path: str, follow: bool = True) -> Node:
        """The node at ``path``; symlinks in the middle are followed (``latest`` too), the
        last one only if ``follow``. ``name:stream`` reaches an alternate data stream."""
        parts = nspath.parts(path)
        hops = 0
        stack: list[Node] = [self.root]
        i = 0
        while i < len(parts):
            part = parts[i]
            if part == "..":
                if len(stack) > 1:
                    stack.pop()
                i += 1
                continue
            node = lookup_child(stack[-1], part)
            last = i == len(parts) - 1
            if node.kind == "symlink" and (follow or not last):
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise UsageError(f"{path}: too many levels of symbolic links")
                target = node.readlink()
                if target.startswith("/"):
                    raise NotFoundError(f"{part}: link points outside the tree ({target})")
                parts = parts[:i] + [p for p in target.split("/") if p not in ("", ".")] + parts[i + 1:]
                continue
            stack.append(node)
            i += 1
        return stack[-1]


def lookup_child(parent: Node, name: str) -> Node:
    """``parent.child(name)``; a final ``:stream`` suffix selects an alternate data stream."""
    try:
        return parent.child(name)
    except NotFoundError:
        base, sep, stream = name.rpartition(":")
        if not sep or not base:
            raise
        return parent.child(base).stream_node(stream)


VmView = Callable[["Tree", str], list[Node]]


def source_tree(source: str | os.PathLike, keys=None, store=None,
                vm_views: tuple[VmView, ...] = ()) -> Tree:
    """A repository (a directory or s3://BUCKET/PREFIX), a VM folder, or one disk image, as a
    Tree. ``keys`` (a ``formats.bitlocker.KeyRing``) unlock the BitLocker volumes in it;
    ``store``: the ``StoreOptions`` a repository is opened with; ``vm_views``: what layers
    above the tree add to each VM directory of a repository (each ``view(tree, vm)`` returns
    nodes; rpfs.source passes the index's ``.versions``). Front ends call
    ``rpfs.source.open_source``, which passes them all."""
    if str(source).startswith("s3://"):
        return repo_tree(str(source), keys, store, vm_views)
    where = os.fspath(source)
    if not os.path.exists(where):
        raise NotFoundError(f"{source}: no such file or directory")
    if os.path.isdir(where) and os.path.exists(os.path.join(where, "catalog.sqlite")):
        return repo_tree(where, keys, store, vm_views)
    from pathlib import Path   # here: a repository's mount need not load pathlib (urllib, ...)

    path = Path(where)
    rp = FolderRecoveryPoint(path)
    rp.keys = keys
    tree = Tree(rp.node("", ()), kind="folder" if path.is_dir() else "image")
    tree.recovery_point = rp
    tree.keys = keys
    return tree


def repo_tree(path: str, keys=None, store=None, vm_views: tuple[VmView, ...] = ()) -> Tree:
    from rpfs.store import open_repository

    repo = open_repository(path, store)

    def rp_node(row) -> Node:
        rp = repo.record(row)
        return RepoRecoveryPoint(repo, rp, keys).node(rp.name, ("rp", rp.vm, rp.name))

    def latest(vm: str, row) -> Symlink:
        newest = repo.record(row)
        return Symlink("latest", ("latest", vm, newest.name), newest.name,
                       int(newest.time.timestamp() * 1e9), immutable=False)

    def vm_children(vm: str) -> list[Node | Later]:
        # the recovery points are made into nodes only when looked up or listed
        rows = repo.recovery_point_rows(vm)
        nodes: list[Node | Later] = [Later(row[1], ("rp", vm, row[1]), rp_node, row)
                                     for row in rows]
        if rows:
            nodes.append(latest(vm, max(rows, key=lambda row: row[2])))   # by time
        for view in vm_views:
            nodes += view(tree, vm)
        return nodes

    def vm_lookup(vm: str, name: str) -> Node | Later | None:
        # `latest` and a recovery point by one catalog row each (the VM's listing reads all)
        if name == "latest":
            row = repo.newest_recovery_point_row(vm)
            return None if row is None else latest(vm, row)
        row = repo.recovery_point_row(vm, name)
        return None if row is None else Later(row[1], ("rp", vm, row[1]), rp_node, row)

    def vms() -> list[Node]:
        return [StaticDir(vm, ("vm", vm), functools.partial(vm_children, vm), ttl=REFRESH_SECONDS,
                          lookup=functools.partial(vm_lookup, vm))
                for vm in repo.vms()]

    # New recovery points appear while a mount is up: the root and VM directories refresh.
    tree = Tree(StaticDir("", ("repo",), vms, ttl=REFRESH_SECONDS), closer=repo.close,
                kind="repository")
    tree.repo = repo
    tree.keys = keys
    return tree
