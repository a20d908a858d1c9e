"""QueryNER (Palen-Michel et al., 2024) as the engine's three roles.

The files are ``{"examples": [{"tokens": [...], "ner_tags": [int, ...]}]}`` with BIO label ids
(``label_names_inferred.json`` beside them names them). The mapping to roles is the one in the
shared data README: ``core_product_type`` -> product, ``creator`` -> brand, ``department`` is
ignored, every other type -> attribute. A query is its tokens joined by single spaces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from services.domain import Role, Tag
from services.errors import InputError
from services.gold.model import GoldQuery

# BIO label ids as published (ids 0-16 from the dataset card, 17-34 reconstructed: see the data README).
LABEL_NAMES: tuple[str, ...] = (
    "O",
    "B-UoM", "I-UoM", "B-color", "I-color", "B-condition", "I-condition", "B-content", "I-content",
    "B-core_product_type", "I-core_product_type", "B-creator", "I-creator", "B-department", "I-department",
    "B-material", "I-material", "B-modifier", "I-modifier", "B-occasion", "I-occasion", "B-origin", "I-origin",
    "B-price", "I-price", "B-product_name", "I-product_name", "B-product_number", "I-product_number",
    "B-quantity", "I-quantity", "B-shape", "I-shape", "B-time", "I-time",
)  # fmt: skip
IGNORED = "department"
QUERYNER_ROLES: dict[str, Role] = {
    "core_product_type": Role.PRODUCT,
    "creator": Role.BRAND,
    **{
        name: Role.ATTRIBUTE
        for name in (
            "modifier", "UoM", "color", "condition", "content", "material", "occasion", "origin",
            "price", "quantity", "shape", "time", "product_number", "product_name",
        )
    },
}  # fmt: skip


def read_queryner(path: Path) -> list[GoldQuery]:
    """Every example of a QueryNER split file, spans mapped to roles; :class:`InputError` names a bad example."""
    try:
        document = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise InputError(str(path), f"cannot read the QueryNER file: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise InputError(str(path), f"not JSON ({exc})") from None
    examples = document.get("examples") if isinstance(document, dict) else None
    if not isinstance(examples, list):
        raise InputError(str(path), 'expected {"examples": [...]} (a QueryNER split file)')
    return [_example(raw, path, i) for i, raw in enumerate(examples)]


def _example(raw: Any, path: Path, index: int) -> GoldQuery:
    def bad(column: str, reason: str) -> InputError:
        return InputError(str(path), reason, row=index, column=column, problem=f"{column}: {reason}")

    if not isinstance(raw, dict):
        raise bad("(example)", "expected an object")
    tokens, ids = raw.get("tokens"), raw.get("ner_tags")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
        raise bad("tokens", "expected a non-empty list of non-empty strings")
    if not isinstance(ids, list) or len(ids) != len(tokens):
        raise bad("ner_tags", f"expected {len(tokens)} label ids, one per token")
    labels: list[str] = []
    for i, label_id in enumerate(ids):
        if not isinstance(label_id, int) or not 0 <= label_id < len(LABEL_NAMES):
            raise bad(f"ner_tags[{i}]", f"{label_id!r} is not a label id 0-{len(LABEL_NAMES) - 1}")
        labels.append(LABEL_NAMES[label_id])
    typed = typed_spans_from_bio(tokens, labels)
    return GoldQuery(
        " ".join(tokens),
        tuple(span for span, _ in typed),
        source=f"{path}#{index}",
        span_types=tuple(kind for _, kind in typed),
    )


def spans_from_bio(tokens: list[str], labels: list[str]) -> list[Tag]:
    """Spans (char offsets into the tokens joined by spaces) from BIO labels; an I- without its B- starts a span."""
    return [span for span, _ in typed_spans_from_bio(tokens, labels)]


def typed_spans_from_bio(tokens: list[str], labels: list[str]) -> list[tuple[Tag, str]]:
    """:func:`spans_from_bio`, each span with its QueryNER type (``"color"``, ``"core_product_type"``...)."""
    spans: list[tuple[Tag, str]] = []
    current: tuple[str, int, int] | None = None  # (type, start, end)
    offset = 0

    def close() -> None:
        if current is None:
            return
        kind, start, end = current
        role = QUERYNER_ROLES.get(kind)
        if role is not None:
            text = " ".join(tokens)[start:end]
            spans.append((Tag(role, start, end, text, text), kind))

    for token, label in zip(tokens, labels, strict=True):
        start, end = offset, offset + len(token)
        offset = end + 1
        prefix, _, kind = label.partition("-")
        if prefix == "I" and current is not None and current[0] == kind:
            current = (kind, current[1], end)
            continue
        close()
        current = (kind, start, end) if prefix in ("B", "I") else None
    close()
    return spans
