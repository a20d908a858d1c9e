"""``qu traffic``: generate search events, the conversions after them and their labels."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from services.catalog.artifacts import load_catalog
from services.cli.context import err_console, print_json, reported_errors, settings_from
from services.kafka_security import KafkaSecurity
from services.traffic import TrafficConfig, generate_traffic, traffic_shape
from services.traffic.output import TrafficFiles, companion_paths, produce_events, write_traffic


def traffic(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(min=1, help="Number of search events.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same traffic.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Events JSON lines; labels and conversions go beside it.")] = None,
    topic: Annotated[str | None, typer.Option(help="Produce the events to this Kafka topic instead.")] = None,
    rate: Annotated[float, typer.Option(min=0, help="Events per second to the topic (0: as fast as possible).")] = 0,
    catalog: Annotated[Path | None, typer.Option(help="Catalog directory; default STATE_DIR/catalog.")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print the traffic's shape as JSON.")] = False,
) -> None:
    """Generate search traffic grounded in the catalog, deterministic for a seed."""
    settings = settings_from(ctx)
    if (out is None) == (topic is None):
        raise typer.BadParameter("give exactly one of --out FILE or --topic TOPIC")
    with reported_errors():
        loaded = load_catalog(catalog or settings.resolved_catalog_dir)
        generated = generate_traffic(loaded, TrafficConfig(events=events, seed=seed))
        if out is not None:
            files = companion_paths(out)
        else:
            stem = settings.state_dir / "traffic" / f"{topic}-seed{seed}"
            beside = companion_paths(stem.with_suffix(".jsonl"))
            files = TrafficFiles(None, beside.labels, beside.conversions)
        write_traffic(generated, files)
        if topic is not None:
            with tqdm(total=len(generated.events), desc=f"producing to {topic}", unit="ev", disable=None) as bar:
                produce_events(
                    generated,
                    topic,
                    settings.kafka_bootstrap,
                    rate=rate,
                    progress=lambda n: bar.update(n - bar.n),
                    security=KafkaSecurity.from_settings(settings),
                )
        shape = traffic_shape(e.query for e in generated.events)
        summary = {
            **shape.to_json(),
            "seed": seed,
            "conversions": len(generated.conversions),
            "sessions": len({e.session_id for e in generated.events}),
            "users": len({e.user_id for e in generated.events}),
            "events_file": str(files.events) if files.events else None,
            "topic": topic,
            "labels_file": str(files.labels),
            "conversions_file": str(files.conversions),
        }
    if json:
        print_json(summary)
    else:
        err_console.print(
            f"{shape.events} events ({summary['sessions']} sessions, {summary['users']} users), "
            f"{summary['conversions']} conversions; {shape.distinct_queries} distinct queries; "
            f"top 1,000 queries make {shape.top_1000_share:.1%} of events; "
            f"{shape.singleton_share:.1%} of distinct queries appear once"
        )
        err_console.print("most frequent: " + ", ".join(f"{q} ({n})" for q, n in shape.top_queries))
        err_console.print(
            f"labels: {files.labels}  conversions: {files.conversions}"
            + (f"  events: {files.events}" if files.events else f"  topic: {topic}")
        )
