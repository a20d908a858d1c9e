"""``qu student train``: LoRA-distil the teacher's curriculum (and QueryNER train) into the MiniLM student.

A run writes ``student/runs/<run_id>/`` under the state directory (or ``--out``):

* ``config.json``  what was trained, on what, with which seed (enough to train it again);
* ``metrics.json`` span P/R/F1 per role on each held-out set, the loss curve, the data counts;
* ``adapter/``     the LoRA adapter and the trained head (peft ``save_pretrained``);
* ``tokenizer/``   the tokenizer files, so export and serving need nothing else from the base model;
* ``heldout/``     the held-out examples as scored, so export scores its ONNX graphs on the same queries.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from services.errors import QuError
from services.student.bio import LABELS, MAX_TOKENS, load_tokenizer
from services.student.training.data import Example, StudentData, write_examples
from services.student.training.scoring import span_scores

Report = Callable[[str], None]


class StudentTrainError(QuError):
    """The student cannot be trained as configured."""


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
HELDOUT_SETS = ("heldout", "queryner_validation")
SCORER = "services.span_scores (exact (role, start, end) match on the normalized query)"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    base_model_path: Path
    base_model_id: str
    curriculum: Path | None
    queryner_dir: Path | None
    queryner_train: bool
    # The defaults are the shipped recipe (docs/STUDENT.md, "The measured decision"); the CLI's are the same.
    epochs: int = 7
    max_steps: int | None = None  # stop after this many optimizer steps (CI, smoke runs)
    batch_size: int = 32
    learning_rate: float = 1e-3  # LoRA and head alike; LoRA wants a larger rate than full fine-tuning
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    lora_r: int = 16
    lora_alpha: int | None = None  # default 2 x r
    lora_dropout: float = 0.1
    seed: int = 13
    heldout_percent: int = 10
    max_tokens: int = MAX_TOKENS
    # QueryNER train examples appear this many times per epoch: its human labels weigh more against the
    # curriculum's (which outnumber them once the teacher has annotated a whole log).
    queryner_repeat: int = 2
    # Evaluate and save an exponential moving average of the weights (decay per step, warmed up), not the last
    # step's: on noisy labels (QueryNER) the average generalizes better than any point of the trajectory. None: off.
    ema_decay: float | None = 0.999
    # Weight of the training-only head that predicts QueryNER's 16 span types on its examples
    # (services.student.training.type_head); 0: no such head.
    type_head_weight: float = 0.0
    # Keep the epoch that scores best on this held-out set ("heldout" or "queryner_validation") instead of the
    # last one: early stopping, which tunes on that set (its score is then optimistic). None: the last epoch.
    select_on: str | None = None
    device: str = "cpu"  # "cuda" trains on a GPU; the run directory is the same either way
    # One thread: with other processes on the cores, torch's spinning worker threads made a step ~10x slower
    # (32 queries: 1.6 s with 1 thread, 20 s with 2, on this 2-core machine under load). None: every core.
    torch_threads: int | None = 1

    def to_json(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        return {k: str(v) if isinstance(v, Path) else v for k, v in row.items()}

    @property
    def alpha(self) -> int:
        return self.lora_alpha if self.lora_alpha is not None else 2 * self.lora_r


@dataclass(frozen=True, slots=True)
class TrainResult:
    run_dir: Path
    run_id: str
    metrics: dict[str, Any]


def new_run_id(config: TrainConfig) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    digest = hashlib.blake2b(orjson.dumps(config.to_json(), option=orjson.OPT_SORT_KEYS), digest_size=3).hexdigest()
    return f"{stamp}-{digest}"


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate(model: Any, tokenizer: Any, examples: list[Example]) -> dict[str, Any]:
    from services.student.training.model import predict

    predicted = predict(model, tokenizer, [e.text for e in examples])
    return span_scores([list(e.spans) for e in examples], predicted)


def train_student(
    config: TrainConfig,
    data: StudentData,
    run_dir: Path,
    *,
    run_id: str,
    progress: bool = True,
    report: Report = lambda _message: None,
) -> TrainResult:
    import torch
    from tqdm import tqdm
    from transformers import get_linear_schedule_with_warmup

    from services.student.training.model import batch_tensors, load_base, with_lora
    from services.student.training.type_head import TypeHead

    _check_options(config, data)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    seed_everything(config.seed)
    tokenizer = load_tokenizer(config.base_model_path / "tokenizer.json", config.max_tokens)
    device = _device(config.device)
    model = with_lora(load_base(config.base_model_path), config.lora_r, config.alpha, config.lora_dropout)
    model.to(device)
    type_head = TypeHead(model.config.hidden_size).to(device) if config.type_head_weight > 0 else None
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    report(f"student: {trainable:,} of {total:,} parameters train (LoRA r={config.lora_r} + head)")

    repeats = {"queryner_train": config.queryner_repeat}
    epoch_size = len(data.epoch_indices(repeats))
    steps_per_epoch = (epoch_size + config.batch_size - 1) // config.batch_size
    planned = steps_per_epoch * config.epochs
    steps = min(planned, config.max_steps) if config.max_steps else planned
    parameters = [p for p in model.parameters() if p.requires_grad]
    parameters += list(type_head.parameters()) if type_head is not None else []
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = get_linear_schedule_with_warmup(  # type: ignore[no-untyped-call]
        optimizer, int(config.warmup_ratio * steps), steps
    )
    averaged = _averaged(model, config.ema_decay)
    scored = averaged.module if averaged is not None else model  # what is evaluated and saved
    order = random.Random(config.seed)
    history: list[dict[str, Any]] = []
    # Spans BIO over words cannot express, counted once per example (repeats would count them again).
    unaligned = sum(batch_tensors(tokenizer, data.train[i : i + 512])[2] for i in range(0, len(data.train), 512))
    step = 0
    started = time.monotonic()
    metrics: dict[str, Any] = {}
    kept: tuple[int, dict[str, Any]] | None = None  # the epoch saved and its scores
    bar = tqdm(total=steps, desc="student train", unit="step", disable=not progress, dynamic_ncols=True)
    try:
        for epoch in range(config.epochs):
            if step >= steps:
                break
            model.train()
            if type_head is not None:
                type_head.train()
            indices = data.epoch_indices(repeats)
            order.shuffle(indices)
            losses: list[float] = []
            for i in range(0, len(indices), config.batch_size):
                if step >= steps:
                    break
                batch = [data.train[j] for j in indices[i : i + config.batch_size]]
                loss = _batch_loss(model, type_head, config.type_head_weight, tokenizer, batch, device)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(parameters, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad()
                if averaged is not None:
                    averaged.update_parameters(model)
                losses.append(float(loss.item()))
                step += 1
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{np.mean(losses[-50:]):.4f}")
            scored.eval()
            point: dict[str, Any] = {"epoch": epoch + 1, "steps": step, "loss": round(float(np.mean(losses)), 5)}
            scores = {name: evaluate(scored, tokenizer, examples) for name, examples in _heldout_sets(data)}
            point.update({f"{name}_f1": score["f1"] for name, score in scores.items()})
            history.append(point)
            report(f"student: epoch {epoch + 1}: {point}")
            better = kept is None or _improves(config.select_on, scores, kept[1])
            if better or kept is None:
                kept = (epoch + 1, scores)
            # Saved after every epoch: an interrupted run keeps its last kept epoch, and says which.
            metrics = {
                "run_id": run_id,
                "epochs_done": epoch + 1,
                "epoch_saved": kept[0],
                "selected_on": config.select_on,
                "steps": step,
                "train_seconds": round(time.monotonic() - started, 1),
                "trainable_parameters": trainable,
                "history": history,
                "data": {**data.stats, "unaligned_train_spans": unaligned},
                "scorer": SCORER,
                **kept[1],
            }
            _save(run_dir, run_id, config, data, scored if better else None, metrics)
    finally:
        bar.close()
    return TrainResult(run_dir, run_id, metrics)


def _batch_loss(
    model: Any, type_head: Any, type_weight: float, tokenizer: Any, batch: list[Example], device: Any
) -> Any:
    """The role tagger's loss on ``batch``, plus the type head's (weighted) when there is one."""
    from services.student.training.model import encoded_batch
    from services.student.training.type_head import type_labels

    encodings = tokenizer.encode_batch([e.text for e in batch])
    inputs, labels, _ = encoded_batch(encodings, batch)
    inputs = {name: tensor.to(device) for name, tensor in inputs.items()}
    if type_head is None:
        return model(**inputs, labels=labels.to(device)).loss
    out = model(**inputs, labels=labels.to(device), output_hidden_states=True)
    return out.loss + type_weight * type_head.loss(out.hidden_states[-1], type_labels(encodings, batch).to(device))


def _averaged(model: Any, decay: float | None) -> Any:
    """An exponential moving average of ``model``'s weights (torch's AveragedModel), or None without a decay.

    The decay warms up as ``min(decay, (1 + n) / (10 + n))`` after n updates (as TensorFlow's moving
    average does): without it a short run's average would still hold much of its first steps
    (0.999 ** 800 = 45% after the 800 steps of a curriculum-only run).
    """
    if decay is None:
        return None
    import torch
    from torch.optim.swa_utils import AveragedModel

    Params = tuple[torch.Tensor, ...] | list[torch.Tensor]

    def update(averaged: Params, current: Params, updates: torch.Tensor | int) -> None:
        n = int(updates)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        for average, value in zip(averaged, current, strict=True):
            average.lerp_(value, weight)

    return AveragedModel(model, multi_avg_fn=update)


def _device(name: str) -> Any:
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise StudentTrainError(f"--device {name!r} is not a torch device ({err})") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise StudentTrainError(f"--device {name!r}: this machine has no CUDA device torch can use; train on cpu")
    return device


def _check_options(config: TrainConfig, data: StudentData) -> None:
    """Options that cannot work, named before the model loads."""
    if config.ema_decay is not None and not 0.0 < config.ema_decay < 1.0:
        raise StudentTrainError(f"--ema-decay {config.ema_decay}: expected a number between 0 and 1 (0.999 is usual)")
    present = [name for name, _ in _heldout_sets(data)]
    if config.select_on is not None and config.select_on not in present:
        raise StudentTrainError(f"--select-on {config.select_on!r}: expected one of the held-out sets here, {present}")


def _improves(select_on: str | None, scores: dict[str, Any], kept: dict[str, Any]) -> bool:
    """Whether this epoch replaces the kept one: always without a selection set, else on a higher F1 there."""
    return select_on is None or bool(scores[select_on]["f1"] > kept[select_on]["f1"])


def _heldout_sets(data: StudentData) -> list[tuple[str, list[Example]]]:
    sets = zip(HELDOUT_SETS, (data.heldout, data.queryner_validation), strict=True)
    return [(name, examples) for name, examples in sets if examples]


def _save(
    run_dir: Path, run_id: str, config: TrainConfig, data: StudentData, model: Any | None, metrics: dict[str, Any]
) -> None:
    """The run directory; ``model`` None keeps the adapter saved earlier and updates only config and metrics."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if model is not None:
        model.save_pretrained(str(run_dir / "adapter"))
    tokenizer_dir = run_dir / "tokenizer"
    tokenizer_dir.mkdir(exist_ok=True)
    for name in TOKENIZER_FILES:
        if (config.base_model_path / name).is_file():
            shutil.copy2(config.base_model_path / name, tokenizer_dir / name)
    write_examples(run_dir / "heldout" / "heldout.jsonl", data.heldout)
    write_examples(run_dir / "heldout" / "queryner_validation.jsonl", data.queryner_validation)
    run_config = {"run_id": run_id, "labels": list(LABELS), **config.to_json()}
    (run_dir / "config.json").write_bytes(orjson.dumps(run_config, option=orjson.OPT_INDENT_2))
    (run_dir / "metrics.json").write_bytes(orjson.dumps(metrics, option=orjson.OPT_INDENT_2))
