"""Rewrite coverage and precision on a hand-made catalog and conversion history.

Six products, four queries with conversions; every expected figure is counted by hand below.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.catalog.model import Product
from services.conversions.history import aggregate_conversions
from services.conversions.reader import Conversion
from services.conversions.store import ConversionHistory, ConversionsManifest
from services.domain import Rewrite, RewriteType, Understanding
from services.evaluation import CatalogRetriever, RewriteScores
from services.evaluation.rewrites import fold_plural

SUB, BROAD, SYN = RewriteType.SUBSTITUTE, RewriteType.BROADER, RewriteType.SYNONYM

PRODUCTS = [
    Product("1", "Whole Milk", "Horizon Organic", ("dairy eggs", "milk"), popularity=5),
    Product("2", "Almond Milk", "Silk", ("dairy eggs", "soy lactosefree"), popularity=3),
    Product("3", "Chocolate Chip Cookies", "Chips Ahoy", ("snacks", "cookies cakes"), popularity=4),
    Product("4", "Vanilla Ice Cream", "Haagen Dazs", ("frozen", "ice cream ice"), popularity=6),
    Product("5", "Bananas", "", ("produce", "fresh fruits"), popularity=9),
    Product("6", "Tomatoes", "", ("produce", "fresh vegetables"), popularity=2),
]
# (query, product id, conversions): "milk" converted on both milks, the others on one product each.
CONVERSIONS = [("milk", "1", 3), ("milk", "2", 1), ("banana", "5", 2), ("ice cream", "4", 1)]


@pytest.fixture(scope="module")
def history() -> ConversionHistory:
    conversions = [
        Conversion(query, f"s{i}", "u", pid, 1_700_000_000.0 + i) for query, pid, n in CONVERSIONS for i in range(n)
    ]
    queries = aggregate_conversions(conversions, {p.product_id: p for p in PRODUCTS}, top_k=5, half_life_days=30)
    now = datetime.now(UTC).isoformat()
    return ConversionHistory.from_queries(queries, ConversionsManifest("test", now, now, 5, 30.0, 7, 7, 0))


@pytest.fixture(scope="module")
def retriever() -> CatalogRetriever:
    return CatalogRetriever(PRODUCTS)


def test_fold_plural() -> None:
    words = ("bananas", "tomatoes", "peaches", "cookies", "hummus", "swiss", "oats", "gas")
    assert [fold_plural(w) for w in words] == ["banana", "tomato", "peach", "cookie", "hummus", "swiss", "oat", "gas"]


def test_retrieval_matches_every_word_in_name_brand_or_category_best_first(retriever: CatalogRetriever) -> None:
    assert [p.product_id for p in retriever.products("milk")] == ["1", "2"]  # popularity 5 before 3
    assert [p.product_id for p in retriever.products("Almond  MILK")] == ["2"]  # normalized, every word
    assert [p.product_id for p in retriever.products("dairy")] == ["1", "2"]  # a category word
    assert [p.product_id for p in retriever.products("banana")] == ["5"]  # plural folded on both sides
    assert [p.product_id for p in retriever.products("horizon milk")] == ["1"]  # a brand word
    assert [p.product_id for p in retriever.products("produce")] == ["5", "6"]
    assert retriever.products("moo juice") == [] and retriever.products("!!") == []
    assert retriever.categories("produce") == {("produce", "fresh fruits"), ("produce", "fresh vegetables")}
    assert CatalogRetriever(PRODUCTS, page=1).categories("milk") == {("dairy eggs", "milk")}  # first page only


def understanding(*rewrites: tuple[RewriteType, str]) -> Understanding:
    return Understanding(rewrites=[Rewrite(kind, text) for kind, text in rewrites])


def test_coverage_and_precision_by_hand(retriever: CatalogRetriever, history: ConversionHistory) -> None:
    evaluated = {
        # converted to dairy eggs > milk and > soy lactosefree
        "milk": understanding(
            (SUB, "almond milk"),  # retrieves soy lactosefree: precise
            (BROAD, "dairy"),  # retrieves both milks: precise
            (SYN, "moo juice"),  # retrieves nothing: not precise
        ),
        # converted to produce > fresh fruits
        "banana": understanding((SYN, "bananas"), (SUB, "tomatoes")),  # precise; fresh vegetables: not precise
        "Ice Cream": understanding((BROAD, "frozen")),  # normalized to "ice cream": frozen > ice cream ice, precise
        "cookies": understanding((SUB, "vanilla wafers")),  # no conversions: unjudged
        "eggs": understanding(),  # no rewrite at all
    }
    scores = RewriteScores()
    scores.add_all(evaluated, evaluated.values(), retriever, history)
    result = scores.to_json()
    assert (result["queries"], result["queries_with_conversions"]) == (5, 3)
    substitute, broader, synonym = (result["per_type"][t.value] for t in (SUB, BROAD, SYN))
    assert substitute == {
        "coverage": 0.6, "precision": 0.5, "queries_covered": 3, "kept": 3, "judged": 2, "precise": 1,
        "unjudged": 1, "retrieves_nothing": 0,
    }  # fmt: skip
    assert (broader["coverage"], broader["precision"], broader["judged"]) == (0.4, 1.0, 2)
    assert (synonym["coverage"], synonym["precision"], synonym["retrieves_nothing"]) == (0.4, 0.5, 1)
    assert result["any"] == {
        "coverage": 0.8, "precision": 0.6667, "queries_covered": 4, "kept": 7, "judged": 6, "precise": 4,
        "unjudged": 1, "retrieves_nothing": 1,
    }  # fmt: skip


def test_two_rewrites_of_one_type_cover_the_query_once(retriever: CatalogRetriever, history: ConversionHistory) -> None:
    scores = RewriteScores()
    scores.add("milk", understanding((SUB, "almond milk"), (SUB, "whole milk")), retriever, history)
    substitute = scores.to_json()["per_type"]["substitute"]
    assert (substitute["coverage"], substitute["kept"], substitute["precision"]) == (1.0, 2, 1.0)


def test_nothing_evaluated_and_no_history(retriever: CatalogRetriever) -> None:
    nothing = RewriteScores().to_json()["any"]
    assert (nothing["coverage"], nothing["precision"]) == (0.0, None)  # no rewrite is not a wrong rewrite

    class NoHistory:
        def get(self, query: str) -> None:
            return None

    scores = RewriteScores()
    scores.add("milk", understanding((SUB, "almond milk")), retriever, NoHistory())
    result = scores.to_json(judging=False)
    assert result["per_type"]["substitute"]["coverage"] == 1.0
    assert result["per_type"]["substitute"]["precision"] is None and result["any"]["precision"] is None
