"""The traffic recorder: search events and the annotations served for them, from Kafka into the archive.

A consumer group of its own (``qu-recorder``), so it neither slows nor shares offsets with the workers.
At least once: records are written to the archive (services/replay/archive.py) in complete files, and
their offsets are committed only after the files are in place; a crash re-reads what was not committed
and the archive's reader drops the rows written twice. A record that is not one of the engine's
messages is archived all the same (its ``event_id`` empty) and counted: a replay reports it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from services.replay.archive import ArchivedRecord, write_batch
from services.topics import QUERY_ANNOTATIONS, SEARCH_EVENTS
from services.wire import UndecodableRecord, record_to_json

RECORDER_GROUP = "qu-recorder"
RECORDED_TOPICS = (SEARCH_EVENTS, QUERY_ANNOTATIONS)
log = logging.getLogger(__name__)


@dataclass(slots=True)
class RecorderCounters:
    records: int = 0
    files: int = 0
    without_event_id: int = 0  # archived, but not one of the engine's messages (or one without an event_id)


def event_id_of(topic: str, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    """The ``event_id`` of a search event or an annotation (JSON or protobuf), or None."""
    try:
        data = record_to_json(topic, value, list(headers) if headers else None)
    except UndecodableRecord:
        return None
    event_id = data.get("event_id") if isinstance(data, dict) else None
    return event_id if isinstance(event_id, str) and event_id else None


class TrafficRecorder:
    """Archives ``topics`` into ``archive``: a file set every ``max_records`` records or ``flush_s`` seconds.

    ``consumer_config`` needs at least ``bootstrap.servers``; auto commit is always off."""

    def __init__(
        self,
        consumer_config: Mapping[str, Any],
        archive: Path,
        *,
        topics: Sequence[str] = RECORDED_TOPICS,
        max_records: int = 5000,
        flush_s: float = 5.0,
        poll_timeout_s: float = 0.2,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
    ) -> None:
        if max_records < 1 or flush_s <= 0:
            raise ValueError(f"max_records must be >= 1 and flush_s > 0, got {max_records} and {flush_s}")
        config = {"group.id": RECORDER_GROUP, "auto.offset.reset": "earliest", "session.timeout.ms": 6000}
        config |= dict(consumer_config)
        config["enable.auto.commit"] = False
        self._consumer = consumer_factory(config)
        self._consumer.subscribe(list(topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._archive = archive
        self._max_records = max_records
        self._flush_s = flush_s
        self._poll_timeout_s = poll_timeout_s
        self._pending: list[Message] = []
        self._oldest_pending: float | None = None
        self._assigned = False
        self.counters = RecorderCounters()

    def run_forever(self, stop: threading.Event) -> None:
        """Record until ``stop`` is set, then write and commit what is in hand."""
        try:
            while not stop.is_set():
                self.step()
            self.flush()
        finally:
            self._consumer.close()

    def run_until_idle(self, *, idle_s: float = 1.0, timeout_s: float = 60.0) -> RecorderCounters:
        """Record until no record came for ``idle_s`` after partitions were assigned; for tests and one-shot runs."""
        deadline = time.monotonic() + timeout_s
        idle_since: float | None = None
        while time.monotonic() < deadline:
            got = self.step()
            if got or not self._assigned:
                idle_since = None
                continue
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= idle_s:
                self.flush()
                return self.counters
        self.flush()
        raise TimeoutError(f"the recorded topics were not drained within {timeout_s:.0f} s")

    def close(self) -> None:
        self._consumer.close()  # nothing uncommitted is lost: it is read again by the next recorder

    def step(self) -> int:
        """One poll; writes and commits when the batch is full or old enough. Returns the records polled."""
        messages = self._consumer.consume(self._max_records - len(self._pending), self._poll_timeout_s)
        got = 0
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(error)
            self._pending.append(message)
            got += 1
        if got and self._oldest_pending is None:
            self._oldest_pending = time.monotonic()
        if len(self._pending) >= self._max_records or (
            self._oldest_pending is not None and time.monotonic() - self._oldest_pending >= self._flush_s
        ):
            self.flush()
        return got

    def flush(self) -> None:
        """Write the records in hand as complete files, then commit their offsets."""
        if not self._pending:
            return
        records = [self._archived(m) for m in self._pending]
        files = write_batch(self._archive, records)
        next_offsets: dict[tuple[str, int], int] = {}
        for r in records:
            where = (r.topic, r.partition)
            next_offsets[where] = max(next_offsets.get(where, 0), r.offset + 1)
        self._consumer.commit(
            offsets=[TopicPartition(t, p, o) for (t, p), o in sorted(next_offsets.items())], asynchronous=False
        )
        self.counters.records += len(records)
        self.counters.files += len(files)
        self.counters.without_event_id += sum(1 for r in records if r.event_id is None)
        log.info("archived %d records in %d files under %s", len(records), len(files), self._archive)
        self._pending, self._oldest_pending = [], None

    def _archived(self, message: Message) -> ArchivedRecord:
        topic, value = message.topic() or "", message.value()
        headers = _header_pairs(message.headers())
        _, timestamp_ms = message.timestamp()
        return ArchivedRecord(
            topic,
            message.partition() or 0,
            message.offset() or 0,
            timestamp_ms,
            message.key(),
            value,
            headers,
            event_id_of(topic, value, headers),
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned = True

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # While the partitions are still this recorder's: what it holds is written and committed, not read twice.
        self.flush()


def _header_pairs(headers: Any) -> tuple[tuple[str, bytes], ...]:
    """confluent-kafka's headers (a list of (key, value) pairs, values bytes, str or None) as (key, bytes)."""
    pairs = []
    for key, value in headers or ():
        pairs.append((str(key), value if isinstance(value, bytes) else (value or "").encode()))
    return tuple(pairs)
