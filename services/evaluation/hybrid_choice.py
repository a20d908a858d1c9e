"""Choosing the hybrid teacher's policy on labelled queries (``qu teacher choose``).

Both teachers answer each labelled query once (the hybrid pipeline keeps each teacher's guardrailed
answers); every way of combining them is then scored on the same answers, per task:

* ``catalog``, ``llm_first``, ``catalog_first``: the policy's preferences (services/teacher/hybrid.py);
* ``llm``: the LLM's answers alone, with no teacher behind it — reported, never chosen.

SRL by micro F1 on the gold spans, the category by top-1 accuracy on the gold path, each rewrite type by
coverage and precision as ``qu eval report`` defines them (services/evaluation/rewrites.py). The
preference of each task is :func:`services.teacher.hybrid.choose_preference` of those figures.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from services.catalog.retrieval import CatalogRetriever
from services.conversions.history import QueryConversions
from services.domain import Understanding
from services.evaluation.registry import PredictorEnv
from services.evaluation.rewrites import ConvertedCategories, RewriteScores
from services.evaluation.run import predict_all, score_categories, score_spans_of
from services.gold.model import GoldQuery
from services.teacher.backend import TeacherBackend
from services.teacher.context import ExamplePool
from services.teacher.context_types import REWRITE_TASKS, TaskName
from services.teacher.hybrid import (
    LLM,
    HybridPolicy,
    Preference,
    choose_preference,
)
from services.teacher.pipeline import TaughtQuery, TeacherPipeline, choose_source, merged_understanding
from services.teacher.runtime import build_pipeline, load_conversions
from services.teacher.selection import Origin, SelectedQuery

VARIANTS = ("catalog", "llm", "llm_first", "catalog_first")
EVAL_RUN = "choose"


class HybridAnswers:
    """Each labelled query taught once by both teachers; ``variant(name)`` answers as that combination would."""

    def __init__(self, env: PredictorEnv, llm: TeacherBackend) -> None:
        self.embedder = env.embedder
        self.pipeline: TeacherPipeline = build_pipeline(
            env.settings,
            env.catalog,
            load_conversions(env.settings),
            env.embedder,
            llm,
            hybrid=HybridPolicy.catalog_only(),
        )
        self.pool = ExamplePool(env.embedder)
        self.taught: dict[str, TaughtQuery] = {}

    async def teach(self, queries: Sequence[str]) -> None:
        new = [q for q in dict.fromkeys(queries) if q not in self.taught]
        if not new:
            return
        taught = await self.pipeline.teach([SelectedQuery(q, Origin.EXPLICIT, 0) for q in new], self.pool)
        for t in taught:
            self.taught[t.query] = t
            for record in self.pipeline.records(t, EVAL_RUN):
                if record.validated:  # as a run grows its few-shot pool
                    self.pool.add(record.query, TaskName(record.task), record.teacher_answer, record.reasoning)

    def variant(self, name: str) -> Callable[[Sequence[str]], Any]:
        async def answer(queries: Sequence[str]) -> list[Understanding]:
            await self.teach(queries)
            return [combined(self.taught[q], name) for q in queries]

        return answer


def combined(taught: TaughtQuery, variant: str) -> Understanding:
    """The understanding ``variant`` publishes for one query, from both teachers' guardrailed answers."""
    views = taught.sources
    if variant == LLM:
        return views[LLM].understanding
    preference = Preference(variant)
    chosen: dict[TaskName, Understanding] = {}
    for task in taught.outcomes:
        source, _why = choose_source(preference, task, views)
        chosen[task] = views[source].understanding
    return merged_understanding(chosen)


def task_figures(
    gold: Sequence[GoldQuery],
    answers: Sequence[Understanding],
    retriever: CatalogRetriever,
    history: ConvertedCategories,
) -> dict[str, dict[str, float | None]]:
    """Per task, the figures the choice compares (and the docs quote)."""
    spans = score_spans_of(gold, answers).to_json()
    categories = score_categories(gold, answers).to_json()
    rewrites = RewriteScores()
    rewrites.add_all((g.query for g in gold), answers, retriever, history)
    per_type = rewrites.to_json()["per_type"]
    out: dict[str, dict[str, float | None]] = {
        TaskName.SRL.value: {"f1": spans["f1"], "precision": spans["precision"], "recall": spans["recall"]},
        TaskName.CATEGORY.value: {"top1": categories["top1"], "top3": categories["top3"]},
    }
    for task, kind in REWRITE_TASKS.items():
        row = per_type[kind.value]
        out[task.value] = {"coverage": row["coverage"], "precision": row["precision"]}
    return out


async def choose_policy(
    env: PredictorEnv,
    llm: TeacherBackend,
    gold: Sequence[GoldQuery],
    history: ConvertedCategories | None,
    *,
    chosen_on: dict[str, Any],
    batch_size: int = 8,
    progress: Callable[[int], None] | None = None,
) -> HybridPolicy:
    """Teach ``gold``'s queries with both teachers, score every variant per task, and choose per task."""
    answers = HybridAnswers(env, llm)
    retriever = CatalogRetriever(env.catalog.products)
    judged: ConvertedCategories = history if history is not None else _NoHistory()
    scores: dict[str, dict[str, dict[str, float | None]]] = {}
    for i, name in enumerate(VARIANTS):
        predictor = env.wrap(f"teacher-{name}", answers.variant(name), guarded=False)
        predicted = await predict_all(
            predictor, [g.query for g in gold], batch_size=batch_size, progress=progress if i == 0 else None
        )
        scores[name] = task_figures(gold, predicted, retriever, judged)
    per_task = {
        task: choose_preference(task, {Preference(v): scores[v][task.value] for v in VARIANTS if v != LLM})
        for task in TaskName
    }
    by_task = {task.value: {v: scores[v][task.value] for v in VARIANTS} for task in TaskName}
    when = {"queries": len(gold), "at": datetime.now(UTC).isoformat(timespec="seconds")}
    return HybridPolicy(per_task, {**chosen_on, **when}, by_task)


class _NoHistory:
    def get(self, query: str) -> QueryConversions | None:
        return None
