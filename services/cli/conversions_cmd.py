"""``qu conversions``: build the per-query conversion history the teacher and re-ranker read."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from services.catalog.artifacts import load_catalog
from services.cli.context import err_console, print_json, reported_errors, settings_from
from services.conversions import ConversionHistory, build_conversions
from services.conversions.store import encode_query_conversions

app = typer.Typer(help="Conversion history: what shoppers bought after each query.", no_args_is_help=True)


@app.command("build")
def build(
    ctx: typer.Context,
    log: Annotated[
        Path, typer.Argument(help="Conversion log: JSON lines or Parquet (query, session_id, user_id, product_id, ts).")
    ],
    out: Annotated[Path | None, typer.Option(help="Output directory; default STATE_DIR/conversions.")] = None,
    catalog: Annotated[Path | None, typer.Option(help="Catalog directory; default STATE_DIR/catalog.")] = None,
    top_k: Annotated[int | None, typer.Option(min=1, help="Categories and brands kept per query.")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Skip bad records (reported) instead of stopping.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print the build report as JSON.")] = False,
) -> None:
    """Aggregate LOG into top-K converted categories and brands per normalized query, with recency."""
    settings = settings_from(ctx)
    with reported_errors():
        products = load_catalog(catalog or settings.resolved_catalog_dir).products
        report = build_conversions(
            log,
            products,
            out or settings.resolved_conversions_dir,
            top_k=top_k or settings.conversions_top_k,
            half_life_days=settings.conversions_half_life_days,
            skip_invalid=skip_invalid,
        )
    summary = {
        "source": report.source,
        "output_dir": str(report.output_dir),
        "records_read": report.records_read,
        "records_kept": report.records_kept,
        "records_skipped": report.records_skipped,
        "skipped_by_reason": report.skipped_by_reason,
        "queries": report.queries,
        "reference_ts": report.reference_ts.isoformat() if report.reference_ts else None,
    }
    if json:
        print_json(summary)
        return
    err_console.print(
        f"read {report.records_read} records from {report.source}: kept {report.records_kept}, "
        f"skipped {report.records_skipped}; {report.queries} queries -> {report.output_dir}"
    )
    for reason, count in sorted(report.skipped_by_reason.items()):
        err_console.print(f"  skipped {count}: {reason}")
    for skipped in report.skipped[:10]:
        err_console.print(f"  record {skipped.row}, field {skipped.field!r}: {skipped.reason}")


@app.command("show")
def show(
    ctx: typer.Context,
    query: Annotated[str, typer.Argument(help="A query, as typed; it is normalized first.")],
    history: Annotated[Path | None, typer.Option(help="History directory; default STATE_DIR/conversions.")] = None,
) -> None:
    """Print the conversion history of one query as JSON."""
    settings = settings_from(ctx)
    with reported_errors():
        loaded = ConversionHistory.load(history or settings.resolved_conversions_dir)
    found = loaded.get(query)
    if found is None:
        err_console.print(f"no conversions recorded for {query!r}")
        raise typer.Exit(1)
    print_json({"query": found.query, **encode_query_conversions(found)})
