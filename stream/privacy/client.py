"""Submit a privacy request to tusk.privacy and wait for its result on tusk.privacy-results."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
from confluent_kafka import KafkaException, TopicPartition

from stream.kafka.clients import ensure_topics, offsets, poll_record, producer, reader
from stream.runtime.settings import Settings


def submit(settings: Settings, kind: str, identifier: str, timeout: float = 60.0,
           request_id: str | None = None) -> dict[str, Any] | None:
    """The result record, or None when none arrived within `timeout` seconds."""
    ensure_topics(settings)
    rid = request_id or f"req-{uuid.uuid4().hex}"
    topic = settings.topics.privacy_results
    consumer = reader(settings, "tusk-privacy-client-unused")
    try:
        ends = offsets(consumer, topic)
        consumer.assign([TopicPartition(topic, p, high) for p, (_low, high) in ends.items()])
        p = producer(settings)
        p.produce(settings.topics.privacy, key=rid.encode(),
                  value=orjson.dumps({"request_id": rid, "type": kind, "identifier": identifier}))
        if p.flush(15):
            raise RuntimeError("the request was not acknowledged by Kafka")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = poll_record(consumer, 0.5)
            except KafkaException as e:
                raise RuntimeError(str(e.args[0])) from e
            if msg is not None and msg.key() == rid.encode():
                result: dict[str, Any] = orjson.loads(msg.value() or b"{}")
                return result
        return None
    finally:
        consumer.close()
