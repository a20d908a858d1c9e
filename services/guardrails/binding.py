"""Binding an answer to the catalog: what is published is the catalog's own value, whatever a model wrote.

The trust boundary of every answer, whoever made it (the student, the teacher, a cache entry, a
record on ``qu.head-tags.v1``): a model's strings are claims to check, never values to publish.

- A tag names a catalog entry (a brand, a product type or a taxonomy node, an attribute value) and
  is published with that entry's own canonical value, never the model's spelling of it. Its span
  must be the tagged text in the normalized query and must say that entry: one of its aliases (for
  an attribute, a surface form with the same canonical value), or be spelled like one
  (:func:`services.catalog.spelling.spelled_like`: trigrams, or word slips) while naming no other
  entry itself, so the misspellings a teacher or the lexicon tagger resolved ("pepridge farm" ->
  Pepperidge Farm, "millk" -> milk, "aata" -> atta) survive; "whole" never becomes "Special K", and
  "100 oz" never becomes "10 oz".
- A category is a path of the taxonomy.
- Every score (tag confidence, category score, rewrite score) is a finite number in [0, 1], as the
  wire schema says: NaN compares false to every threshold, so it would pass them all.
- A rewrite holds no control, bidi, zero-width or other invisible character: a rewrite is free text
  sent to search, and those characters make it read differently from what it is.

:class:`~services.guardrails.checks.Guardrails` runs this first and its quality checks (similarity,
limits, retrieval) on what is left; the head-tag refresher runs it alone before writing to Redis.
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable
from dataclasses import replace

from services.catalog.artifacts import Catalog, catalog_words
from services.catalog.lexicons import LexiconEntry, plural_variants
from services.catalog.model import format_path
from services.catalog.spelling import TRIGRAM_MIN_SIMILARITY, spelled_like
from services.domain import CategoryScore, GuardrailDecision, Rewrite, Role, Tag, Understanding
from services.guardrails.attribute_patterns import attribute_canonical
from services.normalize import normalize_query

__all__ = [
    "SPELLING_MIN_SIMILARITY",
    "CatalogBinding",
    "hidden_character",
    "score_problem",
    "shown",
]

# A tag's span spelled at least this much like one of its entry's aliases (character-trigram Jaccard) names
# the entry, unless the span is the name of another entry itself. The offline catalog teacher adds a
# misspelled brand at 0.5 or more (catalog_teacher.py): this must not be stricter, or the teacher's own
# answers would be dropped on their way to the cache.
SPELLING_MIN_SIMILARITY = TRIGRAM_MIN_SIMILARITY
# Unicode categories of characters that do not show what they do: control (Cc), format (Cf: bidi
# overrides and isolates, zero-width space and joiners, soft hyphen, BOM), surrogate (Cs), private use
# (Co), unassigned (Cn), and line/paragraph separators (Zl, Zp).
HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
SHOWN_MAX_CHARS = 120  # of a model's string echoed in a decision: enough to recognise it, bounded

# Reasons, one per rejection, so reports can count by them.
SPAN_MISMATCH = "span [{start}, {end}) is not {text!r} in the query"
OVERLAP = "overlaps an earlier tag"
BRAND_UNKNOWN = "brand not in the catalog"
PRODUCT_UNKNOWN = "product type not in the catalog"
ATTRIBUTE_UNKNOWN = "attribute not in the vocabulary nor a size, count or percentage"
SPAN_NOT_ALIAS = "span {text!r} does not name {canonical!r} (not one of its aliases)"
NOT_IN_TAXONOMY = "not a path of the taxonomy"
SCORE_INVALID = "{what} {value!r} is not a number in [0, 1]"
HIDDEN_CHARACTER = "contains the invisible character {char} (control, bidi or zero-width)"


def hidden_character(text: str) -> str | None:
    """The first control, bidi, zero-width or other invisible character of ``text`` as ``U+XXXX NAME``, or None."""
    for char in text:
        if unicodedata.category(char) in HIDDEN_CATEGORIES:
            return f"U+{ord(char):04X} {unicodedata.name(char, 'unnamed')}"
    return None


def score_problem(value: float, what: str = "score") -> str | None:
    """Why ``value`` cannot be published as a score, or None when it is a finite number in [0, 1]."""
    if math.isfinite(value) and 0.0 <= value <= 1.0:
        return None
    return SCORE_INVALID.format(what=what, value=value)


def shown(text: str) -> str:
    """A model's string as a decision may echo it: invisible characters escaped, at most SHOWN_MAX_CHARS."""
    visible = "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c) in HIDDEN_CATEGORIES else c for c in text[: SHOWN_MAX_CHARS + 1]
    )
    return visible if len(visible) <= SHOWN_MAX_CHARS else visible[:SHOWN_MAX_CHARS] + "…"


class CatalogBinding:
    """Binds tags, categories and rewrites to ``catalog`` (see the module docstring). Cheap: no model."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        # A product tag may name a taxonomy node ("cleaning"): the node's own name is then its canonical.
        self._node_names = {normalize_query(node.name): node.name for node in catalog.taxonomy}
        self._words: frozenset[str] | None = None  # the catalog's own words, on the first spelling check

    def bind(
        self, understanding: Understanding, normalized_query: str, *, record_kept: bool = False
    ) -> tuple[Understanding, list[GuardrailDecision]]:
        """The understanding with catalog values only, and a decision for each item dropped (and kept, if asked)."""
        decisions: list[GuardrailDecision] = []
        tags = self._bind_tags(understanding.tags, normalized_query, decisions, record_kept)
        categories: list[CategoryScore] = []
        for category in understanding.categories:
            problem = self.category_problem(category)
            if problem is None:
                categories.append(category)
            else:
                decisions.append(GuardrailDecision(problem[0], _path_item(category.path), False, problem[1]))
        rewrites: list[Rewrite] = []
        for rewrite in understanding.rewrites:
            problem = self.rewrite_problem(rewrite)
            if problem is None:
                rewrites.append(rewrite)
            else:
                item = f"{rewrite.type.value}={shown(rewrite.query)}"
                decisions.append(GuardrailDecision(problem[0], item, False, problem[1]))
        return Understanding(tags, categories, rewrites, understanding.version), decisions

    # --- tags -----------------------------------------------------------------------------------

    def _bind_tags(
        self, tags: Iterable[Tag], normalized: str, decisions: list[GuardrailDecision], record_kept: bool
    ) -> list[Tag]:
        kept: list[Tag] = []
        end = 0
        for tag in sorted(tags, key=lambda t: (t.start, -t.end)):
            check = f"catalog.{tag.role.value}"
            bound = self.bind_tag(tag, normalized)
            if isinstance(bound, Tag) and tag.start < end:
                bound = OVERLAP
            if isinstance(bound, str):
                decisions.append(GuardrailDecision(check, f"{tag.role.value}={shown(tag.canonical)}", False, bound))
                continue
            if record_kept:
                decisions.append(
                    GuardrailDecision(check, f"{tag.role.value}={bound.canonical}", True, "in the catalog")
                )
            kept.append(bound)
            end = tag.end
        return kept

    def bind_tag(self, tag: Tag, normalized: str) -> Tag | str:
        """The tag with the catalog's canonical value, or why it cannot be published."""
        if not 0 <= tag.start < tag.end <= len(normalized) or normalized[tag.start : tag.end] != tag.text:
            return SPAN_MISMATCH.format(start=tag.start, end=tag.end, text=shown(tag.text))
        problem = score_problem(tag.confidence, "confidence")
        if problem is not None:
            return problem
        span = normalize_query(tag.text)
        if tag.role is Role.BRAND:
            canonical, names = self._brand(tag.canonical, span)
        elif tag.role is Role.PRODUCT:
            canonical, names = self._product(tag.canonical, span)
        else:
            canonical, names = self._attribute(tag.canonical, span)
        if canonical is None:
            return {Role.BRAND: BRAND_UNKNOWN, Role.PRODUCT: PRODUCT_UNKNOWN}.get(tag.role, ATTRIBUTE_UNKNOWN)
        if not names:
            return SPAN_NOT_ALIAS.format(text=shown(tag.text), canonical=canonical)
        return tag if tag.canonical == canonical else replace(tag, canonical=canonical)

    # Each returns (the claimed entry's canonical value or None when there is none, whether the span names it).

    def _brand(self, claimed: str, span: str) -> tuple[str | None, bool]:
        entry = self.catalog.brands.lookup(claimed)
        if entry is None:
            return None, False
        return entry.canonical, self._names(span, _forms(entry), self.catalog.brands.lookup(span) not in (None, entry))

    def _product(self, claimed: str, span: str) -> tuple[str | None, bool]:
        entry = self.catalog.types.lookup(claimed)
        own = self.catalog.types.lookup(span)
        if entry is not None:
            other = own not in (None, entry) or (own is None and span in self._node_names)
            return entry.canonical, self._names(span, _forms(entry), other)
        node = self._node_names.get(normalize_query(claimed))
        if node is None:
            return None, False
        forms = plural_variants(normalize_query(node))
        other = own is not None or (span in self._node_names and span not in forms)
        return node, self._names(span, forms, other)

    def _attribute(self, claimed: str, span: str) -> tuple[str | None, bool]:
        vocabulary = self.catalog.attributes
        canonical = attribute_canonical(vocabulary, claimed)
        if canonical is None:
            return None, False
        own = attribute_canonical(vocabulary, span)
        if own is not None:  # the span is an attribute value itself: it must be this one ("100 oz" is not "10 oz")
            return canonical, own == canonical
        term = vocabulary.terms.get(canonical)
        return canonical, self._names(span, term.aliases if term else (canonical,), False)

    def _names(self, span: str, forms: Iterable[str], names_another: bool) -> bool:
        """Whether a normalized span says an entry known by ``forms``: one of them, or, when the span is not
        itself the name of another entry, spelled like one of them (a misspelling the teacher or tagger resolved)."""
        forms = tuple(forms)
        if span in forms:
            return True
        if names_another:
            return False
        if self._words is None:
            self._words = catalog_words(self.catalog)
        return any(spelled_like(span, f, self._words) for f in forms)

    # --- categories and rewrites ----------------------------------------------------------------

    def category_problem(self, category: CategoryScore) -> tuple[str, str] | None:
        """``(check, reason)`` when the category cannot be published, else None."""
        if category.path not in self.catalog.taxonomy:
            return "category.taxonomy", NOT_IN_TAXONOMY
        problem = score_problem(category.score)
        return None if problem is None else ("category.score", problem)

    @staticmethod
    def rewrite_problem(rewrite: Rewrite) -> tuple[str, str] | None:
        """``(check, reason)`` when the rewrite cannot be published, else None."""
        hidden = hidden_character(rewrite.query)
        if hidden is not None:
            return "rewrite.text", HIDDEN_CHARACTER.format(char=hidden)
        problem = score_problem(rewrite.score)
        return None if problem is None else ("rewrite.score", problem)


def _forms(entry: LexiconEntry) -> tuple[str, ...]:
    return (entry.key, *entry.aliases)


def _path_item(path: tuple[str, ...]) -> str:
    return shown(format_path(tuple(str(level) for level in path)))
