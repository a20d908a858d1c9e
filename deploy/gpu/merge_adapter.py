#!/usr/bin/env python3
"""Step 1 of the GPU student: merge the LoRA adapter into Llama-3-8B-Instruct and save a plain HF checkpoint.

    python deploy/gpu/merge_adapter.py --base BASE_DIR --adapter ADAPTER_DIR --out MERGED_DIR \
        [--verify-query "horizon organic 2% milk"]

TensorRT-LLM then compiles the merged weights like any Llama (no LoRA plugin, no per-request adapter
lookup): the source system merged its adapter for exactly that speed. The merged directory also gets
the tokenizer, so it is both ``--model_dir`` of convert_checkpoint.py and the ensemble's tokenizer_dir.

``--verify-query`` runs the student's real prompt (services.student.generative.prompt.build_prompt)
through the adapter model before merging and through the merged model after, and fails when their
logits differ by more than ``--tolerance``: a merge that changed the model is caught here, not in recall.
Runs wherever torch, transformers and peft are (CPU works; an 8B merge needs ~40 GB of RAM in bf16).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DTYPES = ("bfloat16", "float16", "float32")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--base", type=Path, required=True, help="the base model (HF directory)")
    parser.add_argument("--adapter", type=Path, required=True, help="the peft LoRA adapter directory")
    parser.add_argument("--out", type=Path, required=True, help="where the merged checkpoint is written")
    # BF16: the precision the engine is built in (no FP8: docs/gpu-student.md).
    parser.add_argument("--dtype", choices=DTYPES, default="bfloat16")
    parser.add_argument("--tokenizer", type=Path, help="tokenizer directory (default: the adapter's, else the base's)")
    parser.add_argument(
        "--verify-query", help="a normalized query whose prompt must give the same logits after merging"
    )
    parser.add_argument("--tolerance", type=float, default=None, help="max |logit diff| (default: by dtype)")
    return parser


def _logits(model: Any, input_ids: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(input_ids=input_ids).logits.float()


def merge(args: argparse.Namespace) -> float | None:
    """Merge, save, and return the max logit difference when ``--verify-query`` was given."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name in ("base", "adapter"):
        if not getattr(args, name).is_dir():
            raise SystemExit(f"--{name} {getattr(args, name)} is not a directory")
    if args.out.exists() and any(args.out.iterdir()):
        raise SystemExit(f"--out {args.out} is not empty: choose a new directory (a merged model is never overwritten)")
    tokenizer_dir = args.tokenizer or (
        args.adapter if (args.adapter / "tokenizer_config.json").is_file() else args.base
    )
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    dtype = getattr(torch, args.dtype)
    base = AutoModelForCausalLM.from_pretrained(args.base, torch_dtype=dtype)
    model = PeftModel.from_pretrained(base, args.adapter)
    model.eval()
    input_ids = None
    before = None
    if args.verify_query:
        from services.student.generative.prompt import build_prompt

        encoded = tokenizer(build_prompt(args.verify_query), add_special_tokens=False, return_tensors="pt")
        input_ids = encoded["input_ids"]
        before = _logits(model, input_ids)
    merged = model.merge_and_unload()
    merged.eval()
    diff = None
    if before is not None:
        diff = float((_logits(merged, input_ids) - before).abs().max())
        tolerance = args.tolerance if args.tolerance is not None else (1e-3 if args.dtype == "float32" else 0.25)
        if diff > tolerance:
            raise SystemExit(f"merged logits differ from the adapter's by {diff:.4g} > {tolerance}: not saved")
    args.out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(args.out, safe_serialization=True)
    tokenizer.save_pretrained(args.out)
    return diff


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    diff = merge(args)
    checked = f"; max logit diff {diff:.3g} on the verify query" if diff is not None else ""
    print(f"merged {args.adapter} into {args.base} as {args.dtype}: {args.out}{checked}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
