"""``read_to_end`` against the real broker: every record up to the end the topic had, across partitions."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from services.kafka_clients import DeliveryError, producer, read_to_end, send_all
from services.stack.tansu import TansuBroker

pytestmark = pytest.mark.integration


def test_reads_every_partition_to_its_end(kafka_broker: TansuBroker, kafka_topic: Callable[[int], str]) -> None:
    topic = kafka_topic(3)
    values = [f"v{i}".encode() for i in range(30)]
    send_all(producer(kafka_broker.bootstrap), topic, [(f"k{i}".encode(), v, []) for i, v in enumerate(values)])
    read = list(read_to_end(kafka_broker.bootstrap, topic, timeout_s=30))
    assert sorted(v for v, _, _ in read) == sorted(values)
    assert all(where.startswith(f"{topic}[") and "@" in where for _, _, where in read)
    assert list(read_to_end(kafka_broker.bootstrap, kafka_topic(2), timeout_s=30)) == []


def test_a_missing_topic_is_an_error_naming_it(kafka_broker: TansuBroker) -> None:
    with pytest.raises(DeliveryError, match=r"'no\.such\.topic' does not exist"):
        list(read_to_end(kafka_broker.bootstrap, "no.such.topic", timeout_s=10))
