"""The engine's vocabulary: what a query is understood as (tags, categories, rewrites) and the annotation
served for a search event. The bottom of ``services/``: the cache, the student, guardrails, tagging, the
wire and the handler all import it, and it imports none of them.

Plain dataclasses: the wire forms (protobuf ``qu.v1`` and JSON) are made from them in
``services.wire``, so the domain never depends on a serialization.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

SCHEMA_VERSION = 1  # of annotations and of cache keys: bump when their meaning changes


class Role(StrEnum):
    PRODUCT = "product"
    BRAND = "brand"
    ATTRIBUTE = "attribute"


class RewriteType(StrEnum):
    SUBSTITUTE = "substitute"
    BROADER = "broader"
    SYNONYM = "synonym"


class Source(StrEnum):
    CACHE = "cache"
    STUDENT = "student"
    TEACHER = "teacher"
    FALLBACK = "fallback"


@dataclass(frozen=True, slots=True)
class Tag:
    """A tagged span; ``start``/``end`` index the text the tag was made on (see each holder)."""

    role: Role
    start: int
    end: int
    text: str
    canonical: str
    confidence: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role.value,
            "start": self.start,
            "end": self.end,
            "text": self.text,
            "canonical": self.canonical,
            "confidence": round(self.confidence, 4),
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Tag:
        return cls(
            Role(row["role"]),
            int(row["start"]),
            int(row["end"]),
            str(row["text"]),
            str(row["canonical"]),
            float(row.get("confidence", 1.0)),
        )


@dataclass(frozen=True, slots=True)
class CategoryScore:
    path: tuple[str, ...]
    score: float

    def to_json(self) -> dict[str, Any]:
        return {"path": list(self.path), "score": round(self.score, 4)}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> CategoryScore:
        return cls(tuple(str(p) for p in row["path"]), float(row["score"]))


@dataclass(frozen=True, slots=True)
class Rewrite:
    type: RewriteType
    query: str
    score: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {"type": self.type.value, "query": self.query, "score": round(self.score, 4)}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Rewrite:
        return cls(RewriteType(row["type"]), str(row["query"]), float(row.get("score", 1.0)))


@dataclass(frozen=True, slots=True)
class GuardrailDecision:
    check: str  # "catalog.brand", "category.similarity", ...
    item: str  # "brand=Acme"
    kept: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "item": self.item, "kept": self.kept, "reason": self.reason}


@dataclass(slots=True)
class Understanding:
    """Tags, categories and rewrites for one normalized query: what the cache stores and the student returns.

    Tag offsets index the normalized query.
    """

    tags: list[Tag] = field(default_factory=list)
    categories: list[CategoryScore] = field(default_factory=list)
    rewrites: list[Rewrite] = field(default_factory=list)
    version: str = ""  # the model or teacher version that produced it

    def to_json(self) -> dict[str, Any]:
        return {
            "tags": [t.to_json() for t in self.tags],
            "categories": [c.to_json() for c in self.categories],
            "rewrites": [r.to_json() for r in self.rewrites],
            "version": self.version,
        }

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> Understanding:
        return cls(
            [Tag.from_json(t) for t in row.get("tags", [])],
            [CategoryScore.from_json(c) for c in row.get("categories", [])],
            [Rewrite.from_json(r) for r in row.get("rewrites", [])],
            str(row.get("version", "")),
        )


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A validated search event, whatever its wire format."""

    event_id: str
    query: str
    user_id: str = ""
    session_id: str = ""
    timestamp: datetime | None = None
    locale: str = "en-US"
    context: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Timings:
    decode_ms: float = 0.0
    cache_ms: float = 0.0
    student_ms: float = 0.0
    guardrails_ms: float = 0.0
    total_ms: float = 0.0

    def to_json(self) -> dict[str, float]:
        return {
            k: round(getattr(self, k), 3) for k in ("decode_ms", "cache_ms", "student_ms", "guardrails_ms", "total_ms")
        }


@dataclass(slots=True)
class Annotation:
    """What the engine publishes for one event. Tag offsets index ``query`` as typed."""

    event_id: str
    query: str
    normalized_query: str
    understanding: Understanding
    source: Source
    model_version: str
    guardrails: list[GuardrailDecision] = field(default_factory=list)
    degraded: bool = False
    timings: Timings = field(default_factory=Timings)
    annotated_at: datetime | None = None
    schema_version: int = SCHEMA_VERSION

    def to_json(self) -> dict[str, Any]:
        u = self.understanding
        return {
            "event_id": self.event_id,
            "query": self.query,
            "normalized_query": self.normalized_query,
            "tags": [t.to_json() for t in u.tags],
            "categories": [c.to_json() for c in u.categories],
            "rewrites": [r.to_json() for r in u.rewrites],
            "source": self.source.value,
            "model_version": self.model_version,
            "guardrails": [g.to_json() for g in self.guardrails],
            "degraded": self.degraded,
            "timings": self.timings.to_json(),
            "annotated_at": self.annotated_at.isoformat().replace("+00:00", "Z") if self.annotated_at else None,
            "schema_version": self.schema_version,
        }


@dataclass(frozen=True, slots=True)
class CacheMiss:
    """A query the head-tag cache did not know (``qu.cache-misses.v1``): what the next teacher run promotes."""

    normalized_query: str
    query: str
    event_id: str
    ts: datetime
