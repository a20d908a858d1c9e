"""Guardrails shared by the real-time path and the offline teacher (see :mod:`services.guardrails.checks`)."""

from services.guardrails.checks import Guardrails, related_paths
from services.guardrails.embedding_cache import EmbeddingCache, TextEncoder
from services.guardrails.thresholds import CategoryLevel, GuardrailThresholds

__all__ = ["CategoryLevel", "EmbeddingCache", "GuardrailThresholds", "Guardrails", "TextEncoder", "related_paths"]
