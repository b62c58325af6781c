"""The drain adapter delivers exactly as Faust's wait_first did: inline when the delivery does not
wait, through wait_first (so a flow suspension still abandons it) when it does."""

from __future__ import annotations

import asyncio
from typing import Any

import faust
import pytest
from mode import Service
from mode.utils.locks import Event

from stream.runtime import faust_adapter


class Consumer(Service):
    """What `_deliver` uses of Faust's consumer: wait_first and the suspend_flow event."""

    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = Event()
        self.waits = 0

    async def wait_first(self, *coros: Any, **kw: Any) -> Any:
        self.waits += 1
        return await super().wait_first(*coros, **kw)


def test_a_delivery_that_does_not_wait_runs_inline() -> None:
    async def main() -> None:
        consumer, got = Consumer(), []

        async def callback(message: int) -> None:
            got.append(message)

        for i in range(5):
            await faust_adapter._deliver(consumer, callback, i)
        assert got == [0, 1, 2, 3, 4]
        assert consumer.waits == 0

    asyncio.run(main())


def test_a_delivery_that_waits_finishes_with_what_it_awaited() -> None:
    async def main() -> None:
        consumer, got = Consumer(), []
        room: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def callback(message: int) -> None:
            got.append((message, await room))  # a full buffer: waits for room
            got.append((message, await asyncio.sleep(0, "again")))

        delivery = asyncio.ensure_future(faust_adapter._deliver(consumer, callback, 7))
        await asyncio.sleep(0.01)
        assert not delivery.done() and got == []
        room.set_result("room")
        await asyncio.wait_for(delivery, 1)
        assert got == [(7, "room"), (7, "again")]
        assert consumer.waits == 1

    asyncio.run(main())


def test_a_waiting_delivery_is_abandoned_when_the_flow_is_suspended() -> None:
    async def main() -> None:
        consumer, cancelled = Consumer(), []
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def callback(message: int) -> None:
            try:
                await never
            except asyncio.CancelledError:
                cancelled.append(message)
                raise

        delivery = asyncio.ensure_future(faust_adapter._deliver(consumer, callback, 3))
        await asyncio.sleep(0.01)
        consumer.suspend_flow.set()
        await asyncio.wait_for(delivery, 1)
        await asyncio.sleep(0.01)
        assert cancelled == [3]

    asyncio.run(main())


def test_an_error_in_the_delivery_reaches_the_drain_loop() -> None:
    async def main() -> None:
        consumer = Consumer()
        room: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        async def fails_at_once(message: int) -> None:
            raise ValueError("bad")

        async def fails_later(message: int) -> None:
            await room
            raise KeyError("late")

        with pytest.raises(ValueError):
            await faust_adapter._deliver(consumer, fails_at_once, 1)
        delivery = asyncio.ensure_future(faust_adapter._deliver(consumer, fails_later, 2))
        await asyncio.sleep(0.01)
        room.set_result(None)
        with pytest.raises(KeyError):
            await asyncio.wait_for(delivery, 1)

    asyncio.run(main())


def test_installs_only_on_the_checked_faust(monkeypatch: pytest.MonkeyPatch) -> None:
    from faust.transport import consumer as faust_consumer

    original = faust_consumer.Consumer._drain_messages
    try:
        monkeypatch.setattr(faust, "__version__", "0.0.1")
        assert not faust_adapter.install()
        assert faust_consumer.Consumer._drain_messages is original
        monkeypatch.setattr(faust, "__version__", faust_adapter.CHECKED_VERSION)
        assert faust_adapter.install()
        assert faust_consumer.Consumer._drain_messages is faust_adapter._drain_messages
    finally:
        faust_consumer.Consumer._drain_messages = original  # type: ignore[method-assign]
