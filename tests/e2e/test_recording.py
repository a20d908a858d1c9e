"""The traffic recorder as `qu up` starts it: search events and the annotations served for them reach the archive."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from services.kafka_clients import producer, send_all
from services.replay.archive import read_archive, records_of
from services.settings import Settings
from services.stack.embedded import EmbeddedStack
from services.topics import QUERY_ANNOTATIONS, SEARCH_EVENTS

pytestmark = pytest.mark.e2e


def test_the_stacks_recorder_archives_each_event_and_its_annotation(
    embedded_stack: EmbeddedStack, stack_settings: Settings
) -> None:
    assert "recorder" in {p.name for p in embedded_stack.state().processes}  # type: ignore[union-attr]
    ids = [f"rec-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    records = [(b"milk", orjson.dumps({"event_id": i, "query": "organic milk"}), []) for i in ids]
    send_all(producer(embedded_stack.settings.kafka_bootstrap), SEARCH_EVENTS, records)
    archive = stack_settings.resolved_archive_dir
    deadline = time.monotonic() + 60
    while True:  # the recorder writes a file set every 5 s (or 5,000 records)
        events = {r.event_id for r in records_of(read_archive(archive, SEARCH_EVENTS))}
        annotated = {r.event_id for r in records_of(read_archive(archive, QUERY_ANNOTATIONS))}
        if set(ids) <= events & annotated or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert set(ids) <= events, f"events not archived under {archive}"
    assert set(ids) <= annotated, f"annotations not archived under {archive}"
    assert not list(archive.rglob("*.tmp"))
