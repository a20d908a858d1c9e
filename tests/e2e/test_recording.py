"""The traffic recorder as `qu up` starts it: search events and the annotations served for them reach the archive."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.kafka_clients import producer, send_all
from services.replay.archive import read_archive, records_of
from services.settings import Settings
from services.stack.embedded import EmbeddedStack
from services.topics import QUERY_ANNOTATIONS, SEARCH_EVENTS
from tests.fixtures.stack import settings_env

pytestmark = pytest.mark.e2e


def test_the_stacks_recorder_archives_each_event_and_its_annotation_and_a_window_replays(
    embedded_stack: EmbeddedStack, stack_settings: Settings, tmp_path: Path
) -> None:
    assert "recorder" in {p.name for p in embedded_stack.state().processes}  # type: ignore[union-attr]
    started = time.time()
    ids = [f"rec-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    # Queries no head-tag run of another test holds: the student answered them (or, late, the lexicon fallback,
    # whose tags are the student's), so the replay's Triton student must give the same tags.
    records = [(None, orjson.dumps({"event_id": i, "query": f"zqvx {i} organic milk"}), []) for i in ids]
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

    # A small window of what was recorded, replayed against what was served, end to end.
    since = datetime.fromtimestamp(started - 1, UTC).isoformat()
    out = tmp_path / "replay"
    args = ["replay", "--candidate", "student=triton", "--baseline", "served", "--out", str(out), "--since", since]
    result = CliRunner().invoke(app, [*args, "--json", "--no-progress"], env=settings_env(stack_settings))
    assert result.exit_code == 0, result.output
    figures = orjson.loads(result.stdout)
    served = next(r for r in figures["replays"] if r["label"] == "served")
    assert figures["events"] >= 3 and served["outcomes"].get("not_served", 0) == 0
    assert figures["comparison"]["agreement"]["tags"] == 1.0 and (out / "report.html").exists()
