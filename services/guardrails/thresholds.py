"""The guardrails' thresholds: settings (``QU_`` prefix), calibrated by ``qu guardrails calibrate``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from services.settings import Settings

# How far up the taxonomy a substitute must agree with the query: its department ("dairy eggs")
# or its aisle ("dairy eggs > milk"). See ``calibration.py`` for the measurement behind the default.
CategoryLevel = Literal["department", "aisle"]

# Defaults: rewrite_min_similarity and substitute_category_level are what `qu guardrails calibrate`
# chose (best F1) on the demo catalog with `qu traffic --events 20000 --seed 1` labels. The category
# floor stays 0.25: the calibrated 0.485 keeps only 35% of gold paths (see calibration.py).
DEFAULT_CATEGORY_MIN_SIMILARITY = 0.25
DEFAULT_REWRITE_MIN_SIMILARITY = 0.386
DEFAULT_MAX_CATEGORIES = 3
DEFAULT_SUBSTITUTE_CATEGORY_TOP_K = 3
DEFAULT_SUBSTITUTE_CATEGORY_LEVEL: CategoryLevel = "department"


@dataclass(frozen=True, slots=True)
class GuardrailThresholds:
    # Cosine similarity (MiniLM) of the query to a category path below which the path is dropped.
    category_min_similarity: float = DEFAULT_CATEGORY_MIN_SIMILARITY
    max_categories: int = DEFAULT_MAX_CATEGORIES
    # Cosine similarity of a rewrite to its query below which the rewrite is dropped (needs an embedder).
    rewrite_min_similarity: float = DEFAULT_REWRITE_MIN_SIMILARITY
    # A substitute's own categories: its product types' top categories and its nearest paths, this many.
    substitute_category_top_k: int = DEFAULT_SUBSTITUTE_CATEGORY_TOP_K
    substitute_category_level: CategoryLevel = DEFAULT_SUBSTITUTE_CATEGORY_LEVEL

    @classmethod
    def from_settings(cls, settings: Settings, *, llm: bool = False) -> GuardrailThresholds:
        """The thresholds the settings name; ``llm``: for an LLM teacher's answers, whose rewrites must clear
        the higher bar of QU_TEACHER_LLM_REWRITE_MIN_SIMILARITY as well."""
        rewrite = settings.rewrite_min_similarity
        if llm:
            rewrite = max(rewrite, settings.teacher_llm_rewrite_min_similarity)
        return cls(
            category_min_similarity=settings.category_min_similarity,
            max_categories=settings.guardrail_max_categories,
            rewrite_min_similarity=rewrite,
            substitute_category_top_k=settings.substitute_category_top_k,
            substitute_category_level=settings.substitute_category_level,
        )
