"""Derive the small demo catalog that ships with the project from the public data sets.

Inputs (see ``shared/data/README.md``): the Instacart 2017 products, aisles, departments and
two order-line samples, and the Open Food Facts brand lists and category taxonomy. Outputs,
written atomically into ``out_dir``: ``catalog.csv`` (the format :func:`read_catalog` reads) and
``category_terms.json`` (synonyms and broader terms per category or product-type term).

Instacart names carry no brand column and most of them carry no brand at all, so brands are
inferred conservatively: a wrong brand ("Organic", "Chocolate") poisons tagging, a missing one
only costs recall.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from services.catalog.attributes import AttributeVocabulary
from services.catalog.model import format_path
from services.errors import InputError
from services.normalize import normalize_query

__all__ = ["DemoSummary", "derive_demo_catalog", "main"]

CATALOG_COLUMNS = ("product_id", "name", "brand", "category_path", "attributes", "popularity")
MIN_RECURRENCE = 3  # products sharing a leading prefix before it counts as a brand without OFF
MIN_PER_AISLE = 3  # most popular products of every aisle, taken before global popularity
EXTEND_RATIO = 0.75  # "Horizon" -> "Horizon Organic" only when most "Horizon" names go on that way
LEAD_RATIO = 0.6  # a brand stands first in most names that contain it; "Hass" in "Organic Hass Avocado" does not
MAX_BRAND_WORDS = 3
# Estimated by reading 50 randomly sampled branded rows of the shipped demo (see the module's report).
BRAND_PRECISION_NOTE = "~94% (47/50 branded rows judged correct by eye, seed 7)"

# Words that lead many grocery names without being brands. The attribute vocabulary, words that
# mostly end names (product types) and words that mostly stand mid-name are added from the data.
GENERIC_WORDS = frozenset(
    """organic original classic natural naturals naturally whole fresh large small chocolate pure premium
    extra super ultra simply real gourmet traditional homestyle style deluxe special select signature
    everyday family kids baby value best good great perfect ultimate new old authentic artisan imported
    premium limited edition assorted variety mixed mini petite jumbo big little double triple single
    sweet dark white black red green yellow blue golden pink brown light lite low high reduced free no
    non fat gluten sugar dairy lactose vegan keto raw plain mild medium hot spicy cold iced soft hard
    thin thick crispy crunchy creamy smooth chunky sliced diced chopped ground roasted toasted smoked
    baked grilled frozen dried salted unsalted uncured boneless skinless seedless sparkling still
    italian french greek mexican thai indian asian american english spanish swiss belgian hawaiian
    mediterranean california tuscan country farm garden home kitchen homemade hand daily sport
    complete total advanced maximum max plus pro clear clean gentle sensitive moisturizing healthy
    lean 100 the a an all just very one two three four five with for by in of and or on to from""".split()
)
CONNECTORS = frozenset({"&", "and", "of", "the", "de", "du", "des", "la", "le", "di", "del", "n", "'n'", "n'"})
_CAPITALIZED = re.compile(r"^[A-Z][\w'’.&!-]*$|^\d+[A-Za-z][\w'’-]*$")
_TRAILING = re.compile(r"[,:;\-–]+$")


@dataclass(frozen=True, slots=True)
class DemoSummary:
    products: int
    aisles_covered: int
    aisles_total: int
    departments: int
    products_with_brand: int
    distinct_brands: int
    brands_confirmed_by_off: int
    category_terms: int
    brand_precision_estimate: str
    catalog_path: str
    category_terms_path: str


@dataclass(frozen=True, slots=True)
class _Source:
    product_id: int
    name: str
    aisle_id: int
    department_id: int


# --- reading ------------------------------------------------------------------------------------


def _csv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise InputError(str(path), "no such file")
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in required if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(str(path), f"missing column(s) {', '.join(missing)}; header: {reader.fieldnames}")
        for row_number, row in enumerate(reader, start=1):
            yield row_number, row


def _int(path: Path, row: int, raw: dict[str, str], column: str) -> int:
    value = (raw.get(column) or "").strip()
    try:
        return int(float(value)) if "." in value else int(value)
    except ValueError as err:
        raise InputError(str(path), f"expected an integer, got {value!r}", row=row, column=column) from err


def _read_names(path: Path, id_col: str, name_col: str) -> dict[int, str]:
    return {_int(path, n, r, id_col): r[name_col].strip().lower() for n, r in _csv_rows(path, (id_col, name_col))}


def _read_products(path: Path, aisles: dict[int, str], departments: dict[int, str]) -> list[_Source]:
    products: list[_Source] = []
    cols = ("product_id", "product_name", "aisle_id", "department_id")
    for n, raw in _csv_rows(path, cols):
        # The source escapes inner quotes as \" and sometimes doubles spaces; neither is part of the name.
        name = " ".join(raw["product_name"].replace('\\"', '"').split())
        source = _Source(_int(path, n, raw, "product_id"), name, _int(path, n, raw, "aisle_id"),
                         _int(path, n, raw, "department_id"))
        if not name:
            raise InputError(str(path), "empty product_name", row=n, column="product_name")
        if source.aisle_id not in aisles:
            raise InputError(str(path), f"unknown aisle_id {source.aisle_id}", row=n, column="aisle_id")
        if source.department_id not in departments:
            raise InputError(str(path), f"unknown department_id {source.department_id}", row=n,
                             column="department_id")
        products.append(source)
    return products


def _count_order_lines(paths: Iterable[Path]) -> Counter[int]:
    counts: Counter[int] = Counter()
    for path in paths:
        for n, raw in _csv_rows(path, ("product_id",)):
            counts[_int(path, n, raw, "product_id")] += 1
    return counts


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise InputError(str(path), "no such file")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:  # type: ignore[operator]
            data = json.load(handle)
    except (OSError, ValueError) as err:
        raise InputError(str(path), f"not readable JSON ({err})") from err
    if not isinstance(data, dict):
        raise InputError(str(path), f"expected a JSON object at the top level, got {type(data).__name__}")
    return data


def _off_brands(paths: Iterable[Path]) -> set[str]:
    keys: set[str] = set()
    for path in paths:
        for brand_id, entry in _read_json(path).items():
            name = (entry.get("name") or {}).get("en") if isinstance(entry, dict) else None
            # Ids are slugs of the name ("en:clover-valley"); the slug also catches names given in caps.
            for text in (name, str(brand_id).split(":", 1)[-1].replace("-", " ")):
                if text and (key := normalize_query(text)):
                    keys.add(key)
    return keys


# --- brands -------------------------------------------------------------------------------------


def _leading_words(name: str) -> list[str]:
    """The name's leading capitalized words (at most MAX_BRAND_WORDS, connectors between them),
    never the whole name: a brand is followed by what the product is."""
    tokens = name.replace("®", "").replace("™", "").split()
    out: list[str] = []
    words = 0
    for token in tokens[:-1]:
        if words and token.lower() in CONNECTORS:
            out.append(token)
            continue
        stripped = _TRAILING.sub("", token)
        # Digits are sizes and stages ("2nd Foods", "100% Juice"), never the start of a brand here.
        if not re.match(r"^[A-Z][\w'’.&!-]*$", stripped):
            break
        out.append(stripped)
        words += 1
        if stripped != token or words == MAX_BRAND_WORDS:  # "Jelly, Blackberry": a comma ends the prefix
            break
    while out and out[-1].lower() in CONNECTORS:
        out.pop()
    return out


def _prefixes(name: str) -> list[tuple[str, str]]:
    """(normalized key, surface form) of each leading-word prefix, shortest first."""
    words = _leading_words(name)
    found: list[tuple[str, str]] = []
    for end in range(1, len(words) + 1):
        if words[end - 1].lower() in CONNECTORS:
            continue
        surface = " ".join(words[:end])
        key = normalize_query(surface)
        if key and (not found or found[-1][0] != key):
            found.append((key, surface))
    return found


def infer_brands(names: Sequence[str], off_brands: set[str], vocab: AttributeVocabulary) -> list[tuple[str, bool]]:
    """For each name, its inferred brand ("" if none) and whether Open Food Facts confirms it."""
    normalized = [normalize_query(n).split() for n in names]
    occurrences: Counter[str] = Counter(w for tokens in normalized for w in set(tokens))
    last: Counter[str] = Counter(tokens[-1] for tokens in normalized if tokens)
    # A word that ends a good share of the names it is in names a product type ("Preserves", "Avocado").
    type_words = {w for w, n in last.items() if n >= 3 and n >= 0.3 * occurrences[w]}
    attribute_words = {alias for term in vocab.terms.values() for alias in term.aliases if " " not in alias}
    generic = GENERIC_WORDS | attribute_words | type_words

    prefixes = [_prefixes(n) for n in names]
    starts: Counter[str] = Counter(key for found in prefixes for key in {k for k, _ in found})
    surfaces: dict[str, Counter[str]] = defaultdict(Counter)
    for found in prefixes:
        for key, surface in found:
            surfaces[key][surface] += 1
    # How often each candidate appears anywhere in a name: brands lead, descriptive words float.
    longest = max((len(k.split()) for k in starts), default=0)
    contains: Counter[str] = Counter()
    for tokens in normalized:
        grams = {" ".join(tokens[i : i + n]) for n in range(1, longest + 1) for i in range(len(tokens) - n + 1)}
        contains.update(g for g in grams if g in starts)

    result: list[tuple[str, bool]] = []
    for found in prefixes:
        best: tuple[str, bool] | None = None
        previous = 0
        for key, _ in found:
            words = key.split()
            count, off = starts[key], key in off_brands
            recurring = count >= MIN_RECURRENCE or off
            if best is None:
                leads = count >= LEAD_RATIO * contains[key]
                # OFF may vouch for "Special K" although "Special" alone is generic, never for "Sweet".
                clean_start = words[0] not in generic or (off and len(words) > 1 and words[-1] not in generic)
                ok = recurring and leads and clean_start and words[-1] not in type_words
            else:
                ok = recurring and count >= EXTEND_RATIO * previous and words[-1] not in type_words
            if ok:
                best = (key, off)
            elif best is not None:
                break
            previous = count
        if best is None:
            result.append(("", False))
        else:
            result.append((surfaces[best[0]].most_common(1)[0][0], best[1]))
    return result
