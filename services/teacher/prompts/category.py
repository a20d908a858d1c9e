"""Category classification: re-rank the converted categories into the taxonomy paths the query wants."""

from __future__ import annotations

from services.teacher.context_types import FewShotExample, TaskName
from services.teacher.prompts.answers import MAX_CATEGORIES, CategoryEnvelope
from services.teacher.prompts.base import ContextSlot, PromptTemplate

INSTRUCTIONS = f"""
Say which taxonomy paths hold the products this query is looking for, best first, at most {MAX_CATEGORIES}, each
with a score in [0, 1]: how sure you are that the shopper wants products from that path.

- Start from `converted_categories`: where shoppers who typed this query bought, with counts and a recency score.
  Re-rank them by intent, not by count alone: a category that is bought from is not always the one searched for
  (a "milk" search that also converts to cereal is a basket effect; cereal is not what "milk" means).
- Drop paths that do not fit the query's product type and brand. Prefer the most specific path that fits.
- Copy each path exactly as the context gives it (the list of levels from the root). Never invent a path; if no
  candidate fits, answer an empty list.
- Product type and brand candidates help you read the query; they are not categories themselves.
"""

TEMPLATE = PromptTemplate(
    task=TaskName.CATEGORY,
    title="category classification of a grocery search query (re-rank converted categories into taxonomy paths)",
    instructions=INSTRUCTIONS,
    slots=(ContextSlot.CATEGORIES, ContextSlot.PRODUCT_TYPES, ContextSlot.BRANDS),
    answer_model=CategoryEnvelope,
    examples=(
        FewShotExample(
            query="2% milk",
            reasoning="The product type is milk. 'dairy eggs > milk' has most conversions and fits; 'breakfast > "
            "cereal' is bought alongside milk, not instead of it, so it is dropped. 'dairy eggs > milk > "
            "lactose free' fits some shoppers.",
            answer={
                "categories": [
                    {"path": ["dairy eggs", "milk"], "score": 0.95},
                    {"path": ["dairy eggs", "milk", "lactose free"], "score": 0.3},
                ]
            },
        ),
        FewShotExample(
            query="verdant machine",
            reasoning="A brand-only query: Verdant Machine makes smoothies and juices, which is where its "
            "conversions went. Kitchen appliances had a few string-matched conversions but do not fit the brand.",
            answer={"categories": [{"path": ["beverages", "juice smoothies"], "score": 0.9}]},
        ),
    ),
)
