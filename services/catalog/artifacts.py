"""The imported catalog on disk: what the engine loads at start-up, written atomically.

Layout of a catalog directory::

    DIR/current -> builds/<build id>       (a symlink, swapped atomically)
    DIR/builds/<build id>/manifest.json    (written last: a build without it is incomplete)
                          products.parquet taxonomy.json brands.json product_types.json
                          attributes.json category_terms.json embeddings.npz

A build is written under a temporary name and renamed into place, then ``current`` is
swapped, so a reader sees the old catalog or the new one, never half of either, and a
failed import leaves the previous catalog untouched.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from services.catalog.attributes import AttributeKind, AttributeTerm, AttributeVocabulary
from services.catalog.embedding_index import CatalogEmbeddings, embed_catalog
from services.catalog.lexicons import Lexicon, learn_brands, learn_product_types
from services.catalog.locale import catalog_locale
from services.catalog.model import Product, Taxonomy, format_path, parse_path
from services.catalog.type_inference import mine_variant_words
from services.embeddings import SentenceEmbedder
from services.errors import QuError

SCHEMA_VERSION = 1
KEEP_BUILDS = 3
CURRENT = "current"
BUILDS = "builds"


class CatalogNotFoundError(QuError):
    pass


@dataclass(slots=True)
class Catalog:
    products: list[Product]
    product_types: dict[str, str]  # product id -> product type key
    taxonomy: Taxonomy
    brands: Lexicon
    types: Lexicon
    attributes: AttributeVocabulary
    category_terms: dict[str, Any] = field(default_factory=dict)  # term -> synonyms / broader (optional)
    embeddings: CatalogEmbeddings | None = None
    manifest: dict[str, Any] = field(default_factory=dict)

    def stats(self) -> dict[str, Any]:
        leaves = self.taxonomy.leaves
        return {
            "products": len(self.products),
            "brands": len(self.brands),
            "branded_products": sum(1 for p in self.products if p.brand),
            "categories": len(self.taxonomy),
            "root_categories": len(self.taxonomy.roots),
            "leaf_categories": len(leaves),
            "depth": self.taxonomy.depth,
            "product_types": len(self.types),
            "attributes": len(self.attributes),
            "products_with_attributes": sum(1 for p in self.products if p.attributes),
            "category_terms": len(self.category_terms),
            "embedding_model": self.embeddings.model_id if self.embeddings else None,
            "build": self.manifest.get("build"),
            "source": self.manifest.get("source"),
            "locale": self.manifest.get("locale"),
            # What the import learnt and rejected, and why (services/catalog/type_inference.py TypeReport).
            "learnt": self.manifest.get("learnt", {}),
        }


def catalog_words(catalog: Catalog) -> frozenset[str]:
    """Every word the catalog's lexicons write a brand, product type or attribute with, and its locale's
    stopwords: words a shopper spelled as the catalog does, so never read as a slip of another
    (services/catalog/spelling.py)."""
    entries = [*catalog.brands.entries.values(), *catalog.types.entries.values()]
    forms = [f for e in entries for f in (e.key, *e.aliases)]
    forms += [a for term in catalog.attributes.terms.values() for a in term.aliases]
    return frozenset({w for form in forms for w in form.split()} | catalog.attributes.locale.stopwords)


def build_catalog(
    products: list[Product],
    *,
    embedder: SentenceEmbedder | None,
    category_terms: dict[str, Any] | None = None,
    source: str = "",
    locale: str | None = None,
) -> Catalog:
    """Every artifact the engine needs from ``products``; embeddings only when an embedder is given.

    ``locale`` (``QU_CATALOG_LOCALE``, services/catalog/locale.py) names the units, prices, audiences and
    colours of the catalog's market; it is kept in the manifest, so queries are tagged with the same words."""
    market = catalog_locale(locale)
    taxonomy = Taxonomy.from_products(products)
    attributes = AttributeVocabulary.build((p.name for p in products), (p.attributes for p in products), market)
    brands, brand_report = learn_brands(products, attributes, market)
    types, product_types, learnt = learn_product_types(products, brands, attributes, locale=market)
    # What varies among the products of one type becomes an attribute of the vocabulary (after the types
    # are learnt, so a word that names a type stays a type).
    variants, variant_report = mine_variant_words(
        learnt.runs, product_types, lambda word: types.lookup(word) is not None, attributes, market
    )
    for word in variants:
        attributes.add(AttributeTerm(word, AttributeKind.VARIANT, (word,)))
    embeddings = embed_catalog(embedder, taxonomy, brands, types) if embedder is not None else None
    return Catalog(
        products,
        product_types,
        taxonomy,
        brands,
        types,
        attributes,
        category_terms or {},
        embeddings,
        {
            "source": source,
            "schema_version": SCHEMA_VERSION,
            "locale": market.name,
            "learnt": {
                "types": learnt.report.to_json(),
                "brands": brand_report.to_json(),
                "attributes": variant_report.to_json(),
            },
        },
    )


def _write_json(path: Path, value: Any) -> None:
    path.write_bytes(orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))


def _products_table(catalog: Catalog) -> pa.Table:
    ps = catalog.products
    return pa.table(
        {
            "product_id": [p.product_id for p in ps],
            "name": [p.name for p in ps],
            "brand": [p.brand for p in ps],
            "category_path": [format_path(p.category_path) for p in ps],
            "attributes": pa.array([list(p.attributes) for p in ps], type=pa.list_(pa.string())),
            "popularity": pa.array([p.popularity for p in ps], type=pa.float64()),
            "product_type": [catalog.product_types.get(p.product_id, "") for p in ps],
        }
    )


def write_catalog(catalog: Catalog, out_dir: Path) -> Path:
    """Write ``catalog`` as a new build under ``out_dir`` and point ``current`` at it; returns the build dir."""
    builds = out_dir / BUILDS
    builds.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".incomplete-", dir=builds))
    try:
        pq.write_table(_products_table(catalog), staging / "products.parquet")
        _write_json(staging / "taxonomy.json", catalog.taxonomy.to_json())
        _write_json(staging / "brands.json", catalog.brands.to_json())
        _write_json(staging / "product_types.json", catalog.types.to_json())
        _write_json(staging / "attributes.json", catalog.attributes.to_json())
        _write_json(staging / "category_terms.json", catalog.category_terms)
        if catalog.embeddings is not None:
            catalog.embeddings.save(staging / "embeddings.npz")
        digest = hashlib.sha256()
        files = {}
        for path in sorted(staging.iterdir()):
            data = path.read_bytes()
            digest.update(data)
            files[path.name] = hashlib.sha256(data).hexdigest()
        build_id = f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{digest.hexdigest()[:10]}"
        manifest = {
            **catalog.manifest,
            "schema_version": SCHEMA_VERSION,
            "build": build_id,
            "created_at": datetime.now(UTC).isoformat(),
            "files": files,
            "stats": {k: v for k, v in catalog.stats().items() if k not in ("build",)},
        }
        manifest["stats"]["embedding_model"] = catalog.embeddings.model_id if catalog.embeddings else None
        _write_json(staging / "manifest.json", manifest)
        final = builds / build_id
        staging.chmod(0o755)  # mkdtemp makes it private; the catalog is for every reader
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    catalog.manifest = manifest
    pointer = out_dir / f".{CURRENT}.{os.getpid()}"
    pointer.unlink(missing_ok=True)
    pointer.symlink_to(Path(BUILDS) / build_id)
    os.replace(pointer, out_dir / CURRENT)
    _prune(builds, keep=final)
    return final


def _prune(builds: Path, keep: Path) -> None:
    """Keep the newest few builds (a reader may still hold an older one) and drop abandoned staging dirs."""
    done = sorted((b for b in builds.iterdir() if not b.name.startswith(".")), key=lambda b: b.name)
    for old in done[:-KEEP_BUILDS]:
        if old != keep:
            shutil.rmtree(old, ignore_errors=True)


def resolve_build(catalog_dir: Path) -> Path:
    """The complete build a catalog directory points at (or the directory itself if it is a build)."""
    if (catalog_dir / "manifest.json").is_file():
        return catalog_dir
    current = catalog_dir / CURRENT
    if current.exists() and (current / "manifest.json").is_file():
        return current.resolve()
    raise CatalogNotFoundError(
        f"no imported catalog in {catalog_dir}: run `qu catalog import FILE --out {catalog_dir}` "
        "(or `qu catalog import --demo`) first"
    )


def load_catalog(catalog_dir: Path) -> Catalog:
    build = resolve_build(catalog_dir)

    def read(name: str) -> Any:
        return orjson.loads((build / name).read_bytes())

    manifest = read("manifest.json")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise CatalogNotFoundError(
            f"the catalog in {build} has schema version {manifest.get('schema_version')}, this engine reads "
            f"{SCHEMA_VERSION}: import the catalog again"
        )
    table = pq.read_table(build / "products.parquet").to_pylist()
    products = [
        Product(
            r["product_id"],
            r["name"],
            r["brand"],
            parse_path(r["category_path"]),
            tuple(r["attributes"]),
            float(r["popularity"]),
        )
        for r in table
    ]
    product_types = {r["product_id"]: r["product_type"] for r in table if r["product_type"]}
    embeddings_file = build / "embeddings.npz"
    return Catalog(
        products,
        product_types,
        Taxonomy.from_json(read("taxonomy.json")),
        Lexicon.from_json(read("brands.json")),
        Lexicon.from_json(read("product_types.json")),
        AttributeVocabulary.from_json(read("attributes.json"), catalog_locale(manifest.get("locale"))),
        read("category_terms.json"),
        CatalogEmbeddings.load(embeddings_file) if embeddings_file.is_file() else None,
        manifest,
    )


__all__ = [
    "Catalog",
    "CatalogNotFoundError",
    "build_catalog",
    "load_catalog",
    "resolve_build",
    "write_catalog",
]
