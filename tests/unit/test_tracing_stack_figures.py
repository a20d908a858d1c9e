"""The through-the-stack tracing comparison's figures: the best complete round of each ratio, and none from a round
that left events unanswered."""

from __future__ import annotations

from services.bench.tracing_stack import RatioRound, _figures


def rounds(ratio: float, *figures: tuple[int, float, float]) -> list[RatioRound]:
    return [
        RatioRound(ratio, i + 1, 100, answered, per_s, cpu, round(100 * ratio))
        for i, (answered, per_s, cpu) in enumerate(figures)
    ]


def test_the_best_complete_round_of_each_ratio_is_compared_with_sampling_0() -> None:
    measured = [
        *rounds(0.0, (100, 2000.0, 300.0), (100, 2500.0, 320.0)),
        *rounds(0.01, (100, 2400.0, 330.0), (60, 9999.0, 1.0)),  # the second round left 40 events unanswered
        *rounds(1.0, (100, 1000.0, 700.0), (100, 900.0, 690.0)),
    ]
    result = _figures(measured, events=100, hit_ratio=0.98, rounds=2)
    best = {row["ratio"]: row for row in result["best"]}
    assert result["complete"] is True
    assert (best[0.0]["events_per_s"], best[0.0]["worker_cpu_us_per_event"]) == (2500.0, 300.0)
    assert (best[0.01]["events_per_s"], best[0.01]["complete_rounds"]) == (2400.0, 1)
    assert best[0.01]["events_per_s_vs_0"] == 0.96 and best[1.0]["worker_cpu_vs_0"] == 2.3
    assert best[1.0]["traced_share"] == 1.0 and best[0.0]["traced_share"] == 0.0


def test_a_ratio_with_no_complete_round_has_no_figures_and_the_run_is_incomplete() -> None:
    measured = [
        *rounds(0.0, (100, 2000.0, 300.0)),
        *rounds(0.01, (100, 1900.0, 310.0)),
        *rounds(1.0, (50, 500.0, 700.0)),
    ]
    result = _figures(measured, events=100, hit_ratio=0.98, rounds=1)
    worst = result["best"][2]
    assert result["complete"] is False
    assert worst["complete_rounds"] == 0 and worst["events_per_s"] is None and worst["events_per_s_vs_0"] is None
