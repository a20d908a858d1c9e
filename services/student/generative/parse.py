"""A generation of the student, parsed and validated into an :class:`Understanding` for one query.

The student writes JSON in the shape ``prompt.SYSTEM_PROMPT`` shows. Nothing it writes is trusted:

- text that is not one JSON object (prose, a truncated answer cut off at the token limit, two
  objects) gives an *empty* understanding that still carries the version, so the caller publishes
  "the student found nothing" rather than failing the event;
- inside a valid object, each tag, category and rewrite is checked on its own and dropped when
  malformed: a role outside product|brand|attribute, a span text that is not in the query, a span
  that overlaps one already placed, a score outside [0, 1], an unknown rewrite type, a rewrite that
  only restates the query;
- span offsets are *found*: the generated text (normalized like the query) is looked up in the query
  on word boundaries. Tags come in query order, so a repeated word is looked for after the previous
  tag first, then anywhere not yet taken: "2% milk and whole milk" gets both "milk" spans right.

Every drop is reported in :attr:`Parsed.problems`, for the Triton model's log and for evaluation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

from services.domain import CategoryScore, Rewrite, RewriteType, Role, Tag, Understanding
from services.normalize import normalize_query

__all__ = ["MAX_CATEGORIES", "MAX_REWRITES_PER_TYPE", "Parsed", "locate_span", "parse_generation"]

MAX_CATEGORIES = 5  # the teacher's bound (services.teacher.prompts.answers), so the student cannot exceed it
MAX_REWRITES_PER_TYPE = 5
_ROLES = {r.value: r for r in Role}
_REWRITE_TYPES = {t.value: t for t in RewriteType}


@dataclass(slots=True)
class Parsed:
    understanding: Understanding
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        """True when the generation was one JSON object (items may still have been dropped)."""
        return not any(p.startswith("generation:") for p in self.problems)


def parse_generation(text: str, query: str, version: str) -> Parsed:
    """Parse ``text`` (the detokenized generation) for the normalized ``query``; never raises."""
    problems: list[str] = []
    answer = _load_object(text, problems)
    if answer is None:
        return Parsed(Understanding(version=version), problems)
    tags = _tags(answer.get("tags", []), query, problems)
    categories = _categories(answer.get("categories", []), problems)
    rewrites = _rewrites(answer.get("rewrites", []), query, problems)
    return Parsed(Understanding(tags, categories, rewrites, version=version), problems)


def _load_object(text: str, problems: list[str]) -> dict[str, Any] | None:
    stripped = text.strip()
    if not stripped:
        problems.append("generation: empty")
        return None
    try:
        value = json.loads(stripped)
    except json.JSONDecodeError as err:
        # A truncated answer (token limit reached) lands here too: nothing is salvaged from half an object.
        problems.append(f"generation: not JSON ({err.msg} at character {err.pos}): {stripped[:80]!r}")
        return None
    if not isinstance(value, dict):
        problems.append(f"generation: a JSON {type(value).__name__}, not an object")
        return None
    return value


def _items(value: object, name: str, problems: list[str]) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        problems.append(f"{name}: not a list ({type(value).__name__}), ignored")
        return []
    kept = []
    for item in value:
        if isinstance(item, dict):
            kept.append(item)
        else:
            problems.append(f"{name}: item {item!r} is not an object, dropped")
    return kept


def _text(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    return value if isinstance(value, str) and value.strip() else None


def _score(item: dict[str, Any]) -> float | None:
    value = item.get("score")
    # bool is an int in Python; a "true" score is a malformed one.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    score = float(value)
    return score if math.isfinite(score) and 0.0 <= score <= 1.0 else None


def locate_span(query: str, needle: str, taken: list[tuple[int, int]], cursor: int) -> tuple[int, int] | None:
    """Offsets of ``needle`` in ``query`` on word boundaries, not overlapping ``taken``.

    The first such occurrence at or after ``cursor`` (the end of the previous tag: tags come in
    query order), else the first anywhere; None when there is none.
    """
    if not needle:
        return None
    for origin in (cursor, 0):
        start = query.find(needle, origin)
        while start != -1:
            end = start + len(needle)
            on_boundaries = (start == 0 or query[start - 1].isspace()) and (end == len(query) or query[end].isspace())
            if on_boundaries and all(end <= s or start >= e for s, e in taken):
                return start, end
            start = query.find(needle, start + 1)
    return None


def _tags(value: object, query: str, problems: list[str]) -> list[Tag]:
    tags: list[Tag] = []
    taken: list[tuple[int, int]] = []
    cursor = 0
    for item in _items(value, "tags", problems):
        role = _ROLES.get(str(item.get("role")))
        text = _text(item, "text")
        if role is None:
            problems.append(f"tags: role {item.get('role')!r} is not product|brand|attribute, dropped")
            continue
        if text is None:
            problems.append(f"tags: {role.value} tag without a text, dropped")
            continue
        span = locate_span(query, normalize_query(text), taken, cursor)
        if span is None:
            problems.append(f"tags: {role.value} {text!r} is not a free span of the query, dropped")
            continue
        start, end = span
        canonical = _text(item, "canonical") or query[start:end]
        tags.append(Tag(role, start, end, query[start:end], canonical.strip()))
        taken.append(span)
        cursor = end
    return sorted(tags, key=lambda t: t.start)


def _categories(value: object, problems: list[str]) -> list[CategoryScore]:
    kept: dict[tuple[str, ...], CategoryScore] = {}
    for item in _items(value, "categories", problems):
        path = item.get("path")
        score = _score(item)
        if not isinstance(path, list) or not path or not all(isinstance(p, str) and p.strip() for p in path):
            problems.append(f"categories: path {path!r} is not a list of names, dropped")
        elif score is None:
            problems.append(f"categories: {path!r} has no score in [0, 1] ({item.get('score')!r}), dropped")
        elif tuple(path) in kept:
            problems.append(f"categories: {path!r} listed twice, the repeat dropped")
        else:
            kept[tuple(path)] = CategoryScore(tuple(path), score)
    ordered = sorted(kept.values(), key=lambda c: -c.score)
    if len(ordered) > MAX_CATEGORIES:
        problems.append(f"categories: {len(ordered)} given, the best {MAX_CATEGORIES} kept")
    return ordered[:MAX_CATEGORIES]


def _rewrites(value: object, query: str, problems: list[str]) -> list[Rewrite]:
    kept: list[Rewrite] = []
    seen = {normalize_query(query)}  # a rewrite that normalizes to the query retrieves nothing new
    per_type: dict[RewriteType, int] = {}
    for item in _items(value, "rewrites", problems):
        kind = _REWRITE_TYPES.get(str(item.get("type")))
        text = _text(item, "query")
        score = _score(item)
        if kind is None:
            problems.append(f"rewrites: type {item.get('type')!r} is not substitute|broader|synonym, dropped")
        elif text is None or not normalize_query(text):
            problems.append(f"rewrites: {kind.value} without a query, dropped")
        elif score is None:
            problems.append(f"rewrites: {text!r} has no score in [0, 1] ({item.get('score')!r}), dropped")
        elif normalize_query(text) in seen:
            problems.append(f"rewrites: {text!r} repeats the query or another rewrite, dropped")
        elif per_type.get(kind, 0) >= MAX_REWRITES_PER_TYPE:
            problems.append(f"rewrites: more than {MAX_REWRITES_PER_TYPE} {kind.value} rewrites, {text!r} dropped")
        else:
            seen.add(normalize_query(text))
            per_type[kind] = per_type.get(kind, 0) + 1
            kept.append(Rewrite(kind, text.strip(), score))
    return kept
