"""Tags a normalized query with the catalog's own lexicons: brands, attributes and product types.

This is the exact-match tagger: it finds what the catalog knows and invents nothing. It runs
inside the ``qu_student`` Triton model and, in-process, as the degraded answer when Triton is
down, so it loads in well under a second and needs no embedding model for its tags (only
:meth:`LexiconTagger.nearest_categories` uses vectors, made by the caller).

Precedence (the catalog import learns its types by other means, services/catalog/type_inference.py):

* every matcher proposes its spans; the span of most words wins an overlap ("no gluten" the
  claim beats "no" the product type), and on as many words a brand beats an attribute beats a type;
* "chocolate milk": chocolate is a flavour, milk the product; but a query with no product
  left ("banana", "chocolate banana") names its product with its last flavour or form word
  when that word is a product type (:func:`services.catalog.lexicons.names_the_type` is the
  same rule for product names);
* one product per query unless a conjunction joins two: the head where the catalog's word order
  puts it ("coconut oil shampoo" names a shampoo);
* a query word that no lexicon knows is read as the product-type word it is a slip of ("aata"
  as "atta", "колбаски" as "колбаса"; :mod:`services.tagging.spelling_correction`), else as the
  attribute or brand word ("orgaic" as "organic", "срикерс" as "сникерс"), and the query is
  tagged again with those words; the tags keep the shopper's own spans.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.catalog.artifacts import Catalog, catalog_words
from services.catalog.attributes import AttributeKind
from services.catalog.lexicons import Lexicon
from services.catalog.model import format_path, parse_path
from services.domain import CategoryScore, Role, Tag
from services.errors import QuError
from services.tagging.spelling_correction import SpellingCorrector, language_words, stemmer

TAGGER_NAME = "catalog-lexicon-v2"  # bump when a rule above changes what a query is tagged with
_WORD = re.compile(r"\S+")

# On as many words the earlier role wins: the order the catalog import matched them in.
_PRIORITY = {Role.BRAND: 0, Role.ATTRIBUTE: 1, Role.PRODUCT: 2}
_NAMING_KINDS = (AttributeKind.FLAVOUR, AttributeKind.FORM)
# ``prior_weight`` of nearest_categories_batch: how much the catalog's own placement of a tagged
# product type moves a category up the order. Measured on 600 demo product names cut to their last
# 3 words as queries (top-1 path right; optimistic, the prior comes from those same products):
# 0.0 (cosine alone) -> 42%, 0.1 -> 58%, 0.3 -> 74%, 0.5 -> 77%. Off by default: the student
# contract and the guardrail (which re-sorts by score) rank categories by cosine similarity alone.
SUGGESTED_PRIOR_WEIGHT = 0.3


class CategoryIndexMissing(QuError):
    """The catalog was imported without embeddings, so categories cannot be ranked by similarity."""


@dataclass(frozen=True, slots=True)
class _Candidate:
    role: Role
    start: int
    end: int
    canonical: str
    kind: AttributeKind | None  # attributes only

    def rank(self, text: str) -> tuple[int, int, int, int]:
        span = text[self.start : self.end]
        # Words first, then role: "happy baby" (brand) keeps "baby" from "baby spinach" (type), both two words.
        return (-len(span.split()), _PRIORITY[self.role], -len(span), self.start)


class LexiconTagger:
    """Brand, attribute and product-type tags for normalized queries, from one imported catalog."""

    def __init__(self, catalog: Catalog, *, spelling: bool = True) -> None:
        """``spelling=False``: exact matching alone (how the precision of the slips is measured)."""
        self.catalog = catalog
        build = catalog.manifest.get("build")
        # A catalog built in memory (tests) has no build id; say so rather than pretend one.
        exact = "" if spelling else "+exact"
        self.version = f"{TAGGER_NAME}{exact}+catalog.{build or 'unsaved'}"
        self._spelling = spelling
        learnt = catalog.manifest.get("learnt", {}).get("types", {})
        # Where a query's head product stands: the word order the import found in the catalog's names.
        self._type_first = learnt.get("convention") == "type-first"
        self._correctors: tuple[SpellingCorrector, ...] | None = None  # on first use
        self._columns: dict[str, int] | None = None  # category path -> row of the stored vectors

    def tag(self, normalized: str) -> list[Tag]:
        """Non-overlapping tags, in query order; offsets index ``normalized``.

        ``normalized`` must be :func:`services.normalize.normalize_query` output: the lexicons
        hold normalized forms only, so raw text would simply match less.
        """
        tags = self._tag_exact(normalized)
        if not self._spelling:
            return tags
        words = list(_WORD.finditer(normalized))
        covered = [False] * len(normalized)
        for tag in tags:
            covered[tag.start : tag.end] = [True] * (tag.end - tag.start)
        fixes = {
            i: fix
            for i, word in enumerate(words)
            if not any(covered[word.start() : word.end()])
            and (fix := self._correct(word.group(), last=i == len(words) - 1)) is not None
        }
        return self._tag_corrected(normalized, words, fixes) if fixes else tags

    def warm(self) -> LexiconTagger:
        """Build the spelling indexes now (0.3-0.5 s for a 30,000-product catalog) rather than on the first
        query a serving process answers, where they would spend that query's deadline."""
        if self._spelling:
            _ = self.correctors
        return self

    @property
    def correctors(self) -> tuple[SpellingCorrector, ...]:
        """Slips of product-type words, then of attribute words, then of brand words: a word near a type
        and a brand is read as the product, which a query names far more often than a brand (on X5's
        labelled queries 0.88 of the type slips were right, 0.51 of the brand slips), and "orgaic" is the
        claim "organic", not the brand "Orgain"."""
        if self._correctors is None:
            catalog = self.catalog
            locale = catalog.attributes.locale
            known = catalog_words(catalog)
            language = language_words(locale.language) if locale.language else frozenset()
            stem = stemmer(locale.stemmer) if locale.stemmer else None

            def of(forms: Iterable[tuple[Iterable[str], int]]) -> SpellingCorrector:
                targets: Counter[str] = Counter()
                for written, products in forms:
                    for form in set(written):
                        targets.update(dict.fromkeys(form.split(), max(products, 1)))
                return SpellingCorrector(targets, known, language=language, stem=stem)

            def entries(lexicon: Lexicon) -> list[tuple[Iterable[str], int]]:
                return [((e.key, *e.aliases), e.product_count) for e in lexicon.entries.values()]

            attributes = [(t.aliases, t.product_count) for t in catalog.attributes.terms.values()]
            self._correctors = (of(entries(catalog.types)), of(attributes), of(entries(catalog.brands)))
        return self._correctors

    def canonical(self, role: Role, span: str) -> str | None:
        """The catalog's canonical value of a normalized span another model tagged with ``role``: the one
        tag this tagger gives the whole span, slips read as the teacher reads them ("bananna" -> "banana"),
        or None when the span alone is not one such tag."""
        tags = self.tag(span)
        if len(tags) == 1 and tags[0].role is role and (tags[0].start, tags[0].end) == (0, len(span)):
            return tags[0].canonical
        return None

    def _correct(self, word: str, *, last: bool) -> str | None:
        # Slips of type, attribute, then brand words; only then another script, brands first (a name written
        # in the other script is mostly a brand's: "makfa", "umka").
        types, attributes, brands = self.correctors
        return (
            types.correct(word, last=last)
            or attributes.correct(word, last=last)
            or brands.correct(word, last=last)
            or brands.transliterated(word, last=last)
            or types.transliterated(word, last=last)
        )

    def _tag_corrected(self, normalized: str, words: list[re.Match[str]], fixes: dict[int, str]) -> list[Tag]:
        """Tags of the query with its slips replaced, on the shopper's own words (spans mapped back)."""
        pieces = [fixes.get(i, w.group()) for i, w in enumerate(words)]
        starts, at = [], 0
        for piece in pieces:
            starts.append(at)
            at += len(piece) + 1
        corrected = " ".join(pieces)

        def original(offset: int, *, end: bool) -> int:
            i = bisect_right(starts, offset if not end else offset - 1) - 1
            if i in fixes:  # a replaced word maps whole onto the word it replaced
                return words[i].end() if end else words[i].start()
            return words[i].start() + offset - starts[i]

        out = []
        for tag in self._tag_exact(corrected):
            start, end = original(tag.start, end=False), original(tag.end, end=True)
            out.append(Tag(tag.role, start, end, normalized[start:end], tag.canonical))
        return out

    def _tag_exact(self, normalized: str) -> list[Tag]:
        taken = [False] * len(normalized)
        chosen: list[_Candidate] = []
        # A losing span can hide a shorter one: in "happy baby spinach" the brand "happy baby" beats
        # the type "baby spinach", and only a second look at what is left finds the type "spinach".
        while won := self._resolve(normalized, self._candidates(normalized, taken), taken):
            chosen += won
        chosen = self._name_the_product(normalized, sorted(chosen, key=lambda c: c.start))
        chosen = self._one_product(normalized, chosen)
        return [Tag(c.role, c.start, c.end, normalized[c.start : c.end], c.canonical) for c in chosen]

    def _candidates(self, text: str, taken: list[bool]) -> list[_Candidate]:
        # Each matcher proposes its own longest spans outside ``taken`` (each on its own copy of the
        # mask); overlaps between matchers are settled by _resolve, not by who ran first.
        catalog = self.catalog
        found = [
            _Candidate(Role.BRAND, h.start, h.end, h.value.canonical, None) for h in catalog.brands.find(text, [*taken])
        ]
        found += [
            _Candidate(Role.ATTRIBUTE, m.start, m.end, m.canonical, m.kind)
            for m in catalog.attributes.match(text, [*taken])
        ]
        found += [
            _Candidate(Role.PRODUCT, h.start, h.end, h.value.key, None) for h in catalog.types.find(text, [*taken])
        ]
        return found

    @staticmethod
    def _resolve(text: str, candidates: list[_Candidate], taken: list[bool]) -> list[_Candidate]:
        """The best-ranked candidates that overlap neither each other nor ``taken`` (which they are added to)."""
        chosen: list[_Candidate] = []
        for candidate in sorted(candidates, key=lambda c: c.rank(text)):
            if any(taken[candidate.start : candidate.end]):
                continue
            taken[candidate.start : candidate.end] = [True] * (candidate.end - candidate.start)
            chosen.append(candidate)
        return chosen

    def _name_the_product(self, text: str, chosen: list[_Candidate]) -> list[_Candidate]:
        """With no product tagged, the last flavour or form that is also a product type is the product."""
        if any(c.role is Role.PRODUCT for c in chosen):
            return chosen
        for index in range(len(chosen) - 1, -1, -1):
            candidate = chosen[index]
            if candidate.kind not in _NAMING_KINDS:
                continue
            span = text[candidate.start : candidate.end]
            hits = self.catalog.types.find(span)
            if len(hits) == 1 and (hits[0].start, hits[0].end) == (0, len(span)):
                product = _Candidate(Role.PRODUCT, candidate.start, candidate.end, hits[0].value.key, None)
                return [*chosen[:index], product, *chosen[index + 1 :]]
            return chosen  # only the last flavour/form can name the product ("chocolate banana")
        return chosen

    def _one_product(self, text: str, chosen: list[_Candidate]) -> list[_Candidate]:
        """One product per query unless a conjunction joins two ("salt and pepper"): the head is the product
        the catalog's word order puts last (type-last, mixed) or first (type-first); the other product
        words qualify it ("coconut oil shampoo": the oil is the shampoo's) and stay as the attribute the
        vocabulary knows them as, or untagged."""
        if sum(c.role is Role.PRODUCT for c in chosen) < 2:
            return chosen
        conjunctions = self.catalog.attributes.locale.conjunctions
        groups: list[list[_Candidate]] = [[]]
        for before, candidate in zip([None, *chosen], chosen, strict=False):
            between = text[before.end : candidate.start].split() if before is not None else []
            if any(word in conjunctions for word in between):
                groups.append([])
            groups[-1].append(candidate)
        out: list[_Candidate] = []
        for group in groups:
            products = [c for c in group if c.role is Role.PRODUCT]
            head = (products[0] if self._type_first else products[-1]) if products else None
            for c in group:
                if c.role is not Role.PRODUCT or c is head:
                    out.append(c)
                    continue
                term = self.catalog.attributes.lookup(text[c.start : c.end])
                if term is not None:
                    out.append(_Candidate(Role.ATTRIBUTE, c.start, c.end, term.canonical, term.kind))
        return out

    # --- categories ----------------------------------------------------------------------------

    def category_prior(self, tags: Sequence[Tag]) -> dict[str, float]:
        """Where the catalog's products of the tagged product types (else brands) sit: formatted path -> share.

        In the demo catalog "banana" -> {"produce > fresh fruits": 0.45, "babies > baby food formula": 0.45,
        "frozen > frozen dessert": 0.09}. Empty when nothing tagged is in a lexicon.
        """
        entries = [self.catalog.types.entries.get(t.canonical) for t in tags if t.role is Role.PRODUCT]
        if not any(entries):
            entries = [self.catalog.brands.lookup(t.canonical) for t in tags if t.role is Role.BRAND]
        counts: Counter[str] = Counter()
        for entry in entries:
            if entry is not None:
                counts.update({format_path(path): n for path, n in entry.categories.items()})
        total = sum(counts.values())
        return {path: n / total for path, n in counts.items()} if total else {}

    def nearest_categories(
        self, vector: npt.NDArray[Any], k: int = 3, *, tags: Sequence[Tag] = (), prior_weight: float = 0.0
    ) -> list[CategoryScore]:
        """The ``k`` category paths nearest one unit query vector, best first (see the batch form)."""
        batch = np.asarray(vector, dtype=np.float32)[np.newaxis, :]
        return self.nearest_categories_batch(batch, k, tags=[tags], prior_weight=prior_weight)[0]

    def nearest_categories_batch(
        self,
        vectors: npt.NDArray[Any],
        k: int = 3,
        *,
        tags: Sequence[Sequence[Tag]] | None = None,
        prior_weight: float = 0.0,
    ) -> list[list[CategoryScore]]:
        """For each row of ``vectors`` (unit query vectors), the ``k`` nearest category paths, best first.

        Each ``score`` is the cosine similarity of the query to the stored path embedding, and by
        default that is also the order. With ``prior_weight`` > 0 the order is similarity plus
        ``prior_weight`` x :meth:`category_prior` of the query's ``tags`` (scores stay cosine): MiniLM
        alone puts "organic bananas" under "snacks > fruit vegetable snacks" (0.53) before "produce >
        fresh fruits" (0.52), while the catalog's banana products sit in the latter.
        """
        embeddings = self.catalog.embeddings
        if embeddings is None or not embeddings.categories.keys:
            raise CategoryIndexMissing(
                "the catalog has no category embeddings: import it with an embedding model "
                "(`qu catalog import`), not with build_catalog(..., embedder=None)"
            )
        stored = embeddings.categories.vectors
        queries = np.asarray(vectors, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != stored.shape[1]:
            raise ValueError(
                f"query vectors have shape {queries.shape}, the catalog's category vectors have dimension "
                f"{stored.shape[1]} ({embeddings.model_id}): embed queries with the model the catalog was imported with"
            )
        if tags is not None and len(tags) != len(queries):
            raise ValueError(f"{len(queries)} query vectors but {len(tags)} tag lists: give one tag list per query")
        keys = embeddings.categories.keys
        similarity = queries @ stored.T
        rank = similarity.copy()
        for row, query_tags in enumerate(tags if tags is not None and prior_weight else ()):
            for path, share in self.category_prior(query_tags).items():
                column = self._category_column(path)
                if column is not None:
                    rank[row, column] += prior_weight * share
        k = min(k, len(keys))
        # Stable sort: equal ranks keep the catalog's (sorted) path order, so answers are deterministic.
        top = np.argsort(-rank, axis=1, kind="stable")[:, :k]
        return [
            [CategoryScore(parse_path(keys[j]), float(similarity[row, j])) for j in columns]
            for row, columns in enumerate(top)
        ]

    def _category_column(self, path: str) -> int | None:
        if self._columns is None:
            keys = self.catalog.embeddings.categories.keys if self.catalog.embeddings else []
            self._columns = {key: j for j, key in enumerate(keys)}
        return self._columns.get(path)
