"""``qu produce`` / ``qu consume``: JSON lines into and out of Kafka topics."""

from __future__ import annotations

import base64
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import orjson
import typer
from rich.markup import escape

from services.cli.context import err_console, reported_errors, settings_from
from services.errors import InputError
from services.kafka_clients import Record, check_topic, consumer, producer, send_all
from services.kafka_security import KafkaSecurity
from services.normalize import normalize_query
from services.wire import UndecodableRecord, record_to_json

JOIN_TIMEOUT_S = 30.0


def _records(source: Path | None, skip_invalid: bool, skipped: list[int]) -> list[Record]:
    """Every line, validated before anything is sent: a bad line stops the command with nothing produced."""
    return list(_parse_lines(source, skip_invalid, skipped))


def _parse_lines(source: Path | None, skip_invalid: bool, skipped: list[int]) -> Iterator[Record]:
    name = str(source) if source else "<stdin>"
    handle = source.open("rb") if source else sys.stdin.buffer
    headers: list[tuple[str, str | bytes | None]] = [("content-type", b"application/json")]
    try:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
                if not isinstance(data, dict):
                    raise InputError(name, "expected one JSON object per line", row=number)
            except (orjson.JSONDecodeError, InputError) as err:
                if not skip_invalid:
                    raise InputError(name, f"not a JSON object ({err})", row=number) from err
                skipped.append(number)
                continue
            query = data.get("query")
            key = normalize_query(query).encode() if isinstance(query, str) and query.strip() else None
            yield key, orjson.dumps(data), headers
    finally:
        if source:
            handle.close()


def produce(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic to produce to, e.g. qu.search-events.v1.")],
    file: Annotated[Path | None, typer.Argument(help="JSON lines file; default standard input.")] = None,
    rate: Annotated[float, typer.Option(min=0, help="Records per second (0: as fast as possible).")] = 0,
    skip_invalid: Annotated[bool, typer.Option(help="Skip lines that are not JSON objects (reported).")] = False,
) -> None:
    """Produce JSON lines to TOPIC, keyed by the normalized query when a line has one."""
    settings = settings_from(ctx)
    skipped: list[int] = []
    with reported_errors():
        records = _records(file, skip_invalid, skipped)
        client = producer(settings.kafka_bootstrap, security=KafkaSecurity.from_settings(settings))
        check_topic(client, topic, settings.kafka_bootstrap)
        sent = send_all(client, topic, records, rate=rate)
    err_console.print(f"produced {sent} records to {topic}" + (f"; skipped lines {skipped[:20]}" if skipped else ""))


def consume(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Topic to read, e.g. qu.query-annotations.v1.")],
    max_records: Annotated[int, typer.Option("--max", min=1, help="Stop after this many records.")] = 1_000_000,
    idle_timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Stop after this many idle seconds.")] = 5,
    group: Annotated[str | None, typer.Option(help="Consumer group (commits offsets); default a fresh one.")] = None,
    from_beginning: Annotated[bool, typer.Option(help="Start at the earliest offset for a new group.")] = True,
    value_only: Annotated[
        bool,
        typer.Option(
            help="Print only each record's decoded value (a search event's own JSON: the log `qu teacher run --log` "
            "reads); a record that does not decode is reported on stderr instead."
        ),
    ] = False,
) -> None:
    """Print TOPIC's records as JSON lines (protobuf values decoded) until --max or --timeout.

    A value that is not the topic's message is printed as ``value_base64`` with an ``error``, and read past
    (with --value-only it is named on stderr and counted in the summary line).
    """
    settings = settings_from(ctx)
    with reported_errors():
        reader = consumer(
            settings.kafka_bootstrap,
            group,
            from_beginning=from_beginning,
            security=KafkaSecurity.from_settings(settings),
        )
    assigned = False
    # The idle clock starts once partitions are assigned: joining a group takes seconds on its own.
    last = time.monotonic() + JOIN_TIMEOUT_S

    def on_assign(_consumer: object, _partitions: object) -> None:
        nonlocal assigned, last
        assigned, last = True, time.monotonic()

    reader.subscribe([topic], on_assign=on_assign)
    count = undecodable = 0
    out = sys.stdout.buffer
    try:
        while count < max_records and time.monotonic() - last < idle_timeout:
            for message in reader.consume(num_messages=min(500, max_records - count), timeout=0.2):
                if message.error() is not None:
                    err_console.print(f"[red]error[/] {message.error()}")
                    continue
                record = {
                    "topic": message.topic(),
                    "partition": message.partition(),
                    "offset": message.offset(),
                    "key": (message.key() or b"").decode("utf-8", "replace"),
                }
                try:
                    record["value"] = record_to_json(message.topic() or topic, message.value(), message.headers())
                except UndecodableRecord as err:
                    # Printed raw and read past: one bad record must not stop the reader, nor (with --group)
                    # every later run at the same offset.
                    where = f"{message.topic()}[{message.partition()}]@{message.offset()}"
                    undecodable += 1
                    if value_only:
                        err_console.print(f"[red]error[/] {escape(where)}: {escape(str(err))}; not printed")
                        count += 1
                        last = time.monotonic()
                        continue
                    err_console.print(f"[red]error[/] {escape(where)}: {escape(str(err))}; printed as value_base64")
                    record["value"] = None
                    record["value_base64"] = base64.b64encode(message.value() or b"").decode("ascii")
                    record["error"] = str(err)
                out.write(orjson.dumps(record["value"] if value_only else record) + b"\n")
                count += 1
                last = time.monotonic()
            out.flush()
        if group and count:
            reader.commit(asynchronous=False)
    finally:
        reader.close()
    if not assigned:
        err_console.print(f"[red]no partitions of {topic} were assigned within {JOIN_TIMEOUT_S:.0f} s[/]")
    err_console.print(
        f"read {count} records from {topic}" + (f"; {undecodable} could not be decoded" if undecodable else "")
    )
