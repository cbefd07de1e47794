"""rpfs.once: computed once per instance; two instances never wait for each other."""

import threading

from rpfs.once import once
from rpfs.tree import RecoveryPoint


class Slow:
    def __init__(self, barrier):
        self.barrier = barrier
        self.calls = 0

    @once
    def value(self):
        self.calls += 1
        # both instances must be inside at the same time: a class-wide lock (what
        # functools.cached_property takes on Python 3.11) breaks the barrier
        self.barrier.wait(timeout=10)
        return id(self)


def test_two_instances_compute_at_the_same_time():
    barrier = threading.Barrier(2)
    objs = [Slow(barrier), Slow(barrier)]
    threads = [threading.Thread(target=lambda o=o: o.value) for o in objs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not barrier.broken
    assert [o.value for o in objs] == [id(o) for o in objs]


def test_one_instance_computes_once():
    barrier = threading.Barrier(1)
    obj = Slow(barrier)
    threads = [threading.Thread(target=lambda: obj.value) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert obj.calls == 1 and obj.value == id(obj)


class Base:
    @once
    def value(self):
        return ["base"]


class Child(Base):
    @once
    def value(self):
        return super().value + ["child"]  # re-entrant: the same lock, the same thread


def test_subclass_builds_on_super():
    assert Child().value == ["base", "child"]


def test_recovery_points_use_it():
    for name in ("disks", "volume_streams", "volume_kinds", "shadow_copies"):
        assert isinstance(RecoveryPoint.__dict__[name], once)
