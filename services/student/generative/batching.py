"""Tensor plumbing of the ensemble's Python models, kept out of model.py so it is tested on CPU.

Shapes follow the TensorRT-LLM backend's contract (``triton_models/qu_student_trtllm_engine``):
``input_ids`` [batch, max_len] padded on the right, with ``input_lengths`` [batch, 1] telling the
backend where each row's prompt ends (it strips the padding); ``output_ids`` [batch, beams, len] and
``sequence_length`` [batch, beams] come back, of which beam 0 is read (the engine runs greedy, one beam).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from services.student.contract import decode_query

__all__ = ["decode_query", "first_beam_tokens", "pad_token_ids"]


def pad_token_ids(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """``(input_ids [n, max_len], input_lengths [n, 1])`` as int32, rows padded on the right with ``pad_id``."""
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every prompt must have at least one token")
    width = max(len(r) for r in rows)
    ids = np.full((len(rows), width), pad_id, dtype=np.int32)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
    lengths = np.array([[len(r)] for r in rows], dtype=np.int32)
    return ids, lengths


def first_beam_tokens(output_ids: npt.NDArray[np.int32], sequence_length: npt.NDArray[np.int32]) -> list[list[int]]:
    """Per batch row, the generated token ids of beam 0 (``exclude_input_in_output`` is on in the engine)."""
    if output_ids.ndim != 3 or sequence_length.ndim != 2 or output_ids.shape[:2] != sequence_length.shape:
        raise ValueError(
            f"output_ids {output_ids.shape} and sequence_length {sequence_length.shape} are not "
            "[batch, beams, len] and [batch, beams]"
        )
    rows = []
    for tokens, lengths in zip(output_ids, sequence_length, strict=True):
        length = int(lengths[0])
        if not 0 <= length <= tokens.shape[1]:
            raise ValueError(f"sequence_length {length} is outside the {tokens.shape[1]} output positions")
        rows.append([int(t) for t in tokens[0, :length]])
    return rows
