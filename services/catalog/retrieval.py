"""What a search would retrieve from the catalog: a plain keyword search over products.

A query is normalized (:func:`services.normalize.normalize_query`) and split into words; a
product matches when every word occurs among the words of its name, its brand or its category
path (so "frozen desserts" finds products filed under "frozen > frozen dessert"), after folding a
plural "s"/"es". Matches are ranked by popularity (then product id) and the first ``page`` (one
results page) are kept. It stands in for the search engine behind the rewrites: the guardrails
drop a rewrite that retrieves nothing (useless for discovery), and ``qu eval`` judges a rewrite
by the categories of what it retrieves.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.catalog.model import CategoryPath, Product
from services.normalize import normalize_query

__all__ = ["DEFAULT_PAGE", "CatalogRetriever", "fold_plural"]

DEFAULT_PAGE = 20
_KEEP_ENDINGS = ("ss", "us", "is")
_ES_ENDINGS = ("oes", "ches", "shes", "xes", "sses", "zes")


def fold_plural(word: str) -> str:
    """A crude English singular: "bananas" -> "banana", "tomatoes" -> "tomato"; "hummus", "swiss" unchanged."""
    if len(word) <= 3 or not word.endswith("s") or word.endswith(_KEEP_ENDINGS):
        return word
    if word.endswith(_ES_ENDINGS):
        return word[:-2]
    return word[:-1]


def _words(text: str) -> list[str]:
    return [fold_plural(w) for w in normalize_query(text).split()]


class CatalogRetriever:
    """Keyword search over product name, brand and category path words (see the module docstring)."""

    def __init__(self, products: Sequence[Product], *, page: int = DEFAULT_PAGE) -> None:
        if page < 1:
            raise ValueError(f"page must be at least 1, got {page}")
        self.page = page
        # Best first once, so a search keeps the first ``page`` of an ordered intersection.
        self._products = sorted(products, key=lambda p: (-p.popularity, p.product_id))
        self._index: dict[str, set[int]] = {}
        for i, product in enumerate(self._products):
            words = set(_words(product.name)) | set(_words(product.brand))
            for level in product.category_path:
                words.update(_words(level))
            for word in words:
                self._index.setdefault(word, set()).add(i)

    def products(self, query: str) -> list[Product]:
        """The first ``page`` matching products, best first."""
        words = set(_words(query))
        if not words:
            return []
        postings = sorted((self._index.get(w, set()) for w in words), key=len)
        hits = set(postings[0]).intersection(*postings[1:])
        return [self._products[i] for i in sorted(hits)[: self.page]]

    def categories(self, query: str) -> set[CategoryPath]:
        return {p.category_path for p in self.products(query)}
