"""``qu bench``: the real-time path's throughput and latency on the embedded stack, beside a raw passthrough.

Order of a run: start the stack if it is not running; plan the events and seed the head cache so
the asked share of them hit; then, against the worker — warm-up (discarded), an unthrottled phase
(throughput), a paced phase (latency) and a paced all-miss phase (the student's path); then the same
warm-up, unthrottled and paced phases through the passthrough. Every phase is bounded by
``timeout_s``; whatever the run started (the stack, the passthrough process and its topics) is
stopped, and the seed withdrawn, in ``finally`` blocks.
"""

from __future__ import annotations

import os
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.bench.passthrough import Passthrough
from services.bench.probe import AnswerReader, Decode, EventSender, decode_answer, decode_dead_letter, run_phase
from services.bench.profile import summarize
from services.bench.resources import StackProcesses, cpu_per_event
from services.bench.running import running_stack
from services.bench.stats import PhaseResult, machine
from services.bench.workload import BenchError, BenchEvent, Workload, default_warmup, plan_workload, seeded_head
from services.catalog.artifacts import load_catalog
from services.settings import Settings
from services.stack.embedded import EmbeddedStack
from services.topics import DEAD_LETTER, QUERY_ANNOTATIONS, SEARCH_EVENTS

Report = Callable[[str], None]
HIT_SOURCES = frozenset({"cache"})


@dataclass(frozen=True, slots=True)
class BenchConfig:
    events: int = 20_000  # per phase, worker and passthrough alike
    hit_ratio: float = 0.98
    rate: float = 1000.0  # events/s of the paced phases
    miss_rate: float = 200.0  # events/s of the all-miss phase
    miss_events: int = 3000  # 0: no miss-path phase
    warmup: int | None = None  # default: a tenth of ``events``, 100 to 1,000
    seed: int = 1
    timeout_s: float = 120.0  # per phase, after its last event was sent
    passthrough: bool = True
    profile: bool = (
        False  # after the measured phases, a phase with the worker under cProfile (services/bench/profile.py)
    )

    def __post_init__(self) -> None:
        if self.events < 1 or self.miss_events < 0 or (self.warmup is not None and self.warmup < 0):
            raise ValueError("events must be >= 1, miss_events and warmup >= 0")
        if not 0.0 <= self.hit_ratio <= 1.0:
            raise ValueError(f"hit_ratio must be within [0, 1], got {self.hit_ratio}")
        if self.rate <= 0 or self.miss_rate <= 0 or self.timeout_s <= 0:
            raise ValueError("rate, miss_rate and timeout_s must be > 0")

    @property
    def warmup_events(self) -> int:
        return self.warmup if self.warmup is not None else default_warmup(self.events)


def run_bench(settings: Settings, config: BenchConfig, report: Report = lambda _m: None) -> dict[str, Any]:
    """Run the benchmark and return its figures (see ``docs/BENCHMARKS.md`` for the keys)."""
    with running_stack(settings, report, "run") as (stack, started):
        result = _measure(stack, settings, config, report)
    result["stack"] = "started" if started else "reused"
    return result


def _measure(stack: EmbeddedStack, settings: Settings, config: BenchConfig, report: Report) -> dict[str, Any]:
    state = stack.state()
    if state is None:
        raise BenchError("the stack has no state file: `qu up` first")
    bootstrap, redis_url = state.endpoints["kafka"], state.endpoints["redis"]
    bench_id = uuid.uuid4().hex[:10]

    report(f"bench {bench_id}: planning {config.events} events at hit ratio {config.hit_ratio}")
    catalog = load_catalog(settings.resolved_catalog_dir)
    workload = plan_workload(
        catalog, events=config.events, hit_ratio=config.hit_ratio, seed=config.seed, miss_events=config.miss_events
    )
    password = settings.embedded_redis_password()
    seeding = seeded_head(
        bootstrap,
        redis_url,
        password,
        catalog,
        workload.head,
        f"bench-{bench_id}",
        timeout_s=config.timeout_s,
        report=report,
    )
    with seeding as (seeded, activation_s):
        phases, history, cpu = _run_phases(stack, bootstrap, bench_id, workload, config, report)
    result = _figures(config, workload, phases, bench_id, seeded, activation_s)
    result["annotations_before"] = history
    result["cpu_us_per_event"] = cpu
    if config.profile:
        result["worker_profile"] = _profile(stack, bootstrap, bench_id, workload, config, report)
    return result


def _run_phases(
    stack: EmbeddedStack, bootstrap: str, bench_id: str, workload: Workload, config: BenchConfig, report: Report
) -> tuple[dict[str, PhaseResult], int, dict[str, dict[str, float]]]:
    phases: dict[str, PhaseResult] = {}
    # CPU per event of every process of the stack (and of this client) over each phase: where the time goes.
    processes = StackProcesses(stack)
    processes.start()
    processes.watch("bench client", os.getpid())
    cpu: dict[str, dict[str, float]] = {}
    sender = EventSender(bootstrap, bench_id)
    readers: dict[str, Decode] = {QUERY_ANNOTATIONS: decode_answer, DEAD_LETTER: decode_dead_letter}
    plan: list[tuple[str, list[BenchEvent], float]] = [
        ("warmup", workload.events[: config.warmup_events], 0.0),
        ("throughput", workload.events, 0.0),
        ("paced", workload.events, config.rate),
        ("miss", workload.misses, config.miss_rate),
    ]
    reader = AnswerReader(bootstrap, readers, bench_id)
    # tansu's cost per fetch grows with the record batches a partition holds (docs/BENCHMARKS.md): a long-lived
    # stack measures slower than a fresh one, so the run says how much the answer topic held before it.
    history = reader.start_offsets.get(QUERY_ANNOTATIONS, 0)
    try:
        for name, events, rate in plan:
            if events:
                report(f"worker: {name} phase, {len(events)} events" + (f" at {rate:g}/s" if rate else ""))
                before = processes.cpu_seconds()
                phases[name] = run_phase(
                    sender,
                    reader,
                    topic=SEARCH_EVENTS,
                    phase=name,
                    events=events,
                    rate=rate,
                    timeout_s=config.timeout_s,
                )
                cpu[name] = cpu_per_event(before, processes.cpu_seconds(), len(events))
    finally:
        reader.close()

    if config.passthrough:
        for client, prefix in (("aiokafka", "passthrough"), ("confluent", "passthrough_confluent")):
            log = stack.logs / f"bench-passthrough-{bench_id}-{client}.log"
            with Passthrough(bootstrap, bench_id, log, client=client) as passthrough:
                process = "passthrough" if client == "aiokafka" else f"passthrough ({client})"
                if passthrough.pid is not None:
                    processes.watch(process, passthrough.pid)
                copies = AnswerReader(bootstrap, {passthrough.sink: decode_answer}, bench_id)
                try:
                    for name, events, rate in plan[:3]:
                        report(
                            f"passthrough ({client}): {name} phase, {len(events)} events"
                            + (f" at {rate:g}/s" if rate else "")
                        )
                        before = processes.cpu_seconds()
                        phases[f"{prefix}_{name}"] = run_phase(
                            sender,
                            copies,
                            topic=passthrough.source,
                            phase=f"pt{client[0]}{name}",
                            events=events,
                            rate=rate,
                            timeout_s=config.timeout_s,
                        )
                        cpu[f"{prefix}_{name}"] = cpu_per_event(before, processes.cpu_seconds(), len(events))
                finally:
                    copies.close()
    for phase in [p for p in cpu if p.endswith("warmup")]:
        del cpu[phase]
    return phases, history, cpu


def _profile(
    stack: EmbeddedStack, bootstrap: str, bench_id: str, workload: Workload, config: BenchConfig, report: Report
) -> dict[str, Any]:
    """worker-0 restarted under cProfile, the workload unthrottled through it, then restarted as it was."""
    path = stack.stack_dir / f"worker-profile-{bench_id}.pstats"
    report("profile: restarting worker-0 under cProfile (slower: this phase's figures are not the bench's)")
    stack.restart_with("worker-0", worker_profile=path)
    sender = EventSender(bootstrap, bench_id)
    reader = AnswerReader(bootstrap, {QUERY_ANNOTATIONS: decode_answer, DEAD_LETTER: decode_dead_letter}, bench_id)
    try:
        phase = run_phase(
            sender,
            reader,
            topic=SEARCH_EVENTS,
            phase="profile",
            events=workload.events,
            rate=0.0,
            timeout_s=config.timeout_s,
        )
    finally:
        reader.close()
        report("profile: restarting worker-0 without the profiler")
        stack.restart("worker-0")  # the profiled worker writes its stats as it stops
    if not path.is_file():
        raise BenchError(f"the profiled worker wrote no profile to {path}: see {stack.logs / 'worker-0.log'}")
    summary = summarize(path)
    summary["events"] = phase.sent
    summary["path"] = str(path)
    return summary


def _figures(
    config: BenchConfig,
    workload: Workload,
    phases: dict[str, PhaseResult],
    bench_id: str,
    seeded: int,
    activation_s: float,
) -> dict[str, Any]:
    throughput, paced = phases["throughput"], phases["paced"]
    summaries = {name: result.summary() for name, result in phases.items() if name != "warmup"}
    measured = Counter(throughput.sources) + Counter(paced.sources)
    hits = sum(n for source, n in measured.items() if source in HIT_SOURCES)
    dead = sum(n for source, n in measured.items() if source.startswith("dead_letter"))
    misses = sum(measured.values()) - hits - dead
    out: dict[str, Any] = {
        "bench_id": bench_id,
        "events": config.events,
        "hit_ratio": config.hit_ratio,
        "rate": config.rate,
        "events_per_s": summaries["throughput"]["events_per_s"],
        "p50_ms": summaries["paced"]["p50_ms"],
        "p95_ms": summaries["paced"]["p95_ms"],
        "p99_ms": summaries["paced"]["p99_ms"],
    }
    if "passthrough_throughput" in summaries:
        pt_throughput, pt_paced = summaries["passthrough_throughput"], summaries["passthrough_paced"]
        out["passthrough_events_per_s"] = pt_throughput["events_per_s"]
        out["passthrough_p50_ms"] = pt_paced["p50_ms"]
        out["passthrough_p99_ms"] = pt_paced["p99_ms"]
        ceiling = phases["passthrough_throughput"].events_per_s
        out["ratio"] = round(throughput.events_per_s / ceiling, 4) if ceiling else None
    if "passthrough_confluent_throughput" in summaries:
        # The same copy with librdkafka: what the worker's client library (aiokafka, under Faust) costs.
        out["passthrough_confluent_events_per_s"] = summaries["passthrough_confluent_throughput"]["events_per_s"]
        out["passthrough_confluent_p50_ms"] = summaries["passthrough_confluent_paced"]["p50_ms"]
        out["passthrough_confluent_p99_ms"] = summaries["passthrough_confluent_paced"]["p99_ms"]
    answered = throughput.answered + paced.answered
    out |= {
        "hits": hits,
        "misses": misses,
        "hit_ratio_observed": round(hits / answered, 4) if answered else None,
        "fallbacks": measured.get("fallback", 0),
        "dead_letters": dead,
        "unanswered": sum(r.sent - r.answered for r in phases.values()),
        "duplicates": sum(r.duplicates for r in phases.values()),
    }
    if "miss" in phases:
        miss = summaries["miss"]
        out["miss_path"] = {k: miss[k] for k in ("events", "answered", "target_rate", "p50_ms", "p95_ms", "p99_ms")}
        out["miss_path"]["sources"] = miss["sources"]
    out["complete"] = out["unanswered"] == 0
    out["seed"] = {
        "run_id": f"bench-{bench_id}",
        "queries": seeded,
        "expected_hit_ratio": round(workload.expected_hits / len(workload.events), 4),
        "activation_s": round(activation_s, 2),
    }
    out["phases"] = summaries
    out["machine"] = machine()
    return out
