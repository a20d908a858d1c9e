"""Span-level SRL metrics: exact match of (start, end, role), per role and micro-averaged.

The one scorer of spans: ``qu eval`` (services/evaluation) and the student's training (its held-out
scores) both use it, so it sits below both, beside the domain it scores.

A predicted span counts as a true positive only when a gold span of the same query has the same
start, the same end and the same role; an overlap or a boundary off by one character is one false
positive and one false negative (the CoNLL/seqeval convention). Both sides must index the same
text: the gold query as it is in the gold file (see :mod:`services.evaluation.predictors`, which
normalizes inside and maps tag offsets back to that text).

Counts (tp, fp, fn) are kept, not ratios, so reports over several files or batches merge by
addition. A ratio whose denominator is zero (no prediction, or no gold span, of a role) is 0.0,
as seqeval's ``zero_division=0``: the counts beside it say which case it was.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.domain import Role, Tag

__all__ = ["Counts", "SpanScores", "score_spans"]

ROLES: tuple[Role, ...] = (Role.PRODUCT, Role.BRAND, Role.ATTRIBUTE)
SpanKey = tuple[int, int, Role]


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


@dataclass(frozen=True, slots=True)
class Counts:
    """True positives, false positives and false negatives of one role (or all roles)."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def predicted(self) -> int:
        return self.tp + self.fp

    @property
    def gold(self) -> int:
        return self.tp + self.fn

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.predicted)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.gold)

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
        }

    @classmethod
    def from_json(cls, row: Mapping[str, Any]) -> Counts:
        return cls(int(row["tp"]), int(row["fp"]), int(row["fn"]))


def score_spans(gold: Iterable[Tag], predicted: Iterable[Tag]) -> dict[Role, Counts]:
    """Per-role counts for one query. Spans are multisets: a prediction repeated twice matches one gold span once."""
    gold_keys: Counter[SpanKey] = Counter((t.start, t.end, t.role) for t in gold)
    predicted_keys: Counter[SpanKey] = Counter((t.start, t.end, t.role) for t in predicted)
    matched = gold_keys & predicted_keys
    out: dict[Role, Counts] = {}
    for role in ROLES:
        tp = sum(n for key, n in matched.items() if key[2] is role)
        out[role] = Counts(
            tp,
            sum(n for key, n in predicted_keys.items() if key[2] is role) - tp,
            sum(n for key, n in gold_keys.items() if key[2] is role) - tp,
        )
    return out


def _add_roles(into: dict[Role, Counts], counts: Mapping[Role, Counts]) -> None:
    for role, c in counts.items():
        into[role] = into.get(role, Counts()) + c


@dataclass(slots=True)
class SpanScores:
    """Span counts over many queries: per role, micro-averaged, and per kind of query (traffic labels)."""

    per_role: dict[Role, Counts] = field(default_factory=lambda: {role: Counts() for role in ROLES})
    by_kind: dict[str, dict[Role, Counts]] = field(default_factory=dict)
    queries: int = 0

    def add(self, gold: Sequence[Tag], predicted: Sequence[Tag], kind: str = "") -> None:
        counts = score_spans(gold, predicted)
        _add_roles(self.per_role, counts)
        if kind:
            _add_roles(self.by_kind.setdefault(kind, {}), counts)
        self.queries += 1

    def merge(self, other: SpanScores) -> SpanScores:
        """The scores of both sets of queries (neither input is changed)."""
        merged = SpanScores(queries=self.queries + other.queries)
        for source in (self, other):
            _add_roles(merged.per_role, source.per_role)
            for kind, counts in source.by_kind.items():
                _add_roles(merged.by_kind.setdefault(kind, {}), counts)
        return merged

    @property
    def micro(self) -> Counts:
        total = Counts()
        for counts in self.per_role.values():
            total += counts
        return total

    def to_json(self) -> dict[str, Any]:
        micro = self.micro
        out: dict[str, Any] = {
            "precision": round(micro.precision, 4),
            "recall": round(micro.recall, 4),
            "f1": round(micro.f1, 4),
            "counts": {"tp": micro.tp, "fp": micro.fp, "fn": micro.fn},
            "per_role": {role.value: self.per_role.get(role, Counts()).to_json() for role in ROLES},
            "n": self.queries,
        }
        if self.by_kind:
            out["by_kind"] = {
                kind: _micro_and_roles(counts) for kind, counts in sorted(self.by_kind.items(), key=lambda kv: kv[0])
            }
        return out


def _micro_and_roles(counts: Mapping[Role, Counts]) -> dict[str, Any]:
    total = Counts()
    for c in counts.values():
        total += c
    return {**total.to_json(), "per_role": {role.value: counts.get(role, Counts()).to_json() for role in ROLES}}
