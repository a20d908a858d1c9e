"""What every rewrite template says, whatever its type: rewrites exist for discovery."""

from __future__ import annotations

from services.teacher.prompts.answers import MAX_REWRITES
from services.teacher.prompts.base import ContextSlot

# Shared so the three templates stay consistent; each one's own text says what its type is.
RULES = f"""
Rules for every rewrite:
- A rewrite is a search a shopper would type, which the engine runs in addition to the query. It is only useful if
  it retrieves relevant products the query alone would miss. Spelling out numbers ("1%" -> "one percent"),
  plurals, word order, case and punctuation add nothing: search already normalizes them. Never answer those.
- `session_followups` are searches this shopper's session typed next: they show what people settled on and are
  strong hints. `converted_categories` say where the query's shoppers bought; a rewrite should retrieve products
  that fit those categories (or, for substitutes, their near neighbours).
- Use product types, brands and attributes from the context; do not invent brands.
- At most {MAX_REWRITES} rewrites, best first, each with a score in [0, 1]; an empty list is a fine answer when no
  rewrite of this type would help.
"""

SLOTS = (
    ContextSlot.SESSION_FOLLOWUPS,
    ContextSlot.CATEGORIES,
    ContextSlot.PRODUCT_TYPES,
    ContextSlot.ATTRIBUTES,
    ContextSlot.BRANDS,
)
