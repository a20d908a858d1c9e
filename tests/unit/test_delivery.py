"""BatchDelivery: a batch is done only when every outcome is on the broker; a refused record becomes a
dead letter; any other failure is raised so that nothing of the batch is acknowledged.

The producer here is an in-memory fake; the worker's delivery through the real broker is tested in
tests/e2e/test_faults.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import UTC, datetime

import pytest
from qu.v1 import dead_letter_pb2

from services.annotation.delivery import BatchDelivery, KafkaHeaders, UndeliveredOutcome
from services.annotation.handler import InputRecord, Outcome
from services.domain import Annotation, CacheMiss, Source, Understanding
from services.topics import CACHE_MISSES, DEAD_LETTER, QUERY_ANNOTATIONS
from services.wire import RecordOrigin


class TooLarge(Exception):
    pass


class BrokerGone(Exception):
    pass


class FakeProducer:
    """Sends succeed unless a rule says otherwise: refuse at once, or fail the delivery future."""

    def __init__(self, *, refuse_now: set[str] | None = None, fail_later: dict[str, Exception] | None = None) -> None:
        self.refuse_now = refuse_now or set()  # topics whose records are refused at send()
        self.fail_later = fail_later or {}  # topic -> the error its delivery future ends with
        self.sent: list[tuple[str, bytes | None, bytes]] = []

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: KafkaHeaders) -> Awaitable[object]:
        if topic in self.refuse_now:
            raise TooLarge(f"{len(value)} bytes")
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if topic in self.fail_later:
            future.set_exception(self.fail_later[topic])
        else:
            self.sent.append((topic, key, value))
            future.set_result(None)
        return future


def record(offset: int) -> InputRecord:
    return InputRecord(
        b'{"event_id": "e", "query": "milk"}', b"milk", None, RecordOrigin("qu.search-events.v1", 0, offset)
    )


def annotated(event_id: str) -> Outcome:
    annotation = Annotation(event_id, "milk", "milk", Understanding(version="v"), Source.CACHE, "t1")
    miss = CacheMiss("milk", "Milk", event_id, datetime(2026, 12, 6, tzinfo=UTC))
    return Outcome(annotation=annotation, key=b"milk", cache_miss=miss)


def deliver(producer: FakeProducer, outcomes: list[Outcome]) -> BatchDelivery:
    records = [record(i) for i in range(len(outcomes))]
    delivery = BatchDelivery(
        producer, records, annotation_format="json", is_rejection=lambda e: isinstance(e, TooLarge)
    )

    async def go() -> None:
        for i, outcome in enumerate(outcomes):
            await delivery.on_outcome(i, outcome)
        await delivery.wait()

    asyncio.run(go())
    return delivery


def test_every_outcome_is_sent_to_its_topic() -> None:
    producer = FakeProducer()
    deliver(producer, [annotated("a"), annotated("b")])
    assert [topic for topic, _, _ in producer.sent] == [QUERY_ANNOTATIONS, CACHE_MISSES] * 2


def test_an_annotation_the_client_refuses_becomes_a_dead_letter_and_the_batch_goes_on() -> None:
    producer = FakeProducer(refuse_now={QUERY_ANNOTATIONS})
    rejected: list[str] = []
    records = [record(0)]
    delivery = BatchDelivery(
        producer,
        records,
        annotation_format="json",
        is_rejection=lambda e: isinstance(e, TooLarge),
        on_rejected=rejected.append,
    )

    async def go() -> None:
        await delivery.on_outcome(0, annotated("a"))
        await delivery.wait()

    asyncio.run(go())
    [(topic, _, value)] = producer.sent
    letter = dead_letter_pb2.DeadLetter.FromString(value)
    assert topic == DEAD_LETTER and letter.reason == "output_rejected"
    assert "TooLarge" in letter.detail and letter.offset == 0
    assert rejected == ["output_rejected"]


def test_a_refusal_reported_by_the_delivery_future_is_handled_the_same_way() -> None:
    producer = FakeProducer(fail_later={QUERY_ANNOTATIONS: TooLarge("broker: record too large")})
    deliver(producer, [annotated("a")])
    assert [topic for topic, _, _ in producer.sent] == [CACHE_MISSES, DEAD_LETTER]


def test_any_other_failure_is_raised_naming_the_record() -> None:
    producer = FakeProducer(fail_later={QUERY_ANNOTATIONS: BrokerGone("timed out")})
    with pytest.raises(UndeliveredOutcome, match=r"qu.search-events.v1\[0\]@0 .*BrokerGone: timed out"):
        deliver(producer, [annotated("a")])


def test_a_dead_letter_that_is_refused_too_is_not_retried_forever() -> None:
    producer = FakeProducer(refuse_now={QUERY_ANNOTATIONS, DEAD_LETTER})
    with pytest.raises(UndeliveredOutcome, match="TooLarge"):
        deliver(producer, [annotated("a")])
