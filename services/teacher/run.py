"""``qu teacher run`` as plain code: teach the selected queries in chunks, append the curriculum, publish the head set.

The run id is a hash of everything that shapes its answers (:func:`run_fingerprint`), so:

* the same inputs map to the same run: an interrupted run resumes where its last whole curriculum
  part ended, and a finished one is not taught again (it is re-published, which the cache takes
  as the same run);
* anything changed (a query, the teacher or its version, a template, the catalog build, the
  conversions, a guardrail threshold) starts a new run, and its head set replaces the old one
  whole when the refresher activates it.

The few-shot pool holds this run's validated answers, chunk by chunk in selection order (head
queries first), so a resumed run rebuilds exactly the pool the uninterrupted one had.
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Tracer

from services.domain import Understanding
from services.teacher.context import ExamplePool
from services.teacher.context_types import TaskName
from services.teacher.curriculum import CurriculumRecord, CurriculumRun
from services.teacher.hybrid import LLM
from services.teacher.pipeline import ANSWERED, TeacherPipeline, publishable, understanding_from_records
from services.teacher.selection import Origin, SelectedQuery
from services.telemetry import TRACER_NAME

RUN_FORMAT = 1  # bump when the run's own logic changes what it produces
HeadEntry = tuple[str, Understanding, str]  # (normalized query, understanding, teacher version)


class HeadTagPublisher(Protocol):
    def __call__(self, run_id: str, entries: Sequence[HeadEntry]) -> int: ...


@dataclass(slots=True)
class RunOptions:
    chunk_size: int = 64  # queries between updates of the few-shot pool (and at most this many per saved part)
    pool_limit: int = 5000  # validated answers kept per task for few-shot retrieval
    # Queries asked together inside a chunk, and how long answers may wait unsaved: a slow teacher (a CPU
    # LLM, ~15 s a query) saves as its answers come instead of once per chunk, so an interrupted run
    # loses at most this long's work. The pool still changes only between chunks, so timing never changes
    # what an uninterrupted run asks.
    batch_size: int | None = None  # None: the whole chunk at once
    save_every_s: float = 30.0
    extra_fingerprint: dict[str, Any] = field(default_factory=dict)  # conversions, thresholds, ...


def run_fingerprint(selected: Sequence[SelectedQuery], pipeline: TeacherPipeline, extra: dict[str, Any]) -> str:
    material = {
        "format": RUN_FORMAT,
        "queries": [[s.query, s.origin.value, s.count, list(s.followups)] for s in selected],
        "teacher": pipeline.teacher_version,
        "tasks": [t.value for t in pipeline.tasks],
        "templates": pipeline.template_hashes(),
        "catalog": pipeline.catalog_build,
        **extra,
    }
    digest = hashlib.sha256(orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()
    return f"teach-{digest[:16]}"


class TeacherRun:
    def __init__(
        self,
        pipeline: TeacherPipeline,
        curriculum: CurriculumRun,
        pool: ExamplePool,
        *,
        options: RunOptions | None = None,
        publisher: HeadTagPublisher | None = None,
        on_progress: Callable[[int, int], None] | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.curriculum = curriculum
        self.pool = pool
        self.options = options or RunOptions()
        self.publisher = publisher
        self.on_progress = on_progress
        self.tracer = tracer or trace.get_tracer(TRACER_NAME)
        self._pooled: Counter[TaskName] = Counter()

    @property
    def run_id(self) -> str:
        return self.curriculum.run_id

    async def run(self, selected: Sequence[SelectedQuery]) -> dict[str, Any]:
        """The whole run is one trace: a span per chunk, per backend call under it, and the publication."""
        with self.tracer.start_as_current_span(
            "teacher run", attributes={"qu.run_id": self.run_id, "qu.queries": len(selected)}
        ) as span:
            summary = await self._run(selected)
            usage = summary["teacher"]["usage"]
            span.set_attributes(
                {
                    "qu.teacher.backend": summary["teacher"]["backend"],
                    "qu.head_set": summary["head_set"],
                    "qu.published": summary["published"],
                    "qu.resumed": summary["resumed"],
                    "gen_ai.usage.input_tokens": usage["prompt_tokens"],
                    "gen_ai.usage.output_tokens": usage["completion_tokens"],
                    "qu.cost_usd": usage["cost_usd"],
                }
            )
            return summary

    async def _run(self, selected: Sequence[SelectedQuery]) -> dict[str, Any]:
        started = time.monotonic()
        existing = self.curriculum.records()
        # Only a valid answer is done, task by task: an unavailable or invalid one is asked again when the run
        # resumes (the query's other tasks are not); a query is done when all its tasks are.
        done: dict[str, set[TaskName]] = defaultdict(set)
        for record in existing:
            if record.status == ANSWERED:
                done[record.query].add(TaskName(record.task))
        self._fill_pool(existing)
        todo = [s for s in selected if self.pipeline.tasks_to_ask(s.query, done)]
        resumed = len(selected) - len(todo)
        if self.on_progress:
            self.on_progress(resumed, len(selected))
        step = self.options.batch_size or self.options.chunk_size
        for i in range(0, len(todo), self.options.chunk_size):
            chunk = todo[i : i + self.options.chunk_size]
            chunk_records: list[CurriculumRecord] = []
            unsaved: list[CurriculumRecord] = []
            saved_at = time.monotonic()
            with self.tracer.start_as_current_span(
                "teacher chunk", attributes={"qu.chunk.first": resumed + i, "qu.chunk.queries": len(chunk)}
            ):
                for j in range(0, len(chunk), step):
                    taught = await self.pipeline.teach(chunk[j : j + step], self.pool, done=done)
                    self.pipeline.metrics.taught(len(taught))
                    records = [r for t in taught for r in self.pipeline.records(t, self.run_id)]
                    chunk_records += records
                    unsaved += records
                    last = j + step >= len(chunk)
                    if last or time.monotonic() - saved_at >= self.options.save_every_s:
                        self.curriculum.append(unsaved)  # whole part or nothing: the resume point
                        unsaved, saved_at = [], time.monotonic()
                    if self.on_progress:
                        self.on_progress(resumed + i + min(j + step, len(chunk)), len(selected))
            self._fill_pool(chunk_records)

        records = self.curriculum.records()
        entries, rejected = self._head_set(selected, records)
        self.pipeline.metrics.unpublished(rejected)
        published = 0
        if self.publisher is not None:
            # The head-tag records carry this span's context: the refresher's activation links to it.
            with self.tracer.start_as_current_span(
                "publish qu.head-tags.v1",
                kind=SpanKind.PRODUCER,
                attributes={"messaging.system": "kafka", "messaging.destination.name": "qu.head-tags.v1"},
            ):
                published = self.publisher(self.run_id, entries)
        summary = self._summary(selected, records, entries, rejected, published, resumed, time.monotonic() - started)
        # A run that answered nothing never becomes the curriculum the student trains on.
        summary["current"] = any(r.valid_srl for r in records)
        self.curriculum.finish(summary, activate=summary["current"])
        return summary

    def _fill_pool(self, records: Sequence[CurriculumRecord]) -> None:
        """Validated answers (answered, nothing dropped by a guardrail) become few-shot examples."""
        for record in records:
            task = TaskName(record.task)
            if not record.validated:
                continue
            if self._pooled[task] >= self.options.pool_limit:
                continue
            self._pooled[task] += 1
            self.pool.add(record.query, task, record.teacher_answer, record.reasoning)

    def _head_set(
        self, selected: Sequence[SelectedQuery], records: Sequence[CurriculumRecord]
    ) -> tuple[list[HeadEntry], Counter[str]]:
        by_query: dict[str, list[CurriculumRecord]] = defaultdict(list)
        for record in records:
            by_query[record.query].append(record)
        entries: list[HeadEntry] = []
        rejected: Counter[str] = Counter()
        version = self.pipeline.teacher_version
        for s in selected:
            status, understanding = understanding_from_records(by_query.get(s.query, []), version)
            reason = publishable(status, understanding)
            if reason:
                rejected[reason] += 1
            else:
                entries.append((s.query, understanding, version))
        return entries, rejected

    def _summary(
        self,
        selected: Sequence[SelectedQuery],
        records: Sequence[CurriculumRecord],
        entries: Sequence[HeadEntry],
        rejected: Counter[str],
        published: int,
        resumed: int,
        elapsed_s: float,
    ) -> dict[str, Any]:
        origins = Counter(s.origin.value for s in selected)
        tasks: dict[str, Counter[str]] = defaultdict(Counter)
        dropped: Counter[str] = Counter()
        for record in records:
            tasks[record.task][record.status] += 1
            for decision in orjson.loads(record.guardrails_json or "[]"):
                if not decision.get("kept", False):
                    dropped[decision["check"]] += 1
        backend = self.pipeline.backend
        usage: dict[str, Any] = {
            "prompt_tokens": sum(r.prompt_tokens for r in records),
            "completion_tokens": sum(r.completion_tokens for r in records),
            "cost_usd": round(sum(r.cost_usd for r in records), 6),
        }
        session = getattr(backend, "summary", None)
        summary = {
            "run_id": self.run_id,
            "queries": len(selected),
            "origins": {o.value: origins.get(o.value, 0) for o in Origin},
            "taught_now": len(selected) - resumed,
            "resumed": resumed,
            "head_set": len(entries),
            "published": published,
            "rejected": dict(sorted(rejected.items())),
            "tasks": {task: dict(sorted(counts.items())) for task, counts in sorted(tasks.items())},
            "guardrails_dropped": dict(sorted(dropped.items())),
            # Tasks not asked any more in this run, and why (the endpoint, the field and the setting to change).
            "stopped_tasks": dict(self.pipeline.stopped),
            "teacher": {
                "backend": backend.name,
                "version": backend.version,
                "usage": usage,
                "this_session": session() if callable(session) else None,
            },
            "curriculum": {"path": str(self.curriculum.directory), "records": len(records)},
            "elapsed_s": round(elapsed_s, 2),
            "seconds_per_query": round(elapsed_s / taught, 3) if (taught := len(selected) - resumed) else None,
        }
        if self.pipeline.fallback is not None:
            summary["hybrid"] = self._hybrid_summary(records)
        return summary

    def _hybrid_summary(self, records: Sequence[CurriculumRecord]) -> dict[str, Any]:
        """Per task, whose answers were published, and how the LLM answered (published or not)."""
        published_from: dict[str, Counter[str]] = defaultdict(Counter)
        llm_status: dict[str, Counter[str]] = defaultdict(Counter)
        for record in records:
            if not record.choice:
                continue
            source = record.choice.split(":", 1)[0]
            published_from[record.task][source] += 1
            llm_status[record.task][record.status if source == LLM else record.alternative.get("status", "")] += 1
        policy = self.pipeline.policy
        return {
            "policy": policy.fingerprint(),
            "policy_chosen_on": dict(policy.chosen_on) or None,
            "published_from": {task: dict(sorted(c.items())) for task, c in sorted(published_from.items())},
            "llm_status": {task: dict(sorted(c.items())) for task, c in sorted(llm_status.items())},
        }
