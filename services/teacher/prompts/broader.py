"""Broader rewrites: the query relaxed to its parent intent, for recall when it finds too little."""

from __future__ import annotations

from services.teacher.context_types import FewShotExample, TaskName
from services.teacher.prompts import rewrite_common
from services.teacher.prompts.answers import RewriteEnvelope
from services.teacher.prompts.base import PromptTemplate

INSTRUCTIONS = (
    """
Propose broader queries: the query relaxed one step at a time, so that a search with few results finds more of
what the shopper wants. Relax by dropping the brand, the size or a narrow attribute, or by moving up to the product
type and then to its category. Each rewrite must still contain what the query asked for (every product the query
finds, the rewrite finds too), and must stay specific enough to be a useful search.

Contrast, for "horizon organic 2% milk": good "organic 2% milk" (brand dropped), "2% milk", "organic milk", "milk";
bad "horizon organic two percent milk" (a restatement, not broader), "horizon organic" (sideways: drops the
product), "food" or "groceries" (too broad to help anyone).
"""
    + rewrite_common.RULES
)

TEMPLATE = PromptTemplate(
    task=TaskName.BROADER,
    title="broader rewrites of a grocery search query (relax to the parent intent)",
    instructions=INSTRUCTIONS,
    slots=rewrite_common.SLOTS,
    answer_model=RewriteEnvelope,
    examples=(
        FewShotExample(
            query="horizon organic 2% milk",
            reasoning="Drop the brand first, then the fat level, then the claim; 'milk' is the product type.",
            answer={
                "rewrites": [
                    {"query": "organic 2% milk", "score": 0.9},
                    {"query": "organic milk", "score": 0.8},
                    {"query": "2% milk", "score": 0.75},
                    {"query": "milk", "score": 0.6},
                ]
            },
        ),
        FewShotExample(
            query="1% milk",
            reasoning="The only relaxation that keeps the need is dropping the fat level.",
            answer={"rewrites": [{"query": "milk", "score": 0.8}]},
        ),
    ),
)
