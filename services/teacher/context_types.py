"""What the teacher is told about one query: the tasks, and the retrieved context each prompt renders.

Plain frozen dataclasses, filled by the context builder (conversion history, catalog lexicons,
embedding and string neighbours, validated records) and read by the prompt templates. Every
string here may come from a shopper (the query, session follow-ups, retrieved example queries),
so templates render all of it as data, never as prompt text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

from services.domain import RewriteType

__all__ = [
    "REWRITE_TASKS",
    "AttributeCandidate",
    "BrandCandidate",
    "BrandSource",
    "CategoryCandidate",
    "FewShotExample",
    "TaskName",
    "TeacherContext",
]


class TaskName(StrEnum):
    """One prompt template each. The rewrite types are separate tasks on purpose (see the prompts)."""

    SRL = "srl"
    CATEGORY = "category"
    SUBSTITUTES = "substitutes"
    BROADER = "broader"
    SYNONYMS = "synonyms"


# The rewrite tasks and the type of rewrite each writes.
REWRITE_TASKS: dict[TaskName, RewriteType] = {
    TaskName.SUBSTITUTES: RewriteType.SUBSTITUTE,
    TaskName.BROADER: RewriteType.BROADER,
    TaskName.SYNONYMS: RewriteType.SYNONYM,
}

BrandSource = Literal["embedding", "string", "conversions"]


@dataclass(frozen=True, slots=True)
class BrandCandidate:
    """A catalog brand that may be in the query, and why it was retrieved."""

    brand: str  # the canonical catalog name
    score: float
    source: BrandSource  # close by meaning, spelled like the query's words, or bought after this search


@dataclass(frozen=True, slots=True)
class CategoryCandidate:
    """A taxonomy path shoppers converted to after this query (or one retrieved for it)."""

    path: tuple[str, ...]
    conversions: int
    score: float


@dataclass(frozen=True, slots=True)
class AttributeCandidate:
    """An attribute from the catalog vocabulary found in or near the query."""

    value: str  # canonical form, e.g. "gluten free", "12 oz", "2%"
    kind: str  # the vocabulary's kind: size, claim, flavour, form, occasion, other


@dataclass(frozen=True, slots=True)
class FewShotExample:
    """A solved example: fixed in a template, or retrieved from already validated records.

    ``task`` None means "for whatever task renders it"; a retrieved example names its task so
    one context can carry examples for every task.
    """

    query: str
    answer: dict[str, Any]  # the task's ``answer`` object, as validated
    reasoning: str = ""
    task: TaskName | None = None


@dataclass(frozen=True, slots=True)
class TeacherContext:
    """Everything retrieved for one normalized query; each template renders the parts its task uses."""

    normalized_query: str
    brands: tuple[BrandCandidate, ...] = ()
    categories: tuple[CategoryCandidate, ...] = ()
    product_types: tuple[str, ...] = ()
    attributes: tuple[AttributeCandidate, ...] = ()
    examples: tuple[FewShotExample, ...] = ()
    session_followups: tuple[str, ...] = ()  # the session's later searches, for session-aware rewrites

    def examples_for(self, task: TaskName) -> tuple[FewShotExample, ...]:
        return tuple(e for e in self.examples if e.task in (None, task))
