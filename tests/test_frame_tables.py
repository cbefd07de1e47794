"""The first small read of a chunk parses its frame table (``frames.parse_table``): an
incompressible chunk's table, all raw frames of one size, is checked with a few slice
compares, not unpacked entry by entry. Counted (the general parse's struct unpack is not
called), and the result is the general parse's, plain and encrypted; a table that differs
from a uniform one anywhere takes the general parse, which names what is wrong."""

from __future__ import annotations

import os

import pytest

from rpfs.store import frames
from rpfs.store.crypto import Plain, Sealed
from streams.errors import IntegrityError

_ID = bytes(range(32))
MiB = 1 << 20


def _general(monkeypatch, crypto, payload, usize):
    with monkeypatch.context() as m:
        m.setattr(frames, "_uniform_raw", lambda *a: None)
        return frames.parse_table(crypto, payload, len(payload), usize, _ID)


def _counted_unpacks(monkeypatch) -> list:
    calls = []
    real = frames._entries

    def counted(count, digest):
        calls.append(count)
        return real(count, digest)
    monkeypatch.setattr(frames, "_entries", counted)
    return calls


@pytest.mark.parametrize("crypto", [Plain(), Sealed(bytes(32), bytes(range(32)))],
                         ids=["plain", "encrypted"])
@pytest.mark.parametrize("raw, usize", [(4096, MiB), (16384, MiB), (16384, MiB - 1000)])
def test_a_uniform_raw_table_is_not_unpacked_entry_by_entry(monkeypatch, crypto, raw, usize):
    data = os.urandom(usize)
    payload = frames.encode(crypto, data, _ID, 1, 65536, raw)
    want = _general(monkeypatch, crypto, payload, usize)
    calls = _counted_unpacks(monkeypatch)
    got = frames.parse_table(crypto, payload, len(payload), usize, _ID)
    assert calls == []   # before: one struct of every entry per table
    assert got == want and got.frame_size == raw and got.count == -(-usize // raw)
    assert frames.decode(crypto, payload, usize, _ID, check_frames=True) == data


def test_a_table_that_is_not_uniform_takes_the_general_parse(monkeypatch):
    text = b"compressible text " * (MiB // 18) + b"x" * (MiB % 18)
    payload = frames.encode(Plain(), text, _ID, 1, 65536, 16384)   # zstd frames
    calls = _counted_unpacks(monkeypatch)
    t = frames.parse_table(Plain(), payload, len(payload), MiB, _ID)
    assert calls == [t.count] and t.frame_size == 65536


def _reseal(payload: bytes, edit) -> bytes:
    """``payload`` with its (plain) table edited by ``edit`` and sealed again, so only the
    entries are wrong, not the checksum."""
    end = frames.table_length(payload, len(payload), _ID)
    table = bytearray(Plain.open_table(payload[frames.HEAD_SIZE:end], _ID))
    edit(table)
    sealed = Plain.seal_table(bytes(table), _ID)
    return payload[:4] + len(sealed).to_bytes(4, "little") + sealed + payload[end:]


@pytest.mark.parametrize("where", ["codec", "length", "all empty"])
def test_one_entry_off_is_refused_by_the_general_parse(where):
    payload = frames.encode(Plain(), os.urandom(MiB), _ID, 1, 65536, 16384)
    entry = 8 + 5 * 40   # frame 5's entry

    def edit(table):
        if where == "codec":
            table[entry + 4] = 9
        elif where == "all empty":   # every raw entry 0 bytes long
            for i in range(64):
                table[8 + i * 40:8 + i * 40 + 4] = bytes(4)
        else:
            table[entry:entry + 4] = (16383).to_bytes(4, "little")
    bad = _reseal(payload, edit)
    with pytest.raises(IntegrityError, match="unknown codec 9" if where == "codec" else "frames end"):
        frames.parse_table(Plain(), bad, len(bad), MiB, _ID)


def test_mutated_tables_parse_as_the_general_parse_says(monkeypatch):
    """Differential: 2,000 tables with 1-3 bytes changed (and resealed), some cut short
    or padded: the uniform check gives the general parse's table, or its error, each time."""
    import random

    rnd = random.Random(17)
    real = frames._uniform_raw

    def parse(payload, usize, fast):
        monkeypatch.setattr(frames, "_uniform_raw", real if fast else (lambda *a: None))
        try:
            t = frames.parse_table(Plain(), payload, len(payload), usize, _ID)
            return [getattr(t, f) for f in t._fields]
        except IntegrityError as e:
            return str(e)
    fast_taken = 0
    for raw, usize in ((4096, MiB), (16384, MiB - 777)):
        base = frames.encode(Plain(), os.urandom(usize), _ID, 1, 65536, raw)
        for _ in range(1000):
            def edit(table):
                for _ in range(rnd.randint(1, 3)):
                    i = rnd.randrange(8, min(len(table), 8 + 40 * 4) if rnd.random() < 0.5 else len(table))
                    table[i] = rnd.choice([0, 1, 2, 255, rnd.randrange(256), table[i] ^ 1])
            p = _reseal(base, edit)
            cut = rnd.choice([len(p), len(p), len(p) - 1, len(p) + 5])
            p = p[:cut] + bytes(max(0, cut - len(p)))
            fast = parse(p, usize, True)
            assert fast == parse(p, usize, False)
            fast_taken += isinstance(fast, list) and real(
                Plain.open_table(p[8:frames.table_length(p, len(p), _ID)], _ID),
                -(-usize // raw), 32) is not None
    assert fast_taken > 100   # the uniform check did answer for many of them
