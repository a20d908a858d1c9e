"""``qu student``: train the distilled student, export it as a new qu_student version, benchmark it on Triton."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from services.cli.context import err_console, print_json, reported_errors, settings_from
from services.settings import Settings

app = typer.Typer(
    help="The distilled student: LoRA training, ONNX export to Triton, Triton benchmark.", no_args_is_help=True
)
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object (reports go to stderr).")]


def _say(message: str) -> None:
    err_console.print(message)


@app.command()
def train(
    ctx: typer.Context,
    curriculum: Annotated[
        Path | None,
        typer.Option(help="Teacher curriculum (root, run or part) or gold JSON lines; default STATE_DIR/curriculum."),
    ] = None,
    no_curriculum: Annotated[bool, typer.Option("--no-curriculum", help="Train without a curriculum.")] = False,
    queryner: Annotated[
        Path | None, typer.Option(help="QueryNER directory (train.json, validation.json); default from settings.")
    ] = None,
    no_queryner: Annotated[
        bool, typer.Option("--no-queryner", help="Do not train on QueryNER train (validation is still scored).")
    ] = False,
    epochs: Annotated[int, typer.Option(min=1, help="Passes over the training examples.")] = 7,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many optimizer steps.")] = None,
    lora_r: Annotated[int, typer.Option(min=1, help="LoRA rank (alpha = 2 x r).")] = 16,
    batch_size: Annotated[int, typer.Option(min=1, help="Queries per optimizer step.")] = 32,
    learning_rate: Annotated[float, typer.Option(min=0, help="AdamW learning rate (LoRA and head).")] = 1e-3,
    seed: Annotated[int, typer.Option(help="Seed of initialization, dropout and shuffling.")] = 13,
    heldout_percent: Annotated[int, typer.Option(min=0, max=50, help="Curriculum share held out (by hash).")] = 10,
    queryner_repeat: Annotated[
        int, typer.Option(min=1, help="Times each QueryNER train example appears per epoch (weighs human labels).")
    ] = 2,
    ema_decay: Annotated[
        float,
        typer.Option(min=0, help="Score and save a moving average of the weights (per-step decay); 0 turns it off."),
    ] = 0.999,
    type_head_weight: Annotated[
        float,
        typer.Option(min=0, help="Loss weight of a training-only head for QueryNER's 16 span types (0: none)."),
    ] = 0.0,
    select_on: Annotated[
        str | None,
        typer.Option(help="Keep the epoch best on this held-out set (heldout or queryner_validation), not the last."),
    ] = None,
    device: Annotated[str, typer.Option(help="torch device to train on: cpu, or cuda where a GPU is.")] = "cpu",
    threads: Annotated[
        int, typer.Option(min=1, help="torch threads. 1 by default: on a shared CPU more threads spin and run slower.")
    ] = 1,
    out: Annotated[Path | None, typer.Option(help="Run directory; default STATE_DIR/student/runs/RUN_ID.")] = None,
    json: JsonOption = False,
) -> None:
    """Train the MiniLM BIO student with LoRA on the curriculum and QueryNER train; score both held-out sets."""
    settings = settings_from(ctx)
    with reported_errors():
        result = _train(
            settings,
            curriculum=None if no_curriculum else (curriculum or settings.resolved_curriculum_dir),
            queryner_dir=queryner or settings.resolved_student_queryner_dir,
            queryner_train=not no_queryner,
            epochs=epochs,
            max_steps=max_steps,
            lora_r=lora_r,
            batch_size=batch_size,
            learning_rate=learning_rate,
            seed=seed,
            heldout_percent=heldout_percent,
            queryner_repeat=queryner_repeat,
            ema_decay=ema_decay or None,
            type_head_weight=type_head_weight,
            select_on=select_on,
            device=device,
            threads=threads,
            out=out,
        )
    if json:
        print_json(result)
    else:
        for name in ("heldout", "queryner_validation"):
            if name in result["metrics"]:
                m = result["metrics"][name]
                typer.echo(f"{name:>20}: P {m['precision']:.3f}  R {m['recall']:.3f}  F1 {m['f1']:.3f}")
        typer.echo(f"run: {result['run_dir']}")


def _train(
    settings: Settings, *, queryner_dir: Path, queryner_train: bool, out: Path | None, **kw: Any
) -> dict[str, Any]:
    from services.student.training.data import (
        QUERYNER_TRAIN,
        QUERYNER_VALIDATION,
        StudentDataError,
        build_data,
        read_curriculum,
        read_queryner_split,
    )
    from services.student.training.trainer import TrainConfig, new_run_id, train_student

    curriculum: Path | None = kw.pop("curriculum")
    heldout_percent: int = kw.pop("heldout_percent")
    threads: int = kw.pop("threads")
    if curriculum is None and not queryner_train:
        raise StudentDataError("nothing to train on: --no-curriculum and --no-queryner together")
    curriculum_gold = read_curriculum(curriculum) if curriculum is not None else []
    has_queryner = (queryner_dir / QUERYNER_VALIDATION).is_file()
    train_gold = read_queryner_split(queryner_dir, QUERYNER_TRAIN) if queryner_train else []
    validation_gold = read_queryner_split(queryner_dir, QUERYNER_VALIDATION) if has_queryner else []
    config = TrainConfig(
        base_model_path=settings.resolved_embedding_model_path(),
        base_model_id=settings.embedding_model_id,
        curriculum=curriculum,
        queryner_dir=queryner_dir if has_queryner or queryner_train else None,
        queryner_train=queryner_train,
        heldout_percent=heldout_percent,
        torch_threads=threads,
        **kw,
    )
    data = build_data(curriculum_gold, train_gold, validation_gold, heldout_percent=heldout_percent)
    _say(f"student data: {data.stats}")
    run_id = new_run_id(config)
    run_dir = out or settings.state_dir / "student" / "runs" / run_id
    result = train_student(config, data, run_dir, run_id=run_id, report=_say)
    return {"run_id": result.run_id, "run_dir": str(result.run_dir), "metrics": result.metrics}


@app.command()
def export(
    ctx: typer.Context,
    run_dir: Annotated[Path, typer.Argument(help="A `qu student train` run directory.")],
    repository: Annotated[
        Path | None,
        typer.Option(help="Model repository to add the version to; default the stack's (STATE_DIR/stack/...)."),
    ] = None,
    precision: Annotated[
        str | None, typer.Option(help="fp32 or int8: the graphs the new version serves; default QU_STUDENT_PRECISION.")
    ] = None,
    embedder_precision: Annotated[
        str | None,
        typer.Option(help="fp32 or int8 query embedder for categories; default QU_STUDENT_EMBEDDER_PRECISION."),
    ] = None,
    load: Annotated[bool, typer.Option("--load", help="Ask the running Triton to load the new version.")] = False,
    json: JsonOption = False,
) -> None:
    """Merge the adapter, export ONNX fp32 + int8 (checked against torch), and install the next qu_student version."""
    settings = settings_from(ctx)
    chosen = precision or settings.student_precision
    embedder_precision = embedder_precision or settings.student_embedder_precision
    for name, value in (("--precision", chosen), ("--embedder-precision", embedder_precision)):
        if value not in ("fp32", "int8"):
            raise typer.BadParameter(f"{name} must be fp32 or int8, not {value!r}")
    with reported_errors():
        record = _export(
            settings,
            run_dir,
            repository,
            "int8" if chosen == "int8" else "fp32",
            "int8" if embedder_precision == "int8" else "fp32",
            load,
        )
    if json:
        print_json(record)
    else:
        typer.echo(f"{record['version']} -> {record['version_dir']}" + (" (loaded)" if record.get("loaded") else ""))


def _export(
    settings: Settings,
    run_dir: Path,
    repository: Path | None,
    precision: Literal["fp32", "int8"],
    embedder_precision: Literal["fp32", "int8"],
    load: bool,
) -> dict[str, Any]:
    from services.student.bench import ask
    from services.student.export.exporter import export_run
    from services.student.export.publish import STUDENT_MODEL, PublishError, load_model, served_repository

    record = export_run(
        run_dir,
        base_model_path=settings.resolved_embedding_model_path(),
        embedding_model_id=settings.embedding_model_id,
        reference_embedder=settings.embedder(),
        precision=precision,
        embedder_precision=embedder_precision,
        state_dir=settings.state_dir,
        repository=repository or served_repository(settings.state_dir),
        catalog_dir=settings.resolved_catalog_dir if settings.resolved_catalog_dir.exists() else None,
        report=_say,
    )
    if load:
        _say(f"export: asking Triton on {settings.triton_http_url} to load {STUDENT_MODEL} {record['triton_version']}")
        load_model(settings.triton_http_url, STUDENT_MODEL)
        answer = ask(settings.triton_grpc_url, STUDENT_MODEL, ["organic whole milk"])[0]
        if answer.version != record["version"]:
            raise PublishError(
                f"Triton loaded {STUDENT_MODEL} but answers as {answer.version!r}, not {record['version']}"
            )
        record["loaded"] = True
    return record


@app.command()
def bench(
    ctx: typer.Context,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests kept in flight in the concurrent phase.")] = 16,
    requests: Annotated[int, typer.Option(min=1, help="Requests per phase (one query each).")] = 2000,
    queries: Annotated[
        Path | None,
        typer.Option(help="Gold JSON lines whose queries are sent; default QueryNER validation (normalized)."),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Through Triton: p50/p99 per query at batch 1, then queries/s with concurrent single-query requests."""
    settings = settings_from(ctx)
    with reported_errors():
        result = _bench(settings, concurrency, requests, queries)
    if json:
        print_json(result)
    else:
        for key, value in result.items():
            typer.echo(f"{key:>26}: {value}")


def _bench(settings: Settings, concurrency: int, requests: int, queries_path: Path | None) -> dict[str, Any]:
    from services.gold import read_qu_labels
    from services.normalize import normalize_query
    from services.student.bench import bench_student
    from services.student.training.data import QUERYNER_VALIDATION, read_queryner_split

    if queries_path is not None:
        gold = read_qu_labels(queries_path)
    else:
        gold = read_queryner_split(settings.resolved_student_queryner_dir, QUERYNER_VALIDATION)
    texts = list(dict.fromkeys(t for t in (normalize_query(g.query) for g in gold) if t))
    _say(
        f"student bench: {requests} requests x 2 phases over {len(texts)} distinct queries, {settings.triton_grpc_url}"
    )
    return bench_student(
        settings.triton_grpc_url, settings.student_model, texts, requests=requests, concurrency=concurrency
    )
