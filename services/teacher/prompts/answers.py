"""The answer each task must give: pydantic models, the strict JSON schema sent to the model, validation.

Every answer is an envelope ``{"reasoning": str, "answer": {...}}``: the model thinks in
``reasoning`` first (chain of thought, kept for provenance), then answers. The models are the
single source of truth: the JSON schema in the prompt and in ``response_format`` is derived
from them, and a reply is validated by them. Checks that need the query (span bounds, a rewrite
that only restates the query) read it from the pydantic validation context.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from services.normalize import normalize_query
from services.teacher.context_types import TaskName

__all__ = [
    "ANSWER_MODELS",
    "MAX_CATEGORIES",
    "MAX_REWRITES",
    "REASONING_WORDS",
    "answer_token_budget",
    "strict_json_schema",
]

MAX_CATEGORIES = 5
MAX_REWRITES = 5
# The answer's size, from its shape, is what a request's max_tokens allows: enough for the longest valid
# answer, and no more, so a model that rambles is cut (and its answer rejected) instead of holding a CPU
# server for minutes. The prompt asks for reasoning under REASONING_WORDS words.
REASONING_WORDS = 60
_TOKENS_PER_WORD = 2  # reasoning prose, generously
_CHARS_PER_TOKEN = 3  # JSON with short words: BPE tokenizers give 3-4 characters a token; 3 errs long
_ENVELOPE_TOKENS = 40  # {"reasoning": ..., "answer": {...}} and the model's whitespace
_LEVEL_CHARS = 40  # one taxonomy level as the context names it
_ITEM_CHARS = 80  # an item's keys, quotes, numbers and separators
# Keywords every OpenAI-compatible structured-output implementation accepts; bounds such as
# "minimum" or "maxItems" are enforced here, by pydantic, not trusted to the server.
_SCHEMA_KEYWORDS = {"type", "properties", "required", "additionalProperties", "items", "enum", "description"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _query(info: ValidationInfo) -> str | None:
    context = info.context if isinstance(info.context, dict) else {}
    query = context.get("query")
    return query if isinstance(query, str) else None


# --- srl ----------------------------------------------------------------------------------------


class SrlTag(_Strict):
    role: Literal["product", "brand", "attribute"] = Field(description="What the span names.")
    start: int = Field(ge=0, description="Offset of the span's first character in the query.")
    end: int = Field(ge=1, description="Offset just past the span's last character (exclusive).")
    text: str = Field(min_length=1, description="The span as it appears in the query: query[start:end].")
    canonical: str = Field(min_length=1, description="The catalog value the span names.")

    @model_validator(mode="after")
    def _span_inside_query(self, info: ValidationInfo) -> SrlTag:
        if self.end <= self.start:
            raise ValueError(f"span [{self.start}, {self.end}) is empty or reversed")
        query = _query(info)
        if query is not None and self.end > len(query):
            raise ValueError(f"span [{self.start}, {self.end}) ends past the query ({len(query)} characters)")
        return self


class SrlAnswer(_Strict):
    tags: list[SrlTag] = Field(description="Tagged spans, in query order, not overlapping.")

    @field_validator("tags")
    @classmethod
    def _no_overlap(cls, tags: list[SrlTag]) -> list[SrlTag]:
        ordered = sorted(tags, key=lambda t: t.start)
        for left, right in pairwise(ordered):
            if right.start < left.end:
                raise ValueError(f"spans {left.text!r} and {right.text!r} overlap")
        return ordered


class SrlEnvelope(_Strict):
    reasoning: str = Field(description="Step-by-step thinking, before the answer.")
    answer: SrlAnswer


# --- category -----------------------------------------------------------------------------------


class CategoryChoice(_Strict):
    path: list[str] = Field(min_length=1, description="Taxonomy levels from the root, as in the context.")
    score: float = Field(ge=0.0, le=1.0, description="How sure the shopper wants products from this path.")


class CategoryAnswer(_Strict):
    categories: list[CategoryChoice] = Field(
        max_length=MAX_CATEGORIES, description=f"Best first, at most {MAX_CATEGORIES}."
    )

    @field_validator("categories")
    @classmethod
    def _distinct(cls, categories: list[CategoryChoice]) -> list[CategoryChoice]:
        paths = [tuple(c.path) for c in categories]
        if len(set(paths)) != len(paths):
            raise ValueError("a taxonomy path is listed twice")
        return sorted(categories, key=lambda c: -c.score)


class CategoryEnvelope(_Strict):
    reasoning: str = Field(description="Step-by-step thinking, before the answer.")
    answer: CategoryAnswer


# --- rewrites (substitutes, broader, synonyms share the shape, not the meaning) ------------------


class RewriteChoice(_Strict):
    query: str = Field(min_length=1, description="The rewritten search, as a shopper would type it.")
    score: float = Field(ge=0.0, le=1.0, description="How useful it is for discovery.")


class RewriteAnswer(_Strict):
    rewrites: list[RewriteChoice] = Field(max_length=MAX_REWRITES, description=f"Best first, at most {MAX_REWRITES}.")

    @field_validator("rewrites")
    @classmethod
    def _new_and_distinct(cls, rewrites: list[RewriteChoice], info: ValidationInfo) -> list[RewriteChoice]:
        # Normalization already matches spelling, case and punctuation variants, so such a
        # "rewrite" retrieves nothing new: it is rejected, not stored.
        query = _query(info)
        seen = {normalize_query(query)} if query is not None else set()
        for rewrite in rewrites:
            key = normalize_query(rewrite.query)
            if not key:
                raise ValueError(f"rewrite {rewrite.query!r} is empty once normalized")
            if key in seen:
                raise ValueError(f"rewrite {rewrite.query!r} repeats the query or another rewrite")
            seen.add(key)
        return sorted(rewrites, key=lambda r: -r.score)


class RewriteEnvelope(_Strict):
    reasoning: str = Field(description="Step-by-step thinking, before the answer.")
    answer: RewriteAnswer


ANSWER_MODELS: dict[TaskName, type[BaseModel]] = {
    TaskName.SRL: SrlEnvelope,
    TaskName.CATEGORY: CategoryEnvelope,
    TaskName.SUBSTITUTES: RewriteEnvelope,
    TaskName.BROADER: RewriteEnvelope,
    TaskName.SYNONYMS: RewriteEnvelope,
}


def strict_json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema in the form strict structured output takes.

    References inlined, titles and bounds dropped (the subset every server accepts), every
    object closed (``additionalProperties: false``) with all its properties required. Property
    order is kept: models write keys in schema order, so ``reasoning`` comes before ``answer``.
    """
    raw = model.model_json_schema()
    defs: dict[str, Any] = raw.get("$defs", {})

    def clean(node: dict[str, Any]) -> dict[str, Any]:
        if "$ref" in node:
            return clean(defs[node["$ref"].rsplit("/", 1)[-1]])
        out: dict[str, Any] = {}
        for key in sorted(node):
            if key not in _SCHEMA_KEYWORDS:
                continue
            value = node[key]
            if key == "properties":
                out[key] = {name: clean(sub) for name, sub in value.items()}
            elif key == "items":
                out[key] = clean(value)
            else:
                out[key] = value
        if out.get("type") == "object":
            out["additionalProperties"] = False
            out["required"] = list(out.get("properties", {}))
        return out

    return clean(raw)


def answer_token_budget(task: TaskName, query: str) -> int:
    """The most tokens a valid answer to ``task`` for ``query`` needs (the request's ``max_tokens``): the
    reasoning asked for, plus the answer at its largest (a tag per word of the query, each naming a span
    of it and a value up to twice as long; the most categories of five levels; the most rewrites, each
    up to three times the query)."""
    if task is TaskName.SRL:
        answer_chars = len(query.split()) * (_ITEM_CHARS + 3 * len(query))
    elif task is TaskName.CATEGORY:
        answer_chars = MAX_CATEGORIES * (_ITEM_CHARS + 5 * _LEVEL_CHARS)
    else:
        answer_chars = MAX_REWRITES * (_ITEM_CHARS + 3 * len(query))
    return _ENVELOPE_TOKENS + REASONING_WORDS * _TOKENS_PER_WORD + -(-answer_chars // _CHARS_PER_TOKEN)
