"""The outbox's drain (before each commit and hand-over) waits for the records sent before it,
not for a moment with nothing in flight: under steady load that moment may not come for seconds
(commits took 3-5 s at 2k events/s), and every record behind the commit waited with it.

The broker's side (acknowledged means in Kafka, in order; a refusal fails the drain) is
tests/integration/test_outbox.py; here a producer whose deliveries the test releases."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.common.errors import DeliveryFailed
from stream.kafka.outbox import Outbox


class HeldProducer:
    """produce() queues; deliver(n) acknowledges the n oldest, as poll() would serve them."""

    def __init__(self) -> None:
        self.queued: list[tuple[Any, Any]] = []
        self.ready: list[tuple[Any, Any]] = []

    def produce(self, topic: str, value: Any, key: Any, on_delivery: Any, **_: Any) -> None:
        self.queued.append((on_delivery, (topic, key)))

    def deliver(self, n: int, err: Any = None) -> None:
        for callback, what in self.queued[:n]:
            self.ready.append((callback, (err, what)))
        del self.queued[:n]

    def poll(self, _timeout: float = 0) -> int:
        ready, self.ready = self.ready, []
        for callback, (err, what) in ready:
            callback(err, Msg(*what))
        return len(ready)

    def __len__(self) -> int:
        return len(self.queued) + len(self.ready)


class Msg:
    def __init__(self, topic: str, key: Any) -> None:
        self._topic = topic

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 1


def held_outbox() -> tuple[Outbox, HeldProducer, HeldProducer]:
    box = Outbox()
    changelog, outputs = HeldProducer(), HeldProducer()
    box._producer, box._outputs = changelog, outputs  # type: ignore[assignment]
    return box, changelog, outputs


async def drain_while(box: Outbox, during: Any) -> bool:
    """Start a drain, run `during()` while it waits; did the drain end (within 1 s)?"""
    task = asyncio.create_task(box.drain())
    await asyncio.sleep(0.01)
    during()
    try:
        await asyncio.wait_for(task, 1)
    except TimeoutError:
        return False
    return True


@settings(max_examples=40, deadline=None)
@given(before=st.integers(0, 20), after=st.integers(1, 20), changelog_share=st.integers(0, 20))
def test_a_drain_ends_when_what_was_sent_before_it_is_acknowledged(
        before: int, after: int, changelog_share: int) -> None:
    box, changelog, outputs = held_outbox()
    table = type("T", (), {"data": None})()
    for i in range(before):
        if i < changelog_share:
            box.changelog(table, "cl", 0, b"k", b"v")
        else:
            box.send("out", b"k", b"v")
    early_changelog, early_outputs = len(changelog.queued), len(outputs.queued)

    def meanwhile() -> None:
        for _ in range(after):  # sent after the drain began: never acknowledged in this test
            box.send("out", b"k", b"v")
            box.changelog(table, "cl", 0, b"k", b"v")
        changelog.deliver(early_changelog)
        outputs.deliver(early_outputs)

    assert asyncio.run(drain_while(box, meanwhile))
    assert len(outputs) == after and len(changelog) == after  # still in flight: the next drain's


def test_a_drain_waits_while_a_record_sent_before_it_is_in_flight() -> None:
    box, _, outputs = held_outbox()
    box.send("out", b"k", b"1")
    box.send("out", b"k", b"2")
    assert not asyncio.run(drain_while(box, lambda: outputs.deliver(1)))
    outputs.deliver(1)
    asyncio.run(box.drain())


def test_a_failed_delivery_fails_the_drain() -> None:
    box, _, outputs = held_outbox()
    box.send("out", b"k", b"1")
    outputs.deliver(1, err="refused")
    with pytest.raises(DeliveryFailed):
        asyncio.run(box.drain())
