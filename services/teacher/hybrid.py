"""The hybrid teacher: the LLM proposes, the catalog teacher stands behind it, a rule chosen on labelled data decides.

``qu teacher run --backend hybrid`` asks both teachers every task of every query. Both answers go
through the same validation and guardrails; the curriculum keeps both, the one published and the
other (``alternative_json``), with why that one was chosen (``choice``). What is published follows a
:class:`HybridPolicy`, one :class:`Preference` per task:

* ``catalog``: the catalog teacher's answer; the LLM's is recorded only;
* ``llm_first``: the LLM's answer where it is valid and kept something after the guardrails, else the
  catalog's — an invalid or dropped LLM answer never costs what the catalog teacher knew;
* ``catalog_first``: the catalog's where it kept something, else the LLM's (the LLM fills gaps).

The policy is not a guess: ``qu teacher choose`` runs both teachers on labelled queries, scores each
preference per task (:func:`choose_policy`) and saves the winner with its figures
(``STATE_DIR/teacher/hybrid_policy.json``). Without one, every task is ``catalog``: never worse than the
catalog teacher, by construction.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import orjson

from services.atomic_files import write_bytes_atomic
from services.domain import Understanding
from services.errors import InputError
from services.teacher.context_types import REWRITE_TASKS, TaskName

LLM, CATALOG = "llm", "catalog"
POLICY_FILE = Path("teacher") / "hybrid_policy.json"
# A rewrite preference may raise coverage only at no loss of precision; with no catalog precision to keep
# (it wrote nothing that could be judged), the source system's bar.
REWRITE_PRECISION_FLOOR = 0.90


class Preference(StrEnum):
    CATALOG = "catalog"
    LLM_FIRST = "llm_first"
    CATALOG_FIRST = "catalog_first"


# Ties go to the first: the catalog teacher is the known quantity.
PREFERENCE_ORDER = (Preference.CATALOG, Preference.CATALOG_FIRST, Preference.LLM_FIRST)


@dataclass(frozen=True, slots=True)
class SourceAnswer:
    """One teacher's answer of one task, after validation and guardrails: what the choice looks at."""

    status: str  # the pipeline's outcome status: answered | invalid | unavailable | rejected | failed
    kept: bool  # answered, and the guardrails left at least one item of this task


def choose(preference: Preference, llm: SourceAnswer, catalog: SourceAnswer) -> tuple[str, str]:
    """Which source's answer is published for one task, and why (recorded in the curriculum's ``choice``)."""
    if preference is Preference.CATALOG:
        return CATALOG, "the policy publishes the catalog teacher's answer"
    first, second = (LLM, CATALOG) if preference is Preference.LLM_FIRST else (CATALOG, LLM)
    answers = {LLM: llm, CATALOG: catalog}
    if answers[first].kept:
        return first, f"{preference.value}: the {_name(first)}'s answer kept something"
    if answers[second].kept:
        if answers[first].status != "answered":
            return second, f"{preference.value}: the {_name(first)}'s answer was {answers[first].status}"
        return second, f"{preference.value}: the guardrails dropped all of the {_name(first)}'s answer"
    return first, f"{preference.value}: neither answer kept anything"


def _name(source: str) -> str:
    return "LLM" if source == LLM else "catalog teacher"


def kept_items(task: TaskName, understanding: Understanding) -> bool:
    """Whether a guardrailed understanding holds anything of ``task``."""
    if task is TaskName.SRL:
        return bool(understanding.tags)
    if task is TaskName.CATEGORY:
        return bool(understanding.categories)
    kind = REWRITE_TASKS[task]
    return any(r.type is kind for r in understanding.rewrites)


@dataclass(frozen=True, slots=True)
class HybridPolicy:
    per_task: Mapping[TaskName, Preference]
    chosen_on: Mapping[str, Any] = field(default_factory=dict)  # labels, queries, endpoint, model, when
    scores: Mapping[str, Any] = field(default_factory=dict)  # per task and preference, the figures compared

    @classmethod
    def catalog_only(cls) -> HybridPolicy:
        return cls({task: Preference.CATALOG for task in TaskName})

    def preference(self, task: TaskName) -> Preference:
        return self.per_task.get(task, Preference.CATALOG)

    @property
    def chosen(self) -> bool:
        return bool(self.chosen_on)

    def fingerprint(self) -> dict[str, str]:
        """What of the policy shapes a run's published answers (its run id)."""
        return {task.value: self.preference(task).value for task in TaskName}

    def to_json(self) -> dict[str, Any]:
        return {
            "per_task": self.fingerprint(),
            "chosen_on": dict(self.chosen_on),
            "scores": dict(self.scores),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, where: str) -> HybridPolicy:
        raw = data.get("per_task")
        if not isinstance(raw, dict):
            raise InputError(where, "no per_task object: not a hybrid policy written by `qu teacher choose`")
        per_task: dict[TaskName, Preference] = {}
        for task_name, value in raw.items():
            try:
                per_task[TaskName(task_name)] = Preference(value)
            except ValueError:
                raise InputError(
                    where,
                    f"per_task.{task_name} = {value!r}: tasks are {', '.join(t.value for t in TaskName)}, "
                    f"preferences {', '.join(p.value for p in Preference)}",
                ) from None
        return cls(per_task, dict(data.get("chosen_on") or {}), dict(data.get("scores") or {}))

    @classmethod
    def load(cls, path: Path) -> HybridPolicy:
        """The policy saved at ``path``; the catalog-only default when there is none."""
        if not path.is_file():
            return cls.catalog_only()
        try:
            data = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise InputError(str(path), f"not JSON ({exc}); remove it or run `qu teacher choose` again") from None
        if not isinstance(data, dict):
            raise InputError(str(path), "not a JSON object")
        return cls.from_json(data, where=str(path))

    def save(self, path: Path) -> None:
        write_bytes_atomic(path, orjson.dumps(self.to_json(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def choose_preference(task: TaskName, figures: Mapping[Preference, Mapping[str, float | None]]) -> Preference:
    """The preference the labelled figures favour for ``task``.

    SRL: the highest micro F1; category: the highest top-1 accuracy; a rewrite type: the highest coverage
    among the preferences whose precision is at least the catalog-only preference's (or
    REWRITE_PRECISION_FLOOR when the catalog's is not measured). Ties go to the catalog
    (PREFERENCE_ORDER); a preference with no figure is never chosen.
    """
    if task is TaskName.SRL or task is TaskName.CATEGORY:
        metric = "f1" if task is TaskName.SRL else "top1"
        best = Preference.CATALOG
        for preference in PREFERENCE_ORDER:
            value = figures.get(preference, {}).get(metric)
            if value is not None and value > (figures.get(best, {}).get(metric) or 0.0):
                best = preference
        return best
    catalog_precision = figures.get(Preference.CATALOG, {}).get("precision")
    floor = catalog_precision if catalog_precision is not None else REWRITE_PRECISION_FLOOR
    best = Preference.CATALOG
    best_coverage = figures.get(Preference.CATALOG, {}).get("coverage") or 0.0
    for preference in PREFERENCE_ORDER[1:]:
        precision = figures.get(preference, {}).get("precision")
        coverage = figures.get(preference, {}).get("coverage") or 0.0
        if precision is not None and precision >= floor and coverage > best_coverage:
            best, best_coverage = preference, coverage
    return best
