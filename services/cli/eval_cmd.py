"""``qu eval``: quality figures against gold labels: SRL spans, categories, rewrites (JSON or a table)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from services.catalog.attributes import AttributeKind
from services.cli.context import err_console, print_json, reported_errors, settings_from
from services.conversions import ConversionHistory
from services.domain import Role
from services.errors import InputError
from services.evaluation import (
    CatalogRetriever,
    GoldFormat,
    PredictorEnv,
    RewriteScores,
    build_predictor,
    load_gold,
    predict_all,
    score_categories,
    score_spans_of,
)
from services.evaluation.errors import CLASSES as ERROR_CLASSES
from services.evaluation.errors import ErrorCounts, GoldSet, write_query_lines
from services.evaluation.predictors import Predictor
from services.evaluation.registry import predictor_names
from services.evaluation.run import ignored_labels, keep_attribute_kinds, parse_attribute_kinds
from services.gold import GoldQuery, parse_label_map

app = typer.Typer(
    help="Quality figures: SRL span P/R/F1, category accuracy, rewrite coverage and precision.", no_args_is_help=True
)
out_console = Console(highlight=False, soft_wrap=True)

ModelOption = Annotated[
    str,
    typer.Option(
        "--model",
        help=f"A predictor ({', '.join(predictor_names())}) or a Triton student version number (N or student:N).",
    ),
]
CatalogOption = Annotated[Path | None, typer.Option(help="Catalog directory; default STATE_DIR/catalog.")]
LimitOption = Annotated[int | None, typer.Option(min=1, help="Score only the first N gold queries of each file.")]
BatchOption = Annotated[int, typer.Option(min=1, help="Queries per predictor call.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
ErrorsOption = Annotated[
    Path | None,
    typer.Option(
        help="Also write each query the model got wrong as a JSON line: its gold set, gold, predicted, and each "
        "error's class (missed, spurious, boundary, role, boundary+role)."
    ),
]
PredictionsOption = Annotated[
    Path | None,
    typer.Option(
        help="Also write every gold query as a JSON line (written whole, then renamed): the query, its gold and "
        "predicted spans (role, start, end, text) and each error with its class, as --errors writes them.",
    ),
]
LabelMapOption = Annotated[
    str | None,
    typer.Option(
        help="With --format spans (or --spans): the gold set's labels as roles, e.g. "
        "TYPE=product,BRAND=brand,VOLUME=attribute; labels not named are ignored (read as O) and counted "
        "as ignored_labels.",
    ),
]


def _label_map(text: str | None, option: str = "--label-map") -> dict[str, Role] | None:
    if text is None:
        return None
    try:
        return parse_label_map(text)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint=option) from err


GuardrailsOption = Annotated[
    bool,
    typer.Option(
        "--guardrails/--no-guardrails",
        help="Check answers with the catalog guardrails, as the engine does before publishing; "
        "--no-guardrails scores the model's raw answer (general, non-grocery gold such as QueryNER).",
    ),
]


async def _predict(predictor: Predictor, gold: list[GoldQuery], batch_size: int, what: str) -> tuple[list[Any], float]:
    started = time.perf_counter()
    with tqdm(total=len(gold), desc=f"{predictor.name} on {what}", unit="q", disable=None) as bar:
        answers = await predict_all(predictor, [g.query for g in gold], batch_size=batch_size, progress=bar.update)
    return answers, time.perf_counter() - started


def _version(answers: list[Any]) -> str:
    return next((a.version for a in answers if a.version), "")


def _srl_table(title: str, result: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("role", "precision", "recall", "F1", "tp", "fp", "fn"):
        table.add_column(column, justify="left" if column == "role" else "right")
    for role, row in result["per_role"].items():
        table.add_row(role, *_figures(row))
    counts = result["counts"]
    table.add_row("micro", *_figures({**result, **counts}), style="bold")
    for kind, row in result.get("by_kind", {}).items():
        table.add_row(f"  kind {kind}", *_figures(row), style="dim")
    return table


def _figures(row: dict[str, Any]) -> list[str]:
    return [
        f"{row['precision']:.3f}",
        f"{row['recall']:.3f}",
        f"{row['f1']:.3f}",
        *(str(row[k]) for k in ("tp", "fp", "fn")),
    ]


@app.command("srl")
def srl(
    ctx: typer.Context,
    gold: Annotated[
        Path,
        typer.Option(help="Gold file: QueryNER split JSON, qu labels JSON lines, or character-span BIO JSON lines."),
    ],
    gold_format: Annotated[
        GoldFormat,
        typer.Option(
            "--format",
            help='How the gold file is written: queryner, qu, or spans ({"text", "labels": [[start, end, '
            '"B-X"], ...]} per line; needs --label-map).',
        ),
    ],
    label_map: LabelMapOption = None,
    gold_attribute_kinds: Annotated[
        str | None,
        typer.Option(
            help="The attribute kinds the gold set labels (e.g. size for a set that labels only volumes and "
            "percentages); predicted attributes of other kinds (by the catalog's vocabulary) are left out of "
            "the score and counted as left_out_attributes."
        ),
    ] = None,
    model: ModelOption = "lexicon",
    catalog: CatalogOption = None,
    limit: LimitOption = None,
    batch_size: BatchOption = 64,
    guardrails: GuardrailsOption = True,
    errors: ErrorsOption = None,
    predictions: PredictionsOption = None,
    json: JsonOption = False,
) -> None:
    """Span precision, recall and F1 per role and micro-averaged (exact start, end and role), and each
    error class counted per role."""
    settings = settings_from(ctx)
    roles = _label_map(label_map)
    if (gold_format is GoldFormat.SPANS) != (roles is not None):
        raise typer.BadParameter("--label-map goes with --format spans, and --format spans needs it")
    try:
        kinds = parse_attribute_kinds(gold_attribute_kinds) if gold_attribute_kinds is not None else None
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--gold-attribute-kinds") from None
    with reported_errors():
        gold_queries = load_gold(gold, gold_format, limit=limit, label_map=roles)
        env = PredictorEnv(settings, catalog, guardrails=guardrails)
        result = asyncio.run(_srl(env, model, gold_queries, batch_size, gold.name, errors, predictions, kinds))
    result = {"model": model, **result, "gold_file": str(gold), "format": gold_format.value, "guardrails": guardrails}
    if roles is not None:
        result["label_map"] = {label: role.value for label, role in roles.items()}
        result["ignored_labels"] = ignored_labels(gold_queries)
    if json:
        print_json(result)
        return
    out_console.print(_srl_table(f"SRL spans: {model} ({result['model_version']}) on {gold} (n={result['n']})", result))
    out_console.print(_error_table(f"Errors by class (n={result['n']})", result["error_classes"]))
    if result.get("ignored_labels"):
        out_console.print(f"ignored labels (spans): {result['ignored_labels']}")
    out_console.print(f"{result['seconds']:.1f} s")


async def _srl(
    env: PredictorEnv,
    model: str,
    gold: list[GoldQuery],
    batch_size: int,
    what: str,
    errors: Path | None = None,
    predictions: Path | None = None,
    attribute_kinds: frozenset[AttributeKind] | None = None,
) -> dict[str, Any]:
    predictor = build_predictor(model, env)
    try:
        answers, seconds = await _predict(predictor, gold, batch_size, what)
    finally:
        await predictor.close()
    left_out: dict[str, Any] = {}
    if attribute_kinds is not None:
        answers, counts = keep_attribute_kinds(answers, attribute_kinds, env.catalog.attributes)
        left_out = {"gold_attribute_kinds": sorted(k.value for k in attribute_kinds), "left_out_attributes": counts}
    result = {
        "model_version": _version(answers),
        **left_out,
        **score_spans_of(gold, answers).to_json(),
        "error_classes": _error_classes(ErrorCounts.of(gold, answers)),
        "seconds": round(seconds, 2),
    }
    result.update(_write_lines(errors, predictions, [(what, gold, answers)], single=what))
    return result


def _error_classes(counts: ErrorCounts) -> dict[str, Any]:
    summary = counts.to_json()
    return {key: summary[key] for key in ("wrong_queries", *ERROR_CLASSES, "per_role")}


def _write_lines(
    errors: Path | None, predictions: Path | None, sets: list[GoldSet], single: str | None = None
) -> dict[str, Any]:
    """``--errors`` and ``--predictions``: each file written, and what it holds (of ``single`` set, or per set)."""
    out: dict[str, Any] = {}
    for key, path, every in (("errors", errors, False), ("predictions", predictions, True)):
        if path is None:
            continue
        written = write_query_lines(path, sets, every=every)
        out[key] = {"file": str(path), **(written[single] if single is not None else written)}
    return out


def _error_table(title: str, classes: dict[str, Any]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("role")
    for name in ERROR_CLASSES:
        table.add_column(name, justify="right")
    for role, row in classes["per_role"].items():
        table.add_row(role, *(str(row[name]) for name in ERROR_CLASSES))
    table.add_row("all", *(str(classes[name]) for name in ERROR_CLASSES), style="bold")
    return table


@app.command("report")
def report(
    ctx: typer.Context,
    labels: Annotated[
        Path | None, typer.Option(help="The engine's labels (qu traffic writes EVENTS.labels.jsonl beside EVENTS).")
    ] = None,
    queryner: Annotated[Path | None, typer.Option(help="A QueryNER split file (validation.json).")] = None,
    spans: Annotated[
        Path | None, typer.Option(help="A character-span BIO JSON lines file (as `eval srl --format spans`).")
    ] = None,
    label_map: LabelMapOption = None,
    conversions: Annotated[
        Path | None,
        typer.Option(help="Conversion history directory (`qu conversions build`); default STATE_DIR/conversions."),
    ] = None,
    model: ModelOption = "lexicon",
    catalog: CatalogOption = None,
    limit: LimitOption = None,
    batch_size: BatchOption = 64,
    guardrails: GuardrailsOption = True,
    errors: ErrorsOption = None,
    predictions: PredictionsOption = None,
    json: JsonOption = False,
) -> None:
    """SRL on each gold set, category accuracy and rewrite coverage/precision on the labels, for one model."""
    settings = settings_from(ctx)
    if labels is None and queryner is None and spans is None:
        raise typer.BadParameter("give --labels FILE, --queryner FILE, --spans FILE or several")
    roles = _label_map(label_map)
    if (spans is None) != (roles is None):
        raise typer.BadParameter("--label-map goes with --spans, and --spans needs it")
    with reported_errors():
        label_gold = load_gold(labels, GoldFormat.QU, limit=limit) if labels is not None else None
        queryner_gold = load_gold(queryner, GoldFormat.QUERYNER, limit=limit) if queryner is not None else None
        spans_gold = load_gold(spans, GoldFormat.SPANS, limit=limit, label_map=roles) if spans is not None else None
        history: ConversionHistory | None = None
        history_dir = conversions or settings.resolved_conversions_dir
        if label_gold is not None:
            if conversions is not None and not conversions.is_dir():
                raise InputError(str(conversions), "not a conversion history directory: build one with "
                                 "`qu conversions build LOG --out DIR`")  # fmt: skip
            if history_dir.exists() or conversions is not None:
                history = ConversionHistory.load(history_dir)
            else:
                err_console.print(f"no conversion history in {history_dir}: rewrite precision is not measured")
        env = PredictorEnv(settings, catalog, guardrails=guardrails)
        result = asyncio.run(
            _report(env, model, label_gold, queryner_gold, history, batch_size, errors, spans_gold, predictions)
        )
    result["guardrails"] = guardrails
    if spans_gold is not None and roles is not None:
        result["srl"]["spans"]["label_map"] = {label: role.value for label, role in roles.items()}
        result["srl"]["spans"]["ignored_labels"] = ignored_labels(spans_gold)
    result["files"] = {
        "labels": str(labels) if labels else None,
        "queryner": str(queryner) if queryner else None,
        **({"spans": str(spans)} if spans else {}),
        "conversions": str(history_dir) if history is not None else None,
        "catalog": str(env.catalog_dir),
    }
    if json:
        print_json(result)
        return
    _print_report(result)


async def _report(
    env: PredictorEnv,
    model: str,
    label_gold: list[GoldQuery] | None,
    queryner_gold: list[GoldQuery] | None,
    history: ConversionHistory | None,
    batch_size: int,
    errors: Path | None = None,
    spans_gold: list[GoldQuery] | None = None,
    predictions: Path | None = None,
) -> dict[str, Any]:
    predictor = build_predictor(model, env)
    out: dict[str, Any] = {"model": model, "model_version": "", "srl": {}, "categories": None, "rewrites": None}
    answered: list[GoldSet] = []  # for --errors and --predictions
    try:
        if label_gold is not None:
            answers, seconds = await _predict(predictor, label_gold, batch_size, "labels")
            answered.append(("labels", label_gold, answers))
            out["model_version"] = _version(answers)
            out["srl"]["labels"] = _srl_of(label_gold, answers, seconds)
            out["categories"] = score_categories(label_gold, answers).to_json()
            rewrites = RewriteScores()
            if history is not None:
                retriever = CatalogRetriever(env.catalog.products)
                rewrites.add_all((g.query for g in label_gold), answers, retriever, history)
                out["rewrites"] = rewrites.to_json()
            else:
                rewrites.add_all((g.query for g in label_gold), answers, _NO_RETRIEVER, _NoHistory())
                out["rewrites"] = rewrites.to_json(judging=False)
        if queryner_gold is not None:
            answers, seconds = await _predict(predictor, queryner_gold, batch_size, "QueryNER")
            answered.append(("queryner", queryner_gold, answers))
            out["model_version"] = out["model_version"] or _version(answers)
            out["srl"]["queryner"] = _srl_of(queryner_gold, answers, seconds)
        if spans_gold is not None:
            answers, seconds = await _predict(predictor, spans_gold, batch_size, "spans")
            answered.append(("spans", spans_gold, answers))
            out["model_version"] = out["model_version"] or _version(answers)
            out["srl"]["spans"] = _srl_of(spans_gold, answers, seconds)
    finally:
        await predictor.close()
    out.update(_write_lines(errors, predictions, answered))
    return out


def _srl_of(gold: list[GoldQuery], answers: list[Any], seconds: float) -> dict[str, Any]:
    return {
        **score_spans_of(gold, answers).to_json(),
        "error_classes": _error_classes(ErrorCounts.of(gold, answers)),
        "seconds": round(seconds, 2),
    }


class _NoHistory:
    def get(self, query: str) -> None:
        return None


_NO_RETRIEVER = CatalogRetriever([])


def _print_report(result: dict[str, Any]) -> None:
    out_console.print(f"[bold]qu eval report[/]: {result['model']} ({result['model_version']})")
    for name, srl_result in result["srl"].items():
        out_console.print(_srl_table(f"SRL spans on {name} (n={srl_result['n']})", srl_result))
        out_console.print(_error_table(f"Errors by class on {name}", srl_result["error_classes"]))
    categories = result["categories"]
    if categories is not None:
        table = Table(title=f"Category accuracy on labels (n={categories['n']})", title_justify="left")
        for column in ("kind", "top-1", "top-3", "top-1 within gold", "n"):
            table.add_column(column, justify="left" if column == "kind" else "right")
        rows = [("all", categories)] + [(f"  {k}", v) for k, v in categories.get("by_kind", {}).items()]
        for label, row in rows:
            table.add_row(label, f"{row['top1']:.3f}", f"{row['top3']:.3f}", f"{row['top1_within']:.3f}", str(row["n"]))
        out_console.print(table)
    rewrites = result["rewrites"]
    if rewrites is not None:
        title = f"Rewrites on labels (n={rewrites['queries']}, {rewrites['queries_with_conversions']} with conversions)"
        table = Table(title=title, title_justify="left")
        for column in ("type", "coverage", "precision", "kept", "judged", "precise"):
            table.add_column(column, justify="left" if column == "type" else "right")
        for label, row in [*rewrites["per_type"].items(), ("any", rewrites["any"])]:
            precision = "-" if row["precision"] is None else f"{row['precision']:.3f}"
            table.add_row(
                label, f"{row['coverage']:.3f}", precision, str(row["kept"]), str(row["judged"]), str(row["precise"])
            )
        out_console.print(table)
