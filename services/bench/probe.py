"""Producing benchmark events and timing their answers: one producer, one reader thread.

Every event id is ``BENCH.PHASE.N``. The producer notes the monotonic time just before each
``produce``; the reader notes when each answer reached this process. Both clocks are the same
``perf_counter`` of one process, so a latency is exactly "event produced -> its answer consumed".

The reader is a confluent-kafka consumer *assigned* (no group) at the end of each topic before
anything is produced: no group join to wait for (seconds on tansu) and no answer produced before
it was ready. tansu reports the end offset too low (NOTES.md), which only means re-reading a few
old records, which are filtered out by the bench id.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer, TopicPartition
from qu.v1 import dead_letter_pb2, query_annotation_pb2

from services.bench.stats import PhaseResult
from services.bench.workload import BenchError, BenchEvent
from services.kafka_clients import consumer, producer
from services.wire import PROTOBUF, Headers, header

POLL_S = 0.05
# tansu answers a fetch that finds no new record only after most of its max wait, even when records
# arrive meanwhile (measured: ~250 ms of a 500 ms wait); a short wait keeps that out of the figures.
READER_FETCH_WAIT_MS = 5
Decode = Callable[[bytes, Headers], tuple[str, str] | None]


def decode_answer(value: bytes, headers: Headers) -> tuple[str, str] | None:
    """(event_id, source) of an annotation (JSON or protobuf), or of a passthrough copy of an event."""
    try:
        if (header(headers, "content-type") or "").startswith(PROTOBUF):
            message = query_annotation_pb2.QueryAnnotation.FromString(value)
            name = query_annotation_pb2.Source.Name(message.source)
            return message.event_id, name.removeprefix("SOURCE_").lower()
        data = orjson.loads(value)
    except Exception:  # not ours, or not decodable: another client's record on a shared topic
        return None
    if not isinstance(data, dict) or not isinstance(data.get("event_id"), str):
        return None
    return data["event_id"], str(data.get("source", "passthrough"))


def decode_dead_letter(value: bytes, _headers: Headers) -> tuple[str, str] | None:
    try:
        letter = dead_letter_pb2.DeadLetter.FromString(value)
        event = orjson.loads(letter.original)
    except Exception:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("event_id"), str):
        return None
    return event["event_id"], f"dead_letter:{letter.reason}"


@dataclass(slots=True)
class _Phase:
    received: dict[str, float] = field(default_factory=dict)  # event id -> perf_counter when consumed
    sources: dict[str, str] = field(default_factory=dict)
    duplicates: int = 0


class AnswerReader:
    """Reads the answer topics in a thread and files each bench answer under its phase."""

    def __init__(self, bootstrap: str, topics: Mapping[str, Decode], bench_id: str, *, timeout_s: float = 15.0) -> None:
        self._bench_prefix = f"{bench_id}."
        self._decoders = topics
        overrides: dict[str, Any] = {"fetch.wait.max.ms": READER_FETCH_WAIT_MS}
        self._consumer = consumer(bootstrap, **overrides)
        self._phases: dict[str, _Phase] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.errors: Counter[str] = Counter()
        self.start_offsets: dict[str, int] = {}  # topic -> records already there (tansu: roughly)
        self._assign(list(topics), timeout_s)
        self._thread = threading.Thread(target=self._run, name="bench-reader", daemon=True)
        self._thread.start()

    def _assign(self, topics: list[str], timeout_s: float) -> None:
        assignment = []
        for topic in topics:
            metadata = self._consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                raise BenchError(f"topic {topic!r} does not exist: is the stack up?")
            for partition in metadata.partitions:
                tp = TopicPartition(topic, partition)
                _low, high = self._consumer.get_watermark_offsets(tp, timeout=timeout_s)
                assignment.append(TopicPartition(topic, partition, high))
                self.start_offsets[topic] = self.start_offsets.get(topic, 0) + high
        self._consumer.assign(assignment)

    def _run(self) -> None:
        while not self._stop.is_set():
            first = self._consumer.poll(POLL_S)
            if first is None:
                continue
            # Whatever else is already here, without waiting: a blocking batch call would hold
            # early records until the batch fills, adding its wait to their latency.
            messages = [first, *self._consumer.consume(num_messages=1000, timeout=0)]
            now = time.perf_counter()
            self._file(messages, now)

    def _file(self, messages: Sequence[Message], now: float) -> None:
        with self._lock:
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() != KafkaError._PARTITION_EOF:
                        self.errors[error.name()] += 1
                    continue
                value = message.value()
                topic = message.topic()
                if not value or topic is None:
                    continue
                decoded = self._decoders[topic](value, message.headers())
                if decoded is None or not decoded[0].startswith(self._bench_prefix):
                    continue
                event_id, source = decoded
                phase = self._phases.setdefault(event_id.split(".")[1], _Phase())
                if event_id in phase.received:
                    phase.duplicates += 1
                else:
                    phase.received[event_id] = now
                    phase.sources[event_id] = source

    def arrivals(self, phase: str, since: float, until: float) -> list[tuple[str, float]]:
        """(event id, perf_counter) of the answers of ``phase`` consumed in [since, until), in arrival order."""
        with self._lock:
            received = self._phases[phase].received if phase in self._phases else {}
            return [(event_id, at) for event_id, at in received.items() if since <= at < until]

    def duplicates(self, phase: str) -> int:
        with self._lock:
            return self._phases[phase].duplicates if phase in self._phases else 0

    def answered(self, phase: str) -> int:
        with self._lock:
            return len(self._phases[phase].received) if phase in self._phases else 0

    def take(self, phase: str) -> _Phase:
        with self._lock:
            return self._phases.pop(phase, _Phase())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._consumer.close()


class EventSender:
    """Produces bench events (JSON, keyed by normalized query) with confluent-kafka, optionally paced."""

    def __init__(self, bootstrap: str, bench_id: str) -> None:
        # linger 0: a paced event leaves at once; unpaced ones still batch while a request is in flight.
        overrides: dict[str, Any] = {"linger.ms": 0, "client.id": "qu-bench"}
        self._producer: Producer = producer(bootstrap, **overrides)  # the embedded stack's tansu: PLAINTEXT
        self.bench_id = bench_id
        # (topic, partition) -> the offset after the last record this sender delivered there: the end of what a
        # consumer group has to read, known without asking tansu for its (wrong) high watermark (NOTES.md).
        self.delivered_end: dict[tuple[str, int], int] = {}

    def encode(self, phase: str, events: Iterable[BenchEvent], first: int = 0) -> list[tuple[str, bytes, bytes]]:
        """(event id, key, value) for each event, encoded before the clock starts; ids count from ``first``."""
        out = []
        for i, event in enumerate(events, start=first):
            event_id = f"{self.bench_id}.{phase}.{i}"
            value = {"event_id": event_id, "query": event.query, "user_id": "bench", "bench_id": self.bench_id}
            out.append((event_id, event.key.encode(), orjson.dumps(value)))
        return out

    def send(
        self, topic: str, records: Sequence[tuple[str, bytes, bytes]], rate: float, *, start: float | None = None
    ) -> dict[str, float]:
        """Produce every record (``rate`` per second, 0 = as fast as possible); returns event id -> send time.

        Pacing follows a schedule (record i at start + i / rate), so a late record does not delay the
        ones after it: the offered rate stays the asked one even when a sleep overshoots. ``start``
        (a ``perf_counter`` time, default now) lets consecutive calls continue one schedule.
        """
        failures: list[str] = []

        def delivered(error: KafkaError | None, message: Message) -> None:
            if error is not None:
                if len(failures) < 5:
                    failures.append(str(error))
                return
            partition, offset = message.partition(), message.offset()
            if partition is not None and offset is not None and offset >= 0:
                where = (topic, partition)
                self.delivered_end[where] = max(self.delivered_end.get(where, 0), offset + 1)

        sent: dict[str, float] = {}
        started = time.perf_counter() if start is None else start
        for i, (event_id, key, value) in enumerate(records):
            if rate > 0:
                wait = started + i / rate - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
            now = time.perf_counter()
            headers: list[tuple[str, str | bytes | None]] = [
                ("content-type", b"application/json"),
                ("bench-sent-ns", str(time.time_ns()).encode()),
            ]
            for _ in range(1000):  # bounded: a full local queue drains within ~100 s of poll(0.1) or something is wrong
                try:
                    self._producer.produce(topic, value, key, headers=headers, on_delivery=delivered)
                    break
                except BufferError:
                    self._producer.poll(0.1)
            else:
                raise BenchError(f"the producer's queue stayed full while producing to {topic}")
            sent[event_id] = now
            self._producer.poll(0)
        remaining = self._producer.flush(30)
        if remaining or failures:
            raise BenchError(f"{remaining} events not acknowledged by the broker; errors: {'; '.join(failures)}")
        return sent


def run_phase(
    sender: EventSender,
    reader: AnswerReader,
    *,
    topic: str,
    phase: str,
    events: Sequence[BenchEvent],
    rate: float,
    timeout_s: float,
) -> PhaseResult:
    """Send ``events`` to ``topic`` and wait (at most ``timeout_s`` after the last send) for their answers."""
    records = sender.encode(phase, events)
    sent = sender.send(topic, records, rate)
    sent_end = max(sent.values(), default=time.perf_counter())
    deadline = time.monotonic() + timeout_s
    while reader.answered(phase) < len(records) and time.monotonic() < deadline:
        time.sleep(0.02)
    taken = reader.take(phase)
    first = min(sent.values(), default=sent_end)
    latencies = [(at - sent[event_id]) * 1000.0 for event_id, at in taken.received.items() if event_id in sent]
    last = max(taken.received.values(), default=first)
    return PhaseResult(
        name=phase,
        sent=len(records),
        target_rate=rate,
        send_seconds=sent_end - first,
        span_seconds=last - first,
        latencies_ms=latencies,
        sources=Counter(taken.sources.values()),
        duplicates=taken.duplicates,
    )
