"""The chunk cache's bound grows only for a reader that comes back to what it just lost
(rpfs/store/cache.py): counted misses, never times."""

from rpfs.store.cache import ChunkCache

FRAME = bytes(64 << 10)


def _misses(cache: ChunkCache, keys) -> int:
    missed = 0
    for k in keys:
        if cache.get(k) is None:
            missed += 1
            cache.put(k, FRAME)
    return missed


def test_a_repeated_cycle_larger_than_the_bound_grows_it_and_then_hits():
    cache = ChunkCache(16 * len(FRAME), grow_to=64 * len(FRAME))
    cycle = [b"k%d" % i for i in range(40)]
    assert _misses(cache, cycle) == 40           # first pass: all cold
    second = _misses(cache, cycle)
    assert cache.grown > 0 and cache.max_bytes <= 64 * len(FRAME)
    assert _misses(cache, cycle) == 0            # the whole cycle is held now
    assert second < 40 and cache.bytes <= cache.max_bytes


def test_a_plain_lru_thrashes_on_the_same_cycle():
    cache = ChunkCache(16 * len(FRAME))
    cycle = [b"k%d" % i for i in range(40)]
    assert [_misses(cache, cycle) for _ in range(3)] == [40, 40, 40]
    assert cache.grown == 0 and cache.max_bytes == 16 * len(FRAME)


def test_a_one_pass_scan_never_grows_it():
    cache = ChunkCache(16 * len(FRAME), grow_to=64 * len(FRAME))
    assert _misses(cache, [b"k%d" % i for i in range(10_000)]) == 10_000
    assert cache.grown == 0 and cache.max_bytes == 16 * len(FRAME)
    assert cache.bytes <= 16 * len(FRAME)


def test_growth_stops_at_grow_to():
    cache = ChunkCache(4 * len(FRAME), grow_to=8 * len(FRAME))
    cycle = [b"k%d" % i for i in range(100)]
    for _ in range(5):
        _misses(cache, cycle)
    assert cache.max_bytes == 8 * len(FRAME) and cache.bytes <= 8 * len(FRAME)
