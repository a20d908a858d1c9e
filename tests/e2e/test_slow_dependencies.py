"""Slow, silent and wrong dependencies under a steady stream, on a real broker, Redis and Triton.

Redis sits behind a TCP proxy that delays, then blackholes it; the student is a real Triton model that
answers, then sleeps past the worker's deadline, then answers TAGS_JSON that is no Understanding. Every
event must still end as an annotation, within the deadline and without a backlog: once a dependency has
failed a few times its circuit opens and events degrade at once (no cache; the lexicon fallback) instead
of each batch waiting a full timeout. When the dependency returns, the circuit's probe finds it and the
cache hits and student answers come back.
"""

from __future__ import annotations

import statistics
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from services.cache import HeadTagWriter
from services.cache.keys import to_head_tags
from services.domain import Understanding
from services.normalize import normalize_query
from tests.e2e.ledger import SentRecord, collect, event, send
from tests.fixtures.fault_stack import FaultStack
from tests.fixtures.redis import run_async

pytestmark = [pytest.mark.integration, pytest.mark.e2e]

RATE = 80.0  # events/s, a steady stream; half of it hits the cache
DEADLINE_MS = 300
SOCKET_TIMEOUT_MS = 250  # connect_head_tag_cache's default
OPEN_S = 1.0
SETTLE_S = 0.5
CACHED = [f"cached query {i}" for i in range(20)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    fault_stack = FaultStack(
        tmp_path_factory.mktemp("faults"),
        worker_settings={
            "QU_STUDENT_DEADLINE_MS": str(DEADLINE_MS),
            "QU_BREAKER_OPEN_S": str(OPEN_S),
            "QU_BREAKER_FAILURES": "3",
        },
    )
    try:
        fault_stack.start()
        _cache_the_head(fault_stack)
        # The worker is consuming (its group joined, its partitions assigned) once it has answered an event.
        first = [event(f"first-{uuid.uuid4().hex[:6]}", "milk")]
        send(fault_stack.bootstrap, first)
        assert not collect(fault_stack.bootstrap, first, timeout_s=90).unanswered(first), fault_stack.log_tail()
        yield fault_stack
    finally:
        fault_stack.stop()


def _cache_the_head(stack: FaultStack) -> None:
    """A teacher run holding CACHED, written straight to Redis (not through the proxy) and activated."""
    from redis.asyncio import Redis

    async def write() -> None:
        client = Redis(host="127.0.0.1", port=stack.redis.port)
        try:
            writer = HeadTagWriter(client)
            entries = [
                to_head_tags(normalize_query(q), Understanding([]), teacher_version="t1", run_id="r1") for q in CACHED
            ]
            await writer.write_run_entries("r1", entries, 3600)
            assert (await writer.activate("r1", len(entries))).active
        finally:
            await client.aclose()

    run_async(write())


def _phase(name: str, seconds: float) -> list[SentRecord]:
    """``seconds`` of the stream: cached head queries and tail misses, alternately."""
    run = uuid.uuid4().hex[:6]
    count = int(RATE * seconds)
    return [
        event(f"{name}-{run}-{i}", CACHED[i % len(CACHED)] if i % 2 == 0 else f"tail query {name} {i}")
        for i in range(count)
    ]


def _stream(stack: FaultStack, phases: list[tuple[str, float, Callable[[], None]]]) -> dict[str, list[SentRecord]]:
    """Each phase: switch the fault, send its events at RATE, let them be answered. Returns the records by phase."""
    sent: dict[str, list[SentRecord]] = {}
    for name, seconds, switch in phases:
        switch()
        sent[name] = _phase(name, seconds)
        send(stack.bootstrap, sent[name], rate=RATE)
        time.sleep(SETTLE_S)  # the phase's last events are answered under its own fault, not the next one's
    return sent


def _figures(records: list[SentRecord], timings: dict[str, dict[str, float]], key: str) -> tuple[float, float]:
    values = [timings[r.event_id][key] for r in records if r.event_id in timings]
    return statistics.median(values), max(values)


def test_slow_then_silent_redis_and_a_late_then_broken_student_leave_no_event_unanswered_or_late(
    stack: FaultStack,
) -> None:
    redis, student = stack.proxy, stack.student
    started = time.monotonic()
    sent = _stream(
        stack,
        [
            ("healthy", 2.0, lambda: None),
            ("redis_slow", 2.0, lambda: redis.delay(40)),  # a round trip of ~80 ms: slow, still in time
            ("redis_silent", 4.0, redis.blackhole),
            ("redis_back", 3.0, redis.pass_through),
            ("student_late", 4.0, lambda: student.sleep(2.0)),  # far past the 300 ms deadline
            ("student_broken", 2.0, student.malformed),
            ("student_back", 3.0, student.answer),
        ],
    )
    last_sent = time.monotonic()
    records = [r for phase in sent.values() for r in phase]
    outcomes = collect(stack.bootstrap, records, timeout_s=60)
    answered_after_s = time.monotonic() - last_sent
    lost = outcomes.unanswered(records)
    timings, sources = outcomes.timings, outcomes.sources

    def source_mix(name: str) -> dict[str, int]:
        mix: dict[str, int] = {}
        for r in sent[name]:
            for source in sources.get(r.event_id or "", ()):
                mix[source] = mix.get(source, 0) + 1
        return mix

    print(f"\n[fault] slow dependencies: sent={len(records)} lost={len(lost)} in {last_sent - started:.0f} s")
    for name, phase in sent.items():
        cache, student_ms = _figures(phase, timings, "cache_ms"), _figures(phase, timings, "student_ms")
        total = _figures(phase, timings, "total_ms")
        print(
            f"  {name:15s} {source_mix(name)} degraded={sum(r.event_id in outcomes.degraded for r in phase)} "
            f"cache_ms p50/max={cache[0]:.0f}/{cache[1]:.0f} "
            f"student_ms p50/max={student_ms[0]:.0f}/{student_ms[1]:.0f} "
            f"total_ms p50/max={total[0]:.0f}/{total[1]:.0f}"
        )
    print(f"  all answered {answered_after_s:.1f} s after the last send")

    assert not lost, f"{len(lost)} of {len(records)} events have no annotation: {[r.event_id for r in lost[:5]]}"
    assert stack.worker is not None and stack.worker.poll() is None, "the worker died"
    # No backlog: the stream was answered as it went, not caught up on afterwards.
    assert answered_after_s < 15, f"the last events were answered {answered_after_s:.0f} s after the last send"

    # Slow Redis is still Redis: its hits stay hits.
    assert sum("cache" in sources[r.event_id or ""] for r in _hits(sent["redis_slow"])) >= 0.8 * len(
        _hits(sent["redis_slow"])
    )
    # Silent Redis: hits become student answers; no event waits more than one socket timeout for the cache,
    # and most wait none (the circuit is open: one probe per OPEN_S, not one timeout per batch).
    median_ms, worst_ms = _figures(sent["redis_silent"], timings, "cache_ms")
    assert worst_ms < SOCKET_TIMEOUT_MS * 2 + 200, f"an event waited {worst_ms:.0f} ms for a silent Redis"
    assert median_ms < 50, f"half the events waited {median_ms:.0f} ms or more for a silent Redis: no circuit?"
    assert source_mix("redis_silent").get("cache", 0) == 0
    # Redis back: the probe finds it, the head hits the cache again.
    assert all("cache" in sources[r.event_id or ""] for r in _second_half(_hits(sent["redis_back"]))), (
        "the cache did not come back"
    )

    # A late student: misses are answered by the fallback, degraded; none waits past the deadline, most not at all.
    late = _misses(sent["student_late"])
    assert all(sources[r.event_id or ""] == {"fallback"} and r.event_id in outcomes.degraded for r in late)
    median_ms, worst_ms = _figures(late, timings, "student_ms")
    assert worst_ms < DEADLINE_MS + 200, f"a miss waited {worst_ms:.0f} ms for a late student"
    assert median_ms < 50, f"half the misses waited {median_ms:.0f} ms or more for a late student: no circuit?"
    # A broken student answers fast but wrong: each such answer is one fallback, at once (once the late
    # student's queued requests have drained).
    broken = _second_half(_misses(sent["student_broken"]))
    assert all(sources[r.event_id or ""] == {"fallback"} for r in broken)
    assert _figures(broken, timings, "student_ms")[1] < DEADLINE_MS
    # The student back: misses are its answers again.
    assert all("student" in sources[r.event_id or ""] for r in _second_half(_misses(sent["student_back"]))), (
        "the student did not come back"
    )

    opened = stack.worker_lines("opened")
    closed = stack.worker_lines("closed: it answers again")
    assert any("head-tag cache" in line for line in opened) and any("head-tag cache" in line for line in closed)
    assert any("student" in line for line in opened) and any("student" in line for line in closed)


def _hits(phase: list[SentRecord]) -> list[SentRecord]:
    return phase[0::2]


def _misses(phase: list[SentRecord]) -> list[SentRecord]:
    return phase[1::2]


def _second_half(records: list[SentRecord]) -> list[SentRecord]:
    return records[len(records) // 2 :]
