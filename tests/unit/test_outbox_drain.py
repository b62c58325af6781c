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
from stream.kafka import outbox as outbox_module
from stream.kafka.outbox import Outbox
from stream.runtime.settings import Settings


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
    box, changelog, outputs, _ = held_outbox_with_triggers()
    return box, changelog, outputs


def held_outbox_with_triggers() -> tuple[Outbox, HeldProducer, HeldProducer, HeldProducer]:
    box = Outbox()
    changelog, outputs, triggers = HeldProducer(), HeldProducer(), HeldProducer()
    box._producer, box._outputs, box._triggers = changelog, outputs, triggers  # type: ignore[assignment]
    box._activations = ACTIVATIONS
    return box, changelog, outputs, triggers


ACTIVATIONS = Settings().topics.activations("")


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
    box.release()  # the consumer's batch ends
    early_changelog, early_outputs = len(changelog.queued), len(outputs.queued)

    def meanwhile() -> None:
        for _ in range(after):  # sent after the drain began: never acknowledged in this test
            box.send("out", b"k", b"v")
            box.changelog(table, "cl", 0, b"k", b"v")
        changelog.deliver(early_changelog)
        outputs.deliver(early_outputs)

    assert asyncio.run(drain_while(box, meanwhile))
    # still held or in flight: the next drain's
    assert len(outputs) + box.held == after and len(changelog) == after


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
    box.release()
    outputs.deliver(1, err="refused")
    with pytest.raises(DeliveryFailed):
        asyncio.run(box.drain())


TOPICS = [ACTIVATIONS + "email", ACTIVATIONS + "webhook", "tusk.profile-changes", "tusk.internal.events",
          "tusk.dlq"]


@settings(max_examples=60, deadline=None)
@given(sends=st.lists(st.tuples(st.sampled_from(TOPICS), st.integers(0, 3)), max_size=40),
       delivered=st.integers(0, 40))
def test_triggers_leave_through_their_own_producer_in_order_and_the_drain_waits_for_them(
        sends: list[tuple[str, int]], delivered: int) -> None:
    """Activation topics go through the triggers' producer, every other output through the
    outputs' producer, each in the order sent; a drain ends only when both have delivered."""
    box, changelog, outputs, triggers = held_outbox_with_triggers()
    for n, (topic, key) in enumerate(sends):
        box.send(topic, f"{key}".encode(), f"{n}".encode())
    box.release()
    to_triggers = [s for s in sends if s[0].startswith(ACTIVATIONS)]
    to_outputs = [s for s in sends if not s[0].startswith(ACTIVATIONS)]
    for prod, sent in ((triggers, to_triggers), (outputs, to_outputs)):
        assert [(t, int(k)) for _, (t, k) in prod.queued] == sent
    assert len(changelog) == 0
    # deliver part of the triggers: the drain waits while any is still in flight
    part = min(delivered, len(triggers.queued))

    def meanwhile() -> None:
        triggers.deliver(part)
        outputs.deliver(len(outputs.queued))

    ended = asyncio.run(drain_while(box, meanwhile))
    assert ended == (part == len(to_triggers))
    triggers.deliver(len(triggers.queued))
    asyncio.run(box.drain())
    assert len(triggers) == len(outputs) == 0


@settings(max_examples=60, deadline=None)
@given(steps=st.lists(st.one_of(st.sampled_from(TOPICS), st.just("release")), max_size=60),
       hold_max=st.integers(1, 8))
def test_outputs_wait_for_a_release_and_leave_in_the_order_sent(steps: list[str], hold_max: int) -> None:
    """Nothing sent reaches a producer before a release (or `HOLD_MAX` records held); a release
    hands every held record to its producer, in the order sent; a drain releases first."""
    box, _, outputs, triggers = held_outbox_with_triggers()
    original = outbox_module.HOLD_MAX
    outbox_module.HOLD_MAX = hold_max
    try:
        sent: list[tuple[str, bytes]] = []
        for n, step in enumerate(steps):
            if step == "release":
                box.release()
                assert box.held == 0
                continue
            held_before = box.held
            box.send(step, f"{n}".encode(), b"v")
            sent.append((step, f"{n}".encode()))
            assert box.held == (0 if held_before + 1 >= hold_max else held_before + 1)
            out = sent[:len(sent) - box.held]  # all but the records still held
            for prod, triggered in ((triggers, True), (outputs, False)):
                assert [what for _, what in prod.queued] == [
                    (t, k) for t, k in out if t.startswith(ACTIVATIONS) == triggered]

        def deliver_all() -> None:
            outputs.deliver(len(outputs.queued))
            triggers.deliver(len(triggers.queued))

        assert asyncio.run(drain_while(box, deliver_all))
        assert box.held == 0 and len(outputs) + len(triggers) == 0
        assert len(outputs.ready) + len(triggers.ready) == 0  # every record was acknowledged
    finally:
        outbox_module.HOLD_MAX = original


class RefusingProducer(HeldProducer):
    """Queues like HeldProducer, but raises on the `fail_at`-th produce."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.calls, self.fail_at = 0, fail_at

    def produce(self, topic: str, value: Any, key: Any, on_delivery: Any, **kw: Any) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("refused")
        super().produce(topic, value, key, on_delivery, **kw)


def test_a_release_that_fails_keeps_what_was_not_produced_first_in_line() -> None:
    box, _, _ = held_outbox()
    refusing = RefusingProducer(fail_at=3)
    box._outputs = refusing  # type: ignore[assignment]
    for n in range(5):
        box.send("out", b"k", f"{n}".encode())
    with pytest.raises(RuntimeError):
        box.release()
    assert [what for _, what in refusing.queued] == [("out", b"k")] * 2 and box.held == 3
    box.send("out", b"k", b"5")
    box.release()
    assert len(refusing.queued) == 6 and box.held == 0
