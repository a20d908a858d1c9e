"""The hybrid teacher's rule: which answer is published per task, how a policy is chosen, saved and loaded."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import orjson
import pytest

from services.domain import CategoryScore, Rewrite, RewriteType, Role, Tag, Understanding
from services.errors import InputError
from services.teacher.context_types import REWRITE_TASKS, TaskName
from services.teacher.hybrid import (
    CATALOG,
    LLM,
    REWRITE_PRECISION_FLOOR,
    HybridPolicy,
    Preference,
    SourceAnswer,
    choose,
    choose_preference,
    kept_items,
)

KEPT = SourceAnswer("answered", kept=True)
DROPPED = SourceAnswer("answered", kept=False)  # answered, but the guardrails dropped everything
INVALID = SourceAnswer("invalid", kept=False)
UNAVAILABLE = SourceAnswer("unavailable", kept=False)

Figures = Mapping[Preference, Mapping[str, float | None]]


# --- choose ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("llm", [KEPT, DROPPED, INVALID, UNAVAILABLE])
@pytest.mark.parametrize("catalog", [KEPT, DROPPED, INVALID, UNAVAILABLE])
def test_catalog_preference_always_publishes_the_catalog(llm: SourceAnswer, catalog: SourceAnswer) -> None:
    source, why = choose(Preference.CATALOG, llm, catalog)
    assert source == CATALOG
    assert "catalog" in why


@pytest.mark.parametrize("catalog", [KEPT, DROPPED, INVALID])
def test_llm_first_publishes_the_llm_when_it_kept_something(catalog: SourceAnswer) -> None:
    source, why = choose(Preference.LLM_FIRST, KEPT, catalog)
    assert source == LLM
    assert why.startswith("llm_first:")
    assert "LLM" in why and "kept something" in why


@pytest.mark.parametrize("status", ["invalid", "unavailable", "rejected", "failed"])
def test_llm_first_falls_back_to_the_catalog_when_the_llm_did_not_answer(status: str) -> None:
    source, why = choose(Preference.LLM_FIRST, SourceAnswer(status, kept=False), KEPT)
    assert source == CATALOG
    assert why.startswith("llm_first:")
    assert status in why
    assert "LLM" in why


def test_llm_first_falls_back_to_the_catalog_when_the_guardrails_dropped_the_llm() -> None:
    source, why = choose(Preference.LLM_FIRST, DROPPED, KEPT)
    assert source == CATALOG
    assert "dropped" in why
    assert "LLM" in why


@pytest.mark.parametrize("llm", [KEPT, DROPPED, INVALID])
def test_catalog_first_publishes_the_catalog_when_it_kept_something(llm: SourceAnswer) -> None:
    source, why = choose(Preference.CATALOG_FIRST, llm, KEPT)
    assert source == CATALOG
    assert why.startswith("catalog_first:")
    assert "kept something" in why


@pytest.mark.parametrize("status", ["invalid", "unavailable"])
def test_catalog_first_falls_back_to_the_llm_when_the_catalog_did_not_answer(status: str) -> None:
    source, why = choose(Preference.CATALOG_FIRST, KEPT, SourceAnswer(status, kept=False))
    assert source == LLM
    assert status in why
    assert "catalog teacher" in why


def test_catalog_first_falls_back_to_the_llm_when_the_guardrails_dropped_the_catalog() -> None:
    source, why = choose(Preference.CATALOG_FIRST, KEPT, DROPPED)
    assert source == LLM
    assert "dropped" in why
    assert "catalog teacher" in why


@pytest.mark.parametrize(("preference", "first"), [(Preference.LLM_FIRST, LLM), (Preference.CATALOG_FIRST, CATALOG)])
@pytest.mark.parametrize("llm", [DROPPED, INVALID, UNAVAILABLE])
@pytest.mark.parametrize("catalog", [DROPPED, INVALID, UNAVAILABLE])
def test_neither_kept_publishes_the_first_source(
    preference: Preference, first: str, llm: SourceAnswer, catalog: SourceAnswer
) -> None:
    source, why = choose(preference, llm, catalog)
    assert source == first
    assert "neither" in why
    assert why.startswith(f"{preference.value}:")


# --- kept_items -----------------------------------------------------------------------------------------------

TAG = Tag(Role.PRODUCT, 0, 5, "shoes", "shoes")
CATEGORY = CategoryScore(("Apparel", "Shoes"), 0.9)


def test_kept_items_srl_counts_tags_only() -> None:
    assert kept_items(TaskName.SRL, Understanding([TAG], [], [], "v"))
    assert not kept_items(TaskName.SRL, Understanding([], [CATEGORY], [Rewrite(RewriteType.SYNONYM, "x")], "v"))
    assert not kept_items(TaskName.SRL, Understanding())


def test_kept_items_category_counts_categories_only() -> None:
    assert kept_items(TaskName.CATEGORY, Understanding([], [CATEGORY], [], "v"))
    assert not kept_items(TaskName.CATEGORY, Understanding([TAG], [], [Rewrite(RewriteType.BROADER, "x")], "v"))
    assert not kept_items(TaskName.CATEGORY, Understanding())


@pytest.mark.parametrize("task", list(REWRITE_TASKS))
def test_kept_items_rewrite_task_counts_only_its_own_rewrite_type(task: TaskName) -> None:
    own = REWRITE_TASKS[task]
    others = [kind for kind in RewriteType if kind is not own]
    assert kept_items(task, Understanding([], [], [Rewrite(own, "x")], "v"))
    assert kept_items(task, Understanding([], [], [Rewrite(others[0], "y"), Rewrite(own, "x")], "v"))
    assert not kept_items(task, Understanding([TAG], [CATEGORY], [Rewrite(kind, "y") for kind in others], "v"))
    assert not kept_items(task, Understanding())


def test_rewrite_tasks_cover_every_task_but_srl_and_category() -> None:
    # kept_items looks every other task up in REWRITE_TASKS: a new task without an entry would be a KeyError.
    assert set(REWRITE_TASKS) | {TaskName.SRL, TaskName.CATEGORY} == set(TaskName)


# --- choose_preference ----------------------------------------------------------------------------------------


def test_srl_picks_the_highest_f1() -> None:
    figures: Figures = {
        Preference.CATALOG: {"f1": 0.6},
        Preference.CATALOG_FIRST: {"f1": 0.7},
        Preference.LLM_FIRST: {"f1": 0.8},
    }
    assert choose_preference(TaskName.SRL, figures) is Preference.LLM_FIRST
    figures = {
        Preference.CATALOG: {"f1": 0.6},
        Preference.CATALOG_FIRST: {"f1": 0.75},
        Preference.LLM_FIRST: {"f1": 0.7},
    }
    assert choose_preference(TaskName.SRL, figures) is Preference.CATALOG_FIRST


def test_srl_reads_f1_not_top1() -> None:
    figures: Figures = {
        Preference.CATALOG: {"f1": 0.6, "top1": 0.1},
        Preference.LLM_FIRST: {"f1": 0.5, "top1": 0.9},
    }
    assert choose_preference(TaskName.SRL, figures) is Preference.CATALOG


def test_category_picks_the_highest_top1() -> None:
    figures: Figures = {
        Preference.CATALOG: {"top1": 0.5, "f1": 0.9},
        Preference.CATALOG_FIRST: {"top1": 0.55, "f1": 0.1},
        Preference.LLM_FIRST: {"top1": 0.52},
    }
    assert choose_preference(TaskName.CATEGORY, figures) is Preference.CATALOG_FIRST


@pytest.mark.parametrize(("task", "metric"), [(TaskName.SRL, "f1"), (TaskName.CATEGORY, "top1")])
def test_ties_go_to_the_catalog(task: TaskName, metric: str) -> None:
    figures: Figures = {
        Preference.CATALOG: {metric: 0.7},
        Preference.CATALOG_FIRST: {metric: 0.7},
        Preference.LLM_FIRST: {metric: 0.7},
    }
    assert choose_preference(task, figures) is Preference.CATALOG
    figures = {
        Preference.CATALOG: {metric: 0.6},
        Preference.CATALOG_FIRST: {metric: 0.7},
        Preference.LLM_FIRST: {metric: 0.7},
    }
    assert choose_preference(task, figures) is Preference.CATALOG_FIRST


@pytest.mark.parametrize(("task", "metric"), [(TaskName.SRL, "f1"), (TaskName.CATEGORY, "top1")])
def test_a_preference_without_its_figure_is_never_chosen(task: TaskName, metric: str) -> None:
    figures: Figures = {
        Preference.CATALOG: {metric: 0.2},
        Preference.CATALOG_FIRST: {metric: None},
        Preference.LLM_FIRST: {},
    }
    assert choose_preference(task, figures) is Preference.CATALOG
    assert choose_preference(task, {}) is Preference.CATALOG


@pytest.mark.parametrize("task", list(REWRITE_TASKS))
def test_rewrite_takes_higher_coverage_at_no_loss_of_precision(task: TaskName) -> None:
    figures: Figures = {
        Preference.CATALOG: {"coverage": 0.4, "precision": 0.95},
        Preference.CATALOG_FIRST: {"coverage": 0.6, "precision": 0.95},
        Preference.LLM_FIRST: {"coverage": 0.9, "precision": 0.94},
    }
    assert choose_preference(task, figures) is Preference.CATALOG_FIRST
    figures = {
        Preference.CATALOG: {"coverage": 0.4, "precision": 0.95},
        Preference.CATALOG_FIRST: {"coverage": 0.6, "precision": 0.96},
        Preference.LLM_FIRST: {"coverage": 0.9, "precision": 0.97},
    }
    assert choose_preference(task, figures) is Preference.LLM_FIRST


def test_rewrite_refuses_a_loss_of_precision_however_much_coverage() -> None:
    figures: Figures = {
        Preference.CATALOG: {"coverage": 0.1, "precision": 0.99},
        Preference.CATALOG_FIRST: {"coverage": 0.8, "precision": 0.98},
        Preference.LLM_FIRST: {"coverage": 1.0, "precision": 0.9},
    }
    assert choose_preference(TaskName.SYNONYMS, figures) is Preference.CATALOG


def test_rewrite_equal_coverage_stays_with_the_catalog() -> None:
    figures: Figures = {
        Preference.CATALOG: {"coverage": 0.5, "precision": 0.9},
        Preference.CATALOG_FIRST: {"coverage": 0.5, "precision": 1.0},
        Preference.LLM_FIRST: {"coverage": 0.5, "precision": 1.0},
    }
    assert choose_preference(TaskName.BROADER, figures) is Preference.CATALOG


@pytest.mark.parametrize(("precision", "expected"), [(0.85, Preference.CATALOG), (0.92, Preference.LLM_FIRST)])
def test_rewrite_floor_without_catalog_precision(precision: float, expected: Preference) -> None:
    assert REWRITE_PRECISION_FLOOR == 0.90
    figures: Figures = {
        Preference.CATALOG: {"coverage": 0.0, "precision": None},
        Preference.LLM_FIRST: {"coverage": 0.9, "precision": precision},
    }
    assert choose_preference(TaskName.SUBSTITUTES, figures) is expected


def test_rewrite_floor_is_inclusive() -> None:
    figures: Figures = {
        Preference.CATALOG: {"coverage": 0.0, "precision": None},
        Preference.LLM_FIRST: {"coverage": 0.9, "precision": REWRITE_PRECISION_FLOOR},
    }
    assert choose_preference(TaskName.SUBSTITUTES, figures) is Preference.LLM_FIRST


def test_rewrite_preference_with_no_precision_is_never_chosen() -> None:
    figures: Figures = {
        Preference.CATALOG: {"coverage": 0.1, "precision": None},
        Preference.CATALOG_FIRST: {"coverage": 0.5, "precision": None},
        Preference.LLM_FIRST: {"coverage": 1.0, "precision": None},
    }
    assert choose_preference(TaskName.SYNONYMS, figures) is Preference.CATALOG
    figures = {
        Preference.CATALOG: {"coverage": 0.1, "precision": 0.8},
        Preference.CATALOG_FIRST: {"coverage": 0.5},
        Preference.LLM_FIRST: {"coverage": 1.0, "precision": None},
    }
    assert choose_preference(TaskName.SYNONYMS, figures) is Preference.CATALOG


# --- HybridPolicy ---------------------------------------------------------------------------------------------


def test_catalog_only_maps_every_task_to_catalog() -> None:
    policy = HybridPolicy.catalog_only()
    assert dict(policy.per_task) == {task: Preference.CATALOG for task in TaskName}
    assert all(policy.preference(task) is Preference.CATALOG for task in TaskName)
    assert policy.chosen is False
    assert policy.fingerprint() == {task.value: "catalog" for task in TaskName}


def test_preference_of_an_unlisted_task_is_catalog() -> None:
    policy = HybridPolicy({TaskName.SRL: Preference.LLM_FIRST}, {"labels": "x"})
    assert policy.preference(TaskName.SRL) is Preference.LLM_FIRST
    assert policy.preference(TaskName.BROADER) is Preference.CATALOG
    assert policy.chosen is True


def _chosen_policy() -> HybridPolicy:
    per_task = {task: Preference.CATALOG for task in TaskName}
    per_task[TaskName.SRL] = Preference.LLM_FIRST
    per_task[TaskName.SYNONYMS] = Preference.CATALOG_FIRST
    return HybridPolicy(
        per_task,
        chosen_on={"labels": "gold.csv", "queries": 120, "model": "smollm2-135m", "when": "2024-01-01T00:00:00Z"},
        scores={
            "srl": {"catalog": {"f1": 0.5}, "llm_first": {"f1": 0.6}},
            "synonyms": {"catalog": {"precision": None}},
        },
    )


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    policy = _chosen_policy()
    path = tmp_path / "teacher" / "hybrid_policy.json"
    policy.save(path)
    loaded = HybridPolicy.load(path)
    assert dict(loaded.per_task) == dict(policy.per_task)
    assert all(isinstance(task, TaskName) for task in loaded.per_task)
    assert all(isinstance(pref, Preference) for pref in loaded.per_task.values())
    assert dict(loaded.chosen_on) == dict(policy.chosen_on)
    assert dict(loaded.scores) == dict(policy.scores)
    assert loaded.chosen is True
    assert loaded.fingerprint() == policy.fingerprint()


def test_save_writes_atomically_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "hybrid_policy.json"
    HybridPolicy.catalog_only().save(path)
    _chosen_policy().save(path)  # over an existing file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hybrid_policy.json"]
    data = orjson.loads(path.read_bytes())
    assert data["per_task"]["srl"] == "llm_first"
    assert set(data) == {"per_task", "chosen_on", "scores"}


def test_save_that_fails_keeps_the_old_file_and_removes_its_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "hybrid_policy.json"
    HybridPolicy.catalog_only().save(path)
    before = path.read_bytes()

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk on fire"):
        _chosen_policy().save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hybrid_policy.json"]


def test_load_of_a_missing_file_is_catalog_only(tmp_path: Path) -> None:
    policy = HybridPolicy.load(tmp_path / "nowhere" / "hybrid_policy.json")
    assert dict(policy.per_task) == dict(HybridPolicy.catalog_only().per_task)
    assert policy.chosen is False


def test_load_of_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "hybrid_policy.json"
    path.write_text("{not json")
    with pytest.raises(InputError) as caught:
        HybridPolicy.load(path)
    message = str(caught.value)
    assert str(path) in message
    assert "not JSON" in message


def test_load_of_a_json_list(tmp_path: Path) -> None:
    path = tmp_path / "hybrid_policy.json"
    path.write_bytes(orjson.dumps([{"per_task": {}}]))
    with pytest.raises(InputError) as caught:
        HybridPolicy.load(path)
    message = str(caught.value)
    assert str(path) in message
    assert "not a JSON object" in message


def test_load_without_per_task(tmp_path: Path) -> None:
    path = tmp_path / "hybrid_policy.json"
    path.write_bytes(orjson.dumps({"chosen_on": {}}))
    with pytest.raises(InputError) as caught:
        HybridPolicy.load(path)
    assert str(path) in str(caught.value)
    assert "per_task" in str(caught.value)


def test_load_with_an_unknown_task(tmp_path: Path) -> None:
    path = tmp_path / "hybrid_policy.json"
    path.write_bytes(orjson.dumps({"per_task": {"srl": "catalog", "spelling": "llm_first"}}))
    with pytest.raises(InputError) as caught:
        HybridPolicy.load(path)
    message = str(caught.value)
    assert str(path) in message
    assert "per_task.spelling" in message
    assert "'llm_first'" in message


def test_load_with_an_unknown_preference(tmp_path: Path) -> None:
    path = tmp_path / "hybrid_policy.json"
    path.write_bytes(orjson.dumps({"per_task": {"srl": "llm_only"}}))
    with pytest.raises(InputError) as caught:
        HybridPolicy.load(path)
    message = str(caught.value)
    assert str(path) in message
    assert "per_task.srl" in message
    assert "'llm_only'" in message
    assert "catalog_first" in message  # names the preferences there are
