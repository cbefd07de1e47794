"""Sizes as people write them: ``4096``, ``512K``, ``1.5G``, ``10MiB`` (binary units, case
and a trailing ``B``/``iB`` ignored), parsed in one place for the command line, the
environment, the ops config and ``find --size``, with one error wording.
"""

from __future__ import annotations

import re

UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
EXAMPLES = "e.g. 512K, 100M, 1G"
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", re.IGNORECASE)


def parse_size(value) -> int:
    """An int >= 0 or size text -> bytes (0 allowed); ValueError naming the value if not."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str):
        m = _SIZE.fullmatch(value)
        if m:
            return int(float(m.group(1)) * UNITS[m.group(2).lower()])
    raise ValueError(f"not a size: {value!r} ({EXAMPLES})")


def positive_size(text: str, *, what: str = "size", examples: str = EXAMPLES) -> int:
    """argparse ``type=`` for size options: bytes > 0, else one usage line naming ``what``
    (a rate is a size per second)."""
    try:
        value = parse_size(text)
    except ValueError:
        value = 0
    if value <= 0:
        import argparse   # here: a command line read without argparse need not load it

        raise argparse.ArgumentTypeError(f"not a {what}: {text!r} ({examples})")
    return value
