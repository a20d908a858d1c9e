"""The trainer's options: a moving average of the weights is what is scored and saved; bad options are named."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from services.student.training.data import StudentData
from services.student.training.trainer import StudentTrainError, train_student
from tests.fixtures.student import tiny_train_config


def adapter_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


def test_with_a_moving_average_the_saved_weights_are_the_average(
    tmp_path: Path, student_tiny_data: StudentData
) -> None:
    # The average starts as a copy of the first step's weights; the second update moves it by 1 - min(decay, 2/11)
    # towards the second step's (the warm-up). Without an average the run saves its last step.
    def run(name: str, steps: int, decay: float | None) -> dict[str, torch.Tensor]:
        config = tiny_train_config(max_steps=steps, epochs=1, ema_decay=decay)
        result = train_student(config, student_tiny_data, tmp_path / name, run_id=name, progress=False)
        return adapter_weights(result.run_dir)

    first, second = run("one", 1, None), run("two", 2, None)
    averaged = run("ema", 2, 0.999)
    lora_b = [name for name in first if "lora_B" in name]
    assert lora_b  # zero at initialization, so what they hold is training's
    kept = 2 / 11  # min(0.999, (1 + 1) / (10 + 1))
    for name in lora_b:
        expected = kept * first[name] + (1 - kept) * second[name]
        assert torch.allclose(averaged[name], expected, atol=1e-6), name
    assert any(not torch.allclose(second[name], first[name], atol=1e-5) for name in lora_b)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ema_decay": 1.5}, "--ema-decay 1.5"),
        ({"device": "no-such-device"}, "'no-such-device' is not a torch device"),
        ({"select_on": "test"}, "expected one of the held-out sets here"),
    ],
)
def test_bad_options_are_named(
    tmp_path: Path, student_tiny_data: StudentData, overrides: dict[str, object], message: str
) -> None:
    with pytest.raises(StudentTrainError, match=message):
        train_student(tiny_train_config(**overrides), student_tiny_data, tmp_path / "run", run_id="x", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: --device cuda would train")
def test_cuda_without_a_gpu_says_so(tmp_path: Path, student_tiny_data: StudentData) -> None:
    with pytest.raises(StudentTrainError, match="no CUDA device"):
        train_student(tiny_train_config(device="cuda"), student_tiny_data, tmp_path / "run", run_id="x", progress=False)


def test_the_type_head_trains_beside_the_roles_and_is_not_saved(tmp_path: Path) -> None:
    from services.domain import Role, Tag
    from services.gold import GoldQuery
    from services.student.training.data import build_data
    from tests.fixtures.student import tiny_gold

    def typed(query: str, kinds: list[tuple[str, Role, str]]) -> GoldQuery:
        tags = tuple(Tag(role, query.index(w), query.index(w) + len(w), w, w) for w, role, _ in kinds)
        return GoldQuery(query, tags, span_types=tuple(kind for *_, kind in kinds))

    queryner = [
        typed("red cotton shirt", [("red", Role.ATTRIBUTE, "color"), ("cotton", Role.ATTRIBUTE, "material"),
                                   ("shirt", Role.PRODUCT, "core_product_type")]),
        typed("acme blue mug", [("acme", Role.BRAND, "creator"), ("blue", Role.ATTRIBUTE, "color"),
                                ("mug", Role.PRODUCT, "core_product_type")]),
    ] * 4  # fmt: skip
    data = build_data(tiny_gold(), queryner, [], heldout_percent=20)
    result = train_student(
        tiny_train_config(max_steps=3, epochs=1, type_head_weight=0.5, queryner_repeat=2),
        data, tmp_path / "run", run_id="typed", progress=False,
    )  # fmt: skip
    assert result.metrics["steps"] == 3
    saved = adapter_weights(result.run_dir)
    assert saved and not any("type" in name for name in saved)


def test_selection_keeps_the_best_epoch_on_the_named_set(tmp_path: Path, student_tiny_data: StudentData) -> None:
    result = train_student(
        tiny_train_config(epochs=4, max_steps=None, learning_rate=1e-2, select_on="heldout"),
        student_tiny_data, tmp_path / "run", run_id="best", progress=False,
    )  # fmt: skip
    history = result.metrics["history"]
    assert len(history) == 4 and result.metrics["epochs_done"] == 4
    best = max(history, key=lambda point: point["heldout_f1"])  # the first of equals, as the trainer keeps it
    assert result.metrics["epoch_saved"] == best["epoch"]
    assert result.metrics["heldout"]["f1"] == best["heldout_f1"]
    assert result.metrics["selected_on"] == "heldout"
