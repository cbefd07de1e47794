"""Small value classes without ``dataclasses``.

``@dataclass`` writes each class's ``__init__``, ``__repr__`` and ``__eq__`` (frozen, also
``__setattr__``, ``__delattr__`` and ``__hash__``) as source text and compiles it when its
module is imported, and importing ``dataclasses`` loads ``inspect``, ``ast`` and ``dis``.
The ~20 classes on a mount's way to its first listing cost about a third of the rpfs
imports' instructions (tests/test_startup.py keeps ``dataclasses`` off that way).

A ``Record`` names its fields in ``_fields`` and writes its ``__init__`` by hand (also
faster per instance than a frozen dataclass's, which assigns through ``object.__setattr__``).
Equality and ``repr`` come from the fields in order, as a dataclass's do: equal when the
classes are the same and the fields equal. A ``Record`` is not hashable (as a mutable
dataclass); a ``Value`` is, by its fields (as a frozen dataclass): nothing assigns to a
``Value``'s fields after ``__init__``, by convention, since it is not enforced.
"""

from __future__ import annotations

from operator import attrgetter


def _no_fields(record) -> tuple:
    return ()


class Record:
    __slots__ = ()
    _fields: tuple[str, ...] = ()
    _values = staticmethod(_no_fields)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if cls._fields:
            # one C call gives the fields' values (a tuple, or the value of a single field)
            cls._values = attrgetter(*cls._fields)

    def __eq__(self, other):
        if other.__class__ is self.__class__:
            return self._values(self) == other._values(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  (mutable: as a dataclass that is not frozen)

    def __repr__(self) -> str:
        shown = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        return f"{self.__class__.__qualname__}({shown})"

    def _asdict(self) -> dict:
        """The fields and their values, in order (``dataclasses.asdict`` of a flat record)."""
        return {f: getattr(self, f) for f in self._fields}

    def _replace(self, **changes):
        """A copy with ``changes`` (``dataclasses.replace``: ``__init__`` runs again)."""
        unknown = changes.keys() - set(self._fields)
        if unknown:
            raise TypeError(f"{self.__class__.__name__} has no field {sorted(unknown)[0]!r}")
        return self.__class__(**{**self._asdict(), **changes})


class Value(Record):
    """A record that is never changed after ``__init__``: hashable by its fields."""

    __slots__ = ()

    def __hash__(self) -> int:
        return hash(self._values(self))
