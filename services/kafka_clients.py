"""confluent-kafka clients configured the way every part of the engine needs them.

``security`` (services/kafka_security.py) is how the client reaches the cluster: callers that talk to the
configured cluster pass ``KafkaSecurity.from_settings(settings)``; the default, PLAINTEXT, is the embedded stack's.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from services.errors import QuError
from services.kafka_security import PLAINTEXT, KafkaSecurity


def producer(bootstrap: str, *, security: KafkaSecurity = PLAINTEXT, **overrides: Any) -> Producer:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        **security.confluent_config(),
        "enable.idempotence": True,  # no duplicates from the producer's own retries
        "linger.ms": 2,
        "client.id": "qu",
    }
    config.update(overrides)
    return Producer(config)


def consumer(
    bootstrap: str,
    group_id: str | None = None,
    *,
    from_beginning: bool = True,
    security: KafkaSecurity = PLAINTEXT,
    **overrides: Any,
) -> Consumer:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap,
        **security.confluent_config(),
        # A fresh group per reader unless one is named: reading a topic should not steal a group's partitions.
        "group.id": group_id or f"qu-reader-{uuid.uuid4().hex[:12]}",
        "auto.offset.reset": "earliest" if from_beginning else "latest",
        "enable.auto.commit": False,
        # With the default 45 s a group join takes ~23 s on tansu and looks like a hang.
        "session.timeout.ms": 6000,
        "client.id": "qu",
    }
    config.update(overrides)
    return Consumer(config)


class DeliveryError(QuError):
    pass


Record = tuple[bytes | None, bytes, list[tuple[str, str | bytes | None]]]  # key, value, headers


def check_topic(client: Producer, topic: str, bootstrap: str) -> None:
    """Raise a clear error when the broker cannot be reached or the topic does not exist."""
    try:
        metadata = client.list_topics(timeout=10)
    except KafkaException as err:
        raise DeliveryError(f"cannot reach Kafka at {bootstrap} (setting QU_KAFKA_BOOTSTRAP): {err}") from err
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        raise DeliveryError(f"topic {topic!r} does not exist on {bootstrap}: create it first (`qu up` does)")


def send_all(
    client: Producer,
    topic: str,
    records: Iterable[Record],
    *,
    rate: float = 0.0,
    progress: Callable[[int], None] | None = None,
    flush_timeout: float = 30.0,
) -> int:
    """Produce every record, at ``rate`` records/s (0: unpaced); returns the number the broker acknowledged.

    Raises :class:`DeliveryError` if any record was not delivered, naming how many and the first error.
    """
    failures: list[str] = []
    delivered = 0
    sent = 0

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        nonlocal delivered
        if err is not None:
            failures.append(str(err))
        else:
            delivered += 1

    started = time.monotonic()
    for key, value, headers in records:
        if rate > 0:
            wait = started + sent / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        while True:
            try:
                client.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: let deliveries drain, then retry this record
                client.poll(0.1)
        sent += 1
        client.poll(0)
        if progress is not None:
            progress(sent)
    remaining = client.flush(flush_timeout)
    if remaining or failures:
        raise DeliveryError(
            f"{len(failures) + remaining} of {sent} records were not delivered to {topic!r}"
            + (f"; first error: {failures[0]}" if failures else f"; {remaining} still queued after {flush_timeout} s")
        )
    return delivered


def read_to_end(
    bootstrap: str, topic: str, *, timeout_s: float = 60.0, idle_s: float = 1.0, security: KafkaSecurity = PLAINTEXT
) -> Iterator[tuple[bytes | None, list[tuple[str, str | bytes | None]], str]]:
    """Every record of ``topic`` from the beginning to its end: ``(value, headers, "topic[p]@offset")``.

    Reads by assignment (no group, nothing committed), so it leaves no trace on the broker. The end
    is where every partition has passed its high watermark and no record came for ``idle_s``: tansu
    reports a watermark behind the last record (the base offset of the last batch + 1), so the
    watermark alone would stop early there. Raises :class:`DeliveryError` when the broker cannot be
    reached, the topic does not exist, or the end is not reached within ``timeout_s``.
    """
    reader = consumer(bootstrap, security=security)
    try:
        try:
            metadata = reader.list_topics(topic, timeout=10)
        except KafkaException as err:
            raise DeliveryError(f"cannot reach Kafka at {bootstrap} (setting QU_KAFKA_BOOTSTRAP): {err}") from err
        described = metadata.topics.get(topic)
        if described is None or described.error is not None:
            raise DeliveryError(f"topic {topic!r} does not exist on {bootstrap}: create it first (`qu up` does)")
        behind: dict[int, int] = {}  # partition -> high watermark not yet passed
        for partition in sorted(described.partitions):
            low, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high > low:
                behind[partition] = high
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(described.partitions)])
        deadline = time.monotonic() + timeout_s
        last_record = time.monotonic()
        while behind or time.monotonic() - last_record < idle_s:
            if time.monotonic() > deadline:
                raise DeliveryError(
                    f"reading {topic!r} did not reach its end within {timeout_s:.0f} s "
                    f"({len(behind)} partition(s) behind their high watermark)"
                )
            msg = reader.poll(min(idle_s, 0.2))
            if msg is None:
                continue
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise DeliveryError(f"reading {topic!r}: {error}")
            partition, offset = msg.partition() or 0, msg.offset() or 0
            last_record = time.monotonic()
            if partition in behind and offset + 1 >= behind[partition]:
                del behind[partition]
            headers = msg.headers() or []
            yield (
                msg.value(),
                list(headers.items() if isinstance(headers, dict) else headers),
                f"{topic}[{partition}]@{offset}",
            )
    finally:
        reader.close()
