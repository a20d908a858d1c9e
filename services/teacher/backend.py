"""The one interface every teacher backend implements, and the validation every answer passes.

A backend (the OpenAI-compatible client, the deterministic catalog-grounded teacher) turns a
rendered prompt into a :class:`TeacherAnswer`. Whatever produced the reply, it goes through
:func:`parse_answer`: the task's pydantic model checks it, and a reply that does not fit raises
:class:`TeacherAnswerInvalid` instead of reaching the guardrails half-formed.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import orjson
from pydantic import ValidationError

from services.errors import QuError
from services.teacher.context_types import TaskName
from services.teacher.prompts.answers import ANSWER_MODELS
from services.teacher.prompts.base import RenderedPrompt

__all__ = [
    "TeacherAnswer",
    "TeacherAnswerInvalid",
    "TeacherBackend",
    "Usage",
    "UsageTotals",
    "copied_example",
    "parse_answer",
]

_MAX_PROBLEMS = 5
# A key of the schema: a model's invented key (any text) is named as such, never quoted into the problem.
_SCHEMA_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


class TeacherAnswerInvalid(QuError):
    """A teacher's reply does not fit its task's answer schema; the query is rejected for this task, not stored."""

    def __init__(
        self,
        task: TaskName,
        problem: str,
        *,
        backend: str = "",
        usage: Usage | None = None,
        cost_usd: float = 0.0,
        raw: str = "",
    ) -> None:
        self.task = task
        self.problem = problem
        self.backend = backend
        # What the reply cost all the same (an LLM's invalid answer is paid for): recorded in the curriculum.
        self.usage = usage or Usage()
        self.cost_usd = cost_usd
        self.raw = raw  # the reply as the model wrote it: the curriculum's raw_reply, never the problem text
        by = f" from {backend}" if backend else ""
        super().__init__(
            f"the {task.value} answer{by} is invalid: {problem}. The query is skipped for this task; "
            "if most answers fail like this, check the model follows structured output (or the template's schema)"
        )


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class TeacherAnswer:
    """A validated answer and where it came from (recorded with every curriculum record)."""

    task: TaskName
    data: dict[str, Any]  # the envelope's ``answer``, as validated (normalized: tags sorted, best first)
    reasoning: str
    usage: Usage
    cost_usd: float
    backend: str
    version: str
    raw: str = ""  # an LLM's reply as written (the curriculum's raw_reply); "" for the catalog teacher


@dataclass(slots=True)
class UsageTotals:
    """What a backend's answers cost over a run: for the ``qu teacher run`` summary."""

    answers: int = 0  # replies that passed validation
    invalid: int = 0  # replies that did not (paid for all the same)
    schema_valid: int = 0  # replies that are a JSON object matching the answer's JSON schema (before the checks
    # against the query and the examples): what structured output alone gets right
    attempts: int = 0  # HTTP requests sent
    retries: int = 0
    fallbacks: int = 0  # requests that went out again as json_object after a 400 to json_schema
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["cost_usd"] = round(self.cost_usd, 6)
        return out


@runtime_checkable
class TeacherBackend(Protocol):
    name: str
    version: str

    async def answer(self, task: TaskName, prompt: RenderedPrompt) -> TeacherAnswer: ...


def parse_answer(
    task: TaskName, reply: str | bytes | dict[str, Any], prompt: RenderedPrompt
) -> tuple[dict[str, Any], str]:
    """Validate a reply (JSON text or the decoded object) for ``task``: ``(answer, reasoning)``.

    Raises :class:`TeacherAnswerInvalid` naming the task and up to five problems (where and what,
    without echoing long values back).
    """
    if prompt.task != task:
        raise ValueError(f"the prompt was rendered for {prompt.task.value}, not {task.value}")
    if isinstance(reply, dict):
        payload: Any = reply
    else:
        try:
            payload = orjson.loads(reply)
        except orjson.JSONDecodeError as exc:
            raise TeacherAnswerInvalid(task, f"the reply is not JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise TeacherAnswerInvalid(task, f"the reply is a JSON {type(payload).__name__}, not an object")
    model = ANSWER_MODELS[task]
    try:
        envelope = model.model_validate(payload, strict=True, context={"query": prompt.query})
    except ValidationError as exc:
        raise TeacherAnswerInvalid(task, _summarize(exc)) from None
    dumped = envelope.model_dump(mode="json")
    return dict(dumped["answer"]), str(dumped["reasoning"])


def _loc_part(part: str | int) -> str:
    return str(part) if isinstance(part, int) or _SCHEMA_KEY.fullmatch(part) else "(a key not in the schema)"


def copied_example(task: TaskName, data: dict[str, Any], prompt: RenderedPrompt) -> str:
    """The query of an example the answer repeats whole, though the example is about another query ("" if none).

    A small model copies its examples: the same "2% milk", "skim milk" substitutes for every query. A copy of
    an example about another query says nothing about this one, whatever a guardrail makes of it. SRL is
    left out: its spans are checked against the query itself.
    """
    if task is TaskName.SRL:
        return ""
    mine = _answer_items(task, data)
    if not mine:
        return ""
    for query, answer in prompt.example_answers:
        if query != prompt.query and _answer_items(task, answer) == mine:
            return query
    return ""


def _answer_items(task: TaskName, answer: dict[str, Any]) -> frozenset[str]:
    if task is TaskName.CATEGORY:
        return frozenset(" > ".join(c.get("path", [])) for c in answer.get("categories", []) if isinstance(c, dict))
    return frozenset(str(r.get("query", "")).strip().lower() for r in answer.get("rewrites", []) if isinstance(r, dict))


def _summarize(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False)[:_MAX_PROBLEMS]:
        where = ".".join(_loc_part(part) for part in error["loc"]) or "(top level)"
        problems.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")
