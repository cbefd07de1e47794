"""streams.record: the value classes that replaced dataclasses keep what a dataclass gave
their users: equality by fields and class, hashing only of values, a readable repr, and
``_replace`` that refuses unknown fields."""

from __future__ import annotations

import pickle

import pytest

from formats.disk import ParentRef
from rpfs.node import Attr
from rpfs.store.config import Config
from rpfs.store.options import StoreOptions
from rpfs.store.repository import ChunkLoc
from streams.record import Record, Value
from streams.stream import DATA, ZERO, Extent


class Point(Value):
    __slots__ = _fields = ("x", "y")

    def __init__(self, x, y=0):
        self.x = x
        self.y = y


class Other(Value):
    __slots__ = _fields = ("x", "y")

    def __init__(self, x, y=0):
        self.x = x
        self.y = y


class Box(Record):
    _fields = ("items",)

    def __init__(self, items=None):
        self.items = [] if items is None else items


def test_equality_is_by_class_and_fields():
    assert Point(1, 2) == Point(1, 2)
    assert Point(1, 2) != Point(2, 1)
    assert Point(1, 2) != Other(1, 2)          # another class with the same fields
    assert Point(1, 2) != (1, 2)
    assert Extent(0, 4096, DATA) == Extent(0, 4096, DATA) != Extent(0, 4096, ZERO)


def test_values_hash_by_fields_records_do_not_hash():
    assert hash(Point(1, 2)) == hash(Point(1, 2))
    assert len({Point(1, 2), Point(1, 2), Point(2, 2)}) == 2
    assert {ChunkLoc("p", 0, 1, 2, 0, b"h"): 1}[ChunkLoc("p", 0, 1, 2, 0, b"h")] == 1
    with pytest.raises(TypeError):
        hash(Box())
    with pytest.raises(TypeError):
        hash(Attr("file"))


def test_repr_names_every_field_in_order():
    assert repr(Point(1, "a")) == "Point(x=1, y='a')"
    assert repr(Extent(0, 1, DATA)) == "Extent(offset=0, length=1, kind='data')"
    assert "extra={'identity2': None}" in repr(ParentRef(("a",), None, {"identity2": None}))


def test_fields_left_out_of_equality_are_left_out_of_it():
    assert ParentRef(("a",), None, {"x": 1}) == ParentRef(("a",), None)


def test_replace_runs_init_and_refuses_unknown_fields():
    s = StoreOptions(region="r")
    t = s.with_(chunk_cache_bytes=1 << 20)
    assert (t.region, t.chunk_cache_bytes, s.chunk_cache_bytes) == ("r", 1 << 20, None)
    with pytest.raises(TypeError, match="no_such"):
        s.with_(no_such=1)


def test_slotted_values_pickle():
    e = Extent(5, 6, ZERO)
    assert pickle.loads(pickle.dumps(e)) == e
    c = Config(chunk_size=1 << 16, extra={"new": 1})
    assert pickle.loads(pickle.dumps(c)) == c


def test_mutable_defaults_are_not_shared():
    a, b = Box(), Box()
    a.items.append(1)
    assert b.items == []
    assert Config().extra is not Config().extra
