"""How alike two spellings are: character trigrams, shared by the teacher's brand search and the guardrails.

The teacher finds "Pepperidge Farm" for "pepridge farm" by this measure, and the guardrails accept a
brand tag whose span is spelled like one of the brand's aliases by the same measure, so a misspelled
brand the teacher tagged is not dropped on its way to the cache.
"""

from __future__ import annotations

__all__ = ["trigram_jaccard", "trigrams"]


def trigrams(text: str) -> frozenset[str]:
    padded = f"  {text} "  # padding weighs word starts, where misspellings are rarest
    return frozenset(padded[i : i + 3] for i in range(len(padded) - 2))


def trigram_jaccard(a: str, b: str) -> float:
    left, right = trigrams(a), trigrams(b)
    return len(left & right) / len(left | right) if left or right else 0.0
