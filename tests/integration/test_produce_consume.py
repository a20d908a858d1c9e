"""``qu produce`` and ``qu consume`` against a real broker."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.domain import SearchRequest
from services.kafka_clients import producer, send_all
from services.stack.tansu import TansuBroker
from services.stack.topics import ensure_topics
from services.teacher.selection import QueryLog
from services.topics import SEARCH_EVENTS, TOPICS
from services.wire import encode_search_event

pytestmark = pytest.mark.integration


def test_json_lines_round_trip_keyed_by_normalized_query(
    tmp_path: Path, kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = kafka_topic(2)
    monkeypatch.setenv("QU_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    lines = [{"event_id": f"e{i}", "query": q} for i, q in enumerate(["Bread, no gluten!", "x large zip lock"] * 5)]
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in lines) + b"\n")
    runner = CliRunner()
    produced = runner.invoke(app, ["--state-dir", str(tmp_path), "produce", topic, str(source)])
    assert produced.exit_code == 0, produced.output
    assert "produced 10 records" in produced.output
    consumed = runner.invoke(app, ["--state-dir", str(tmp_path), "consume", topic, "--max", "10", "--timeout", "20"])
    assert consumed.exit_code == 0, consumed.output
    records = [orjson.loads(line) for line in consumed.stdout.splitlines()]
    assert sorted(r["value"]["event_id"] for r in records) == sorted(line["event_id"] for line in lines)
    keys = {r["value"]["query"]: r["key"] for r in records}
    assert keys == {"Bread, no gluten!": "bread no gluten", "x large zip lock": "x large zip lock"}


def test_a_bad_line_names_its_line_and_nothing_is_half_sent(
    tmp_path: Path, kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = kafka_topic(1)
    monkeypatch.setenv("QU_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    source = tmp_path / "events.jsonl"
    source.write_text('{"event_id": "e1", "query": "milk"}\n{oops\n')
    result = CliRunner().invoke(app, ["--state-dir", str(tmp_path), "produce", topic, str(source)])
    assert result.exit_code == 1
    assert f"{source}, row 2" in result.output
    nothing = CliRunner().invoke(app, ["--state-dir", str(tmp_path), "consume", topic, "--timeout", "3"])
    assert nothing.stdout == ""
    skipped = CliRunner().invoke(app, ["--state-dir", str(tmp_path), "produce", topic, str(source), "--skip-invalid"])
    assert skipped.exit_code == 0 and "skipped lines [2]" in skipped.output


def test_an_undecodable_record_is_reported_and_a_group_reads_on_past_it(
    tmp_path: Path, kafka_broker: TansuBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Protobuf values are decoded by the topic's name, so this is the real topic (other tests' records
    # may be on it: this test only looks at its own key).
    ensure_topics(kafka_broker.bootstrap, [spec for spec in TOPICS if spec.name == SEARCH_EVENTS])
    monkeypatch.setenv("QU_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    marker = uuid.uuid4().hex
    proto: list[tuple[str, str | bytes | None]] = [("content-type", b"application/x-protobuf")]
    bad = b"\x0a\xff\xff" + marker.encode()  # what the e2e test sends: a field longer than the record
    records = [
        (marker.encode(), encode_search_event(SearchRequest(f"before-{marker}", "milk")), proto),
        (marker.encode(), bad, proto),  # one key: one partition, in this order
        (marker.encode(), orjson.dumps({"event_id": f"after-{marker}", "query": "eggs"}), []),
    ]
    assert send_all(producer(kafka_broker.bootstrap), SEARCH_EVENTS, records) == 3
    args = ["--state-dir", str(tmp_path), "consume", SEARCH_EVENTS, "--group", f"test-{marker}", "--timeout", "3"]

    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    mine = [r for r in map(orjson.loads, first.stdout.splitlines()) if r["key"] == marker]
    event_ids = [r["value"]["event_id"] if r["value"] else None for r in mine]
    assert event_ids == [f"before-{marker}", None, f"after-{marker}"]
    undecodable = mine[1]
    assert base64.b64decode(undecodable["value_base64"]) == bad
    assert "not a qu.v1.SearchEvent" in undecodable["error"]
    where = f"{SEARCH_EVENTS}[{undecodable['partition']}]@{undecodable['offset']}"
    assert where in first.stderr and "not a qu.v1.SearchEvent" in first.stderr
    # The group committed past it: the next read with the same group has nothing of this test's left.
    second = CliRunner().invoke(app, args)
    assert second.exit_code == 0, second.output
    assert [line for line in second.stdout.splitlines() if marker in line] == []


def test_value_only_writes_the_events_themselves_which_the_teacher_reads_as_its_log(
    tmp_path: Path, kafka_broker: TansuBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the teacher's CronJob does (deploy/k8s/base/teacher.yaml): the day's events, as the teacher's log.
    ensure_topics(kafka_broker.bootstrap, [spec for spec in TOPICS if spec.name == SEARCH_EVENTS])
    monkeypatch.setenv("QU_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    marker = uuid.uuid4().hex
    proto: list[tuple[str, str | bytes | None]] = [("content-type", b"application/x-protobuf")]
    events = [
        {"event_id": f"{marker}-{i}", "query": query, "session_id": f"s-{marker}", "ts": f"2026-12-06T10:00:0{i}Z"}
        for i, query in enumerate(["oat milk", "oat milk", "gluten free bread"])
    ]
    records = [(marker.encode(), orjson.dumps(event), []) for event in events]
    records.insert(1, (marker.encode(), b"\x0a\xff\xff" + marker.encode(), proto))  # does not decode
    assert send_all(producer(kafka_broker.bootstrap), SEARCH_EVENTS, records) == 4
    args = ["--state-dir", str(tmp_path), "consume", SEARCH_EVENTS, "--value-only", "--group", f"t-{marker}"]

    result = CliRunner().invoke(app, [*args, "--timeout", "3"])
    assert result.exit_code == 0, result.output
    mine = [r for r in map(orjson.loads, result.stdout.splitlines()) if r.get("session_id") == f"s-{marker}"]
    assert [r["event_id"] for r in mine] == [e["event_id"] for e in events]
    assert "could not be decoded" in result.stderr and "not printed" in result.stderr
    log = tmp_path / "events.jsonl"
    log.write_text("\n".join(orjson.dumps(r).decode() for r in mine) + "\n")
    head = QueryLog.read([log]).head(1)
    assert [q.query for q in head] == ["oat milk"]
