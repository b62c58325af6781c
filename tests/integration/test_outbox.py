"""The outbox (stream/kafka/outbox.py) on a real broker: drained means acknowledged, in order; a
record Kafka refuses fails the drain instead of letting the offsets be committed."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from confluent_kafka import KafkaException

from stream.kafka.clients import ensure_topic, read_topic
from stream.kafka.outbox import DeliveryFailed, Outbox
from stream.runtime.settings import Settings
from tests.integration.harness import settings_from


@pytest.fixture
def started(tusk_env: dict[str, str]) -> tuple[Settings, str, Outbox]:
    settings = settings_from(tusk_env)
    topic = settings.topics.profile_changes
    ensure_topic(settings, topic)
    box = Outbox()
    box.start(settings)
    return settings, topic, box


@pytest.mark.parametrize("kind", ["changes", "triggers"])
def test_drained_records_are_in_kafka_in_order(started: tuple[Settings, str, Outbox], kind: str) -> None:
    settings, topic, box = started
    if kind == "triggers":  # the activation topics have a producer of their own
        topic = settings.topics.activations("webhook")
        ensure_topic(settings, topic)
    for i in range(2000):
        box.send(topic, f"k{i % 7}".encode(), orjson.dumps({"n": i}))
    asyncio.run(box.drain())
    assert len(box.outputs) == len(box.triggers) == 0
    got = [(r.key(), orjson.loads(r.value())["n"]) for r in read_topic(settings, topic, timeout=20)]
    assert sorted(n for _, n in got) == list(range(2000))
    for key in {k for k, _ in got}:  # one key, one partition, in the order sent
        ns = [n for k, n in got if k == key]
        assert ns == sorted(ns)


def test_a_refused_record_fails_the_drain(started: tuple[Settings, str, Outbox]) -> None:
    _, topic, box = started
    box.send(topic, b"k", b"{}")
    asyncio.run(box.drain())
    # a partition the topic does not have: refused by Kafka, so the caller must not commit
    with pytest.raises((DeliveryFailed, KafkaException)):
        box.send(topic, b"k", b"{}", partition=999)
        asyncio.run(asyncio.wait_for(box.drain(), 30))

