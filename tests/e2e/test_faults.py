"""Faults on the real stack: every input record ends as at least one annotation or one dead letter.

Duplicates are allowed (the worker is at-least-once and annotations carry event_id); losses are not.
Each test prints its figures (sent, lost, duplicates, degraded, time to recover) for docs/RELIABILITY.md:
run with ``-s`` to see them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from kafka import KafkaProducer

from services.stack.embedded import EmbeddedStack
from services.topics import SEARCH_EVENTS
from tests.e2e.ledger import SentRecord, collect, event, send
from tests.fixtures.stack import embedded_stack_settings

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

QUERIES = ("milk", "bread", "eggs", "yogurt", "organic whole milk", "gluten free bread", "bananas", "x large zip lock")


def bootstrap(stack: EmbeddedStack) -> str:
    return stack.endpoints()["kafka"]


def normal_events(run: str, count: int) -> list[SentRecord]:
    return [event(f"{run}-{i}", f"{QUERIES[i % len(QUERIES)]} {i % 97}") for i in range(count)]


def process_of(stack: EmbeddedStack, name: str) -> psutil.Process:
    state = stack.state()
    record = next(p for p in (state.processes if state else []) if p.name == name)
    process = record.process()
    assert process is not None, f"{name} is not running"
    return process


def worker_child(stack: EmbeddedStack, name: str, *, timeout: float = 120.0) -> psutil.Process:
    """The Faust worker its keeper runs now (waits while the keeper restarts it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = stack.keeper_status(name)
        if status is not None and status.child_pid is not None:
            try:
                return psutil.Process(status.child_pid)
            except psutil.NoSuchProcess:
                pass
        time.sleep(0.1)
    raise AssertionError(f"{name} has no running worker after {timeout:.0f} s")


def report(title: str, records: list[SentRecord], outcomes_lost: int, **figures: object) -> None:
    shown = ", ".join(f"{k}={v}" for k, v in figures.items())
    print(f"\n[fault] {title}: sent={len(records)} lost={outcomes_lost} {shown}")


def test_big_records_and_a_paused_broker_lose_nothing_across_a_worker_restart(embedded_stack: EmbeddedStack) -> None:
    run = f"big-{uuid.uuid4().hex[:8]}"
    normal = normal_events(run, 500)
    # A valid event of 600 KB, and one of 1.1 MB whose bad ts was echoed into an oversized dead letter before.
    big = event(f"{run}-600k", "milk", pad="x" * 600_000)
    huge = event(f"{run}-1100k", "milk", ts="x" * 1_100_000)
    records = [*normal[:150], big, *normal[150:300], huge, *normal[300:]]
    restarts_before = (embedded_stack.keeper_status("worker-0") or _no_status()).restarts

    sender = threading.Thread(target=send, args=(bootstrap(embedded_stack), records), kwargs={"rate": 200.0})
    sender.start()
    broker = process_of(embedded_stack, "kafka")
    time.sleep(1.0)
    broker.suspend()  # SIGSTOP mid-stream: every client of the broker hangs, nothing is refused
    time.sleep(4.0)
    broker.resume()
    time.sleep(0.5)
    worker_child(embedded_stack, "worker-0").kill()  # and the worker dies before it has committed it all
    sender.join(timeout=120)
    started = time.monotonic()
    outcomes = collect(bootstrap(embedded_stack), records, timeout_s=240)
    lost = outcomes.unanswered(records)
    report(
        "big records + broker SIGSTOP 4 s + worker SIGKILL",
        records,
        len(lost),
        duplicates=outcomes.duplicates(records),
        degraded=len(outcomes.degraded),
        answered_s=round(time.monotonic() - started, 1),
    )
    assert not lost, f"{len(lost)} of {len(records)} records have no outcome: {[r.event_id for r in lost[:10]]}"
    assert outcomes.reasons[big.sha256] == outcomes.reasons[huge.sha256] == "record_too_large"
    assert all(r.event_id in outcomes.annotations for r in normal)
    status = embedded_stack.keeper_status("worker-0")
    assert status is not None and status.restarts > restarts_before  # its keeper brought it back


class _RawKey(str):
    """A header key kafka-python writes as raw bytes that are not UTF-8 (no other client here can)."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfeodd"


def adversarial_corpus(run: str) -> list[SentRecord]:
    """At least 200 records that cost more than they look, or are not what they claim."""
    corpus: list[SentRecord] = []
    for i in range(25):
        tag = f"{run}-adv{i}"
        corpus += [
            event(f"{tag}-nfkc", "\ufdfa" * (30 + i)),  # NFKC makes each 18 characters
            event(f"{tag}-bidi", f"milk\u202e{i}\u200b\u2066bread"),  # bidi and zero-width text
            event("e" * (300 + i * 100), "milk"),  # an event_id beyond the bound
            event(f"{tag}-q", "milk " * (200 + i)),  # a query past the limit
            event(f"{tag}-ts", "milk", ts=1e20 + i),  # a timestamp no datetime holds
            SentRecord(f'{{"event_id": "{tag}-t", "query": {i}}}'.encode(), None),  # wrong JSON types
            SentRecord(
                b'{"event_id": "x", "query": "milk", "context": ' + b"[" * (2000 + i) + b"]" * (2000 + i) + b"}", None
            ),
            SentRecord(bytes(range(256)) * (i + 1), None),  # binary garbage
            SentRecord(
                event(f"{tag}-hdr", "eggs").value,
                f"{tag}-hdr",
                headers=[("content-type", b"application/json; charset=utf-8")]
                + [(f"h{j}", b"v" * 2000) for j in range(40)],  # many large headers
            ),
        ]
    return corpus


def test_an_adversarial_corpus_is_answered_at_pace_with_bounded_worker_memory(embedded_stack: EmbeddedStack) -> None:
    run = f"adv-{uuid.uuid4().hex[:8]}"
    corpus = adversarial_corpus(run)
    normal = normal_events(run, 800)
    records: list[SentRecord] = []
    for i, record in enumerate(normal):
        records.append(record)
        if i % 4 == 0 and corpus:
            records.append(corpus.pop())
    records += corpus
    odd_key = SentRecord(event(f"{run}-odd-key", "milk").value, f"{run}-odd-key")
    assert len(records) - len(normal) >= 200

    worker = worker_child(embedded_stack, "worker-0")
    rss_before = worker.memory_info().rss
    started = time.monotonic()
    send(bootstrap(embedded_stack), records, rate=400.0)
    raw = KafkaProducer(bootstrap_servers=bootstrap(embedded_stack))
    raw.send(SEARCH_EVENTS, value=odd_key.value, headers=[(_RawKey("x"), b"v")])
    raw.flush(10)
    raw.close()
    records.append(odd_key)
    sent_s = time.monotonic() - started
    outcomes = collect(bootstrap(embedded_stack), records, timeout_s=180)
    answered_s = time.monotonic() - started
    rss_after = worker.memory_info().rss
    lost = outcomes.unanswered(records)
    report(
        "adversarial corpus in normal traffic",
        records,
        len(lost),
        adversarial=len(records) - len(normal),
        duplicates=outcomes.duplicates(records),
        sent_s=round(sent_s, 1),
        all_answered_s=round(answered_s, 1),
        worker_rss_mb=f"{rss_before / 2**20:.0f}->{rss_after / 2**20:.0f}",
    )
    assert not lost, f"{len(lost)} records have no outcome: {[r.value[:60] for r in lost[:5]]}"
    assert outcomes.reasons[odd_key.sha256] == "invalid_header"
    assert worker.is_running(), "the worker died on the corpus"
    # The stream keeps its pace: everything is answered soon after the last record is sent.
    assert answered_s - sent_s < 30, f"answering took {answered_s - sent_s:.0f} s after the last send"
    assert rss_after - rss_before < 150 * 2**20, "the worker's memory grew by more than 150 MiB"


@pytest.fixture(scope="module")
def two_worker_stack(tmp_path_factory: pytest.TempPathFactory, student_catalog_dir: Path) -> Iterator[EmbeddedStack]:
    settings = embedded_stack_settings(tmp_path_factory.mktemp("stack2"), student_catalog_dir, workers=2)
    stack = EmbeddedStack(settings)
    stack.up()
    try:
        yield stack
    finally:
        stack.down()


def test_a_rebalance_under_load_loses_nothing(two_worker_stack: EmbeddedStack) -> None:
    stack = two_worker_stack
    run = f"rebalance-{uuid.uuid4().hex[:8]}"
    records = normal_events(run, 5000)
    sender = threading.Thread(target=send, args=(bootstrap(stack), records), kwargs={"rate": 500.0})
    sender.start()
    time.sleep(3.0)
    worker_child(stack, "worker-0").terminate()  # SIGTERM: a clean stop, then its keeper restarts it
    time.sleep(3.0)
    worker_child(stack, "worker-1").kill()  # SIGKILL: no shutdown, no final commit
    sender.join(timeout=120)
    sent_at = time.monotonic()
    outcomes = collect(bootstrap(stack), records, timeout_s=300)
    lost = outcomes.unanswered(records)
    statuses = [stack.keeper_status(f"worker-{i}") for i in range(2)]
    report(
        "2 workers, 5,000 events at 500/s, one SIGTERM + one SIGKILL",
        records,
        len(lost),
        duplicates=outcomes.duplicates(records),
        degraded=len(outcomes.degraded),
        answered_after_last_send_s=round(time.monotonic() - sent_at, 1),
        restarts=[s.restarts if s else None for s in statuses],
    )
    assert not lost, f"{len(lost)} of {len(records)} events never got an annotation"
    assert all(s is not None and s.restarts >= 1 for s in statuses)


def _no_status():  # type: ignore[no-untyped-def]
    from services.stack.keeper import KeeperStatus

    return KeeperStatus("none")
