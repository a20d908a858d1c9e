"""BIO token labels for the distilled student: spans -> labels for training, labels -> spans for serving.

The student reads normalized queries (``services.normalize.normalize_query`` output) with the
MiniLM WordPiece tokenizer. A label belongs to a *word* of the tokenizer's pre-tokenizer (split on
spaces and punctuation, so "1.5" is the three words "1", ".", "5"): its first sub-token carries
the label and the other sub-tokens are ignored (``IGNORE``) in the loss and in decoding. Decoded
spans run from the first word's start to the last word's end, so they index the normalized query
exactly as the tags the cache and the lexicon tagger produce.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Encoding, Tokenizer

from services.domain import Role, Tag

ROLES: tuple[Role, ...] = (Role.PRODUCT, Role.BRAND, Role.ATTRIBUTE)
LABELS: tuple[str, ...] = ("O", *(f"{prefix}-{role.value}" for role in ROLES for prefix in ("B", "I")))
LABEL_IDS: dict[str, int] = {label: i for i, label in enumerate(LABELS)}
IGNORE = -100  # torch CrossEntropyLoss's ignore_index: sub-tokens after the first, special tokens, padding
# Queries are short (p99 well under 20 tokens); the cap bounds the cost of a pathological one.
MAX_TOKENS = 128


def load_tokenizer(path: Path, max_tokens: int = MAX_TOKENS) -> Tokenizer:
    """The fast tokenizer ``path`` (tokenizer.json): truncates at ``max_tokens``, pads to the batch's longest."""
    tokenizer = Tokenizer.from_file(str(path))
    tokenizer.enable_truncation(max_length=max_tokens)
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # no fixed length: a batch pads to its longest query
    return tokenizer


@dataclass(frozen=True, slots=True)
class Word:
    """One pre-tokenizer word: its first sub-token's position and its character range in the query."""

    token: int
    start: int
    end: int


def words(encoding: Encoding) -> list[Word]:
    """The words of one encoded query, in order (special and padding tokens have no word)."""
    out: list[Word] = []
    last: int | None = None
    for position, (word_id, (start, end)) in enumerate(zip(encoding.word_ids, encoding.offsets, strict=True)):
        if word_id is None:
            continue
        if word_id != last:
            out.append(Word(position, start, end))
            last = word_id
        else:
            previous = out[-1]
            out[-1] = Word(previous.token, previous.start, end)
    return out


@dataclass(frozen=True, slots=True)
class Labelled:
    """Token label ids of one query, and how many of its spans could not be put on word boundaries."""

    label_ids: list[int]
    unaligned: int


def label_tokens(encoding: Encoding, spans: Sequence[Tag]) -> Labelled:
    """Label ids, one per token of ``encoding``, for ``spans`` (offsets into the encoded text).

    A span whose ends do not fall on word boundaries (or that truncation cut off) cannot be
    expressed in BIO over words: it is left out (its words stay O) and counted in ``unaligned``.
    """
    return label_words(encoding, [(span, span.role.value) for span in spans], LABEL_IDS)


def label_words(encoding: Encoding, named: Sequence[tuple[Tag, str]], label_ids: Mapping[str, int]) -> Labelled:
    """:func:`label_tokens` for any BIO label set: each span labelled ``B-name``/``I-name`` from ``label_ids``."""
    found = words(encoding)
    ids = [IGNORE] * len(encoding.ids)
    for word in found:
        ids[word.token] = label_ids["O"]
    unaligned = 0
    for span, name in named:
        covered = [w for w in found if w.start >= span.start and w.end <= span.end]
        if not covered or covered[0].start != span.start or covered[-1].end != span.end:
            unaligned += 1
            continue
        ids[covered[0].token] = label_ids[f"B-{name}"]
        for word in covered[1:]:
            ids[word.token] = label_ids[f"I-{name}"]
    return Labelled(ids, unaligned)


def decode_spans(text: str, encoding: Encoding, probabilities: npt.NDArray[np.float32]) -> list[Tag]:
    """Tags from per-token label probabilities (``[tokens, len(LABELS)]``) of one encoded query ``text``.

    Each word takes its first sub-token's most likely label. A B- opens a span; an I- continues
    the open span of its role, and opens one when there is none (a lone I- still names something);
    O closes. ``confidence`` is the mean probability of the labels chosen over the span's words.
    """
    tags: list[Tag] = []
    current: tuple[Role, int, int, list[float]] | None = None  # role, start, end, label probabilities

    def close() -> None:
        if current is not None:
            role, start, end, probs = current
            span = text[start:end]
            tags.append(Tag(role, start, end, span, span, float(np.mean(probs))))

    for word in words(encoding):
        row = probabilities[word.token]
        label_id = int(np.argmax(row))
        label = LABELS[label_id]
        if label == "O":
            close()
            current = None
            continue
        prefix, role_name = label.split("-", 1)
        role = Role(role_name)
        if prefix == "I" and current is not None and current[0] is role:
            current = (role, current[1], word.end, [*current[3], float(row[label_id])])
            continue
        close()
        current = (role, word.start, word.end, [float(row[label_id])])
    close()
    return tags


def softmax(logits: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    probabilities: npt.NDArray[np.float32] = (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)
    return probabilities
