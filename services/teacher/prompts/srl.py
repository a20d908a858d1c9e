"""SRL tagging: which spans of the query name the product type, the brand and attributes."""

from __future__ import annotations

from services.teacher.context_types import FewShotExample, TaskName
from services.teacher.prompts.answers import SrlEnvelope
from services.teacher.prompts.base import ContextSlot, PromptTemplate

INSTRUCTIONS = """
Tag the spans of the query that name the product type, the brand and the attributes.

Each tag has:
- role: "product" (the kind of item: "milk", "pasta sauce"), "brand" (a catalog brand) or "attribute" (size, claim,
  flavour, form: "12 oz", "2%", "gluten free", "vanilla");
- start, end: character offsets into the query string (the decoded JSON literal), end exclusive. `query_tokens` in
  the context gives every word's offsets: a span starts at a token's start and ends at a token's end;
- text: exactly the characters query[start:end];
- canonical: the catalog value the span names: a brand from `brand_candidates`, a product type from
  `product_type_candidates`, an attribute from `attribute_candidates`, or a size or percentage written the
  canonical way ("12 oz", "1.5 l", "2%").

Rules:
- Tag only what the context supports. A word that matches no candidate stays untagged: an untagged word costs a
  little recall, an invented brand or type poisons the cache.
- A brand's candidates say why they were retrieved. A brand bought after this very search (conversion history)
  is strong evidence; a string or embedding neighbour alone is a hint to weigh against the other words.
- A query can be a brand and nothing else: ordinary-looking words ("verdant machine") are the brand when the
  brand candidates and conversions say so; do not tag them as a product type that happens to look similar.
- Spans never overlap, and one word belongs to at most one tag. A query without a product type gets none.
"""

TEMPLATE = PromptTemplate(
    task=TaskName.SRL,
    title="semantic role labelling of a grocery search query (product type, brand, attributes, with spans)",
    instructions=INSTRUCTIONS,
    slots=(ContextSlot.QUERY_TOKENS, ContextSlot.BRANDS, ContextSlot.PRODUCT_TYPES, ContextSlot.ATTRIBUTES),
    answer_model=SrlEnvelope,
    examples=(
        FewShotExample(
            query="horizon organic 2% milk",
            reasoning="'horizon organic' is a brand candidate bought after this search; '2%' is a fat percentage; "
            "'milk' is a product type candidate. 'organic' is part of the brand name here, not a separate claim.",
            answer={
                "tags": [
                    {"role": "brand", "start": 0, "end": 15, "text": "horizon organic", "canonical": "Horizon Organic"},
                    {"role": "attribute", "start": 16, "end": 18, "text": "2%", "canonical": "2%"},
                    {"role": "product", "start": 19, "end": 23, "text": "milk", "canonical": "milk"},
                ]
            },
        ),
        FewShotExample(
            query="verdant machine",
            reasoning="'Verdant Machine' is a brand candidate with conversions behind it (smoothies); no product "
            "type candidate matches 'machine' in this catalog, so the whole query is the brand.",
            answer={
                "tags": [
                    {"role": "brand", "start": 0, "end": 15, "text": "verdant machine", "canonical": "Verdant Machine"}
                ]
            },
        ),
        FewShotExample(
            query="gluten free pasta 16 oz",
            reasoning="'gluten free' is a claim and '16 oz' a size, both attributes; 'pasta' is the product type. "
            "No brand candidate fits.",
            answer={
                "tags": [
                    {"role": "attribute", "start": 0, "end": 11, "text": "gluten free", "canonical": "gluten free"},
                    {"role": "product", "start": 12, "end": 17, "text": "pasta", "canonical": "pasta"},
                    {"role": "attribute", "start": 18, "end": 23, "text": "16 oz", "canonical": "16 oz"},
                ]
            },
        ),
    ),
)
