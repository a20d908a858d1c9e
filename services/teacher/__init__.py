"""The offline teacher: one prompt per task, backends behind one interface, validated answers.

``prompts`` renders a task's prompt from a :class:`TeacherContext`; a :class:`TeacherBackend`
(``OpenAIChatBackend`` over any OpenAI-compatible endpoint, or a deterministic catalog-grounded
one) answers it; every answer is validated against the task's schema before anything uses it.
"""

from __future__ import annotations

from services.teacher.backend import TeacherAnswer, TeacherAnswerInvalid, TeacherBackend, Usage, parse_answer
from services.teacher.context_types import (
    AttributeCandidate,
    BrandCandidate,
    CategoryCandidate,
    FewShotExample,
    TaskName,
    TeacherContext,
)
from services.teacher.prompts import TEMPLATES, PromptTemplate, RenderedPrompt, template_for

__all__ = [
    "TEMPLATES",
    "AttributeCandidate",
    "BrandCandidate",
    "CategoryCandidate",
    "FewShotExample",
    "PromptTemplate",
    "RenderedPrompt",
    "TaskName",
    "TeacherAnswer",
    "TeacherAnswerInvalid",
    "TeacherBackend",
    "TeacherContext",
    "Usage",
    "parse_answer",
    "template_for",
]
