"""Synonym rewrites: other names shoppers and the catalog use for the same thing."""

from __future__ import annotations

from services.teacher.context_types import FewShotExample, TaskName
from services.teacher.prompts import rewrite_common
from services.teacher.prompts.answers import RewriteEnvelope
from services.teacher.prompts.base import PromptTemplate

INSTRUCTIONS = (
    """
Propose synonyms: other words for the same products, so that the search also finds items the catalog names
differently from the shopper. Good synonyms are regional or common names against catalog names ("soda" -> "pop",
"garbanzo beans" -> "chickpeas", "cilantro" -> "coriander", "zucchini" -> "courgette"), or an abbreviation against
its expansion when the catalog uses the other form ("oj" -> "orange juice"). A synonym retrieves the same products,
not more (that is broader) and not others (that is a substitute).

Contrast, for "1% milk": good "low fat milk" (the catalog's name for it); bad "one percent milk" (a spelling the
search already matches: it retrieves nothing new), "1 percent milk" (same), "milk" (broader), "2% milk" (a
substitute).
"""
    + rewrite_common.RULES
)

TEMPLATE = PromptTemplate(
    task=TaskName.SYNONYMS,
    title="synonym rewrites of a grocery search query (other names for the same products)",
    instructions=INSTRUCTIONS,
    slots=rewrite_common.SLOTS,
    answer_model=RewriteEnvelope,
    examples=(
        FewShotExample(
            query="garbanzo beans",
            reasoning="Chickpeas are the same legume; the catalog lists most cans as chickpeas.",
            answer={"rewrites": [{"query": "chickpeas", "score": 0.95}]},
        ),
        FewShotExample(
            query="1% milk",
            reasoning="Catalogs label 1% as low fat milk. 'one percent milk' is a spelling search already matches.",
            answer={"rewrites": [{"query": "low fat milk", "score": 0.85}]},
        ),
    ),
)
