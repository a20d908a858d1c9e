"""Guardrails: every tag, category and rewrite is checked against the catalog before it is published.

Shared by the real-time path and the offline teacher. A dropped item is recorded as a
:class:`GuardrailDecision` with its reason, so an annotation says what it left out and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.annotation.model import CategoryScore, GuardrailDecision, Role, Tag, Understanding
from services.catalog.artifacts import Catalog
from services.normalize import normalize_query


@dataclass(frozen=True, slots=True)
class GuardrailThresholds:
    # Cosine similarity of the query to a category path (MiniLM) below which the path is dropped.
    category_min_similarity: float = 0.25
    max_categories: int = 3


class Guardrails:
    def __init__(self, catalog: Catalog, thresholds: GuardrailThresholds | None = None) -> None:
        self.catalog = catalog
        self.thresholds = thresholds or GuardrailThresholds()
        self._node_names = {normalize_query(node.name) for node in catalog.taxonomy}

    def check(
        self, understanding: Understanding, normalized_query: str
    ) -> tuple[Understanding, list[GuardrailDecision]]:
        """The understanding with every item that fails a check removed, and the decisions that removed them."""
        decisions: list[GuardrailDecision] = []
        tags = self._check_tags(understanding.tags, normalized_query, decisions)
        categories = self._check_categories(understanding.categories, decisions)
        rewrites = []
        for rewrite in understanding.rewrites:
            key = normalize_query(rewrite.query)
            if not key or key == normalized_query:
                decisions.append(
                    GuardrailDecision(
                        "rewrite.differs",
                        f"{rewrite.type.value}={rewrite.query}",
                        False,
                        "the rewrite is empty or the query itself",
                    )
                )
            else:
                rewrites.append(rewrite)
        return Understanding(tags, categories, rewrites, understanding.version), decisions

    def _check_tags(self, tags: list[Tag], normalized: str, decisions: list[GuardrailDecision]) -> list[Tag]:
        kept: list[Tag] = []
        end = 0
        for tag in sorted(tags, key=lambda t: (t.start, -t.end)):
            item = f"{tag.role.value}={tag.canonical}"
            reason = self._tag_problem(tag, normalized)
            if reason is None and tag.start < end:
                reason = "overlaps an earlier tag"
            if reason is not None:
                decisions.append(GuardrailDecision(f"catalog.{tag.role.value}", item, False, reason))
                continue
            kept.append(tag)
            end = tag.end
        return kept

    def _tag_problem(self, tag: Tag, normalized: str) -> str | None:
        if not 0 <= tag.start < tag.end <= len(normalized) or normalized[tag.start : tag.end] != tag.text:
            return f"span [{tag.start}, {tag.end}) is not {tag.text!r} in the query"
        if tag.role is Role.BRAND and self.catalog.brands.lookup(tag.canonical) is None:
            return "brand not in the catalog"
        if (
            tag.role is Role.PRODUCT
            and self.catalog.types.lookup(tag.canonical) is None
            and normalize_query(tag.canonical) not in self._node_names
        ):
            return "product type not in the catalog"
        if tag.role is Role.ATTRIBUTE and self.catalog.attributes.canonical_of(tag.canonical) is None:
            return "attribute not in the vocabulary"
        return None

    def _check_categories(
        self, categories: list[CategoryScore], decisions: list[GuardrailDecision]
    ) -> list[CategoryScore]:
        kept: list[CategoryScore] = []
        for category in sorted(categories, key=lambda c: -c.score):
            item = " > ".join(category.path)
            if category.path not in self.catalog.taxonomy:
                decisions.append(GuardrailDecision("category.taxonomy", item, False, "not a path of the taxonomy"))
            elif category.score < self.thresholds.category_min_similarity:
                decisions.append(
                    GuardrailDecision(
                        "category.similarity",
                        item,
                        False,
                        f"similarity {category.score:.3f} < {self.thresholds.category_min_similarity}",
                    )
                )
            elif len(kept) < self.thresholds.max_categories:
                kept.append(category)
        return kept
