"""Everything a worker writes goes through librdkafka producers (confluent-kafka): one for the
changelog records, one for triggers, one for the rest (`Outbox.start` says why three).

Faust's aiokafka producer does its batching, partitioning and socket work in Python on the event
loop: about a third of a worker's CPU (py-spy). librdkafka does the same in C threads, so the
loop only pays for `produce()`. Output records wait in a list until the consumer's batch that
caused them is handled (`Outbox.release`), then are produced one after another. Faust keeps
the consumer, the tables' RocksDB and recovery; the tables' changelog writes come here through
`OutboxTable.send_changelog`.

The guarantee is unchanged: Faust flushes its producer before it commits the offsets of the
records consumed, and `Outbox.attach` makes that flush drain these producers too, so no offset
is committed before what its records caused is acknowledged; a delivery failure crashes the worker
before the commit, and the records are replayed by whoever owns them next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import faust
from confluent_kafka import KafkaError, Message, Producer
from faust.types import TP

from processors.common.errors import DeliveryFailed
from stream.kafka.clients import produce_waiting, producer
from stream.runtime.faust_adapter import chain_producer_flush, record_persisted_offset
from stream.runtime.metrics import RESTORED_IN_BULK
from stream.runtime.settings import Settings
from stream.state.restore import restore
from stream.state.writeback import WriteBack

log = logging.getLogger(__name__)


class Outbox:
    """A worker's producer (started by the worker: nothing connects before `start`) and the
    write-back layer whose changelog records it sends; `build_app` makes one per app (`bind`)."""

    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.state: WriteBack | None = None  # the app's write-back layer (`bind`)
        self._producer: Producer | None = None  # the changelog records
        self._outputs: Producer | None = None  # everything else but triggers (see `start`)
        self._triggers: Producer | None = None  # the activation topics' records (see `start`)
        self._activations = "\0"  # the activation topics' common prefix (set by `start`)
        self._failure: KafkaError | None = None
        # changelog offsets acknowledged since the last poll: (topic, partition) → highest
        self._persisted: dict[tuple[str, int], int] = {}
        self._tables: dict[str, Any] = {}  # changelog topic → its table
        self._recorded_at = 0.0  # monotonic time the changelog offsets were last recorded
        # Records in flight per epoch (a drain starts a new one and waits for the older ones
        # only): a drain under load no longer waits for a moment when nothing at all is in
        # flight (commits took 3-5 s at 2k events/s, holding back the records behind them).
        self._held: list[tuple[str, bytes | None, bytes | None, int, int]] = []  # outputs not produced yet
        self._in_flight: list[int] = [0]
        self._older: list[list[int]] = []
        self._new_epoch()

    def start(self, settings: Settings) -> None:
        self.settings = settings
        if self._producer is None:
            # Changelog records come in bursts (one per dirty key at each flush) and only need
            # acknowledging before the next commit, so they batch; outputs come one per record and
            # someone waits for them. One linger for both cost either latency (10 ms: p99 event
            # → trigger 33 ms at 250/s) or ~7% of CPU per event (2 ms, CDNOW).
            # Triggers have a producer, so a connection, of their own: librdkafka sends one
            # partition per produce request and the broker reads a connection's next request only
            # after answering the one before, so a trigger queued behind every partition's profile
            # changes (Kafka's request log at 250/s: ~170 requests/s on the shared connection,
            # busy half the time; a burst after a pause took hundreds of ms to leave).
            # Each topic goes through one producer, so per-partition order is kept; `drain`
            # waits for all three.
            self._producer = producer(settings, **{"linger.ms": settings.producer_linger_ms, **KEEP_TRYING})
            self._outputs = producer(settings, **{"linger.ms": settings.output_linger_ms, **KEEP_TRYING})
            self._triggers = producer(settings, **{"linger.ms": settings.output_linger_ms, **KEEP_TRYING})
            self._activations = settings.topics.activations("")

    def bind(self, app: faust.App, state: WriteBack) -> None:
        """This outbox (and `state`, the write-back layer sending through it) is `app`'s: its
        tables (`OutboxTable`) reach them through the app."""
        self.state = state
        state.sink = self
        setattr(app, ATTRIBUTE, self)

    def attach(self, app: faust.App) -> None:
        """Make Faust's flush (before each commit, before a rebalance) write the tables' dirty
        state (stream/state/writeback.py) and drain this producer too."""
        state = self.state

        async def after_faust_flush() -> None:
            if state is not None:
                state.flush()
            await self.drain()

        chain_producer_flush(app, after_faust_flush)

    @property
    def producer(self) -> Producer:
        """The changelog records' producer."""
        return _started(self._producer)

    @property
    def outputs(self) -> Producer:
        """The producer of everything but changelog records and triggers."""
        return _started(self._outputs)

    @property
    def triggers(self) -> Producer:
        """The producer of the activation topics' records."""
        return _started(self._triggers)

    def _new_epoch(self) -> None:
        """Records sent from now on count in a new epoch; the delivery callbacks (bound once per
        epoch, not per record) count them down."""
        if self._in_flight[0]:
            self._older.append(self._in_flight)
        count = self._in_flight = [0]

        def on_sent(err: KafkaError | None, _msg: Message) -> None:
            count[0] -= 1
            if err is not None and self._failure is None:
                self._failure = err

        def on_changelog(err: KafkaError | None, msg: Message) -> None:
            count[0] -= 1
            if err is not None:
                if self._failure is None:
                    self._failure = err
                return
            # one call per changelog record: a plain tuple key
            tp, offset = (msg.topic() or "", msg.partition() or 0), msg.offset()
            persisted = self._persisted
            if offset is not None and offset > persisted.get(tp, -1):
                persisted[tp] = offset

        self._on_sent, self._on_changelog = on_sent, on_changelog

    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
             timestamp_ms: int | None = None) -> None:
        """Queue an output record (partition None: murmur2 of the key, as Java clients and Faust
        do). It waits here, in the order sent, until the next `release`."""
        held = self._held
        held.append((topic, key, value, -1 if partition is None else partition, timestamp_ms or 0))
        if len(held) >= HOLD_MAX:
            self.release()

    def release(self) -> None:
        """Produce the output records held since the last release, in the order sent; a full
        queue waits for the broker (back-pressure).

        Called at the end of each batch the consumer hands out (stream/runtime/faust_adapter.py,
        `after_each_batch`), by the worker's delivery timer (sends made outside of a batch) and
        first thing in a drain. Produced one after another, a batch's records cost librdkafka
        and the event loop less than one at a time between the records that cause them (the
        bench's shop stream, 50 segments: 7.7 outputs per event)."""
        held = self._held
        if not held:
            return
        self._held = []
        outputs, triggers, activations = self.outputs, self.triggers, self._activations
        on_sent, count = self._on_sent, self._in_flight
        for i, (topic, key, value, partition, timestamp_ms) in enumerate(held):
            try:
                _produce(triggers if topic.startswith(activations) else outputs, topic, key, value,
                         partition, timestamp_ms, on_sent)
            except BaseException:  # keep what was not queued, first in line for the next release
                self._held = held[i:] + self._held
                raise
            count[0] += 1  # once queued: a produce() that raises has no delivery to count

    @property
    def held(self) -> int:
        """Output records sent and not produced yet."""
        return len(self._held)

    def changelog(self, table: Any, topic: str, partition: int, key: bytes, value: bytes | None) -> None:
        self._tables[topic] = table
        _produce(self.producer, topic, key, value, partition, 0, self._on_changelog)
        self._in_flight[0] += 1

    def poll(self, record: bool = False) -> None:
        """Serve delivery reports; record the changelog offsets RocksDB now holds (at most every
        RECORD_EVERY_S, or now with `record`)."""
        self.producer.poll(0)
        self.outputs.poll(0)
        self.triggers.poll(0)
        if self._older:
            self._older = [count for count in self._older if count[0]]
        now = time.monotonic()
        if self._persisted and (record or now - self._recorded_at >= RECORD_EVERY_S):
            self._recorded_at = now
            done, self._persisted = self._persisted, {}
            for (topic, partition), offset in done.items():
                try:  # so a restart replays the changelog only from here
                    record_persisted_offset(self._tables[topic].data, partition, offset)
                except Exception:  # the partition moved away and its database closed
                    log.debug("persisted offset of %s[%s] not recorded", topic, partition, exc_info=True)
        if self._failure is not None:
            raise DeliveryFailed(str(self._failure))

    async def drain(self) -> None:
        """Wait until every record sent before this call is acknowledged (or raise
        DeliveryFailed); records sent meanwhile are left to the next drain."""
        if self._producer is None or self._outputs is None or self._triggers is None:
            return
        self.release()
        self._new_epoch()
        self.poll()
        while self._older:
            await asyncio.sleep(0.002)
            self.poll()
        self.poll(record=True)


def _started(prod: Producer | None) -> Producer:
    if prod is None:
        raise RuntimeError("the outbox is not started")
    return prod


def _produce(prod: Producer, topic: str, key: bytes | None, value: bytes | None, partition: int,
             timestamp_ms: int, callback: Callable[[KafkaError | None, Message], None]) -> None:
    try:  # several times per event: produce() directly, the waiting loop only when full
        prod.produce(topic, value, key, on_delivery=callback, partition=partition, timestamp=timestamp_ms)
    except BufferError:
        produce_waiting(prod, topic, value, key, on_delivery=callback, partition=partition,
                        timestamp=timestamp_ms)


KEEP_TRYING = {
    # never give up on a record while the broker is away: a record dropped after a timeout
    # would be lost once the offset is committed
    "message.timeout.ms": 0,
    "queue.buffering.max.messages": 500_000,
    "queue.buffering.max.kbytes": 512 * 1024,
}

HOLD_MAX = 1000
"""Output records held at most before they are produced without waiting for a release."""

RECORD_EVERY_S = 1.0
"""How often acknowledged changelog offsets are written to the partitions' databases (each a
RocksDB write with its log; every 50 ms poll, that was ~3% of a worker's CPU, py-spy on CDNOW).
An offset recorded late is safe: recovery replays the changelog from an earlier offset, and
replaying a key's values ends at the same value. A drain (before each commit and hand-over)
records them all."""


ATTRIBUTE = "tusk_outbox"
"""The attribute of a Faust app that holds its outbox (`Outbox.bind`)."""


def outbox_of(app: Any) -> Outbox:
    """The outbox `build_app` bound to this app."""
    outbox = getattr(app, ATTRIBUTE, None)
    if not isinstance(outbox, Outbox):
        raise RuntimeError("this app has no outbox (stream/runtime/app.py: build_app binds one)")
    return outbox


_BUDGET: list[float] = [-1, 0.0]
"""[rebalance generation, monotonic deadline of its bulk restores]."""


class _Sent(SimpleNamespace):
    """What Faust's Table.on_key_set reads of a sent changelog record: its partition."""


class OutboxTable(faust.Table):  # type: ignore[misc]
    """A Faust table whose changelog records go through the outbox (keys and values are bytes),
    and whose newly assigned partitions are restored in bulk before Faust's recovery."""

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP],
                           generation_id: int = 0) -> None:
        # the write-back state first, while the revoked partitions' databases are still open;
        # then no cached value survives: a partition kept as a standby is updated by Faust
        outbox = outbox_of(self.app)
        if outbox.state is not None:
            outbox.state.flush()
            outbox.state.flush_memtables()  # Faust may write these databases next, with its log
            outbox.state.drop()
        await super().on_rebalance(assigned, revoked, newly_assigned, generation_id)
        settings = outbox.settings
        if settings is None or settings.bulk_restore_ms <= 0:
            return
        topic = self.changelog_topic.get_topic_name()
        standbys = self.app.assignor.assigned_standbys()
        mine = sorted(tp.partition for tp in newly_assigned if tp.topic == topic and tp not in standbys)
        # one budget for all tables of a rebalance: the group waits for this callback
        if _BUDGET[0] != generation_id:
            _BUDGET[:] = [generation_id, time.monotonic() + settings.bulk_restore_ms / 1000]
        deadline = _BUDGET[1]
        if not mine or time.monotonic() >= deadline:
            return
        try:
            written = await asyncio.to_thread(restore, self.data, topic, mine, settings,
                                              deadline - time.monotonic())
            RESTORED_IN_BULK.labels(topic).inc(sum(written.values()))
        except Exception:  # Faust's own recovery reads whatever this did not write
            log.warning("bulk restore of %s %s failed; Faust recovers it", topic, mine, exc_info=True)

    def send_changelog(self, partition: int | None, key: Any, value: Any,
                       key_serializer: Any = None, value_serializer: Any = None) -> Any:
        if partition is None:  # Tusk writes tables only while handling a record of a partition
            raise RuntimeError(f"table {self.name}: a write outside of a partition's record")
        outbox_of(self.app).changelog(self, self.changelog_topic.get_topic_name(), partition, key, value)
        return _Sent(message=SimpleNamespace(partition=partition))
