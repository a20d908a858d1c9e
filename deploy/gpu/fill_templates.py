#!/usr/bin/env python3
"""Step 4 of the GPU student: write a deployable Triton model repository from the committed templates.

    python deploy/gpu/fill_templates.py --out MODEL_REPO --engine-dir ENGINE_DIR --tokenizer-dir MERGED_DIR \
        --version llama3-8b-qu-lora-<run id>

Copies triton_models/qu_student_trtllm{,_preprocess,_engine,_postprocess} into MODEL_REPO with the engine
directory, the tokenizer directory and the student's version filled in, then parses every config as Triton
will (services.student.generative.repository). Paths are checked here, so a typo fails now, not at server start.
Run from the checkout with the project installed (the Python models import it at run time anyway).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from services.stack.model_repository import committed_model_repository
from services.student.generative.repository import GPU_MODELS, GpuRepositoryError, fill_gpu_repository


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="the model repository Triton will serve")
    parser.add_argument("--engine-dir", type=Path, required=True, help="trtllm-build's --output_dir")
    parser.add_argument("--tokenizer-dir", type=Path, required=True, help="the merged model directory")
    parser.add_argument("--version", required=True, help="the student version every annotation will name")
    parser.add_argument("--src", type=Path, default=committed_model_repository(), help="the templates (triton_models/)")
    parser.add_argument(
        "--no-check-paths",
        action="store_true",
        help="skip the path checks (paths of the serving machine, not this one)",
    )
    return parser


def check_paths(engine_dir: Path, tokenizer_dir: Path) -> list[str]:
    """What is wrong with the two directories, as messages (empty when both look right)."""
    problems = []
    if not (engine_dir / "config.json").is_file() or not list(engine_dir.glob("rank*.engine")):
        problems.append(f"--engine-dir {engine_dir} holds no config.json and rank*.engine: run build_engine.sh")
    if not (tokenizer_dir / "tokenizer_config.json").is_file():
        problems.append(f"--tokenizer-dir {tokenizer_dir} holds no tokenizer_config.json: run merge_adapter.py")
    return problems


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if not args.no_check_paths:
        problems = check_paths(args.engine_dir, args.tokenizer_dir)
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 1
    values = {
        # absolute(), not resolve(): with --no-check-paths they name the serving machine's files, not ours.
        "engine_dir": str(args.engine_dir.absolute()),
        "tokenizer_dir": str(args.tokenizer_dir.absolute()),
        "student_version": args.version,
    }
    try:
        fill_gpu_repository(args.src, args.out, values)
    except GpuRepositoryError as err:
        print(err, file=sys.stderr)
        return 1
    print(f"wrote {', '.join(GPU_MODELS)} into {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
