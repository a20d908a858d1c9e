"""``qu traffic --topic``: events produced to a real broker, readable by any Kafka consumer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer
from typer.testing import CliRunner

from services.catalog.artifacts import build_catalog, write_catalog
from services.catalog.demo import demo_files
from services.catalog.reader import read_catalog
from services.cli.main import app
from services.normalize import normalize_query
from services.stack.tansu import TansuBroker

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def catalog_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("state")
    write_catalog(build_catalog(read_catalog(demo_files()[0]).products, embedder=None), state / "catalog")
    return state


def consume_all(bootstrap: str, topic: str, expected: int) -> list[tuple[bytes, bytes, dict[str, bytes]]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{topic}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    records = []
    try:
        for _ in range(200):  # bounded: at most ~100 s even if the broker misbehaves
            for msg in consumer.consume(num_messages=500, timeout=0.5):
                assert msg.error() is None, msg.error()
                records.append((msg.key(), msg.value(), dict(msg.headers() or [])))
            if len(records) >= expected:
                break
    finally:
        consumer.close()
    return records


def test_events_reach_the_topic_keyed_by_normalized_query(
    catalog_state: Path, kafka_broker: TansuBroker, kafka_topic: Callable[[int], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    topic = kafka_topic(3)
    monkeypatch.setenv("QU_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    result = CliRunner().invoke(
        app,
        [
            "--state-dir",
            str(catalog_state),
            "traffic",
            "--events",
            "300",
            "--seed",
            "5",
            "--topic",
            topic,
            "--rate",
            "0",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = orjson.loads(result.stdout)
    assert summary["events"] == 300 and summary["topic"] == topic
    records = consume_all(kafka_broker.bootstrap, topic, 300)
    assert len(records) == 300
    for key, value, headers in records:
        event = orjson.loads(value)
        assert {"event_id", "query", "user_id", "session_id", "ts"} <= set(event)
        assert key == normalize_query(event["query"]).encode()
        assert headers["content-type"] == b"application/json"
    # The labels and conversions of produced traffic are kept in the state directory.
    assert Path(summary["labels_file"]).is_file() and Path(summary["conversions_file"]).is_file()


def test_a_missing_topic_is_a_clear_error(
    catalog_state: Path, kafka_broker: TansuBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QU_KAFKA_BOOTSTRAP", kafka_broker.bootstrap)
    result = CliRunner().invoke(
        app,
        ["--state-dir", str(catalog_state), "traffic", "--events", "10", "--topic", "no.such.topic"],
    )
    assert result.exit_code == 1
    assert "topic 'no.such.topic' does not exist" in result.output
