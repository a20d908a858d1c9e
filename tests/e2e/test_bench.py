"""``qu bench`` on the running embedded stack, with small numbers: every key, sane values, nothing left behind.

Speed targets are not asserted here: they are benchmark figures (docs/BENCHMARKS.md), and CI
shares two cores between the stack and the tests. The first tests need no services.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter
from typing import Any

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from services.bench.stats import PhaseResult, percentile
from services.bench.workload import choose_head
from services.settings import Settings
from services.stack.embedded import EmbeddedStack
from services.stack.keeper import KeeperStatus
from tests.fixtures.stack import environ_without_settings, settings_env

EVENTS = 300
HIT_RATIO = 0.9
MISS_EVENTS = 100


def test_the_head_is_the_most_frequent_queries_adding_up_to_the_target() -> None:
    counts = Counter({"milk": 50, "bread": 30, "eggs": 10, "kale": 5, "a": 1, "b": 1, "c": 1, "d": 1})
    assert choose_head(counts, 80) == {"milk": 50, "bread": 30}
    # 93 cannot be made of the big ones alone: a query that would overshoot is skipped for rarer ones.
    assert sum(choose_head(counts, 93).values()) == 93
    assert choose_head(counts, 0) == {}
    assert sum(choose_head(counts, 10_000).values()) == sum(counts.values())


def test_percentiles_are_latencies_that_happened() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (50.0, 99.0, 100.0)
    result = PhaseResult("paced", sent=4, target_rate=10, send_seconds=0.3, span_seconds=0.5, latencies_ms=[1, 2, 3])
    summary = result.summary()
    assert summary["answered"] == 3 and summary["events_per_s"] == 6.0 and summary["p99_ms"] == 3
    assert PhaseResult("empty", 0, 0, 0, 0).summary()["p50_ms"] is None  # JSON has no NaN


def test_the_passthrough_copies_with_the_workers_client_settings() -> None:
    from services.bench import passthrough
    from streams import app, fetch_wait  # builds the Faust app object; connects to nothing

    assert passthrough.FETCH_MAX_WAIT_MS == fetch_wait.FETCH_MAX_WAIT_MS
    assert (passthrough.BATCH, passthrough.WITHIN_MS / 1000) == (app.BATCH_MAX, app.BATCH_WITHIN_S)


def test_a_soak_with_an_unanswered_event_or_a_dead_process_exits_1(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from services.cli import bench_cmd

    result: dict[str, Any] = {
        **{"soak_id": "s", "minutes": 0.1, "rate": 10.0, "events": 60, "offered_rate": 10.0, "answered": 59},
        **{"unanswered": 1, "unanswered_ids": ["s.soak.7"], "duplicates": 0, "hits": 58, "degraded": 0},
        **{"dead_letters": 0, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "max_ms": 4.0, "lag_max": 0},
        **{"lag_end": 0, "sources": {"cache": 58, "student": 1}, "rss": {}, "died": [], "process_events": []},
        **{"samples": [], "complete": False},
    }
    monkeypatch.setattr(bench_cmd, "run_soak", lambda *_a, **_k: result)
    done = cli("bench", "--soak", "0.1", "--json")
    assert done.exit_code == 1 and "1 events were not answered (first: s.soak.7)" in done.stderr
    assert orjson.loads(done.stdout)["unanswered"] == 1  # the figures are printed all the same

    result |= {"unanswered": 0, "unanswered_ids": [], "died": ["worker-0"], "complete": False}
    result["process_events"] = ["worker-0 (pid 12) ended during the soak"]
    done = cli("bench", "--soak", "0.1")
    assert done.exit_code == 1 and "worker-0 (pid 12) ended during the soak" in done.stderr
    assert "resident memory" in done.stdout

    result |= {"died": [], "process_events": [], "complete": True}
    assert cli("bench", "--soak", "0.1", "--json").exit_code == 0


def bench(
    settings: Settings, *args: str, all_settings: bool = False
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    # The stack's own settings, and nothing of the developer's shell: its QU_* variables would point elsewhere.
    # The bench finds the stack's endpoints in its state file; restarting a process of it (--profile) takes the
    # settings the stack was started with (its ports), as `qu up` was given them: ``all_settings``.
    env = environ_without_settings()
    env |= {"QU_STATE_DIR": str(settings.state_dir), "QU_CATALOG_DIR": str(settings.resolved_catalog_dir)}
    if all_settings:
        env |= settings_env(settings)
    command = [sys.executable, "-m", "services.cli.main", "bench", *args, "--json"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=150, check=False)
    lines = done.stdout.splitlines()
    assert done.returncode == 0 and len(lines) == 1, f"rc={done.returncode}\n{done.stdout}\n{done.stderr[-3000:]}"
    return done, orjson.loads(lines[0])


def assert_worker_0_runs_again(stack: EmbeddedStack, before: KeeperStatus | None) -> None:
    """The stack is as it was after a bench that restarted worker-0: running, with a new worker-0."""
    assert stack.status()["running"]
    after = stack.keeper_status("worker-0")
    assert before is not None and after is not None and after.child_pid != before.child_pid


@pytest.mark.integration
@pytest.mark.e2e
def test_qu_bench_measures_the_running_stack_and_a_passthrough(
    embedded_stack: EmbeddedStack, stack_settings: Settings
) -> None:
    done, result = bench(
        stack_settings,
        *("--events", str(EVENTS), "--hit-ratio", str(HIT_RATIO), "--rate", "200"),
        *("--miss-rate", "100", "--miss-events", str(MISS_EVENTS), "--warmup", "50", "--timeout", "60"),
    )
    assert result["stack"] == "reused" and result["complete"] is True
    for key in ("events_per_s", "p50_ms", "p95_ms", "p99_ms", "passthrough_events_per_s", "passthrough_p99_ms"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"]
    assert result["ratio"] == pytest.approx(result["events_per_s"] / result["passthrough_events_per_s"], abs=1e-3)

    # Two measured phases (unthrottled, paced) of EVENTS each; every event answered once, none dead-lettered.
    assert result["hits"] + result["misses"] == 2 * EVENTS
    assert result["unanswered"] == 0 and result["dead_letters"] == 0
    assert result["seed"]["expected_hit_ratio"] == pytest.approx(HIT_RATIO, abs=0.005)
    assert result["hit_ratio_observed"] == pytest.approx(HIT_RATIO, abs=0.03)
    paced = result["phases"]["paced"]
    assert paced["answered"] == EVENTS and paced["offered_rate"] == pytest.approx(200, rel=0.2)

    miss = result["miss_path"]
    assert miss["answered"] == MISS_EVENTS and set(miss["sources"]) <= {"student", "fallback"}
    assert miss["p50_ms"] <= miss["p99_ms"]
    passthrough = result["phases"]["passthrough_paced"]
    assert passthrough["answered"] == EVENTS and passthrough["sources"] == {"passthrough": EVENTS}
    # The second baseline: the same copy through librdkafka.
    confluent = result["phases"]["passthrough_confluent_paced"]
    assert confluent["answered"] == EVENTS and confluent["sources"] == {"passthrough": EVENTS}
    assert result["passthrough_confluent_events_per_s"] > 0 and result["passthrough_confluent_p99_ms"] > 0

    # Where the time went: CPU per event of each process over each phase, read from the processes themselves.
    cpu = result["cpu_us_per_event"]
    assert set(cpu) == {
        "throughput",
        "paced",
        "miss",
        "passthrough_throughput",
        "passthrough_paced",
        "passthrough_confluent_throughput",
        "passthrough_confluent_paced",
    }
    # CPU time comes in 10 ms ticks: over this short run's phases a light process (the bench client, a
    # passthrough) may read 0 and be left out; the busy ones cannot, and nothing is charged to the wrong phase.
    assert {"worker-0", "kafka"} <= set(cpu["throughput"])
    assert "triton/qu_student" in cpu["miss"]  # the student's Python-backend stub does the misses' work
    # The tests' stack records its traffic (tests/fixtures/stack.py): the recorder is one of its processes.
    # It runs the local LLM teacher too: idle, it may still be charged a tick.
    known = {"kafka", "redis", "triton", "triton/qu_student", "refresher", "recorder", "traces", "bench client", "llm"}
    known |= {"worker-0", "worker-0.keeper", "passthrough", "passthrough (confluent)", "total"}
    assert all(set(figures) <= known for figures in cpu.values()), cpu
    for phase in ("throughput", "paced", "miss", "passthrough_throughput", "passthrough_paced"):
        assert "passthrough (confluent)" not in cpu[phase]  # watched only from its own phases on
    for phase in ("throughput", "paced", "miss"):
        assert "passthrough" not in cpu[phase]
    for figures in cpu.values():
        assert figures["total"] == pytest.approx(sum(v for k, v in figures.items() if k != "total"), abs=5.0)

    # Nothing left behind: the stack still runs, the passthrough's topics and process are gone.
    assert embedded_stack.status()["running"]
    topics = AdminClient({"bootstrap.servers": embedded_stack.endpoints()["kafka"]}).list_topics(timeout=10).topics
    assert not [t for t in topics if t.startswith(f"qu.bench-{result['bench_id']}")]
    assert "passthrough" in done.stderr  # the progress report went to stderr, the JSON alone to stdout


SOAK_RATE = 50
SOAK_MINUTES = 0.1  # 6 s: enough for several samples, short enough for CI; the real soak is docs/BENCHMARKS.md's


@pytest.mark.integration
@pytest.mark.e2e
def test_a_short_soak_answers_every_event_and_samples_every_process(
    embedded_stack: EmbeddedStack, stack_settings: Settings
) -> None:
    _done, result = bench(
        stack_settings,
        *("--soak", str(SOAK_MINUTES), "--rate", str(SOAK_RATE), "--hit-ratio", "0.9"),
        *("--sample-every", "1", "--timeout", "60"),
    )
    events = round(SOAK_MINUTES * 60 * SOAK_RATE)
    assert result["stack"] == "reused" and result["complete"] is True
    assert result["events"] == result["answered"] == events
    assert result["unanswered"] == 0 and result["unanswered_ids"] == [] and result["duplicates"] == 0
    assert sum(result["sources"].values()) == events and result["died"] == [] and result["process_events"] == []
    assert result["hits"] / events == pytest.approx(result["seed"]["expected_hit_ratio"], abs=0.05)
    assert result["offered_rate"] == pytest.approx(SOAK_RATE, rel=0.2)
    assert result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] <= result["max_ms"]

    # Every process of the stack, the worker as the keeper's child beside the keeper, and Triton's student stub.
    processes = {"traces", "kafka", "redis", "triton", "triton/qu_student", "refresher", "recorder"}
    processes |= {"worker-0", "worker-0.keeper", "llm"}  # the session's stack runs the local LLM teacher
    assert set(result["rss"]) == processes
    worker = embedded_stack.keeper_status("worker-0")
    assert worker is not None and result["rss"]["worker-0"]["pid"] == worker.child_pid
    for name, rss in result["rss"].items():
        assert 0 < rss["start_mib"] <= rss["max_mib"] and rss["end_mib"] <= rss["max_mib"] and not rss["gone"], name
        assert rss["growth_mib"] == pytest.approx(rss["end_mib"] - rss["start_mib"], abs=0.11), name

    # A first sample before any send, one about every second, and a last one once everything was answered
    # and the worker's group had committed past every record the soak produced.
    samples = result["samples"]
    assert len(samples) >= 5 and samples[0]["sent"] == 0
    assert [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)
    assert [s["sent"] for s in samples] == sorted(s["sent"] for s in samples)
    assert set(samples[-1]["rss_mib"]) == processes
    assert samples[-1]["pending"] == 0 and samples[-1]["answered"] == events
    assert result["lag_end"] == samples[-1]["lag"] == 0 and result["lag_max"] >= 0
    assert sum(s["interval_answers"] for s in samples) == events  # each answer timed in exactly one interval


@pytest.mark.integration
@pytest.mark.e2e
def test_qu_bench_profile_reports_where_the_workers_main_thread_spends_its_time(
    embedded_stack: EmbeddedStack, stack_settings: Settings
) -> None:
    before = embedded_stack.keeper_status("worker-0")
    _done, result = bench(
        stack_settings,
        *("--events", "200", "--miss-events", "0", "--warmup", "20", "--timeout", "60"),
        *("--no-passthrough", "--profile"),
        all_settings=True,
    )
    profile = result["worker_profile"]
    assert profile["events"] == 200 and profile["profiled_s"] > 0
    assert "handler (services/annotation)" in profile["layers"] and "asyncio" in profile["layers"]
    assert sum(profile["layers"].values()) == pytest.approx(1.0, abs=0.01)
    assert len(profile["top"]) == 15 and all(row["own_s"] >= 0 for row in profile["top"])
    assert_worker_0_runs_again(embedded_stack, before)  # without the profiler


@pytest.mark.integration
@pytest.mark.e2e
def test_qu_bench_tracing_through_stack_restarts_the_worker_at_each_ratio_and_counts_what_it_traced(
    embedded_stack: EmbeddedStack, stack_settings: Settings
) -> None:
    before = embedded_stack.keeper_status("worker-0")
    _done, result = bench(
        stack_settings,
        *("--tracing-through-stack", "--events", "120", "--rounds", "1", "--timeout", "60"),
        all_settings=True,
    )
    assert result["complete"] is True and [row["ratio"] for row in result["best"]] == [0.0, 0.01, 1.0]
    assert all(m["answered"] == m["events"] == 120 for m in result["measured"])
    assert all(row["events_per_s"] > 0 and row["worker_cpu_us_per_event"] > 0 for row in result["best"])
    shares = {row["ratio"]: row["traced_share"] for row in result["best"]}
    # The ratio each worker ran with is the one asked: nothing traced at 0, every event at 100%.
    assert shares[0.0] == 0.0 and shares[1.0] == 1.0 and 0.0 <= shares[0.01] <= 0.1
    assert result["best"][0]["events_per_s_vs_0"] == 1.0
    assert_worker_0_runs_again(embedded_stack, before)  # with the stack's own settings
