"""The traffic recorder against the real broker: every record archived once, commits after the files."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer

from services.kafka_clients import producer, send_all
from services.replay.archive import read_archive, records_of
from services.replay.recorder import TrafficRecorder
from services.stack.tansu import TansuBroker

pytestmark = pytest.mark.integration


def events(n: int, start: int = 0) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    return [
        (b"milk", orjson.dumps({"event_id": f"e{i}", "query": f"milk {i}"}), [("traceparent", b"00-abc")])
        for i in range(start, start + n)
    ]


class CommitFailsOnce(Consumer):  # type: ignore[misc]
    """A real consumer whose first commit fails, as a recorder killed between its write and its commit."""

    failed = False

    def commit(self, *args: Any, **kwargs: Any) -> Any:
        if not CommitFailsOnce.failed:
            CommitFailsOnce.failed = True
            raise RuntimeError("killed before the commit")
        return super().commit(*args, **kwargs)


def recorder(broker: TansuBroker, group: str, archive: Path, topics: list[str], **kw: Any) -> TrafficRecorder:
    config = {"bootstrap.servers": broker.bootstrap, "group.id": group}
    return TrafficRecorder(config, archive, topics=topics, flush_s=0.5, **kw)


def test_every_record_is_archived_once_and_a_new_recorder_goes_on_from_the_commit(
    kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], tmp_path: Path
) -> None:
    searches, annotations = kafka_topic(3), kafka_topic(2)
    client = producer(kafka_broker.bootstrap)
    send_all(client, searches, [*events(30), (b"k", b"\xff not an event", [])])
    send_all(client, annotations, [(b"milk", orjson.dumps({"event_id": "e1", "source": "cache"}), [])])
    group = f"rec-{uuid.uuid4().hex[:6]}"

    first = recorder(kafka_broker, group, tmp_path, [searches, annotations])
    counters = first.run_until_idle(idle_s=1.0, timeout_s=60)
    first.close()
    assert (counters.records, counters.without_event_id) == (32, 1)

    send_all(client, searches, events(5, start=30))
    second = recorder(kafka_broker, group, tmp_path, [searches, annotations])
    assert second.run_until_idle(idle_s=1.0, timeout_s=60).records == 5  # not the 31 before: they were committed
    second.close()

    rows = list(records_of(read_archive(tmp_path, searches)))
    assert sorted(r.event_id or "-" for r in rows) == sorted(["-", *(f"e{i}" for i in range(35))])
    assert {r.headers for r in rows if r.event_id} == {(("traceparent", b"00-abc"),)}
    assert [r.event_id for r in records_of(read_archive(tmp_path, annotations))] == ["e1"]


def test_a_commit_that_fails_after_the_write_loses_nothing_and_duplicates_nothing(
    kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], tmp_path: Path
) -> None:
    searches = kafka_topic(2)
    send_all(producer(kafka_broker.bootstrap), searches, events(20))
    group = f"rec-{uuid.uuid4().hex[:6]}"
    crashing = recorder(kafka_broker, group, tmp_path, [searches], consumer_factory=CommitFailsOnce)
    with pytest.raises(RuntimeError, match="killed before the commit"):
        crashing.run_until_idle(idle_s=1.0, timeout_s=60)
    assert list(tmp_path.rglob("*.parquet"))  # written, not committed
    crashing.close()  # leaving the group revokes its partitions: it writes what it holds again and commits

    again = recorder(kafka_broker, group, tmp_path, [searches])
    again.run_until_idle(idle_s=1.0, timeout_s=60)
    again.close()
    rows = list(records_of(read_archive(tmp_path, searches)))
    assert sorted(r.event_id or "" for r in rows) == sorted(f"e{i}" for i in range(20))
