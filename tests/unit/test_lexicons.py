"""Brand and product-type lexicons: aliases, lookup, product-type extraction, plural merging, JSON."""

from __future__ import annotations

import pytest

from services.catalog.attributes import AttributeVocabulary
from services.catalog.lexicons import (
    Lexicon,
    LexiconEntry,
    brand_aliases,
    build_brand_lexicon,
    build_product_type_lexicon,
    plural_variants,
)
from services.catalog.model import CategoryPath, Product, parse_path
from services.normalize import normalize_query

# --- brand aliases ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("brand", "expected"),
    [
        pytest.param("Annie's", {"annies", "annie", "annie s"}, id="possessive"),
        pytest.param("ANNIE’S", {"annies", "annie", "annie s"}, id="possessive-upper-curly"),
        pytest.param(
            "Ben & Jerry's",
            {"ben and jerrys", "ben and jerry", "ben and jerry s", "ben jerrys", "ben jerry", "ben jerry s"},
            id="ampersand-and-possessive",
        ),
        pytest.param("BEN&JERRY'S", {"ben and jerrys", "ben jerrys", "ben jerry"}, id="glued-ampersand"),
        pytest.param("The Laughing Cow", {"the laughing cow", "laughing cow"}, id="leading-the"),
        pytest.param("Kellogg Company", {"kellogg company", "kellogg"}, id="company"),
        pytest.param("Kettle Brand", {"kettle brand", "kettle"}, id="brand-suffix"),
        pytest.param(
            "Amy's Kitchen Inc.", {"amys kitchen inc", "amys kitchen", "amy kitchen", "amy s kitchen"}, id="inc"
        ),
        pytest.param("Newman's Own", {"newmans own", "newman own", "newman s own"}, id="possessive-mid-name"),
        pytest.param("Dr. Pepper", {"dr pepper"}, id="dots"),
        pytest.param("Horizon Organic", {"horizon organic"}, id="plain"),
        pytest.param("7UP", {"7up"}, id="digits"),
        pytest.param("V8", {"v8"}, id="v8"),
    ],
)
def test_brand_aliases_include(brand: str, expected: set[str]) -> None:
    aliases = brand_aliases(brand)
    assert expected <= set(aliases)
    assert aliases[0] == normalize_query(brand)  # the normalized brand comes first
    assert len(set(aliases)) == len(aliases)
    assert all(a and normalize_query(a) == a for a in aliases)


@pytest.mark.parametrize(
    ("brand", "exact"),
    [("Horizon Organic", ("horizon organic",)), ("7UP", ("7up",)), ("", ()), ("  !! ", ()), ("The", ("the",))],
)
def test_brand_aliases_exact(brand: str, exact: tuple[str, ...]) -> None:
    assert brand_aliases(brand) == exact


def test_one_word_brands_keep_their_word() -> None:
    # A lone "the", "and" or corporate word is the whole brand, never stripped to nothing.
    assert brand_aliases("Brand") == ("brand",)
    assert brand_aliases("Company") == ("company",)
    assert brand_aliases("and") == ("and",)


@pytest.mark.parametrize(
    ("brand", "wanted", "unwanted"),
    [("The Hershey Company", "hershey", None), ("McCormick & Co.", "mccormick", "mccormick and")],
    ids=["the-and-suffix", "and-and-suffix"],
)
def test_brand_alias_rules_compose(brand: str, wanted: str, unwanted: str | None) -> None:
    aliases = brand_aliases(brand)
    assert wanted in aliases
    assert unwanted not in aliases


# --- plural variants --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("term", "includes"),
    [
        ("cookies", {"cookies", "cookie"}),
        ("cookie", {"cookie", "cookies"}),
        ("berries", {"berries", "berry"}),
        ("berry", {"berry", "berries"}),
        ("peaches", {"peaches", "peach"}),
        ("peach", {"peach", "peaches"}),
        ("boxes", {"boxes", "box"}),
        ("box", {"box", "boxes"}),
        ("potatoes", {"potatoes", "potato"}),
        ("eggs", {"eggs", "egg"}),
        ("egg", {"egg", "eggs"}),
        ("sandwich cookies", {"sandwich cookies", "sandwich cookie"}),
        ("greek yogurt", {"greek yogurt", "greek yogurts"}),
        ("glass", {"glass", "glasses"}),
    ],
)
def test_plural_variants(term: str, includes: set[str]) -> None:
    variants = plural_variants(term)
    assert variants[0] == term
    assert includes <= set(variants)


def test_plural_variants_leave_double_s_and_digits_alone() -> None:
    assert "glas" not in plural_variants("glass")
    assert plural_variants("v8") == ("v8",)


# --- the brand lexicon ------------------------------------------------------------------------

DAIRY_MILK: CategoryPath = ("dairy eggs", "milk")
ICE_CREAM: CategoryPath = ("frozen", "ice cream ice")


def p(pid: str, name: str, brand: str, path: str) -> Product:
    return Product(pid, name, brand, parse_path(path))


BRANDED = [
    p("1", "Chocolate Fudge Brownie Ice Cream", "Ben & Jerry's", "frozen > ice cream ice"),
    p("2", "Half Baked Ice Cream", "Ben & Jerry's", "frozen > ice cream ice"),
    p("3", "Cherry Garcia Frozen Yogurt", "BEN & JERRY'S", "frozen > frozen yogurt"),
    p("4", "Organic Whole Milk, 1 Gallon", "Horizon Organic", "dairy eggs > milk"),
    p("5", "Organic Half & Half", "Horizon Organic", "dairy eggs > cream"),
    p("6", "Macaroni & Cheese", "Annie's", "dry goods pasta > instant foods"),
    p("7", "Original Light Creamy Swiss Wedges", "The Laughing Cow", "dairy eggs > packaged cheese"),
    p("8", "Bananas", "", "produce > fresh fruits"),
    p("9", "Corn Flakes", "Kellogg Company", "breakfast > cereal"),
    p("10", "Frosted Flakes", "Kellogg Company", "breakfast > cereal"),
]


@pytest.fixture(scope="module")
def brands() -> Lexicon:
    return build_brand_lexicon(BRANDED)


def test_brand_lexicon_entries(brands: Lexicon) -> None:
    assert set(brands.entries) == {"ben and jerrys", "horizon organic", "annies", "the laughing cow", "kellogg company"}
    ben = brands.entries["ben and jerrys"]
    assert ben.canonical == "Ben & Jerry's"  # the spelling most products use
    assert ben.product_count == 3
    assert ben.categories == {ICE_CREAM: 2, ("frozen", "frozen yogurt"): 1}
    assert ben.top_categories(1) == [(ICE_CREAM, 2)]
    horizon = brands.entries["horizon organic"]
    assert horizon.top_categories() == [(("dairy eggs", "cream"), 1), (DAIRY_MILK, 1)]  # ties by path


@pytest.mark.parametrize(
    ("typed", "key"),
    [
        ("ben & jerry's", "ben and jerrys"),
        ("Ben and Jerrys", "ben and jerrys"),
        ("ben jerry", "ben and jerrys"),
        ("BEN&JERRY", "ben and jerrys"),
        ("annie", "annies"),
        ("Annies", "annies"),
        ("annie s", "annies"),
        ("laughing cow", "the laughing cow"),
        ("The Laughing Cow", "the laughing cow"),
        ("kellogg", "kellogg company"),
        ("horizon-organic", "horizon organic"),
    ],
)
def test_brand_lookup_by_alias(brands: Lexicon, typed: str, key: str) -> None:
    entry = brands.lookup(typed)
    assert entry is not None
    assert entry.key == key
    assert typed in brands


@pytest.mark.parametrize("typed", ["horizon", "jerry", "organic", "", "laughing"])
def test_brand_lookup_misses(brands: Lexicon, typed: str) -> None:
    assert brands.lookup(typed) is None
    assert typed not in brands


def test_brand_find_in_a_query(brands: Lexicon) -> None:
    query = normalize_query("Ben & Jerry's half baked and Laughing Cow 12 oz")
    hits = brands.find(query)
    assert [(h.text, h.value.key) for h in hits] == [
        ("ben and jerrys", "ben and jerrys"),
        ("laughing cow", "the laughing cow"),
    ]
    for h in hits:
        assert query[h.start : h.end] == h.text


def test_an_entrys_own_name_beats_another_entrys_alias() -> None:
    # "annie" is an alias of "Annie's" and the key of the brand "Annie"; the key wins, whatever the counts.
    lexicon = build_brand_lexicon(
        [
            p("1", "Mac", "Annie's", "a > b"),
            p("2", "Shells", "Annie's", "a > b"),
            p("3", "Chips", "Annie", "c"),
        ]
    )
    assert lexicon.lookup("annie").canonical == "Annie"  # type: ignore[union-attr]
    assert lexicon.lookup("annies").canonical == "Annie's"  # type: ignore[union-attr]


def test_unbranded_products_make_no_entry() -> None:
    lexicon = build_brand_lexicon([p("1", "Bananas", "", "produce"), p("2", "Limes", "  ", "produce")])
    assert len(lexicon) == 0


def test_brand_lexicon_json_round_trip(brands: Lexicon) -> None:
    rows = brands.to_json()
    again = Lexicon.from_json(rows)
    assert again.to_json() == rows
    assert set(again.entries) == set(brands.entries)
    for key, entry in brands.entries.items():
        copy = again.entries[key]
        assert (copy.canonical, copy.aliases, copy.product_count, copy.categories) == (
            entry.canonical,
            entry.aliases,
            entry.product_count,
            entry.categories,
        )
    assert again.lookup("ben jerry").key == "ben and jerrys"  # type: ignore[union-attr]
    # Rows are ordered by product count, then key.
    assert [r["key"] for r in rows][:2] == ["ben and jerrys", "horizon organic"]


def test_lexicon_entry_json_has_formatted_paths() -> None:
    entry = LexiconEntry("Oreo", "oreo", ("oreo",), 2, {("snacks", "cookies cakes"): 2})
    assert entry.to_json()["categories"] == [{"path": "snacks > cookies cakes", "products": 2}]
    assert LexiconEntry.from_json(entry.to_json()) == entry


# --- product types ----------------------------------------------------------------------------

# Instacart product names (products.csv), with the brands a catalog would give them.
GROCERIES = [
    p("1", "Chocolate Sandwich Cookies", "", "snacks > cookies cakes"),
    p("2", "Oreo Chocolate Sandwich Cookies", "Oreo", "snacks > cookies cakes"),
    p("3", "Organic Whole Milk, 1 Gallon", "Horizon Organic", "dairy eggs > milk"),
    p("4", "Horizon Organic 2% Reduced Fat Chocolate Milk, 8 oz", "Horizon Organic", "dairy eggs > milk"),
    p("5", "Organic Gala Apples 3 lb", "", "produce > fresh fruits"),
    p("6", "Honeycrisp Apple", "", "produce > fresh fruits"),
    p("7", "Marinara Pasta Sauce with Basil", "Rao's", "dry goods pasta > pasta sauce"),
    p("8", "Roasted Garlic Pasta Sauce", "Classico", "dry goods pasta > pasta sauce"),
    p("9", "Large Grade A Brown Eggs", "", "dairy eggs > eggs"),
    p("10", "Cage Free Large Egg", "", "dairy eggs > eggs"),
    p("11", "Cherry Greek Yogurt", "Chobani", "dairy eggs > yogurt"),
    p("12", "Non Fat Vanilla Greek Yogurt", "Fage", "dairy eggs > yogurt"),
    p("13", "Sea Salt Kettle Potato Chips", "Kettle Brand", "snacks > chips pretzels"),
    p("14", "Original Potato Chips", "Lay's", "snacks > chips pretzels"),
    p("15", "Banana", "", "produce > fresh fruits"),
    p("16", "Bag of Organic Bananas", "", "produce > fresh fruits"),
    p("17", "Grated Parmesan Cheese", "", "dairy eggs > packaged cheese"),
    p("18", "Shredded Mozzarella Cheese", "", "dairy eggs > packaged cheese"),
    p("19", "Uncured Genoa Salami", "", "deli > lunch meat"),
    p("20", "Ben & Jerry's Chocolate Fudge Brownie Ice Cream", "Ben & Jerry's", "frozen > ice cream ice"),
    p("21", "Half Baked Ice Cream", "Ben & Jerry's", "frozen > ice cream ice"),
    p("22", "Organic Half & Half", "Horizon Organic", "dairy eggs > cream"),
    p("23", "Half & Half", "", "dairy eggs > cream"),
    p("24", "Robust Golden Unsweetened Oolong Tea", "", "beverages > tea"),
]


@pytest.fixture(scope="module")
def grocery_lexicons() -> tuple[Lexicon, AttributeVocabulary, Lexicon, dict[str, str]]:
    brands = build_brand_lexicon(GROCERIES)
    attributes = AttributeVocabulary.build((g.name for g in GROCERIES), (g.attributes for g in GROCERIES))
    types, assigned = build_product_type_lexicon(GROCERIES, brands, attributes)
    return brands, attributes, types, assigned


@pytest.mark.parametrize(
    ("pid", "expected"),
    [
        ("1", "sandwich cookies"),  # shared by two products, so the two-word type is accepted
        ("2", "sandwich cookies"),  # the brand is not part of the type
        ("3", "milk"),  # "Organic Whole Milk, 1 Gallon"
        ("4", "milk"),  # every other word is the brand or an attribute
        ("5", "apples"),
        ("6", "apples"),  # "Honeycrisp Apple": singular merged into the plural spelling
        ("7", "pasta sauce"),  # "with Basil" cut
        ("8", "pasta sauce"),
        ("9", "eggs"),
        ("10", "eggs"),  # "Cage Free Large Egg"
        ("11", "greek yogurt"),
        ("12", "greek yogurt"),
        ("13", "potato chips"),
        ("14", "potato chips"),
        ("15", "banana"),
        ("16", "banana"),  # "Bananas" merged with "Banana"
        ("17", "cheese"),  # "parmesan cheese" has one product only
        ("18", "cheese"),
        ("19", "salami"),
        ("20", "ice cream"),
        ("21", "ice cream"),
        ("22", "half and half"),
        ("23", "half and half"),
        ("24", "tea"),  # a one-product long name falls back to its last word
    ],
)
def test_product_type_of_instacart_names(
    grocery_lexicons: tuple[Lexicon, AttributeVocabulary, Lexicon, dict[str, str]], pid: str, expected: str
) -> None:
    _, _, types, assigned = grocery_lexicons
    assert assigned[pid] == expected
    assert expected in types.entries


def test_product_type_entries(grocery_lexicons: tuple[Lexicon, AttributeVocabulary, Lexicon, dict[str, str]]) -> None:
    _, _, types, assigned = grocery_lexicons
    assert set(types.entries) == set(assigned.values())
    cookies = types.entries["sandwich cookies"]
    assert cookies.product_count == 2
    assert cookies.categories == {("snacks", "cookies cakes"): 2}
    assert "sandwich cookie" in cookies.aliases
    milk = types.entries["milk"]
    assert (milk.product_count, milk.categories) == (2, {DAIRY_MILK: 2})
    # Every product is counted once, under its type.
    assert sum(e.product_count for e in types.entries.values()) == len(assigned)


@pytest.mark.parametrize(
    ("typed", "key"),
    [("Sandwich Cookie", "sandwich cookies"), ("egg", "eggs"), ("apple", "apples"), ("bananas", "banana")],
)
def test_product_type_lookup_by_either_number(
    grocery_lexicons: tuple[Lexicon, AttributeVocabulary, Lexicon, dict[str, str]], typed: str, key: str
) -> None:
    _, _, types, _ = grocery_lexicons
    assert types.lookup(typed).key == key  # type: ignore[union-attr]


def test_singular_and_plural_merge_into_the_more_common_spelling() -> None:
    products = [
        p("1", "Brown Egg", "", "dairy eggs > eggs"),
        p("2", "Large Brown Eggs", "", "dairy eggs > eggs"),
        p("3", "Jumbo Eggs", "", "dairy eggs > eggs"),
        p("4", "Strawberry", "", "produce > fruit"),
        p("5", "Organic Strawberries", "", "produce > fruit"),
        p("6", "Strawberries", "", "produce > fruit"),
    ]
    brands = build_brand_lexicon(products)
    attributes = AttributeVocabulary.build((x.name for x in products), (x.attributes for x in products))
    types, assigned = build_product_type_lexicon(products, brands, attributes)
    assert set(types.entries) == {"eggs", "strawberries"}
    assert assigned == {"1": "eggs", "2": "eggs", "3": "eggs", "4": "strawberries", "5": "strawberries",
                        "6": "strawberries"}  # fmt: skip
    assert types.entries["eggs"].product_count == 3
    assert types.lookup("strawberry").key == "strawberries"  # type: ignore[union-attr]


def test_long_type_needs_support() -> None:
    products = [p("1", "Robust Golden Oolong Tea", "", "beverages > tea")]
    brands = build_brand_lexicon(products)
    attributes = AttributeVocabulary.build([products[0].name], [()])
    _, assigned = build_product_type_lexicon(products, brands, attributes)
    assert assigned == {"1": "tea"}
    _, assigned = build_product_type_lexicon(products, brands, attributes, min_support=1)
    assert assigned == {"1": "golden oolong tea"}


def test_product_type_lexicon_json_round_trip(
    grocery_lexicons: tuple[Lexicon, AttributeVocabulary, Lexicon, dict[str, str]],
) -> None:
    _, _, types, _ = grocery_lexicons
    rows = types.to_json()
    again = Lexicon.from_json(rows)
    assert again.to_json() == rows
    assert again.lookup("greek yogurts").key == "greek yogurt"  # type: ignore[union-attr]
