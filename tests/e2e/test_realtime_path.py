"""The real-time path end to end on the embedded stack: Kafka in, Faust, Redis, Triton, Kafka out.

Every test talks to the stack the way the search platform does: with a Kafka client that
is not the project's own (kafka-python), JSON in, annotations out. Failure tests stop and
restart real processes of the stack.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer
from qu.v1 import dead_letter_pb2

from services.cache import HeadTagStore, connect_head_tag_cache, publish_head_tags
from services.domain import Role, Tag, Understanding
from services.kafka_clients import producer as project_producer
from services.normalize import normalize_query
from services.stack.embedded import EmbeddedStack
from services.topics import DEAD_LETTER, QUERY_ANNOTATIONS, SEARCH_EVENTS

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


def bootstrap(stack: EmbeddedStack) -> str:
    return stack.endpoints()["kafka"]


def send_json(stack: EmbeddedStack, events: Iterable[dict[str, Any]], *, header: bool = False) -> None:
    client = KafkaProducer(bootstrap_servers=bootstrap(stack), value_serializer=lambda v: json.dumps(v).encode())
    headers = [("content-type", b"application/json")] if header else None
    for event in events:
        client.send(SEARCH_EVENTS, value=event, headers=headers)
    client.flush(30)
    client.close()


def send_raw(stack: EmbeddedStack, values: Iterable[tuple[bytes, list[tuple[str, bytes]] | None]]) -> None:
    client = KafkaProducer(bootstrap_servers=bootstrap(stack))
    for value, headers in values:
        client.send(SEARCH_EVENTS, value=value, headers=headers)
    client.flush(30)
    client.close()


def read_until(stack: EmbeddedStack, topic: str, done: Any, *, timeout: float = 90.0) -> list[Any]:
    """Records of ``topic`` (decoded by ``done``'s caller) until ``done(records)`` or the timeout."""
    reader = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap(stack),
        group_id=f"test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        consumer_timeout_ms=1000,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done(records):
            for message in reader:
                records.append(message)
                if done(records):
                    break
    finally:
        reader.close()
    return records


def annotations_for(stack: EmbeddedStack, event_ids: set[str], *, timeout: float = 90.0) -> dict[str, dict[str, Any]]:
    def seen(records: list[Any]) -> bool:
        return event_ids <= {json.loads(r.value)["event_id"] for r in records}

    found: dict[str, dict[str, Any]] = {}
    for record in read_until(stack, QUERY_ANNOTATIONS, seen, timeout=timeout):
        value = json.loads(record.value)
        if value["event_id"] in event_ids:
            found.setdefault(value["event_id"], value)
    return found


def events(queries: Iterable[str], prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{prefix}-{i}-{uuid.uuid4().hex[:6]}",
            "query": q,
            "user_id": "u1",
            "session_id": "s1",
            "ts": "2026-11-25T10:00:00Z",
        }
        for i, q in enumerate(queries)
    ]


def test_json_events_from_another_client_come_back_annotated(embedded_stack: EmbeddedStack) -> None:
    batch = events(["bread no gluten", "x large zip lock", "Organic Bananas", "2% reduced-fat chocolate milk"], "json")
    send_json(embedded_stack, batch[:2])
    send_json(embedded_stack, batch[2:], header=True)
    found = annotations_for(embedded_stack, {e["event_id"] for e in batch})
    assert set(found) == {e["event_id"] for e in batch}
    bread = found[batch[0]["event_id"]]
    assert bread["source"] == "student" and bread["normalized_query"] == "bread no gluten"
    assert {(t["role"], t["canonical"]) for t in bread["tags"]} >= {("product", "bread"), ("attribute", "gluten free")}
    bananas = found[batch[2]["event_id"]]
    assert [t["text"] for t in bananas["tags"]] == ["Organic", "Bananas"]  # offsets into the query as typed
    assert all(a["model_version"] and a["categories"] for a in found.values())


def test_malformed_events_are_dead_lettered_and_the_stream_goes_on(embedded_stack: EmbeddedStack) -> None:
    marker = uuid.uuid4().hex
    bad: list[tuple[bytes, list[tuple[str, bytes]] | None]] = [
        (b"{not json " + marker.encode(), None),
        (json.dumps({"event_id": f"empty-{marker}", "query": ""}).encode(), None),
        (json.dumps({"event_id": f"long-{marker}", "query": "a" * 600}).encode(), None),
        (b'{"event_id": "utf8-' + marker.encode() + b'", "query": "caf\xe9"}', None),
        (json.dumps({"event_id": f"ctrl-{marker}", "query": "milk\u0007"}).encode(), None),
        (b"\x0a\xff\xff" + marker.encode(), [("content-type", b"application/x-protobuf")]),
    ]
    good = events(["whole milk"], f"after-{marker}")
    send_raw(embedded_stack, bad)
    send_json(embedded_stack, good)

    def mine(records: list[Any]) -> list[dead_letter_pb2.DeadLetter]:
        letters = [dead_letter_pb2.DeadLetter.FromString(r.value) for r in records]
        return [letter for letter in letters if marker.encode() in letter.original]

    letters = mine(read_until(embedded_stack, DEAD_LETTER, lambda rs: len(mine(rs)) >= len(bad)))
    assert sorted(letter.reason for letter in letters) == sorted(
        ["invalid_json", "missing_query", "query_too_long", "invalid_utf8", "control_characters", "invalid_protobuf"]
    )
    assert all(letter.topic == SEARCH_EVENTS and letter.detail for letter in letters)
    assert {letter.original for letter in letters} == {value for value, _ in bad}  # byte for byte
    assert set(annotations_for(embedded_stack, {good[0]["event_id"]})) == {good[0]["event_id"]}


def publish_run(embedded_stack: EmbeddedStack, entries: dict[str, Understanding], version: str) -> str:
    run_id = f"run-{uuid.uuid4().hex[:8]}"
    publish_head_tags(
        project_producer(bootstrap(embedded_stack)), run_id, [(q, u, version) for q, u in entries.items()]
    )
    return run_id


async def active_run(embedded_stack: EmbeddedStack) -> str | None:
    password = embedded_stack.settings.embedded_redis_password()  # the embedded Redis refuses clients without it
    redis = connect_head_tag_cache(embedded_stack.endpoints()["redis"], password=password)
    try:
        return await HeadTagStore(redis).active_run()
    finally:
        await redis.aclose()


def wait_for_run(embedded_stack: EmbeddedStack, run_id: str, timeout: float = 60.0) -> None:
    import asyncio

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if asyncio.run(active_run(embedded_stack)) == run_id:
                return
        except Exception:  # Redis restarting: keep polling until the deadline
            pass
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} was not activated within {timeout} s")


def cached_grahams() -> dict[str, Understanding]:
    return {
        "honey maid grahams": Understanding(
            [Tag(Role.BRAND, 0, 10, "honey maid", "Honey Maid"), Tag(Role.PRODUCT, 11, 18, "grahams", "grahams")],
            [],
            [],
            "teacher-test",
        )
    }


def test_head_tags_from_the_teacher_topic_answer_from_the_cache(embedded_stack: EmbeddedStack) -> None:
    run_id = publish_run(embedded_stack, cached_grahams(), "teacher-test-1")
    wait_for_run(embedded_stack, run_id)
    batch = events(["Honey-Maid  Grahams"], "cache")
    send_json(embedded_stack, batch)
    annotation = annotations_for(embedded_stack, {batch[0]["event_id"]})[batch[0]["event_id"]]
    assert annotation["source"] == "cache" and annotation["model_version"] == "teacher-test-1"
    assert [t["text"] for t in annotation["tags"]] == ["Honey-Maid", "Grahams"]


def test_triton_down_gives_degraded_fallbacks_and_its_return_the_student(embedded_stack: EmbeddedStack) -> None:
    embedded_stack.stop("triton")
    try:
        down = events(["bread no gluten", "organic strawberries"], "triton-down")
        send_json(embedded_stack, down)
        found = annotations_for(embedded_stack, {e["event_id"] for e in down})
        assert {a["source"] for a in found.values()} == {"fallback"}
        assert all(a["degraded"] for a in found.values())
        assert any(t["canonical"] == "gluten free" for t in found[down[0]["event_id"]]["tags"])
    finally:
        embedded_stack.restart("triton")
    # The worker was not restarted: its client reconnects by itself. The first events after the
    # restart may still race the reconnect, so send one a second until the student answers (bounded).
    sources = []
    for _ in range(20):
        back = events(["bread no gluten"], "triton-back")
        send_json(embedded_stack, back)
        annotation = annotations_for(embedded_stack, {back[0]["event_id"]})[back[0]["event_id"]]
        sources.append(annotation["source"])
        if annotation["source"] == "student":
            assert not annotation["degraded"]
            break
        time.sleep(1)
    assert sources[-1] == "student", f"the student never answered again after Triton returned: {sources}"


def test_redis_down_sends_events_to_the_student_and_its_return_the_cache(embedded_stack: EmbeddedStack) -> None:
    embedded_stack.stop("redis")
    try:
        down = events(["honey maid grahams"], "redis-down")
        send_json(embedded_stack, down)
        annotation = annotations_for(embedded_stack, {down[0]["event_id"]})[down[0]["event_id"]]
        assert annotation["source"] == "student"
    finally:
        embedded_stack.restart("redis")
    # The embedded Redis keeps nothing across a restart: the next teacher run fills it again.
    run_id = publish_run(embedded_stack, cached_grahams(), "teacher-test-2")
    wait_for_run(embedded_stack, run_id)
    back = events(["honey maid grahams"], "redis-back")
    send_json(embedded_stack, back)
    annotation = annotations_for(embedded_stack, {back[0]["event_id"]})[back[0]["event_id"]]
    assert annotation["source"] == "cache" and annotation["model_version"] == "teacher-test-2"


def test_a_worker_killed_mid_stream_loses_no_event(embedded_stack: EmbeddedStack) -> None:
    batch = events([f"{q} {i}" for i in range(150) for q in ("milk", "bread", "eggs", "yogurt")], "kill")
    sender = threading.Thread(target=lambda: send_json_paced(embedded_stack, batch, per_second=400))
    sender.start()
    time.sleep(0.6)
    kept = embedded_stack.keeper_status("worker-0")
    assert kept is not None and kept.child_pid is not None
    os.kill(kept.child_pid, signal.SIGKILL)  # the worker itself: no shutdown, no final commit
    sender.join()
    # Its keeper starts it again, with no help: the new worker re-reads what the dead one had not committed.
    found = annotations_for(embedded_stack, {e["event_id"] for e in batch}, timeout=180)
    missing = {e["event_id"] for e in batch} - set(found)
    assert not missing, f"{len(missing)} of {len(batch)} events never got an annotation"
    assert {normalize_query(a["query"]) for a in found.values()} == {normalize_query(e["query"]) for e in batch}
    after = embedded_stack.keeper_status("worker-0")
    assert after is not None and after.restarts == kept.restarts + 1 and after.exits[-1]["code"] == -signal.SIGKILL


def send_json_paced(stack: EmbeddedStack, batch: list[dict[str, Any]], *, per_second: float) -> None:
    client = KafkaProducer(bootstrap_servers=bootstrap(stack), value_serializer=lambda v: json.dumps(v).encode())
    started = time.monotonic()
    for i, event in enumerate(batch):
        delay = started + i / per_second - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        client.send(SEARCH_EVENTS, value=event)
    client.flush(30)
    client.close()
