"""``qu student train`` and ``qu student export`` from the command line: options reach the run, errors are one line."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from services.gold.qu_labels import iter_qu_labels
from services.student.training.trainer import TrainResult
from tests.conftest import Cli
from tests.fixtures.student import tiny_gold

pytestmark = [pytest.mark.slow]


def write_labels(path: Path) -> Path:
    rows = [{"query": g.query, "spans": [t.to_json() for t in g.spans]} for g in tiny_gold()]
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    assert len(list(iter_qu_labels(path))) == len(rows)
    return path


def test_train_writes_a_run_from_a_curriculum_file(cli: Cli, tmp_path: Path) -> None:
    labels = write_labels(tmp_path / "labels.jsonl")
    out = tmp_path / "run"
    result = cli(
        "student", "train", "--curriculum", labels, "--no-queryner", "--queryner", tmp_path / "no-queryner",
        "--epochs", "1", "--max-steps", "2", "--lora-r", "2", "--batch-size", "4", "--seed", "3", "--out", out,
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert report["run_dir"] == str(out)
    assert report["metrics"]["steps"] == 2
    assert "heldout" in report["metrics"] and "queryner_validation" not in report["metrics"]
    config = orjson.loads((out / "config.json").read_bytes())
    assert (config["lora_r"], config["seed"], config["curriculum"], config["queryner_train"]) == (
        2,
        3,
        str(labels),
        False,
    )
    assert (out / "adapter" / "adapter_model.safetensors").is_file()


def test_train_without_any_data_says_so(cli: Cli) -> None:
    result = cli("student", "train", "--no-curriculum", "--no-queryner")
    assert result.exit_code == 1
    assert "nothing to train on" in result.stderr


def test_a_missing_curriculum_is_named(cli: Cli, state_dir: Path) -> None:
    result = cli("student", "train", "--no-queryner")
    assert result.exit_code == 1
    assert str(state_dir / "curriculum") in result.stderr and "--no-curriculum" in result.stderr


def test_export_refuses_a_directory_that_is_not_a_run(cli: Cli, tmp_path: Path) -> None:
    result = cli("student", "export", tmp_path)
    assert result.exit_code == 1
    assert "is not a student run" in result.stderr


def test_export_names_a_missing_model_repository(cli: Cli, student_run: TrainResult, state_dir: Path) -> None:
    result = cli("student", "export", student_run.run_dir)
    assert result.exit_code == 1
    assert str(state_dir / "stack" / "model_repository" / "qu_student") in result.stderr


def test_the_command_defaults_are_the_trainer_defaults() -> None:
    # One shipped recipe: `qu student train` with no options trains what TrainConfig describes.
    import dataclasses
    import inspect

    from services.cli.student_cmd import train
    from services.student.training.trainer import TrainConfig

    options = inspect.signature(train).parameters
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    shared = ["epochs", "batch_size", "learning_rate", "lora_r", "seed", "heldout_percent", "queryner_repeat"]
    assert {name: options[name].default for name in shared} == {name: fields[name] for name in shared}
    assert options["ema_decay"].default == fields["ema_decay"]
    assert options["type_head_weight"].default == fields["type_head_weight"]
