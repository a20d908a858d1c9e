"""The catalog-lexicon tagger: precedence, offsets, canonical values, category ranking, and a light import.

Pinned on a small hand-built catalog (every expectation readable from the products below) and
on the shipped demo catalog (what the engine actually serves).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from services.catalog.artifacts import Catalog, build_catalog
from services.catalog.demo import demo_files
from services.catalog.embedding_index import CatalogEmbeddings, EmbeddedSet
from services.catalog.model import Product, format_path
from services.catalog.reader import read_catalog
from services.domain import Role, Tag
from services.normalize import normalize_query
from services.tagging import SUGGESTED_PRIOR_WEIGHT, CategoryIndexMissing, LexiconTagger

PRODUCTS = [
    Product("1", "Canyon Bakehouse Gluten Free Bread", "Canyon Bakehouse", ("bakery", "bread"), ("gluten free",)),
    Product("2", "Whole Wheat Bread", "Dave's Killer Bread", ("bakery", "bread")),
    Product("3", "Horizon Organic 2% Reduced Fat Chocolate Milk, 8 oz", "Horizon Organic", ("dairy eggs", "milk")),
    Product("4", "Organic Whole Milk", "Horizon Organic", ("dairy eggs", "milk"), ("organic",)),
    Product("5", "Bag of Organic Bananas", "", ("produce", "fresh fruits"), ("organic",)),
    Product("6", "Banana", "", ("produce", "fresh fruits")),
    Product("7", "Ziploc Storage Bags, X Large", "Ziploc", ("household", "food storage")),
    Product("8", "Banana Bread", "", ("bakery", "bread")),
    Product("9", "Peanut Butter Cookies", "", ("snacks", "cookies cakes")),
    Product("10", "Creamy Peanut Butter", "Jif", ("pantry", "spreads")),
    Product("11", "Crunchy Peanut Butter", "Jif", ("pantry", "spreads")),
    Product("12", "Chocolate Sandwich Cookies", "Oreo", ("snacks", "cookies cakes")),
]

Spans = list[tuple[str, str, str]]  # (role, text, canonical)


@pytest.fixture(scope="module")
def small() -> LexiconTagger:
    return LexiconTagger(build_catalog(PRODUCTS, embedder=None))


@pytest.fixture(scope="module")
def demo() -> LexiconTagger:
    return LexiconTagger(build_catalog(read_catalog(demo_files()[0]).products, embedder=None))


def spans(tagger: LexiconTagger, query: str) -> Spans:
    normalized = normalize_query(query)
    tags = tagger.tag(normalized)
    for tag in tags:
        assert normalized[tag.start : tag.end] == tag.text  # offsets index the normalized query
    return [(t.role.value, t.text, t.canonical) for t in tags]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        pytest.param("bread no gluten", [("product", "bread", "bread"), ("attribute", "no gluten", "gluten free")],
                     id="negation-is-the-claim"),
        pytest.param("x large zip lock", [("attribute", "x large", "x large")], id="unknown-words-stay-untagged"),
        pytest.param("X-Large Ziploc bags",
                     [("attribute", "x large", "x large"), ("brand", "ziploc", "Ziploc"), ("product", "bags", "bags")],
                     id="size-brand-product"),
        pytest.param(
            "2% reduced-fat ultra-pasteurized chocolate milk",
            [("attribute", "2%", "2%"), ("attribute", "reduced fat", "reduced fat"),
             ("attribute", "ultra pasteurized", "ultra pasteurized"), ("attribute", "chocolate", "chocolate"),
             ("product", "milk", "milk")],
            id="flavour-before-the-product",
        ),
        pytest.param("organic bananas", [("attribute", "organic", "organic"), ("product", "bananas", "bananas")],
                     id="claim-and-plural-product"),
        pytest.param("banana", [("product", "banana", "bananas")], id="lone-flavour-is-the-product"),
        pytest.param("chocolate banana", [("attribute", "chocolate", "chocolate"), ("product", "banana", "bananas")],
                     id="last-flavour-is-the-product"),
        pytest.param("banana bread", [("attribute", "banana", "banana"), ("product", "bread", "bread")],
                     id="flavour-of-a-product"),
        pytest.param("peanut butter cookies",
                     [("attribute", "peanut butter", "peanut butter"), ("product", "cookies", "cookies")],
                     id="two-word-flavour"),
        pytest.param("peanut butter", [("product", "peanut butter", "peanut butter")], id="two-word-product"),
        pytest.param("Horizon Organic", [("brand", "horizon organic", "Horizon Organic")], id="brand-beats-claim"),
        pytest.param("Dave's Killer Bread", [("brand", "daves killer bread", "Dave's Killer Bread")],
                     id="brand-beats-product"),
        pytest.param("OREO", [("brand", "oreo", "Oreo")], id="brand-only"),
        pytest.param(
            "jif creamy peanut butter 16oz",
            [("brand", "jif", "Jif"), ("attribute", "creamy", "creamy"),
             ("product", "peanut butter", "peanut butter"), ("attribute", "16 oz", "16 oz")],
            id="everything",
        ),
        pytest.param("quinoa", [], id="nothing-known"),
        pytest.param("cookies milk", [("product", "milk", "milk")], id="one-product-the-last-in-a-type-last-catalog"),
        pytest.param("milk and bread", [("product", "milk", "milk"), ("product", "bread", "bread")],
                     id="a-conjunction-names-two"),
    ],
)  # fmt: skip
def test_small_catalog(small: LexiconTagger, query: str, expected: Spans) -> None:
    assert spans(small, query) == expected


def test_a_type_first_catalog_keeps_the_first_product_of_a_query() -> None:
    names = [
        ("Молоко Простоквашино ультрапастеризованное 3.2% 1л", "Простоквашино", "молочные > молоко"),
        ("Молоко Домик в деревне 2.5% 900мл", "Домик в деревне", "молочные > молоко"),
        ("Молоко Веселый молочник 1.5%", "Веселый молочник", "молочные > молоко"),
        ("Кефир Простоквашино 1% 930мл", "Простоквашино", "молочные > кефир"),
        ("Кефир Агуша детский 3.2%", "Агуша", "молочные > кефир"),
        ("Хлеб Бородинский нарезка 400г", "Хлебозавод", "хлеб > хлеб"),
        ("Хлеб Дарницкий 700г", "Хлебозавод", "хлеб > хлеб"),
    ]
    products = [Product(str(i), name, brand, tuple(path.split(" > "))) for i, (name, brand, path) in enumerate(names)]
    tagger = LexiconTagger(build_catalog(products, embedder=None, locale="ru-RU"))
    assert tagger.catalog.manifest["learnt"]["types"]["convention"] == "type-first"
    assert spans(tagger, "кефир молоко") == [("product", "кефир", "кефир")]
    assert spans(tagger, "молоко и хлеб") == [("product", "молоко", "молоко"), ("product", "хлеб", "хлеб")]


def test_offsets_point_into_the_normalized_query(small: LexiconTagger) -> None:
    tags = small.tag("bread no gluten")
    assert [(t.start, t.end) for t in tags] == [(0, 5), (6, 15)]
    assert all(t.confidence == 1.0 for t in tags)  # exact lexicon matches


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("bread no gluten", [("product", "bread", "bread"), ("attribute", "no gluten", "gluten free")]),
        ("x large zip lock", [("attribute", "x large", "x large")]),
        (
            "2% reduced-fat ultra-pasteurized chocolate milk",
            [("attribute", "2%", "2%"), ("attribute", "reduced fat", "reduced fat"),
             ("attribute", "ultra pasteurized", "ultra pasteurized"), ("attribute", "chocolate", "chocolate"),
             ("product", "milk", "milk")],
        ),
        ("organic bananas", [("attribute", "organic", "organic"), ("product", "bananas", "banana")]),
        ("banana", [("product", "banana", "banana")]),
        ("Kellogg's Special K", [("brand", "kelloggs", "Kellogg's"), ("brand", "special k", "Special K")]),
        ("granola bars", [("product", "granola bars", "granola bars")]),
        # The brand wins "baby" from the type "baby spinach"; a second look still finds "spinach".
        ("happy baby spinach", [("brand", "happy baby", "Happy Baby"), ("product", "spinach", "spinach")]),
    ],
)  # fmt: skip
def test_demo_catalog(demo: LexiconTagger, query: str, expected: Spans) -> None:
    assert spans(demo, query) == expected


def test_every_demo_brand_alone_is_one_brand_tag(demo: LexiconTagger) -> None:
    for entry in demo.catalog.brands.entries.values():
        assert spans(demo, entry.canonical) == [("brand", entry.key, entry.canonical)], entry.canonical


def test_demo_product_names_tag_consistently(demo: LexiconTagger) -> None:
    """On every demo product name: tags in order, never overlapping, canonical values the catalog knows."""
    catalog = demo.catalog
    brand_names = {e.canonical for e in catalog.brands.entries.values()}
    for product in catalog.products:
        normalized = normalize_query(product.name)
        tags = demo.tag(normalized)
        ends = [0] + [t.end for t in tags]
        assert all(t.start >= end for t, end in zip(tags, ends, strict=False)), product.name
        for tag in tags:
            if tag.role is Role.BRAND:
                assert tag.canonical in brand_names
            elif tag.role is Role.PRODUCT:
                assert tag.canonical in catalog.types.entries
            else:
                assert tag.canonical in catalog.attributes or catalog.attributes.canonical_of(tag.text) == tag.canonical
        assert sum(t.role is Role.BRAND for t in tags) >= bool(product.brand and catalog.brands.lookup(product.brand))


def test_version_names_the_tagger_and_the_catalog_build(small: LexiconTagger) -> None:
    assert small.version == "catalog-lexicon-v2+catalog.unsaved"
    catalog = build_catalog(PRODUCTS, embedder=None)
    catalog.manifest["build"] = "20261125T000000Z-abc"
    assert LexiconTagger(catalog).version == "catalog-lexicon-v2+catalog.20261125T000000Z-abc"


# --- categories -------------------------------------------------------------------------------


def with_category_vectors(vectors: dict[str, list[float]]) -> LexiconTagger:
    """The small catalog with hand-made unit category vectors (no model): cosine is readable."""
    catalog: Catalog = build_catalog(PRODUCTS, embedder=None)
    keys = sorted(vectors)
    matrix = np.array([vectors[k] for k in keys], dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    empty = EmbeddedSet([], np.zeros((0, matrix.shape[1]), dtype=np.float32))
    catalog.embeddings = CatalogEmbeddings("hand-made", EmbeddedSet(keys, matrix), empty, empty)
    return LexiconTagger(catalog)


VECTORS = {
    "produce > fresh fruits": [1.0, 0.0, 0.0],
    "snacks > cookies cakes": [0.9, 0.1, 0.0],
    "dairy eggs > milk": [0.0, 1.0, 0.0],
    "bakery > bread": [0.0, 0.0, 1.0],
}


def test_categories_rank_by_cosine_best_first() -> None:
    tagger = with_category_vectors(VECTORS)
    best = tagger.nearest_categories(np.array([0.0, 0.8, 0.6], dtype=np.float32), k=2)
    assert [format_path(c.path) for c in best] == ["dairy eggs > milk", "bakery > bread"]
    assert [c.score for c in best] == pytest.approx([0.8, 0.6])


def test_the_tagged_product_moves_its_catalog_category_up_but_scores_stay_cosine() -> None:
    tagger = with_category_vectors(VECTORS)
    query = np.array([0.9, 0.1, 0.0], dtype=np.float32)
    query /= np.linalg.norm(query)
    plain = tagger.nearest_categories(query, k=2)
    assert format_path(plain[0].path) == "snacks > cookies cakes"  # cosine alone: the closer vector wins
    bananas = [Tag(Role.PRODUCT, 0, 7, "bananas", "bananas")]
    assert tagger.nearest_categories(query, k=2, tags=bananas) == plain  # no weight, no prior
    ranked = tagger.nearest_categories(query, k=2, tags=bananas, prior_weight=SUGGESTED_PRIOR_WEIGHT)
    assert [format_path(c.path) for c in ranked] == ["produce > fresh fruits", "snacks > cookies cakes"]
    assert {format_path(c.path): c.score for c in ranked} == pytest.approx(
        {format_path(c.path): c.score for c in plain}
    )


def test_category_prior_falls_back_to_the_brand(small: LexiconTagger) -> None:
    assert small.category_prior([Tag(Role.BRAND, 0, 3, "jif", "Jif")]) == {"pantry > spreads": 1.0}
    assert small.category_prior([Tag(Role.PRODUCT, 0, 6, "quinoa", "quinoa")]) == {}


def test_batch_and_errors() -> None:
    tagger = with_category_vectors(VECTORS)
    batch = tagger.nearest_categories_batch(np.eye(3, dtype=np.float32), k=10)
    assert [len(row) for row in batch] == [4, 4, 4]  # k is capped by the number of paths
    with pytest.raises(ValueError, match="dimension 3"):
        tagger.nearest_categories(np.ones(5, dtype=np.float32))
    with pytest.raises(ValueError, match="one tag list per query"):
        tagger.nearest_categories_batch(np.eye(3, dtype=np.float32), tags=[[]], prior_weight=0.3)
    with pytest.raises(CategoryIndexMissing, match="no category embeddings"):
        LexiconTagger(build_catalog(PRODUCTS, embedder=None)).nearest_categories(np.ones(3, dtype=np.float32))


def test_importing_the_tagger_loads_no_model_or_triton_code() -> None:
    """It is the in-process fallback when Triton is down: it must load fast and alone."""
    code = (
        "import sys, services.tagging; "
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'tritonclient', 'triton_python_backend_utils') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "[]"
