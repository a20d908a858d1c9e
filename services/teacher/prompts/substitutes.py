"""Substitute rewrites: something else that serves the same need."""

from __future__ import annotations

from services.teacher.context_types import FewShotExample, TaskName
from services.teacher.prompts import rewrite_common
from services.teacher.prompts.answers import RewriteEnvelope
from services.teacher.prompts.base import PromptTemplate

INSTRUCTIONS = (
    """
Propose substitutes: searches for products a shopper could buy instead of what the query asks for, when it is out
of stock or to discover alternatives. A good substitute retrieves different products that serve the same need:
another variant of the same product type ("1% milk" -> "2% milk", "skim milk"), a close product type ("butter" ->
"margarine", "ghee"), or a plant-based or dietary alternative ("milk" -> "oat milk"). It stays in the same or a
neighbouring category.

Contrast, for "1% milk": good "2% milk", "skim milk", "lactose free 1% milk"; bad "one percent milk" (a restatement:
the same products under another spelling), "milk chocolate" (shares a word, not a need), "dairy"
(broader, not a substitute).
"""
    + rewrite_common.RULES
)

TEMPLATE = PromptTemplate(
    task=TaskName.SUBSTITUTES,
    title="substitute rewrites of a grocery search query (what to buy instead)",
    instructions=INSTRUCTIONS,
    slots=rewrite_common.SLOTS,
    answer_model=RewriteEnvelope,
    examples=(
        FewShotExample(
            query="1% milk",
            reasoning="Same need, different products: other fat levels of milk, and a lactose free 1%. "
            "'one percent milk' would only restate the query.",
            answer={
                "rewrites": [
                    {"query": "2% milk", "score": 0.9},
                    {"query": "skim milk", "score": 0.8},
                    {"query": "lactose free 1% milk", "score": 0.6},
                ]
            },
        ),
        FewShotExample(
            query="unsalted butter",
            reasoning="Shoppers who cannot find unsalted butter take salted butter or another fat for baking.",
            answer={"rewrites": [{"query": "salted butter", "score": 0.8}, {"query": "ghee", "score": 0.5}]},
        ),
    ),
)
