"""A record whose header key is not UTF-8, on the real broker: without the worker's tolerant parsing the
partition stalls in aiokafka; with it, every record arrives, the bad key as lone surrogates, and the
handler dead-letters that record as invalid_header."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.consumer import fetcher
from aiokafka.record import memory_records
from kafka import KafkaProducer
from qu.v1 import dead_letter_pb2

from services import kafka_tolerant_records as tolerant_records
from services.dead_letter import encode_dead_letter
from services.stack.tansu import TansuBroker
from services.wire import InvalidEvent, RecordOrigin, check_header_keys, decode_search_event

pytestmark = pytest.mark.integration

BAD_KEY = b"\xffbad"


class _RawKey(str):
    """A header key kafka-python writes as these raw bytes: no Kafka client of ours can write a non-UTF-8 key."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return BAD_KEY


def _produce(bootstrap: str, topic: str) -> None:
    # One batch (linger) holding a good record, the bad one and another good one; then a batch of its own.
    client = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=200)
    client.send(topic, value=b'{"event_id": "a", "query": "milk"}', key=b"k")
    client.send(topic, value=b'{"event_id": "b", "query": "milk"}', key=b"k", headers=[(_RawKey("x"), b"v")])
    client.send(topic, value=b'{"event_id": "c", "query": "milk"}', key=b"k")
    client.flush(10)
    client.send(topic, value=b'{"event_id": "d", "query": "milk"}', key=b"k")
    client.flush(10)
    client.close()


async def _read(bootstrap: str, topic: str, *, want: int, seconds: float) -> tuple[list[object], list[str]]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"t-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
    )
    await consumer.start()
    records: list[object] = []
    errors: list[str] = []
    try:
        deadline = asyncio.get_running_loop().time() + seconds
        while len(records) < want and asyncio.get_running_loop().time() < deadline:
            try:
                batches = await consumer.getmany(timeout_ms=500)
            except UnicodeDecodeError as err:
                errors.append(str(err))
                await asyncio.sleep(0.2)
                continue
            for batch in batches.values():
                records.extend(batch)
    finally:
        await consumer.stop()
    return records, errors


def test_without_it_the_partition_stalls(
    kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiokafka's own reader, whatever ran before: importing streams.app (another test does) installs the tolerant one.
    monkeypatch.setattr(fetcher, "MemoryRecords", memory_records.MemoryRecords)
    topic = kafka_topic(1)
    _produce(kafka_broker.bootstrap, topic)
    records, errors = asyncio.run(_read(kafka_broker.bootstrap, topic, want=4, seconds=4))
    # Why the module exists: if aiokafka ever tolerates such keys itself, this fails and it can go.
    assert errors and len(records) < 4


def test_every_record_arrives_and_the_bad_one_becomes_an_invalid_header_dead_letter(
    kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fetcher, "MemoryRecords", fetcher.MemoryRecords)  # restored after the test
    tolerant_records.install()
    topic = kafka_topic(1)
    _produce(kafka_broker.bootstrap, topic)
    records, errors = asyncio.run(_read(kafka_broker.bootstrap, topic, want=4, seconds=20))
    assert errors == []
    assert [r.offset for r in records] == [0, 1, 2, 3]  # type: ignore[attr-defined]
    bad = records[1]
    [(key, value)] = bad.headers  # type: ignore[attr-defined]
    assert key.encode("utf-8", "surrogateescape") == BAD_KEY and value == b"v"
    for good in (records[0], records[2], records[3]):
        check_header_keys(good.headers)  # type: ignore[attr-defined]

    with pytest.raises(InvalidEvent) as raised:
        decode_search_event(bad.value, bad.headers, max_query_chars=512)  # type: ignore[attr-defined]
    assert raised.value.reason == "invalid_header" and "\\xffbad" in raised.value.detail
    letter = dead_letter_pb2.DeadLetter.FromString(
        encode_dead_letter(bad.value, bad.key, bad.headers, raised.value, RecordOrigin(topic, 0, 1))  # type: ignore[attr-defined]
    )
    assert dict(letter.headers) == {"\\xffbad": b"v"}
