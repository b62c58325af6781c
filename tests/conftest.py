"""One Kafka for the whole test session, from the first source that answers:

1. KAFKA_BOOTSTRAP_SERVERS, when set;
2. testcontainers' Kafka (apache/kafka), when a Docker engine answers;
3. the project's own launcher (deploy/kafka/local_kafka.py: Kafka jars from
   Maven Central, KRaft on loopback, Java 17).

All three are a real Apache Kafka. Every test gets its own topic prefix and
consumer group, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        return bool(client.ping())
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if given:
        yield given
        return
    if os.environ.get("TUSK_TEST_NO_DOCKER") != "1" and _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.0").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from stream.demo.session import load_launcher

    launcher = load_launcher()
    broker = launcher.start(port=launcher.free_port(),
                            workdir=Path(tmp_path_factory.mktemp("kafka")))
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


TuskEnv = dict[str, str]


@pytest.fixture
def tusk_env(kafka_bootstrap: str, tmp_path: Path) -> TuskEnv:
    """Environment of an isolated Tusk deployment: own topics, group and data folders."""
    run = f"t{uuid.uuid4().hex[:10]}"
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "TUSK_TOPIC_PREFIX": f"{run}.",
        "TUSK_APP_ID": run,
        "TUSK_PARTITIONS": "4",
        "TUSK_DATADIR": str(tmp_path / "worker"),
        "TUSK_LOG_LEVEL": "info",
    }


@pytest.fixture
def deployment(tusk_env: dict[str, str], tmp_path: Path) -> Iterator[object]:
    from tests.integration.harness import Deployment

    d = Deployment(tusk_env, tmp_path)
    try:
        yield d
    finally:
        d.stop()
