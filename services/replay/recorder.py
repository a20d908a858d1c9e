"""The traffic recorder: search events and the annotations served for them, from Kafka into the archive.

A consumer group of its own (``qu-recorder``), so it neither slows nor shares offsets with the workers.
At least once: records are written to the archive (services/replay/archive.py) in complete files, and
their offsets are committed only after the files are in place; a crash re-reads what was not committed
and the archive's reader drops the rows written twice. A record that is not one of the engine's
messages is archived all the same (its ``event_id`` empty) and counted: a replay reports it.

The client is aiokafka with the worker's tolerant record parsing (services/kafka_tolerant_records.py), not
confluent-kafka: confluent-kafka 2.16's ``Message.headers()`` takes a header key that is not UTF-8 to a
NULL reference and the process down (segfault, measured here: tests/e2e/test_faults.py sends such keys),
and it cannot hand over a key's raw bytes. aiokafka hands the key over with its bad bytes as lone
surrogates, archived as such (``surrogateescape``) and given back to a replay exactly as the worker saw it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from services import kafka_tolerant_records
from services.kafka_security import PLAINTEXT, KafkaSecurity
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
    """Archives ``topics`` into ``archive``: a file set every ``max_records`` records or ``flush_s`` seconds."""

    def __init__(
        self,
        bootstrap: str,
        archive: Path,
        *,
        group: str = RECORDER_GROUP,
        topics: Sequence[str] = RECORDED_TOPICS,
        max_records: int = 5000,
        flush_s: float = 5.0,
        poll_timeout_s: float = 0.2,
        consumer_factory: Callable[..., AIOKafkaConsumer] = AIOKafkaConsumer,
        security: KafkaSecurity = PLAINTEXT,
    ) -> None:
        if max_records < 1 or flush_s <= 0:
            raise ValueError(f"max_records must be >= 1 and flush_s > 0, got {max_records} and {flush_s}")
        kafka_tolerant_records.install()  # before the first fetch: a bad header key must not stall a partition
        self._bootstrap = bootstrap
        self._group = group
        self._topics = list(topics)
        self._archive = archive
        self._max_records = max_records
        self._flush_s = flush_s
        self._poll_timeout_ms = int(poll_timeout_s * 1000)
        self._consumer_factory = consumer_factory
        self._security = security
        self._consumer: AIOKafkaConsumer | None = None
        self._pending: list[ArchivedRecord] = []
        self._oldest_pending: float | None = None
        self.counters = RecorderCounters()
        self._past_until: dict[int, set[tuple[str, int]]] = {}  # until_ms -> partitions that reached it

    async def start(self) -> None:
        self._consumer = self._consumer_factory(
            bootstrap_servers=self._bootstrap,
            group_id=self._group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=6000,  # a group join in seconds on tansu (NOTES.md), not the default 45 s
            **self._security.aiokafka_kwargs(),
        )
        self._consumer.subscribe(self._topics, listener=_FlushOnRevoke(self))
        await self._consumer.start()

    async def stop(self) -> None:
        """Leave the group; nothing uncommitted is lost: the next recorder reads it again."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Record until ``stop`` is set, then write and commit what is in hand."""
        await self.start()
        try:
            while not stop.is_set():
                await self.step()
            await self.flush()
        finally:
            await self.stop()

    async def run_until_idle(
        self, *, idle_s: float = 1.0, timeout_s: float = 60.0, until_ms: int | None = None
    ) -> RecorderCounters:
        """Record until no record came for ``idle_s`` after partitions were assigned, or, with ``until_ms``, until
        every assigned partition has handed over a record timestamped at or after it (a live topic never idles)."""
        if self._consumer is None:
            await self.start()
        deadline = time.monotonic() + timeout_s
        idle_since: float | None = None
        if until_ms is not None:
            self._past_until.setdefault(until_ms, set())
        while time.monotonic() < deadline:
            got = await self.step()
            if until_ms is not None and self._assigned() and self._passed(until_ms):
                await self.flush()
                return self.counters
            if got or not self._assigned():
                idle_since = None
                continue
            idle_since = idle_since or time.monotonic()
            if time.monotonic() - idle_since >= idle_s:
                await self.flush()
                return self.counters
        await self.flush()
        raise TimeoutError(f"the recorded topics were not drained within {timeout_s:.0f} s")

    def _passed(self, until_ms: int) -> bool:
        assigned = {(tp.topic, tp.partition) for tp in self._require().assignment()}
        return assigned <= self._past_until.get(until_ms, set())

    async def step(self) -> int:
        """One fetch; writes and commits when the batch is full or old enough. Returns the records fetched."""
        consumer = self._require()
        batches = await consumer.getmany(
            timeout_ms=self._poll_timeout_ms, max_records=self._max_records - len(self._pending)
        )
        got = 0
        for records in batches.values():
            for record in records:
                self._pending.append(_archived(record))
                for until_ms, passed in self._past_until.items():
                    if record.timestamp >= until_ms:
                        passed.add((record.topic, record.partition))
                got += 1
        if got and self._oldest_pending is None:
            self._oldest_pending = time.monotonic()
        if len(self._pending) >= self._max_records or (
            self._oldest_pending is not None and time.monotonic() - self._oldest_pending >= self._flush_s
        ):
            await self.flush()
        return got

    async def flush(self) -> None:
        """Write the records in hand as complete files, then commit their offsets."""
        if not self._pending:
            return
        records = self._pending
        files = await asyncio.to_thread(write_batch, self._archive, records)
        next_offsets: dict[TopicPartition, int] = {}
        for r in records:
            where = TopicPartition(r.topic, r.partition)
            next_offsets[where] = max(next_offsets.get(where, 0), r.offset + 1)
        await self._require().commit(next_offsets)
        self.counters.records += len(records)
        self.counters.files += len(files)
        self.counters.without_event_id += sum(1 for r in records if r.event_id is None)
        log.info("archived %d records in %d files under %s", len(records), len(files), self._archive)
        self._pending, self._oldest_pending = [], None

    def _assigned(self) -> bool:
        return bool(self._consumer is not None and self._consumer.assignment())

    def _require(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the recorder is not started: await start() or run_forever() first")
        return self._consumer


class _FlushOnRevoke(ConsumerRebalanceListener):  # type: ignore[misc]
    """While the partitions are still this recorder's: what it holds is written and committed, not read twice."""

    def __init__(self, recorder: TrafficRecorder) -> None:
        self._recorder = recorder

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._recorder.flush()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        pass


def _archived(record: ConsumerRecord[bytes, bytes]) -> ArchivedRecord:
    headers = tuple((str(key), bytes(value or b"")) for key, value in record.headers or ())
    return ArchivedRecord(
        record.topic,
        record.partition,
        record.offset,
        record.timestamp,
        record.key,
        record.value,
        headers,
        event_id_of(record.topic, record.value, headers),
    )


async def snapshot_topics(
    bootstrap: str,
    archive: Path,
    topics: Sequence[str],
    *,
    timeout_s: float = 600.0,
    idle_s: float = 2.0,
    security: KafkaSecurity = PLAINTEXT,
) -> RecorderCounters:
    """Copy what ``topics`` hold now into ``archive``: a topic with retention as a replay source. A group of its
    own (``qu-replay-snapshot-…``) reads from the earliest offset until every partition has passed the moment the
    snapshot began, or the topics fall quiet for ``idle_s``."""
    began_ms = int(time.time() * 1000)
    recorder = TrafficRecorder(
        bootstrap, archive, group=f"qu-replay-snapshot-{uuid.uuid4().hex[:8]}", topics=topics, security=security
    )
    try:
        return await recorder.run_until_idle(idle_s=idle_s, timeout_s=timeout_s, until_ms=began_ms)
    finally:
        await recorder.stop()
