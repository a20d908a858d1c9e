"""OTLP/JSON trace requests decoded with the official OTLP protobuf messages.

Triton's OpenTelemetry exporter (opentelemetry-cpp 1.13 inside tritonserver 2.51) posts OTLP/HTTP as
JSON whatever ``OTEL_EXPORTER_OTLP_PROTOCOL`` says, and OtelTap, the trace store's receiver, decodes
protobuf only. The trace store therefore listens for JSON on a second port and decodes it here: not a
protocol of ours, the OTLP/JSON encoding is protobuf's JSON mapping of ``ExportTraceServiceRequest``
with two differences the specification names (trace and span ids are hex, not base64; enum fields
are integers), which :func:`decode_trace_request` undoes before protobuf's own parser reads it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import orjson
from google.protobuf.json_format import ParseDict, ParseError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

# Byte fields that OTLP/JSON writes as hex (the specification's exception to protobuf's base64).
_HEX_ID_FIELDS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})
SERVICE_NAME = "service.name"


class InvalidOtlpJson(ValueError):
    """A request body that is not an OTLP/JSON ExportTraceServiceRequest; the message says where."""


def decode_trace_request(body: bytes) -> ExportTraceServiceRequest:
    """The request ``body`` (OTLP/JSON) as the protobuf message; raises InvalidOtlpJson naming the fault."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise InvalidOtlpJson(f"the body is not JSON: {e}") from e
    if not isinstance(document, dict):
        raise InvalidOtlpJson(f"the body is a JSON {type(document).__name__}, not an ExportTraceServiceRequest object")
    try:
        return ParseDict(_ids_as_base64(document, "$"), ExportTraceServiceRequest(), ignore_unknown_fields=True)
    except ParseError as e:
        raise InvalidOtlpJson(f"not an OTLP ExportTraceServiceRequest: {e}") from e


def spans_with_service(request: ExportTraceServiceRequest) -> Iterator[Span]:
    """Each span of ``request``, with its resource's ``service.name`` copied onto the span's attributes.

    The trace store keeps spans without their resource (services/telemetry/span_store.py), so the span
    itself must say which process made it; a span that already names one keeps it."""
    for resource_spans in request.resource_spans:
        service = next(
            (kv.value.string_value for kv in resource_spans.resource.attributes if kv.key == SERVICE_NAME), ""
        )
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                if service and not any(kv.key == SERVICE_NAME for kv in span.attributes):
                    added = span.attributes.add()
                    added.key = SERVICE_NAME
                    added.value.string_value = service
                yield span


def _ids_as_base64(node: Any, where: str) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key in _HEX_ID_FIELDS and isinstance(value, str):
                out[key] = _hex_to_base64(value, f"{where}.{key}")
            else:
                out[key] = _ids_as_base64(value, f"{where}.{key}")
        return out
    if isinstance(node, list):
        return [_ids_as_base64(item, f"{where}[{i}]") for i, item in enumerate(node)]
    return node


def _hex_to_base64(value: str, where: str) -> str:
    try:
        raw = bytes.fromhex(value)
    except ValueError as e:
        raise InvalidOtlpJson(f"{where} is {value!r}, not a hex id (OTLP/JSON writes ids in hex)") from e
    return base64.b64encode(raw).decode("ascii")
