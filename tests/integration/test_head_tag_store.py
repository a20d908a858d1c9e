"""The head-tag cache against a real redis-server: runs, atomic swaps, expiry, outages, batching."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import redis
from pydantic import SecretStr
from qu.v1 import head_tags_pb2

from services.cache import (
    ActivationStatus,
    BatchingHeadTagLookup,
    CacheUnavailable,
    HeadTagStore,
    HeadTagWriter,
    RetiredRunError,
    connect_head_tag_cache,
    head_tags,
)
from services.cache.keys import CachedHeadTags, HeadTagKeys, decode_entry, encode_entry, to_head_tags
from services.domain import CategoryScore, Role, Tag, Understanding
from services.stack.ports import free_port
from services.stack.redis_server import RedisServer, RedisServerError
from tests.fixtures.redis import run_async

pytestmark = pytest.mark.integration

QUERIES = [f"brand{i} whole milk" for i in range(2000)]


def entries(run_id: str, queries: list[str], version: str) -> list[head_tags_pb2.HeadTags]:
    out = []
    for q in queries:
        u = Understanding(
            tags=[Tag(Role.BRAND, 0, q.index(" "), q[: q.index(" ")], q[: q.index(" ")].title(), 0.5)],
            categories=[CategoryScore(("dairy", "milk"), 0.75)],
        )
        out.append(to_head_tags(q, u, teacher_version=version, run_id=run_id))
    return out


async def load_run(writer: HeadTagWriter, run_id: str, queries: list[str], *, ttl_s: int = 3600) -> None:
    await writer.write_run_entries(run_id, entries(run_id, queries, f"teacher-{run_id}"), ttl_s)
    activation = await writer.activate(run_id, len(queries))
    assert activation.status is ActivationStatus.ACTIVATED, activation


def test_a_run_fills_the_cache_and_a_lookup_finds_it(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    async def scenario() -> None:
        client = connect_head_tag_cache(redis_server.url)
        store, writer = HeadTagStore(client), HeadTagWriter(client)
        assert await store.ping()
        assert await store.get_many(["brand1 whole milk"]) == [None]  # no run active yet
        await writer.write_run_entries("r1", entries("r1", QUERIES[:50], "teacher-r1"), 3600)
        assert await store.get_many(["brand1 whole milk"]) == [None]  # written, not activated
        assert (await writer.activate("r1", 50)).status is ActivationStatus.ACTIVATED
        hit, miss = await store.get_many(["brand1 whole milk", "unknown query"])
        assert miss is None and hit is not None
        assert (hit.run_id, hit.teacher_version, hit.normalized_query) == ("r1", "teacher-r1", "brand1 whole milk")
        assert hit.understanding.tags == [Tag(Role.BRAND, 0, 6, "brand1", "Brand1", 0.5)]
        assert hit.understanding.version == "teacher-r1"
        assert await store.active_run() == "r1"
        await client.aclose()

    run_async(scenario())
    ttl = redis_client.ttl(HeadTagKeys().entry("r1", "brand1 whole milk"))
    assert 3500 < ttl <= 3600


def test_a_second_run_replaces_the_first_and_readers_never_see_a_mix(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    async def reader(store: HeadTagStore, done: asyncio.Event, seen: list[set[str]]) -> None:
        rng = random.Random(len(seen))
        for _ in range(100_000):  # bounded; ends when the writer is done
            batch = await store.get_many(rng.sample(QUERIES, 32))
            assert all(r is not None for r in batch)  # both runs hold every query
            seen.append({r.run_id for r in batch if r is not None})
            if done.is_set():
                return

    async def scenario() -> list[set[str]]:
        writer_client = connect_head_tag_cache(redis_server.url, socket_timeout_s=5)
        writer = HeadTagWriter(writer_client, grace_s=30)
        await load_run(writer, "r1", QUERIES)
        done, seen = asyncio.Event(), list[set[str]]()
        reader_clients = [connect_head_tag_cache(redis_server.url) for _ in range(3)]
        readers = [asyncio.create_task(reader(HeadTagStore(c), done, seen)) for c in reader_clients]
        await asyncio.sleep(0.01)
        await load_run(writer, "r2", QUERIES)  # written in 2 chunks while readers read, then swapped
        await asyncio.sleep(0.05)
        done.set()
        await asyncio.gather(*readers)
        for client in [writer_client, *reader_clients]:
            await client.aclose()
        return seen

    seen = run_async(scenario())
    assert all(len(runs) == 1 for runs in seen), [r for r in seen if len(r) != 1][:3]
    assert {"r1"} in seen and {"r2"} in seen
    assert seen[-1] == {"r2"}
    # The replaced run is retired: its entries expire within the grace period, the marker stays.
    keys = HeadTagKeys()
    assert 0 < redis_client.ttl(keys.entry("r1", QUERIES[0])) <= 30
    assert redis_client.exists(keys.retired("r1"))


def test_a_corrupt_value_is_a_miss_not_an_error(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    async def scenario() -> HeadTagStore:
        client = connect_head_tag_cache(redis_server.url)
        store = HeadTagStore(client)
        await load_run(HeadTagWriter(client), "r1", QUERIES[:2])
        redis_client.set(HeadTagKeys().entry("r1", QUERIES[0]), b"\xff\xff not protobuf")
        redis_client.set(HeadTagKeys().entry("r1", QUERIES[1]), b"")  # parses, but is no entry
        assert await store.get_many(QUERIES[:2]) == [None, None]
        await client.aclose()
        return store

    assert run_async(scenario()).stats.corrupt_entries == 2


def test_a_decoded_entry_is_reused_only_for_the_same_bytes(
    redis_server: RedisServer, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[bytes] = []

    def counting_decode(value: bytes) -> CachedHeadTags:
        decoded.append(value)
        return decode_entry(value)

    monkeypatch.setattr(head_tags, "decode_entry", counting_decode)

    async def scenario() -> None:
        client = connect_head_tag_cache(redis_server.url)
        writer = HeadTagWriter(client)
        await load_run(writer, "m1", QUERIES[:3])
        store = HeadTagStore(client, decoded_max=2)
        first = await store.get_many(QUERIES[:2])
        again = await store.get_many(QUERIES[:2])
        assert len(decoded) == 2 and again == first
        # The same run, the entry rewritten: other bytes, decoded anew.
        rewritten = to_head_tags(QUERIES[0], Understanding(), teacher_version="rewritten", run_id="m1")
        redis_client.set(HeadTagKeys().entry("m1", QUERIES[0]), encode_entry(rewritten))
        (entry,) = await store.get_many(QUERIES[:1])
        assert entry is not None and entry.teacher_version == "rewritten" and len(decoded) == 3
        # A new run with the same answers: its run id is in the bytes, so nothing of m1 is served.
        await load_run(writer, "m2", QUERIES[:3])
        assert [e.run_id if e else None for e in await store.get_many(QUERIES[:3])] == ["m2"] * 3
        assert len(decoded) == 6
        # Bounded: two entries kept, the oldest goes first (QUERIES[0] of m2 was pushed out by QUERIES[2]).
        await store.get_many(QUERIES[:1])
        assert len(decoded) == 7
        await client.aclose()

    run_async(scenario())


def test_a_client_that_decodes_replies_is_refused(redis_server: RedisServer) -> None:
    with pytest.raises(ValueError, match="decode_responses=False"):
        HeadTagStore(redis.asyncio.Redis.from_url(redis_server.url, decode_responses=True))


def test_an_incomplete_run_is_not_activated(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    async def scenario() -> None:
        client = connect_head_tag_cache(redis_server.url)
        store, writer = HeadTagStore(client), HeadTagWriter(client)
        await load_run(writer, "r1", QUERIES[:10])
        await writer.write_run_entries("r2", entries("r2", QUERIES[:9], "t2"), 3600)
        activation = await writer.activate("r2", 10)
        assert activation.status is ActivationStatus.COUNT_MISMATCH
        assert (activation.present, activation.expected, activation.previous_run_id) == (9, 10, "r1")
        assert not activation.active
        assert [r.run_id if r else None for r in await store.get_many(QUERIES[:2])] == ["r1", "r1"]
        await client.aclose()

    run_async(scenario())


def test_a_replaced_run_can_never_come_back(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    async def scenario() -> None:
        client = connect_head_tag_cache(redis_server.url)
        writer = HeadTagWriter(client)
        await load_run(writer, "r1", QUERIES[:5])
        await load_run(writer, "r2", QUERIES[:5])
        assert (await writer.activate("r2", 5)).status is ActivationStatus.ALREADY_ACTIVE
        assert (await writer.activate("r1", 5)).status is ActivationStatus.RETIRED  # e.g. a late redelivery
        with pytest.raises(RetiredRunError, match="r1"):
            await writer.write_run_entries("r1", entries("r1", QUERIES[:5], "t1"), 3600)
        assert await HeadTagStore(client).active_run() == "r2"
        await client.aclose()

    run_async(scenario())


def created(msgs: list[head_tags_pb2.HeadTags], at_us: int) -> list[head_tags_pb2.HeadTags]:
    for msg in msgs:
        msg.created_at.FromMicroseconds(at_us)
    return msgs


def test_a_replaced_run_published_again_is_activated_and_its_old_records_stay_refused(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Run ids hash the teacher's inputs, so X -> Y -> X publishes run A twice: the second publication was
    created after B replaced A, which is what tells it from a late copy of the first one."""

    async def scenario() -> None:
        client = connect_head_tag_cache(redis_server.url)
        writer = HeadTagWriter(client, grace_s=30)
        assert await writer.write_run_entries("a", created(entries("a", QUERIES[:6], "x"), 1_000), 3600) == 6
        assert (await writer.activate("a", 6, created_at_us=1_000)).status is ActivationStatus.ACTIVATED
        await writer.write_run_entries("b", created(entries("b", QUERIES[:4], "y"), 2_000), 3600)
        assert (await writer.activate("b", 4, created_at_us=2_000)).status is ActivationStatus.ACTIVATED

        # A late copy of A's first publication: refused, entries and run_end alike.
        with pytest.raises(RetiredRunError, match="'a'"):
            await writer.write_run_entries("a", created(entries("a", QUERIES[:6], "x"), 1_000), 3600)
        assert (await writer.activate("a", 6, created_at_us=1_000)).status is ActivationStatus.RETIRED
        # A run_end created after B, with no entries written since: A's index is B-era leftovers, not a run.
        assert (await writer.activate("a", 6, created_at_us=3_000)).status is ActivationStatus.RETIRED

        # The re-publication holds 5 of the 6 queries: only its own entries count, not the first one's.
        mixed = created(entries("a", QUERIES[:5], "x2"), 3_000) + created(entries("a", QUERIES[5:6], "x"), 1_000)
        assert await writer.write_run_entries("a", mixed, 3600) == 5  # the stale sixth is skipped
        assert (await writer.activate("a", 6, created_at_us=3_000)).status is ActivationStatus.COUNT_MISMATCH
        activation = await writer.activate("a", 5, created_at_us=3_000)
        assert (activation.status, activation.previous_run_id) == (ActivationStatus.ACTIVATED, "b")
        hits = await HeadTagStore(client).get_many(QUERIES[:6])
        assert [h.teacher_version if h else None for h in hits] == ["x2"] * 5 + [None]
        # B is retired now, and A's first publication is still refused while A is active.
        assert (await writer.activate("b", 4, created_at_us=2_000)).status is ActivationStatus.RETIRED
        with pytest.raises(RetiredRunError, match="'a'"):
            await writer.write_run_entries("a", created(entries("a", QUERIES[:1], "x"), 1_000), 3600)
        await client.aclose()

    run_async(scenario())
    assert redis_client.ttl(HeadTagKeys().entry("a", QUERIES[0])) > 30  # A's entries are not on B's grace


def test_a_run_created_before_the_active_one_is_superseded(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Runs interleaved across partitions can complete out of order: creation time decides."""

    async def scenario() -> None:
        client = connect_head_tag_cache(redis_server.url)
        writer = HeadTagWriter(client, grace_s=30)
        for run_id in ("old", "new"):
            await writer.write_run_entries(run_id, entries(run_id, QUERIES[:5], run_id), 3600)
        assert (await writer.activate("new", 5, created_at_us=2_000)).status is ActivationStatus.ACTIVATED
        late = await writer.activate("old", 5, created_at_us=1_000)
        assert (late.status, late.previous_run_id, late.active) == (ActivationStatus.SUPERSEDED, "new", False)
        assert await HeadTagStore(client).active_run() == "new"
        assert (await writer.activate("old", 5, created_at_us=3_000)).status is ActivationStatus.RETIRED
        await client.aclose()

    run_async(scenario())
    assert 0 < redis_client.ttl(HeadTagKeys().entry("old", QUERIES[0])) <= 30


def test_entries_expire(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    async def scenario() -> float:
        client = connect_head_tag_cache(redis_server.url)
        store = HeadTagStore(client)
        await load_run(HeadTagWriter(client), "r1", QUERIES[:3], ttl_s=1)
        assert all(await store.get_many(QUERIES[:3]))
        started = time.monotonic()
        for _ in range(100):  # bounded polling: the TTL is 1 s
            if await store.get_many(QUERIES[:3]) == [None, None, None]:
                break
            await asyncio.sleep(0.05)
        await client.aclose()
        return time.monotonic() - started

    assert run_async(scenario()) < 3


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop and hang without disturbing the session's."""
    server = RedisServer(free_port(), tmp_path / "redis.log", tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.pid is not None:
            os.kill(server.pid, signal.SIGCONT)  # in case the test stopped it mid-way
        server.stop()


def test_redis_down_fails_fast_and_the_same_store_recovers(own_redis: RedisServer) -> None:
    async def scenario() -> tuple[float, float]:
        client = connect_head_tag_cache(own_redis.url)
        store, writer = HeadTagStore(client), HeadTagWriter(client)
        await load_run(writer, "r1", QUERIES[:5])
        assert all(await store.get_many(QUERIES[:5]))

        own_redis.stop()
        started = time.monotonic()
        with pytest.raises(CacheUnavailable, match=str(own_redis.port)):
            await store.get_many(QUERIES[:5])
        down_s = time.monotonic() - started
        with pytest.raises(CacheUnavailable):
            await store.ping()

        own_redis.start()  # same port, empty (nothing persisted)
        assert await store.get_many(QUERIES[:5]) == [None] * 5  # the pooled, dead connections were replaced
        await load_run(writer, "r2", QUERIES[:5])
        assert [r.run_id if r else None for r in await store.get_many(QUERIES[:2])] == ["r2", "r2"]

        assert own_redis.pid is not None
        os.kill(own_redis.pid, signal.SIGSTOP)  # hung, not down: only the socket timeout can tell
        started = time.monotonic()
        try:
            with pytest.raises(CacheUnavailable):
                await store.get_many(QUERIES[:5])
            hung_s = time.monotonic() - started
        finally:
            os.kill(own_redis.pid, signal.SIGCONT)
        for _ in range(20):  # bounded: the server answers again within a few timeouts
            try:
                assert len(await store.get_many(QUERIES[:5])) == 5
                break
            except CacheUnavailable:
                await asyncio.sleep(0.05)
        else:
            pytest.fail("the store did not recover after SIGCONT")
        await client.aclose()
        return down_s, hung_s

    down_s, hung_s = run_async(scenario())
    assert down_s < 0.5, down_s
    assert hung_s < 1.0, hung_s


def test_a_redis_with_a_password_refuses_clients_without_it_and_keeps_it_across_restarts(tmp_path: Path) -> None:
    password_file = tmp_path / "stack" / "redis" / "password"
    server = RedisServer(free_port(), tmp_path / "redis.log", tmp_path, password_file=password_file)
    server.start()
    try:
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
        password = server.password
        assert password is not None and len(password.get_secret_value()) >= 32
        assert server.pid is not None
        # Not on its command line, which every local user can read in /proc.
        assert password.get_secret_value() not in " ".join(psutil.Process(server.pid).cmdline())

        async def scenario() -> None:
            anonymous, wrong = (
                connect_head_tag_cache(server.url),
                connect_head_tag_cache(server.url, password=SecretStr("x")),
            )
            for client in (anonymous, wrong):
                with pytest.raises(CacheUnavailable, match=f"{server.port}.*QU_REDIS_PASSWORD"):
                    await HeadTagStore(client).get_many(QUERIES[:1])
                await client.aclose()
            client = connect_head_tag_cache(server.url, password=password)
            await load_run(HeadTagWriter(client), "r1", QUERIES[:2])
            assert [h.run_id if h else None for h in await HeadTagStore(client).get_many(QUERIES[:2])] == ["r1"] * 2
            await client.aclose()

        run_async(scenario())
        server.stop()
        server.start()  # the same stack started again: the same password, so its clients' settings hold
        assert server.password == password
        assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    finally:
        server.stop()


def test_a_password_file_others_can_read_is_refused(tmp_path: Path) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("s3cret-but-shared\n")
    password_file.chmod(0o644)
    with pytest.raises(RedisServerError, match=rf"{password_file}.*0o644.*chmod 600"):
        RedisServer(free_port(), tmp_path / "r.log", tmp_path, password_file=password_file).start()


def test_a_port_in_use_is_refused_by_name(redis_server: RedisServer, tmp_path: Path) -> None:
    with pytest.raises(RedisServerError, match=f"port {redis_server.port} is already in use"):
        RedisServer(redis_server.port, tmp_path / "r.log", tmp_path).start()


def test_a_missing_binary_says_how_to_get_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RedisServerError, match=r"apt-get install -y redis-server\) or set QU_REDIS_URL"):
        RedisServer(free_port(), tmp_path / "r.log", tmp_path).start()


def mget_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


def test_concurrent_gets_share_mgets(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    async def scenario() -> list[str | None]:
        client = connect_head_tag_cache(redis_server.url)
        await load_run(HeadTagWriter(client), "r1", QUERIES[:100])
        store = HeadTagStore(client)
        await store.get_many(QUERIES[:1])  # learn the active run: the steady state is one pipeline per batch
        redis_client.config_resetstat()
        lookup = BatchingHeadTagLookup(store, window_ms=2, max_batch=64)
        results = await asyncio.gather(*(lookup.get(q) for q in QUERIES[:100]))
        await lookup.aclose()
        await client.aclose()
        return [r.normalized_query if r else None for r in results]

    assert run_async(scenario()) == QUERIES[:100]
    assert mget_calls(redis_client) == 2  # 64 by size, 36 by the window
