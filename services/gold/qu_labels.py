"""The engine's own gold format: JSON lines of ``{"query", "spans": [Tag JSON], "category", "kind"}``.

It is what ``qu traffic`` writes beside its events (``labels.jsonl``) and what the teacher's
curriculum exports for SRL, so one reader serves both.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from services.domain import Role, Tag
from services.errors import InputError
from services.gold.model import GoldQuery
from services.jsonl import read_json_lines

_SEPARATOR = " > "


def read_qu_labels(path: Path) -> list[GoldQuery]:
    """Every record of ``path``; raises :class:`InputError` naming the line and field of the first bad one."""
    return list(iter_qu_labels(path))


def iter_qu_labels(path: Path) -> Iterator[GoldQuery]:
    for line_no, row in read_json_lines(path, "the gold file"):
        yield _record(row, path, line_no)


def _record(row: Any, path: Path, line_no: int) -> GoldQuery:
    def bad(column: str, reason: str) -> InputError:
        return InputError(str(path), reason, row=line_no, column=column, problem=f"{column}: {reason}")

    if not isinstance(row, dict):
        raise bad("(line)", "expected a JSON object")
    query = row.get("query")
    if not isinstance(query, str) or not query.strip():
        raise bad("query", "missing or empty")
    raw_spans = row.get("spans", row.get("tags", []))
    if not isinstance(raw_spans, list):
        raise bad("spans", "expected a list of tags")
    spans: list[Tag] = []
    for i, raw in enumerate(raw_spans):
        try:
            tag = Tag.from_json(raw)
        except (KeyError, ValueError, TypeError) as exc:
            raise bad(f"spans[{i}]", f"not a tag ({type(exc).__name__}: {exc})") from None
        if not 0 <= tag.start < tag.end <= len(query) or query[tag.start : tag.end] != tag.text:
            raise bad(f"spans[{i}]", f"[{tag.start}, {tag.end}) is not {tag.text!r} in {query!r}")
        spans.append(tag)
    spans.sort(key=lambda t: (t.start, t.end))
    for before, after in itertools.pairwise(spans):
        if after.start < before.end:
            raise bad("spans", f"{before.text!r} and {after.text!r} overlap")
    category = row.get("category")
    path_parts: tuple[str, ...] | None = None
    if isinstance(category, str) and category:
        path_parts = tuple(category.split(_SEPARATOR))
    elif isinstance(category, list) and category:
        path_parts = tuple(str(part) for part in category)
    elif category is not None and category != "" and category != []:
        raise bad("category", "expected 'A > B' or a list of names")
    return GoldQuery(query, tuple(spans), path_parts, str(row.get("kind", "")), f"{path}:{line_no}")


__all__ = ["Role", "iter_qu_labels", "read_qu_labels"]
