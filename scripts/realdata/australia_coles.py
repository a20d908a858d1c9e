"""Convert the Coles (Australia) product scrape into ``catalog.csv`` (data set ``australia-coles``).

Source: GitHub ``flynncrochon/AU-Grocery-Scraper``, commit ``a1b74b12a52adcdfe92f1a26f90a97cc75a0a950``
(2025-09-13), folder ``Coles/<week>/<department>/``: per listing page ``<n>_product.csv``
(``prodid, brand, name, size, current_price, full_price, raw_description``) and ``<n>_hier.csv``
(``prodid, aisle, category, subcategory, ...``; despite the names, ``subcategory`` is the top level,
e.g. "Pantry", and ``aisle`` the leaf). Weeks ``10-09-2025`` and ``03-09-2025``; the folder
``03-09-2025 backup`` is a copy and is not read. Licence: not stated (no licence file); the product data
belongs to Coles.

What it does: takes each product once, from the newest week first (then departments and pages in
order); its path is ``subcategory > category > aisle`` from the first hierarchy row of that product in
the page's own ``_hier.csv`` (a product shelved in several aisles keeps the first); the name is
``name`` plus ``size`` when the name does not already end with it (Coles names carry the brand in a
separate field, e.g. brand "John West", name "Tuna Multipack Springwater 4x95g"). Rows without a name
or without a hierarchy row are skipped and counted. The scraped weekly price is not kept.

    python scripts/realdata/australia_coles.py /work/.mirror/flynncrochon+AU-Grocery-Scraper/repo \
        ../shared/data/catalogs/australia-coles
"""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime

from _common import Counts, Source, catalog_main, category_path, clean_text

ROOT = "Coles"
PAGE_FILE = re.compile(r"^Coles/(?P<week>\d\d-\d\d-\d{4})/(?P<dept>[^/]+)/(?P<page>\d+)_product\.csv$")


def _pages(source: Source, counts: Counts) -> list[tuple[str, str, int, str]]:
    """(week, department, page, product file) for every week folder, newest week first."""
    pages: list[tuple[str, str, int, str]] = []
    for name in source.list_files(ROOT):
        match = PAGE_FILE.match(name)
        if match:
            pages.append((match["week"], match["dept"], int(match["page"]), name))
        elif name.endswith("_product.csv"):
            counts.tally("product files not read (not in a dated week folder)")

    def order(page: tuple[str, str, int, str]) -> tuple[float, str, int]:
        return (-datetime.strptime(page[0], "%d-%m-%Y").timestamp(), page[1], page[2])

    return sorted(pages, key=order)


def convert(source: Source) -> tuple[list[tuple[str, str, str, str]], Counts]:
    counts = Counts()
    rows: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    weeks: set[str] = set()
    for week, _dept, _page, product_file in _pages(source, counts):
        weeks.add(week)
        hier_text = source.read_text(product_file.replace("_product.csv", "_hier.csv")) or ""
        paths: dict[str, str] = {}
        for h in csv.DictReader(io.StringIO(hier_text)):
            pid = clean_text(h.get("prodid"))
            if pid and pid not in paths:
                paths[pid] = category_path([h.get("subcategory") or "", h.get("category") or "", h.get("aisle") or ""])
        for raw in csv.DictReader(io.StringIO(source.read_text(product_file) or "")):
            counts.read += 1
            pid = clean_text(raw.get("prodid"))
            if not pid:
                counts.skip("no prodid")
                continue
            if pid in seen:
                counts.skip("product seen before (another page, department or an older week)")
                continue
            name = clean_text(raw.get("name"))
            if not name:
                counts.skip("no name")
                continue
            path = paths.get(pid, "")
            if not path:
                counts.skip("no category (no hierarchy row)")
                continue
            seen.add(pid)
            size = clean_text(raw.get("size"))
            if size and not name.lower().endswith(size.lower()):
                name = f"{name} {size}"
            rows.append((pid, name, clean_text(raw.get("brand")), path))
    counts.notes["weeks read"] = ", ".join(sorted(weeks))
    return rows, counts


def main() -> None:
    catalog_main(
        __doc__,
        "the fetched git dir of flynncrochon/AU-Grocery-Scraper",
        "australia-coles from Coles/<week>/<department>/<page>_{product,hier}.csv",
        lambda source, _: convert(source),
    )


if __name__ == "__main__":
    main()
