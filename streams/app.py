"""The Faust worker's entrypoint: the app, its topics and the annotate agent.

The agent only moves bytes: it gives each batch of records to ``AnnotateHandler`` (plain async
code in ``services``) and sends each outcome as soon as the handler has it. A batch costs one
Redis lookup, and its misses' student calls share requests; the batch's sends are awaited until
the broker has them before the stream moves on, and Faust commits an offset only after that: a
worker killed mid-stream re-reads, never loses.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

from services.annotation.handler import AnnotateHandler, InputRecord, Outcome
from services.annotation.runtime import build_handler
from services.settings import Settings
from services.topics import CACHE_MISSES, DEAD_LETTER, QUERY_ANNOTATIONS, SEARCH_EVENTS
from services.wire import PROTOBUF, RecordOrigin, encode_annotation

HANDLER_READY = "qu: annotate handler ready"
# Under load a batch fills to BATCH_MAX and shares its Redis round trip, its student requests and its produce
# requests among more events: 256 instead of 64 measured +40-50% events/s at hit ratio 0.98 on 2 cores
# (docs/BENCHMARKS.md). Under light load BATCH_WITHIN_S closes a batch first, so latency does not change.
BATCH_MAX = 256
BATCH_WITHIN_S = 0.005
# Faust hard-codes aiokafka's fetch_max_wait_ms=1500. When a fetch finds no record, tansu answers only at the
# end of that wait even if records arrive meanwhile, which adds up to the wait to an event's latency: a raw
# passthrough measured p50 / p99 24 / 67 ms at 1,000 events/s with 50 ms, 199 / 782 ms with 1,500 ms.
# Kafka answers as soon as records arrive, so there this costs only a few more idle fetches.
FETCH_MAX_WAIT_MS = 50
log = logging.getLogger("qu.worker")
settings = Settings()

app = faust.App(
    "qu-annotate",
    broker=[f"kafka://{hostport}" for hostport in settings.kafka_bootstrap.split(",")],
    # tansu (and any broker) answers a group join in seconds with this, not the 45 s default.
    broker_session_timeout=6,
    # Only at-least-once works against tansu (its InitProducerId fails); annotations carry
    # event_id so consumers drop duplicates.
    processing_guarantee="at_least_once",
    consumer_auto_offset_reset="earliest",
    topic_allow_declare=False,  # topics are created by `qu up` (or by the platform) with their partitions
    topic_disable_leader=True,
    web_enabled=False,
    store="memory://",
)


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: faust_aiokafka.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads this when the consumer starts (its Fetcher is built in start()), after this returns.
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> _ConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


# Set before any topic is declared: declaring topics reaches the transport (faust.App._new_transport).
app.transport = _Transport(app.conf.broker_consumer, app)


def _raw_topic(name: str) -> faust.TopicT:
    # Bytes in, bytes out: decoding is the handler's job, so a bad record reaches it instead of crashing Faust.
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


search_events = _raw_topic(SEARCH_EVENTS)
annotation_topic = _raw_topic(QUERY_ANNOTATIONS)
cache_misses = _raw_topic(CACHE_MISSES)
dead_letters = _raw_topic(DEAD_LETTER)

_handler: AnnotateHandler | None = None
_handler_lock = asyncio.Lock()


async def handler() -> AnnotateHandler:
    global _handler
    async with _handler_lock:
        if _handler is None:
            _handler = await build_handler(settings)
            # `qu up` waits for this line: from here on, events are answered at full speed.
            log.info(HANDLER_READY)
        return _handler


async def _send(outcome: Outcome) -> list[Any]:
    """Queue the outcome's records; returns their delivery futures."""
    futures = []
    if outcome.annotation is not None:
        value, content_type = encode_annotation(outcome.annotation, settings.annotation_format)
        headers = [("content-type", content_type.encode())]
        futures.append(await annotation_topic.send(key=outcome.key, value=value, headers=headers))
        if outcome.cache_miss is not None:
            futures.append(
                await cache_misses.send(
                    key=outcome.key, value=outcome.cache_miss, headers=[("content-type", b"application/json")]
                )
            )
    elif outcome.dead_letter is not None:
        headers = [("content-type", PROTOBUF.encode()), ("reason", outcome.reason.encode())]
        futures.append(await dead_letters.send(key=outcome.key or None, value=outcome.dead_letter, headers=headers))
    return futures


@app.agent(search_events)
async def annotate(stream: faust.StreamT[bytes]) -> None:
    handle_batch = (await handler()).handle_batch
    delivered: list[Any] = []  # the delivery futures of the batch in hand

    async def send(_index: int, outcome: Outcome) -> None:
        # Queued as soon as the handler knows it: the hits go out while the batch's misses wait for the student.
        delivered.extend(await _send(outcome))

    # take_events acks a batch only when the loop comes back for the next one, i.e. after every record of it
    # was delivered below: Faust commits no offset of a batch before that, so a worker killed mid-batch re-reads.
    async for batch in cast(faust.Stream[bytes], stream).take_events(BATCH_MAX, within=BATCH_WITHIN_S):
        records = [
            InputRecord(
                e.message.value,
                e.message.key,
                e.message.headers,
                RecordOrigin(e.message.topic, e.message.partition, e.message.offset),
            )
            for e in batch
        ]
        delivered.clear()
        await handle_batch(records, send)
        for future in delivered:  # delivered before these offsets can be committed
            await future
