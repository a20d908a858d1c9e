"""Convert the Whole Foods Market (US) product scrape into ``catalog.csv`` (data set ``us-wholefoods``).

Source: GitHub ``atehe/stores_scraper``, commit ``fc8e97ef0978f066f6074b0f79e62d7c2d6b267f``
(2022-06-09), file ``wholefoods.csv`` (scraped from wholefoodsmarket.com/products in May 2022 by the
repository's ``store_scrapers/scripts/wholefoodsmarket.py``). Licence: not stated (the repository has no
licence file); the product data belongs to Whole Foods Market.

What it does: reads ``name, brand, category, subcategory, regular_price, ASIN, product_url``; keeps the
first row of each ASIN (the scrape lists a product once per subcategory it appears in); the path is
``category > subcategory``; names are kept as scraped ("Variant Type, Size", without the brand). The
department stand-ins that the store shows in the brand field for unbranded fresh goods (``PRODUCE``,
``MEAT``, ``SEAFOOD``, ``BAKERY``, ``PREPARED FOODS``) become an empty brand. Rows without a name or a
category are skipped and counted.

    python scripts/realdata/us_wholefoods.py /work/.mirror/atehe+stores_scraper/repo \
        ../shared/data/catalogs/us-wholefoods
"""

from __future__ import annotations

import csv
import io

from _common import Counts, Source, catalog_main, category_path, clean_text

SOURCE_FILE = "wholefoods.csv"
# The store's department names standing where a brand would be, for loose produce, counter meat and so on.
DEPARTMENT_BRANDS = frozenset({"PRODUCE", "MEAT", "SEAFOOD", "BAKERY", "PREPARED FOODS"})


def convert(source: Source) -> tuple[list[tuple[str, str, str, str]], Counts]:
    counts = Counts()
    text = source.read_text(SOURCE_FILE)
    if text is None:
        raise SystemExit(f"{source.path}: no {SOURCE_FILE} at {source.commit}")
    rows: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    for raw in csv.DictReader(io.StringIO(text)):
        counts.read += 1
        asin = clean_text(raw.get("ASIN"))
        name = clean_text(raw.get("name"))
        path = category_path([raw.get("category") or "", raw.get("subcategory") or ""])
        if not asin:
            counts.skip("no ASIN")
            continue
        if asin in seen:
            counts.skip("ASIN seen before (listed in another subcategory)")
            continue
        if not name:
            counts.skip("no name")
            continue
        if not path:
            counts.skip("no category")
            continue
        seen.add(asin)
        brand = clean_text(raw.get("brand"))
        if brand.upper() in DEPARTMENT_BRANDS:
            brand = ""
        rows.append((asin, name, brand, path))
    return rows, counts


def main() -> None:
    catalog_main(
        __doc__,
        "the fetched git dir of atehe/stores_scraper (or a checkout)",
        f"us-wholefoods from {SOURCE_FILE}",
        lambda source, _: convert(source),
    )


if __name__ == "__main__":
    main()
