"""Convert the Universe-HTT (UHTT) barcode reference into ``catalog.csv`` (data set ``russia-uhtt``).

Source: GitHub ``papyrussolution/UhttBarcodeReference``, commit ``cb0f0a56723ec4112300c85789dae71f61167a31``
(2021-02-26), files ``DATA/uhtt_barcode_ref_0001.csv`` …
``DATA/uhtt_barcode_ref_0705.csv`` (tab-separated UTF-8:
``ID, UPCEAN, Name, CategoryID, CategoryName, BrandID, BrandName``; 4,748,271 goods in all). The
category is a path with ``/`` between levels, where a level that has children carries the suffix
`` (folder)``. Licence: not stated (no licence file; the README describes it as an open reference,
"открытый справочник", kept by Petroglif for uhtt.ru).

What it does: keeps the grocery part of the reference that the engine is evaluated on: goods under
``Продукты питания`` (food), with a brand (``BrandID`` not 0) and a Russian (Cyrillic) name; then a
deterministic one-in-``--sample`` subset, chosen by ``sha1(ID) mod sample == 0`` (default 8, about
30,000 products; 1 keeps all 239,013). Names stay as the reference writes them ("Type Brand Variant
Size", e.g. "Чай mabroc Крем карамель жб 125г"); the `` (folder)`` suffixes are dropped from the path.
Rows without a name or a category are skipped and counted, and so is each row left out by a filter.

    python scripts/realdata/russia_uhtt.py /work/.mirror/papyrussolution+UhttBarcodeReference/repo \
        ../shared/data/catalogs/russia-uhtt
"""

from __future__ import annotations

import argparse
import hashlib
import re

from _common import Counts, Source, catalog_main, category_path, clean_text

DATA_FILE = re.compile(r"^DATA/uhtt_barcode_ref_\d{4}\.csv$")
FOOD_ROOT = "Продукты питания"
FOLDER_SUFFIX = " (folder)"
CYRILLIC = re.compile("[А-Яа-яЁё]")
COLUMNS = 7


def _level(text: str) -> str:
    text = clean_text(text)
    return text[: -len(FOLDER_SUFFIX)] if text.endswith(FOLDER_SUFFIX) else text


def _sampled(product_id: str, sample: int) -> bool:
    return sample <= 1 or int(hashlib.sha1(product_id.encode()).hexdigest(), 16) % sample == 0


def convert(source: Source, sample: int) -> tuple[list[tuple[str, str, str, str]], Counts]:
    counts = Counts()
    rows: list[tuple[str, str, str, str]] = []
    seen: set[str] = set()
    files = [f for f in source.list_files("DATA") if DATA_FILE.match(f)]
    missing = 0
    for name in files:
        text = source.read_text(name)
        if text is None:
            missing += 1
            continue
        for line in text.split("\n"):
            if not line or line.startswith("ID\t"):
                continue
            counts.read += 1
            cells = line.rstrip("\r").split("\t")
            if len(cells) != COLUMNS:
                counts.skip(f"not {COLUMNS} tab-separated cells")
                continue
            pid, _ean, raw_name, _cat_id, cat_name, brand_id, raw_brand = cells
            levels = [_level(level) for level in cat_name.split("/")]
            if not levels or levels[0] != FOOD_ROOT:
                counts.skip("not under Продукты питания (food)")
                continue
            brand = clean_text(raw_brand)
            if brand_id.strip() in ("", "0") or not brand:
                counts.skip("food, no brand")
                continue
            name = clean_text(raw_name)
            if not name:
                counts.skip("food, no name")
                continue
            if not CYRILLIC.search(name):
                counts.skip("food, name without Cyrillic letters")
                continue
            path = category_path(levels)
            if not path:
                counts.skip("food, no category")
                continue
            if pid in seen:
                counts.skip("ID seen before")
                continue
            if not _sampled(pid, sample):
                counts.skip(f"kept food row left out of the 1-in-{sample} sample")
                continue
            seen.add(pid)
            rows.append((pid, name, brand, path))
    counts.notes["data files"] = f"{len(files)} listed, {missing} absent from this copy"
    return rows, counts


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sample", type=int, default=8, help="keep one product in SAMPLE by sha1(ID) (1: all)")


def main() -> None:
    catalog_main(
        __doc__,
        "the fetched git dir of papyrussolution/UhttBarcodeReference",
        "russia-uhtt from DATA/uhtt_barcode_ref_NNNN.csv",
        lambda source, args: convert(source, args.sample),
        add_arguments=_options,
    )


if __name__ == "__main__":
    main()
