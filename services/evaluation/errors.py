"""Per-query span errors: what a figure hides, one JSON line per query the model got wrong.

Each gold span and each predicted tag is classed once:
- ``wrong_role``: the same characters, another role;
- ``boundary``: the same role over overlapping but different characters (``"whole milk"`` for ``"milk"``);
- ``missed``: a gold span no prediction overlaps;
- ``spurious``: a prediction that overlaps no gold span (or only spans already matched).
A query with none of these is right and is not written.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from services.domain import Tag, Understanding
from services.gold import GoldQuery

CLASSES = ("wrong_role", "boundary", "missed", "spurious")


def _overlap(a: Tag, b: Tag) -> bool:
    return a.start < b.end and b.start < a.end


def _span(tag: Tag) -> dict[str, Any]:
    return {"role": tag.role.value, "start": tag.start, "end": tag.end, "text": tag.text}


def query_errors(gold: GoldQuery, predicted: Understanding) -> dict[str, Any] | None:
    """The errors of one query, or None when every gold span was found and nothing more."""
    exact = {(t.role, t.start, t.end) for t in gold.spans} & {(t.role, t.start, t.end) for t in predicted.tags}
    golds = [t for t in gold.spans if (t.role, t.start, t.end) not in exact]
    preds = [t for t in predicted.tags if (t.role, t.start, t.end) not in exact]
    errors: list[dict[str, Any]] = []
    used: set[int] = set()
    for g in golds:
        same_chars = next(
            (i for i, p in enumerate(preds) if i not in used and (p.start, p.end) == (g.start, g.end)), None
        )
        if same_chars is not None:
            used.add(same_chars)
            errors.append({"class": "wrong_role", "gold": _span(g), "predicted": _span(preds[same_chars])})
            continue
        near = next((i for i, p in enumerate(preds) if i not in used and p.role == g.role and _overlap(p, g)), None)
        if near is not None:
            used.add(near)
            errors.append({"class": "boundary", "gold": _span(g), "predicted": _span(preds[near])})
            continue
        errors.append({"class": "missed", "gold": _span(g), "predicted": None})
    errors += [{"class": "spurious", "gold": None, "predicted": _span(p)} for i, p in enumerate(preds) if i not in used]
    if not errors:
        return None
    return {
        "query": gold.query,
        "kind": gold.kind,
        "source": gold.source,
        "gold": [_span(t) for t in gold.spans],
        "predicted": [_span(t) for t in predicted.tags],
        "errors": errors,
    }


GoldSet = tuple[str, Sequence[GoldQuery], Sequence[Understanding]]  # (its name, the gold, the model's answers)


def write_errors(path: Path, sets: Sequence[GoldSet]) -> dict[str, dict[str, int]]:
    """Every wrong query of each gold set as a JSON line in ``path`` (written whole, each line naming its set);
    returns, per set, the wrong queries and the count of each error class."""
    counts: dict[str, Counter[str]] = {name: Counter() for name, _, _ in sets}
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as out:
            for name, gold, answers in sets:
                for g, answer in zip(gold, answers, strict=True):
                    found = query_errors(g, answer)
                    if found is None:
                        continue
                    counts[name].update(e["class"] for e in found["errors"])
                    counts[name]["queries"] += 1
                    out.write(orjson.dumps({"gold_set": name, **found}) + b"\n")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return {name: {k: c.get(k, 0) for k in ("queries", *CLASSES)} for name, c in counts.items()}
