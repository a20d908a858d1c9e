"""The student's Triton contract, shared by every implementation of it (v1 lexicon, ONNX, TensorRT-LLM).

``QUERY`` (BYTES, [n, 1]): normalized queries as UTF-8; ``TAGS_JSON`` (BYTES, [n, 1]): per query,
``services.domain.Understanding.to_json()`` with the model's version. Every model checks
its input the same way, so a caller gets the same error whichever student serves it.
"""

from __future__ import annotations

from services.normalize import normalize_query

INPUT = "QUERY"
OUTPUT = "TAGS_JSON"

__all__ = ["INPUT", "OUTPUT", "decode_query"]


def decode_query(index: int, raw: object) -> str:
    """One element of ``QUERY`` as text; ValueError names the element and what is wrong with it."""
    if not isinstance(raw, bytes):
        raise ValueError(f"QUERY[{index}] is {type(raw).__name__}, expected UTF-8 bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"QUERY[{index}] is not valid UTF-8 ({err.reason} at byte {err.start})") from err
    if not text:
        raise ValueError(f"QUERY[{index}] is empty: send only non-empty normalized queries")
    if normalize_query(text) != text:
        # Tag offsets index the text received, and every student reads normalized text only.
        raise ValueError(
            f"QUERY[{index}]={text[:80]!r} is not normalized: send services.normalize.normalize_query(text)"
        )
    return text
