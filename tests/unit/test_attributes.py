"""The attribute vocabulary: seed terms, size and percentage patterns, catalog-built terms, JSON."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.catalog.attributes import AttributeKind, AttributeMatch, AttributeTerm, AttributeVocabulary
from services.normalize import normalize_query

CLAIM, SIZE, FLAVOUR, FORM, OTHER = (
    AttributeKind.CLAIM,
    AttributeKind.SIZE,
    AttributeKind.FLAVOUR,
    AttributeKind.FORM,
    AttributeKind.OTHER,
)


@pytest.fixture(scope="module")
def seed() -> AttributeVocabulary:
    return AttributeVocabulary.seed()


def found(vocab: AttributeVocabulary, text: str) -> list[tuple[str, str, AttributeKind]]:
    normalized = normalize_query(text)
    return [(m.text, m.canonical, m.kind) for m in vocab.match(normalized)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "2% reduced-fat ultra-pasteurized chocolate milk",
            [
                ("2%", "2%", SIZE),
                ("reduced fat", "reduced fat", CLAIM),
                ("ultra pasteurized", "ultra pasteurized", CLAIM),
                ("chocolate", "chocolate", FLAVOUR),
            ],
            id="milk-claims",
        ),
        pytest.param("bread no gluten", [("no gluten", "gluten free", CLAIM)], id="no-gluten"),
        pytest.param("Gluten-Free Pasta", [("gluten free", "gluten free", CLAIM)], id="gluten-free-hyphen"),
        pytest.param("gf bread", [("gf", "gluten free", CLAIM)], id="gf"),
        pytest.param("x large zip lock", [("x large", "x large", SIZE)], id="x-large"),
        pytest.param("X-Large Zip-Lock bags", [("x large", "x large", SIZE)], id="x-large-hyphens"),
        pytest.param("extra large eggs", [("extra large", "x large", SIZE)], id="extra-large"),
        pytest.param("12 ounce", [("12 ounce", "12 oz", SIZE)], id="12-ounce"),
        pytest.param("12ounce", [("12 ounce", "12 oz", SIZE)], id="12-ounce-glued"),
        pytest.param("12 oz", [("12 oz", "12 oz", SIZE)], id="12-oz"),
        pytest.param("12 fl. oz.", [("12 fl oz", "12 fl oz", SIZE)], id="fl-oz"),
        pytest.param("1.5L", [("1.5 l", "1.5 l", SIZE)], id="litre"),
        pytest.param("a 1.5 ltr bottle", [("1.5 ltr", "1.5 l", SIZE)], id="ltr"),
        pytest.param("2.5 pounds", [("2.5 pounds", "2.5 lb", SIZE)], id="pounds"),
        pytest.param("12 count eggs", [("12 count", "12 ct", SIZE)], id="count"),
        pytest.param("6 pk", [("6 pk", "6 pack", SIZE)], id="pack"),
        pytest.param("1/2 gallon milk", [("1/2 gallon", "1/2 gal", SIZE)], id="half-gallon-fraction"),
        pytest.param("Half Gallon Milk", [("half gallon", "1/2 gal", SIZE)], id="half-gallon-words"),
        pytest.param("2 % milk", [("2%", "2%", SIZE)], id="percent-apart"),
        pytest.param("3.25% milk", [("3.25%", "3.25%", SIZE)], id="percent-decimal"),
        pytest.param(
            "Organic Whole Milk, 1 Gallon",
            [("organic", "organic", CLAIM), ("whole", "whole", FORM), ("1 gallon", "1 gal", SIZE)],
            id="organic-whole-milk",
        ),
        pytest.param(
            "sour cream & onion chips 1.5oz",
            [("sour cream and onion", "sour cream and onion", FLAVOUR), ("1.5 oz", "1.5 oz", SIZE)],
            id="longest-flavour",
        ),
        pytest.param(
            "nonfat vanilla greek yogurt 32 oz",
            [("nonfat", "fat free", CLAIM), ("vanilla", "vanilla", FLAVOUR), ("32 oz", "32 oz", SIZE)],
            id="nonfat",
        ),
        pytest.param("decaf coffee", [("decaf", "caffeine free", CLAIM), ("coffee", "coffee", FLAVOUR)], id="decaf"),
        pytest.param("Non-GMO tortilla chips", [("non gmo", "non gmo", CLAIM)], id="non-gmo"),
        pytest.param("v8 7up", [], id="brands-with-digits-are-not-sizes"),
        pytest.param("milk", [], id="nothing"),
        pytest.param("", [], id="empty"),
    ],
)
def test_match(seed: AttributeVocabulary, text: str, expected: list[tuple[str, str, AttributeKind]]) -> None:
    assert found(seed, text) == expected


def test_match_spans_index_the_normalized_text(seed: AttributeVocabulary) -> None:
    normalized = normalize_query("Horizon Organic 2% Reduced Fat Chocolate Milk, 8 oz")
    matches = seed.match(normalized)
    assert [m.canonical for m in matches] == ["organic", "2%", "reduced fat", "chocolate", "8 oz"]
    for m in matches:
        assert normalized[m.start : m.end] == m.text
    assert [m.start for m in matches] == sorted(m.start for m in matches)


def test_match_respects_and_marks_taken(seed: AttributeVocabulary) -> None:
    normalized = "organic chocolate milk 12 oz"
    taken = [False] * len(normalized)
    taken[0:7] = [True] * 7  # "organic" already claimed, e.g. by a brand "Organic Valley"
    matches = seed.match(normalized, taken)
    assert [m.canonical for m in matches] == ["chocolate", "12 oz"]
    marked = {i for i, t in enumerate(taken) if t}
    expected = set(range(7)) | set(range(8, 17)) | set(range(23, 28))
    assert marked == expected


_TOKENS = [
    "2%", "2", "%", "12", "oz", "fl", "ounce", "1.5", "l", "1/2", "gallon", "half", "reduced", "fat", "free",
    "gluten", "no", "ultra", "pasteurized", "chocolate", "milk", "organic", "x", "large", "extra", "sour",
    "cream", "and", "onion", "salt", "natural", "100%", "lb", "count", "pack", "gf", "v8", "whole", "medium",
]  # fmt: skip


@given(st.lists(st.sampled_from(_TOKENS), max_size=14))
def test_matches_never_overlap(words: list[str]) -> None:
    vocab = AttributeVocabulary.seed()
    normalized = normalize_query(" ".join(words))
    matches = vocab.match(normalized)
    covered: set[int] = set()
    for m in matches:
        assert normalized[m.start : m.end] == m.text
        span = set(range(m.start, m.end))
        assert not span & covered, (normalized, matches)
        covered |= span
        # Matches sit on token boundaries.
        assert m.start == 0 or normalized[m.start - 1] == " "
        assert m.end == len(normalized) or normalized[m.end] == " "


def test_sizes_win_over_claims_and_never_share_characters(seed: AttributeVocabulary) -> None:
    # "100%" is a percentage pattern; the claim can only take what is left.
    matches = seed.match("100% natural juice 64 fl oz")
    kinds = {m.text: m.kind for m in matches}
    assert kinds == {"100%": SIZE, "natural": CLAIM, "64 fl oz": SIZE}


def test_100_percent_natural_is_a_percentage_and_a_claim(seed: AttributeVocabulary) -> None:
    # Patterns match first, so "100% natural" is never one term: no alias may pretend otherwise.
    assert seed.canonical_of("100% Natural") is None
    assert found(seed, "100% natural") == [("100%", "100%", SIZE), ("natural", "all natural", CLAIM)]


def test_claim_does_not_swallow_the_product(seed: AttributeVocabulary) -> None:
    assert found(seed, "reduced fat milk") == [("reduced fat", "reduced fat", CLAIM)]


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("12 ounce", "12 oz"),
        ("12 OZ.", "12 oz"),
        ("gluten-free", "gluten free"),
        ("No Gluten", "gluten free"),
        ("2 %", "2%"),
        ("XL", "x large"),
        ("Half Gallon", "1/2 gal"),
        ("Ultra-Pasteurised", "ultra pasteurized"),
        ("unknown thing", None),
        ("12 oz milk", None),  # more than one attribute
        ("", None),
    ],
)
def test_canonical_of(seed: AttributeVocabulary, text: str, canonical: str | None) -> None:
    assert seed.canonical_of(text) == canonical


def test_lookup_by_surface_form(seed: AttributeVocabulary) -> None:
    term = seed.lookup("Without Gluten")
    assert term is not None
    assert (term.canonical, term.kind) == ("gluten free", CLAIM)
    assert "no gluten" in term.aliases and "gluten free" in term.aliases
    assert seed.lookup("12 oz") is None  # sizes are patterns, not terms, until a catalog uses them
    assert seed.lookup("milk") is None
    assert "organic" in seed and "gluten-free" not in seed  # membership is by canonical


def test_seed_terms_are_normalized_and_kinds_are_right(seed: AttributeVocabulary) -> None:
    for term in seed.terms.values():
        assert term.canonical == normalize_query(term.canonical)
        assert term.aliases[0] == term.canonical
        assert all(a == normalize_query(a) and a for a in term.aliases)
        assert len(set(term.aliases)) == len(term.aliases)
    assert seed.terms["organic"].kind is CLAIM
    assert seed.terms["chocolate"].kind is FLAVOUR
    assert seed.terms["shredded"].kind is FORM
    assert seed.terms["x large"].kind is SIZE
    assert all(t.product_count == 0 for t in seed.terms.values())


NAMES = [
    "Organic Whole Milk, 1 Gallon",
    "Horizon Organic 2% Reduced Fat Chocolate Milk, 8 oz",
    "Greek Yogurt 32 oz",
    "Gluten-Free Pasta, 12 ounce",
    "Plain Bagels",
]
DECLARED = [
    ["organic", "Grass-Fed"],
    ["keto-friendly", "Whole30 Approved"],
    ["whole30 approved", "", "!!!", "12 oz"],
    ["Non-GMO Project Verified"],
    [],
]


@pytest.fixture(scope="module")
def built() -> AttributeVocabulary:
    return AttributeVocabulary.build(NAMES, DECLARED)


def test_build_adds_unknown_declared_terms_as_other(built: AttributeVocabulary, seed: AttributeVocabulary) -> None:
    term = built.terms["whole30 approved"]
    assert term.kind is OTHER
    assert term.aliases == ("whole30 approved",)
    assert term.product_count == 2  # declared twice, spelled two ways
    assert "whole30 approved" not in seed
    # Blank and punctuation-only declarations add nothing.
    assert "" not in built.terms
    assert [t for t in built.terms.values() if t.kind is OTHER] == [term]


def test_build_maps_declared_surface_forms_to_known_terms(built: AttributeVocabulary) -> None:
    assert built.terms["keto"].product_count == 1  # "keto-friendly"
    assert built.terms["grass fed"].product_count == 1  # "Grass-Fed"
    assert built.terms["non gmo"].product_count == 1  # "Non-GMO Project Verified"
    assert built.terms["keto"].kind is CLAIM


def test_build_counts_terms_in_names(built: AttributeVocabulary) -> None:
    # "organic": two names and one declaration.
    assert built.terms["organic"].product_count == 3
    assert built.terms["gluten free"].product_count == 1
    assert built.terms["chocolate"].product_count == 1
    assert built.terms["whole"].product_count == 1
    # Sizes seen in the catalog become terms, with counts.
    assert built.terms["12 oz"].kind is SIZE
    assert built.terms["12 oz"].product_count == 2  # "12 ounce" in a name, "12 oz" declared
    assert built.terms["32 oz"].product_count == 1
    assert built.terms["1 gal"].product_count == 1
    assert built.terms["2%"].product_count == 1
    assert built.terms["vanilla"].product_count == 0


def test_built_terms_are_matched_in_queries(built: AttributeVocabulary) -> None:
    assert found(built, "Whole30-Approved chicken 12oz") == [
        ("whole30 approved", "whole30 approved", OTHER),
        ("12 oz", "12 oz", SIZE),
    ]


def test_build_keeps_the_seed(built: AttributeVocabulary, seed: AttributeVocabulary) -> None:
    assert set(seed.terms) <= set(built.terms)
    assert len(built) == len(seed) + len({"whole30 approved", "12 oz", "32 oz", "1 gal", "2%", "8 oz"})


def test_add_merges_aliases_of_an_existing_term() -> None:
    vocab = AttributeVocabulary([AttributeTerm("spicy", FLAVOUR, ("spicy",))])
    vocab.add(AttributeTerm("spicy", FLAVOUR, ("spicy", "hot n spicy")))
    assert vocab.terms["spicy"].aliases == ("spicy", "hot n spicy")
    assert vocab.lookup("Hot 'n Spicy") is vocab.terms["spicy"]
    assert len(vocab) == 1


def test_first_term_keeps_a_shared_surface_form() -> None:
    vocab = AttributeVocabulary(
        [AttributeTerm("light", CLAIM, ("light", "lite")), AttributeTerm("lite brand", OTHER, ("lite",))]
    )
    assert vocab.lookup("lite").canonical == "light"  # type: ignore[union-attr]


@pytest.mark.parametrize("vocab_name", ["seed", "built"])
def test_json_round_trip(vocab_name: str, request: pytest.FixtureRequest) -> None:
    vocab: AttributeVocabulary = request.getfixturevalue(vocab_name)
    rows = vocab.to_json()
    again = AttributeVocabulary.from_json(rows)
    assert again.to_json() == rows
    assert {k: (t.kind, t.aliases, t.product_count) for k, t in again.terms.items()} == {
        k: (t.kind, t.aliases, t.product_count) for k, t in vocab.terms.items()
    }
    for text in [*NAMES, "whole30 approved bread no gluten 2 % 12oz", "100% natural lite"]:
        normalized = normalize_query(text)
        assert again.match(normalized) == vocab.match(normalized)


def test_json_rows_are_plain_and_sorted(built: AttributeVocabulary) -> None:
    rows = built.to_json()
    assert all(set(r) == {"canonical", "kind", "aliases", "products"} for r in rows)
    keys = [(str(r["kind"]), str(r["canonical"])) for r in rows]
    assert keys == sorted(keys)
    assert {"canonical": "whole30 approved", "kind": "other", "aliases": ["whole30 approved"], "products": 2} in rows


def test_attribute_match_is_plain_data() -> None:
    m = AttributeMatch(0, 4, "2%", "2%", SIZE)
    assert m == AttributeMatch(0, 4, "2%", "2%", SIZE)
    with pytest.raises(AttributeError):
        m.start = 1  # type: ignore[misc]
