"""The teacher as a predictor: what ``qu teacher run`` would put into the cache for each query.

The same pipeline as the run (context from the catalog and conversion history, one prompt per
task, the teacher's answers, the guardrails with embeddings), without the curriculum or the
publication. Its answers are already guardrailed, so the evaluation wraps it with ``guarded=False``.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.catalog.artifacts import Catalog
from services.domain import Understanding
from services.embeddings import SentenceEmbedder
from services.settings import Settings
from services.teacher.backend import TeacherBackend
from services.teacher.context import ExamplePool
from services.teacher.context_types import TaskName
from services.teacher.hybrid import HybridPolicy
from services.teacher.pipeline import TeacherPipeline
from services.teacher.runtime import build_pipeline, load_conversions
from services.teacher.selection import Origin, SelectedQuery

EVAL_RUN = "eval"  # records made here only feed the few-shot pool; they are never written


class TeacherAnswer:
    """``await answer(normalized_queries)``: the teacher's guardrailed understanding of each."""

    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        embedder: SentenceEmbedder,
        backend: TeacherBackend,
        *,
        hybrid: HybridPolicy | None = None,
    ) -> None:
        self.backend = backend
        self.embedder = embedder
        self.pipeline: TeacherPipeline = build_pipeline(
            settings, catalog, load_conversions(settings), embedder, backend, hybrid=hybrid
        )
        # Few-shot examples come from the validated answers of earlier batches, as in a run.
        self.pool = ExamplePool(embedder)

    async def __call__(self, queries: Sequence[str]) -> list[Understanding]:
        taught = await self.pipeline.teach([SelectedQuery(q, Origin.EXPLICIT, 0) for q in queries], self.pool)
        for record in (r for t in taught for r in self.pipeline.records(t, EVAL_RUN)):
            if record.validated:  # the run's rule (services/teacher/run.py)
                self.pool.add(record.query, TaskName(record.task), record.teacher_answer, record.reasoning)
        return [t.understanding for t in taught]
