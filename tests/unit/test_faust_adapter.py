"""The drain adapter delivers exactly as Faust's wait_first did: inline when the delivery does not
wait, through wait_first (so a flow suspension still abandons it) when it does."""

from __future__ import annotations

import asyncio
import collections
import time
import types
from typing import Any

import faust
import pytest
from mode import Service
from mode.utils.locks import Event

from stream.runtime import faust_adapter
from stream.runtime.fetch_wait import FetchAsk


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
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    original = faust_consumer.Consumer._drain_messages
    creates = AIOKafkaConsumerThread._create_worker_consumer
    try:
        monkeypatch.setattr(faust, "__version__", "0.0.1")
        assert not faust_adapter.install()
        assert faust_consumer.Consumer._drain_messages is original
        assert AIOKafkaConsumerThread._create_worker_consumer is creates
        monkeypatch.setattr(faust, "__version__", faust_adapter.CHECKED_VERSION)
        assert faust_adapter.install()
        assert faust_consumer.Consumer._drain_messages is faust_adapter._drain_messages
        assert AIOKafkaConsumerThread._create_worker_consumer is faust_adapter._create_worker_consumer
    finally:
        faust_consumer.Consumer._drain_messages = original  # type: ignore[method-assign]
        AIOKafkaConsumerThread._create_worker_consumer = creates  # type: ignore[method-assign]


def test_a_worker_consumer_fetches_as_its_settings_say(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Tusk worker's aiokafka consumer gets TUSK_FETCH_MIN_BYTES and TUSK_FETCH_WAIT_MS; an app
    that did not ask keeps Faust's (fetch_min_bytes 1, fetch_max_wait_ms 1500)."""
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    from stream.runtime.app import build_app
    from stream.runtime.settings import Settings

    monkeypatch.setattr(AIOKafkaConsumerThread, "_create_worker_consumer",
                        faust_adapter._create_worker_consumer)
    broker = {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}
    env = {**broker, "TUSK_FETCH_MIN_BYTES": "12345", "TUSK_FETCH_WAIT_MS": "7",
           "TUSK_FETCH_IDLE_WAIT_MS": "250"}

    async def fetch_of(app: faust.App) -> tuple[int, int]:
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return consumer._fetch_min_bytes, consumer._fetch_max_wait_ms
        finally:
            await consumer.stop()  # never started: closes its client

    tusk = build_app(Settings.from_env(env)).app
    assert asyncio.run(fetch_of(tusk)) == (12345, 7)
    # 30: the busy ceiling's default
    assert getattr(tusk, faust_adapter.FETCH) == faust_adapter.Fetch(12345, 7, 30, 250)
    assert asyncio.run(fetch_of(build_app(Settings.from_env(broker)).app)) == (65536, 10)
    assert asyncio.run(fetch_of(faust.App("plain", broker="kafka://127.0.0.1:1"))) == (1, 1500)


class Message:
    def __init__(self, partition: int, offset: int) -> None:
        self.topic, self.partition, self.offset = "t", partition, offset
        self.tp = ("t", partition)


class AckingConsumer:
    """What `_handle_directly` uses of Faust's consumer: the unacked set, ack, the app's crash."""

    def __init__(self) -> None:
        self.unacked: set[Message] = set()
        self.acked: list[Message] = []
        self.crashed: list[BaseException] = []
        consumer = self

        class Monitor:
            def __init__(self) -> None:
                self.stream_inbound_time: dict[Any, float] = {}

        class App:
            monitor = Monitor()

            async def crash(self, exc: BaseException) -> None:
                consumer.crashed.append(exc)

        self.app = App()

    def ack(self, message: Message) -> None:
        self.unacked.discard(message)
        self.acked.append(message)


def test_a_record_handled_directly_has_its_partition_and_is_acked_after() -> None:
    async def main() -> None:
        consumer, seen = AckingConsumer(), []
        msg = Message(5, 42)

        async def handler(message: Message) -> None:
            await asyncio.sleep(0)  # a rebalance meanwhile finds it unacked
            seen.append((faust_adapter.current_partition(), message in consumer.unacked,
                         list(consumer.acked)))

        await faust_adapter._handle_directly(consumer, handler, msg)
        assert seen == [(5, True, [])]
        # as Faust's stream sensor does: its event-path check sees the partition processing
        assert ("t", 5) in consumer.app.monitor.stream_inbound_time
        assert consumer.acked == [msg] and not consumer.unacked
        assert faust_adapter.event_partition() is None  # outside of a record again
        with pytest.raises(RuntimeError):
            faust_adapter.current_partition()

    asyncio.run(main())


def test_a_record_that_fails_is_not_acked_and_stops_the_worker() -> None:
    async def main() -> None:
        consumer = AckingConsumer()
        msg = Message(1, 7)

        async def handler(message: Message) -> None:
            raise KeyError("bug")

        with pytest.raises(KeyError):
            await faust_adapter._handle_directly(consumer, handler, msg)
        assert consumer.acked == [] and msg in consumer.unacked
        assert [type(e) for e in consumer.crashed] == [KeyError]
        assert faust_adapter.event_partition() is None

    asyncio.run(main())



class Flag:
    def __init__(self) -> None:
        self.on = False

    def is_set(self) -> bool:
        return self.on


class DrainingConsumer(AckingConsumer):
    """What the drain loop uses of Faust's consumer, handing out `batches` then stopping."""

    def __init__(self, batches: list[list[Message]]) -> None:
        super().__init__()
        self.batches = list(batches)
        self._stopped = Flag()
        self._read_offset: dict[Any, int | None] = collections.defaultdict(lambda: None)
        self._commit_every = None
        self._n_acked = 0
        self.should_stop = False
        self.consumer_stopped_errors = ()
        self.callback = None
        self.diag = types.SimpleNamespace(set_flag=lambda _f: None, unset_flag=lambda _f: None)
        self.pause_s = 0.0  # how long each getmany waits (for records: none come meanwhile)
        self.app.topics = types.SimpleNamespace(acks_enabled_for=lambda _t: True)  # type: ignore[attr-defined]

    async def sleep(self, _s: float) -> None:
        await asyncio.sleep(0)

    def getmany(self, timeout: float) -> Any:
        time.sleep(self.pause_s)
        batch = self.batches.pop(0) if self.batches else []
        if not self.batches:
            self._stopped.on = True  # this batch is the last

        async def records() -> Any:
            for message in batch:
                yield message.tp, message

        return records()


def test_the_drain_loop_calls_back_after_each_batch_it_handed_out() -> None:
    batches = [[Message(0, 0), Message(1, 0), Message(0, 1)], [], [Message(1, 1), Message(1, 2)]]
    consumer = DrainingConsumer(batches)
    seen: list[tuple[str, int, int]] = []

    async def handler(message: Message) -> None:
        seen.append(("record", message.partition, message.offset))

    faust_adapter.deliver_directly(consumer.app, "t", handler)  # type: ignore[arg-type]
    faust_adapter.after_each_batch(consumer.app, lambda: seen.append(("batch", len(consumer.acked), 0)))  # type: ignore[arg-type]
    asyncio.run(faust_adapter._drain_messages(consumer, types.SimpleNamespace(_stopped=Flag())))
    assert seen == [("record", 0, 0), ("record", 1, 0), ("record", 0, 1), ("batch", 3, 0),
                    ("batch", 3, 0),  # an empty batch too
                    ("record", 1, 1), ("record", 1, 2), ("batch", 5, 0)]


def test_the_drain_loop_fetches_as_busy_as_it_is(monkeypatch: pytest.MonkeyPatch) -> None:
    """Handling records all the time, the drain loop sets its fetcher's wait to the busy ceiling
    (stream/runtime/fetch_wait.py); nearly idle, it asks for any record with the idle wait; with
    the ceiling and the idle wait at the floor it leaves the fetcher alone."""
    from stream.runtime import fetch_wait

    monkeypatch.setattr(fetch_wait, "WINDOW_S", 0.02)

    def drained(busy_wait_ms: int, idle_wait_ms: int, work_s: float, pause_s: float) -> tuple[int, int]:
        consumer = DrainingConsumer([[Message(0, i)] for i in range(8)])
        fetcher = types.SimpleNamespace(_fetch_max_wait_ms=10, _fetch_min_bytes=65536)
        consumer._thread = types.SimpleNamespace(_consumer=types.SimpleNamespace(_fetcher=fetcher))  # type: ignore[attr-defined]

        async def handler(_message: Message) -> None:
            time.sleep(work_s)  # busy, not waiting

        faust_adapter.deliver_directly(consumer.app, "t", handler)  # type: ignore[arg-type]
        fetch = faust_adapter.Fetch(65536, 10, busy_wait_ms, idle_wait_ms)
        faust_adapter.fetch_in_batches(consumer.app, fetch)  # type: ignore[arg-type]
        consumer.pause_s = pause_s
        asyncio.run(faust_adapter._drain_messages(consumer, types.SimpleNamespace(_stopped=Flag())))
        return fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes

    assert drained(30, 100, 0.01, 0.0) == (30, 65536)
    assert drained(10, 10, 0.01, 0.0) == (10, 65536)
    assert drained(30, 100, 0.0, 0.01) == (100, fetch_wait.ANY_RECORD)
    assert drained(30, 10, 0.0, 0.01) == (10, 65536)


def test_the_fetch_wait_waits_for_a_started_consumer() -> None:
    """Before the aiokafka consumer (or its fetcher) exists there is nothing to set; after, the
    fetcher's next requests wait as told."""
    thread = types.SimpleNamespace(_consumer=None)
    consumer = types.SimpleNamespace(_thread=thread)
    ask = FetchAsk(25, 1)
    faust_adapter.set_fetch(consumer, ask)
    assert thread._consumer is None
    thread._consumer = types.SimpleNamespace(_fetcher=None)
    faust_adapter.set_fetch(consumer, ask)
    assert thread._consumer._fetcher is None
    thread._consumer._fetcher = types.SimpleNamespace(_fetch_max_wait_ms=10, _fetch_min_bytes=65536)
    faust_adapter.set_fetch(consumer, ask)
    fetcher = thread._consumer._fetcher
    assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == (25, 1)
    faust_adapter.set_fetch(consumer, FetchAsk(30, 65536))  # and back to batches
    assert (fetcher._fetch_max_wait_ms, fetcher._fetch_min_bytes) == (30, 65536)


def test_a_fetch_change_never_pairs_the_idle_wait_with_the_batch_size() -> None:
    """The consumer thread may build a request between the two stores: going idle, the size is
    set first; going back to batches, the wait is."""
    states: list[tuple[int, int]] = []

    class Fetcher:
        def __init__(self) -> None:
            object.__setattr__(self, "_fetch_max_wait_ms", 30)
            object.__setattr__(self, "_fetch_min_bytes", 65536)

        def __setattr__(self, name: str, value: int) -> None:
            object.__setattr__(self, name, value)
            states.append((self._fetch_max_wait_ms, self._fetch_min_bytes))

    aiokafka_consumer = types.SimpleNamespace(_fetcher=Fetcher())
    consumer = types.SimpleNamespace(_thread=types.SimpleNamespace(_consumer=aiokafka_consumer))
    faust_adapter.set_fetch(consumer, FetchAsk(100, 1))
    faust_adapter.set_fetch(consumer, FetchAsk(10, 65536))
    assert states == [(30, 1), (100, 1), (10, 1), (10, 65536)]
