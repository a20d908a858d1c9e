"""Category accuracy: does the predicted top path equal the gold taxonomy path?

Scored only over gold queries that name a category (the traffic generator's labels do; QueryNER
does not). ``top1``: the first predicted path equals the gold path exactly; ``top3``: one of the
first three does; ``top1_within``: the first predicted path is the gold path or below it (a broad
query labelled "frozen" answered with "frozen > ice cream ice"), reported beside the strict figure
because a department-level label cannot be matched exactly by a ranker of leaf paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from services.domain import CategoryScore

__all__ = ["CategoryAccuracy", "CategoryCounts"]


@dataclass(slots=True)
class CategoryCounts:
    n: int = 0
    top1: int = 0
    top3: int = 0
    top1_within: int = 0

    def add(self, other: CategoryCounts) -> None:
        self.n += other.n
        self.top1 += other.top1
        self.top3 += other.top3
        self.top1_within += other.top1_within

    def to_json(self) -> dict[str, Any]:
        def share(k: int) -> float:
            return round(k / self.n, 4) if self.n else 0.0

        return {
            "top1": share(self.top1),
            "top3": share(self.top3),
            "top1_within": share(self.top1_within),
            "n": self.n,
            "top1_hits": self.top1,
            "top3_hits": self.top3,
            "top1_within_hits": self.top1_within,
        }


@dataclass(slots=True)
class CategoryAccuracy:
    total: CategoryCounts = field(default_factory=CategoryCounts)
    by_kind: dict[str, CategoryCounts] = field(default_factory=dict)
    skipped: int = 0  # gold queries without a category

    def add(self, gold: tuple[str, ...] | None, predicted: Sequence[CategoryScore], kind: str = "") -> None:
        if gold is None:
            self.skipped += 1
            return
        paths = [c.path for c in predicted]
        one = CategoryCounts(
            1,
            int(bool(paths) and paths[0] == gold),
            int(gold in paths[:3]),
            int(bool(paths) and paths[0][: len(gold)] == gold),
        )
        self.total.add(one)
        if kind:
            self.by_kind.setdefault(kind, CategoryCounts()).add(one)

    def to_json(self) -> dict[str, Any]:
        out = {**self.total.to_json(), "without_gold_category": self.skipped}
        if self.by_kind:
            out["by_kind"] = {kind: counts.to_json() for kind, counts in sorted(self.by_kind.items())}
        return out
