"""The yardstick: a raw consume -> produce copy on the same broker, with the worker's client library.

The worker is a Faust agent, and Faust runs on aiokafka. Faust cannot live in ``services/``
(dependencies point ``streams -> services``), and a second Faust app cannot start in the bench
process, so the passthrough is a bare aiokafka loop in its own process — like the worker — with
the client settings the worker's consumer and producer get (fetch wait, fetch size, acks, linger)
and the agent's batch shape (sends awaited before the next batch, offsets committed behind).
Measured against it, ``ratio`` is what Faust's stream machinery plus the annotate handler cost.
``--client confluent`` copies the same way with confluent-kafka (librdkafka), the second baseline: the
difference between the two is what the client library costs.

``python -m services.bench.passthrough --bootstrap B --source T1 --sink T2 --group G`` prints
``ready`` once its partitions are assigned and copies until SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from services.bench.workload import BenchError

READY = "ready"
# aiokafka is the worker's own client (Faust runs on it); confluent-kafka (librdkafka) shows what the library costs.
CLIENTS = ("aiokafka", "confluent")
# What the worker's aiokafka clients get: streams/fetch_wait.py (FETCH_MAX_WAIT_MS), streams/app.py (BATCH_MAX,
# BATCH_WITHIN_S; a test keeps these equal) and Faust 0.15's defaults (fetch size, acks, commit interval).
FETCH_MAX_WAIT_MS = 50
MAX_FETCH_BYTES = 1_048_576
ACKS = -1
BATCH = 256
WITHIN_MS = 5
COMMIT_EVERY_S = 2.8


async def copy(
    bootstrap: str, source: str, sink: str, group: str, stop: asyncio.Event, *, fetch_max_wait_ms: int
) -> int:
    consumer = AIOKafkaConsumer(
        source,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        max_partition_fetch_bytes=MAX_FETCH_BYTES,
        session_timeout_ms=6000,  # tansu: a group join in seconds (NOTES.md)
        heartbeat_interval_ms=2000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=ACKS, linger_ms=0)
    copied = 0
    await producer.start()
    try:
        await consumer.start()
        try:
            await _wait_assigned(consumer, stop)
            print(READY, flush=True)
            committed_at = time.monotonic()
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=WITHIN_MS, max_records=BATCH)
                records = [r for rs in batches.values() for r in rs]
                if records:
                    futures = [
                        await producer.send(sink, value=r.value, key=r.key, headers=list(r.headers)) for r in records
                    ]
                    await asyncio.gather(*futures)  # delivered before the offsets move, like the agent
                    copied += len(records)
                if time.monotonic() - committed_at >= COMMIT_EVERY_S:
                    await consumer.commit()
                    committed_at = time.monotonic()
        finally:
            await consumer.stop()
    finally:
        await producer.stop()
    return copied


def copy_confluent(
    bootstrap: str, source: str, sink: str, group: str, stop: threading.Event, *, fetch_max_wait_ms: int
) -> int:
    """The same copy with confluent-kafka (librdkafka): what the client library costs beside aiokafka.

    The same batch shape (up to ``BATCH`` records or ``WITHIN_MS``), every batch delivered before the next
    is taken and offsets committed behind, every ``COMMIT_EVERY_S``."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": fetch_max_wait_ms,
            "max.partition.fetch.bytes": MAX_FETCH_BYTES,
            "session.timeout.ms": 6000,  # tansu: a group join in seconds (NOTES.md)
            "heartbeat.interval.ms": 2000,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "acks": ACKS, "linger.ms": 0})
    failures: list[str] = []

    def delivered(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    copied = 0
    consumer.subscribe([source])
    try:
        deadline = time.monotonic() + 60
        while not consumer.assignment():
            if stop.is_set() or time.monotonic() > deadline:
                raise BenchError("no partitions assigned within 60 s")
            consumer.poll(0.1)  # drives the group join; the fresh source topic is empty
        print(READY, flush=True)
        committed_at = time.monotonic()
        while not stop.is_set():
            records = [m for m in consumer.consume(BATCH, WITHIN_MS / 1000) if m.error() is None]
            for record in records:
                producer.produce(sink, record.value(), record.key(), headers=record.headers(), on_delivery=delivered)
            if records:
                producer.flush()  # delivered before the offsets move, like the agent
                if failures:
                    raise BenchError(f"the confluent passthrough could not deliver: {failures[0]}")
                copied += len(records)
            if time.monotonic() - committed_at >= COMMIT_EVERY_S:
                consumer.commit(asynchronous=False)
                committed_at = time.monotonic()
    finally:
        consumer.close()
    return copied


async def _wait_assigned(consumer: AIOKafkaConsumer, stop: asyncio.Event, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not consumer.assignment():
        if stop.is_set() or time.monotonic() > deadline:
            raise BenchError(f"no partitions assigned within {timeout_s:.0f} s")
        # getmany drives the group join; nothing is on the fresh source topic yet, so nothing is lost.
        await consumer.getmany(timeout_ms=100)


def _main_confluent(args: argparse.Namespace) -> None:
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda _signum, _frame: stop.set())
    copied = copy_confluent(
        args.bootstrap, args.source, args.sink, args.group, stop, fetch_max_wait_ms=args.fetch_max_wait_ms
    )
    print(f"copied {copied}", file=sys.stderr, flush=True)


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    copied = await copy(
        args.bootstrap, args.source, args.sink, args.group, stop, fetch_max_wait_ms=args.fetch_max_wait_ms
    )
    print(f"copied {copied}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.bench.passthrough")
    for name in ("--bootstrap", "--source", "--sink", "--group"):
        parser.add_argument(name, required=True)
    parser.add_argument("--fetch-max-wait-ms", type=int, default=FETCH_MAX_WAIT_MS)
    parser.add_argument("--client", choices=CLIENTS, default="aiokafka", help="the Kafka client library that copies")
    args = parser.parse_args(argv)
    if args.client == "confluent":
        _main_confluent(args)
    else:
        asyncio.run(_main(args))


class Passthrough:
    """Creates the two bench topics, runs the copy process, and removes both on exit, whatever happened."""

    def __init__(
        self,
        bootstrap: str,
        bench_id: str,
        log: Path,
        *,
        partitions: int = 6,
        timeout_s: float = 60,
        fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
        client: str = "aiokafka",
    ) -> None:
        if client not in CLIENTS:
            raise ValueError(f"client must be one of {', '.join(CLIENTS)}, not {client!r}")
        self.bootstrap = bootstrap
        self.client = client
        self.source = f"qu.bench-{bench_id}-{client}.in"
        self.sink = f"qu.bench-{bench_id}-{client}.out"
        self.group = f"qu-bench-{bench_id}-{client}"
        self.log = log
        self.partitions = partitions
        self.timeout_s = timeout_s
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        self._process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def __enter__(self) -> Passthrough:
        try:
            self._create_topics()
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def _create_topics(self) -> None:
        topics = [NewTopic(name, self.partitions, 1) for name in (self.source, self.sink)]
        for name, future in self._admin.create_topics(topics, request_timeout=self.timeout_s).items():
            try:
                future.result(timeout=self.timeout_s)
            except Exception as exc:
                raise BenchError(f"could not create the passthrough topic {name}: {exc}") from exc

    def _start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "services.bench.passthrough", "--bootstrap", self.bootstrap]
        command += ["--source", self.source, "--sink", self.sink, "--group", self.group]
        command += ["--fetch-max-wait-ms", str(self.fetch_max_wait_ms), "--client", self.client]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL, text=True
            )
        stdout = self._process.stdout
        if stdout is None:  # cannot happen with stdout=PIPE; keeps the type checker honest
            raise BenchError("the passthrough process has no standard output")
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            ready, _, _ = select.select([stdout], [], [], 0.2)
            if ready:
                line = stdout.readline()
                if line.strip() == READY:
                    return
                if not line:  # end of output: the process exited
                    break
            elif self._process.poll() is not None:
                break
        raise BenchError(f"the passthrough process was not ready within {self.timeout_s:.0f} s; see {self.log}")

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
        with contextlib.suppress(Exception):  # best effort: the broker may already be gone
            for future in self._admin.delete_topics([self.source, self.sink], request_timeout=15).values():
                future.result(timeout=15)


if __name__ == "__main__":
    main()
