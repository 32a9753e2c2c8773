"""The classic policies on traces small enough to work out by hand."""

from __future__ import annotations

import pytest

from airflow_cloud_paas.services.xcache.errors import PolicyError
from airflow_cloud_paas.services.xcache.policies import (
    POLICIES,
    BeladyPolicy,
    LFUPolicy,
    LRU2Policy,
    LRUPolicy,
    SmartPolicy,
    make_policy,
)
from airflow_cloud_paas.services.xcache.sim import replay
from airflow_cloud_paas.services.xcache.trace import Trace


def _trace(paths: str, sizes: dict[str, int] | None = None) -> Trace:
    sizes = sizes or {}
    return Trace.from_rows([(float(i), f"/d/{p}", sizes.get(p, 4)) for i, p in enumerate(paths.split())])


def _hits(policy, trace: Trace) -> list[bool]:
    policy.prepare(trace)
    rows = zip(trace.times, trace.paths, trace.sizes, strict=True)
    return [policy.request(i, t, p, s) for i, (t, p, s) in enumerate(rows)]


def test_lru_evicts_the_least_recently_used():
    lru = LRUPolicy(10)  # room for two 4-byte files
    assert _hits(lru, _trace("a b a c b")) == [False, False, True, False, False]
    # c evicted b (a had been used since), then b evicted a
    assert set(lru.cached()) == {"/d/c", "/d/b"} and lru.used == 8
    assert lru.bytes_written == 16


def test_lru_reads_through_a_file_larger_than_the_cache():
    lru = LRUPolicy(10)
    assert _hits(lru, _trace("a big a", {"big": 11})) == [False, False, True]
    assert "/d/big" not in lru and lru.bytes_written == 4


def test_lfu_evicts_the_least_frequently_used_with_counts_kept_across_evictions():
    lfu = LFUPolicy(8)
    assert _hits(lfu, _trace("a a b c b a")) == [False, True, False, False, False, True]
    # c (1 read) evicted b (1 read, older); b's return makes it 2 reads: it then evicts c, not a (2 reads)
    assert set(lfu.cached()) == {"/d/a", "/d/b"}
    assert lfu.bytes_written == 16


def test_lru2_admits_on_the_second_request():
    lru2 = LRU2Policy(8)
    assert _hits(lru2, _trace("a a a b c b")) == [False, False, True, False, False, False]
    assert set(lru2.cached()) == {"/d/a", "/d/b"} and lru2.bytes_written == 8


def test_lru2_forgets_first_requests_older_than_a_cache_of_history():
    lru2 = LRU2Policy(8)  # the history holds 8 bytes of once-requested files: a drops out when c comes
    assert _hits(lru2, _trace("a b c a a")) == [False, False, False, False, False]
    assert lru2.bytes_written == 4 and set(lru2.cached()) == {"/d/a"}


def test_belady_bypasses_a_file_needed_after_everything_cached():
    belady = BeladyPolicy(8)
    # at c (next use 5), the cache holds a (next 4) and b (next 3): c is bypassed
    assert _hits(belady, _trace("a b c b a c")) == [False, False, False, True, True, False]
    assert belady.bytes_written == 8


def test_belady_evicts_the_file_used_furthest_in_the_future():
    belady = BeladyPolicy(8)
    # at c (next use 4): a is next used at 3, b at 5, so b goes
    assert _hits(belady, _trace("a b c a c b")) == [False, False, False, True, True, False]
    assert belady.bytes_written == 12


def test_belady_never_writes_a_one_shot_file():
    belady = BeladyPolicy(100)
    assert _hits(belady, _trace("x y x z x")) == [False, False, True, False, True]
    assert belady.bytes_written == 4


def test_belady_beats_every_online_policy_on_a_mixed_trace():
    trace = _trace("a b c a d b a e c a b f a b c", {"c": 6, "e": 2})
    results = {name: replay(trace, name, 12) for name in ("lru", "lfu", "lru2", "belady")}
    best = results["belady"].byte_hit_ratio
    assert all(r.byte_hit_ratio <= best for r in results.values())
    assert best > results["lru"].byte_hit_ratio


def test_belady_needs_the_trace():
    with pytest.raises(PolicyError, match="offline"):
        BeladyPolicy(8).request(0, 0.0, "/d/a", 1)


def test_make_policy_knows_every_policy():
    assert set(POLICIES) == {"lru", "lfu", "lru2", "belady", "smart"}
    assert isinstance(make_policy(" LRU ", 5), LRUPolicy)
    assert isinstance(make_policy("smart", 5), SmartPolicy)
    with pytest.raises(PolicyError, match="choose one of"):
        make_policy("arc", 5)
    with pytest.raises(PolicyError, match="more than 0"):
        make_policy("lru", 0)
