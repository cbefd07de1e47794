"""streams.lru.LRU, the one bounded cache: by entries or by weight, told of evictions."""

import threading

from streams.lru import LRU


def test_bounded_by_entries_least_recently_used_out_first():
    c = LRU(3)
    for k in "abc":
        c.put(k, k.upper())
    assert c.get("a") == "A"                  # now the newest
    c.put("d", "D")
    assert "b" not in c and c.get("b") is None and [c.get(k) for k in "acd"] == ["A", "C", "D"]
    assert len(c) == 3 and c.total == 3 and c.hits == 4 and c.misses == 1
    assert c.pop("a") == "A" and c.pop("a", 7) == 7 and c.total == 2


def test_bounded_by_weight_and_told_of_evictions():
    gone = []
    c = LRU(10, weight=len, evicted=lambda k, v: gone.append(k))
    c.put("x", b"12345")
    c.put("y", b"1234")
    c.put("x", b"123")                        # replaced: weight counted once
    assert c.total == 7 and gone == []
    c.put("z", b"12345")                      # 12 > 10: the least recently used (y) goes
    assert gone == ["y"] and c.total == 8 and c.values() == [b"123", b"12345"]
    c.put("huge", b"x" * 11)                  # heavier than the bound: not kept
    assert "huge" not in c and gone == ["y"]
    c.maxsize = 5
    c.shrink()
    assert gone == ["y", "x"] and c.total == 5
    c.clear()
    assert len(c) == 0 and c.total == 0 and gone == ["y", "x"]   # clear is not eviction


def test_threads_keep_the_account_right():
    c = LRU(100, weight=lambda v: v)

    def work(base):
        for i in range(2000):
            c.put((base, i % 50), i % 7)
            c.get((base, (i * 3) % 50))

    ts = [threading.Thread(target=work, args=(b,)) for b in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert c.total == sum(c.values()) <= 100


def test_a_get_racing_puts_and_evictions_gets_the_key_s_value_or_nothing():
    """``get`` takes no lock (a mount's loop makes several per READ): with other threads
    putting and evicting the same keys, it returns that key's value or None, never raises,
    and the bound still holds."""
    import sys

    c = LRU(8)
    errors: list = []

    def work(seed):
        try:
            for i in range(20_000):
                k = (i * seed) % 32
                if i % 3:
                    c.put(k, ("value of", k))
                got = c.get((k + 5) % 32)
                if got is not None and got != ("value of", (k + 5) % 32):
                    errors.append(got)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)   # switch threads as often as the interpreter can
    try:
        ts = [threading.Thread(target=work, args=(s,)) for s in (1, 3, 5, 7)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == [] and len(c) == c.total <= 8 and c.hits > 0
