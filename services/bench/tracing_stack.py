"""What tracing costs through the stack: worker-0 restarted at each sampling ratio, the same events through it.

``qu bench --tracing-overhead`` measures the worker's own code in one process, without the broker. This is
the same question asked of the running stack: for each ``QU_TRACE_SAMPLE_RATIO`` (0, 1% and 100%) worker-0
is restarted with that ratio, a warm-up goes through it, then the workload unthrottled; the figures are the
answered events per second and the worker's CPU per event (its own process, the span exporter's thread
included). The embedded broker slows as the topics it holds grow (docs/BENCHMARKS.md), so the ratios are
interleaved over ``rounds`` rounds, each round starting one ratio later than the one before, and the best
complete round of each is kept: no ratio is only ever measured last, on the fullest broker. A round whose
events were not all answered within ``timeout_s`` is reported but not used; a ratio with no complete round
has no figures (the CLI exits 1). Events are plain (no ``traceparent``): the ratio alone decides what is traced.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from services.bench.probe import AnswerReader, EventSender, decode_answer, decode_dead_letter, run_phase
from services.bench.resources import StackProcesses, cpu_per_event
from services.bench.running import running_stack
from services.bench.stats import machine
from services.bench.workload import BenchError, default_warmup, plan_workload, seeded_head
from services.catalog.artifacts import load_catalog
from services.settings import Settings
from services.stack.embedded import EmbeddedStack
from services.telemetry.span_store import read_spans
from services.topics import DEAD_LETTER, QUERY_ANNOTATIONS, SEARCH_EVENTS

Report = Callable[[str], None]
RATIOS = (0.0, 0.01, 1.0)
WORKER = "worker-0"


@dataclass(frozen=True, slots=True)
class RatioRound:
    ratio: float
    round: int
    events: int
    answered: int
    events_per_s: float
    worker_cpu_us_per_event: float
    traced: int | None  # events of the round with a span in the stack's trace store; None: the stack keeps none


def run_tracing_through_stack(
    settings: Settings,
    *,
    events: int,
    hit_ratio: float,
    seed: int,
    timeout_s: float,
    rounds: int = 2,
    report: Report = lambda _m: None,
) -> dict[str, Any]:
    """Measure every ratio ``rounds`` times on the running stack (started, and stopped again, if it is not)."""
    if events < 1 or rounds < 1:
        raise ValueError(f"events and rounds must be >= 1, got {events} and {rounds}")
    if settings.workers != 1:
        raise BenchError(f"the comparison restarts {WORKER} alone: run it with one worker (QU_WORKERS=1)")
    with running_stack(settings, report, "comparison") as (stack, _started):
        measured = _measure(stack, settings, events, hit_ratio, seed, timeout_s, rounds, report)
    return _figures(measured, events, hit_ratio, rounds)


def _measure(
    stack: EmbeddedStack,
    settings: Settings,
    events: int,
    hit_ratio: float,
    seed: int,
    timeout_s: float,
    rounds: int,
    report: Report,
) -> list[RatioRound]:
    state = stack.state()
    if state is None:
        raise BenchError("the stack has no state file: `qu up` first")
    bootstrap, redis_url = state.endpoints["kafka"], state.endpoints["redis"]
    bench_id = uuid.uuid4().hex[:10]
    catalog = load_catalog(settings.resolved_catalog_dir)
    workload = plan_workload(catalog, events=events, hit_ratio=hit_ratio, seed=seed, miss_events=0)
    password = settings.embedded_redis_password()
    seeding = seeded_head(
        bootstrap, redis_url, password, catalog, workload.head, f"bench-{bench_id}", timeout_s=timeout_s, report=report
    )
    sender = EventSender(bootstrap, bench_id)
    warmup = workload.events[: default_warmup(events)]
    measured: list[tuple[str, RatioRound]] = []  # (phase, its figures before its spans are counted)
    with seeding:
        reader = AnswerReader(bootstrap, {QUERY_ANNOTATIONS: decode_answer, DEAD_LETTER: decode_dead_letter}, bench_id)
        try:
            for round_ in range(rounds):
                for i in range(len(RATIOS)):
                    ratio = RATIOS[(i + round_) % len(RATIOS)]
                    report(f"round {round_ + 1}/{rounds}: {WORKER} restarted with QU_TRACE_SAMPLE_RATIO={ratio:g}")
                    stack.restart_with(WORKER, trace_sample_ratio=ratio)
                    processes = StackProcesses(stack)
                    processes.start()
                    phase = f"tr{round_}r{i}"
                    run_phase(
                        sender,
                        reader,
                        topic=SEARCH_EVENTS,
                        phase=f"w{phase}",
                        events=warmup,
                        rate=0.0,
                        timeout_s=timeout_s,
                    )
                    before = processes.cpu_seconds()
                    result = run_phase(
                        sender,
                        reader,
                        topic=SEARCH_EVENTS,
                        phase=phase,
                        events=workload.events,
                        rate=0.0,
                        timeout_s=timeout_s,
                    )
                    cpu = cpu_per_event(before, processes.cpu_seconds(), len(workload.events))
                    if result.answered < result.sent:
                        report(
                            f"round {round_ + 1}, ratio {ratio:g}: {result.sent - result.answered} of {result.sent} "
                            f"events unanswered within {timeout_s:g} s (this round is not used; see "
                            f"{stack.logs / f'{WORKER}.log'})"
                        )
                    figures = RatioRound(
                        ratio,
                        round_ + 1,
                        result.sent,
                        result.answered,
                        round(result.events_per_s, 1),
                        cpu.get(WORKER, 0.0),
                        None,
                    )
                    measured.append((phase, figures))
        finally:
            reader.close()
            report(f"restarting {WORKER} with the stack's own settings")
            stack.restart(WORKER)
    if not stack.keeps_traces:
        return [figures for _, figures in measured]
    # Each worker flushed its spans as it stopped (every ratio ends with a restart): count them once, at the end.
    traced = _traced_per_phase(stack, bench_id)
    return [replace(figures, traced=traced.get(phase, 0)) for phase, figures in measured]


def _traced_per_phase(stack: EmbeddedStack, bench_id: str) -> Counter[str]:
    """Events per measured phase whose ``process`` span reached the stack's trace store."""
    prefix = f"{bench_id}."
    traced: Counter[str] = Counter()
    for span in read_spans(stack.traces_dir):
        event_id = span.attributes.get("qu.event_id")
        if span.name == f"process {SEARCH_EVENTS}" and isinstance(event_id, str) and event_id.startswith(prefix):
            traced[event_id.split(".")[1]] += 1
    return traced


def _share(rounds: list[RatioRound]) -> float | None:
    if any(m.traced is None for m in rounds):
        return None
    return round(sum(m.traced or 0 for m in rounds) / sum(m.events for m in rounds), 4)


def _figures(measured: list[RatioRound], events: int, hit_ratio: float, rounds: int) -> dict[str, Any]:
    best: dict[float, dict[str, Any]] = {}
    for ratio in RATIOS:
        mine = [m for m in measured if m.ratio == ratio and m.answered == m.events]
        best[ratio] = {
            "ratio": ratio,
            "complete_rounds": len(mine),
            "events_per_s": max((m.events_per_s for m in mine), default=None),
            "worker_cpu_us_per_event": min((m.worker_cpu_us_per_event for m in mine), default=None),
            "traced_share": _share(mine) if mine else None,
        }
    base = best[RATIOS[0]]
    for row in best.values():
        row["events_per_s_vs_0"] = _ratio(row["events_per_s"], base["events_per_s"])
        row["worker_cpu_vs_0"] = _ratio(row["worker_cpu_us_per_event"], base["worker_cpu_us_per_event"])
    return {
        "events": events,
        "hit_ratio": hit_ratio,
        "rounds": rounds,
        "complete": all(row["complete_rounds"] for row in best.values()),
        "best": list(best.values()),
        "measured": [asdict(m) for m in measured],
        "machine": machine(),
    }


def _ratio(value: float | None, base: float | None) -> float | None:
    return round(value / base, 3) if value is not None and base else None
