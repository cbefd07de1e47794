"""One atheris (libFuzzer) process for one target: ``python -m tests.fuzz.atheris_main TARGET
[libFuzzer options] [corpus dirs]``. tools/fuzz.py starts these with time and memory limits.

The target ``all`` fuzzes every target in one process (the instrumented imports, ~15 s, are
paid once): the first byte of an input picks the target (``ALL[byte % len(ALL)]``), the
rest is that target's input. It is what CI runs for a short while (``tools/fuzz.py --smoke``).

rpfs's own packages are instrumented for coverage; the native decoders (_lznt1, _wofdecomp)
run uninstrumented and are checked against their Python twins by the targets.
"""

import os
import sys

import atheris

with atheris.instrument_imports(include=["rpfs", "formats", "ntfs_reader", "xfs_reader",
                                          "btrfs_reader", "ext4_reader"]):
    import btrfs_reader  # noqa: F401
    import btrfs_reader.compression  # noqa: F401
    import ext4_reader  # noqa: F401
    import ext4_reader.journal  # noqa: F401
    import formats.bitlocker.conversion  # noqa: F401
    import formats.bitlocker.metadata  # noqa: F401
    import formats.bitlocker.volume  # noqa: F401
    import formats.ldm  # noqa: F401
    import formats.lvm  # noqa: F401
    import formats.partitions  # noqa: F401
    import formats.vhd  # noqa: F401
    import formats.vhdx  # noqa: F401
    import formats.vhdx.log  # noqa: F401
    import formats.vmcx  # noqa: F401
    import formats.vss  # noqa: F401
    import ntfs_reader.attrs  # noqa: F401
    import ntfs_reader.boot  # noqa: F401
    import ntfs_reader.index  # noqa: F401
    import ntfs_reader.lznt1  # noqa: F401
    import ntfs_reader.lzx  # noqa: F401
    import ntfs_reader.record  # noqa: F401
    import ntfs_reader.reparse  # noqa: F401
    import ntfs_reader.runlist  # noqa: F401
    import ntfs_reader.xpress  # noqa: F401
    import rpfs.store.catalog  # noqa: F401
    import rpfs.store.packs  # noqa: F401
    import streams.stream  # noqa: F401
    import xfs_reader  # noqa: F401

from tests.fuzz.targets import ALL, TARGETS, run_one  # noqa: E402


def main() -> None:
    target = sys.argv.pop(1)
    if target not in TARGETS and target != "all":
        sys.exit(f"unknown target {target!r}; targets: all {' '.join(TARGETS)}")

    def one_input(data: bytes) -> None:
        if target != "all":
            run_one(target, data)
        elif data:
            run_one(ALL[data[0] % len(ALL)], data[1:])
    # libFuzzer's -merge re-runs argv[0] itself: tools/fuzz.py points it at a wrapper script
    argv = [os.environ.get("FUZZ_ARGV0", sys.argv[0])] + sys.argv[1:]
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
