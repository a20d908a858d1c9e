"""The student's held-out scores: ``services.span_scores`` (exact (role, start, end) match), on lists of tags.

The same metric ``qu eval srl`` reports, so a run's metrics.json and the evaluation command agree.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from services.domain import Tag
from services.span_scores import SpanScores


def span_scores(gold: Sequence[Sequence[Tag]], predicted: Sequence[Sequence[Tag]]) -> dict[str, Any]:
    """Micro and per-role P/R/F1 of ``predicted`` against ``gold``, one tag list per query each, in the same order."""
    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold queries but {len(predicted)} predictions")
    scores = SpanScores()
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        scores.add(gold_tags, predicted_tags)
    return scores.to_json()
