"""Character-span BIO JSON lines, as public NER query sets publish them, read as the engine's three roles.

One record a line: ``{"text": "мороженное umka", "labels": [[0, 10, "B-TYPE"], [11, 15, "B-BRAND"]], "id": 13508}``,
one ``[start, end, label]`` per word (character offsets into ``text``, end exclusive), the label ``O`` or
``B-X`` / ``I-X``. The set's own labels (``X``) become roles through a label map given by the caller
(``TYPE=product,BRAND=brand,VOLUME=attribute``), so one reader serves any such set.

- The words of one span are merged: a ``B-X`` word, then the ``I-X`` words right after it, make one
  span from the first word's start to the last word's end (whatever lies between the words is inside it).
- An ``I-X`` that does not follow a ``B-X`` or ``I-X`` word (the first word, after an ``O`` or after
  another label) starts a span, as a ``B-X`` would (seqeval's lenient reading; CoNLL's ``IOB1``).
- A label the map does not name is ignored: its words are read as ``O`` would be, and each of its spans
  is kept in :attr:`GoldQuery.ignored_types` so a report can count what was left out.
- Labelled words must lie within the text, must not be empty and must not overlap; otherwise an
  :class:`InputError` names the file, the line and the field (``labels[2]``). ``O`` words are checked
  for their shape only: a published set may carry an ``O`` word past the end of a misspelt query.

Words are read in order of their start offset. The source's label of each span (``TYPE``) is kept in
:attr:`GoldQuery.span_types`, parallel to the spans.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from services.domain import Role, Tag
from services.errors import InputError
from services.gold.model import GoldQuery
from services.jsonl import read_json_lines

__all__ = ["iter_bio_spans", "parse_label_map", "read_bio_spans"]

_OUTSIDE = "O"


def parse_label_map(text: str) -> dict[str, Role]:
    """``"TYPE=product,BRAND=brand"`` -> ``{"TYPE": Role.PRODUCT, ...}``; ValueError says what is wrong."""
    out: dict[str, Role] = {}
    roles = ", ".join(r.value for r in Role)
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        label, sep, role = (s.strip() for s in item.partition("="))
        if not sep or not label or not role:
            raise ValueError(f"{item!r}: expected LABEL=ROLE (ROLE one of {roles})")
        if label.startswith(("B-", "I-")) or label == _OUTSIDE:
            raise ValueError(f"{item!r}: name the label without its B-/I- prefix (and not O)")
        try:
            out[label] = Role(role.lower())
        except ValueError:
            raise ValueError(f"{item!r}: {role!r} is not a role ({roles})") from None
    if not out:
        raise ValueError("an empty label map: give LABEL=ROLE pairs, e.g. TYPE=product,BRAND=brand")
    return out


def read_bio_spans(path: Path, label_map: Mapping[str, Role]) -> list[GoldQuery]:
    """Every record of ``path``; raises :class:`InputError` naming the line and field of the first bad one."""
    return list(iter_bio_spans(path, label_map))


def iter_bio_spans(path: Path, label_map: Mapping[str, Role]) -> Iterator[GoldQuery]:
    for line_no, row in read_json_lines(path, "the gold file"):
        yield _record(row, path, line_no, label_map)


def _record(row: Any, path: Path, line_no: int, label_map: Mapping[str, Role]) -> GoldQuery:
    def bad(column: str, reason: str) -> InputError:
        return InputError(str(path), reason, row=line_no, column=column, problem=f"{column}: {reason}")

    if not isinstance(row, dict):
        raise bad("(line)", "expected a JSON object")
    text = row.get("text")
    if not isinstance(text, str) or not text.strip():
        raise bad("text", "missing or empty")
    raw_labels = row.get("labels", [])
    if not isinstance(raw_labels, list):
        raise bad("labels", "expected a list of [start, end, label]")
    words: list[tuple[int, int, str, int]] = []  # (start, end, label, index in the line), O words too
    for i, raw in enumerate(raw_labels):
        field = f"labels[{i}]"
        if (
            not isinstance(raw, list)
            or len(raw) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in raw[:2])
            or not isinstance(raw[2], str)
        ):
            raise bad(field, f"expected [start, end, label], got {raw!r}")
        start, end, label = raw
        if label != _OUTSIDE:
            prefix, dash, kind = label.partition("-")
            if prefix not in ("B", "I") or not dash or not kind:
                raise bad(field, f"{label!r} is not a BIO label (O, B-X or I-X)")
            if not 0 <= start < end <= len(text):
                raise bad(field, f"[{start}, {end}) does not lie within the text ({len(text)} characters: {text!r})")
        words.append((start, end, label, i))
    words.sort()
    labelled = [w for w in words if w[2] != _OUTSIDE]
    for (_, before_end, _, before), (after_start, _, _, after) in itertools.pairwise(labelled):
        if after_start < before_end:
            raise bad(f"labels[{after}]", f"overlaps labels[{before}] in {text!r}")

    spans: list[tuple[int, int, str]] = []  # (start, end, the source's label without its prefix)
    open_kind: str | None = None  # the label of the span the next I- word may continue
    for start, end, label, _ in words:
        if label == _OUTSIDE:
            open_kind = None
            continue
        prefix, _, kind = label.partition("-")
        if prefix == "I" and open_kind == kind:
            spans[-1] = (spans[-1][0], end, kind)
        else:  # B-, or an I- that follows no span of its label: a new span
            spans.append((start, end, kind))
        open_kind = kind

    tags: list[Tag] = []
    types: list[str] = []
    ignored: list[str] = []
    for start, end, kind in spans:
        role = label_map.get(kind)
        if role is None:
            ignored.append(kind)
            continue
        tags.append(Tag(role, start, end, text[start:end], text[start:end]))
        types.append(kind)
    return GoldQuery(
        text,
        tuple(tags),
        source=f"{path}:{line_no}",
        span_types=tuple(types),
        ignored_types=tuple(ignored),
    )
