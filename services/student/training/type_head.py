"""A training-only head that predicts QueryNER's own span types, so the encoder learns why its spans end where they do.

QueryNER labels 16 types that the engine folds into three roles, and 14 of them fold into
"attribute": "red cotton shirt" is two attribute spans (a color, then a material), each with its
own B-attribute, and nothing in the role labels says why the second starts a new span. This head,
trained on the QueryNER examples beside the role head, gives the shared encoder that reason. It is
neither saved with the adapter nor exported: the served model is the role tagger alone. Curriculum
examples carry no types (the teacher answers in roles); every token of theirs is ignored here.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tokenizers import Encoding

from services.gold.queryner import QUERYNER_ROLES
from services.student.bio import IGNORE, label_words
from services.student.training.data import Example

TYPES: tuple[str, ...] = tuple(QUERYNER_ROLES)
TYPE_LABELS: tuple[str, ...] = ("O", *(f"{prefix}-{kind}" for kind in TYPES for prefix in ("B", "I")))
TYPE_LABEL_IDS: dict[str, int] = {label: i for i, label in enumerate(TYPE_LABELS)}


def type_labels(encodings: Sequence[Encoding], examples: Sequence[Example]) -> torch.Tensor:
    """``[n, tokens]`` type label ids of an encoded batch; IGNORE where an example has no types.

    Labelled as the role labels are (:func:`services.student.bio.label_words`): a span off word
    boundaries is left out.
    """
    rows: list[list[int]] = []
    for encoding, example in zip(encodings, examples, strict=True):
        if not example.types:
            rows.append([IGNORE] * len(encoding.ids))
            continue
        named = [(span, kind) for span, kind in zip(example.spans, example.types, strict=True) if kind in TYPES]
        rows.append(label_words(encoding, named, TYPE_LABEL_IDS).label_ids)
    return torch.tensor(rows, dtype=torch.long)


class TypeHead(torch.nn.Module):
    """Dropout and a linear layer over the encoder's last hidden states, as the role head is built."""

    def __init__(self, hidden_size: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = torch.nn.Dropout(dropout)
        self.classifier = torch.nn.Linear(hidden_size, len(TYPE_LABELS))

    def loss(self, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the labelled tokens; zero for a batch with none (all curriculum examples)."""
        if not bool((labels != IGNORE).any()):
            return hidden.new_zeros(())
        logits = self.classifier(self.dropout(hidden))
        return torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE
        )
