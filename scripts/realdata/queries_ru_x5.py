"""Convert the X5 (Pyatyorochka) labelled search queries into span JSONL (data set ``queries-ru-x5``).

Source: GitHub ``templeJJs/x5_lct_v3``, commit ``a353130a4a3ec5f54be4edf986b69ced2a9370f9`` (2025-10-02),
files ``dataset/train_lct.jsonl`` (23,358 queries) and ``dataset/val_lct.jsonl`` (4,123): real search
queries of the Pyatyorochka app (X5 Group) given to the "Лидеры цифровой трансформации" (LCT) 2025
hackathon, labelled per word with BIO labels TYPE, BRAND, VOLUME, PERCENT (and ``O``). The ids run
0-27480 without a gap, so the file holds the hackathon's queries only (the repository's README mentions
synthetic PERCENT examples added for training; none are in these files). The train/val split is the
repository's own and is kept as it is. Licence: not stated (no licence file).

What it does: reads each line ``{"text", "labels": [[start, end, label], ...], "id"}`` (character
offsets, end exclusive) and writes it back in the same form after checking it: the text is a non-empty
string, each span lies inside the text, does not overlap the previous one, covers more than spaces and
carries ``O`` or ``B-``/``I-`` with one of the four types. A line that fails is skipped and counted
by reason; a repeated id is skipped too. A span that takes in a space at its start or end (a few
queries hold a no-break space after a word) is shrunk to the word and kept.

    python scripts/realdata/queries_ru_x5.py /work/.mirror/templeJJs+x5_lct_v3/repo \
        ../shared/data/catalogs/queries-ru-x5
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from _common import Counts, Source, write_jsonl

SPLITS = {"train_lct.jsonl": "dataset/train_lct.jsonl", "val_lct.jsonl": "dataset/val_lct.jsonl"}
TYPES = ("TYPE", "BRAND", "VOLUME", "PERCENT")
LABELS = frozenset({"O"} | {f"{p}-{t}" for p in ("B", "I") for t in TYPES})


def trim_spans(record: dict[str, Any]) -> bool:
    """Shrink spans that take in a space at either end (a few queries hold a no-break space); True if any did."""
    text, changed = record["text"], False
    for span in record["labels"]:
        start, end, _ = span
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if (start, end) != (span[0], span[1]):
            span[0], span[1], changed = start, end, True
    return changed


def check(record: Any) -> str | None:
    """Why the record is unusable, or None when it is fine."""
    if not isinstance(record, dict):
        return "not a JSON object"
    text, labels, rid = record.get("text"), record.get("labels"), record.get("id")
    if not isinstance(text, str) or not text.strip():
        return "no text"
    if not isinstance(rid, int) or isinstance(rid, bool):
        return "id not an integer"
    if not isinstance(labels, list) or not labels:
        return "no labels"
    end_before = 0
    for span in labels:
        if not (isinstance(span, list) and len(span) == 3):
            return "a label is not [start, end, label]"
        start, end, label = span
        if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
            return "a span lies outside the text"
        if start < end_before:
            return "spans overlap or are out of order"
        if label not in LABELS:
            return f"unknown label {label!r}"
        if not text[start:end].strip():
            return "a span covers only spaces"
        end_before = end
    return None


def convert(source: Source, out_dir: Path) -> Counts:
    counts = Counts()
    seen: set[int] = set()
    outputs: dict[str, list[dict[str, Any]]] = {}  # written only once every split has been read
    for out_name, src_name in SPLITS.items():
        text = source.read_text(src_name)
        if text is None:
            raise SystemExit(f"{source.path}: no {src_name} at {source.commit}")
        kept: list[dict[str, Any]] = []
        for line in text.split("\n"):  # not splitlines(): U+2028 and U+0085 may stand inside a JSON string
            if not line.strip():
                continue
            counts.read += 1
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                counts.skip("not JSON")
                continue
            problem = check(record)
            if problem is None and record["id"] in seen:
                problem = "id seen before"
            if problem is not None:
                counts.skip(problem)
                continue
            if trim_spans(record):
                counts.tally("queries with a span trimmed of a surrounding space (kept)")
            seen.add(record["id"])
            kept.append({"text": record["text"], "labels": record["labels"], "id": record["id"]})
        outputs[out_name] = kept
        counts.written += len(kept)
        labels = sum(len(r["labels"]) for r in kept)
        counts.notes[out_name] = f"{len(kept)} queries, {labels} labelled words"
    for out_name, kept in outputs.items():
        write_jsonl(out_dir / out_name, kept)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the fetched git dir of templeJJs/x5_lct_v3")
    parser.add_argument("out_dir", type=Path, help="folder to write train_lct.jsonl and val_lct.jsonl into")
    parser.add_argument("--commit", default="HEAD", help="commit to read in a git dir (default HEAD)")
    args = parser.parse_args()
    source = Source(args.source, args.commit)
    try:
        counts = convert(source, args.out_dir)
    finally:
        source.close()
    counts.notes["source commit"] = source.commit
    counts.report("queries-ru-x5 from dataset/{train,val}_lct.jsonl")


if __name__ == "__main__":
    main()
