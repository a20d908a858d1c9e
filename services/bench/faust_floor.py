"""The Faust floor: what the worker's stream machinery costs with no handler (`qu bench --faust-floor`).

A broker of its own (a fresh tansu: no history to slow its fetches), ``events`` records produced to a
source topic, then streams/faust_floor.py — the worker's agent shape without the handler — copies them
to a sink topic, once per Faust transport. CPU per event of the Faust process and of the broker, from
the first record out to the last (start-up and the group join excluded). Set beside the worker's own
figure from `qu bench`, it splits the worker's CPU into Faust's share and the engine's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from services.kafka_clients import producer
from services.stack.ports import free_port
from services.stack.tansu import TansuBroker

PARTITIONS = 6  # qu.search-events.v1's
TRANSPORTS = ("kafka", "confluent")  # aiokafka (the worker's) and Faust 0.15's confluent-kafka driver
VALUE = b'{"event_id":"e-%d","query":"organic strawberries","session_id":"s1"}'


@dataclass(frozen=True, slots=True)
class FloorResult:
    transport: str
    events: int
    copied: int
    events_per_s: float | None  # None: not every record was copied within the timeout
    faust_cpu_us_per_event: float | None
    broker_cpu_us_per_event: float | None
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_faust_floor(
    work_dir: Path,
    *,
    events: int,
    transports: Sequence[str] = TRANSPORTS,
    timeout_s: float = 120.0,
    report: Callable[[str], None] = lambda _m: None,
) -> list[FloorResult]:
    broker = TansuBroker(free_port(), work_dir / "faust-floor-kafka.log")
    broker.start()
    try:
        return [_one(broker, transport, events, timeout_s, work_dir, report) for transport in transports]
    finally:
        broker.stop()


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def _one(
    broker: TansuBroker, transport: str, events: int, timeout_s: float, work_dir: Path, report: Callable[[str], None]
) -> FloorResult:
    tag = uuid.uuid4().hex[:8]
    source, sink = f"floor-in-{tag}", f"floor-out-{tag}"
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for future in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in (source, sink)]).values():
        future.result(timeout=10)
    linger: dict[str, Any] = {"linger.ms": 5}
    client = producer(broker.bootstrap, **linger)  # the bench's own tansu: PLAINTEXT
    for i in range(events):
        client.produce(source, key=str(i % 97).encode(), value=VALUE % i)
        if i % 5000 == 0:
            client.poll(0)
    client.flush(30)
    report(f"faust floor ({transport}): copying {events} records")
    env = dict(
        os.environ,
        FLOOR_TRANSPORT=transport,
        FLOOR_BOOTSTRAP=broker.bootstrap,
        FLOOR_TAG=tag,
        FLOOR_IN=source,
        FLOOR_OUT=sink,
    )
    command = [sys.executable, "-m", "streams.faust_floor", "worker", "-l", "warn"]
    command += ["--web-port", str(free_port()), "--web-host", "127.0.0.1"]
    broker_process = psutil.Process(broker.pid)
    with (work_dir / f"faust-floor-{transport}.log").open("wb") as log:
        floor = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=work_dir)
    floor_process = psutil.Process(floor.pid)
    # Counted by reading the sink: tansu's high watermark is not the end of a partition (NOTES.md).
    watcher = Consumer(
        {"bootstrap.servers": broker.bootstrap, "group.id": f"floor-watch-{tag}", "enable.auto.commit": False}
    )
    watcher.assign([TopicPartition(sink, p, 0) for p in range(PARTITIONS)])
    first: tuple[float, float, float] | None = None
    copied = 0
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and floor.poll() is None:
            copied += sum(1 for m in watcher.consume(5000, 0.2) if m.error() is None)
            if copied and first is None:
                first = (time.monotonic(), _cpu(floor_process), _cpu(broker_process))
            if copied >= events:
                break
        end = (time.monotonic(), _cpu(floor_process), _cpu(broker_process))
    finally:
        watcher.close()
        floor.terminate()
        try:
            floor.wait(30)
        except subprocess.TimeoutExpired:
            floor.kill()
    if first is None or copied < events:
        note = f"{copied} of {events} records copied in {timeout_s:.0f} s; see {work_dir}/faust-floor-{transport}.log"
        return FloorResult(transport, events, copied, None, None, None, note)
    # From the first record out: the first batch's own cost is left out with the start-up (1 batch of many).
    return FloorResult(
        transport,
        events,
        copied,
        round(events / max(end[0] - first[0], 1e-9), 1),
        round((end[1] - first[1]) / events * 1e6, 1),
        round((end[2] - first[2]) / events * 1e6, 1),
    )
