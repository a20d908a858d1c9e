"""Where generated traffic goes: JSON-lines files, or a Kafka topic at a steady rate."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from services.errors import QuError
from services.jsonl import write_jsonl_atomic
from services.normalize import normalize_query
from services.traffic.generator import Traffic


@dataclass(frozen=True, slots=True)
class TrafficFiles:
    events: Path | None
    labels: Path
    conversions: Path


def companion_paths(events: Path) -> TrafficFiles:
    """``traffic.jsonl`` -> ``traffic.labels.jsonl`` and ``traffic.conversions.jsonl`` beside it."""
    stem = events.name.removesuffix(".jsonl") if events.name.endswith(".jsonl") else events.stem
    return TrafficFiles(events, events.with_name(f"{stem}.labels.jsonl"), events.with_name(f"{stem}.conversions.jsonl"))


def write_traffic(traffic: Traffic, files: TrafficFiles) -> None:
    """Labels and conversions first, events last: whoever sees the events finds their labels."""
    write_jsonl_atomic(files.labels, (q.label() for q in traffic.labels.values()))
    write_jsonl_atomic(files.conversions, (c.to_json() for c in traffic.conversions))
    if files.events is not None:
        write_jsonl_atomic(files.events, (e.to_json() for e in traffic.events))


class KafkaDeliveryError(QuError):
    pass


def produce_events(
    traffic: Traffic,
    topic: str,
    bootstrap: str,
    *,
    rate: float,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send the events to ``topic`` as JSON, keyed by normalized query, at ``rate`` events/s (0: unpaced).

    Returns the number delivered; raises if the topic does not exist or any delivery failed.
    """
    from confluent_kafka import KafkaError, KafkaException, Producer

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 5})
    try:
        metadata = producer.list_topics(timeout=10)
    except KafkaException as err:
        raise KafkaDeliveryError(f"cannot reach Kafka at {bootstrap} (setting QU_KAFKA_BOOTSTRAP): {err}") from err
    if topic not in metadata.topics or metadata.topics[topic].error is not None:
        raise KafkaDeliveryError(f"topic {topic!r} does not exist on {bootstrap}: create it first")
    failures: list[str] = []
    delivered = 0

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        nonlocal delivered
        if err is not None:
            failures.append(str(err))
        else:
            delivered += 1

    started = time.monotonic()
    headers: list[tuple[str, str | bytes | None]] = [("content-type", b"application/json")]
    for i, event in enumerate(traffic.events):
        if rate > 0:
            wait = started + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        while True:
            try:
                producer.produce(
                    topic,
                    orjson.dumps(event.to_json()),
                    normalize_query(event.query).encode(),
                    headers=headers,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:  # the local queue is full: let deliveries drain, then retry this event
                producer.poll(0.1)
        producer.poll(0)
        if progress is not None:
            progress(i + 1)
    remaining = producer.flush(30)
    if remaining or failures:
        raise KafkaDeliveryError(
            f"{len(failures) + remaining} of {len(traffic.events)} events were not delivered to {topic!r}"
            + (f"; first error: {failures[0]}" if failures else f"; {remaining} still queued after 30 s")
        )
    return delivered
