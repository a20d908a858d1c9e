"""Replay SPECs and the paired statistics that decide win, regression or no clear difference."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from services.replay.compare import Delta, binary_delta, mcnemar_p, paired_bootstrap
from services.replay.spec import InvalidSpec, ReplaySpec, parse_spec


def test_a_bare_value_is_the_student_and_parts_name_the_rest(tmp_path: Path) -> None:
    thresholds = tmp_path / "t.json"
    thresholds.write_text('{"guardrail_max_categories": 2}')
    assert parse_spec("onnx:3") == ReplaySpec(student="onnx:3")
    spec = parse_spec(f"student=lexicon,cache=teach-1f2e,settings={thresholds}")
    assert (spec.student, spec.cache_run, spec.settings_file) == ("lexicon", "teach-1f2e", thresholds)
    assert spec.setting_overrides() == {"guardrail_max_categories": 2}
    assert parse_spec("served").served and parse_spec("student=none").label == "student=none,cache=none"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model=onnx:3", "unknown key 'model'"),
        ("student=gpt", "use lexicon, onnx:N, onnx:DIR, triton, triton:N, teacher or none"),
        ("lexicon,,cache=x", "an empty part"),
        ("cache=a:b", "cache='a:b'"),
        ("student=lexicon,student=none", "student is given twice"),
        ("settings=/no/such.json", "no such file"),
    ],
)
def test_a_bad_spec_names_the_option_and_the_part(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match="--baseline") as err:
        parse_spec(text, what="--baseline")
    assert message in str(err.value)


def test_identical_answers_have_a_zero_interval_and_no_verdict() -> None:
    delta, low, high = paired_bootstrap([1, 0, 1, 1], [1, 0, 1, 1])
    assert (delta, low, high) == (0.0, 0.0, 0.0)
    assert binary_delta("x", [True, False], [True, False], higher_is_better=True).verdict == "no clear difference"


def test_a_clear_difference_excludes_zero_and_is_called_by_its_direction() -> None:
    candidate, baseline = [True] * 90 + [False] * 10, [True] * 40 + [False] * 60
    better = binary_delta("has_category", candidate, baseline, higher_is_better=True)
    assert better.low > 0 and better.verdict == "win" and better.p_value is not None and better.p_value < 1e-6
    worse = binary_delta("degraded", candidate, baseline, higher_is_better=False)
    assert worse.verdict == "regression"
    assert paired_bootstrap(candidate, baseline, seed=3) == paired_bootstrap(candidate, baseline, seed=3)


def test_a_small_noisy_difference_is_no_clear_difference() -> None:
    candidate = [True, False, True, False, True, True, False, False, True, False]
    baseline = [True, False, False, False, True, True, False, True, True, False]
    d = binary_delta("x", candidate, baseline, higher_is_better=True)
    assert d.low < 0 < d.high and d.verdict == "no clear difference"


def test_mcnemar_counts_only_the_events_the_two_disagree_on() -> None:
    assert mcnemar_p([True, True, False], [True, True, False]) == 1.0
    assert mcnemar_p([True] * 12, [False] * 12) == pytest.approx(2 * 0.5**12)


def test_unpaired_figures_are_refused() -> None:
    with pytest.raises(ValueError, match="same events"):
        paired_bootstrap([1, 2], [1])


def test_a_delta_reports_its_verdict() -> None:
    d = Delta("latency", 1.0, 2.0, -1.0, -1.5, -0.5, None, higher_is_better=False)
    assert d.as_dict()["verdict"] == "win"


def row(position: int, session: str, query: str, rewrites: tuple[str, ...] = ()) -> dict[str, object]:
    understanding = {"rewrites": [{"type": "substitute", "query": q, "score": 1.0} for q in rewrites]}
    return {
        "position": position,
        "session_id": session,
        "normalized_query": query,
        "understanding": orjson.dumps(understanding).decode(),
    }


def test_a_rewrite_anticipates_what_the_session_searched_next() -> None:
    from services.replay.compare import anticipated, later_searches

    rows = [
        row(0, "s1", "oat milk", rewrites=("Almond Milk",)),
        row(1, "s2", "bread"),
        row(2, "s1", "almond milk"),
        row(3, "s1", "oat milk"),
    ]
    later = later_searches(rows)
    assert later == {0: frozenset({"almond milk"}), 2: frozenset({"oat milk"})}  # s2 searched once; 3 is last
    assert anticipated(rows[0], later[0]) and not anticipated(rows[2], later[2])
