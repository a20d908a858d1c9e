"""Per-query span errors: what a figure hides, one JSON line per query (``--errors``: the wrong ones only;
``--predictions``: every query, right ones with no errors).

Predictions that equal a gold span (start, end and role) are matched first, one to one, as the scorer
(:mod:`services.span_scores`) counts true positives. Each gold span and prediction left over is then
classed once, the closest kind of match first, over all the query's spans:

1. ``role``: a prediction over the same characters as a gold span, with another role;
2. ``boundary``: a prediction of the same role over overlapping but different characters
   (``"whole milk"`` for ``"milk"``);
3. ``boundary+role``: a prediction of another role over overlapping, different characters;
4. ``missed``: a gold span left with no prediction (none overlaps it, or each one that does was
   paired with another gold span);
5. ``spurious``: a prediction left with no gold span (it overlaps none, or only ones already paired).

Where several predictions could pair with a gold span, the one overlapping it most is taken. So each
false negative of the scorer is one ``missed``, ``role``, ``boundary`` or ``boundary+role`` error, and
each false positive one ``spurious``, ``role``, ``boundary`` or ``boundary+role`` error. An error is
counted under the role of its gold span (a ``spurious`` one: of its prediction).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.domain import Role, Tag, Understanding
from services.gold import GoldQuery
from services.jsonl import write_jsonl_atomic
from services.span_scores import ROLES

__all__ = ["CLASSES", "ErrorCounts", "GoldSet", "classify", "query_errors", "query_record", "write_query_lines"]

CLASSES = ("missed", "spurious", "boundary", "role", "boundary+role")


def _overlap(a: Tag, b: Tag) -> int:
    """How many characters ``a`` and ``b`` share (0: none)."""
    return max(0, min(a.end, b.end) - max(a.start, b.start))


def _span(tag: Tag, kind: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"role": tag.role.value, "start": tag.start, "end": tag.end, "text": tag.text}
    if kind:
        out["type"] = kind  # the gold source's own label for the span
    return out


def _gold_spans(gold: GoldQuery) -> list[dict[str, Any]]:
    types = gold.span_types if len(gold.span_types) == len(gold.spans) else ("",) * len(gold.spans)
    return [_span(t, kind) for t, kind in zip(gold.spans, types, strict=True)]


def classify(gold: Sequence[Tag], predicted: Sequence[Tag]) -> list[dict[str, Any]]:
    """Every error of one query (the module docstring says how each is classed), gold order, then spurious.

    Each error is ``{"class", "role", "gold": span | None, "predicted": span | None}``, ``role`` being
    the role it is counted under."""
    unmatched_preds = list(range(len(predicted)))
    golds: list[int] = []
    for gi, g in enumerate(gold):  # exact matches, one to one (a repeated prediction matches once)
        same = next((pi for pi in unmatched_preds if _key(predicted[pi]) == _key(g)), None)
        if same is None:
            golds.append(gi)
        else:
            unmatched_preds.remove(same)

    paired: dict[int, tuple[str, int]] = {}  # gold index -> (class, prediction index)
    passes: tuple[tuple[str, Callable[[Tag, Tag], bool]], ...] = (
        ("role", _same_chars),
        ("boundary", _same_role_overlap),
        ("boundary+role", _any_overlap),
    )
    for name, fits in passes:
        for gi in golds:
            if gi in paired:
                continue
            candidates = [pi for pi in unmatched_preds if fits(gold[gi], predicted[pi])]
            if candidates:
                best = max(candidates, key=lambda pi: _overlap(gold[gi], predicted[pi]))  # first of the most
                unmatched_preds.remove(best)
                paired[gi] = (name, best)

    errors: list[dict[str, Any]] = []
    for gi in golds:
        g = gold[gi]
        if gi in paired:
            name, pi = paired[gi]
            errors.append({"class": name, "role": g.role.value, "gold": _span(g), "predicted": _span(predicted[pi])})
        else:
            errors.append({"class": "missed", "role": g.role.value, "gold": _span(g), "predicted": None})
    errors += [
        {"class": "spurious", "role": predicted[pi].role.value, "gold": None, "predicted": _span(predicted[pi])}
        for pi in unmatched_preds
    ]
    return errors


def _same_chars(g: Tag, p: Tag) -> bool:
    return (p.start, p.end) == (g.start, g.end)


def _same_role_overlap(g: Tag, p: Tag) -> bool:
    return p.role is g.role and _overlap(g, p) > 0


def _any_overlap(g: Tag, p: Tag) -> bool:
    return _overlap(g, p) > 0


def _key(tag: Tag) -> tuple[int, int, Role]:
    return tag.start, tag.end, tag.role


def query_record(gold: GoldQuery, predicted: Understanding) -> dict[str, Any]:
    """One query as the ``--predictions`` file has it: the query, its gold and predicted spans, its errors."""
    return {
        "query": gold.query,
        "kind": gold.kind,
        "source": gold.source,
        "gold": _gold_spans(gold),
        "predicted": [_span(t) for t in predicted.tags],
        "errors": classify(gold.spans, predicted.tags),
    }


def query_errors(gold: GoldQuery, predicted: Understanding) -> dict[str, Any] | None:
    """:func:`query_record`, or None when every gold span was found and nothing more."""
    record = query_record(gold, predicted)
    return record if record["errors"] else None


@dataclass(slots=True)
class ErrorCounts:
    """Error classes counted over queries: per role (see the module docstring) and in all."""

    queries: int = 0
    wrong_queries: int = 0
    per_role: dict[str, Counter[str]] = field(default_factory=lambda: {role.value: Counter() for role in ROLES})

    def add(self, errors: Sequence[dict[str, Any]]) -> None:
        self.queries += 1
        self.wrong_queries += bool(errors)
        for error in errors:
            self.per_role.setdefault(error["role"], Counter())[error["class"]] += 1

    def total(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for counts in self.per_role.values():
            out.update(counts)
        return {name: out.get(name, 0) for name in CLASSES}

    def to_json(self) -> dict[str, Any]:
        return {
            "queries": self.queries,
            "wrong_queries": self.wrong_queries,
            **self.total(),
            "per_role": {role: {name: c.get(name, 0) for name in CLASSES} for role, c in self.per_role.items()},
        }

    @classmethod
    def of(cls, gold: Sequence[GoldQuery], answers: Sequence[Understanding]) -> ErrorCounts:
        counts = cls()
        for g, answer in zip(gold, answers, strict=True):
            counts.add(classify(g.spans, answer.tags))
        return counts


GoldSet = tuple[str, Sequence[GoldQuery], Sequence[Understanding]]  # (its name, the gold, the model's answers)


def write_query_lines(path: Path, sets: Sequence[GoldSet], *, every: bool = False) -> dict[str, dict[str, Any]]:
    """One JSON line per query of each gold set (each naming its set), written whole under a temporary name
    and renamed, so a crash leaves no half file: every query with ``every`` (``--predictions``), else the
    wrong ones only (``--errors``). Returns, per set, the :class:`ErrorCounts` of all its queries, with
    ``queries`` the lines written."""
    counts = {name: ErrorCounts() for name, _, _ in sets}
    written: Counter[str] = Counter()

    def lines() -> Iterator[dict[str, Any]]:
        for name, gold, answers in sets:
            for g, answer in zip(gold, answers, strict=True):
                record = query_record(g, answer)
                counts[name].add(record["errors"])
                if every or record["errors"]:
                    written[name] += 1
                    yield {"gold_set": name, **record}

    write_jsonl_atomic(path, lines())
    return {name: {**c.to_json(), "queries": written[name]} for name, c in counts.items()}
