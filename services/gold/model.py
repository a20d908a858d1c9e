"""The one shape every gold source is read into."""

from __future__ import annotations

from dataclasses import dataclass

from services.domain import Tag


@dataclass(frozen=True, slots=True)
class GoldQuery:
    query: str
    spans: tuple[Tag, ...]  # offsets into ``query``; sorted, non-overlapping
    category: tuple[str, ...] | None = None  # the taxonomy path meant, where the source says
    kind: str = ""  # how the query was phrased (traffic labels), for breakdowns
    source: str = ""  # "file:line" it was read from, for error messages and reports
    # The source's own type of each span, parallel to ``spans`` (QueryNER's 16 types behind our three roles);
    # empty where the source knows only roles.
    span_types: tuple[str, ...] = ()
    # The source's types of the spans it labelled but that map to no role (left out of ``spans``), one per
    # span, for reports to count (services.gold.bio_spans fills it; empty where a source drops none).
    ignored_types: tuple[str, ...] = ()
