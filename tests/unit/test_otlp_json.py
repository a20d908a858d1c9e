"""The trace store's OTLP/JSON side: what Triton 2.51's exporter posts (a body it sent, kept in
tests/unit/data/triton_otlp_traces.json) decodes into spans with their ids, parents and service, and the
receiver answers a bad body with a 400 that says what was wrong."""

from __future__ import annotations

import asyncio
import gzip
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from services.stack.ports import free_port
from services.telemetry.otlp_json import InvalidOtlpJson, decode_trace_request, spans_with_service
from services.telemetry.span_store import SpanFiles, from_otlp, json_receiver, read_spans

TRITON_BODY = (Path(__file__).parent / "data" / "triton_otlp_traces.json").read_bytes()
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"  # the gRPC client span whose traceparent Triton received


def test_tritons_spans_decode_with_hex_ids_parents_and_its_service() -> None:
    spans = {s.name: s for s in map(from_otlp, spans_with_service(decode_trace_request(TRITON_BODY)))}
    assert set(spans) == {"InferRequest", "qu_student", "compute"}
    assert {s.trace_id for s in spans.values()} == {TRACE_ID}
    # request -> model (its QUEUE_START event) -> compute, under the client's span
    assert spans["InferRequest"].parent_span_id == CLIENT_SPAN
    assert spans["qu_student"].parent_span_id == spans["InferRequest"].span_id
    assert spans["compute"].parent_span_id == spans["qu_student"].span_id
    assert {s.service for s in spans.values()} == {"qu-triton"}
    assert spans["qu_student"].kind == "SERVER"
    assert spans["qu_student"].attributes["triton.model_name"] == "qu_student"
    assert spans["qu_student"].attributes["triton.model_version"] == 1  # int64 written as a JSON string
    assert "QUEUE_START" in [e["name"] for e in spans["qu_student"].events]
    assert spans["compute"].start_ns == 1796539638820887993  # nanoseconds kept exactly, not as a float


def test_a_spans_own_service_name_is_kept() -> None:
    body = json.loads(TRITON_BODY)
    body["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = [
        {"key": "service.name", "value": {"stringValue": "mine"}}
    ]
    spans = list(spans_with_service(decode_trace_request(json.dumps(body).encode())))
    assert [kv.value.string_value for kv in spans[0].attributes if kv.key == "service.name"] == ["mine"]


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "a JSON list"),
        (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "xyz"}]}]}]}', "$.resourceSpans[0]"),
        (b'{"resourceSpans": "many"}', "ExportTraceServiceRequest"),
    ],
)
def test_a_bad_body_is_an_error_naming_the_fault(body: bytes, says: str) -> None:
    with pytest.raises(InvalidOtlpJson, match=says.replace("[", r"\[").replace("$", r"\$")):
        decode_trace_request(body)


def post(url: str, body: bytes, **headers: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", **headers})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_receiver_keeps_posted_spans_and_refuses_bad_bodies_over_http(tmp_path: Path) -> None:
    files = SpanFiles(tmp_path)
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1/traces"

    async def scenario() -> list[tuple[int, dict[str, object]]]:
        runner = web.AppRunner(json_receiver(files))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            return [
                await asyncio.to_thread(post, url, TRITON_BODY),
                await asyncio.to_thread(post, url, gzip.compress(TRITON_BODY), **{"Content-Encoding": "gzip"}),
                await asyncio.to_thread(post, url, b"{not json"),
            ]
        finally:
            await runner.cleanup()

    plain, gzipped, bad = asyncio.run(scenario())
    files.close()
    assert plain == (200, {}) and gzipped == (200, {})
    assert bad[0] == 400 and "not JSON" in str(bad[1]["message"])
    kept = list(read_spans(tmp_path))
    assert len(kept) == 6 and {s.trace_id for s in kept} == {TRACE_ID}
