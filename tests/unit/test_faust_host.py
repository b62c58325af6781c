"""The worker's host reads the touchpoints topic's partition count off the event loop: the count
is asked for every event, and a metadata request can wait seconds on a slow broker."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

from confluent_kafka import KafkaException

from stream.runtime import agents
from stream.runtime.agents import FaustHost
from stream.runtime.settings import Settings


class Reader:
    """A metadata reader that answers only once the test lets it, and notes its thread."""

    def __init__(self, partitions: int | None) -> None:
        self.partitions = partitions
        self.release = threading.Event()
        self.threads: list[int] = []

    def list_topics(self, topic: str, timeout: float) -> Any:
        self.threads.append(threading.get_ident())
        if not self.release.wait(5):
            raise AssertionError("never released")
        if self.partitions is None:
            raise KafkaException("broker down")
        if self.partitions == 0:
            raise RuntimeError("Consumer closed")
        meta = SimpleNamespace(error=None, partitions=dict.fromkeys(range(self.partitions)))
        return SimpleNamespace(topics={topic: meta})


def host(reader: Reader) -> FaustHost:
    h = FaustHost(None, Settings(), "tusk.touchpoints")  # type: ignore[arg-type]
    h.__dict__["end_reader"] = reader  # the cached property's value
    return h


async def settle(h: FaustHost) -> None:
    for _ in range(500):
        if not h._reading:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the read did not finish")


def test_on_the_event_loop_the_count_is_read_in_a_thread_and_the_kept_count_served() -> None:
    async def main() -> None:
        reader, loop_thread = Reader(8), threading.get_ident()
        h = host(reader)
        assert h.touchpoint_partitions() is None  # returned while the read still waits
        assert h.touchpoint_partitions() is None  # and no second read while one is under way
        reader.release.set()
        await settle(h)
        assert h.touchpoint_partitions() == 8
        assert len(reader.threads) == 1 and reader.threads[0] != loop_thread

    asyncio.run(main())


def test_a_failed_read_keeps_the_count_and_retries_later(monkeypatch: Any) -> None:
    async def main() -> None:
        reader = Reader(4)
        reader.release.set()
        h = host(reader)
        h.touchpoint_partitions()
        await settle(h)
        assert h.touchpoint_partitions() == 4
        reader.partitions = None  # the broker stops answering when the count is read again
        monkeypatch.setattr(agents, "PARTITIONS_MAX_AGE_S", 0.0)
        h._partitions_read_at = 0.0
        assert h.touchpoint_partitions() == 4
        await settle(h)
        assert h.touchpoint_partitions() == 4  # the last count read is kept
        assert len(reader.threads) == 2
        # and the next read waits METADATA_RETRY_S, not PARTITIONS_MAX_AGE_S (0 here)
        assert h._partitions_read_at > time.monotonic() + agents.METADATA_RETRY_S / 2

    asyncio.run(main())


def test_any_failure_of_the_read_leaves_it_to_be_retried() -> None:
    reader = Reader(0)  # the reader raises something other than a KafkaException
    reader.release.set()
    h = host(reader)
    assert h.touchpoint_partitions() is None
    assert not h._reading  # not stuck: the next read is only delayed
    assert h._partitions_read_at > time.monotonic() + agents.METADATA_RETRY_S / 2


def test_without_an_event_loop_the_count_is_read_in_place() -> None:
    reader = Reader(2)
    reader.release.set()
    h = host(reader)
    assert h.touchpoint_partitions() == 2
    assert reader.threads == [threading.get_ident()]
