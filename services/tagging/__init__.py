"""Query tagging: the catalog-lexicon tagger (no model needed), used by the Triton model and as the fallback."""

from services.tagging.lexicon_tagger import SUGGESTED_PRIOR_WEIGHT, TAGGER_NAME, CategoryIndexMissing, LexiconTagger

__all__ = ["SUGGESTED_PRIOR_WEIGHT", "TAGGER_NAME", "CategoryIndexMissing", "LexiconTagger"]
