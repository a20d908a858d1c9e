"""The Faust worker's entrypoint: the app, its topics and the annotate agent.

The agent only moves bytes: it gives each batch of records to ``AnnotateHandler`` (plain async
code in ``services``) and hands each outcome to ``BatchDelivery`` as soon as the handler has it. A
batch costs one Redis lookup, and its misses' student calls share requests. A record is
acknowledged only after its outcome (annotation or dead letter) is on the broker, and Faust commits
only acknowledged offsets: an outcome the broker refuses for good becomes a bounded dead letter,
and any other failure to deliver stops the worker with none of the batch acknowledged (the
supervisor, ``qu up``, starts it again and it re-reads them). A worker killed mid-stream re-reads,
never loses.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import faust
import mode
from aiokafka import errors as kafka_errors

from services import kafka_tolerant_records as tolerant_records
from services.annotation.delivery import BatchDelivery, KafkaHeaders, UndeliveredOutcome
from services.annotation.handler import AnnotateHandler, InputRecord
from services.annotation.metrics import AnnotateMetrics
from services.annotation.runtime import HANDLER_READY, build_handler
from services.annotation.tracing import default_tracer, process_context
from services.health import Health
from services.kafka_security import KafkaSecurity
from services.settings import Settings
from services.telemetry.logs import logging_config
from services.topics import CACHE_MISSES, DEAD_LETTER, QUERY_ANNOTATIONS, SEARCH_EVENTS, WORKER_GROUP
from services.wire import RecordOrigin
from streams import fetch_wait
from streams.batching import BATCH_MAX, BATCH_WITHIN_S, PRODUCER_MAX_BATCH_BYTES
from streams.kafka_auth import broker_credentials

log = logging.getLogger("qu.worker")
# Before the consumer starts: a record whose header key is not UTF-8 becomes a dead letter, not a stalled partition.
tolerant_records.install()
settings = Settings()

app = faust.App(
    WORKER_GROUP,
    broker=[f"kafka://{hostport}" for hostport in settings.kafka_bootstrap.split(",")],
    # TLS / SASL (QU_KAFKA_SECURITY_PROTOCOL, ...): the consumer and producer of the transport below use them too.
    broker_credentials=broker_credentials(KafkaSecurity.from_settings(settings)),
    # tansu (and any broker) answers a group join in seconds with this, not the 45 s default.
    broker_session_timeout=6,
    # Only at-least-once works against tansu (its InitProducerId fails); annotations carry
    # event_id so consumers drop duplicates.
    processing_guarantee="at_least_once",
    consumer_auto_offset_reset="earliest",
    topic_allow_declare=False,  # topics are created by `qu up` (or by the platform) with their partitions
    topic_disable_leader=True,
    web_enabled=False,
    # One produce batch may hold a whole agent batch's annotations for a partition (Faust's default, 16 KiB, holds
    # about a dozen): fewer, larger batches are fewer requests for the broker, and fewer batches for every reader's
    # fetch to step over on a broker whose fetch cost grows with a partition's batches (docs/BENCHMARKS.md).
    producer_max_batch_size=PRODUCER_MAX_BATCH_BYTES,
    store="memory://",
    # JSON lines with the span's trace_id and span_id (services/telemetry/logs.py); the ids themselves are put on
    # each record by the logging instrumentation, which the entrypoint (streams/__main__.py) installs.
    logging_config=logging_config(json=settings.log_format == "json"),
)


# Set before any topic is declared: declaring topics reaches the transport (faust.App._new_transport).
app.transport = fetch_wait.Transport(app.conf.broker_consumer, app)


def _raw_topic(name: str) -> faust.TopicT:
    # Bytes in, bytes out: decoding is the handler's job, so a bad record reaches it instead of crashing Faust.
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


search_events = _raw_topic(SEARCH_EVENTS)
annotation_topic = _raw_topic(QUERY_ANNOTATIONS)
cache_misses = _raw_topic(CACHE_MISSES)
dead_letters = _raw_topic(DEAD_LETTER)

_handler: AnnotateHandler | None = None
_handler_lock = asyncio.Lock()
# One per process, from the global providers (streams/__main__.py configures them before the app runs).
metrics = AnnotateMetrics()
tracer = default_tracer()
# The worker's probes, served on its Prometheus port (streams/__main__.py hands it to configure_telemetry).
HANDLER_CHECK = "handler"
health = Health((HANDLER_CHECK,), stall_s=settings.health_stall_s)


async def handler() -> AnnotateHandler:
    global _handler
    async with _handler_lock:
        if _handler is None:
            _handler = await build_handler(settings, metrics)
            # `qu up` waits for this line: from here on, events are answered at full speed.
            log.info(HANDLER_READY)
            health.ready(HANDLER_CHECK)
        return _handler


async def _beat() -> None:
    health.beat()


# From the event loop, so that a blocked loop fails liveness (the probe is served from another thread).
heartbeat = app.timer(interval=1.0, traced=False)(_beat)


@app.on_before_shutdown.connect
def not_ready_when_stopping(sender: Any, /, *args: Any, **kwargs: Any) -> None:
    health.stopping("the worker is stopping")


# What the broker or the client refuses because of the record itself: sending it again cannot help, so its
# outcome becomes a dead letter instead. Every other error is the broker's or the network's: stop, re-read.
_REJECTIONS = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.CorruptRecordException,
    kafka_errors.InvalidTimestampError,
)


def is_rejection(error: BaseException) -> bool:
    return isinstance(error, _REJECTIONS)


class _TopicProducer:
    """``RecordProducer`` over the app's topics: Faust's producer, its buffering and its delivery futures."""

    def __init__(self, *topics: faust.TopicT) -> None:
        self._topics = {topic.get_topic_name(): topic for topic in topics}

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: KafkaHeaders) -> Any:
        return await self._topics[topic].send(key=key, value=value, headers=headers)


producer = _TopicProducer(annotation_topic, cache_misses, dead_letters)


# CrashingSupervisor: an agent that raised stops the worker instead of being restarted in place, so records
# that were never acknowledged are read again by the next worker from the last committed offset.
@app.agent(search_events, supervisor_strategy=mode.CrashingSupervisor)
async def annotate(stream: faust.StreamT[bytes]) -> None:
    handle_batch = (await handler()).handle_batch
    # noack_take, not take_events: take_events acknowledges its whole batch when the loop leaves it, even on an
    # exception, which would commit records whose outcome never reached the broker.
    async for batch in cast(faust.Stream[bytes], stream).noack_take(BATCH_MAX, within=BATCH_WITHIN_S):
        events = cast(list[faust.EventT[bytes]], batch)
        records = []
        for e in events:
            message = e.message
            origin = RecordOrigin(message.topic, message.partition, message.offset)
            context = process_context(
                tracer,
                message.headers,
                origin,
                group=app.conf.id,
                batch_size=len(events),
                root_ratio=settings.trace_sample_ratio,
            )
            records.append(InputRecord(message.value, message.key, message.headers, origin, message.timestamp, context))
        delivery = BatchDelivery(
            producer,
            records,
            annotation_format=settings.annotation_format,
            is_rejection=is_rejection,
            metrics=metrics,
            tracer=tracer,
        )
        await handle_batch(records, delivery.on_outcome)
        try:
            await delivery.wait()
        except UndeliveredOutcome as err:
            log.critical("%s: stopping the worker; its %d unacknowledged records will be read again", err, len(events))
            raise
        for event in events:
            await stream.ack(event)
