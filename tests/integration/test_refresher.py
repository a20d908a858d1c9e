"""The head-tag refresher against real tansu and real Redis: runs in, active runs out, at-least-once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest
import redis
from confluent_kafka import OFFSET_INVALID, Consumer, Producer, TopicPartition
from qu.v1 import head_tags_pb2

from services.cache import (
    CacheUnavailable,
    HeadTagAdmission,
    HeadTagRefresher,
    HeadTagStore,
    HeadTagWriter,
    connect_head_tag_cache,
    publish_head_tags,
)
from services.cache.keys import to_head_tags
from services.catalog.artifacts import build_catalog
from services.catalog.model import Product
from services.domain import SCHEMA_VERSION, CategoryScore, Rewrite, RewriteType, Role, Tag, Understanding
from services.stack.redis_server import RedisServer
from services.stack.tansu import TansuBroker
from tests.fixtures.redis import run_async

pytestmark = pytest.mark.integration

QUERIES = [f"brand{i} oat milk" for i in range(300)]
Entry = tuple[str, Understanding, str]
# The catalog every refresher here binds entries to: it holds what run_entries() tags.
ALTERNATIVES = ("dairy", "milk alternatives")
CATALOG = build_catalog(
    [
        Product("1", "Oat Milk", "Oatly", ALTERNATIVES),
        Product("2", "Vanilla Oat Milk", "Oatly", ALTERNATIVES),
        Product("3", "Oat Beverage", "Oatly", ALTERNATIVES),
        Product("4", "Whole Milk", "Horizon Organic", ("dairy", "milk")),
    ],
    embedder=None,
)
ADMISSION = HeadTagAdmission(CATALOG)


def run_entries(queries: Sequence[str], version: str) -> list[Entry]:
    """Every query ends in "oat milk": one product tag on its last 8 characters."""
    return [
        (
            q,
            Understanding(
                tags=[Tag(Role.PRODUCT, len(q) - 8, len(q), "oat milk", "oat milk")],
                categories=[CategoryScore(ALTERNATIVES, 0.75)],
            ),
            version,
        )
        for q in queries
    ]


def producer(broker: TansuBroker) -> Producer:
    return Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})


def group_config(broker: TansuBroker, group: str) -> dict[str, Any]:
    return {"bootstrap.servers": broker.bootstrap, "group.id": group}


def committed(broker: TansuBroker, group: str, topic: str, partitions: int) -> list[int]:
    reader = Consumer({**group_config(broker, group), "session.timeout.ms": 6000})
    try:
        tps = reader.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return [tp.offset for tp in tps]
    finally:
        reader.close()


async def refresh(
    broker: TansuBroker, redis_url: str, topic: str, group: str, **kwargs: Any
) -> tuple[HeadTagRefresher, HeadTagStore]:
    client = connect_head_tag_cache(redis_url, socket_timeout_s=5)
    refresher = HeadTagRefresher(group_config(broker, group), client, admission=ADMISSION, topic=topic, **kwargs)
    try:
        await refresher.run_until_idle(idle_s=0.5, timeout_s=60)
    finally:
        refresher.close()
    return refresher, HeadTagStore(client)


def test_a_published_run_becomes_the_active_run_and_offsets_are_committed(
    kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    topic = kafka_topic(3)
    assert publish_head_tags(producer(kafka_broker), "r1", run_entries(QUERIES, "teacher-1"), topic=topic) == 300

    async def scenario() -> None:
        refresher, store = await refresh(kafka_broker, redis_server.url, topic, "g1")
        c = refresher.counters
        assert (c.records, c.entries_written, c.runs_activated, c.runs_rejected) == (301, 300, 1, 0)
        hits = await store.get_many([QUERIES[0], QUERIES[299], "not a head query"])
        assert [h.run_id if h else None for h in hits] == ["r1", "r1", None]
        assert hits[0] is not None and hits[0].understanding.tags[0].text == "oat milk"

    run_async(scenario())
    assert sum(committed(kafka_broker, "g1", topic, 3)) == 301  # every record, the run_end included


def test_a_second_run_replaces_the_first(
    kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    topic = kafka_topic(3)
    p = producer(kafka_broker)
    publish_head_tags(p, "r1", run_entries(QUERIES, "teacher-1"), topic=topic)
    publish_head_tags(p, "r2", run_entries(QUERIES[:100], "teacher-2"), topic=topic)

    async def scenario() -> None:
        refresher, store = await refresh(kafka_broker, redis_server.url, topic, "g2")
        c = refresher.counters
        # Both runs may complete in one batch, in any order: the older one then arrives late.
        assert (c.runs_activated + c.runs_superseded, c.runs_rejected) == (2, 0)
        hits = await store.get_many([QUERIES[0], QUERIES[200]])
        assert hits[0] is not None and (hits[0].run_id, hits[0].teacher_version) == ("r2", "teacher-2")
        assert hits[1] is None  # r2 does not hold it: the head set is replaced, not merged

    run_async(scenario())


def test_an_incomplete_run_is_logged_and_not_activated(
    kafka_broker: TansuBroker,
    kafka_topic: Callable[[int], str],
    redis_server: RedisServer,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = kafka_topic(3)
    p = producer(kafka_broker)
    publish_head_tags(p, "r1", run_entries(QUERIES[:10], "teacher-1"), topic=topic)
    for q, u, v in run_entries(QUERIES[:7], "teacher-2"):
        p.produce(topic, key=q.encode(), value=to_head_tags(q, u, teacher_version=v, run_id="r2").SerializeToString())
    end = head_tags_pb2.HeadTags(run_id="r2", run_end=True, run_size=8, schema_version=SCHEMA_VERSION)
    p.produce(topic, key=b"r2", value=end.SerializeToString())
    assert p.flush(10) == 0

    async def scenario() -> None:
        with caplog.at_level(logging.ERROR, logger="services.cache.refresher"):
            refresher, store = await refresh(kafka_broker, redis_server.url, topic, "g3")
        c = refresher.counters
        assert (c.runs_activated, c.runs_rejected, c.entries_written) == (1, 1, 17)
        assert await store.active_run() == "r1"

    run_async(scenario())
    assert "run r2 NOT activated: 7 entries present, run_end announced 8" in caplog.text
    assert sum(committed(kafka_broker, "g3", topic, 3)) == 19  # a rejected run_end is settled and committed


def test_an_undecodable_record_is_skipped_logged_and_counted(
    kafka_broker: TansuBroker,
    kafka_topic: Callable[[int], str],
    redis_server: RedisServer,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = kafka_topic(1)
    p = producer(kafka_broker)
    p.produce(topic, key=b"junk", value=b"\xff\xff not protobuf")
    assert p.flush(10) == 0
    publish_head_tags(p, "r1", run_entries(QUERIES[:20], "teacher-1"), topic=topic)

    async def scenario() -> None:
        with caplog.at_level(logging.ERROR, logger="services.cache.refresher"):
            refresher, store = await refresh(kafka_broker, redis_server.url, topic, "g4")
        assert (refresher.counters.undecodable, refresher.counters.runs_activated) == (1, 1)
        assert await store.active_run() == "r1"

    run_async(scenario())
    assert f"skipped undecodable record at {topic}[0]@0" in caplog.text
    assert committed(kafka_broker, "g4", topic, 1) == [22]


async def poll_until(condition: Callable[[], Awaitable[bool]], *, timeout_s: float = 30.0) -> None:
    for _ in range(int(timeout_s / 0.05)):  # bounded polling
        if await condition():
            return
        await asyncio.sleep(0.05)
    pytest.fail(f"condition not met within {timeout_s} s")


def test_a_run_end_ahead_of_its_entries_waits_and_pins_its_offset(
    kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Across partitions the run_end can be read first: the run waits, its offset stays uncommitted."""
    topic = kafka_topic(2)
    p = producer(kafka_broker)
    end = head_tags_pb2.HeadTags(run_id="r1", run_end=True, run_size=40, schema_version=SCHEMA_VERSION)
    p.produce(topic, key=b"r1", value=end.SerializeToString(), partition=0)
    assert p.flush(10) == 0
    commits: list[list[tuple[int, int]]] = []

    class RecordingConsumer(Consumer):
        def commit(self, *args: Any, **kwargs: Any) -> Any:
            commits.append([(tp.partition, tp.offset) for tp in kwargs["offsets"]])
            return super().commit(*args, **kwargs)

    async def scenario() -> None:
        client = connect_head_tag_cache(redis_server.url, socket_timeout_s=5)
        store = HeadTagStore(client)
        refresher = HeadTagRefresher(
            group_config(kafka_broker, "g5"),
            client,
            admission=ADMISSION,
            topic=topic,
            consumer_factory=RecordingConsumer,
        )
        stop = asyncio.Event()
        task = asyncio.create_task(refresher.run_forever(stop))

        async def run_end_read() -> bool:
            return refresher.counters.records == 1

        async def active() -> bool:
            return await store.active_run() == "r1"

        try:
            await poll_until(run_end_read)
            await asyncio.sleep(0.3)  # a few more polls: the run must go on waiting, uncommitted
            assert await store.active_run() is None
            assert all(offset == 0 for c in commits for _, offset in c)
            for q, u, v in run_entries(QUERIES[:40], "teacher-1"):
                msg = to_head_tags(q, u, teacher_version=v, run_id="r1")
                p.produce(topic, key=q.encode(), value=msg.SerializeToString(), partition=1)
            assert p.flush(10) == 0
            await poll_until(active)
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)
            refresher.close()
            await client.aclose()
        assert refresher.counters.runs_activated == 1

    run_async(scenario())
    assert committed(kafka_broker, "g5", topic, 2) == [1, 40]


def test_commits_follow_writes_and_a_crash_before_commit_redelivers(
    kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    topic = kafka_topic(3)
    publish_head_tags(producer(kafka_broker), "r1", run_entries(QUERIES[:50], "teacher-1"), topic=topic)
    events: list[tuple[str, int]] = []

    class RecordingWriter(HeadTagWriter):
        async def write_run_entries(self, run_id: str, entries: Sequence[head_tags_pb2.HeadTags], ttl_s: int) -> int:
            written = await super().write_run_entries(run_id, entries, ttl_s)
            events.append(("write", written))
            return written

    class CrashingConsumer(Consumer):
        def commit(self, *args: Any, **kwargs: Any) -> Any:
            events.append(("commit", sum(tp.offset for tp in kwargs["offsets"])))
            raise RuntimeError("killed between write and commit")

    async def scenario() -> None:
        client = connect_head_tag_cache(redis_server.url, socket_timeout_s=5)
        crashing = HeadTagRefresher(
            group_config(kafka_broker, "g6"),
            client,
            admission=ADMISSION,
            topic=topic,
            writer=RecordingWriter(client),
            consumer_factory=CrashingConsumer,
        )
        with pytest.raises(RuntimeError, match="killed"):
            await crashing.run_until_idle(idle_s=0.5, timeout_s=60)
        crashing.close()
        await client.aclose()

    run_async(scenario())
    assert events[0][0] == "write" and events[-1][0] == "commit"
    written = sum(n for kind, n in events if kind == "write")
    assert events[-1][1] <= written + 1  # nothing committed beyond what was written (+ the run_end)
    assert committed(kafka_broker, "g6", topic, 3) == [OFFSET_INVALID] * 3  # the commit never happened

    async def resume() -> None:
        refresher, store = await refresh(kafka_broker, redis_server.url, topic, "g6")
        assert refresher.counters.entries_written == 50  # redelivered and written again: harmless
        assert await store.active_run() == "r1"

    run_async(resume())
    assert sum(committed(kafka_broker, "g6", topic, 3)) == 51


def test_nothing_is_committed_while_redis_writes_fail(
    kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    topic = kafka_topic(1)
    publish_head_tags(producer(kafka_broker), "r1", run_entries(QUERIES[:5], "teacher-1"), topic=topic)

    class FailingWriter(HeadTagWriter):
        async def write_run_entries(self, run_id: str, entries: Sequence[head_tags_pb2.HeadTags], ttl_s: int) -> int:
            raise CacheUnavailable("Redis at test is unavailable (writing)")

    async def scenario() -> None:
        client = connect_head_tag_cache(redis_server.url)
        refresher = HeadTagRefresher(
            group_config(kafka_broker, "g7"), client, admission=ADMISSION, topic=topic, writer=FailingWriter(client)
        )
        try:
            with pytest.raises(CacheUnavailable):
                await refresher.run_until_idle(idle_s=0.5, timeout_s=60)
        finally:
            refresher.close()

    run_async(scenario())
    assert committed(kafka_broker, "g7", topic, 1) == [OFFSET_INVALID]


def test_run_forever_rejects_a_run_that_stops_growing(
    kafka_broker: TansuBroker,
    kafka_topic: Callable[[int], str],
    redis_server: RedisServer,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    topic = kafka_topic(3)
    p = producer(kafka_broker)
    publish_head_tags(p, "r1", run_entries(QUERIES[:30], "teacher-1"), topic=topic)
    end = head_tags_pb2.HeadTags(run_id="r2", run_end=True, run_size=5, schema_version=SCHEMA_VERSION)
    p.produce(topic, key=b"r2", value=end.SerializeToString())
    assert p.flush(10) == 0

    async def scenario() -> None:
        client = connect_head_tag_cache(redis_server.url)
        store = HeadTagStore(client)
        refresher = HeadTagRefresher(
            group_config(kafka_broker, "g8"), client, admission=ADMISSION, topic=topic, run_end_timeout_s=0.5
        )
        stop = asyncio.Event()
        task = asyncio.create_task(refresher.run_forever(stop))

        async def settled() -> bool:
            return refresher.counters.runs_rejected == 1

        try:
            with caplog.at_level(logging.ERROR, logger="services.cache.refresher"):
                await poll_until(settled)
            assert await store.active_run() == "r1"
        finally:
            stop.set()
            await asyncio.wait_for(task, 10)  # the stop event ends the loop within one poll
            refresher.close()
            await client.aclose()

    run_async(scenario())
    assert "run r2 NOT activated: 0 entries present, run_end announced 5 (its entries stopped arriving)" in caplog.text


def test_a_run_published_again_after_it_was_replaced_becomes_active_again(
    kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """Run ids hash the teacher's inputs: thresholds X -> Y -> X make run A again, and publishing it must
    activate it, although B retired A (and a late copy of A's first run_end must still be refused)."""
    topic = kafka_topic(3)
    p = producer(kafka_broker)

    async def refreshed(expected_active: str) -> HeadTagRefresher:
        refresher, store = await refresh(kafka_broker, redis_server.url, topic, "g9")
        assert await store.active_run() == expected_active
        return refresher

    publish_head_tags(p, "run-a", run_entries(QUERIES[:50], "teacher-x"), topic=topic)
    run_async(refreshed("run-a"))
    first_end = head_tags_pb2.HeadTags(run_id="run-a", run_end=True, run_size=50, schema_version=SCHEMA_VERSION)
    first_end.created_at.GetCurrentTime()  # before B: a redelivery of A's first publication looks like this
    publish_head_tags(p, "run-b", run_entries(QUERIES[:40], "teacher-y"), topic=topic)
    run_async(refreshed("run-b"))

    publish_head_tags(p, "run-a", run_entries(QUERIES[:50], "teacher-x"), topic=topic)
    again = run_async(refreshed("run-a"))
    c = again.counters
    assert (c.entries_written, c.retired_skipped, c.runs_activated, c.runs_rejected) == (50, 0, 1, 0)

    async def served() -> None:
        client = connect_head_tag_cache(redis_server.url, socket_timeout_s=5)
        hits = await HeadTagStore(client).get_many([QUERIES[0], QUERIES[45]])  # QUERIES[45] is not in B
        assert [(h.run_id, h.teacher_version) if h else None for h in hits] == [("run-a", "teacher-x")] * 2
        await client.aclose()

    run_async(served())

    p.produce(topic, key=b"run-b", value=first_end.SerializeToString())  # A's stale run_end, B retired since
    publish_head_tags(p, "run-b", run_entries(QUERIES[:40], "teacher-y"), topic=topic)
    stale = run_async(refreshed("run-b"))
    assert (stale.counters.runs_activated, stale.counters.runs_superseded) == (1, 1)


def test_an_entry_is_bound_to_the_catalog_before_it_reaches_redis(
    kafka_broker: TansuBroker,
    kafka_topic: Callable[[int], str],
    redis_server: RedisServer,
    redis_client: redis.Redis,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """qu.head-tags.v1 is a trust boundary: whoever writes it cannot put an out-of-catalog value into Redis.

    Crafted entries (a brand the span does not say, a model's spelling of a canonical, a NaN score, a bidi
    rewrite) are written without what the catalog binding drops, each logged with its topic[partition]@offset
    and counted; a record whose teacher version hides a bidi override is refused, so its run never activates.
    """
    topic = kafka_topic(1)  # one partition: the offsets below are the order of production
    crafted = [
        (
            "whole oat milk",
            Understanding(
                tags=[
                    Tag(Role.BRAND, 0, 5, "whole", "Oatly\u202e!!<>"),
                    Tag(Role.PRODUCT, 6, 14, "oat milk", "OAT MILK\u202e"),
                ],
                categories=[CategoryScore(ALTERNATIVES, 0.75)],
            ),
            "teacher-1",
        ),
        (
            "oatly oat milk",
            Understanding(
                tags=[
                    Tag(Role.BRAND, 0, 5, "oatly", "Horizon Organic"),
                    Tag(Role.PRODUCT, 6, 14, "oat milk", "oat milk"),
                ],
                categories=[CategoryScore(ALTERNATIVES, float("nan")), CategoryScore(("dairy", "milk"), 0.5)],
                rewrites=[
                    Rewrite(RewriteType.SYNONYM, "MILK\u202e\u200b<>!!"),
                    Rewrite(RewriteType.SUBSTITUTE, "oat beverage", 0.6),
                ],
            ),
            "teacher-1",
        ),
        *run_entries(["oat milk"], "teacher-1"),  # clean: written as published
    ]
    p = producer(kafka_broker)
    assert publish_head_tags(p, "r1", crafted, topic=topic) == 3  # offsets 0-2, run_end 3
    hidden_version = [("oatly", Understanding([Tag(Role.BRAND, 0, 5, "oatly", "Oatly")]), "teacher-2\u202e")]
    assert publish_head_tags(p, "r2", hidden_version, topic=topic) == 1  # offset 4, run_end 5

    async def scenario() -> None:
        with caplog.at_level(logging.WARNING, logger="services.cache.refresher"):
            refresher, store = await refresh(kafka_broker, redis_server.url, topic, "g10")
        c = refresher.counters
        assert (c.records, c.entries_written, c.out_of_catalog, c.items_dropped, c.invalid) == (6, 3, 2, 4, 1)
        assert (c.runs_activated, c.runs_rejected) == (1, 1)
        assert await store.active_run() == "r1"
        whole, oatly, clean = await store.get_many(["whole oat milk", "oatly oat milk", "oat milk"])
        assert whole is not None and oatly is not None and clean is not None
        assert [(t.role, t.text, t.canonical) for t in whole.understanding.tags] == [
            (Role.PRODUCT, "oat milk", "oat milk")
        ]
        assert [(t.role, t.canonical) for t in oatly.understanding.tags] == [(Role.PRODUCT, "oat milk")]
        assert oatly.understanding.categories == [CategoryScore(("dairy", "milk"), 0.5)]
        assert [r.query for r in oatly.understanding.rewrites] == ["oat beverage"]
        assert (clean.understanding.tags, clean.understanding.categories) == (
            crafted[2][1].tags,
            [CategoryScore(ALTERNATIVES, 0.75)],
        )

    run_async(scenario())
    stored = [redis_client.get(k) for k in redis_client.scan_iter(match=b"qu:v1:run:*:q:*")]
    assert len(stored) == 3
    assert not any(bad in value for value in stored if value for bad in ("\u202e".encode(), "\u200b".encode()))
    assert f"record at {topic}[0]@0 (run 'r1', query 'whole oat milk') written without 1 item(s)" in caplog.text
    assert "brand=Oatly\\u202e!!<>: span 'whole' does not name 'Oatly'" in caplog.text
    assert f"record at {topic}[0]@1 (run 'r1', query 'oatly oat milk') written without 3 item(s)" in caplog.text
    assert "score nan is not a number in [0, 1]" in caplog.text
    assert (
        f"skipped record at {topic}[0]@4 (run 'r2', query 'oatly'): teacher_version contains the invisible "
        "character U+202E RIGHT-TO-LEFT OVERRIDE" in caplog.text
    )
    assert sum(committed(kafka_broker, "g10", topic, 1)) == 6  # every record settled: none is read again
