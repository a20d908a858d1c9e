"""``qu demo``: generated search events through the embedded stack, annotations back, a summary line."""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated, Any

import orjson
import typer

from services.catalog.artifacts import CatalogNotFoundError, build_catalog, load_catalog, resolve_build, write_catalog
from services.catalog.demo import demo_files
from services.catalog.reader import read_catalog
from services.cli.context import err_console, reported_errors, settings_from
from services.kafka_clients import check_topic, consumer, producer, send_all
from services.kafka_security import PLAINTEXT
from services.normalize import normalize_query
from services.settings import Settings
from services.stack.embedded import EmbeddedStack
from services.topics import DEAD_LETTER, QUERY_ANNOTATIONS, SEARCH_EVENTS
from services.traffic import TrafficConfig, generate_traffic


def demo(
    ctx: typer.Context,
    events: Annotated[int, typer.Option(min=1, max=100_000, help="Search events to stream.")] = 300,
    seed: Annotated[int, typer.Option(help="Traffic seed.")] = 1,
    rate: Annotated[float, typer.Option(min=0, help="Events per second (0: all at once).")] = 100,
    show: Annotated[int, typer.Option(min=0, help="Annotations to print.")] = 8,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for every annotation.")] = 120,
) -> None:
    """Start the stack if needed, stream generated events through it, print annotations and a summary."""
    settings = settings_from(ctx)
    with reported_errors():
        _ensure_catalog(settings)
        stack = EmbeddedStack(settings, report=lambda message: err_console.print(message))
        started = not stack.status()["running"]
        if started:
            stack.up()
        try:
            _stream(settings, stack, events, seed, rate, show, timeout)
        finally:
            if started:
                err_console.print("stopped " + ", ".join(stack.down()))


def _ensure_catalog(settings: Settings) -> None:
    try:
        resolve_build(settings.resolved_catalog_dir)
    except CatalogNotFoundError:
        err_console.print("no catalog imported yet: importing the demo catalog")
        products = read_catalog(demo_files()[0]).products
        write_catalog(build_catalog(products, embedder=settings.embedder()), settings.resolved_catalog_dir)


def _stream(
    settings: Settings, stack: EmbeddedStack, count: int, seed: int, rate: float, show: int, timeout: float
) -> None:
    bootstrap = stack.endpoints()["kafka"]
    traffic = generate_traffic(load_catalog(settings.resolved_catalog_dir), TrafficConfig(events=count, seed=seed))
    wanted = {e.event_id for e in traffic.events}
    # The embedded stack's tansu broker, PLAINTEXT whatever QU_KAFKA_SECURITY_PROTOCOL says (it is the cluster's).
    reader = consumer(bootstrap, security=PLAINTEXT)
    assigned: list[bool] = []
    reader.subscribe([QUERY_ANNOTATIONS, DEAD_LETTER], on_assign=lambda *_: assigned.append(True))
    deadline = time.monotonic() + 30
    while not assigned and time.monotonic() < deadline:  # join before producing: nothing is missed
        reader.poll(0.2)
    client = producer(bootstrap, security=PLAINTEXT)
    check_topic(client, SEARCH_EVENTS, bootstrap)
    headers: list[tuple[str, str | bytes | None]] = [("content-type", b"application/json")]
    began = time.monotonic()
    send_all(
        client,
        SEARCH_EVENTS,
        ((normalize_query(e.query).encode(), orjson.dumps(e.to_json()), headers) for e in traffic.events),
        rate=rate,
    )
    answers: dict[str, dict[str, Any]] = {}
    letters = 0
    deadline = time.monotonic() + timeout
    try:
        while wanted - answers.keys() and time.monotonic() < deadline:
            for message in reader.consume(500, timeout=0.5):
                if message.error() is not None or message.value() is None:
                    continue
                if message.topic() == DEAD_LETTER:
                    letters += 1
                    continue
                annotation = orjson.loads(message.value() or b"{}")
                if annotation.get("event_id") in wanted:
                    answers.setdefault(annotation["event_id"], annotation)
    finally:
        reader.close()
    elapsed = time.monotonic() - began
    for annotation in list(answers.values())[:show]:
        tags = ", ".join(f"{t['role']}:{t['text']}={t['canonical']}" for t in annotation["tags"]) or "(no tags)"
        top = " > ".join(annotation["categories"][0]["path"]) if annotation["categories"] else "(no category)"
        typer.echo(f"{annotation['query']!r:45} {tags} | {top} | {annotation['source']}")
    sources = Counter(a["source"] for a in answers.values())
    degraded = sum(1 for a in answers.values() if a["degraded"])
    missing = len(wanted - answers.keys())
    typer.echo(
        f"summary: {len(traffic.events)} events -> {len(answers)} annotations in {elapsed:.1f} s "
        f"({', '.join(f'{k} {v}' for k, v in sorted(sources.items()))}; degraded {degraded}); "
        f"dead letters {letters}; unanswered {missing}"
    )
    if missing:
        raise typer.Exit(1)
