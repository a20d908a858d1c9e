"""``qu bench --soak MINUTES``: a steady paced stream for a long time, watching memory, lag and every answer.

Order of a run: start the stack if it is not running; plan events from the traffic generator and
seed the head cache so ``hit_ratio`` of them hit (the rest go to the student, as 2% of real traffic
would); then produce at ``rate`` events/s for ``minutes``, one second's worth at a time on one
schedule, and every ``sample_s`` note the RSS of each process of the stack, the worker group's lag,
what was sent and answered, and the latency of the answers that arrived since the last sample.
After the last send it waits up to ``timeout_s`` for the remaining answers. An event is answered
when its annotation or a dead letter naming its ``event_id`` came back; anything else is unanswered.

At most ``PLAN_EVENTS`` events are planned, then reused in order: a cycle holds the asked share of
hits exactly, and planning (and seeding) a 20-minute stream's quarter of a million events would cost
more time and cache than the soak measures. Every event keeps its own ``event_id``.
"""

from __future__ import annotations

import math
import os
import platform
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from services.bench.probe import AnswerReader, Decode, EventSender, decode_answer, decode_dead_letter
from services.bench.resources import MIB, GroupLag, StackProcesses
from services.bench.running import running_stack
from services.bench.stats import percentile
from services.bench.workload import BenchError, Workload, plan_workload, seeded_head
from services.catalog.artifacts import load_catalog
from services.settings import Settings
from services.stack.embedded import EmbeddedStack
from services.topics import DEAD_LETTER, QUERY_ANNOTATIONS, SEARCH_EVENTS

Report = Callable[[str], None]
PLAN_EVENTS = 50_000
PHASE = "soak"
CHUNK_S = 1.0  # events are produced one second's worth at a time, so progress and samples fall between chunks
MAX_UNANSWERED_LISTED = 20
LAG_SETTLE_S = 15.0


@dataclass(frozen=True, slots=True)
class SoakConfig:
    minutes: float
    rate: float = 200.0  # events/s, steady
    hit_ratio: float = 0.98
    sample_s: float = 15.0
    seed: int = 1
    timeout_s: float = 120.0  # after the last send, for the last answers

    def __post_init__(self) -> None:
        if not (self.minutes > 0 and math.isfinite(self.minutes)):
            raise ValueError(f"minutes must be a positive number, got {self.minutes}")
        if not 0.0 <= self.hit_ratio <= 1.0:
            raise ValueError(f"hit_ratio must be within [0, 1], got {self.hit_ratio}")
        if self.rate <= 0 or self.sample_s <= 0 or self.timeout_s <= 0:
            raise ValueError("rate, sample_s and timeout_s must be > 0")

    @property
    def events(self) -> int:
        return max(1, round(self.rate * self.minutes * 60))


@dataclass(frozen=True, slots=True)
class SoakProgress:
    """What the progress bar shows after each chunk."""

    sent: int
    total: int
    answered: int
    last_sample: dict[str, Any] | None


@dataclass(slots=True)
class _Run:
    sender: EventSender
    reader: AnswerReader
    lag: GroupLag
    processes: StackProcesses
    started: float = 0.0  # perf_counter of the schedule's start
    sent: dict[str, float] = field(default_factory=dict)  # event id -> perf_counter when produced
    samples: list[dict[str, Any]] = field(default_factory=list)
    last_sample: float = 0.0

    def sample(self) -> dict[str, Any]:
        now = time.perf_counter()
        arrivals = self.reader.arrivals(PHASE, self.last_sample, now)
        latencies = sorted((at - self.sent[event_id]) * 1000.0 for event_id, at in arrivals if event_id in self.sent)
        answered = self.reader.answered(PHASE)
        rss = self.processes.sample()
        out = {
            "t_s": round(now - self.started, 1),
            "at": time.strftime("%H:%M:%S"),
            "sent": len(self.sent),
            "answered": answered,
            "pending": len(self.sent) - answered,
            "lag": self.lag.lag(self.sender.delivered_end),
            "interval_answers": len(latencies),
            "p50_ms": _ms(percentile(latencies, 50)),
            "p99_ms": _ms(percentile(latencies, 99)),
            "rss_mib": {name: round(value / MIB, 1) for name, value in rss.items()},
        }
        self.samples.append(out)
        self.last_sample = now
        return out


def run_soak(
    settings: Settings,
    config: SoakConfig,
    report: Report = lambda _m: None,
    progress: Callable[[SoakProgress], None] = lambda _p: None,
) -> dict[str, Any]:
    """Run the soak and return its figures (see ``docs/BENCHMARKS.md``, "Soak", for the keys)."""
    with running_stack(settings, report, "soak") as (stack, started):
        result = _soak(stack, settings, config, report, progress)
    result["stack"] = "started" if started else "reused"
    return result


def _soak(
    stack: EmbeddedStack,
    settings: Settings,
    config: SoakConfig,
    report: Report,
    progress: Callable[[SoakProgress], None],
) -> dict[str, Any]:
    state = stack.state()
    if state is None:
        raise BenchError("the stack has no state file: `qu up` first")
    bootstrap, redis_url = state.endpoints["kafka"], state.endpoints["redis"]
    soak_id = uuid.uuid4().hex[:10]
    planned = min(config.events, PLAN_EVENTS)
    report(f"soak {soak_id}: planning {planned} events at hit ratio {config.hit_ratio} (reused in order)")
    catalog = load_catalog(settings.resolved_catalog_dir)
    workload = plan_workload(catalog, events=planned, hit_ratio=config.hit_ratio, seed=config.seed, miss_events=0)
    run_id = f"bench-{soak_id}"
    password = settings.embedded_redis_password()
    seeding = seeded_head(
        bootstrap, redis_url, password, catalog, workload.head, run_id, timeout_s=config.timeout_s, report=report
    )
    with seeding as (seeded, activation_s):
        run = _stream(stack, bootstrap, soak_id, workload, config, report, progress)
    result = _figures(config, workload, run, soak_id)
    result["seed"] = {
        "run_id": run_id,
        "queries": seeded,
        "planned_events": planned,
        "expected_hit_ratio": round(workload.expected_hits / len(workload.events), 4),
        "activation_s": round(activation_s, 2),
    }
    return result


def _stream(
    stack: EmbeddedStack,
    bootstrap: str,
    soak_id: str,
    workload: Workload,
    config: SoakConfig,
    report: Report,
    progress: Callable[[SoakProgress], None],
) -> _Run:
    readers: dict[str, Decode] = {QUERY_ANNOTATIONS: decode_answer, DEAD_LETTER: decode_dead_letter}
    reader = AnswerReader(bootstrap, readers, soak_id)
    try:
        lag = GroupLag(bootstrap, SEARCH_EVENTS)
        try:
            run = _Run(EventSender(bootstrap, soak_id), reader, lag, StackProcesses(stack))
            run.processes.start()
            _send_all(run, workload, config, report, progress)
            _drain(run, config, report, progress)
            return run
        finally:
            lag.close()
    finally:
        reader.close()


def _send_all(
    run: _Run, workload: Workload, config: SoakConfig, report: Report, progress: Callable[[SoakProgress], None]
) -> None:
    total, chunk = config.events, max(1, round(config.rate * CHUNK_S))
    every = f"a sample every {config.sample_s:g} s"
    report(f"soak: {total} events at {config.rate:g}/s for {config.minutes:g} min, {every}")
    run.started = run.last_sample = time.perf_counter()
    run.samples.append(_first_sample(run))
    for first in range(0, total, chunk):
        events = [workload.events[i % len(workload.events)] for i in range(first, min(first + chunk, total))]
        records = run.sender.encode(PHASE, events, first=first)
        run.sent |= run.sender.send(SEARCH_EVENTS, records, config.rate, start=run.started + first / config.rate)
        last = None
        if time.perf_counter() - run.last_sample >= config.sample_s:
            last = run.sample()
            report(_line(last))
        progress(SoakProgress(len(run.sent), total, run.reader.answered(PHASE), last))


def _drain(run: _Run, config: SoakConfig, report: Report, progress: Callable[[SoakProgress], None]) -> None:
    """Wait for the last answers (at most ``timeout_s``), still sampling, then take the final sample."""
    deadline = time.monotonic() + config.timeout_s
    total = len(run.sent)
    while run.reader.answered(PHASE) < total and time.monotonic() < deadline:
        time.sleep(0.1)
        if time.perf_counter() - run.last_sample >= config.sample_s:
            report(_line(run.sample()))
    # Faust commits every ~3 s, behind what it answered: give the group time to commit past the last record,
    # so the final lag says whether commits kept up, not where in the commit interval the soak ended.
    settle = time.monotonic() + LAG_SETTLE_S
    while run.lag.lag(run.sender.delivered_end) > 0 and time.monotonic() < settle:
        time.sleep(0.5)
    final = run.sample()
    report(_line(final))
    progress(SoakProgress(total, total, final["answered"], final))


def _first_sample(run: _Run) -> dict[str, Any]:
    """The RSS ``processes.start()`` took just before the first send, as a sample at t = 0."""
    rss = {name: round(memory.start_bytes / MIB, 1) for name, memory in run.processes.memory.items()}
    return {
        **{"t_s": 0.0, "at": time.strftime("%H:%M:%S"), "sent": 0, "answered": 0, "pending": 0, "lag": 0},
        **{"interval_answers": 0, "p50_ms": None, "p99_ms": None, "rss_mib": rss},
    }


def _line(sample: dict[str, Any]) -> str:
    worker = {name: mib for name, mib in sample.get("rss_mib", {}).items() if name.startswith("worker-")}
    memory = ", ".join(f"{name} {mib:g} MiB" for name, mib in sorted(worker.items()))
    return (
        f"[{sample['at']}] t={sample['t_s']:g}s sent {sample['sent']} answered {sample['answered']} "
        f"pending {sample['pending']} lag {sample['lag']} p50/p99 {sample['p50_ms']}/{sample['p99_ms']} ms; {memory}"
    )


def _figures(config: SoakConfig, workload: Workload, run: _Run, soak_id: str) -> dict[str, Any]:
    taken = run.reader.take(PHASE)
    unanswered = [event_id for event_id in run.sent if event_id not in taken.received]
    latencies = sorted((at - run.sent[e]) * 1000.0 for e, at in taken.received.items() if e in run.sent)
    sources = Counter(taken.sources.values())
    last_send = max(run.sent.values(), default=run.started)
    died = run.processes.died
    lags = [sample["lag"] for sample in run.samples]
    return {
        "soak_id": soak_id,
        "minutes": config.minutes,
        "rate": config.rate,
        "hit_ratio": config.hit_ratio,
        "events": len(run.sent),
        "offered_rate": round(len(run.sent) / (last_send - run.started), 1) if last_send > run.started else None,
        "answered": len(taken.received),
        "unanswered": len(unanswered),
        "unanswered_ids": unanswered[:MAX_UNANSWERED_LISTED],
        "duplicates": taken.duplicates,
        "sources": dict(sorted(sources.items())),
        "hits": sources.get("cache", 0),
        "degraded": sources.get("fallback", 0),  # the handler's degraded answers are its fallback ones
        "dead_letters": sum(n for source, n in sources.items() if source.startswith("dead_letter")),
        "p50_ms": _ms(percentile(latencies, 50)),
        "p95_ms": _ms(percentile(latencies, 95)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "max_ms": _ms(latencies[-1] if latencies else math.nan),
        "lag_max": max(lags, default=0),
        "lag_end": lags[-1] if lags else 0,
        "rss": {name: memory.summary() for name, memory in sorted(run.processes.memory.items())},
        "died": died,
        "process_events": run.processes.events,
        "reader_errors": dict(run.reader.errors),
        "samples": run.samples,
        "complete": not unanswered and not died and not run.processes.events,
        "machine": {
            "cpus": os.cpu_count(),
            "load_avg": [round(v, 2) for v in os.getloadavg()],
            "python": platform.python_version(),
            "at": time.strftime("%Y-%m-%d %H:%M"),
        },
        "plan": {"events": len(workload.events), "head_queries": len(workload.head)},
    }


def _ms(value: float) -> float | None:
    return round(value, 1) if math.isfinite(value) else None
