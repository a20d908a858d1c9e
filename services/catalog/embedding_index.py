"""Embeddings of the catalog's category paths, brands and product types, stored with the catalog.

Computed once at import, so start-up loads arrays instead of running the model; the
model id is stored with them so vectors of different models are never compared.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.catalog.lexicons import Lexicon
from services.catalog.model import CategoryPath, Taxonomy, format_path, parse_path
from services.embeddings import SentenceEmbedder, Vectors


@dataclass(slots=True)
class EmbeddedSet:
    """Keys and their unit vectors, row i for key i."""

    keys: list[str]
    vectors: Vectors

    def nearest(self, query: Vectors, k: int) -> list[tuple[str, float]]:
        """The ``k`` keys most similar (cosine) to one unit query vector, best first."""
        if not self.keys:
            return []
        scores = self.vectors @ query.astype(np.float32)
        top = np.argsort(-scores, kind="stable")[:k]
        return [(self.keys[i], float(scores[i])) for i in top]


@dataclass(slots=True)
class CatalogEmbeddings:
    model_id: str
    categories: EmbeddedSet  # keys are formatted paths, "dairy eggs > milk"
    brands: EmbeddedSet  # keys are brand keys (normalized)
    product_types: EmbeddedSet

    def category_paths(self) -> list[CategoryPath]:
        return [parse_path(k) for k in self.categories.keys]

    def save(self, path: Path) -> None:
        with path.open("wb") as handle:
            np.savez(
                handle,
                model_id=np.array(self.model_id),
                category_keys=np.array(self.categories.keys, dtype=object).astype(str),
                category_vectors=self.categories.vectors,
                brand_keys=np.array(self.brands.keys, dtype=object).astype(str),
                brand_vectors=self.brands.vectors,
                product_type_keys=np.array(self.product_types.keys, dtype=object).astype(str),
                product_type_vectors=self.product_types.vectors,
            )

    @classmethod
    def load(cls, path: Path) -> CatalogEmbeddings:
        with np.load(path, allow_pickle=False) as data:

            def part(name: str) -> EmbeddedSet:
                return EmbeddedSet(
                    [str(k) for k in data[f"{name}_keys"]],
                    np.asarray(data[f"{name}_vectors"], dtype=np.float32),
                )

            return cls(str(data["model_id"]), part("category"), part("brand"), part("product_type"))


def embed_catalog(embedder: SentenceEmbedder, taxonomy: Taxonomy, brands: Lexicon, types: Lexicon) -> CatalogEmbeddings:
    """Embed every category path (as "department > aisle"), brand and product type in one model pass."""
    category_keys = sorted(format_path(node.path) for node in taxonomy)
    brand_keys = sorted(brands.entries)
    type_keys = sorted(types.entries)
    texts = category_keys + [brands.entries[k].canonical for k in brand_keys] + type_keys
    vectors = embedder.encode(texts)
    a, b = len(category_keys), len(category_keys) + len(brand_keys)
    return CatalogEmbeddings(
        embedder.model_id,
        EmbeddedSet(category_keys, vectors[:a]),
        EmbeddedSet(brand_keys, vectors[a:b]),
        EmbeddedSet(type_keys, vectors[b:]),
    )
