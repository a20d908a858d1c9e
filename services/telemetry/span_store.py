"""The embedded stack's trace store: an OTLP/HTTP receiver whose spans are kept as NDJSON under the state dir.

The receiver is OtelTap's (PyPI ``oteltap``: a native OTLP/HTTP protobuf server with a Python API), not
a protocol server of ours; this module only keeps what it receives, one span per line, in two files
that rotate at ``max_bytes`` each (``spans.ndjson`` and the previous ``spans.1.ndjson``), so a long run
keeps the latest spans and a bounded disk. ``qu trace`` reads them (:func:`read_spans`).

OTLP sends a span's resource beside it, and OtelTap hands over spans alone: the engine's processes put
their ``service.name`` on each span as well (services/telemetry/setup.py), and a span without one is
shown under the service of the span it is a child of.

Triton's exporter posts OTLP/JSON, which OtelTap does not decode: with ``--json-port`` the store also
listens there (aiohttp) and decodes the JSON with the official OTLP messages (services/telemetry/otlp_json.py),
keeping those spans in the same files with their resource's ``service.name``.

``python -m services.telemetry.span_store --port P [--json-port J] --dir D`` runs it until SIGTERM;
``qu up`` starts it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from services.telemetry.otlp_json import InvalidOtlpJson, decode_trace_request, spans_with_service

log = logging.getLogger("qu.span_store")

CURRENT = "spans.ndjson"
PREVIOUS = "spans.1.ndjson"
DEFAULT_MAX_BYTES = 64 * 2**20
READY = "qu: span store listening"
_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass(slots=True)
class StoredSpan:
    """One span as ``qu trace`` reads it back."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)  # (trace_id, span_id)
    status: str = "UNSET"
    status_message: str = ""

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6

    @property
    def service(self) -> str:
        return str(self.attributes.get("service.name", ""))

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "trace_id": self.trace_id,
                "span_id": self.span_id,
                "parent_span_id": self.parent_span_id,
                "name": self.name,
                "kind": self.kind,
                "start_ns": self.start_ns,
                "end_ns": self.end_ns,
                "attributes": self.attributes,
                "events": self.events,
                "links": self.links,
                "status": self.status,
                "status_message": self.status_message,
            }
        )

    @classmethod
    def from_json(cls, line: bytes) -> StoredSpan:
        d = orjson.loads(line)
        return cls(
            d["trace_id"],
            d["span_id"],
            d["parent_span_id"],
            d["name"],
            d["kind"],
            int(d["start_ns"]),
            int(d["end_ns"]),
            d.get("attributes") or {},
            d.get("events") or [],
            [(str(a), str(b)) for a, b in d.get("links") or []],
            d.get("status", "UNSET"),
            d.get("status_message", ""),
        )


def from_otlp(span: Any) -> StoredSpan:
    """A ``opentelemetry.proto.trace.v1.Span`` message as stored."""
    status = {0: "UNSET", 1: "OK", 2: "ERROR"}.get(span.status.code, "UNSET")
    return StoredSpan(
        span.trace_id.hex(),
        span.span_id.hex(),
        span.parent_span_id.hex(),
        span.name,
        _KINDS.get(span.kind, str(span.kind)),
        int(span.start_time_unix_nano),
        int(span.end_time_unix_nano),
        {kv.key: _value(kv.value) for kv in span.attributes},
        [
            {"name": e.name, "time_ns": int(e.time_unix_nano), **{kv.key: _value(kv.value) for kv in e.attributes}}
            for e in span.events
        ],
        [(link.trace_id.hex(), link.span_id.hex()) for link in span.links],
        status,
        span.status.message,
    )


def _value(value: Any) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, which)


class SpanFiles:
    """Appends spans to ``directory``'s current file and rotates it at ``max_bytes``."""

    def __init__(self, directory: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        if max_bytes < 1024:
            raise ValueError(f"max_bytes must be at least 1024, got {max_bytes}")
        self.directory = directory
        self.max_bytes = max_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._path = directory / CURRENT
        self._handle = self._path.open("ab")
        self._size = self._path.stat().st_size

    def append(self, span: StoredSpan) -> None:
        line = span.to_json() + b"\n"
        if self._size + len(line) > self.max_bytes and self._size:
            self._rotate()
        self._handle.write(line)
        self._size += len(line)

    def flush(self) -> None:
        self._handle.flush()

    def _rotate(self) -> None:
        self._handle.close()
        self._path.replace(self.directory / PREVIOUS)
        self._handle = self._path.open("ab")
        self._size = 0

    def close(self) -> None:
        self._handle.close()


def read_spans(directory: Path) -> Iterator[StoredSpan]:
    """Every span kept, oldest file first; a line cut short by a write in progress is skipped."""
    for name in (PREVIOUS, CURRENT):
        path = directory / name
        if not path.exists():
            continue
        with path.open("rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    continue
                with contextlib.suppress(orjson.JSONDecodeError, KeyError, ValueError, TypeError):
                    yield StoredSpan.from_json(line)


def json_receiver(files: SpanFiles) -> web.Application:
    """The OTLP/JSON traces endpoint (``POST /v1/traces``): spans into ``files``; a bad body is a 400 naming why."""

    async def traces(request: web.Request) -> web.Response:
        body = await request.read()  # aiohttp has undone a gzip or deflate Content-Encoding
        try:
            decoded = decode_trace_request(body)
        except InvalidOtlpJson as e:
            log.warning("rejected an OTLP/JSON request from %s: %s", request.remote, e)
            return web.json_response({"code": 3, "message": str(e)}, status=400)
        for span in spans_with_service(decoded):
            files.append(from_otlp(span))
        return web.json_response({})  # an ExportTraceServiceResponse: everything accepted

    app = web.Application(client_max_size=16 * 2**20)
    app.router.add_post("/v1/traces", traces)
    return app


async def serve(port: int, directory: Path, max_bytes: int, stop: asyncio.Event, json_port: int | None = None) -> None:
    from oteltap import OtelTapHttpProtobufReceiver, OtelTapHttpProtobufReceiverSettings

    files = SpanFiles(directory, max_bytes)
    settings = OtelTapHttpProtobufReceiverSettings(http_port=port)
    json_runner: web.AppRunner | None = None
    try:
        if json_port is not None:
            json_runner = web.AppRunner(json_receiver(files), access_log=None)
            await json_runner.setup()
            await web.TCPSite(json_runner, "127.0.0.1", json_port).start()
        async with OtelTapHttpProtobufReceiver(settings) as receiver:

            async def keep() -> None:
                async for span in receiver.stream_traces():
                    files.append(from_otlp(span))

            async def flush() -> None:
                while True:  # a second at most between a span's arrival and `qu trace` seeing it
                    await asyncio.sleep(1.0)
                    files.flush()

            tasks = [asyncio.create_task(keep()), asyncio.create_task(flush())]
            await asyncio.sleep(0)  # subscribed before anyone is told to send
            also = f" (OTLP/JSON on 127.0.0.1:{json_port})" if json_port is not None else ""
            log.info("%s on 127.0.0.1:%d%s, keeping spans in %s", READY, port, also, directory)
            await stop.wait()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        if json_runner is not None:
            await json_runner.cleanup()
        files.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="the OTLP/HTTP port on 127.0.0.1")
    parser.add_argument("--json-port", type=int, help="also take OTLP/JSON (Triton's exporter) on this port")
    parser.add_argument("--dir", type=Path, required=True, help="where the span files are kept")
    parser.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES, help="size of each of the two files")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(args.port, args.dir, args.max_bytes, stop, args.json_port)

    asyncio.run(run())


if __name__ == "__main__":
    main()
