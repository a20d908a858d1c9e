"""The student in torch: MiniLM-L6 with a token-classification head, LoRA adapters (peft), and its batches.

Only training and export import this module (torch, transformers, peft); serving runs the exported
ONNX graphs (``services.student.onnx_student``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from tokenizers import Encoding, Tokenizer

from services.domain import Tag
from services.student.bio import IGNORE, LABEL_IDS, LABELS, decode_spans, label_tokens, softmax
from services.student.training.data import Example

# LoRA on every linear layer of the encoder: attention (query, key, value, attention.output.dense) and the
# feed-forward (intermediate.dense, output.dense); the classifier head is new, so it trains fully.
LORA_TARGETS = ("query", "key", "value", "dense")
HEAD = "classifier"


def load_base(model_path: Path) -> Any:
    """MiniLM (a sentence-transformers directory) with a fresh token-classification head for LABELS."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory; never the hub
    from transformers import AutoModelForTokenClassification
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]  # the "newly initialized classifier" warning is expected here
    return AutoModelForTokenClassification.from_pretrained(
        str(model_path),
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id=dict(LABEL_IDS),
    )


def with_lora(model: Any, r: int, alpha: int, dropout: float) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        task_type=TaskType.TOKEN_CLS,
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(LORA_TARGETS),
        modules_to_save=[HEAD],
    )
    return get_peft_model(model, config)


def load_adapter(model_path: Path, adapter_dir: Path) -> Any:
    """A trained run's student: the base encoder with the run's adapter (and head) applied, in eval mode."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(load_base(model_path), str(adapter_dir))
    model.eval()
    return model


def batch_tensors(
    tokenizer: Tokenizer, examples: Sequence[Example]
) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
    """Model inputs, label ids and the number of spans that could not be put on word boundaries."""
    return encoded_batch(tokenizer.encode_batch([e.text for e in examples]), examples)


def encoded_batch(
    encodings: Sequence[Encoding], examples: Sequence[Example]
) -> tuple[dict[str, torch.Tensor], torch.Tensor, int]:
    """:func:`batch_tensors` of a batch already encoded (so a second head's labels reuse the encodings)."""
    labelled = [label_tokens(enc, e.spans) for enc, e in zip(encodings, examples, strict=True)]
    inputs = _inputs(encodings)
    labels = torch.tensor([item.label_ids for item in labelled], dtype=torch.long)
    return inputs, labels, sum(item.unaligned for item in labelled)


def _inputs(encodings: Sequence[Encoding]) -> dict[str, torch.Tensor]:
    return {
        "input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long),
        "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long),
    }


def logits(model: Any, tokenizer: Tokenizer, texts: Sequence[str]) -> tuple[npt.NDArray[np.float32], list[Encoding]]:
    """Token logits ``[n, tokens, labels]`` of one batch of texts (padded to the longest) and their encodings."""
    encodings = tokenizer.encode_batch(list(texts))
    device = next(model.parameters()).device
    with torch.inference_mode():
        out = model(**{name: tensor.to(device) for name, tensor in _inputs(encodings).items()}).logits
    return out.float().cpu().numpy(), encodings


def predict(model: Any, tokenizer: Tokenizer, texts: Sequence[str], batch_size: int = 64) -> list[list[Tag]]:
    """Decoded tags for each text (normalized queries)."""
    tags: list[list[Tag]] = []
    for i in range(0, len(texts), batch_size):
        chunk = list(texts[i : i + batch_size])
        batch_logits, encodings = logits(model, tokenizer, chunk)
        for text, encoding, row in zip(chunk, encodings, batch_logits, strict=True):
            tags.append(decode_spans(text, encoding, softmax(row)))
    return tags


__all__ = ["IGNORE", "batch_tensors", "encoded_batch", "load_adapter", "load_base", "logits", "predict", "with_lora"]
