"""Teaching a batch of queries: context → one prompt per task → teacher → validation → guardrails.

:class:`TeacherPipeline` is the offline counterpart of the annotate handler. For each query it
builds the retrieved context once, renders every task's template, asks the backend (concurrently,
at most ``concurrency`` answers in flight), assembles the answers into one
:class:`~services.domain.Understanding`, and runs the shared guardrails over it. A task
whose answer is invalid or whose teacher is unavailable is recorded with the problem; the others
still count. What reaches the head cache is decided by :func:`publishable`, one rule for the run
and for a resumed run's re-publication.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer

from services.domain import (
    CategoryScore,
    GuardrailDecision,
    Rewrite,
    Role,
    Tag,
    Understanding,
)
from services.errors import QuError, ServiceUnavailable
from services.guardrails import Guardrails
from services.teacher.backend import TeacherAnswer, TeacherAnswerInvalid, TeacherBackend, Usage
from services.teacher.context import ContextBuilder, ExamplePool
from services.teacher.context_types import REWRITE_TASKS, TaskName, TeacherContext
from services.teacher.curriculum import CurriculumRecord, record_id
from services.teacher.hybrid import CATALOG, LLM, HybridPolicy, Preference, SourceAnswer, choose, kept_items
from services.teacher.metrics import TeacherMetrics
from services.teacher.prompts import RenderedPrompt, template_for
from services.teacher.prompts.base import CONTEXT_TAG
from services.teacher.selection import SelectedQuery
from services.telemetry import TRACER_NAME

log = logging.getLogger(__name__)

ANSWERED, INVALID, UNAVAILABLE, REJECTED, FAILED = "answered", "invalid", "unavailable", "rejected", "failed"
# Answers of one task in a row that the endpoint could not give (after its retries) before the task stops.
STOP_AFTER_UNAVAILABLE = 3
_REFUSED = "the endpoint refused it:"
_CONTEXT_BLOCK = re.compile(rf"<{CONTEXT_TAG}>\n(.*?)\n</{CONTEXT_TAG}>", re.S)


@dataclass(slots=True)
class TaskOutcome:
    task: TaskName
    prompt: RenderedPrompt
    status: str
    problem: str = ""
    answer: TeacherAnswer | None = None
    paid: Usage = field(default_factory=Usage)  # every reply's tokens, an invalid one's too
    cost_usd: float = 0.0
    raw: str = ""  # the reply as the model wrote it (an LLM's)


@dataclass(slots=True)
class SourceView:
    """One teacher's answers of one query, after the guardrails (a hybrid run keeps both teachers')."""

    outcomes: dict[TaskName, TaskOutcome]
    understanding: Understanding
    decisions: list[GuardrailDecision]

    def answer_of(self, task: TaskName) -> SourceAnswer:
        """What the hybrid's choice looks at: the task's status, and whether the guardrails left it anything."""
        status = self.outcomes[task].status
        return SourceAnswer(status, status == ANSWERED and kept_items(task, self.understanding))


def choose_source(preference: Preference, task: TaskName, views: Mapping[str, SourceView]) -> tuple[str, str]:
    """Which teacher's answer of ``task`` is published under ``preference``, and why (a run and `qu teacher choose`)."""
    return choose(preference, views[LLM].answer_of(task), views[CATALOG].answer_of(task))


@dataclass(slots=True)
class TaughtQuery:
    selected: SelectedQuery
    context: TeacherContext
    outcomes: dict[TaskName, TaskOutcome]  # per task, the answer published (a hybrid run's chosen one)
    understanding: Understanding  # after the guardrails
    decisions: list[GuardrailDecision] = field(default_factory=list)
    # A hybrid run only: each teacher's view ("llm", "catalog") and, per task, the source published and why.
    sources: dict[str, SourceView] = field(default_factory=dict)
    choices: dict[TaskName, tuple[str, str]] = field(default_factory=dict)

    @property
    def query(self) -> str:
        return self.selected.query

    @property
    def rejection(self) -> str:
        """Why the query stays out of the head cache ("" when it goes in)."""
        srl = self.outcomes.get(TaskName.SRL)
        return publishable(srl.status if srl else UNAVAILABLE, self.understanding)


def publishable(srl_status: str, understanding: Understanding) -> str:
    """The one rule for the cache: "" when the query's answer may be served, else the reason it may not.

    SRL is what every consumer reads, so a query whose SRL answer failed is not cached (the
    student serves it instead); nor is one the guardrails left with neither a tag nor a category.
    """
    if srl_status != ANSWERED:
        return f"srl_{srl_status}"
    if not understanding.tags and not understanding.categories:
        return "nothing_kept"
    return ""


class TeacherPipeline:
    def __init__(
        self,
        builder: ContextBuilder,
        backend: TeacherBackend,
        guardrails: Guardrails,
        *,
        tasks: Sequence[TaskName] = tuple(TaskName),
        concurrency: int = 8,
        catalog_build: str = "",
        tracer: Tracer | None = None,
        metrics: TeacherMetrics | None = None,
        max_context_tokens: int | None = None,
        fallback: TeacherBackend | None = None,
        policy: HybridPolicy | None = None,
        llm_guardrails: Guardrails | None = None,
    ) -> None:
        if TaskName.SRL not in tasks:
            raise ValueError("the SRL task cannot be left out: the cache and the curriculum are built on it")
        self.tracer = tracer or trace.get_tracer(TRACER_NAME)
        self.metrics = metrics or TeacherMetrics()
        self.builder = builder
        self.backend = backend
        self.guardrails = guardrails
        self.tasks = tuple(dict.fromkeys(tasks))
        self.catalog_build = catalog_build
        self._limit = asyncio.Semaphore(concurrency)
        self.max_context_tokens = max_context_tokens  # the prompt's context block capped (an LLM's prefill time)
        # A hybrid run: ``backend`` is the LLM, ``fallback`` the catalog teacher asked the same tasks, ``policy``
        # which answer is published (services/teacher/hybrid.py).
        self.fallback = fallback
        self.policy = policy or HybridPolicy.catalog_only()
        self.llm_guardrails = llm_guardrails or guardrails  # a hybrid's LLM answers: a higher bar for rewrites
        # A task the endpoint refuses in a way that will repeat, or that stays unavailable, is not asked again
        # in this run: task -> why. Its queries are recorded with that problem (not done: a rerun asks them).
        self.stopped: dict[str, str] = {}
        self._unavailable_in_a_row: dict[TaskName, int] = {}

    @property
    def teacher_version(self) -> str:
        own = f"{self.backend.name}/{self.backend.version}"
        return f"hybrid/{own}+{self.fallback.name}/{self.fallback.version}" if self.fallback else own

    def tasks_to_ask(self, query: str, done: Mapping[str, AbstractSet[TaskName]] | None) -> tuple[TaskName, ...]:
        held = done.get(query, frozenset()) if done else frozenset()
        return tuple(task for task in self.tasks if task not in held)

    def template_hashes(self) -> dict[str, str]:
        return {task.value: template_for(task).template_hash for task in self.tasks}

    async def teach(
        self,
        selected: Sequence[SelectedQuery],
        pool: ExamplePool | None = None,
        *,
        done: Mapping[str, AbstractSet[TaskName]] | None = None,
    ) -> list[TaughtQuery]:
        """Teach every query of the batch; never raises for one query's or one task's failure.

        ``done``: per query, the tasks a resumed run already holds a valid answer for; only the others are asked
        (and only they are in the query's outcomes and records).
        """
        if not selected:
            return []
        contexts = self.builder.build_many(
            [s.query for s in selected],
            session_followups={s.query: s.followups for s in selected},
            examples_pool=pool,
        )
        asked = [self.tasks_to_ask(s.query, done) for s in selected]
        prompts = [
            template_for(task).render(s.query, ctx, max_context_tokens=self.max_context_tokens)
            for s, ctx, tasks in zip(selected, contexts, asked, strict=True)
            for task in tasks
        ]
        outcomes = iter(await asyncio.gather(*(self._ask(p) for p in prompts)))
        per_query = [{task: next(outcomes) for task in tasks} for tasks in asked]
        if self.fallback is not None:
            return await self._teach_hybrid(selected, contexts, per_query)
        proposed = [_understanding(o, self.teacher_version) for o in per_query]
        checked = self.guardrails.check_many([(u, s.query) for u, s in zip(proposed, selected, strict=True)])
        for _understanding_kept, decisions in checked:
            self.metrics.guardrails(decisions)
        return [
            TaughtQuery(s, ctx, o, understanding, decisions)
            for s, ctx, o, (understanding, decisions) in zip(selected, contexts, per_query, checked, strict=True)
        ]

    async def _teach_hybrid(
        self,
        selected: Sequence[SelectedQuery],
        contexts: Sequence[TeacherContext],
        llm_outcomes: Sequence[dict[TaskName, TaskOutcome]],
    ) -> list[TaughtQuery]:
        """Ask the catalog teacher the same tasks (its prompts uncapped: it reads the context as data), guardrail
        both teachers' answers, and publish per task the answer the policy chooses."""
        assert self.fallback is not None
        catalog_outcomes: list[dict[TaskName, TaskOutcome]] = []
        for s, ctx, asked in zip(selected, contexts, llm_outcomes, strict=True):
            prompts = [template_for(task).render(s.query, ctx) for task in asked]
            answers = await asyncio.gather(*(self._ask_fallback(p) for p in prompts))
            catalog_outcomes.append(dict(zip(asked, answers, strict=True)))
        queries = [s.query for s in selected]
        llm_checked = self.llm_guardrails.check_many(
            [(_understanding(o, self.teacher_version), q) for o, q in zip(llm_outcomes, queries, strict=True)]
        )
        catalog_checked = self.guardrails.check_many(
            [(_understanding(o, self.teacher_version), q) for o, q in zip(catalog_outcomes, queries, strict=True)]
        )
        checked = [*llm_checked, *catalog_checked]
        taught = []
        for i, (s, ctx) in enumerate(zip(selected, contexts, strict=True)):
            views = {
                LLM: SourceView(llm_outcomes[i], *checked[i]),
                CATALOG: SourceView(catalog_outcomes[i], *checked[len(selected) + i]),
            }
            choices = {task: self._choose(task, views) for task in llm_outcomes[i]}
            # Only the published answers' decisions count, as in a run with one teacher.
            decisions = [
                d
                for task, (source, _why) in choices.items()
                for d in views[source].decisions
                if _decision_task(d) is task
            ]
            self.metrics.guardrails(decisions)
            understanding = merged_understanding(
                {task: views[source].understanding for task, (source, _) in choices.items()}
            )
            outcomes = {task: views[source].outcomes[task] for task, (source, _) in choices.items()}
            taught.append(TaughtQuery(s, ctx, outcomes, understanding, decisions, views, choices))
        return taught

    def _choose(self, task: TaskName, views: dict[str, SourceView]) -> tuple[str, str]:
        return choose_source(self.policy.preference(task), task, views)

    async def _ask_fallback(self, prompt: RenderedPrompt) -> TaskOutcome:
        assert self.fallback is not None
        try:
            answer = await self.fallback.answer(prompt.task, prompt)
        except TeacherAnswerInvalid as err:
            return TaskOutcome(prompt.task, prompt, INVALID, err.problem, paid=err.usage, cost_usd=err.cost_usd)
        except Exception as err:  # recorded, not raised: the LLM's answer may still stand
            log.exception("the %s teacher failed on %s for %r", self.fallback.name, prompt.task.value, prompt.query)
            return TaskOutcome(prompt.task, prompt, FAILED, f"{type(err).__name__}: {err}")
        return TaskOutcome(prompt.task, prompt, ANSWERED, answer=answer, paid=answer.usage, cost_usd=answer.cost_usd)

    async def _ask(self, prompt: RenderedPrompt) -> TaskOutcome:
        async with self._limit:
            # One span per backend call: the task, the tokens and the cost; retries are the backend's events on it.
            with self.tracer.start_as_current_span(
                f"teacher {prompt.task.value}",
                kind=SpanKind.CLIENT,
                attributes={
                    "qu.task": prompt.task.value,
                    "qu.query": prompt.query[:200],
                    "qu.teacher.backend": self.backend.name,
                },
            ) as span:
                outcome = await self._answer(prompt)
                self.metrics.call(prompt.task.value, outcome.status, outcome.answer)
                span.set_attribute("qu.teacher.status", outcome.status)
                if outcome.answer is not None:
                    usage = outcome.answer.usage
                    span.set_attributes(
                        {
                            "gen_ai.usage.input_tokens": usage.prompt_tokens,
                            "gen_ai.usage.output_tokens": usage.completion_tokens,
                            "qu.cost_usd": outcome.answer.cost_usd,
                        }
                    )
                elif outcome.status != ANSWERED:
                    span.set_status(Status(StatusCode.ERROR, f"{outcome.status}: {outcome.problem}"[:300]))
                return outcome

    async def _answer(self, prompt: RenderedPrompt) -> TaskOutcome:
        task = prompt.task
        if task.value in self.stopped:
            why = self.stopped[task.value]
            status = REJECTED if why.startswith(_REFUSED) else UNAVAILABLE
            return TaskOutcome(task, prompt, status, f"not asked: {why}")
        try:
            answer = await self.backend.answer(task, prompt)
        except TeacherAnswerInvalid as err:
            self._unavailable_in_a_row[task] = 0
            return TaskOutcome(task, prompt, INVALID, err.problem, paid=err.usage, cost_usd=err.cost_usd, raw=err.raw)
        except ServiceUnavailable as err:
            self._unavailable_in_a_row[task] = self._unavailable_in_a_row.get(task, 0) + 1
            if self._unavailable_in_a_row[task] >= STOP_AFTER_UNAVAILABLE:
                self._stop(task, f"{STOP_AFTER_UNAVAILABLE} answers in a row unavailable, the last: {err}")
            return TaskOutcome(task, prompt, UNAVAILABLE, str(err))
        except QuError as err:  # refused by the endpoint (4xx, an invalid request): it will refuse the next too
            self._stop(task, f"{_REFUSED} {err}")
            return TaskOutcome(task, prompt, REJECTED, str(err))
        except Exception as err:  # a backend's bug on one prompt must not stop the run: recorded, not raised
            log.exception("the %s teacher failed on %s for %r", self.backend.name, prompt.task.value, prompt.query)
            return TaskOutcome(prompt.task, prompt, FAILED, f"{type(err).__name__}: {err}")
        self._unavailable_in_a_row[task] = 0
        return TaskOutcome(
            task, prompt, ANSWERED, answer=answer, paid=answer.usage, cost_usd=answer.cost_usd, raw=answer.raw
        )

    def _stop(self, task: TaskName, why: str) -> None:
        if task.value not in self.stopped:
            self.stopped[task.value] = why
            log.error("the %s task stops for this run: %s", task.value, why)

    def records(self, taught: TaughtQuery, run_id: str, *, now: datetime | None = None) -> list[CurriculumRecord]:
        """One curriculum record per task: the guardrailed answer and everything it came from."""
        created = (now or datetime.now(UTC)).isoformat()
        out = []
        for task, outcome in taught.outcomes.items():
            context_json = _context_json(outcome.prompt)
            answer = outcome.answer
            choice, alternative, paid = "", None, [outcome]
            if task in taught.choices:  # a hybrid run: the other teacher's answer is kept beside the published one
                source, why = taught.choices[task]
                other = CATALOG if source == LLM else LLM
                view = taught.sources[other]
                alternative = _alternative(task, other, view)
                choice = f"{source}: {why}"
                paid = [outcome, view.outcomes[task]]  # both teachers' tokens (the catalog's cost nothing)
            out.append(
                CurriculumRecord(
                    record_id=record_id(run_id, taught.query, task),
                    run_id=run_id,
                    query=taught.query,
                    origin=taught.selected.origin.value,
                    query_count=taught.selected.count,
                    task=task.value,
                    status=outcome.status,
                    problem=outcome.problem,
                    answer_json=_dumps(_task_answer(task, taught.understanding) if answer else {}),
                    teacher_answer_json=_dumps(answer.data if answer else {}),
                    reasoning=answer.reasoning if answer else "",
                    guardrails_json=_dumps([d.to_json() for d in taught.decisions if _decision_task(d) is task]),
                    teacher_backend=answer.backend if answer else self.backend.name,
                    teacher_version=answer.version if answer else self.backend.version,
                    template_hash=outcome.prompt.template_hash,
                    context_json=context_json,
                    context_sha256=hashlib.sha256(context_json.encode()).hexdigest(),
                    catalog_build=self.catalog_build,
                    prompt_tokens=sum(o.paid.prompt_tokens for o in paid),
                    completion_tokens=sum(o.paid.completion_tokens for o in paid),
                    cost_usd=sum(o.cost_usd for o in paid),
                    created_at=created,
                    choice=choice,
                    alternative_json=_dumps(alternative) if alternative else "{}",
                    raw_reply=outcome.raw,
                )
            )
        return out


def understanding_from_records(records: Sequence[CurriculumRecord], version: str) -> tuple[str, Understanding]:
    """The guardrailed understanding a query's records hold, and its SRL status (a resumed run re-publishes it)."""
    by_task = {TaskName(r.task): r for r in records}
    srl = by_task.get(TaskName.SRL)
    tags = [Tag.from_json(t) for t in srl.answer.get("tags", [])] if srl else []
    category = by_task.get(TaskName.CATEGORY)
    categories = [CategoryScore.from_json(c) for c in category.answer.get("categories", [])] if category else []
    rewrites = [
        Rewrite.from_json(r)
        for task in REWRITE_TASKS
        if (record := by_task.get(task)) is not None
        for r in record.answer.get("rewrites", [])
    ]
    return (srl.status if srl else UNAVAILABLE), Understanding(tags, categories, rewrites, version)


def _understanding(outcomes: dict[TaskName, TaskOutcome], version: str) -> Understanding:
    tags: list[Tag] = []
    categories: list[CategoryScore] = []
    rewrites: list[Rewrite] = []
    for task, outcome in outcomes.items():
        if outcome.answer is None:
            continue
        data = outcome.answer.data
        if task is TaskName.SRL:
            tags = [Tag(Role(t["role"]), t["start"], t["end"], t["text"], t["canonical"]) for t in data["tags"]]
        elif task is TaskName.CATEGORY:
            categories = [CategoryScore(tuple(c["path"]), float(c["score"])) for c in data["categories"]]
        else:
            rewrites += [Rewrite(REWRITE_TASKS[task], r["query"]) for r in data["rewrites"]]
    return Understanding(tags, categories, rewrites, version)


def _alternative(task: TaskName, source: str, view: SourceView) -> dict[str, Any]:
    """The answer a hybrid run did not publish, as its curriculum column keeps it."""
    outcome = view.outcomes[task]
    answer = outcome.answer
    return {
        "source": source,
        "status": outcome.status,
        "problem": outcome.problem,
        "backend": answer.backend if answer else "",
        "version": answer.version if answer else "",
        "teacher_answer": answer.data if answer else {},
        "answer": _task_answer(task, view.understanding) if answer else {},
        "reasoning": answer.reasoning if answer else "",
        "raw_reply": outcome.raw,
        "guardrails": [d.to_json() for d in view.decisions if _decision_task(d) is task],
    }


def merged_understanding(by_task: dict[TaskName, Understanding]) -> Understanding:
    """One understanding of each task's items taken from its own (guardrailed) understanding."""
    srl, category = by_task.get(TaskName.SRL), by_task.get(TaskName.CATEGORY)
    rewrites = [
        r for task, kind in REWRITE_TASKS.items() if task in by_task for r in by_task[task].rewrites if r.type is kind
    ]
    version = next(iter(by_task.values())).version if by_task else ""
    return Understanding(
        list(srl.tags) if srl else [], list(category.categories) if category else [], rewrites, version
    )


def _task_answer(task: TaskName, understanding: Understanding) -> dict[str, Any]:
    if task is TaskName.SRL:
        return {"tags": [t.to_json() for t in understanding.tags]}
    if task is TaskName.CATEGORY:
        return {"categories": [c.to_json() for c in understanding.categories]}
    kind = REWRITE_TASKS[task]
    return {"rewrites": [r.to_json() for r in understanding.rewrites if r.type is kind]}


def _decision_task(decision: GuardrailDecision) -> TaskName | None:
    """Which task's item a guardrail decision is about (the checks are named ``catalog.*``, ``category.*``,
    ``rewrite.*`` and rewrite items ``<type>=<query>``)."""
    family = decision.check.split(".", 1)[0]
    if family in ("catalog", "tag"):
        return TaskName.SRL
    if family == "category":
        return TaskName.CATEGORY
    if family == "rewrite":
        kind = decision.item.split("=", 1)[0]
        return next((task for task, t in REWRITE_TASKS.items() if t.value == kind), None)
    return None


def _context_json(prompt: RenderedPrompt) -> str:
    user = next((m["content"] for m in prompt.messages if m["role"] == "user"), "")
    found = _CONTEXT_BLOCK.search(user)
    return found.group(1) if found else "{}"


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
