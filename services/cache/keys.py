"""The head-tag cache's key layout and value encoding: pure functions, no Redis.

Layout (``v`` = the schema version of annotations and cache keys, ``R`` = a teacher run id)::

    qu:v1:current                 -> R, the active run (the only key readers resolve first)
    qu:v1:current:created_us      -> when R's run_end was created: a run older than that is refused
    qu:v1:run:R:q:<normalized>    -> serialized HeadTags of one query in run R (TTL)
    qu:v1:run:R:index             -> SET of the normalized queries written for R (TTL);
                                     SCARD proves a run complete, SSCAN retires it
    qu:v1:run:R:retired           -> once R was replaced: the replacing run's creation time (µs);
                                     only a publication of R created later can activate R again
    qu:v1:run:R:reopened          -> the retired value after which a re-publication restarted R's index

Every key of a run lives under its own prefix, so a run is written beside the active one and
becomes visible only when the pointer moves: a reader's batch is resolved under one run id and
can never mix two runs. A schema bump changes every key, so old and new engines can share a Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

from qu.v1 import common_pb2, head_tags_pb2

from services.domain import (
    SCHEMA_VERSION,
    CategoryScore,
    GuardrailDecision,
    Rewrite,
    RewriteType,
    Role,
    Tag,
    Understanding,
)

_ROLE_TO_WIRE = {
    Role.PRODUCT: common_pb2.ROLE_PRODUCT,
    Role.BRAND: common_pb2.ROLE_BRAND,
    Role.ATTRIBUTE: common_pb2.ROLE_ATTRIBUTE,
}
_ROLE_FROM_WIRE = {wire: role for role, wire in _ROLE_TO_WIRE.items()}
_REWRITE_TO_WIRE = {
    RewriteType.SUBSTITUTE: common_pb2.REWRITE_TYPE_SUBSTITUTE,
    RewriteType.BROADER: common_pb2.REWRITE_TYPE_BROADER,
    RewriteType.SYNONYM: common_pb2.REWRITE_TYPE_SYNONYM,
}
_REWRITE_FROM_WIRE = {wire: kind for kind, wire in _REWRITE_TO_WIRE.items()}


@dataclass(frozen=True, slots=True)
class HeadTagKeys:
    """Key names for one schema version."""

    schema_version: int = SCHEMA_VERSION

    @property
    def prefix(self) -> str:
        return f"qu:v{self.schema_version}"

    @property
    def current(self) -> str:
        return f"{self.prefix}:current"

    @property
    def current_created(self) -> str:
        return f"{self.prefix}:current:created_us"

    def run_prefix(self, run_id: str) -> str:
        check_run_id(run_id)
        return f"{self.prefix}:run:{run_id}"

    def entry(self, run_id: str, normalized_query: str) -> str:
        return f"{self.run_prefix(run_id)}:q:{normalized_query}"

    def entries(self, run_id: str, normalized_queries: list[str] | tuple[str, ...]) -> list[str]:
        # The hot path of every lookup: the prefix is built once per batch.
        prefix = f"{self.run_prefix(run_id)}:q:"
        return [prefix + q for q in normalized_queries]

    def index(self, run_id: str) -> str:
        return f"{self.run_prefix(run_id)}:index"

    def retired(self, run_id: str) -> str:
        return f"{self.run_prefix(run_id)}:retired"

    def reopened(self, run_id: str) -> str:
        return f"{self.run_prefix(run_id)}:reopened"


def check_run_id(run_id: str) -> None:
    """A run id becomes part of key names: ``:`` would make ``run:a:q:x`` ambiguous, so it is refused."""
    if not run_id or ":" in run_id or any(ch.isspace() for ch in run_id):
        raise ValueError(f"run id {run_id!r} must be non-empty, without ':' or whitespace")


@dataclass(frozen=True, slots=True)
class CachedHeadTags:
    """A cache hit: the teacher's answer for one normalized query; tag offsets index ``normalized_query``."""

    normalized_query: str
    understanding: Understanding
    teacher_version: str
    run_id: str
    guardrails: tuple[GuardrailDecision, ...] = ()


def to_head_tags(
    normalized_query: str,
    understanding: Understanding,
    *,
    teacher_version: str,
    run_id: str,
    schema_version: int = SCHEMA_VERSION,
    guardrails: tuple[GuardrailDecision, ...] | list[GuardrailDecision] = (),
) -> head_tags_pb2.HeadTags:
    """The wire form of one run entry (``run_end`` unset)."""
    msg = head_tags_pb2.HeadTags(
        normalized_query=normalized_query,
        teacher_version=teacher_version,
        run_id=run_id,
        schema_version=schema_version,
    )
    for t in understanding.tags:
        msg.tags.add(
            role=_ROLE_TO_WIRE[t.role],
            start=t.start,
            end=t.end,
            text=t.text,
            canonical=t.canonical,
            confidence=t.confidence,
        )
    for c in understanding.categories:
        msg.categories.add(path=list(c.path), score=c.score)
    for r in understanding.rewrites:
        msg.rewrites.add(type=_REWRITE_TO_WIRE[r.type], query=r.query, score=r.score)
    for g in guardrails:
        msg.guardrails.add(check=g.check, item=g.item, kept=g.kept, reason=g.reason)
    return msg


def entry_problem(msg: head_tags_pb2.HeadTags) -> str | None:
    """Why a decoded run entry cannot be cached, or None when it can. Checked before writing,
    so that a reader never has to doubt what the cache holds."""
    query = msg.normalized_query
    if not query:
        return "empty normalized_query"
    try:
        check_run_id(msg.run_id)
    except ValueError as exc:
        return str(exc)
    for t in msg.tags:
        if t.role not in _ROLE_FROM_WIRE:
            return f"tag with unknown role {t.role}"
        if not 0 <= t.start < t.end <= len(query):
            return f"tag span [{t.start}, {t.end}) outside {query!r}"
    for r in msg.rewrites:
        if r.type not in _REWRITE_FROM_WIRE:
            return f"rewrite with unknown type {r.type}"
    return None


def from_head_tags(msg: head_tags_pb2.HeadTags) -> CachedHeadTags:
    """The domain form of a stored entry. Raises ValueError for an entry :func:`entry_problem` refuses.

    Validates while it converts (one pass): this runs for every cache hit.
    """
    query = msg.normalized_query
    if not query or not msg.run_id:
        raise ValueError(f"head tags for {query!r}: {entry_problem(msg)}")
    tags = []
    for t in msg.tags:
        role, start, end = _ROLE_FROM_WIRE.get(t.role), t.start, t.end
        if role is None or not 0 <= start < end <= len(query):
            raise ValueError(f"head tags for {query!r}: {entry_problem(msg)}")
        tags.append(Tag(role, start, end, t.text, t.canonical, t.confidence))
    rewrites = []
    for r in msg.rewrites:
        kind = _REWRITE_FROM_WIRE.get(r.type)
        if kind is None:
            raise ValueError(f"head tags for {query!r}: rewrite with unknown type {r.type}")
        rewrites.append(Rewrite(kind, r.query, r.score))
    version = msg.teacher_version
    understanding = Understanding(
        tags=tags,
        categories=[CategoryScore(tuple(c.path), c.score) for c in msg.categories],
        rewrites=rewrites,
        version=version,
    )
    guardrails = tuple(GuardrailDecision(g.check, g.item, g.kept, g.reason) for g in msg.guardrails)
    return CachedHeadTags(query, understanding, version, msg.run_id, guardrails)


def encode_entry(msg: head_tags_pb2.HeadTags) -> bytes:
    """The stored value: the entry without the run bookkeeping (``run_end``/``run_size`` mean nothing there)."""
    if not msg.run_end and not msg.run_size:
        return msg.SerializeToString()
    stored = head_tags_pb2.HeadTags()
    stored.CopyFrom(msg)
    stored.ClearField("run_end")
    stored.ClearField("run_size")
    return stored.SerializeToString()


def decode_entry(value: bytes) -> CachedHeadTags:
    """Raises ValueError when ``value`` is not a valid stored entry."""
    try:
        msg = head_tags_pb2.HeadTags.FromString(value)
    except Exception as exc:  # protobuf's DecodeError and friends: the value is not a HeadTags
        raise ValueError(f"not a serialized HeadTags ({exc})") from exc
    return from_head_tags(msg)
