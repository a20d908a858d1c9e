"""Where generated traffic goes: JSON-lines files, or a Kafka topic at a steady rate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from services.jsonl import write_jsonl_atomic
from services.kafka_clients import check_topic, producer, send_all
from services.kafka_security import PLAINTEXT, KafkaSecurity
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


def produce_events(
    traffic: Traffic,
    topic: str,
    bootstrap: str,
    *,
    rate: float,
    progress: Callable[[int], None] | None = None,
    security: KafkaSecurity = PLAINTEXT,
) -> int:
    """Send the events to ``topic`` as JSON, keyed by normalized query, at ``rate`` events/s (0: unpaced).

    Returns the number delivered; raises if the topic does not exist or any delivery failed.
    """
    client = producer(bootstrap, security=security)
    check_topic(client, topic, bootstrap)
    headers: list[tuple[str, str | bytes | None]] = [("content-type", b"application/json")]
    records = ((normalize_query(e.query).encode(), orjson.dumps(e.to_json()), headers) for e in traffic.events)
    return send_all(client, topic, records, rate=rate, progress=progress)
