"""The worker's stages without Faust: what the agents of stream/runtime/agents.py do with a record.

A `Pipeline` owns what a worker keeps between records (the state, the definitions reader, the
event-time clocks, the source partitions' progress, the backfills started, the activation topics
created, the identity and activation configs) and runs the stage logic: routing an event inline
or through the internal hop, identity records, ticks (deadlines, the low watermark), backfill
steps. It talks to the outside through three objects it is given:

- `state`: a stream.state.partition.State (RocksDB tables in the worker, memory in tests);
- `outbox`: anything with `send(topic, key, value, partition=None, timestamp_ms=None)`;
- `host`: the consumer group's view (`Host`: partition counts, assignments, committed offsets,
  end offsets, crashing the worker), Faust's in the worker (stream/runtime/agents.py).

So the stages are unit-testable with `MemoryState`, a list for an outbox and a fake host
(tests/unit/test_pipeline_stages.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Protocol

import orjson

from processors import protocol
from processors.activation.policy import ActivationConfig, load_activation_config
from processors.common import records
from processors.identity import graph as identity
from processors.identity.partitioning import partition_for
from processors.ingest import events as ev
from processors.ingest.dlq import dlq_record
from processors.ingest.events import Reject
from processors.ingest.identifiers import routing_key
from processors.journeys import engine as journeys
from processors.privacy.requests import privacy_request
from processors.profile.unified import ProfileLimits
from processors.segments.definitions import named_channels
from stream.runtime import metrics as m
from stream.runtime.failures import is_platform_failure
from stream.runtime.settings import Settings
from stream.state.partition import State

log = logging.getLogger(__name__)

HANDLERS = protocol.handlers()  # identity's and privacy's record kinds (processors/common/records.py)

IDLE_AFTER_S = 2.0
"""A source partition read to its end this long holds the watermark back no more."""


class Host(Protocol):
    """What the stages ask of the consumer group and the broker."""

    def touchpoint_partitions(self) -> int | None:
        """Partitions of the touchpoints topic as last read (None while unknown); never waits
        for the broker."""

    def assigned(self, topic: str) -> list[int]:
        """Partitions of `topic` this worker holds as active, sorted."""

    def committed(self, topic: str, partition: int) -> int | None:
        """The group's committed offset of a partition, as this worker's consumer knows it."""

    def end_offsets(self, topic: str, partitions: list[int]) -> dict[int, int | None]:
        """The broker's end offsets (None: not known now); blocking."""

    def ensure_topic(self, name: str) -> None:
        """Create a topic if it does not exist; blocking."""

    async def crash(self, e: BaseException) -> None:
        """Stop the worker before the offset moves past the current record."""


class Outbox(Protocol):
    def send(self, topic: str, key: bytes | None, value: bytes | None, partition: int | None = None,
             timestamp_ms: int | None = None) -> None: ...


class Pipeline:
    def __init__(self, settings: Settings, state: State, outbox: Outbox, reader: Any, host: Host,
                 *, touchpoints: str, routed: str, dlq: str, changes: str, results: str) -> None:
        self.settings = settings
        self.state = state
        self.outbox = outbox
        self.reader = reader
        """The definitions (stream.runtime.definitions.DefinitionsReader, started before the first event)."""
        self.host = host
        self.touchpoints, self.routed, self.dlq, self.changes, self.results = (
            touchpoints, routed, dlq, changes, results)
        self.n = n = settings.partitions
        limits = ProfileLimits(settings.dedup_window_ms, settings.dedup_max_ids, settings.recent_events,
                               settings.retention_ms, settings.profile_ttl_ms)
        self.cfg = (identity.load_identity_config(settings.identity_config, n, limits)
                    if settings.identity_config
                    else identity.IdentityConfig(partitions=n, profile_limits=limits))
        self.activation = (load_activation_config(settings.activation_config) if settings.activation_config
                           else ActivationConfig())
        self.time_clock = settings.clock == "event"
        self.watermark: dict[int, int] = {}
        """Event-time clock per internal partition (TUSK_CLOCK=event); persisted by ticks with the
        offset of the tick, so a replayed tick is recognised."""
        self.sources: dict[int, list[Any]] = {}
        """Touchpoint partition → [latest event time, last offset read, caught up since (monotonic s)]."""
        self.backfills: dict[int, str] = {}
        """Backfill chains this worker started, by partition (fingerprint of the definitions)."""
        self.activation_topics: set[str] = set()
        self._mismatch_warned: int | None = None  # the touchpoints' partition count last warned of
        self._env: identity.Env | None = None

    # --- ingest: touchpoints → the partition that resolves the event -------------------------

    def ingest(self, key: bytes | None, raw: bytes | None, msg: Any
               ) -> tuple[str, dict[str, Any], tuple[int, int]] | None:
        """Validate an event and route it: dead-lettered or sent through the internal hop (None),
        or (key, record, source) to handle inline, on this partition, by the caller."""
        m.tally(m.EVENTS_IN)
        settings = self.settings
        record_ms = int((msg.timestamp or time.time()) * 1000)
        try:
            result = ev.validate(raw, record_ts_ms=record_ms,
                                 max_bytes=settings.max_event_bytes, rules=self.cfg.rules)
        except Exception as e:  # a bug must not stop the stream; keep the input
            log.exception("validation crashed at %s[%s]@%s", msg.topic, msg.partition, msg.offset)
            result = Reject("internal_error", None, f"{type(e).__name__} while validating")
        if isinstance(result, Reject):
            m.tally(m.REJECTED, result.reason)
            record = dlq_record(result, raw or b"", topic=msg.topic, partition=msg.partition,
                                offset=msg.offset, received_at=int(time.time() * 1000))
            self.outbox.send(self.dlq, key, orjson.dumps(record))
            self.read_source(msg.partition, msg.offset, None)
            return None
        rkey = routing_key(result.identifiers)
        record = records.event({"m": result.msg, "ts": result.ts,
                                "ids": [list(i) for i in result.identifiers]})
        home = partition_for(rkey, self.n)
        if home == msg.partition and self.co_partitioned():
            # keyed by its routing identifier, the event already sits on the partition that
            # resolves it (same number, same worker: Faust co-assigns topics and tables with
            # N partitions): resolve and apply it here, without the internal hop. The caller
            # handles it, then calls `read_source` (a tick reporting this event's time is
            # queued behind the event itself)
            m.tally(m.ROUTED, "inline")
            return rkey, record, (touchpoint_source(msg.partition), msg.offset)
        m.tally(m.ROUTED, "hop")
        self.outbox.send(self.routed, rkey.encode(), orjson.dumps(record), home, timestamp_ms=record_ms)
        # after the send: a tick reporting this event's time is queued behind the event itself
        self.read_source(msg.partition, msg.offset, result.ts)
        return None

    def co_partitioned(self) -> bool:
        """Does the touchpoints topic have the internal topic's partition count (N)? Asked of the
        host each time (it keeps the count and reads it again now and then: partitions can be
        added), so a count that changes is followed, not the first one kept for the worker's life."""
        count = self.host.touchpoint_partitions()
        if not count:  # no metadata yet: take the hop this time
            return False
        if count != self.n and count != self._mismatch_warned:
            self._mismatch_warned = count
            log.warning("%s has %s partitions, not %s: every event takes the internal hop",
                        self.touchpoints, count, self.n)
        return count == self.n

    def read_source(self, partition: int, offset: int, ts: int | None) -> None:
        if self.time_clock:
            seen = self.sources.setdefault(partition, [None, -1, None])
            seen[1], seen[2] = offset, None
            if ts is not None:
                seen[0] = ts if seen[0] is None else max(seen[0], ts)

    def privacy_request(self, key: bytes | None, raw: bytes) -> None:
        """A request from tusk.privacy becomes a P record keyed by the identifier it names."""
        try:
            req = privacy_request(raw)
        except ValueError as e:
            rid = key.decode(errors="replace") if key else ""
            self.outbox.send(self.results, key, orjson.dumps({
                "request_id": rid, "status": "rejected", "reason": str(e),
                "completed_at": int(time.time() * 1000)}))
            return
        self.send_internal(req["identifier"], records.privacy_request(req["type"], req["request_id"]))

    def send_internal(self, key: str, msg: dict[str, Any]) -> None:
        self.outbox.send(self.routed, key.encode(), orjson.dumps(msg), partition_for(key, self.n))

    # --- the identity stage: records of one internal partition --------------------------------

    def now_ms(self, partition: int) -> int:
        """The clock segments are judged by: wall time, or this partition's event-time watermark."""
        if not self.time_clock:
            return int(time.time() * 1000)
        wm = self.watermark.get(partition)
        if wm is None:  # after a restart: the watermark the last tick stored
            wm = self.watermark[partition] = self.state.clock()[0]
        return wm

    def env_at(self, now: int) -> identity.Env:
        reader = self.reader
        env = self._env
        # an Env is frozen: the records of one instant and one set of definitions share it
        if (env is None or env.now != now or env.catalog is not reader.catalog
                or env.journeys is not reader.journeys or env.activation is not self.activation
                or env.event_time != self.time_clock or env.journey_partitions != self.n):
            env = self._env = identity.Env(
                now, reader.catalog, self.activation, event_time=self.time_clock,
                journeys=reader.journeys, journey_active=self.journey_active, journey_partitions=self.n)
        return env

    def journey_active(self, jid: str) -> int:
        return int(self.state.journey_stats().get(jid, {}).get("", {}).get("active", 0))

    async def activation_topic(self, channel: str) -> str:
        """tusk.activations.<channel>, created on first use (channels are named by definitions)."""
        name = self.settings.topics.activations(channel)
        if name not in self.activation_topics:
            await asyncio.to_thread(self.host.ensure_topic, name)
            self.activation_topics.add(name)
        return name

    def warm_activation_topics(self, _catalog: Any = None) -> None:
        """Create the activation topics the definitions name as soon as they are read (in the
        definitions reader's thread), so a channel's first trigger does not stop its partition
        for the admin client's round trips (a quarter of a second at start, seen in p99)."""
        for channel in sorted(named_channels(list(self.reader.records.values()))):
            name = self.settings.topics.activations(channel)
            if name in self.activation_topics:
                continue
            try:
                self.host.ensure_topic(name)
            except Exception:  # the first trigger tries again, on the loop
                log.warning("activation topic %s not created yet", name, exc_info=True)
                continue
            self.activation_topics.add(name)

    async def settle(self, fx: identity.Effects) -> None:
        """Write what a call decided besides the profile itself: deadlines, sizes, transitions."""
        state, send = self.state, self.outbox.send
        for pid, old, new in fx.schedule:
            state.move_deadline(pid, old, new)
        if any(fx.sizes.values()):
            state.add_segment_sizes(fx.sizes)
        if any(fx.journey_counts.values()):
            state.set_journey_stats(journeys.add_counts(state.journey_stats(), fx.journey_counts))
        for channel, trigger in fx.triggers:
            send(await self.activation_topic(channel), trigger["profile_id"].encode(), orjson.dumps(trigger))
            m.tally(m.TRIGGERS, channel)
        for what, n in fx.suppressed.items():
            channel, _, reason = what.partition(":")
            m.tally(m.SUPPRESSED, channel, reason, n=n)
        for result in fx.results:
            send(self.results, result["request_id"].encode(),
                 orjson.dumps({**result, "completed_at": int(time.time() * 1000)}))
        now = int(time.time() * 1000)
        for change in fx.changes:
            send(self.changes, change["profile_id"].encode(), orjson.dumps({**change, "recorded_at": now}))
        m.tally_each(m.SEGMENT_TRANSITIONS, [(c["segment"], c["transition"]) for c in fx.changes
                                             if c.get("type") == "segment"])

    def dead_letter(self, key: str, record: dict[str, Any], msg: Any, reason: str, detail: str) -> None:
        m.tally(m.REJECTED, reason)
        self.outbox.send(self.dlq, key.encode(), orjson.dumps(dlq_record(
            Reject(reason, None, detail), orjson.dumps(record), topic=msg.topic,
            partition=msg.partition, offset=msg.offset, received_at=int(time.time() * 1000))))

    async def platform_failure(self, e: BaseException) -> None:
        # the platform, not the record: stop before the offset moves past it, so a
        # restarted worker replays it
        log.critical("identity stage cannot write its state: %r", e)
        await self.host.crash(e)

    async def on_record(self, key: str, record: dict[str, Any], msg: Any,
                        source: tuple[int, int] | None = None) -> None:
        source = source or (msg.partition, msg.offset)
        state, cfg = self.state, self.cfg
        state.begin(msg.partition)
        pending = [(key, record)]
        while pending:
            key, record = pending.pop(0)
            env = self.env_at(self.now_ms(msg.partition))
            try:
                fx = identity.handle(key, record, state, cfg, source, env, HANDLERS)
            except Exception as e:
                if is_platform_failure(e):
                    await self.platform_failure(e)
                    raise
                # the record's failure (a bug meeting it): keep it, replayable, in the DLQ
                log.exception("identity record %s failed at %s@%s", record.get("k"), *source)
                self.dead_letter(key, record, msg, "internal_error",
                                 f"{type(e).__name__} in identity record {record.get('k')}")
                continue
            count(fx)
            for reason, dead in fx.dead:
                self.dead_letter(key, dead, msg, reason, f"identity record {dead.get('k')} kept bouncing")
            for out_key, out in fx.send:
                if identity.runs_inline(record, out_key, out, msg.partition, cfg):
                    pending.append((out_key, out))
                else:
                    self.send_internal(out_key, out)
            await self.settle(fx)

    async def on_tick(self, record: dict[str, Any], msg: Any) -> None:
        """Re-check the profiles of this partition whose deadline has passed."""
        p = msg.partition
        state = self.state
        state.begin(p)
        if self.time_clock:
            now, set_at = state.clock()
            if msg.offset <= set_at:
                # a tick replayed after a crash: the stored watermark is ahead of the records replayed
                # with it, so firing deadlines now could judge a profile before its own events
                return
            if "src" in record:
                sources = state.sources()
                for sp, (wm, idle) in record["src"].items():
                    old = sources.get(sp, [None, False])[0]
                    sources[sp] = [wm if old is None else old if wm is None else max(old, wm), idle]
                state.set_sources(sources)
                low = low_watermark(sources, int(record.get("of") or self.n))
                if low is not None and low > now:
                    log.debug("watermark of partition %s: %s (inputs %s)", p, low, sources)
                now = max(now, low or 0)
            self.watermark[p] = now
            state.set_clock(now, msg.offset)
        else:
            now = int(time.time() * 1000)
        batch = self.settings.backfill_batch
        due = state.due(now, batch)
        env = self.env_at(now)
        for at, pid in due:
            state.move_deadline(pid, at, None)
            fx = identity.recheck(pid, state, env, f"time:{at}", cfg=self.cfg)
            m.tally(m.RECHECKS, "time")
            for out_key, out in fx.send:  # an expired profile's erase request
                self.send_internal(out_key, out)
            await self.settle(fx)
        if len(due) >= batch:  # more are due: continue right after this one
            self.outbox.send(self.routed, b"tick", orjson.dumps(records.tick()), p)

    async def on_backfill(self, record: dict[str, Any], msg: Any) -> None:
        """Evaluate a batch of this partition's stored profiles against new definitions."""
        p = msg.partition
        state = self.state
        state.begin(p)
        if record["fp"] != self.reader.fingerprint:
            return  # definitions changed again: a newer chain does the work
        batch = self.settings.backfill_batch
        pids = state.profile_ids(record.get("after") or None, batch)
        env = self.env_at(self.now_ms(p))
        for pid in pids:
            fx = identity.recheck(pid, state, env, f"backfill:{record['fp']}", everything=True, cfg=self.cfg)
            m.tally(m.RECHECKS, "backfill")
            await self.settle(fx)
        if pids and len(pids) >= batch:
            self.outbox.send(self.routed, b"backfill",
                             orjson.dumps(records.backfill(record["fp"], pids[-1])), p)
        else:
            state.set_backfilled(record["fp"])

    async def handle_record(self, key: str, record: dict[str, Any], msg: Any,
                            source: tuple[int, int] | None = None) -> None:
        """One identity-protocol record (or tick, or backfill step) of this partition, timed."""
        started = time.perf_counter()
        kind = record.get("k")
        try:
            if kind == records.Kind.TICK:
                await self.on_tick(record, msg)
            elif kind == records.Kind.BACKFILL:
                await self.on_backfill(record, msg)
            else:
                await self.on_record(key, record, msg, source)
        except Exception as e:
            if is_platform_failure(e):
                await self.platform_failure(e)
            raise
        m.PROCESSING_SECONDS.observe(time.perf_counter() - started)
        if msg.timestamp and kind == records.Kind.EVENT:
            m.EVENT_LAG_SECONDS.observe(max(0.0, time.time() - msg.timestamp))

    # --- the clock: ticks and backfills this worker starts -----------------------------------

    def my_sources(self) -> list[int]:
        return self.host.assigned(self.touchpoints)

    def active_partitions(self) -> list[int]:
        return self.host.assigned(self.routed)

    def source_report(self, ends: dict[int, int | None]) -> dict[str, list[Any]]:
        """[latest event time, read to the end for a while] of the touchpoint partitions given."""
        report: dict[str, list[Any]] = {}
        now = time.monotonic()
        # entries of partitions read elsewhere for a while are kept: what they hold is a lower bound
        # (the committed offset lifts it), while Faust does not hand over again records it has read
        mine = set(self.my_sources())
        for p, end in ends.items():
            if p not in mine:
                continue
            seen = self.sources.setdefault(p, [None, -1, None])
            committed = self.host.committed(self.touchpoints, p)
            if committed is not None:  # the group's offset, set when the partition was assigned
                seen[1] = max(seen[1], committed - 1)
            at_end = end is not None and seen[1] + 1 >= end
            if not at_end:
                seen[2] = None
            elif seen[2] is None:
                seen[2] = now
            report[str(p)] = [seen[0], at_end and now - seen[2] >= IDLE_AFTER_S]
        return report

    async def tick(self) -> None:
        """Time passes: every partition hears the clock; new definitions start backfills."""
        n, send, reader = self.n, self.outbox.send, self.reader
        if self.time_clock:  # each partition derives its watermark from what the source partitions report
            of = self.host.touchpoint_partitions() or n  # None: no metadata yet
            ends = await asyncio.to_thread(self.host.end_offsets, self.touchpoints, self.my_sources())
            value = orjson.dumps(records.tick(self.source_report(ends), of))
        else:
            value = orjson.dumps(records.tick())
        # every partition, not just ours: the event-time watermark must reach them all
        for p in range(n):
            send(self.routed, b"tick", value, p)
        fp = reader.fingerprint
        mine = self.active_partitions()
        state = self.state
        for p in mine:
            if self.backfills.get(p) != fp and state.peek_backfilled(p) != fp:
                self.backfills[p] = fp
                send(self.routed, b"backfill", orjson.dumps(records.backfill(fp, None)), p)
        m.BACKFILL_PARTITIONS_DONE.set(sum(1 for p in mine if state.peek_backfilled(p) == fp))
        m.DEFINITIONS.labels("segment").set(len(reader.catalog.segments))
        m.DEFINITIONS.labels("computed_trait").set(len(reader.catalog.traits))
        m.DEFINITIONS_SKIPPED.set(len(reader.skipped))


def touchpoint_source(partition: int) -> int:
    """The source id of a touchpoint partition in a profile's redelivery check (`_src`, `_tx`):
    internal partitions are 0..N-1, touchpoint partition p is -(p + 1), so offsets of the two
    topics are never compared with each other."""
    return -(partition + 1)


def low_watermark(sources: dict[str, list[Any]], count: int) -> int | None:
    """Event time every source partition has passed: the minimum over the partitions (None
    while one has reported none), or, once every partition has been read to its end for a
    while, the maximum. A partition alone at its end does not release it: its owner may be
    dead and its next events still unread (input is expected in roughly event-time order)."""
    marks = [sources.get(str(p), [None, False]) for p in range(count)]
    if all(idle for _, idle in marks):
        return max((wm for wm, _ in marks if wm is not None), default=None)
    if any(wm is None for wm, _ in marks):
        return None
    return min(wm for wm, _ in marks)


def count(fx: identity.Effects) -> None:
    tally = m.tally
    for name, n in fx.counts.items():
        kind, _, label = name.partition(":")
        if kind == "msg":
            tally(m.IDENTITY_MESSAGES, label, n=n)
        elif kind == "limit_refused":
            tally(m.LIMIT_REFUSALS, label, n=n)
        elif kind == "merge_refused":
            tally(m.MERGE_REFUSALS, label, n=n)
        elif kind == "quarantined":
            tally(m.QUARANTINED, label, n=n)
        elif kind == "merged":
            tally(m.MERGES, n=n)
        elif kind == "profile_created":
            tally(m.PROFILES_CREATED, n=n)
        elif kind == "redirect_followed":
            tally(m.REDIRECTS_FOLLOWED, n=n)
    if fx.outcome is not None:
        tally(m.PROCESSED, fx.outcome.value)
