"""A consumer group's lag per partition, read from the broker as an operator's tools read it.

Lag is the partition's end offset (its high watermark) minus the group's committed offset: the records
the group has not committed past. It is read from outside the group (an OffsetFetch and a ListOffsets,
without joining it), the way kafka-lag-exporter or Burrow do, so a worker that is down or stuck still
shows as lag growing instead of as a metric that stopped. The refresher serves it as
``qu.consumer.lag`` (:func:`watch_group_lag`, set up in ``qu refresher``) and ``qu status`` prints it.

The embedded broker (tansu) reports a high watermark one past the *base* offset of a partition's last
batch, not past its last record (NOTES.md): there, lag reads low by up to one produce batch. A real
Kafka cluster's watermark is exact.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaException, TopicPartition
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from services.errors import QuError
from services.kafka_clients import consumer
from services.kafka_security import PLAINTEXT, KafkaSecurity

log = logging.getLogger(__name__)


class LagUnavailable(QuError):
    """The broker did not say where the group or the partitions stand; the message names which."""


@dataclass(frozen=True, slots=True)
class PartitionLag:
    topic: str
    partition: int
    end: int  # the high watermark
    committed: int | None  # None: the group has committed nothing there yet

    @property
    def lag(self) -> int:
        """Records not committed past; a partition never committed counts from its start (offset 0)."""
        return max(0, self.end - (self.committed or 0))


class GroupLagReader:
    """Reads ``group``'s lag on ``topic``; one broker connection, reused for every reading."""

    def __init__(
        self, bootstrap: str, group: str, topic: str, *, timeout_s: float = 5.0, security: KafkaSecurity = PLAINTEXT
    ) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.topic = topic
        self.timeout_s = timeout_s
        # The group's id on a consumer that never subscribes: it reads the group's offsets without joining it.
        self._consumer: Consumer = consumer(bootstrap, group, security=security)
        self._closed = False
        # A scrape thread reads while the process may be closing: one call on the connection at a time.
        self._turn = threading.Lock()

    def read(self) -> list[PartitionLag]:
        """Each partition's lag, by partition; raises :class:`LagUnavailable` naming the broker and the step."""
        with self._turn:
            partitions = self._partitions()
            committed = self._committed(partitions)
            try:
                ends = {
                    p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=self.timeout_s)[1]
                    for p in partitions
                }
            except KafkaException as err:
                raise LagUnavailable(f"reading the end offsets of {self._where}: {err}") from err
            return [PartitionLag(self.topic, p, ends[p], committed.get(p)) for p in partitions]

    def partitions(self) -> list[int]:
        """The topic's partitions; raises :class:`LagUnavailable` where the topic is not there."""
        with self._turn:
            return self._partitions()

    def committed(self) -> dict[int, int | None]:
        """partition -> the group's committed offset (None where it committed nothing yet)."""
        with self._turn:
            return self._committed(self._partitions())

    @property
    def _where(self) -> str:
        return f"group {self.group!r} on {self.topic!r} at {self.bootstrap}"

    def _partitions(self) -> list[int]:
        if self._closed:
            raise LagUnavailable(f"the reader of {self._where} is closed")
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=self.timeout_s).topics.get(self.topic)
        except KafkaException as err:
            raise LagUnavailable(f"reading the partitions of {self._where}: {err}") from err
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise LagUnavailable(f"topic {self.topic!r} does not exist at {self.bootstrap} (is the stack up?)")
        return sorted(metadata.partitions)

    def _committed(self, partitions: list[int]) -> dict[int, int | None]:
        try:
            answered = self._consumer.committed(
                [TopicPartition(self.topic, p) for p in partitions], timeout=self.timeout_s
            )
        except KafkaException as err:
            raise LagUnavailable(f"reading the committed offsets of {self._where}: {err}") from err
        return {tp.partition: (tp.offset if tp.offset >= 0 else None) for tp in answered}

    def close(self) -> None:
        with self._turn:
            if not self._closed:
                self._closed = True
                self._consumer.close()


def watch_group_lag(reader: GroupLagReader, meter: Meter | None = None) -> None:
    """``qu.consumer.lag`` per partition, read from the broker at each collection (a scrape).

    A broker that does not answer costs the scrape ``reader.timeout_s`` and shows no lag (logged), rather
    than a stale figure."""
    meter = meter or metrics.get_meter("qu.consumer")

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        try:
            lags = reader.read()
        except LagUnavailable as err:
            log.warning("consumer lag not observed: %s", err)
            return []
        return [
            Observation(
                p.lag,
                {
                    "messaging.consumer.group.name": reader.group,
                    "messaging.destination.name": p.topic,
                    "messaging.destination.partition.id": str(p.partition),
                },
            )
            for p in lags
        ]

    meter.create_observable_gauge(
        "qu.consumer.lag",
        callbacks=[observe],
        unit="{record}",
        description="A partition's high watermark minus the group's committed offset (read from the broker).",
    )
