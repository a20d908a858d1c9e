"""Producing a teacher run to ``qu.head-tags.v1``: its entries, then the run_end record."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from confluent_kafka import KafkaError, Message, Producer
from qu.v1 import head_tags_pb2

from services.cache.keys import check_run_id, entry_problem, to_head_tags
from services.domain import SCHEMA_VERSION, Understanding
from services.errors import QuError
from services.normalize import normalize_query
from services.telemetry.kafka_headers import inject_context
from services.topics import HEAD_TAGS


class PublishError(QuError):
    pass


def publish_head_tags(
    producer: Producer,
    run_id: str,
    entries: Iterable[tuple[str, Understanding, str]],
    *,
    topic: str = HEAD_TAGS,
    schema_version: int = SCHEMA_VERSION,
    flush_timeout_s: float = 60.0,
) -> int:
    """Produce ``(normalized_query, understanding, teacher_version)`` entries of run ``run_id``, keyed
    by the normalized query, then a run_end record (keyed by the run id) carrying their number.

    All entries are acknowledged before the run_end is produced, so the marker is never in the log
    ahead of its run. Raises ValueError for a query that is not normalized, a duplicate query or an
    entry the cache would refuse (before anything of the run_end is sent), PublishError when the
    broker did not acknowledge. Returns the number of entries.
    """
    check_run_id(run_id)
    failures: list[str] = []

    def delivered(error: KafkaError | None, msg: Message) -> None:
        if error is not None and len(failures) < 10:
            failures.append(f"{msg.key()!r}: {error}")

    seen: set[str] = set()
    for query, understanding, teacher_version in entries:
        if normalize_query(query) != query:
            raise ValueError(f"run {run_id!r}: {query!r} is not normalized (expected {normalize_query(query)!r})")
        if query in seen:
            raise ValueError(f"run {run_id!r}: query {query!r} appears twice; a run holds one answer per query")
        seen.add(query)
        msg = to_head_tags(
            query, understanding, teacher_version=teacher_version, run_id=run_id, schema_version=schema_version
        )
        problem = entry_problem(msg)
        if problem is not None:
            raise ValueError(f"run {run_id!r}, query {query!r}: {problem}")
        msg.created_at.GetCurrentTime()
        _produce(producer, topic, query.encode(), msg.SerializeToString(), delivered)
    _flush(producer, flush_timeout_s, run_id, failures)
    end = head_tags_pb2.HeadTags(run_id=run_id, run_end=True, run_size=len(seen), schema_version=schema_version)
    end.created_at.GetCurrentTime()
    _produce(producer, topic, run_id.encode(), end.SerializeToString(), delivered)
    _flush(producer, flush_timeout_s, run_id, failures)
    return len(seen)


def _produce(
    producer: Producer, topic: str, key: bytes, value: bytes, on_delivery: Callable[[KafkaError | None, Message], None]
) -> None:
    # The publishing span's context (the teacher run's, when traced): the refresher links its activation to it.
    headers: list[tuple[str, str | bytes | None]] = list(inject_context([]))
    for _ in range(1000):  # bounded: a full local queue drains within ~100 s of poll(0.1) or something is wrong
        try:
            producer.produce(topic, key=key, value=value, headers=headers or None, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.1)
    raise PublishError(f"the producer queue stayed full while producing to {topic}")


def _flush(producer: Producer, timeout_s: float, run_id: str, failures: list[str]) -> None:
    remaining = producer.flush(timeout_s)
    if remaining:
        raise PublishError(f"run {run_id!r}: {remaining} records not acknowledged within {timeout_s:.0f} s")
    if failures:
        # Raised before the run_end is produced when an entry failed: a run_end must never announce a gap.
        raise PublishError(f"run {run_id!r}: delivery failed: {'; '.join(failures)}")
