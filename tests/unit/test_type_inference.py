"""Product types learnt from small catalogs written in different naming conventions: the same rules, no list
of any one catalog's words (services/catalog/type_inference.py)."""

from __future__ import annotations

import pytest

from services.catalog.attributes import AttributeVocabulary
from services.catalog.lexicons import Lexicon, build_brand_lexicon, learn_product_types
from services.catalog.locale import catalog_locale
from services.catalog.model import Product, parse_path
from services.catalog.type_inference import TypeInference, TypeReport, head_segments


def p(pid: str, name: str, brand: str, path: str) -> Product:
    return Product(pid, name, brand, parse_path(path))


def learn_all(products: list[Product], locale: str = "en-US") -> tuple[Lexicon, dict[str, str], TypeInference]:
    market = catalog_locale(locale)
    brands = build_brand_lexicon(products)
    attributes = AttributeVocabulary.build((x.name for x in products), (x.attributes for x in products), market)
    return learn_product_types(products, brands, attributes, locale=market)


def learn(products: list[Product], locale: str = "en-US") -> tuple[dict[str, str], TypeReport]:
    _, types, inference = learn_all(products, locale)
    return types, inference.report


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("Sauce - Sweet & Sour", ["Sauce", "Sweet & Sour"]),
        ("Cow Ghee/Tuppa, 500 ml", ["Cow Ghee", "Tuppa", "500 ml"]),
        ("Milk 1/2 Gallon", ["Milk 1/2 Gallon"]),  # a fraction is no separator
        ("Toal.pap. Paloma 16/1", ["Toal.pap. Paloma 16/1"]),
        ("Heinz | Ketchup (Original)", ["Heinz", "Ketchup", "Original"]),
    ],
)
def test_names_are_cut_at_their_separators(name: str, parts: list[str]) -> None:
    assert head_segments(name) == parts


def test_type_dash_variant_names_take_the_type_before_the_dash() -> None:
    types, report = learn(
        [
            p("1", "Sauce - Sweet & Sour", "Ching's", "foodgrains > sauces"),
            p("2", "Sauce - Tomato Chilli", "Kissan", "foodgrains > sauces"),
            p("3", "Sauce - Schezwan", "Ching's", "foodgrains > sauces"),
            p("4", "Basmati Rice - Select", "India Gate", "foodgrains > rice"),
            p("5", "Basmati Rice - Classic", "Daawat", "foodgrains > rice"),
            p("6", "Basmati Rice - Rozana", "Daawat", "foodgrains > rice"),
        ]
    )
    assert types == {
        "1": "sauce",
        "2": "sauce",
        "3": "sauce",
        "4": "basmati rice",
        "5": "basmati rice",
        "6": "basmati rice",
    }
    assert report.multi_word_types == 1


def test_brand_comma_type_comma_variant_names() -> None:
    types, _ = learn(
        [
            p("1", "Heinz, Ketchup, Original", "Heinz", "pantry > condiments"),
            p("2", "Heinz, Ketchup, Reduced Sugar", "Heinz", "pantry > condiments"),
            p("3", "Hunt's, Ketchup, Spicy", "Hunt's", "pantry > condiments"),
            p("4", "Kraft, Mayonnaise, Light", "Kraft", "pantry > condiments"),
            p("5", "Hellmann's, Mayonnaise, Real", "Hellmann's", "pantry > condiments"),
        ]
    )
    assert types == {"1": "ketchup", "2": "ketchup", "3": "ketchup", "4": "mayonnaise", "5": "mayonnaise"}


def test_all_caps_names_read_like_any_other() -> None:
    types, _ = learn(
        [
            p("1", "ORGANIC WHOLE MILK 1 GAL", "", "dairy > milk"),
            p("2", "2% REDUCED FAT MILK HALF GALLON", "", "dairy > milk"),
            p("3", "CHOCOLATE MILK 8 OZ", "", "dairy > milk"),
            p("4", "GREEK YOGURT VANILLA 32 OZ", "", "dairy > yogurt"),
            p("5", "GREEK YOGURT PLAIN", "", "dairy > yogurt"),
        ]
    )
    assert {types[i] for i in "123"} == {"milk"}
    assert types["4"] == types["5"] == "greek yogurt"


def test_a_name_in_two_languages_gives_one_type_not_a_joined_one() -> None:
    types, _ = learn(
        [
            p("1", "Cow Ghee/Tuppa, 500 ml", "Amul", "foodgrains > ghee"),
            p("2", "Cow Ghee/Tuppa, 1 L", "Nandini", "foodgrains > ghee"),
            p("3", "Cow Ghee, 200 ml", "Gowardhan", "foodgrains > ghee"),
        ],
        "en-IN",
    )
    assert set(types.values()) == {"cow ghee"}


def test_type_first_names_are_read_type_first() -> None:
    types, report = learn(
        [
            p("1", "Cokolada Milka mlecna 100g", "Milka", "slatkisi"),
            p("2", "Cokolada Ritter Sport lesnik 100g", "Ritter Sport", "slatkisi"),
            p("3", "Cokolada Najlepse zelje 80g", "Najlepse zelje", "slatkisi"),
            p("4", "Keks Plazma 300g", "Bambi", "slatkisi"),
            p("5", "Keks Jaffa pomorandza 150g", "Jaffa", "slatkisi"),
            p("6", "Keks Petit beurre lesnik 200g", "Pionir", "slatkisi"),
            p("7", "Sok pomorandza Next 1l", "Next", "pice"),
            p("8", "Sok jabuka Fructal 1l", "Fructal", "pice"),
            p("9", "Sok breskva Next 1l", "Next", "pice"),
        ],
        "sr-RS",
    )
    assert report.convention == "type-first"
    assert types == {
        "1": "cokolada", "2": "cokolada", "3": "cokolada", "4": "keks", "5": "keks", "6": "keks",
        "7": "sok", "8": "sok", "9": "sok",
    }  # fmt: skip


def test_audiences_colours_sizes_and_prices_are_never_types() -> None:
    types, report = learn(
        [
            p("1", "Men Deodorant Fresh 150 ml", "Nivea", "beauty > men"),
            p("2", "Men Deodorant Dark Temptation", "Axe", "beauty > men"),
            p("3", "Men Shower Gel Black 250 ml", "Dove", "beauty > men"),
            p("4", "Men Shower Gel Charcoal", "Nivea", "beauty > men"),
            p("5", "Hair Clip Black - Pack of 6, 10 rs", "Bling", "beauty > accessories"),
            p("6", "Hair Clip Brown - Pack of 12", "Bling", "beauty > accessories"),
        ],
        "en-IN",
    )
    assert types == {
        "1": "deodorant", "2": "deodorant", "3": "shower gel", "4": "shower gel", "5": "hair clip", "6": "hair clip",
    }  # fmt: skip
    assert "men" not in report.examples["learnt"]


def test_the_report_says_what_was_rejected_and_why() -> None:
    _, report = learn(
        [
            p("1", "Crunchy Peanut Butter", "Jif", "pantry > spreads"),
            p("2", "Creamy Peanut Butter", "Skippy", "pantry > spreads"),
            p("3", "Robust Golden Oolong Tea", "", "beverages > tea"),
        ]
    )
    assert report.typed_products == 3 and report.lone_product_types == 1  # the tea, by its last word
    assert report.rejected["word named by one product only"] >= 3  # robust, golden, oolong
    assert "peanut butter" in report.examples["learnt"]
    assert report.to_json()["lone_product_types"] == 1


def test_the_head_of_several_multi_word_types_is_a_type_of_its_own() -> None:
    products = [
        p("1", "Organic Coconut Oil", "Nutiva", "pantry > oils"),
        p("2", "Virgin Coconut Oil", "Spectrum", "pantry > oils"),
        p("3", "Extra Virgin Olive Oil", "Bertolli", "pantry > oils"),
        p("4", "Olive Oil Light", "Bertolli", "pantry > oils"),
        p("5", "Avocado Oil", "Chosen Foods", "pantry > oils"),
        p("6", "Refined Avocado Oil", "La Tourangelle", "pantry > oils"),
    ]
    lexicon, types, _ = learn_all(products, "en-US")
    assert set(types.values()) == {"coconut oil", "olive oil", "avocado oil"}
    oil = lexicon.lookup("oil")
    assert oil is not None and oil.product_count == 6  # "oil" alone means every one of them


def test_brand_forms_need_evidence_and_a_possessive_brand_gets_its_stem() -> None:
    from services.catalog.lexicons import learn_brands

    products = [
        p("1", "Haldirams Namkeen - Aloo Bhujia", "Haldirams", "snacks > namkeen"),
        p("2", "Haldirams Namkeen - Moong Dal", "Haldirams", "snacks > namkeen"),
        p("3", "Green Tea Bags", "The Green.Company", "beverages > tea"),
        p("4", "Green Tea Lemon", "Tetley", "beverages > tea"),
        p("5", "Green Peas Frozen", "Safal", "frozen > vegetables"),
        p("6", "Green Chilli Sauce", "Ching's", "foodgrains > sauces"),
        p("7", "Green Tea Honey", "Lipton", "beverages > tea"),
        p("8", "Sugar Free Natura Sweetener", "Sugar Free", "foodgrains > sweeteners"),
        p("9", "Body Lotion", "&Me", "beauty > body care"),
        p("10", "Electric Kettle", "Electric Co", "home > kitchen"),
        p("11", "Electric Toothbrush", "Oral-B", "beauty > oral care"),
        p("12", "Electric Shaver", "Philips", "beauty > men"),
        p("13", "Electric Trimmer", "Philips", "beauty > men"),
        p("14", "Electric Hair Dryer", "Havells", "beauty > hair"),
    ]
    market = catalog_locale("en-IN")
    attributes = AttributeVocabulary.build((x.name for x in products), ((),) * len(products), market)
    brands, report = learn_brands(products, attributes, market)
    assert brands.lookup("haldiram") is not None  # the possessive written without its apostrophe
    assert brands.lookup("green company") is not None
    assert brands.lookup("green") is None  # other brands' products are green: not evidence of this brand
    assert brands.lookup("sugar free") is None  # the claim, not the brand
    assert any("green" in shown for shown in report.examples.values())  # a colour, and other brands' word
    assert report.rejected["a brand named like an attribute term (left out)"] == 1
    assert brands.lookup("electric") is None and brands.lookup("electric co") is not None
    assert "electric" in report.examples["a word other brands' products use"]


def test_a_multi_word_type_is_found_written_as_one_word() -> None:
    products = [
        p("1", "Vanilla Ice Cream", "Amul", "frozen > ice cream"),
        p("2", "Chocolate Ice Cream", "Kwality Walls", "frozen > ice cream"),
        p("3", "Mango Ice Cream Cup", "Havmor", "frozen > ice cream"),
    ]
    lexicon, _, _ = learn_all(products, "en-IN")
    found = lexicon.lookup("icecream")
    assert found is not None and found.key == "ice cream"


def test_words_that_vary_among_products_of_one_type_are_mined_as_attributes() -> None:
    from services.catalog.type_inference import mine_variant_words

    rows = [
        ("Steel Water Bottle", "kitchen > bottles"),
        ("Plastic Water Bottle", "kitchen > bottles"),
        ("Copper Water Bottle", "kitchen > bottles"),
        ("Steel Kettle", "kitchen > kettles"),
        ("Electric Kettle", "kitchen > kettles"),
        ("Steel Tumbler", "kitchen > glasses"),
        ("Glass Tumbler", "kitchen > glasses"),
        ("Steel Spoon", "kitchen > cutlery"),
        ("Wooden Spoon", "kitchen > cutlery"),
        ("Steel Kadai", "kitchen > cookware"),
        ("Iron Kadai", "kitchen > cookware"),
        ("Aloe Face Wash", "beauty > face"),
        ("Neem Face Wash", "beauty > face"),
        ("Aloe Body Lotion", "beauty > body"),
        ("Cocoa Body Lotion", "beauty > body"),
        ("Aloe Hand Cream", "beauty > hands"),
        ("Shea Hand Cream", "beauty > hands"),
        ("Aloe Shampoo", "beauty > hair"),
        ("Herbal Shampoo", "beauty > hair"),
        ("Aloe Soap", "beauty > bath"),
        ("Sandal Soap", "beauty > bath"),
    ]
    products = [p(str(i), name, "", path) for i, (name, path) in enumerate(rows)]
    market = catalog_locale("en-IN")
    attributes = AttributeVocabulary.build((x.name for x in products), ((),) * len(products), market)
    lexicon, types, inference = learn_product_types(products, build_brand_lexicon(products), attributes, locale=market)
    mined, report = mine_variant_words(
        inference.runs, types, lambda w: lexicon.lookup(w) is not None, attributes, market
    )
    assert {"steel", "aloe"} <= set(mined) and report.mined == len(mined)
    assert not set(mined) & {"bottle", "tumbler", "lotion", "soap"}  # product words stay product words
    assert types["0"] == "water bottle" and types["17"] == "shampoo"


@pytest.mark.parametrize(
    ("word", "forms"),
    [
        ("компот", {"компот", "компоты"}),
        ("слива", {"слива", "сливы"}),
        ("булка", {"булка", "булки"}),
        ("печенье", {"печенье", "печенья"}),
        ("чаи", {"чаи"}),  # too short a stem to strip
        ("corn", {"corn"}),  # not Russian
    ],
)
def test_russian_types_are_found_in_the_singular_and_the_plural(word: str, forms: set[str]) -> None:
    from services.catalog.locale import russian_number_forms

    assert forms <= set(russian_number_forms(word)) and (len(word) < 4 or word in russian_number_forms(word))
    if word in ("чаи", "corn"):
        assert set(russian_number_forms(word)) == forms
