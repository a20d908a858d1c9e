"""The one interface every teacher backend implements, and the validation every answer passes.

A backend (the OpenAI-compatible client, the deterministic catalog-grounded teacher) turns a
rendered prompt into a :class:`TeacherAnswer`. Whatever produced the reply, it goes through
:func:`parse_answer`: the task's pydantic model checks it, and a reply that does not fit raises
:class:`TeacherAnswerInvalid` instead of reaching the guardrails half-formed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol, runtime_checkable

import orjson
from pydantic import ValidationError

from services.errors import QuError
from services.teacher.context_types import TaskName
from services.teacher.prompts.answers import ANSWER_MODELS
from services.teacher.prompts.base import RenderedPrompt

__all__ = ["TeacherAnswer", "TeacherAnswerInvalid", "TeacherBackend", "Usage", "UsageTotals", "parse_answer"]

_MAX_PROBLEMS = 5


class TeacherAnswerInvalid(QuError):
    """A teacher's reply does not fit its task's answer schema; the query is rejected for this task, not stored."""

    def __init__(self, task: TaskName, problem: str, *, backend: str = "") -> None:
        self.task = task
        self.problem = problem
        self.backend = backend
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


@dataclass(slots=True)
class UsageTotals:
    """What a backend's answers cost over a run: for the ``qu teacher run`` summary."""

    answers: int = 0  # replies that passed validation
    invalid: int = 0  # replies that did not (paid for all the same)
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


def _summarize(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False)[:_MAX_PROBLEMS]:
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        problems.append(f"{where}: {error['msg']}")
    more = exc.error_count() - len(problems)
    return "; ".join(problems) + (f"; and {more} more" if more > 0 else "")
