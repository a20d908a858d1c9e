"""``qu produce`` and ``qu consume`` against a real broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.stack.tansu import TansuBroker

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
