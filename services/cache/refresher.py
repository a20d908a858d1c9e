"""The head-tag refresher: ``qu.head-tags.v1`` -> Redis, one teacher run at a time.

At-least-once: an offset is committed only after the records before it were written to Redis,
and a run_end record's offset only after its run was activated or rejected. A crash anywhere
redelivers records, and every write is idempotent. Entries are keyed by query and spread over
partitions, so a run_end can arrive before the last entries of its run on other partitions: the
run waits (its offset uncommitted) until its index holds run_size entries, and is rejected when
it stops growing for ``run_end_timeout_s`` or, in :meth:`run_until_idle`, when the topic is drained.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from opentelemetry import trace
from opentelemetry.trace import Link, SpanContext, Tracer
from qu.v1 import head_tags_pb2
from redis.asyncio import Redis

from services.cache.admission import HeadTagAdmission
from services.cache.errors import CacheError
from services.cache.keys import check_run_id, entry_problem
from services.cache.publish import publish_head_tags
from services.cache.writer import ActivationStatus, HeadTagWriter, RetiredRunError
from services.domain import SCHEMA_VERSION
from services.errors import QuError
from services.health import Health
from services.kafka_security import PLAINTEXT, KafkaSecurity
from services.telemetry import TRACER_NAME
from services.telemetry.kafka_headers import HeaderList, extract_context
from services.topics import HEAD_TAGS

__all__ = ["HeadTagRefresher", "RefresherCounters", "RefresherError", "publish_head_tags"]

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 14 * 24 * 3600  # Settings.head_tags_ttl_s; the entrypoint passes the configured value
LOGGED_DROPS = 5  # items named in one record's log line: enough to see what is wrong, bounded


class RefresherError(QuError):
    pass


@dataclass(slots=True)
class RefresherCounters:
    records: int = 0
    entries_written: int = 0
    undecodable: int = 0  # not a HeadTags at all: logged with topic[partition]@offset and skipped
    invalid: int = 0  # a HeadTags the cache cannot hold (bad span, other schema version, ...)
    out_of_catalog: int = 0  # entries written without the items the catalog binding dropped: logged
    items_dropped: int = 0  # those items (tags, categories, rewrites)
    retired_skipped: int = 0  # entries of a publication that a newer run replaced (not a re-publication)
    runs_activated: int = 0
    runs_rejected: int = 0  # incomplete or overfull: logged as errors
    runs_superseded: int = 0  # older than the active run or already replaced: late arrivals, not errors
    write_failures: int = 0
    commits: int = 0
    commit_failures: int = 0


@dataclass(slots=True)
class _RunEnd:
    run_id: str
    size: int
    partition: int
    offset: int
    created_us: int = 0
    present: int = -1
    progress_at: float = field(default_factory=time.monotonic)
    published_in: SpanContext | None = None  # the teacher run's publication, when it was traced


@dataclass(slots=True)
class _Batch:
    entries: dict[str, list[head_tags_pb2.HeadTags]] = field(default_factory=dict)
    run_ends: list[_RunEnd] = field(default_factory=list)
    next_offsets: dict[int, int] = field(default_factory=dict)


# The refresher's readiness check (services/health.py): its consumer has started.
CONSUMER_CHECK = "consumer"


class HeadTagRefresher:
    """Consumes head tags and keeps Redis's active run current. ``consumer_config`` needs at least
    ``bootstrap.servers`` and ``group.id``; ``security`` adds how to reach the cluster (TLS, SASL); auto commit
    is always off (commits follow writes).
    ``admission`` binds every entry to the catalog before it is written: the topic is a trust boundary.
    ``health``, when given, declares the check :data:`CONSUMER_CHECK`: ready once the consumer is subscribed and
    its first poll has returned, unready again when the refresher is closed."""

    def __init__(
        self,
        consumer_config: Mapping[str, Any],
        redis: Redis,
        *,
        admission: HeadTagAdmission,
        topic: str = HEAD_TAGS,
        ttl_s: int = DEFAULT_TTL_S,
        schema_version: int = SCHEMA_VERSION,
        batch_size: int = 500,
        poll_timeout_s: float = 0.2,
        run_end_timeout_s: float = 30.0,
        writer: HeadTagWriter | None = None,
        consumer_factory: Callable[[dict[str, Any]], Consumer] = Consumer,
        security: KafkaSecurity = PLAINTEXT,
        health: Health | None = None,
    ) -> None:
        config = {
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            **security.confluent_config(),
            **consumer_config,
        }
        config["enable.auto.commit"] = False
        self._config = config
        self._consumer_factory = consumer_factory
        self._consumer: Consumer | None = None
        self._topic = topic
        self._ttl_s = ttl_s
        self._schema_version = schema_version
        self._batch_size = batch_size
        self._poll_timeout_s = poll_timeout_s
        self._run_end_timeout_s = run_end_timeout_s
        self._writer = writer or HeadTagWriter(redis, schema_version=schema_version)
        self._admission = admission
        self._assigned: set[int] = set()
        self._consumed: dict[int, int] = {}  # partition -> next offset whose predecessors are written
        self._committed: dict[int, int] = {}
        self._pending: dict[str, _RunEnd] = {}
        self._health = health
        self.counters = RefresherCounters()

    # --- driving loops ------------------------------------------------------------------------

    async def run_forever(self, stop_event: asyncio.Event) -> None:
        """Consume until ``stop_event`` is set. Redis outages are waited out (the batch in hand is
        retried with backoff, nothing is committed meanwhile)."""
        while not stop_event.is_set():
            batch = self._decode(await self._consume())
            backoff = 0.2
            while not stop_event.is_set():
                try:
                    await self._apply(batch)
                    break
                except CacheError as exc:
                    self.counters.write_failures += 1
                    log.error("head-tag refresher: Redis write failed, retrying in %.1f s: %s", backoff, exc)
                    await _wait(stop_event, backoff)
                    backoff = min(backoff * 2, 5.0)

    async def run_until_idle(self, *, idle_s: float = 1.0, timeout_s: float = 60.0) -> RefresherCounters:
        """Consume until no record came for ``idle_s`` after partitions were assigned, then settle
        waiting runs for good (activate or reject). Errors propagate. For tests and one-shot loads."""
        deadline = time.monotonic() + timeout_s
        idle_since: float | None = None
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise RefresherError(f"{self._topic} was not drained within {timeout_s:.0f} s")
            messages = await self._consume()
            await self._apply(self._decode(messages))
            if messages or not self._assigned:
                idle_since = None
                continue
            idle_since = idle_since or now
            if now - idle_since >= idle_s:
                break
        await self._settle(final=True)
        await self._commit()
        return self.counters

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if self._health is not None:
            self._health.unready(CONSUMER_CHECK, "the refresher is closed")
        if consumer is not None:
            consumer.close()  # auto commit is off: closing commits nothing that was not written

    # --- one batch ----------------------------------------------------------------------------

    async def _consume(self) -> list[Message]:
        started = self._consumer is not None
        if self._consumer is None:
            self._consumer = self._consumer_factory(dict(self._config))
            self._consumer.subscribe([self._topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        # The blocking client runs in a worker thread so that the event loop (and readers sharing it) go on.
        messages = await asyncio.to_thread(self._consumer.consume, self._batch_size, self._poll_timeout_s)
        if not started and self._health is not None:
            self._health.ready(CONSUMER_CHECK)
        return messages

    def _decode(self, messages: list[Message]) -> _Batch:
        batch = _Batch()
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal():
                    raise KafkaException(error)
                log.warning("head-tag refresher: consumer error on %s: %s", self._topic, error)
                continue
            self.counters.records += 1
            partition, offset = msg.partition() or 0, msg.offset() or 0
            batch.next_offsets[partition] = offset + 1
            where = f"{msg.topic()}[{partition}]@{offset}"
            value = msg.value()
            try:
                if value is None:
                    raise ValueError("empty value")
                record = head_tags_pb2.HeadTags.FromString(value)
            except Exception as exc:  # DecodeError and friends: skip, never stop the stream for one record
                self.counters.undecodable += 1
                log.error("head-tag refresher: skipped undecodable record at %s: %s", where, exc)
                continue
            problem = self._problem(record)
            if problem is not None:
                self.counters.invalid += 1
                log.error("head-tag refresher: skipped record at %s (run %r): %s", where, record.run_id, problem)
            elif record.run_end:
                created_us = record.created_at.ToMicroseconds() if record.HasField("created_at") else 0
                run_end = _RunEnd(record.run_id, record.run_size, partition, offset, created_us)
                run_end.published_in = _published_in(msg.headers())
                batch.run_ends.append(run_end)
            else:
                admitted = self._admit(record, where)
                if admitted is not None:
                    batch.entries.setdefault(record.run_id, []).append(admitted)
        return batch

    def _admit(self, record: head_tags_pb2.HeadTags, where: str) -> head_tags_pb2.HeadTags | None:
        """The entry bound to the catalog, or None when it is refused; either is counted and logged with ``where``."""
        admitted = self._admission.admit(record)
        if admitted.record is None:
            self.counters.invalid += 1
            log.error(
                "head-tag refresher: skipped record at %s (run %r, query %r): %s",
                where,
                record.run_id,
                record.normalized_query,
                admitted.refused,
            )
            return None
        if admitted.dropped:
            self.counters.out_of_catalog += 1
            self.counters.items_dropped += len(admitted.dropped)
            shown = "; ".join(f"{d.item}: {d.reason}" for d in admitted.dropped[:LOGGED_DROPS])
            more = len(admitted.dropped) - LOGGED_DROPS
            log.warning(
                "head-tag refresher: record at %s (run %r, query %r) written without %d item(s) outside the "
                "catalog: %s%s",
                where,
                record.run_id,
                record.normalized_query,
                len(admitted.dropped),
                shown,
                f"; and {more} more" if more > 0 else "",
            )
        return admitted.record

    def _problem(self, record: head_tags_pb2.HeadTags) -> str | None:
        if record.schema_version != self._schema_version:
            return f"schema version {record.schema_version}, this refresher writes {self._schema_version}"
        if not record.run_end:
            return entry_problem(record)
        try:
            check_run_id(record.run_id)
        except ValueError as exc:
            return str(exc)
        return None if record.run_size >= 0 else f"negative run_size {record.run_size}"

    async def _apply(self, batch: _Batch) -> None:
        """Write, then activate what is complete, then commit: in that order, so a crash between
        any two steps only redelivers. Safe to call again with the same batch after a CacheError."""
        for run_id in list(batch.entries):
            entries = batch.entries[run_id]
            try:
                written = await self._writer.write_run_entries(run_id, entries, self._ttl_s)
                self.counters.entries_written += written
                self.counters.retired_skipped += len(entries) - written  # a replaced publication's late copies
            except RetiredRunError as exc:
                self.counters.retired_skipped += len(entries)
                log.warning("head-tag refresher: skipped %d entries: %s", len(entries), exc)
            del batch.entries[run_id]  # written: a retry of this batch does not write it twice
        for run_end in batch.run_ends:
            known = self._pending.get(run_end.run_id)
            if known is None or run_end.offset < known.offset:
                self._pending[run_end.run_id] = run_end
        batch.run_ends.clear()
        for partition, next_offset in batch.next_offsets.items():
            self._consumed[partition] = max(self._consumed.get(partition, 0), next_offset)
        await self._settle(final=False)
        await self._commit()

    async def _settle(self, *, final: bool) -> None:
        """Activate waiting runs that are complete; reject those that cannot become complete."""
        now = time.monotonic()
        for run_end in sorted(self._pending.values(), key=lambda r: r.created_us):
            links = [Link(run_end.published_in)] if run_end.published_in is not None else []
            with _tracer().start_as_current_span(
                "activate head-tag run",
                links=links,
                attributes={"qu.run_id": run_end.run_id, "qu.run_size": run_end.size},
            ) as span:
                result = await self._writer.activate(run_end.run_id, run_end.size, created_at_us=run_end.created_us)
                span.set_attributes({"qu.activation.status": result.status.value, "qu.run_present": result.present})
            if result.status in (ActivationStatus.SUPERSEDED, ActivationStatus.RETIRED):
                # A late arrival (or a redelivered run_end of a run replaced since): newer data is active.
                self.counters.runs_superseded += 1
                log.warning(
                    "head-tag refresher: run %s not activated (%s): run %s is active",
                    run_end.run_id,
                    result.status.value,
                    result.previous_run_id,
                )
                del self._pending[run_end.run_id]
                continue
            if result.active:
                if result.status is ActivationStatus.ACTIVATED:
                    self.counters.runs_activated += 1
                    log.info("head-tag refresher: run %s active (%d entries)", run_end.run_id, result.present)
                del self._pending[run_end.run_id]
                continue
            if result.present > run_end.size:
                reason = "more entries than announced"
            elif final or now - run_end.progress_at >= self._run_end_timeout_s:
                reason = "its entries stopped arriving"
            else:
                if result.present > run_end.present:
                    run_end.present, run_end.progress_at = result.present, now
                continue
            self.counters.runs_rejected += 1
            log.error(
                "head-tag refresher: run %s NOT activated: %d entries present, run_end announced %d (%s); "
                "run %s stays active",
                run_end.run_id,
                result.present,
                run_end.size,
                reason,
                result.previous_run_id,
            )
            del self._pending[run_end.run_id]

    async def _commit(self) -> None:
        offsets: list[TopicPartition] = []
        for partition, next_offset in self._consumed.items():
            # A waiting run_end pins its partition: after a crash it must be read again.
            pinned = [r.offset for r in self._pending.values() if r.partition == partition]
            target = min([next_offset, *pinned])
            if target > self._committed.get(partition, -1):
                offsets.append(TopicPartition(self._topic, partition, target))
        if not offsets or self._consumer is None:
            return
        try:
            await asyncio.to_thread(self._consumer.commit, offsets=offsets, asynchronous=False)
        except KafkaException as exc:  # e.g. a rebalance took the partition: its records come again
            self.counters.commit_failures += 1
            log.warning("head-tag refresher: commit of %s failed: %s", offsets, exc)
            return
        self.counters.commits += 1
        for tp in offsets:
            self._committed[tp.partition] = tp.offset

    # --- rebalance callbacks (run inside consume(), on its worker thread) ----------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update(tp.partition for tp in partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Forget what this member knew of them: the next owner resumes from the last commit.
        for tp in partitions:
            self._assigned.discard(tp.partition)
            self._consumed.pop(tp.partition, None)
            self._committed.pop(tp.partition, None)
        lost = {tp.partition for tp in partitions}
        self._pending = {k: r for k, r in self._pending.items() if r.partition not in lost}


async def _wait(stop_event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop_event.wait(), seconds)


def _tracer() -> Tracer:
    return trace.get_tracer(TRACER_NAME)


def _published_in(headers: HeaderList | None) -> SpanContext | None:
    """The span context the teacher published the run in, when its records carry one."""
    context = extract_context(headers)
    if context is None:
        return None
    span_context = trace.get_current_span(context).get_span_context()
    return span_context if span_context.is_valid else None
