"""The context builder and the catalog-grounded teacher on the shipped demo catalog (real MiniLM embeddings)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.catalog.artifacts import Catalog, load_catalog
from services.catalog.demo import demo_files
from services.conversions.history import aggregate_conversions
from services.conversions.reader import Conversion
from services.conversions.store import ConversionHistory, ConversionsManifest
from services.embeddings import SentenceEmbedder
from services.teacher import TaskName, TeacherAnswer, parse_answer, template_for
from services.teacher.catalog_teacher import CatalogTeacher
from services.teacher.context import ContextBuilder

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEMO_QUERIES = ("pepperidge farm", "bread no gluten", "1% milk", "organic bananas", "oreo cookies", "happy baby")
SPELLED_NUMBER = re.compile(r"\b(one|two|percent|half)\b")


@pytest.fixture(scope="module")
def demo(student_catalog_dir: Path) -> Catalog:
    # The shared import has no Open Food Facts terms; the teacher's synonyms and broader terms need them.
    terms = json.loads(demo_files()[1].read_text(encoding="utf-8"))
    return dataclasses.replace(load_catalog(student_catalog_dir), category_terms=terms)


@pytest.fixture(scope="module")
def builder(demo: Catalog, embedder: SentenceEmbedder) -> ContextBuilder:
    return ContextBuilder(demo, None, embedder)


@pytest.fixture(scope="module")
def teacher(demo: Catalog) -> CatalogTeacher:
    return CatalogTeacher(demo)


def ask(teacher: CatalogTeacher, builder: ContextBuilder, task: TaskName, query: str) -> TeacherAnswer:
    return asyncio.run(teacher.answer_with_context(task, builder.build(query)))


def rewrites(teacher: CatalogTeacher, builder: ContextBuilder, task: TaskName, query: str) -> list[str]:
    return [r["query"] for r in ask(teacher, builder, task, query).data["rewrites"]]


@pytest.mark.parametrize(
    ("query", "brand", "span"),
    [
        ("pepperidge farm", "Pepperidge Farm", (0, 15)),
        ("pepridge farm", "Pepperidge Farm", (0, 13)),
        ("happy baby", "Happy Baby", (0, 10)),
    ],
)
def test_a_brand_only_query_names_the_brand(
    builder: ContextBuilder, teacher: CatalogTeacher, query: str, brand: str, span: tuple[int, int]
) -> None:
    context = builder.build(query)
    assert context.brands[0].brand == brand  # the top candidate, ahead of any product-type reading
    tags = ask(teacher, builder, TaskName.SRL, query).data["tags"]
    assert [(t["role"], t["canonical"], (t["start"], t["end"])) for t in tags] == [("brand", brand, span)]


def test_a_misspelled_brand_steers_every_task(builder: ContextBuilder, teacher: CatalogTeacher) -> None:
    # Where Pepperidge Farm's products sit, and the brands beside them there: not what "farm" means.
    categories = ask(teacher, builder, TaskName.CATEGORY, "pepridge farm").data["categories"]
    assert categories[0]["path"] == ["snacks", "crackers"]
    assert "ritz" in rewrites(teacher, builder, TaskName.SUBSTITUTES, "pepridge farm")


def test_a_query_like_no_brand_gets_no_brand(builder: ContextBuilder, teacher: CatalogTeacher) -> None:
    # Its nearest brand by meaning is a weak candidate; nothing in it is spelled like a brand.
    context = builder.build("verdant machine")
    assert all(b.score < 0.7 for b in context.brands)
    assert ask(teacher, builder, TaskName.SRL, "verdant machine").data["tags"] == []


def test_bread_no_gluten(builder: ContextBuilder, teacher: CatalogTeacher) -> None:
    tags = ask(teacher, builder, TaskName.SRL, "bread no gluten").data["tags"]
    assert [(t["role"], t["text"], t["canonical"]) for t in tags] == [
        ("product", "bread", "bread"),
        ("attribute", "no gluten", "gluten free"),
    ]
    assert rewrites(teacher, builder, TaskName.BROADER, "bread no gluten")[0] == "bread"
    substitutes = rewrites(teacher, builder, TaskName.SUBSTITUTES, "bread no gluten")
    assert substitutes and "bread" not in substitutes
    demo = teacher.catalog
    for substitute in substitutes:  # each names a product type of the bakery department
        entry = demo.types.entries[substitute.removeprefix("gluten free ")]
        assert any(path[0] == "bakery" for path in entry.categories), substitute


def test_one_percent_milk_never_gets_a_spelled_out_number(builder: ContextBuilder, teacher: CatalogTeacher) -> None:
    for task in (TaskName.SYNONYMS, TaskName.SUBSTITUTES, TaskName.BROADER):
        for rewrite in rewrites(teacher, builder, task, "1% milk"):
            assert not SPELLED_NUMBER.search(rewrite), (task, rewrite)
            assert rewrite not in ("1% milks", "1 % milk")


def test_organic_bananas_categories_follow_conversions(
    demo: Catalog, embedder: SentenceEmbedder, teacher: CatalogTeacher
) -> None:
    by_name = {p.name: p for p in demo.products}
    rows = [("Bag of Organic Bananas", 12), ("Banana", 5), ("Organic Strawberries", 1)]
    conversions = [
        Conversion("organic bananas", f"s{n}{i}", "u", by_name[name].product_id, 1_700_000_000.0 + i)
        for n, (name, count) in enumerate(rows)
        for i in range(count)
    ]
    queries = aggregate_conversions(conversions, {p.product_id: p for p in demo.products}, top_k=5, half_life_days=30)
    now = datetime.now(UTC).isoformat()
    history = ConversionHistory.from_queries(queries, ConversionsManifest("test", now, now, 5, 30.0, 18, 18, 0))
    context = ContextBuilder(demo, history, embedder).build("organic bananas")
    assert context.categories[0].path == ("produce", "fresh fruits") and context.categories[0].conversions == 18
    ranked = asyncio.run(teacher.answer_with_context(TaskName.CATEGORY, context)).data["categories"]
    assert ["produce", "fresh fruits"] in [c["path"] for c in ranked[:2]]


@pytest.mark.parametrize("task", list(TaskName))
def test_every_answer_is_valid_and_deterministic(
    builder: ContextBuilder, teacher: CatalogTeacher, demo: Catalog, task: TaskName
) -> None:
    contexts = builder.build_many(list(DEMO_QUERIES))
    for context in contexts:
        prompt = template_for(task).render(context.normalized_query, context)
        first = asyncio.run(teacher.answer(task, prompt))
        assert first == asyncio.run(teacher.answer(task, prompt))
        assert first == asyncio.run(
            CatalogTeacher(demo).answer_with_context(task, builder.build(context.normalized_query))
        )
        assert parse_answer(task, {"reasoning": first.reasoning, "answer": first.data}, prompt)[0] == first.data
        assert demo.manifest["build"] in first.version
