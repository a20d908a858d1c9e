"""`qu catalog import` / `qu catalog stats` end to end, with the real embedding model.

What is pinned: stats tell the truth about a catalog of any shape; a bad file fails with
the file, row and column named and leaves the previous catalog untouched; --skip-invalid
reports what it skipped; re-imports swap ``current`` and keep the 3 newest builds; the
stored embeddings and artifacts load back equal to what was built.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from services.catalog.artifacts import KEEP_BUILDS, build_catalog, load_catalog
from services.catalog.demo import demo_files
from services.catalog.model import CategoryPath, Taxonomy, format_path, parse_path
from services.catalog.reader import read_catalog
from services.embeddings import SentenceEmbedder

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HEADER = ["product_id", "name", "brand", "category_path", "attributes", "popularity"]
MODEL_ID = "all-MiniLM-L6-v2"


def ok_json(cli: Any, *args: str | Path) -> Any:
    result = cli(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return orjson.loads(result.stdout)


def import_catalog(cli: Any, file: Path, out: Path, *extra: str) -> dict[str, Any]:
    report: dict[str, Any] = ok_json(cli, "catalog", "import", file, "--out", out, *extra)
    return report


def stats_of(cli: Any, catalog_dir: Path) -> dict[str, Any]:
    stats: dict[str, Any] = ok_json(cli, "catalog", "stats", "--catalog", catalog_dir)
    return stats


def one_line(text: str) -> str:
    return " ".join(text.split())


def prefixes_of(paths: list[CategoryPath]) -> set[CategoryPath]:
    return {path[:k] for path in paths for k in range(1, len(path) + 1)}


def leaves_of(nodes: set[CategoryPath]) -> set[CategoryPath]:
    parents = {node[:-1] for node in nodes if len(node) > 1}
    return nodes - parents


def small_catalog(write_csv: Any, path: Path, n: int = 6, start: int = 1) -> Path:
    rows = [
        [str(i), f"Organic Whole Milk {i}", "Horizon Organic", "dairy eggs > milk", "organic", str(i)]
        if i % 2
        else [str(i), f"Sourdough Bread {i}", "", "bakery > bread", "", ""]
        for i in range(start, start + n)
    ]
    write_csv(path, HEADER, rows)
    return path


# --- (a) a catalog of another shape: stats are truthful ----------------------------------------

ROOTS = ["pantry", "frozen foods", "household", "bakery", "beverages", "baby care", "pet supplies", "snacks"]
LEVELS = [
    ["baking", "canned goods", "spices", "cleaning", "juice", "treats"],
    ["flour", "beans", "organic", "wipes", "premium"],
    ["whole wheat", "family size", "single serve", "bulk"],
]
BRAND_WORDS = (
    ["Golden", "Sunny", "Blue", "Happy", "Green", "Little", "Old", "Wild", "Pure", "True"],
    ["Acres", "Valley", "Harvest", "Creek", "Farms", "Kitchen", "Orchard", "Meadow", "Ridge", "Table",
     "Garden", "Pantry", "Field", "Grove", "Hills", "Mill", "Brook", "Barn", "Prairie", "Coast"],
)  # fmt: skip
TYPES = ["yogurt", "crackers", "flour", "beans", "detergent", "wipes", "juice", "treats", "cereal", "soup"]


def varied_catalog(write_csv: Any, file: Path) -> tuple[list[list[str]], list[CategoryPath], list[str]]:
    """Depths 1 to 4 mixed (some paths are prefixes of others), 200 brands, some spelled in capitals,
    some products unbranded; no attributes and no popularity column."""
    rng = random.Random(20240501)
    brands = [f"{a} {b}" for a in BRAND_WORDS[0] for b in BRAND_WORDS[1]]
    assert len(brands) == 200
    rows, paths, used_brands = [], [], []
    for i in range(1, 801):
        depth = (i % 4) + 1
        path: CategoryPath = (rng.choice(ROOTS), *(rng.choice(LEVELS[k]) for k in range(depth - 1)))
        brand = brands[i % 200] if i % 9 else ""
        if brand and i % 7 == 0:
            brand = brand.upper()  # the same brand, spelled differently
        name = f"{brand.title()} {rng.choice(['Vanilla', 'Plain', 'Original', 'Spicy'])} {rng.choice(TYPES)}".strip()
        separator = " > " if i % 3 else ">"  # "a>b" and "a > b" are the same path
        rows.append([f"sku-{i:05d}", name, brand, separator.join(path)])
        paths.append(path)
        used_brands.append(brand)
    write_csv(file, ["product_id", "name", "brand", "category_path"], rows)
    return rows, paths, used_brands


def test_stats_are_truthful_for_a_catalog_of_another_shape(cli: Any, write_csv: Any, tmp_path: Path) -> None:
    file = tmp_path / "other-shape.csv"
    rows, paths, brands = varied_catalog(write_csv, file)
    out = tmp_path / "catalog"
    report = import_catalog(cli, file, out)
    stats = stats_of(cli, out)

    nodes = prefixes_of(paths)
    assert {len(p) for p in paths} == {1, 2, 3, 4}
    assert any(p not in leaves_of(nodes) for p in paths)  # some products sit on inner nodes
    assert stats["products"] == len(rows) == 800
    assert stats["brands"] == len({b.lower() for b in brands if b}) == 200
    assert stats["branded_products"] == sum(1 for b in brands if b)
    assert stats["categories"] == len(nodes)
    assert stats["root_categories"] == len({p[:1] for p in paths})
    assert stats["leaf_categories"] == len(leaves_of(nodes))
    assert stats["depth"] == max(len(p) for p in paths) == 4
    assert stats["products_with_attributes"] == 0
    assert stats["category_terms"] == 0
    assert stats["embedding_model"] == MODEL_ID
    assert stats["source"] == str(file)
    assert stats["product_types"] > 0

    assert (report["rows_read"], report["rows_kept"], report["rows_skipped"]) == (800, 800, 0)
    assert report["skipped_by_reason"] == {}
    assert report["catalog_dir"] == str(out)
    assert report["stats"] == stats  # the import and a later `stats` tell the same story
    assert stats["build"] == report["build"] == (out / "current").resolve().name

    loaded = load_catalog(out)
    assert all(p.popularity == 0.0 and p.attributes == () for p in loaded.products)
    assert {node.path for node in loaded.taxonomy} == nodes


# --- (b) a bad file fails, names the row, and leaves the previous catalog as it was -------------


def snapshot(catalog_dir: Path) -> dict[str, Any]:
    builds = catalog_dir / "builds"
    return {
        "current": os.readlink(catalog_dir / "current"),
        "builds": sorted(p.name for p in builds.iterdir()),
        "files": {
            str(f.relative_to(catalog_dir)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(builds.rglob("*"))
            if f.is_file()
        },
        "top": sorted(p.name for p in catalog_dir.iterdir()),
    }


@pytest.mark.parametrize(
    ("bad_row", "row_number", "column"),
    [
        (["4", "", "Acme", "pantry > flour", "", ""], 4, "name"),
        (["4", "Flour", "Acme", "pantry >  > flour", "", ""], 4, "category_path"),
        (["1", "Flour", "Acme", "pantry > flour", "", ""], 4, "product_id"),
        (["4", "Flour", "Acme", "pantry > flour", "", "abc"], 4, "popularity"),
    ],
    ids=["missing-name", "empty-level", "duplicate-id", "bad-popularity"],
)
def test_bad_file_fails_and_leaves_the_previous_catalog(
    cli: Any, write_csv: Any, tmp_path: Path, bad_row: list[str], row_number: int, column: str
) -> None:
    out = tmp_path / "catalog"
    good = small_catalog(write_csv, tmp_path / "good.csv")
    import_catalog(cli, good, out)
    before_stats = stats_of(cli, out)
    before = snapshot(out)

    rows = [
        ["1", "Bread", "", "bakery", "", ""],
        ["2", "Milk", "", "dairy", "", ""],
        ["3", "Eggs", "", "dairy > eggs", "", ""],
        bad_row,
        ["5", "Jam", "", "pantry", "", ""],
    ]
    bad = write_csv(tmp_path / "bad.csv", HEADER, rows)
    result = cli("catalog", "import", bad, "--out", out, "--json")
    assert result.exit_code == 1
    assert result.stdout == ""  # no report on stdout for a failed import
    message = one_line(result.stderr)
    assert f"{bad}, row {row_number}, column {column!r}" in message

    assert snapshot(out) == before
    assert stats_of(cli, out) == before_stats
    assert before_stats["source"] == str(good)


def test_failed_write_leaves_no_partial_build(
    cli: Any, write_csv: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.catalog import embedding_index

    out = tmp_path / "catalog"
    import_catalog(cli, small_catalog(write_csv, tmp_path / "good.csv"), out)
    before = snapshot(out)

    def disk_full(self: Any, path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(embedding_index.CatalogEmbeddings, "save", disk_full)
    newer = small_catalog(write_csv, tmp_path / "newer.csv", n=9)
    with pytest.raises(OSError, match="No space left"):
        cli("catalog", "import", newer, "--out", out)
    assert snapshot(out) == before  # no ".incomplete-*" staging directory left behind


def test_every_row_invalid_with_skip_invalid_fails_and_keeps_the_catalog(
    cli: Any, write_csv: Any, tmp_path: Path
) -> None:
    out = tmp_path / "catalog"
    import_catalog(cli, small_catalog(write_csv, tmp_path / "good.csv"), out)
    before = snapshot(out)
    bad = write_csv(tmp_path / "bad.csv", HEADER, [["", "Milk", "", "dairy", "", ""], ["2", "", "", "dairy", "", ""]])
    result = cli("catalog", "import", bad, "--out", out, "--skip-invalid", "--json")
    assert result.exit_code == 1
    assert "every row was invalid" in one_line(result.stderr)
    assert snapshot(out) == before


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("catalog.tsv", b"product_id\tname\n", "unknown catalog format"),
        ("catalog.csv", b"", "missing column(s)"),
        ("catalog.csv", b"product_id,name\n1,Milk\n", "missing column(s) brand, category_path"),
        ("missing.csv", None, "no such file"),
    ],
    ids=["extension", "empty", "columns", "missing"],
)
def test_file_level_errors_exit_1_with_the_file_named(
    cli: Any, tmp_path: Path, name: str, content: bytes | None, expected: str
) -> None:
    file = tmp_path / name
    if content is not None:
        file.write_bytes(content)
    out = tmp_path / "catalog"
    result = cli("catalog", "import", file, "--out", out)
    assert result.exit_code == 1
    message = one_line(result.stderr)
    assert message.startswith(f"error: {file}")
    assert expected in message
    assert not out.exists()


def test_stats_without_a_catalog_exits_1(cli: Any, tmp_path: Path) -> None:
    result = cli("catalog", "stats", "--catalog", tmp_path / "nothing", "--json")
    assert result.exit_code == 1
    assert "no imported catalog" in one_line(result.stderr)
    assert result.stdout == ""


# --- (c) --skip-invalid -------------------------------------------------------------------------


def test_skip_invalid_imports_good_rows_and_counts_skipped_by_reason(cli: Any, write_csv: Any, tmp_path: Path) -> None:
    rows = [
        ["1", "Organic Whole Milk", "Horizon Organic", "dairy eggs > milk", "organic", "5"],
        ["", "No Id Bread", "", "bakery > bread", "", ""],
        ["3", "", "", "bakery > bread", "", ""],
        ["4", "Sourdough Bread", "", "bakery > bread", "", ""],
        ["5", "Pathless", "", "", "", ""],
        ["6", "Also Pathless", "", "   ", "", ""],
        ["7", "Greek Yogurt", "Fage", "dairy eggs > yogurt", "", "2"],
        ["8", "Gappy", "", "dairy eggs >  > yogurt", "", ""],
        ["9", "Negative", "", "dairy eggs > yogurt", "", "-1"],
    ]
    file = write_csv(tmp_path / "mixed.csv", HEADER, rows)
    out = tmp_path / "catalog"
    result = cli("catalog", "import", file, "--out", out, "--skip-invalid", "--json")
    assert result.exit_code == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert (report["rows_read"], report["rows_kept"], report["rows_skipped"]) == (9, 3, 6)
    by_reason = report["skipped_by_reason"]
    assert sum(by_reason.values()) == 6
    assert by_reason["product_id: missing product_id"] == 1
    assert by_reason["name: missing name"] == 1
    assert by_reason["category_path: the category path is empty"] == 2
    assert sum(n for reason, n in by_reason.items() if reason.startswith("category_path:")) == 3
    assert sum(n for reason, n in by_reason.items() if reason.startswith("popularity:")) == 1

    stderr = one_line(result.stderr)
    assert "read 9 rows" in stderr and "kept 3, skipped 6" in stderr
    assert "skipped 2: category_path: the category path is empty" in stderr
    for row_number, column in [(2, "product_id"), (3, "name"), (5, "category_path"), (9, "popularity")]:
        assert f"row {row_number}, column {column!r}" in stderr

    stats = stats_of(cli, out)
    assert stats["products"] == 3
    assert stats == report["stats"]
    assert [p.product_id for p in load_catalog(out).products] == ["1", "4", "7"]


# --- (d) re-imports swap `current` and prune to the newest builds -------------------------------


def test_reimport_replaces_current_and_prunes_old_builds(
    cli: Any, write_csv: Any, tmp_path: Path, state_dir: Path
) -> None:
    # No --out / --catalog: the catalog lives under QU_STATE_DIR.
    out = state_dir / "catalog"
    builds = []
    for n in range(1, 6):
        file = small_catalog(write_csv, tmp_path / f"catalog-{n}.csv", n=n + 2)
        report = ok_json(cli, "catalog", "import", file)
        assert report["catalog_dir"] == str(out)
        builds.append(report["build"])
        assert (out / "current").resolve() == (out / "builds" / report["build"]).resolve()
        stats = ok_json(cli, "catalog", "stats")
        assert (stats["build"], stats["products"], stats["source"]) == (report["build"], n + 2, str(file))
        kept = sorted(p.name for p in (out / "builds").iterdir())
        assert kept == builds[-KEEP_BUILDS:]
    assert len(set(builds)) == 5
    assert os.readlink(out / "current") == str(Path("builds") / builds[-1])  # relative: the dir can move
    assert sorted(p.name for p in out.iterdir()) == ["builds", "current"]


# --- (e) embeddings and the round trip through disk ---------------------------------------------

ROUND_TRIP_ROWS = [
    ["1", "Organic Whole Milk, 1 Gallon", "Horizon Organic", "dairy eggs > milk", "organic;whole", "120.5"],
    ["2", "2% Reduced Fat Milk", "Horizon Organic", "dairy eggs > milk", "reduced fat", "40"],
    ["3", "Chocolate Fudge Brownie Ice Cream", "Ben & Jerry's", "frozen > ice cream", "", "88"],
    ["4", "Half Baked Ice Cream", "BEN & JERRY'S", "frozen > ice cream", "", "61"],
    ["5", "Chocolate Sandwich Cookies", "Oreo", "snacks > cookies cakes", "", "300"],
    ["6", "Double Stuf Chocolate Sandwich Cookies", "Oreo", "snacks > cookies cakes", "", "7"],
    ["7", "Free & Clear Laundry Detergent", "Seventh Generation", "household > laundry", "fragrance free", ""],
    ["8", "Grain Free Chicken Dog Food", "Blue Buffalo", "pets > dog food > dry", "grain free;whole30 approved", "3"],
    ["9", "Bananas", "", "produce", "", "1000"],
    ["10", "Organic Bananas", "", "produce", "organic", "900"],
]


def test_embeddings_cover_every_category_and_brand_and_load_back_equal(
    cli: Any, write_csv: Any, tmp_path: Path, embedder: SentenceEmbedder
) -> None:
    file = write_csv(tmp_path / "catalog.csv", HEADER, ROUND_TRIP_ROWS)
    out = tmp_path / "catalog"
    import_catalog(cli, file, out)
    loaded = load_catalog(out)
    emb = loaded.embeddings
    assert emb is not None
    assert emb.model_id == MODEL_ID

    paths = [parse_path(r[3]) for r in ROUND_TRIP_ROWS]
    expected_categories = {format_path(p) for p in prefixes_of(paths)}
    assert set(emb.categories.keys) == expected_categories
    assert len(emb.categories.keys) == len(expected_categories)
    assert set(emb.category_paths()) == prefixes_of(paths)
    assert (
        set(emb.brands.keys)
        == set(loaded.brands.entries)
        == {
            "horizon organic",
            "ben and jerrys",
            "oreo",
            "seventh generation",
            "blue buffalo",
        }
    )
    assert set(emb.product_types.keys) == set(loaded.types.entries)

    dimension = embedder.dimension
    for part in (emb.categories, emb.brands, emb.product_types):
        assert part.vectors.dtype == np.float32
        assert part.vectors.shape == (len(part.keys), dimension)
        assert np.all(np.isfinite(part.vectors))
        np.testing.assert_allclose(np.linalg.norm(part.vectors, axis=1), 1.0, atol=1e-5)

    # Row i is the vector of key i: the stored vectors match a fresh encoding of each key's text.
    category_fresh = embedder.encode(emb.categories.keys)
    brand_fresh = embedder.encode([loaded.brands.entries[k].canonical for k in emb.brands.keys])
    assert np.min(np.sum(category_fresh * emb.categories.vectors, axis=1)) > 0.999
    assert np.min(np.sum(brand_fresh * emb.brands.vectors, axis=1)) > 0.999
    query = embedder.encode(["vanilla ice cream pint"])[0]
    assert emb.categories.nearest(query, 1)[0][0] in {"frozen > ice cream", "frozen"}

    # Everything on disk loads back equal to what the import built from the same rows.
    read = read_catalog(file)
    assert loaded.products == read.products
    assert loaded.products[0].attributes == ("organic", "whole")
    assert loaded.products[0].popularity == 120.5
    assert loaded.taxonomy.to_json() == Taxonomy.from_products(read.products).to_json()
    rebuilt = build_catalog(read.products, embedder=None, source=str(file))
    assert loaded.product_types == rebuilt.product_types
    assert loaded.brands.to_json() == rebuilt.brands.to_json()
    assert loaded.types.to_json() == rebuilt.types.to_json()
    assert loaded.attributes.to_json() == rebuilt.attributes.to_json()
    assert loaded.attributes.terms["whole30 approved"].kind.value == "other"

    # The manifest's checksums are those of the files beside it.
    build = (out / "current").resolve()
    for name, digest in loaded.manifest["files"].items():
        assert hashlib.sha256((build / name).read_bytes()).hexdigest() == digest
    assert set(loaded.manifest["files"]) | {"manifest.json"} == {p.name for p in build.iterdir()}


# --- (f) the demo catalog -----------------------------------------------------------------------


def test_demo_import(cli: Any, tmp_path: Path) -> None:
    catalog_file, _ = demo_files()
    if not catalog_file.is_file():
        pytest.skip(f"the demo catalog {catalog_file} is not there yet")
    out = tmp_path / "catalog"
    report = ok_json(cli, "catalog", "import", "--demo", "--out", out)
    stats = stats_of(cli, out)
    assert report["stats"] == stats
    assert stats["root_categories"] == 21
    assert stats["leaf_categories"] == 134
    assert stats["depth"] == 2
    assert stats["embedding_model"] == MODEL_ID
    assert stats["source"] == str(catalog_file)
    assert report["rows_skipped"] == 0
