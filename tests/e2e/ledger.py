"""The fault tests' bookkeeping: what was sent, and whether each record ended as an annotation or a dead letter.

Every record sent is identified twice: by its event_id (when it has one an annotation can carry) and by
the SHA-256 of its value, which every dead letter carries (``original_sha256``) even when it kept only
a prefix of the record. Reading is by assignment from the beginning (no group, nothing committed), so
it sees the records other tests left too; only the ones sent here count.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import orjson
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition
from qu.v1 import dead_letter_pb2

from services.kafka_clients import consumer, producer, send_all
from services.topics import DEAD_LETTER, QUERY_ANNOTATIONS, SEARCH_EVENTS

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class SentRecord:
    value: bytes
    event_id: str | None  # None when the record cannot carry one (garbage, wrong types)
    headers: Headers = field(default_factory=list)
    key: bytes | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.value).hexdigest()


def event(event_id: str, query: str, **fields: object) -> SentRecord:
    return SentRecord(orjson.dumps({"event_id": event_id, "query": query, **fields}), event_id)


@dataclass(slots=True)
class Outcomes:
    annotations: Counter[str] = field(default_factory=Counter)  # event_id -> how many annotations
    sources: dict[str, set[str]] = field(default_factory=dict)  # event_id -> sources seen
    degraded: set[str] = field(default_factory=set)
    timings: dict[str, dict[str, float]] = field(default_factory=dict)  # event_id -> its last annotation's timings
    dead_letters: Counter[str] = field(default_factory=Counter)  # original_sha256 -> how many
    reasons: dict[str, str] = field(default_factory=dict)  # original_sha256 -> reason

    def answered(self, record: SentRecord) -> bool:
        return (record.event_id is not None and record.event_id in self.annotations) or (
            record.sha256 in self.dead_letters
        )

    def unanswered(self, records: Iterable[SentRecord]) -> list[SentRecord]:
        return [r for r in records if not self.answered(r)]

    def duplicates(self, records: Iterable[SentRecord]) -> int:
        total = 0
        for r in records:
            total += max(0, self.annotations.get(r.event_id or "", 0) - 1) + max(0, self.dead_letters[r.sha256] - 1)
        return total


def send(bootstrap: str, records: list[SentRecord], *, rate: float = 0.0) -> None:
    # The 1.1 MB record must reach the broker: the client's own limit is raised, the worker's stays the default.
    client = producer(bootstrap, **{"message.max.bytes": 4_000_000, "enable.idempotence": False})
    send_all(client, SEARCH_EVENTS, ((r.key, r.value, list(r.headers)) for r in records), rate=rate)


def collect(bootstrap: str, records: list[SentRecord], *, timeout_s: float) -> Outcomes:
    """Read annotations and dead letters until every record is answered (then a second more) or the timeout."""
    ours_ids = {r.event_id for r in records if r.event_id}
    ours_hashes = {r.sha256 for r in records}
    outcomes = Outcomes()
    reader = consumer(bootstrap, **{"fetch.max.bytes": 8_000_000})
    try:
        partitions = []
        for topic in (QUERY_ANNOTATIONS, DEAD_LETTER):
            metadata = reader.list_topics(topic, timeout=10).topics[topic]
            partitions += [TopicPartition(topic, p, OFFSET_BEGINNING) for p in metadata.partitions]
        reader.assign(partitions)
        deadline = time.monotonic() + timeout_s
        done_at: float | None = None
        while time.monotonic() < deadline and (done_at is None or time.monotonic() < done_at + 1.0):
            msg = reader.poll(0.2)
            if msg is None:
                if done_at is None and not outcomes.unanswered(records):
                    done_at = time.monotonic()
                continue
            if msg.error() is not None:
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise AssertionError(f"reading outcomes: {msg.error()}")
            value = msg.value() or b""
            if msg.topic() == QUERY_ANNOTATIONS:
                annotation = orjson.loads(value)
                event_id = annotation["event_id"]
                if event_id in ours_ids:
                    outcomes.annotations[event_id] += 1
                    outcomes.sources.setdefault(event_id, set()).add(annotation["source"])
                    if annotation["degraded"]:
                        outcomes.degraded.add(event_id)
                    outcomes.timings[event_id] = annotation.get("timings") or {}
            else:
                letter = dead_letter_pb2.DeadLetter.FromString(value)
                if letter.original_sha256 in ours_hashes:
                    outcomes.dead_letters[letter.original_sha256] += 1
                    outcomes.reasons[letter.original_sha256] = letter.reason
    finally:
        reader.close()
    return outcomes
