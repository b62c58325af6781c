"""confluent-kafka clients: topic creation, producers, and plain (group-less) readers."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from stream.kafka import security as kafka_security
from stream.kafka.topic_configs import config_of, differences, topic_configs
from stream.runtime.settings import Settings, SettingsError

log = logging.getLogger(__name__)


def client_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """librdkafka settings of every Tusk client: the bootstrap servers and TUSK_KAFKA_*."""
    # log_level 3: librdkafka's transient start-up retries are not the user's business
    # TCP_NODELAY as the broker and the Java client set it: with Nagle, a small request written
    # while an earlier one is unacknowledged waits for the peer's delayed ACK (up to 40 ms)
    conf: dict[str, Any] = {"bootstrap.servers": settings.bootstrap, "log_level": 3,
                            "socket.nagle.disable": True, **settings.kafka_extra}
    conf.update(overrides)
    return conf


class KafkaAccessError(SettingsError):
    """The broker refused Tusk's login, or none answered: one sentence saying what to check."""


# errors that no retry will cure: the login or the TLS handshake was refused
_REFUSED = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL,
            KafkaError.CLUSTER_AUTHORIZATION_FAILED}


def _reason(err: KafkaError) -> str:
    """librdkafka's text without the broker prefix ('sasl_ssl://host:port/id: ') and timing."""
    text = err.str()
    head, sep, rest = text.partition(": ")
    if sep and "://" in head:
        text = rest
    return text.split(" (after ")[0].rstrip(". ")


def connect(settings: Settings, timeout: float = 30.0) -> AdminClient:
    """An admin client that has read the cluster's metadata. KafkaAccessError at once when the
    broker refuses the login (wrong credentials, mechanism or certificate), after `timeout`
    when no broker answers: a start-up fails with a sentence instead of waiting for ever."""
    errors: list[KafkaError] = []
    # log_level 2: librdkafka would print each refused attempt on stderr; error_cb gets them
    admin = AdminClient(client_config(settings, error_cb=errors.append, log_level=2))
    deadline = time.monotonic() + timeout
    last = "no answer"
    while True:
        try:
            admin.list_topics(timeout=max(0.1, min(1.0, deadline - time.monotonic())))
            return admin
        except KafkaException as e:
            last = _reason(e.args[0])
        admin.poll(0)  # serves error_cb
        refused = next((e for e in errors if e.code() in _REFUSED), None)
        login = kafka_security.login(settings.kafka_extra)
        if refused is not None and refused.code() == KafkaError._SSL:
            raise KafkaAccessError(f"the TLS handshake with the broker at {settings.bootstrap} failed "
                                   f"({login}): {_reason(refused)}; check TUSK_KAFKA_SSL_CA_LOCATION and "
                                   f"the client certificate settings.")
        if refused is not None and kafka_security.mechanism(settings.kafka_extra) == "OAUTHBEARER":
            raise KafkaAccessError(f"the login to the broker at {settings.bootstrap} failed ({login}): "
                                   f"{_reason(refused)}; check TUSK_KAFKA_SASL_OAUTHBEARER_CLIENT_ID, "
                                   f"_CLIENT_SECRET and _TOKEN_ENDPOINT_URL.")
        if refused is not None:
            raise KafkaAccessError(f"the broker at {settings.bootstrap} refused the login ({login}): "
                                   f"{_reason(refused)}; check TUSK_KAFKA_SASL_MECHANISM, "
                                   f"TUSK_KAFKA_SASL_USERNAME and TUSK_KAFKA_SASL_PASSWORD.")
        if time.monotonic() >= deadline:
            seen = next((_reason(e) for e in reversed(errors)
                         if e.code() != KafkaError._ALL_BROKERS_DOWN), last)
            raise KafkaAccessError(f"no Kafka broker answered at {settings.bootstrap} within {timeout:.0f}s "
                                   f"({seen}); check KAFKA_BOOTSTRAP_SERVERS and that "
                                   f"TUSK_KAFKA_SECURITY_PROTOCOL ({login}) is the listener's.")


def contract_topics(settings: Settings) -> dict[str, dict[str, str]]:
    """Topic name → config, for every topic users read or write (docs/reference/topics.md), and Faust's
    changelogs, created up front: a worker that starts before Faust has made them sees
    "0 partitions" and cannot write its tables. Configs: stream/kafka/topic_configs.py."""
    return topic_configs(settings)


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    """Create the contract topics that do not exist yet (idempotent)."""
    admin = connect(settings, timeout)
    wanted = contract_topics(settings)
    existing = set(admin.list_topics(timeout=timeout).topics)
    missing = {name: conf for name, conf in wanted.items() if name not in existing}
    if not missing:
        return
    _create(admin, settings, missing, timeout)
    # metadata propagates asynchronously; wait until every topic is visible
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if set(wanted) <= set(admin.list_topics(timeout=timeout).topics):
            return
        time.sleep(0.2)


def ensure_topic(settings: Settings, name: str, config: dict[str, str] | None = None,
                 timeout: float = 30.0) -> None:
    """Create one topic if it does not exist (partitions and replication of the cluster)."""
    admin = connect(settings, timeout)
    if name in admin.list_topics(timeout=timeout).topics:
        return
    if config is None:  # one of Tusk's topics (an activation topic): its retention
        config = config_of(settings, name)
    _create(admin, settings, {name: config or {}}, timeout)


def _create(admin: AdminClient, settings: Settings, configs: dict[str, dict[str, str]],
            timeout: float) -> None:
    """Create these topics (name → config) with the cluster's partitions and replication; one
    that another client created meanwhile is no error."""
    new = [NewTopic(name, settings.partitions, settings.replication, config=conf)
           for name, conf in configs.items()]
    for fut in admin.create_topics(new, request_timeout=timeout).values():
        try:
            fut.result()
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise


PRODUCER_FIXED = {"partitioner": "murmur2_random", "enable.idempotence": True, "acks": "all"}
"""Not negotiable through TUSK_KAFKA_*: murmur2 like the Java client, aiokafka and Faust, so keys
land on the partitions Faust expects; acknowledged by every replica, without duplicates."""


def producer_config(settings: Settings, **defaults: Any) -> dict[str, Any]:
    """librdkafka settings of every Tusk producer: `defaults` (and linger.ms 5) under TUSK_KAFKA_*,
    PRODUCER_FIXED over them."""
    return {"linger.ms": 5, **defaults, **client_config(settings, **PRODUCER_FIXED)}


def producer(settings: Settings, **overrides: Any) -> Producer:
    conf = producer_config(settings)
    conf.update(overrides)
    return Producer(conf)


def produce_waiting(prod: Producer, topic: str, value: bytes | None, key: bytes | None,
                    **kwargs: Any) -> None:
    """prod.produce(…), waiting for deliveries to make room while the local queue is full."""
    while True:
        try:
            prod.produce(topic, value, key, **kwargs)
            return
        except BufferError:
            prod.poll(0.05)


def poll_record(consumer: Consumer, timeout: float) -> Message | None:
    """The next record, or None when there is none yet; a real error (not end of partition)
    raises KafkaException."""
    msg = consumer.poll(timeout)
    if msg is None:
        return None
    err = msg.error()
    if err is None:
        return msg
    if err.code() == KafkaError._PARTITION_EOF:
        return None
    raise KafkaException(err)


def watermarks(consumer: Consumer, topic: str, partition: int, timeout: float = 15.0) -> tuple[int, int]:
    """(low, high) offsets, retried while a just-created topic's leaders are being elected."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            return int(low), int(high)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def reader(settings: Settings, group: str, **overrides: Any) -> Consumer:
    """A group-less consumer (it assigns partitions itself and commits nothing): librdkafka
    requires a group id, which is never joined."""
    return Consumer(client_config(settings, **{"group.id": group, "enable.auto.commit": False,
                                               **overrides}))


def offsets(consumer: Consumer, topic: str, timeout: float = 15.0) -> dict[int, tuple[int, int]]:
    """partition → (low, high) of `topic`; empty when the topic does not exist."""
    md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if md is None or md.error is not None:
        return {}
    return {p: watermarks(consumer, topic, p, timeout) for p in sorted(md.partitions)}


def read_to_end(consumer: Consumer, ends: dict[int, int], timeout: float, idle: float,
                strict: bool = True) -> Iterator[Message]:
    """Every record an assigned consumer (with enable.partition.eof) polls until each partition
    of `ends` (partition → end offset) reached it, or `timeout`; records past an end included.
    A consumer error raises KafkaException (`strict`) or is passed over."""
    remaining = set(ends)
    deadline = time.monotonic() + timeout
    while remaining and time.monotonic() < deadline:
        msg = consumer.poll(idle)
        if msg is None:
            continue
        err = msg.error()
        part = msg.partition() or 0
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                remaining.discard(part)
            elif strict:
                raise KafkaException(err)
            continue
        yield msg
        if (msg.offset() or 0) + 1 >= ends.get(part, 0):
            remaining.discard(part)


def read_topic(settings: Settings, topic: str, timeout: float = 10.0,
               idle: float = 1.0) -> Iterator[Any]:
    """Every record currently in `topic`, from the start, without a consumer group.

    Stops at the end offsets seen when called (or after `timeout`).
    """
    consumer = reader(settings, "tusk-reader-unused", **{"enable.partition.eof": True})
    try:
        marks = {p: (low, high) for p, (low, high) in offsets(consumer, topic, timeout).items() if high > low}
        if not marks:
            return
        consumer.assign([TopicPartition(topic, p, low) for p, (low, _high) in marks.items()])
        ends = {p: high for p, (_low, high) in marks.items()}
        for msg in read_to_end(consumer, ends, timeout, idle):
            if (msg.offset() or 0) < ends[msg.partition() or 0]:
                yield msg
    finally:
        consumer.close()


def enforce_topic_configs(settings: Settings,
                          timeout: float = 30.0) -> dict[str, dict[str, tuple[str | None, str]]]:
    """Bring every existing Tusk topic to its config (stream/kafka/topic_configs.py) with incremental
    alter configs; what changed."""
    from confluent_kafka.admin import (
        AlterConfigOpType,
        ConfigEntry,
        ConfigResource,
        ResourceType,
    )

    admin = AdminClient(client_config(settings))
    names = set(admin.list_topics(timeout=timeout).topics)
    wanted = {n: c for n in sorted(names) if (c := config_of(settings, n)) is not None}
    if not wanted:
        return {}
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, n) for n in wanted],
                                       request_timeout=timeout)
    changed: dict[str, dict[str, tuple[str | None, str]]] = {}
    for resource, fut in described.items():
        entries: dict[str, Any] = fut.result(timeout)
        diff = differences({k: e.value for k, e in entries.items()}, wanted[resource.name])
        if diff:
            changed[resource.name] = diff
    if not changed:
        return {}
    todo = [ConfigResource(ResourceType.TOPIC, name, incremental_configs=[
        ConfigEntry(k, new, incremental_operation=AlterConfigOpType.SET) for k, (_, new) in diff.items()])
        for name, diff in changed.items()]
    for resource, fut in admin.incremental_alter_configs(todo, request_timeout=timeout).items():
        fut.result(timeout)
        what = ", ".join(f"{k} {old} → {new}" for k, (old, new) in sorted(changed[resource.name].items()))
        log.warning("topic %s brought to Tusk's retention configs: %s", resource.name, what)
    return changed
