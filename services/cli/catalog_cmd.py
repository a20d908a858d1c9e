"""``qu catalog``: import a catalog file into the engine's artifacts; report on an imported catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import orjson
import typer

from services.catalog.artifacts import build_catalog, load_catalog, write_catalog
from services.catalog.demo import demo_files
from services.catalog.reader import read_catalog
from services.cli.context import err_console, print_json, reported_errors, settings_from
from services.errors import InputError

app = typer.Typer(help="Import and inspect the product catalog.", no_args_is_help=True)


def _read_terms(path: Path) -> dict[str, Any]:
    try:
        terms = orjson.loads(path.read_bytes())
    except FileNotFoundError as err:
        raise InputError(str(path), "no such file") from err
    except orjson.JSONDecodeError as err:
        raise InputError(str(path), f"not valid JSON ({err})") from err
    if not isinstance(terms, dict):
        raise InputError(str(path), "expected a JSON object of term -> {synonyms, broader}")
    return terms


@app.command("import")
def import_catalog(
    ctx: typer.Context,
    file: Annotated[Path | None, typer.Argument(help="A CSV or Parquet catalog (omit with --demo).")] = None,
    out: Annotated[Path | None, typer.Option(help="Catalog directory; default STATE_DIR/catalog.")] = None,
    skip_invalid: Annotated[bool, typer.Option(help="Skip bad rows (reported) instead of stopping.")] = False,
    terms: Annotated[Path | None, typer.Option(help="Category terms JSON (synonyms, broader terms).")] = None,
    demo: Annotated[bool, typer.Option(help="Import the demo catalog that ships with the engine.")] = False,
    json: Annotated[bool, typer.Option("--json", help="Print the import report as JSON.")] = False,
) -> None:
    """Validate FILE and build the taxonomy, lexicons, attribute vocabulary and embeddings."""
    settings = settings_from(ctx)
    with reported_errors():
        if demo:
            if file is not None:
                raise typer.BadParameter("give either FILE or --demo, not both")
            file, demo_terms = demo_files()
            terms = terms or demo_terms
        if file is None:
            raise typer.BadParameter("give a catalog FILE, or --demo")
        out_dir = out or settings.resolved_catalog_dir
        result = read_catalog(file, skip_invalid=skip_invalid)
        err_console.print(
            f"read {result.rows_read} rows from {file}: kept {len(result.products)}, skipped {len(result.skipped)}"
        )
        for reason, count in sorted(result.skipped_by_reason().items()):
            err_console.print(f"  skipped {count}: {reason}")
        for skipped in result.skipped[:10]:
            err_console.print(f"  row {skipped.row}, column {skipped.column!r}: {skipped.reason}")
        if not result.products:
            raise InputError(str(file), "every row was invalid; nothing to import")
        catalog = build_catalog(
            result.products,
            embedder=settings.embedder(),
            category_terms=_read_terms(terms) if terms else None,
            source=str(file),
            locale=settings.catalog_locale,
        )
        build = write_catalog(catalog, out_dir)
        report = {
            "source": str(file),
            "catalog_dir": str(out_dir),
            "build": build.name,
            "rows_read": result.rows_read,
            "rows_kept": len(result.products),
            "rows_skipped": len(result.skipped),
            "skipped_by_reason": result.skipped_by_reason(),
            "stats": catalog.stats(),
        }
        if json:
            print_json(report)
        else:
            stats = catalog.stats()
            err_console.print(
                f"imported into {build}: {stats['products']} products, {stats['brands']} brands, "
                f"{stats['categories']} categories ({stats['leaf_categories']} leaves, depth {stats['depth']}), "
                f"{stats['product_types']} product types, {stats['attributes']} attributes"
            )
            learnt = stats["learnt"].get("types", {})
            if learnt:
                err_console.print(
                    f"product types ({stats['locale']}, names read {learnt['convention']}): {learnt['types']} learnt "
                    f"({learnt['multi_word_types']} of several words) for {learnt['typed_products']} products; "
                    f"{learnt['untyped_products']} products untyped; rejected: "
                    + "; ".join(f"{n} {reason}" for reason, n in learnt["rejected"].items())
                )
            brands = stats["learnt"].get("brands", {})
            if brands:
                err_console.print(
                    f"brands: {brands['brands']} with {brands['aliases']} surface forms; forms refused: "
                    + ("; ".join(f"{n} {reason}" for reason, n in brands["rejected"].items()) or "none")
                )


@app.command("stats")
def stats(
    ctx: typer.Context,
    catalog: Annotated[Path | None, typer.Option(help="Catalog directory; default STATE_DIR/catalog.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Counts of an imported catalog: products, brands, categories, leaves, depth, lexicon sizes."""
    settings = settings_from(ctx)
    with reported_errors():
        loaded = load_catalog(catalog or settings.resolved_catalog_dir)
        numbers = loaded.stats()
    if json:
        print_json(numbers)
    else:
        for key, value in numbers.items():
            typer.echo(f"{key:>26}: {value}")
