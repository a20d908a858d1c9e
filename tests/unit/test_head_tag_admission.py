"""HeadTagAdmission without Redis or a broker: what a crafted qu.head-tags.v1 entry becomes before it is written.

The refresher's test against the real services is tests/integration/test_refresher.py.
"""

from __future__ import annotations

import math

import pytest
from qu.v1 import head_tags_pb2

from services.cache import HeadTagAdmission
from services.cache.keys import from_head_tags, to_head_tags
from services.catalog.artifacts import build_catalog
from services.catalog.model import Product
from services.domain import CategoryScore, GuardrailDecision, Rewrite, RewriteType, Role, Tag, Understanding

MILK = ("dairy eggs", "milk")


@pytest.fixture(scope="module")
def admission() -> HeadTagAdmission:
    products = [
        Product("1", "Organic Whole Milk", "Horizon Organic", MILK),
        Product("2", "Reduced Fat 2% Milk", "Horizon Organic", MILK),
    ]
    return HeadTagAdmission(build_catalog(products, embedder=None))


def entry(understanding: Understanding, version: str = "teacher-1") -> head_tags_pb2.HeadTags:
    provenance = [GuardrailDecision("rewrite", "synonym=x", False, "kept by the teacher")]
    msg = to_head_tags(
        "horizon organic milk", understanding, teacher_version=version, run_id="r1", guardrails=provenance
    )
    msg.created_at.FromMicroseconds(1_700_000_000_000_000)
    return msg


def test_a_clean_entry_is_written_as_it_was_published(admission: HeadTagAdmission) -> None:
    msg = entry(Understanding([Tag(Role.BRAND, 0, 15, "horizon organic", "Horizon Organic")], [CategoryScore(MILK, 1)]))
    admitted = admission.admit(msg)
    assert admitted.record is msg and admitted.dropped == () and not admitted.rebound


def test_a_crafted_entry_keeps_only_catalog_values_and_its_provenance(admission: HeadTagAdmission) -> None:
    msg = entry(
        Understanding(
            [
                Tag(Role.BRAND, 0, 15, "horizon organic", "HORIZON ORGANIC\u202e"),  # the catalog spells it
                Tag(Role.PRODUCT, 16, 20, "milk", "Horizon Organic"),  # a brand claimed as a product type
            ],
            [CategoryScore(MILK, math.inf), CategoryScore(("dairy eggs",), 0.5)],
            [Rewrite(RewriteType.BROADER, "dairy\u2066"), Rewrite(RewriteType.SYNONYM, "organic milk", 0.9)],
        )
    )
    admitted = admission.admit(msg)
    assert admitted.record is not None and admitted.rebound
    assert [(d.check, d.kept) for d in admitted.dropped] == [
        ("catalog.product", False),
        ("category.score", False),
        ("rewrite.text", False),
    ]
    stored = from_head_tags(admitted.record)
    assert [(t.role, t.canonical) for t in stored.understanding.tags] == [(Role.BRAND, "Horizon Organic")]
    assert stored.understanding.categories == [CategoryScore(("dairy eggs",), 0.5)]
    assert [r.query for r in stored.understanding.rewrites] == ["organic milk"]
    assert (stored.run_id, stored.teacher_version) == ("r1", "teacher-1")
    assert stored.guardrails == (GuardrailDecision("rewrite", "synonym=x", False, "kept by the teacher"),)
    assert admitted.record.created_at.ToMicroseconds() == 1_700_000_000_000_000


def test_an_entry_whose_teacher_version_hides_a_character_is_refused(admission: HeadTagAdmission) -> None:
    admitted = admission.admit(entry(Understanding(), version="teacher\u200b-1"))
    assert admitted.record is None
    assert admitted.refused == "teacher_version contains the invisible character U+200B ZERO WIDTH SPACE"
