"""Creating the engine's topics (with their partition counts) before anything consumes them."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from services.errors import QuError
from services.topics import TOPICS, TopicSpec


class TopicError(QuError):
    pass


def ensure_topics(bootstrap: str, specs: Iterable[TopicSpec] = TOPICS, *, timeout: float = 15.0) -> list[str]:
    """Create the topics that do not exist yet; returns the names created. Existing ones are left as they are."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as err:
        raise TopicError(f"cannot reach Kafka at {bootstrap} to create topics: {err}") from err
    wanted = [NewTopic(s.name, s.partitions, 1) for s in specs if s.name not in existing]
    if not wanted:
        return []
    created = []
    for name, future in admin.create_topics(wanted, request_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            created.append(name)
        except KafkaException as err:
            if (
                err.args
                and isinstance(err.args[0], KafkaError)
                and err.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS
            ):
                continue
            raise TopicError(f"could not create topic {name!r} on {bootstrap}: {err}") from err
    return created
