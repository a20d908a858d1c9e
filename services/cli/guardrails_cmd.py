"""``qu guardrails``: calibrate the guardrails' thresholds on labelled data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from services.catalog.artifacts import load_catalog
from services.cli.context import err_console, print_json, reported_errors, settings_from
from services.gold import read_qu_labels
from services.guardrails import GuardrailThresholds
from services.guardrails.calibration import CalibrationReport, NegativeSource, OperatingPoint, calibrate

app = typer.Typer(help="The guardrails' thresholds.", no_args_is_help=True)


@app.command("calibrate")
def calibrate_cmd(
    ctx: typer.Context,
    labels: Annotated[Path, typer.Option(help="Gold labels (JSON lines), e.g. the *.labels.jsonl `qu traffic` wrote.")],
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    target_precision: Annotated[
        float | None,
        typer.Option(min=0.0, max=1.0, help="Choose the best recall reaching this precision, not the best F1."),
    ] = None,
    top_k: Annotated[int, typer.Option(min=2, help="Candidate category paths per query.")] = 5,
    negatives: Annotated[
        str,
        typer.Option(help="Negative paths: 'nearest' (other top-K paths) or 'other-department' (top-K outside it)."),
    ] = "nearest",
    seed: Annotated[int, typer.Option(help="Seed for drawing the negative rewrite pairs.")] = 0,
) -> None:
    """Choose category_min_similarity, rewrite_min_similarity and substitute_category_level.

    Categories: the traffic labels' gold path of each query is a positive, the other candidate
    paths are negatives. Rewrites: the catalog's Open Food Facts terms (synonyms and broader terms
    are positives, terms of other departments negatives; sibling terms are the substitutes).
    Deterministic: the same catalog, labels and options give the same figures.
    """
    settings = settings_from(ctx)
    with reported_errors():
        if negatives not in ("nearest", "other-department"):
            raise typer.BadParameter("--negatives is 'nearest' or 'other-department'")
        source: NegativeSource = "nearest" if negatives == "nearest" else "other-department"
        catalog = load_catalog(settings.resolved_catalog_dir)
        gold = read_qu_labels(labels)
        report = calibrate(
            catalog,
            settings.embedder(),
            gold,
            top_k=top_k,
            negatives=source,
            target_precision=target_precision,
            seed=seed,
            base=GuardrailThresholds.from_settings(settings),
        )
        if json:
            print_json({"labels": str(labels), **report.to_json()})
        else:
            _print(report)


def _row(table: Table, name: str, point: OperatingPoint, note: str = "") -> None:
    table.add_row(
        name,
        f"{point.threshold:g}",
        f"{point.precision:.3f}",
        f"{point.recall:.3f}",
        f"{point.f1:.3f}",
        f"{point.positives}/{point.negatives}",
        note,
    )


def _print(report: CalibrationReport) -> None:
    goal = f"precision >= {report.target_precision}" if report.target_precision is not None else "best F1"
    table = Table(title=f"guardrail thresholds ({goal}, {report.model_id})")
    for column in ("setting", "threshold", "precision", "recall", "F1", "pos/neg", "note"):
        table.add_column(column)
    missed = "" if report.category_reached else "target not reached"
    _row(
        table,
        "category_min_similarity",
        report.category,
        f"{report.category_queries} queries, top-{report.top_k} {report.negatives}; {missed}".rstrip("; "),
    )
    missed = "" if report.rewrite_reached else "target not reached"
    _row(table, "rewrite_min_similarity", report.rewrite, f"{report.rewrite_terms} terms {missed}".strip())
    _row(table, "  substitutes at it", report.substitutes_at_threshold, "sibling terms")
    for figures in report.levels:
        chosen = " (chosen)" if figures.level == report.substitute_level else ""
        _row(table, f"substitute level={figures.level}", figures.point, f"pass/fail{chosen}")
    err_console.print(table)
    curves = Table(title="precision / recall by threshold (category | rewrite)")
    for column in ("threshold", "cat P", "cat R", "rw P", "rw R"):
        curves.add_column(column)
    for c, r in zip(report.category_curve, report.rewrite_curve, strict=True):
        curves.add_row(
            f"{c.threshold:.2f}", f"{c.precision:.3f}", f"{c.recall:.3f}", f"{r.precision:.3f}", f"{r.recall:.3f}"
        )
    err_console.print(curves)
    for line in report.settings_lines():
        typer.echo(line)
