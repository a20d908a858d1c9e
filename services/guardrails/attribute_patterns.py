"""Attribute values recognised by their shape, beyond what the catalog's vocabulary matches.

The vocabulary (``services.catalog.attributes``) already reads sizes ("12 oz", "1 gallon",
"6 pack", "x large") and percentages ("2%", "1 %"); shoppers and teachers also write
"2 percent" and multipacks ("2 x 12 oz"), which are attributes too.
"""

from __future__ import annotations

import re

from services.catalog.attributes import AttributeVocabulary
from services.normalize import normalize_query

_PERCENT_WORD = re.compile(r"(\d+(?:\.\d+)?) ?(?:percent|pct)")
_MULTIPACK = re.compile(r"(\d+) ?x (.+)")


def attribute_canonical(vocabulary: AttributeVocabulary, text: str) -> str | None:
    """The canonical form of an attribute value, or None when it is neither a known term nor a pattern."""
    found = vocabulary.canonical_of(text)
    if found is not None:
        return found
    normalized = normalize_query(text)
    percent = _PERCENT_WORD.fullmatch(normalized)
    if percent is not None:
        return f"{percent.group(1)}%"
    multipack = _MULTIPACK.fullmatch(normalized)
    if multipack is not None:
        size = vocabulary.canonical_of(multipack.group(2))
        if size is not None and size[:1].isdigit():  # "2 x 12 oz" yes, "2 x organic" no
            return f"{multipack.group(1)} x {size}"
    return None
