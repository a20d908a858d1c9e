"""Whatever the cache or the student answers, the annotation carries catalog values only (issue 10, item 4).

The case of the report, on the demo catalog: the span "whole" tagged as brand "SPECIAL K\\u202e!!<>",
a category with a NaN score and the rewrite "MILK\\u202e\\u200b<>!!" were all published.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
import pytest

from services.annotation.handler import AnnotateHandler
from services.catalog.artifacts import Catalog, build_catalog
from services.catalog.demo import demo_files
from services.catalog.reader import read_catalog
from services.domain import (
    Annotation,
    CategoryScore,
    Rewrite,
    RewriteType,
    Role,
    Source,
    Tag,
    Understanding,
)
from services.guardrails import Guardrails
from services.wire import RecordOrigin

QUERY = "whole milk"
HIDDEN = ("\u202e", "\u200b")
ANSWER = Understanding(
    tags=[
        Tag(Role.BRAND, 0, 5, "whole", "SPECIAL K\u202e!!<>"),  # a real brand, but "whole" does not say it
        Tag(Role.PRODUCT, 6, 10, "milk", "MILK\u202e"),  # a real type: published as the catalog spells it
    ],
    categories=[
        CategoryScore(("dairy eggs", "milk"), math.nan),
        CategoryScore(("dairy eggs", "yogurt"), 0.8),
    ],
    rewrites=[
        Rewrite(RewriteType.SYNONYM, "MILK\u202e\u200b<>!!"),
        Rewrite(RewriteType.BROADER, "reduced fat milk", 0.7),
    ],
    version="v-test",
)


@pytest.fixture(scope="module")
def demo() -> Catalog:
    catalog = build_catalog(read_catalog(demo_files()[0]).products, embedder=None)
    assert catalog.brands.lookup("special k") is not None and ("dairy eggs", "yogurt") in catalog.taxonomy
    return catalog


@dataclass
class Cached:
    understanding: Understanding
    teacher_version: str


class OneAnswerCache:
    def __init__(self, answer: Understanding | None) -> None:
        self.answer = answer

    async def get_many(self, normalized_queries: Sequence[str]) -> list[Cached | None]:
        return [Cached(self.answer, "teacher-x") if self.answer else None for _ in normalized_queries]


class OneAnswerStudent:
    async def understand(self, normalized_query: str) -> Understanding:
        return ANSWER


class NoFallback:
    def tag(self, normalized: str) -> list[Tag]:
        return []


def annotate(catalog: Catalog, cached: Understanding | None) -> Annotation:
    handler = AnnotateHandler(
        cache=OneAnswerCache(cached),
        student=OneAnswerStudent(),
        fallback=NoFallback(),
        guardrails=Guardrails(catalog),
        max_query_chars=512,
    )
    event = orjson.dumps({"event_id": "e1", "query": "Whole Milk"})
    outcome = asyncio.run(handler.handle(event, None, None, RecordOrigin("qu.search-events.v1", 0, 1)))
    assert outcome.annotation is not None, outcome.reason
    return outcome.annotation


@pytest.mark.parametrize(("cached", "source"), [(ANSWER, Source.CACHE), (None, Source.STUDENT)])
def test_neither_a_cache_hit_nor_a_student_answer_publishes_a_models_string(
    demo: Catalog, cached: Understanding | None, source: Source
) -> None:
    a = annotate(demo, cached)
    assert a.source is source
    u = a.understanding
    assert [(t.role, t.text, t.canonical) for t in u.tags] == [(Role.PRODUCT, "Milk", "milk")]
    assert u.categories == [CategoryScore(("dairy eggs", "yogurt"), 0.8)]
    assert [r.query for r in u.rewrites] == ["reduced fat milk"]
    dropped = {(d.check, d.kept) for d in a.guardrails}
    assert dropped == {("catalog.brand", False), ("category.score", False), ("rewrite.text", False)}
    published = orjson.dumps(a.to_json()).decode()
    assert not any(ch in published for ch in HIDDEN), published  # the decisions echo them escaped
    assert "SPECIAL K" in published and "NaN" not in published
