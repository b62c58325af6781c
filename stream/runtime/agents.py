"""Agents: hand Faust's records to the pipeline (stream/runtime/pipeline.py), and the worker's timers.

Importing this module builds nothing: the worker (stream/runtime/worker.py) calls `build_pipeline` on
the app `build_app` returned (stream/runtime/app.py), then `register` to add the agents and timers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

import faust
import orjson
from confluent_kafka import Consumer, KafkaException
from faust.types import TP, Message

from stream.kafka.clients import ensure_topic, reader, watermarks
from stream.kafka.outbox import DeliveryFailed
from stream.runtime import metrics as m
from stream.runtime.app import TuskApp
from stream.runtime.definitions import DefinitionsReader
from stream.runtime.faust_adapter import (
    after_each_batch,
    committed_offset,
    deliver_directly,
    open_dbs,
    recovered,
    recovery,
)
from stream.runtime.pipeline import Pipeline
from stream.runtime.settings import Settings
from stream.state.partition import TableState
from stream.state.writeback import StateWriteFailed

log = logging.getLogger(__name__)

PARTITIONS_MAX_AGE_S = 60.0
METADATA_RETRY_S = 5.0
"""How long a worker whose broker did not answer a metadata request waits before it asks again
(until then its events take the internal hop: always correct, only slower)."""


class FaustHost:
    """The pipeline's view of the consumer group and the broker (stream/pipeline.Host), over the
    Faust app; Faust internals through stream/runtime/faust_adapter.py."""

    def __init__(self, app: faust.App, settings: Settings, touchpoints: str) -> None:
        self.app, self.settings, self.touchpoints = app, settings, touchpoints
        self._partition_count: int | None = None
        self._partitions_read_at = 0.0  # monotonic time to read the count again
        self._reading = False  # a read is under way in a thread

    def touchpoint_partitions(self) -> int | None:
        """The touchpoints topic's partition count as last read from the broker's metadata (None
        until read). Read again every `PARTITIONS_MAX_AGE_S` (partitions can be added), and at
        most every `METADATA_RETRY_S` while the broker does not answer.

        The read runs in a thread: this is asked on the event loop for every event, and a
        metadata request waits up to 2 s on a slow broker; meanwhile the count kept is used.

        Not Faust's `consumer.topic_partitions`: aiokafka fills the snapshot behind it on the
        group leader only, so every other worker saw None and sent each of its events through
        the internal hop (measured with 2 workers at 250 events/s: the leader sent none of its
        events through the hop, the other all of them)."""
        if not self._reading and time.monotonic() >= self._partitions_read_at:
            self._reading = True
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (tools): nothing to hold up, read here
                self._read_partitions()
            else:
                loop.run_in_executor(None, self._read_partitions)
        return self._partition_count

    def _read_partitions(self) -> None:
        try:
            topic = self.end_reader.list_topics(self.touchpoints, timeout=2.0).topics.get(self.touchpoints)
        except Exception:  # no answer, or the reader closing: keep the count, read again later
            topic = None
        if topic is None or topic.error is not None or not topic.partitions:
            self._partitions_read_at = time.monotonic() + METADATA_RETRY_S
        else:
            self._partition_count = len(topic.partitions)
            self._partitions_read_at = time.monotonic() + PARTITIONS_MAX_AGE_S
        self._reading = False  # last: a caller that sees no read under way sees the new time too

    def assigned(self, topic: str) -> list[int]:
        return sorted(tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic == topic)

    def committed(self, topic: str, partition: int) -> int | None:
        return committed_offset(self.app.consumer, TP(topic, partition))

    @functools.cached_property
    def end_reader(self) -> Consumer:
        """A group-less reader for end offsets (the group id is required, never joined)."""
        return reader(self.settings, f"{self.settings.app_id}-ends")

    def end_offsets(self, topic: str, partitions: list[int]) -> dict[int, int | None]:
        """The broker's end offset of each partition (blocking: run in a thread).

        Asked of the broker each time, not taken from the group consumer, whose figure is stale
        while Faust keeps a partition paused (recovery after a rebalance)."""
        ends: dict[int, int | None] = {}
        for p in partitions:
            try:
                ends[p] = watermarks(self.end_reader, topic, p, timeout=2.0)[1]
            except KafkaException:  # broker unreachable for now: not known to be at the end
                ends[p] = None
        return ends

    def ensure_topic(self, name: str) -> None:
        ensure_topic(self.settings, name)

    async def crash(self, e: BaseException) -> None:
        await self.app.crash(e)


def build_pipeline(built: TuskApp, settings: Settings) -> Pipeline:
    """The stages over a built app's tables (through its write-back layer) and its outbox."""
    touchpoints = built.touchpoints.get_topic_name()
    holder: list[Pipeline] = []
    reader = DefinitionsReader(settings, on_change=lambda catalog: holder[0].warm_activation_topics(catalog))
    pipeline = Pipeline(
        settings, TableState(built.writeback, built.identities, built.profiles, built.meta), built.outbox,
        reader,
        FaustHost(built.app, settings, touchpoints), touchpoints=touchpoints,
        routed=built.routed.get_topic_name(), dlq=built.dlq.get_topic_name(),
        changes=built.changes.get_topic_name(), results=built.results.get_topic_name())
    holder.append(pipeline)
    return pipeline


def register(built: TuskApp, pipeline: Pipeline) -> None:
    """The Faust agents and timers of a worker: each hands its records to the pipeline."""
    app, settings = built.app, pipeline.settings

    route, handle = pipeline.ingest, pipeline.handle_record

    async def touchpoint(msg: Message) -> None:
        inline = route(msg.key, msg.value, msg)
        if inline is not None:
            key, record, source = inline
            await handle(key, record, msg, source)
            # after the event: a tick reporting this event's time is queued behind it
            pipeline.read_source(msg.partition, msg.offset, record["ev"]["ts"])

    async def routed(msg: Any) -> None:  # internal records: always a key and a value
        await handle(msg.key.decode(), orjson.loads(msg.value), msg)

    # the drain loop hands these topics' records to the handlers itself; the agents below
    # subscribe to them, and take the records when it does not (stream/runtime/faust_adapter.py)
    deliver_directly(app, built.touchpoints.get_topic_name(), touchpoint)
    deliver_directly(app, built.routed.get_topic_name(), routed)
    after_each_batch(app, built.outbox.release)  # a batch's outputs are produced together

    @app.agent(built.touchpoints, name=f"{__name__}.ingest")
    async def ingest(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            await touchpoint(event.message)

    @app.agent(built.privacy, name=f"{__name__}.privacy_requests")
    async def privacy_requests(stream):  # type: ignore[no-untyped-def]
        """Requests from tusk.privacy become P records keyed by the identifier they name."""
        async for event in stream.events():
            pipeline.privacy_request(event.key, event.value)

    @app.agent(built.routed, name=f"{__name__}.identity_stage")
    async def identity_stage(stream):  # type: ignore[no-untyped-def]
        async for event in stream.events():
            await routed(event.message)

    @app.timer(settings.tick_interval_ms / 1000, name=f"{__name__}.tick")
    async def tick() -> None:
        """Time passes: every partition hears the clock; new definitions start backfills."""
        if recovered(app):
            await pipeline.tick()

    @app.timer(0.05, name=f"{__name__}.deliveries")
    async def deliveries() -> None:
        """Output records sent outside of a consumer batch (timers, HTTP) are produced; delivery
        reports of the outbox (changelog offsets, failures) are served on the loop; the hot
        path's metric counts reach Prometheus."""
        m.TALLY.fold()
        try:
            built.outbox.release()
            built.outbox.poll()
        except DeliveryFailed as e:
            await pipeline.platform_failure(e)

    @app.timer(settings.flush_interval_ms / 1000, name=f"{__name__}.flush_state")
    async def flush_state() -> None:
        """Changed state is written at least this often when records stop coming
        (stream/state/writeback.py)."""
        try:
            pipeline.state.flush_due()
        except StateWriteFailed as e:
            await pipeline.platform_failure(e)

    @app.timer(5.0, name=f"{__name__}.count_profiles")
    async def count_profiles() -> None:
        total = 0
        for db in open_dbs(built.profiles.data).values():
            try:
                total += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
            except Exception:  # estimate unavailable on a closing db
                continue
        m.PROFILES_STORED.set(total)
        try:  # Faust internals: a missing attribute must not stop the timer
            m.RECOVERY_REMAINING.set(recovery(app).active_remaining_total())
            m.RECOVERY_STANDBY_REMAINING.set(recovery(app).standby_remaining_total())
            sources = {built.touchpoints.get_topic_name(), built.routed.get_topic_name()}
            consumer = app.consumer
            for tp in app.assignor.assigned_actives():
                if tp.topic in sources:
                    high = consumer.highwater(tp)
                    done = committed_offset(consumer, tp)
                    if high is not None:
                        m.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - (done or 0)))
        except Exception:  # not assigned yet, or rebalancing
            log.debug("lag metrics unavailable", exc_info=True)

