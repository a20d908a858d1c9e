"""The head-tag cache's key layout and value encoding (no Redis)."""

from __future__ import annotations

import pytest
from qu.v1 import common_pb2, head_tags_pb2

from services.cache.keys import (
    HeadTagKeys,
    check_run_id,
    decode_entry,
    encode_entry,
    entry_problem,
    to_head_tags,
)
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

# Scores that float32 (the wire type) holds exactly, so round trips compare equal.
UNDERSTANDING = Understanding(
    tags=[
        Tag(Role.BRAND, 0, 3, "ben", "Ben & Jerry's", 0.75),
        Tag(Role.PRODUCT, 15, 24, "ice cream", "ice cream", 1.0),
        Tag(Role.ATTRIBUTE, 25, 30, "16 oz", "16 oz", 0.5),
    ],
    categories=[CategoryScore(("frozen", "ice cream"), 0.875)],
    rewrites=[Rewrite(RewriteType.BROADER, "ice cream", 0.5), Rewrite(RewriteType.SYNONYM, "gelato", 0.25)],
    version="teacher-7",
)
QUERY = "ben and jerrys ice cream 16 oz"


def test_key_layout_carries_schema_version_and_run() -> None:
    keys = HeadTagKeys(1)
    assert keys.current == "qu:v1:current"
    assert keys.current_created == "qu:v1:current:created_us"
    assert keys.entry("r42", "2% milk") == "qu:v1:run:r42:q:2% milk"
    assert keys.entries("r42", ["a", "b c"]) == ["qu:v1:run:r42:q:a", "qu:v1:run:r42:q:b c"]
    assert keys.index("r42") == "qu:v1:run:r42:index"
    assert keys.retired("r42") == "qu:v1:run:r42:retired"
    assert HeadTagKeys(2).entry("r42", "milk") == "qu:v2:run:r42:q:milk"
    assert HeadTagKeys().schema_version == SCHEMA_VERSION


def test_the_query_part_is_the_rest_of_the_key_so_any_query_text_is_unambiguous() -> None:
    key = HeadTagKeys(1).entry("r1", "a:q:b")
    assert key.split(":q:", 1)[1] == "a:q:b"


@pytest.mark.parametrize("run_id", ["", "a:b", "a b", "a\tb"])
def test_run_ids_that_would_make_keys_ambiguous_are_refused(run_id: str) -> None:
    with pytest.raises(ValueError, match="run id"):
        check_run_id(run_id)
    with pytest.raises(ValueError):
        HeadTagKeys(1).entry(run_id, "milk")


def test_entry_round_trips_through_the_stored_value() -> None:
    guardrails = (GuardrailDecision("catalog.brand", "brand=Ben & Jerry's", True, "in catalog"),)
    msg = to_head_tags(QUERY, UNDERSTANDING, teacher_version="teacher-7", run_id="r1", guardrails=guardrails)
    assert msg.schema_version == SCHEMA_VERSION
    cached = decode_entry(encode_entry(msg))
    assert cached.normalized_query == QUERY
    assert cached.understanding == UNDERSTANDING
    assert cached.teacher_version == "teacher-7"
    assert cached.run_id == "r1"
    assert cached.guardrails == guardrails
    # Offsets index the normalized query.
    assert [QUERY[t.start : t.end] for t in cached.understanding.tags] == ["ben", "ice cream", "16 oz"]


def test_stored_value_drops_run_bookkeeping() -> None:
    msg = to_head_tags(QUERY, UNDERSTANDING, teacher_version="t", run_id="r1")
    msg.run_size = 9
    stored = head_tags_pb2.HeadTags.FromString(encode_entry(msg))
    assert stored.run_size == 0 and not stored.run_end
    assert stored.normalized_query == QUERY


def test_entry_problems_are_named() -> None:
    def entry(**fields: object) -> head_tags_pb2.HeadTags:
        return head_tags_pb2.HeadTags(**{"normalized_query": "milk", "run_id": "r1", **fields})  # type: ignore[arg-type]

    assert entry_problem(entry()) is None
    assert entry_problem(entry(normalized_query="")) == "empty normalized_query"
    assert "run id" in (entry_problem(entry(run_id="")) or "")
    bad_span = entry(tags=[common_pb2.Tag(role=common_pb2.ROLE_PRODUCT, start=2, end=9)])
    assert "outside 'milk'" in (entry_problem(bad_span) or "")
    no_role = entry(tags=[common_pb2.Tag(start=0, end=4)])
    assert "unknown role" in (entry_problem(no_role) or "")
    no_type = entry(rewrites=[common_pb2.Rewrite(query="dairy")])
    assert "unknown type" in (entry_problem(no_type) or "")


def test_a_value_that_is_not_an_entry_does_not_decode() -> None:
    with pytest.raises(ValueError):
        decode_entry(b"\xff\xff not protobuf")
    with pytest.raises(ValueError, match="empty normalized_query"):
        decode_entry(b"")
