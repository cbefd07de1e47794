"""``once``: a property computed once per instance, with one lock per instance.

``functools.cached_property`` on Python 3.11 takes one lock for the whole class, so two
threads computing ``.disks`` of two different recovery points wait for each other (2.0 s
instead of 1.0 s measured); Python 3.12 dropped the lock altogether, which lets two
threads compute the same value twice (two Volume objects for one volume, each with its
own caches). Here each instance has its own re-entrant lock: different instances never
wait for each other, and a value is computed once.
"""

from __future__ import annotations

import threading

_LOCK = "_once_lock"


class once:  # noqa: N801  (used as a decorator, like functools.cached_property)
    """A read-only attribute computed by ``fn`` on first use and then kept in the
    instance's ``__dict__`` (later reads do not reach this descriptor at all)."""

    def __init__(self, fn):
        self.fn = fn
        self.name = fn.__name__
        self.__doc__ = fn.__doc__

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        d = obj.__dict__
        try:
            return d[self.name]
        except KeyError:
            pass
        lock = d.get(_LOCK)
        if lock is None:
            lock = d.setdefault(_LOCK, threading.RLock())  # atomic: one lock wins
        with lock:  # re-entrant: a subclass's value may be built from super()'s
            try:
                return d[self.name]
            except KeyError:
                value = self.fn(obj)
                d[self.name] = value
                return value
