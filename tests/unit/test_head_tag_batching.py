"""BatchingHeadTagLookup against a fake store: how single lookups become batches (no Redis)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

import pytest

from services.cache.errors import CacheUnavailable
from services.cache.head_tags import BatchingHeadTagLookup, HeadTagStore
from services.cache.keys import CachedHeadTags
from services.domain import Understanding
from services.errors import ServiceUnavailable
from tests.fixtures.redis import run_async


class FakeStore:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.fail = fail

    async def get_many(self, queries: Sequence[str]) -> list[CachedHeadTags | None]:
        self.batches.append(list(queries))
        await asyncio.sleep(0)
        if self.fail:
            raise CacheUnavailable("Redis at test is unavailable")
        return [CachedHeadTags(q, Understanding(), "t", "r1") if q.startswith("hit") else None for q in queries]


def lookup(store: FakeStore, window_ms: float, max_batch: int, mget_max: int = 1024) -> BatchingHeadTagLookup:
    return BatchingHeadTagLookup(cast(HeadTagStore, store), window_ms, max_batch, mget_max=mget_max)


def test_concurrent_gets_share_batches_and_each_gets_its_own_answer() -> None:
    store = FakeStore()

    async def scenario() -> list[Any]:
        front = lookup(store, window_ms=5, max_batch=32)
        queries = [f"hit {i}" if i % 2 else f"miss {i}" for i in range(100)]
        return list(await asyncio.gather(*(front.get(q) for q in queries)))

    results = run_async(scenario(), timeout=5)
    assert len(store.batches) == 4  # 32 + 32 + 32 by size, the last 4 by the window
    assert sorted(len(b) for b in store.batches) == [4, 32, 32, 32]
    for i, result in enumerate(results):
        assert (result is not None) == bool(i % 2)
        if result is not None:
            assert result.normalized_query == f"hit {i}"


def test_a_query_asked_twice_in_a_window_is_fetched_once() -> None:
    store = FakeStore()

    async def scenario() -> list[Any]:
        front = lookup(store, window_ms=0, max_batch=32)
        return list(await asyncio.gather(*(front.get("hit milk") for _ in range(10))))

    results = run_async(scenario(), timeout=5)
    assert store.batches == [["hit milk"]]
    assert all(r is not None and r.normalized_query == "hit milk" for r in results)


def test_a_batch_error_reaches_every_caller() -> None:
    store = FakeStore(fail=True)

    async def scenario() -> list[Any]:
        front = lookup(store, window_ms=1, max_batch=8)
        return list(await asyncio.gather(*(front.get(f"q{i}") for i in range(5)), return_exceptions=True))

    results = run_async(scenario(), timeout=5)
    assert len(store.batches) == 1
    assert all(isinstance(r, CacheUnavailable) for r in results)


def test_a_cancelled_caller_does_not_break_the_batch() -> None:
    store = FakeStore()

    async def scenario() -> Any:
        front = lookup(store, window_ms=20, max_batch=8)
        doomed = asyncio.ensure_future(front.get("hit a"))
        kept = asyncio.ensure_future(front.get("hit b"))
        await asyncio.sleep(0)
        doomed.cancel()
        result = await kept
        await front.aclose()
        return result

    result = run_async(scenario(), timeout=5)
    assert result.normalized_query == "hit b"


def test_a_callers_batch_goes_in_mgets_of_mget_max_not_of_max_batch_and_keeps_its_order() -> None:
    store = FakeStore()
    queries = [f"hit {i}" if i % 3 else f"miss {i}" for i in range(10)]

    async def scenario() -> list[Any]:
        return await lookup(store, window_ms=50, max_batch=2, mget_max=4).get_many(queries)

    results = run_async(scenario(), timeout=5)
    assert store.batches == [queries[0:4], queries[4:8], queries[8:10]]
    assert [r.normalized_query if r else None for r in results] == [q if q.startswith("hit") else None for q in queries]


def test_a_callers_batch_within_mget_max_is_one_lookup_and_its_error_reaches_the_caller() -> None:
    ok, failing = FakeStore(), FakeStore(fail=True)
    run_async(lookup(ok, window_ms=50, max_batch=2).get_many([f"hit {i}" for i in range(300)]), timeout=5)
    assert [len(b) for b in ok.batches] == [300]
    with pytest.raises(CacheUnavailable):
        run_async(lookup(failing, window_ms=50, max_batch=2).get_many(["hit a"]), timeout=5)


@pytest.mark.parametrize(("window_ms", "max_batch", "mget_max"), [(-1, 8, 8), (1, 0, 8), (1, 8, 0)])
def test_bad_settings_are_refused(window_ms: float, max_batch: int, mget_max: int) -> None:
    with pytest.raises(ValueError):
        lookup(FakeStore(), window_ms, max_batch, mget_max)


def test_cache_unavailable_is_what_the_real_time_path_degrades_on() -> None:
    assert issubclass(CacheUnavailable, ServiceUnavailable)
