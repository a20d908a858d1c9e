"""The traffic recorder against the real broker: every record archived once, commits after the files."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from kafka import KafkaProducer

from services.kafka_clients import producer, send_all
from services.replay.archive import read_archive, records_of
from services.replay.recorder import RecorderCounters, TrafficRecorder
from services.replay.runner import _input
from services.stack.tansu import TansuBroker
from services.wire import InvalidEvent, check_header_keys

pytestmark = pytest.mark.integration


def events(n: int, start: int = 0) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    return [
        (b"milk", orjson.dumps({"event_id": f"e{i}", "query": f"milk {i}"}), [("traceparent", b"00-abc")])
        for i in range(start, start + n)
    ]


class CommitFailsOnce(AIOKafkaConsumer):  # type: ignore[misc]
    """A real consumer whose first commit fails, as a recorder killed between its write and its commit."""

    failed = False

    async def commit(self, *args: Any, **kwargs: Any) -> Any:
        if not CommitFailsOnce.failed:
            CommitFailsOnce.failed = True
            raise RuntimeError("killed before the commit")
        return await super().commit(*args, **kwargs)


def recorder(broker: TansuBroker, group: str, archive: Path, topics: list[str], **kw: Any) -> TrafficRecorder:
    return TrafficRecorder(broker.bootstrap, archive, group=group, topics=topics, flush_s=0.5, **kw)


def record_until_idle(recording: TrafficRecorder) -> RecorderCounters:
    async def go() -> RecorderCounters:
        try:
            return await recording.run_until_idle(idle_s=1.0, timeout_s=60)
        finally:
            await recording.stop()

    return asyncio.run(go())


def test_every_record_is_archived_once_and_a_new_recorder_goes_on_from_the_commit(
    kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], tmp_path: Path
) -> None:
    searches, annotations = kafka_topic(3), kafka_topic(2)
    client = producer(kafka_broker.bootstrap)
    send_all(client, searches, [*events(30), (b"k", b"\xff not an event", [])])
    send_all(client, annotations, [(b"milk", orjson.dumps({"event_id": "e1", "source": "cache"}), [])])
    group = f"rec-{uuid.uuid4().hex[:6]}"

    counters = record_until_idle(recorder(kafka_broker, group, tmp_path, [searches, annotations]))
    assert (counters.records, counters.without_event_id) == (32, 1)

    send_all(client, searches, events(5, start=30))
    again = record_until_idle(recorder(kafka_broker, group, tmp_path, [searches, annotations]))
    assert again.records == 5  # not the 31 before: they were committed

    rows = list(records_of(read_archive(tmp_path, searches)))
    assert sorted(r.event_id or "-" for r in rows) == sorted(["-", *(f"e{i}" for i in range(35))])
    assert {r.headers for r in rows if r.event_id} == {(("traceparent", b"00-abc"),)}
    assert [r.event_id for r in records_of(read_archive(tmp_path, annotations))] == ["e1"]


def test_a_commit_that_fails_after_the_write_loses_nothing_and_duplicates_nothing(
    kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], tmp_path: Path
) -> None:
    searches = kafka_topic(2)
    send_all(producer(kafka_broker.bootstrap), searches, events(20))
    group = f"rec-{uuid.uuid4().hex[:6]}"
    with pytest.raises(RuntimeError, match="killed before the commit"):
        record_until_idle(recorder(kafka_broker, group, tmp_path, [searches], consumer_factory=CommitFailsOnce))
    written_before = {p.name for p in tmp_path.rglob("*.parquet")}
    assert written_before  # written, never committed

    record_until_idle(recorder(kafka_broker, group, tmp_path, [searches]))  # reads them all again
    rows = list(records_of(read_archive(tmp_path, searches)))
    assert sorted(r.event_id or "" for r in rows) == sorted(f"e{i}" for i in range(20))


class _NotUtf8Key(str):
    """A header key kafka-python writes as raw bytes that are not UTF-8 (as tests/e2e/test_faults.py sends)."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfeodd"


def test_a_header_key_that_is_not_utf8_is_archived_as_it_came_and_replays_as_a_dead_letter(
    kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], tmp_path: Path
) -> None:
    searches = kafka_topic(1)
    raw = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    raw.send(searches, value=b'{"event_id": "odd", "query": "milk"}', headers=[(_NotUtf8Key("x"), b"v")])
    raw.send(searches, value=b'{"event_id": "fine", "query": "milk"}', headers=[("traceparent", b"00-x")])
    raw.flush()
    raw.close()
    counters = record_until_idle(recorder(kafka_broker, f"rec-{uuid.uuid4().hex[:6]}", tmp_path, [searches]))
    assert counters.records == 2  # the bad key stalled nothing and crashed nothing
    odd, fine = list(records_of(read_archive(tmp_path, searches)))
    assert [k.encode("utf-8", "surrogateescape") for k, _ in odd.headers] == [b"\xff\xfeodd"]
    assert odd.event_id == "odd" and fine.headers == (("traceparent", b"00-x"),)
    # A replay hands the handler the key the worker saw: dead-lettered as the worker did (invalid_header).
    with pytest.raises(InvalidEvent, match="not UTF-8"):
        check_header_keys(_input(odd).headers)
    check_header_keys(_input(fine).headers)
