"""One prompt template per teacher task; :func:`template_for` picks it.

Rewrites have one template per type on purpose: a generic "rewrite this" prompt answered
"one percent milk" for "1% milk" in the source system (valid, useless for discovery).
"""

from __future__ import annotations

from services.teacher.context_types import TaskName
from services.teacher.prompts import broader, category, srl, substitutes, synonyms
from services.teacher.prompts.answers import ANSWER_MODELS, strict_json_schema
from services.teacher.prompts.base import ContextSlot, PromptTemplate, RenderedPrompt, as_data

__all__ = [
    "ANSWER_MODELS",
    "TEMPLATES",
    "ContextSlot",
    "PromptTemplate",
    "RenderedPrompt",
    "TaskName",
    "as_data",
    "strict_json_schema",
    "template_for",
]

TEMPLATES: dict[TaskName, PromptTemplate] = {
    t.task: t for t in (srl.TEMPLATE, category.TEMPLATE, substitutes.TEMPLATE, broader.TEMPLATE, synonyms.TEMPLATE)
}


def template_for(task: TaskName) -> PromptTemplate:
    return TEMPLATES[TaskName(task)]
