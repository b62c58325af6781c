"""Where Tusk changes Faust's own behaviour: one place, each change explained.

Checked against faust-streaming 0.15.3 (pinned in pyproject.toml). `install()` refuses to patch
another version: the copied loop below must match the one it replaces.

The consumer's drain loop (`faust.transport.consumer.Consumer._drain_messages`) hands every
record to the topic conductor with

    await self.wait_first(callback(message), self.suspend_flow.wait())

so that a delivery blocked on a full stream buffer can be abandoned when a rebalance suspends
the flow. `wait_first` makes four tasks (the callback, the flow event, the service's stopped and
crashed events) and an `asyncio.wait` per record: on a backlog that is most of a bare agent's CPU.
Nearly every delivery completes without ever blocking (the buffer has room), so the adapter runs
the callback's first step inline and only falls back to `wait_first`, with the rest of the same
coroutine, when the delivery really has to wait. Behaviour kept: gap tracking for acked topics,
commit-every, the read offset, the per-100 yield to the event loop, flow suspension while blocked.

After each batch the drain loop calls what `after_each_batch` registered (the outbox produces the
batch's output records together).

Faust builds its worker consumer with `fetch_max_wait_ms=1500` and aiokafka's `fetch_min_bytes=1`.
aiokafka keeps one fetch in flight per broker, and leaves out of it every partition whose
records it still holds; such a fetch, of partitions with nothing new, waits at the broker for up
to 1.5 s while records pile up on the partitions it left out (one broker, 2,000 events/s on two
workers: p99 above 2 s in 7 of 11 runs; README, Speed). `fetch_in_batches` sets both for an app's
worker consumer: a short wait bounds that stall, and a minimum size lets the broker gather a few
milliseconds of records into one fetch instead of answering each as it lands. While the drain
loop is busy, the wait grows towards a ceiling (stream/runtime/fetch_wait.py): the loop times
each batch it hands out and sets the fetcher's wait from the last second's busy share
(`set_fetch`), so a worker near its capacity handles fewer, larger batches; a nearly idle one
asks for any record and lets the broker hold the fetch longer.

Records of the topics Tusk registers with `deliver_directly` (the touchpoints and the internal
identity topic) skip the rest of Faust's per-record path too: the conductor, the topic channel's
queue, the stream's iterator (one event-loop turn per record), the agent's task and Faust's event
objects. The drain loop awaits the handler on the record and acks it, as the stream would after
the agent's body: the record is in the consumer's unacked set while it is handled, so a rebalance
waits for it (Faust's `wait_empty`), and `getmany` stops handing out records once the flow is
suspended. The record's partition is given to the tables' code through `current_partition`. The
agents stay registered (they make the subscription), and take the records themselves when the
drain loop is not patched (`install` refused the version).
"""

from __future__ import annotations

import asyncio
import logging
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator
from contextvars import ContextVar
from typing import Any, NamedTuple, cast

import faust
import rocksdict
from faust.streams import current_event
from faust.transport import consumer as faust_consumer
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from mode import Service

from stream.runtime.fetch_wait import FetchAsk, FetchWait

log = logging.getLogger(__name__)

CHECKED_VERSION = "0.15.3"


@types.coroutine
def _rest_of(coro: Coroutine[Any, Any, Any], first: Any) -> Generator[Any, Any, Any]:
    """Drive `coro`, which has already run one step and yielded `first`, to its end.

    A plain delegation (what `yield from` does after its first step): whatever the task running
    this sends or throws goes to `coro`, whatever `coro` yields goes to that task.
    """
    value = first
    while True:
        try:
            sent = yield value
        except BaseException as exc:  # cancellation included: `coro` decides
            try:
                value = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                value = coro.send(sent)
            except StopIteration as stop:
                return stop.value


async def _finish(coro: Coroutine[Any, Any, Any], first: Any) -> Any:
    return await _rest_of(coro, first)  # a coroutine object, as wait_first wants


async def _deliver(consumer: Any, callback: Any, message: Any) -> None:
    coro = callback(message)
    try:
        first = coro.send(None)
    except StopIteration:
        return  # delivered without waiting: the common case, no task made
    # The delivery waits (a full buffer): from here on it is Faust's own path, so a rebalance
    # that suspends the flow can still abandon it.
    await consumer.wait_first(_finish(coro, first), consumer.suspend_flow.wait())


Handler = Callable[[Any], Awaitable[None]]
DIRECT = "tusk_direct"
"""The attribute of a Faust app that holds its topics' direct handlers (`deliver_directly`): per
app, so two apps built in one process keep apart."""
_direct_partition: ContextVar[int | None] = ContextVar("tusk_direct_partition", default=None)

YIELD_EVERY_S = 0.005
"""Records handled directly run in the drain loop's task: it gives the event loop a turn (timers,
HTTP, delivery reports) at least this often, where Faust's stream gave one per record."""


def deliver_directly(app: faust.App, topic: str, handler: Handler) -> None:
    """Hand the records of `topic` that `app`'s consumer reads straight from its drain loop to
    `handler(message)` (see the module doc); the topic's agent then receives none of them.
    Registered before the app starts (the drain loop looks the handlers up once)."""
    handlers: dict[str, Handler] | None = getattr(app, DIRECT, None)
    if handlers is None:
        handlers = {}
        setattr(app, DIRECT, handlers)
    handlers[topic] = handler


BATCH_DONE = "tusk_batch_done"
"""The attribute of a Faust app that holds what its drain loop calls after each batch
(`after_each_batch`)."""


def after_each_batch(app: faust.App, callback: Callable[[], None]) -> None:
    """Call `callback()` each time the drain loop has handed out a batch the consumer fetched
    (`getmany`; also an empty one, at most a second apart while nothing comes): Tusk's outbox
    produces the batch's output records then (stream/kafka/outbox.py, `Outbox.release`).
    Registered before the app starts."""
    setattr(app, BATCH_DONE, callback)


async def _handle_directly(consumer: Any, handler: Handler, message: Any) -> None:
    consumer.unacked.add(message)  # until acked, a rebalance waits for it (wait_empty)
    # what the stream's inbound sensor records: without it, Faust's event-path check logs that
    # the partition's stream never started (0.15.3: faust/sensors/monitor.py
    # `on_stream_event_in`, read by faust/transport/drivers/aiokafka.py `verify_event_path`)
    monitor = consumer.app.monitor
    if monitor is not None:
        monitor.stream_inbound_time[message.tp] = time.monotonic()
    token = _direct_partition.set(message.partition)
    try:
        await handler(message)
    except Exception as exc:
        # not acked: the offset does not move past it; as an agent's crash would, stop the
        # worker (a restart reads the record again)
        log.exception("record %s[%s]@%s failed", message.topic, message.partition, message.offset)
        await consumer.app.crash(exc)
        raise
    finally:
        _direct_partition.reset(token)
    consumer.ack(message)


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover - replaces Faust's
    # Faust 0.15.3's loop, line for line, but for the `_deliver` call and the records handled
    # directly (see the module doc).
    callback = self.callback
    direct_for = getattr(self.app, DIRECT, {}).get
    batch_done = getattr(self.app, BATCH_DONE, None)
    clock = time.monotonic
    yielded_at = clock()
    getmany = self.getmany
    consumer_should_stop = cast(Service, self)._stopped.is_set
    fetcher_should_stop = cast(Service, fetcher)._stopped.is_set

    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = CONSUMER_FETCHING
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for

    yield_every = 100
    num_since_yield = 0
    sleep = asyncio.sleep
    fetch: Fetch | None = getattr(self.app, FETCH, None)
    pacing = None if fetch is None else FetchWait.when_on(
        fetch.min_bytes, fetch.max_wait_ms, fetch.busy_wait_ms, fetch.idle_wait_ms, clock())

    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = cast(AsyncIterator, getmany(timeout=1.0))
            await self.sleep(0)
            if not self.should_stop:
                started = None
                async for tp, message in ait:
                    if started is None:
                        started = clock()
                    num_since_yield += 1
                    if num_since_yield > yield_every or clock() - yielded_at >= YIELD_EVERY_S:
                        await sleep(0)
                        num_since_yield = 0
                        yielded_at = clock()

                    offset = message.offset
                    r_offset = get_read_offset(tp)
                    if r_offset is None or offset >= r_offset:
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        handler = direct_for(message.topic)
                        if handler is None:
                            await _deliver(self, callback, message)
                        else:
                            await _handle_directly(self, handler, message)
                        set_read_offset(tp, offset)
                    else:
                        self.log.dev("DROPPED MESSAGE ROFF %r: k=%r v=%r",
                                     offset, message.key, message.value)
                if batch_done is not None:
                    batch_done()
                if pacing is not None:
                    now = clock()
                    ask = pacing.handled(0.0 if started is None else now - started, now)
                    if ask is not None:
                        set_fetch(self, ask)
                unset_flag(flag_consumer_fetching)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


def install() -> bool:
    """Swap in the cheaper drain loop; False (and Faust untouched) on an unchecked version."""
    if faust.__version__ != CHECKED_VERSION:
        log.warning("faust-streaming %s is not the checked %s: its consumer drain is left as it is",
                    faust.__version__, CHECKED_VERSION)
        return False
    faust_consumer.Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]
    AIOKafkaConsumerThread._create_worker_consumer = _create_worker_consumer  # type: ignore[method-assign]
    return True


FETCH = "tusk_fetch"
"""The attribute of a Faust app that holds its worker consumer's `Fetch` (`fetch_in_batches`)."""


class Fetch(NamedTuple):
    min_bytes: int
    max_wait_ms: int
    busy_wait_ms: int
    idle_wait_ms: int

_faust_worker_consumer = AIOKafkaConsumerThread._create_worker_consumer


def fetch_in_batches(app: faust.App, fetch: Fetch) -> None:
    """Fetch records for `app`'s worker consumer in batches of at least `fetch.min_bytes`, each
    waiting at most `fetch.max_wait_ms` at the broker (see the module doc), up to `busy_wait_ms`
    while the drain loop is busy, and any record with up to `idle_wait_ms` while it is nearly
    idle (stream/runtime/fetch_wait.py). Set before the app starts; takes effect where `install()`
    did."""
    setattr(app, FETCH, fetch)


def _create_worker_consumer(self: Any, transport: Any) -> Any:
    """Faust's (faust/transport/drivers/aiokafka.py, 0.15.3), then the app's fetch settings: the
    aiokafka consumer passes them to its fetcher when it starts (aiokafka/consumer/consumer.py,
    `start`)."""
    consumer = _faust_worker_consumer(self, transport)
    fetch: Fetch | None = getattr(self.app, FETCH, None)
    if fetch is not None:
        consumer._fetch_min_bytes, consumer._fetch_max_wait_ms = fetch.min_bytes, fetch.max_wait_ms
    return consumer


def set_fetch(consumer: Any, ask: FetchAsk) -> None:
    """The longest wait at the broker and the least size of a Faust consumer's next fetches, from
    another thread: the aiokafka fetcher reads both as it builds each request (aiokafka 0.14:
    aiokafka/consumer/fetcher.py `Fetcher._get_actions_per_node`; faust 0.15.3:
    faust/transport/drivers/aiokafka.py, the consumer thread's `_consumer`)."""
    aiokafka_consumer = getattr(consumer._thread, "_consumer", None)
    fetcher = getattr(aiokafka_consumer, "_fetcher", None)
    if fetcher is None:  # None until the consumer has started
        return
    # two stores the other thread may see between: never the long idle wait with the batch size
    if ask.min_bytes < fetcher._fetch_min_bytes:  # to any record: the size, then the longer wait
        fetcher._fetch_min_bytes = ask.min_bytes
        fetcher._fetch_max_wait_ms = ask.max_wait_ms
    else:  # to batches: the shorter wait, then the size
        fetcher._fetch_max_wait_ms = ask.max_wait_ms
        fetcher._fetch_min_bytes = ask.min_bytes


# --- Faust internals used elsewhere in Tusk ---------------------------------------------------
# Every private attribute of a Faust object that Tusk reads, writes or patches is reached through
# a function of this section (tests/unit/test_faust_private.py fails on one reached elsewhere).
# Each was read in faust-streaming 0.15.3 (CHECKED_VERSION); the file named is where.


def current_partition() -> int:
    """The partition of the record being handled: Faust's tables keep a record's state in the
    database (and changelog partition) of that record's partition (`Store._set`).
    0.15.3: faust/streams.py `current_event` (a context variable set per delivered event)."""
    partition = event_partition()
    if partition is None:
        raise RuntimeError("table state is read or written outside of a partition's record")
    return partition


def event_partition() -> int | None:
    """The current record's partition (handled directly, or delivered by Faust's stream), or None
    outside of a record (0.15.3: faust/streams.py)."""
    partition = _direct_partition.get()
    if partition is not None:
        return partition
    event = current_event()
    return None if event is None else int(event.message.partition)


def store_db(store: Any, partition: int) -> Any:
    """The rocksdict database of a store partition, opened if need be.
    0.15.3: faust/stores/rocksdb.py `Store._db_for_partition`."""
    return store._db_for_partition(partition)


def partition_db(table: Any, partition: int) -> Any:
    """The rocksdict database of a table partition (`table.data` is its RocksDB store)."""
    return store_db(table.data, partition)


UNLOGGED = rocksdict.WriteOptions()
UNLOGGED.disable_wal = True  # type: ignore[method-assign,assignment]  # a property; the stub says method
"""Write options of Tusk's own writes into the tables' databases: no write-ahead log.

A database only Tusk writes without the log is, after a crash, a prefix of its writes (the
memtables lost are the newest writes; one column family, flushed in order). Every value is in
it before the changelog offset that covers it (stream/state/writeback.py: batch written, then
the record produced, then its acknowledged offset recorded), so the offset never claims more
than the database holds, and recovery replays the changelog from there. Faust writes with the
log (a standby or recovery applying changelog records): those writes may not follow unflushed
unlogged ones, or a crash would keep the later logged writes (and their offset) and lose the
earlier unlogged ones: hence `flush_memtable` before Faust writes a partition Tusk wrote.
Measured (rocksdict, a paced batch of one 11 KB profile and 4 small keys): 40 µs of the
writing thread's CPU with the log, 11 to 13 µs without."""


def write_unlogged(db: Any, batch: Any) -> None:
    db.write(batch, UNLOGGED)


def persisted_offset_entry(store: Any, offset: int) -> tuple[bytes, bytes]:
    """The key and value under which Faust keeps a partition database's persisted changelog offset
    (recovery starts after it). 0.15.3: faust/stores/rocksdb.py `Store.offset_key`,
    `Store.set_persisted_offset`."""
    return store.offset_key, str(offset).encode()


def record_persisted_offset(store: Any, partition: int, offset: int) -> None:
    """Faust's `Store.set_persisted_offset`, without the log, like the writes it covers."""
    store_db(store, partition).put(*persisted_offset_entry(store, offset), UNLOGGED)


def flush_memtable(db: Any) -> None:
    """Write a database's memtables to its files (and wait): unlogged writes survive a crash."""
    db.flush(True)


def open_dbs(store: Any) -> dict[int, Any]:
    """partition → database of the partitions this worker has open (active or standby).
    0.15.3: faust/stores/rocksdb.py `Store._dbs` (a dict, filled by `_db_for_partition`)."""
    dbs: dict[int, Any] = getattr(store, "_dbs", {})
    return dbs


def open_db(table: Any, partition: int) -> Any | None:
    """The table partition's database if this worker has it open, else None."""
    return open_dbs(table.data).get(partition)


def committed_offset(consumer: Any, tp: Any) -> int | None:
    """The group's committed offset of a partition as the consumer knows it (set on assignment
    and on each commit). 0.15.3: faust/transport/consumer.py `Consumer._committed_offset`."""
    offset: int | None = consumer._committed_offset.get(tp)
    return offset


def recovery(app: Any) -> Any:
    """The tables' recovery service. 0.15.3: faust/tables/manager.py `TableManager.recovery`
    (public there, but not in faust.types' TableManagerT: hence here)."""
    return app.tables.recovery


def recovered(app: Any) -> bool:
    """Has the tables' recovery completed (0.15.3: faust/tables/recovery.py `completed` event)?"""
    return bool(recovery(app).completed.is_set())


def chain_producer_flush(app: Any, after: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `after` whenever Faust flushes its producer (before each offset commit and before a
    rebalance hands partitions over). Patched on the instance: 0.15.3's Consumer.commit and
    the rebalance path call `app.producer.flush()` (faust/transport/consumer.py,
    faust/app/base.py `_on_partitions_revoked`)."""
    faust_producer = app.producer
    faust_flush = faust_producer.flush

    async def flush() -> None:
        await faust_flush()
        await after()

    faust_producer.flush = flush


class _RocksDBTuning:
    """What Tusk changes in the options Faust builds for each table database: one wrapper of
    0.15.3's `RocksDBOptions.as_options` (faust/stores/rocksdb.py) applies all of it."""

    small_manifest = False
    memory: tuple[Any, Any] | None = None  # (block cache, write buffer manager)


_TUNING = _RocksDBTuning()


def _tune_rocksdb_options() -> None:
    """Wrap `RocksDBOptions.as_options` (once): every database opened from then on gets _TUNING."""
    from faust.stores import rocksdb as faust_rocksdb

    options_cls: Any = faust_rocksdb.RocksDBOptions
    if getattr(options_cls, "_tusk_tuned", False):
        return
    as_options: Callable[..., Any] = options_cls.as_options

    def tuned(self: Any) -> Any:
        opts = as_options(self)
        if not self.use_rocksdict:
            return opts
        if _TUNING.small_manifest:
            opts.set_max_manifest_file_size(1)
        if _TUNING.memory is not None:
            # Faust's table factory, but for its cache of its own per database
            cache, memtables = _TUNING.memory
            table = rocksdict.BlockBasedOptions()
            table.set_bloom_filter(self.bloom_filter_size, True)
            table.set_index_type(rocksdict.BlockBasedIndexType.binary_search())
            table.set_block_cache(cache)
            table.set_cache_index_and_filter_blocks(True)
            table.set_pin_l0_filter_and_index_blocks_in_cache(True)
            opts.set_block_based_table_factory(table)
            opts.set_write_buffer_manager(memtables)
        return opts

    options_cls.as_options = tuned
    options_cls._tusk_tuned = True


def hook_rocksdb_store(*, on_delete: Callable[[Any, bytes], None],
                       on_changelog_delete: Callable[[Any, bytes, int], None],
                       on_open: Callable[[Any, int], None], small_manifest: bool) -> None:
    """Hook Faust's RocksDB store class (once): `on_delete(store, key)` after a table delete,
    `on_changelog_delete(store, key, partition)` per tombstone a standby or recovery applies,
    `on_open(store, partition)` when a partition's database opens; with `small_manifest`, the
    MANIFEST is rewritten on every change. 0.15.3: faust/stores/rocksdb.py `Store._del`,
    `Store.apply_changelog_batch`, `Store._open_for_partition`, `RocksDBOptions.as_options`."""
    from faust.stores import rocksdb as faust_rocksdb

    store_cls: Any = faust_rocksdb.Store
    if getattr(store_cls, "_tusk_hooked", False):
        return
    _TUNING.small_manifest = small_manifest
    _tune_rocksdb_options()
    delete: Callable[..., None] = store_cls._del
    apply_batch: Callable[..., None] = store_cls.apply_changelog_batch
    open_for_partition: Callable[..., Any] = store_cls._open_for_partition

    def _open_for_partition(self: Any, partition: int) -> Any:
        db = open_for_partition(self, partition)
        on_open(self, partition)
        return db

    def _del(self: Any, key: bytes) -> None:
        delete(self, key)
        on_delete(self, key)

    def apply_changelog_batch(self: Any, batch: Any, to_key: Any, to_value: Any) -> None:
        events = list(batch)
        apply_batch(self, events, to_key, to_value)
        for event in events:
            msg = event.message
            if msg.value is None:
                on_changelog_delete(self, msg.key, msg.partition)

    store_cls._del = _del
    store_cls.apply_changelog_batch = apply_changelog_batch
    store_cls._open_for_partition = _open_for_partition
    store_cls._tusk_hooked = True


def share_rocksdb_memory(block_cache_bytes: int, memtables_bytes: int) -> tuple[Any, Any]:
    """Make every table partition database opened from now on draw on one block cache (data,
    index and filter blocks) and one memtable budget; returns them (cache, write buffer manager).

    Faust builds a new block cache for each database and keeps index and filter blocks outside
    it: a worker's RocksDB memory was databases (3 tables × partitions, standbys included) ×
    (cache + memtables) plus the index of every file, so it grew with the partitions it held
    and with the data. The write buffer manager flushes the largest memtables once their sum
    nears its budget. Databases already open keep their options; the last call's budget applies
    to later ones."""
    _TUNING.memory = (rocksdict.Cache(block_cache_bytes),
                      rocksdict.WriteBufferManager(memtables_bytes, False))
    _tune_rocksdb_options()
    return _TUNING.memory
