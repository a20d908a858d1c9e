"""Records the traffic generator produces, in the shapes written to JSON lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from services.domain import Role, Tag

__all__ = ["Conversion", "LabelledQuery", "Part", "QueryKind", "Role", "SearchEvent", "Tag"]


class QueryKind(StrEnum):
    """How a query was phrased; evaluation reports break results down by it."""

    BROAD = "broad"  # "healthy food", "frozen snacks", an aisle or department name
    PRODUCT_TYPE = "product_type"  # "milk"
    BRAND = "brand"  # "ben and jerrys"
    BRAND_TYPE = "brand_type"  # "horizon milk"
    ATTRIBUTE_TYPE = "attribute_type"  # "organic milk", "2% milk"
    PRODUCT_NAME = "product_name"  # "organic hass avocado"
    SPECIFIC = "specific"  # "2% reduced-fat ultra-pasteurized chocolate milk"
    NEGATION = "negation"  # "bread no gluten"
    SIZE = "size"  # "x large zip lock", "12 oz yogurt"
    MISSPELLING = "misspelling"  # "yoghrt"


@dataclass(frozen=True, slots=True)
class Part:
    """One piece of a query being composed: its surface text and, if it is a tag, its role and value."""

    text: str
    role: Role | None = None
    canonical: str = ""


@dataclass(slots=True)
class LabelledQuery:
    """A query the generator can emit, with what it means and what a shopper buys after it."""

    text: str
    spans: tuple[Tag, ...]
    category: tuple[str, ...] | None  # the taxonomy path the generator meant
    kind: QueryKind
    products: tuple[str, ...] = ()  # product ids that satisfy it
    weights: tuple[float, ...] = ()  # their popularity, for choosing a conversion

    @classmethod
    def compose(
        cls,
        parts: list[Part],
        category: tuple[str, ...] | None,
        kind: QueryKind,
        products: tuple[str, ...] = (),
        weights: tuple[float, ...] = (),
    ) -> LabelledQuery:
        text = ""
        spans = []
        for part in parts:
            if text:
                text += " "
            if part.role is not None:
                spans.append(Tag(part.role, len(text), len(text) + len(part.text), part.text, part.canonical))
            text += part.text
        return cls(text, tuple(spans), category, kind, products, weights)

    def label(self) -> dict[str, Any]:
        return {
            "query": self.text,
            "kind": self.kind.value,
            "spans": [s.to_json() for s in self.spans],
            "category": " > ".join(self.category) if self.category else None,
        }


@dataclass(slots=True)
class SearchEvent:
    event_id: str
    query: str
    user_id: str
    session_id: str
    ts: str  # ISO 8601, UTC
    locale: str = "en-US"
    context: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "query": self.query,
            "user_id": self.user_id,
            "session_id": self.session_id,
            "ts": self.ts,
            "locale": self.locale,
            "context": self.context,
        }


@dataclass(slots=True)
class Conversion:
    event_id: str  # the search it followed
    query: str
    session_id: str
    user_id: str
    product_id: str
    ts: str

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "query": self.query,
            "session_id": self.session_id,
            "user_id": self.user_id,
            "product_id": self.product_id,
            "ts": self.ts,
        }
