"""Agents: decode, call processors/, write tables and topics, count. Nothing more."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException
from faust.types import TP

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
from processors.profile.unified import Profile, ProfileLimits
from processors.segments.definitions import named_channels
from stream.kafka.clients import ensure_topic, reader, watermarks
from stream.kafka.outbox import OUTBOX, DeliveryFailed
from stream.runtime import metrics as m
from stream.runtime.app import (
    app,
    changes_topic,
    dlq_topic,
    identities,
    meta,
    privacy_topic,
    profiles,
    results_topic,
    routed_topic,
    settings,
    touchpoints_topic,
)
from stream.runtime.definitions import DefinitionsReader
from stream.runtime.failures import is_platform_failure
from stream.state.writeback import STATE, StateWriteFailed, partition_db

log = logging.getLogger(__name__)

N = settings.partitions
_limits = ProfileLimits(settings.dedup_window_ms, settings.dedup_max_ids, settings.recent_events,
                        settings.retention_ms, settings.profile_ttl_ms)
CFG = (identity.load_identity_config(settings.identity_config, N, _limits)
       if settings.identity_config else identity.IdentityConfig(partitions=N, profile_limits=_limits))
ACTIVATION = (load_activation_config(settings.activation_config) if settings.activation_config
              else ActivationConfig())
STATE.configure(settings.state_cache_mb << 20, settings.flush_records, settings.flush_interval_ms)


class TableStore:
    """processors.identity.graph.Store over the Faust tables (values are JSON bytes), through the
    write-back state (stream/state/writeback.py): reads and writes of a record stay in memory and are
    written per batch of records.

    A profile decoded while handling a record is handed to the next read of the same key once
    more (the routing check, then the handler), unless it was written in between: one decode
    per event. Any further read decodes afresh, so a change a processor makes to a profile
    without writing it back is never seen by a later read.
    """

    def __init__(self) -> None:
        self._lent: dict[bytes, tuple[bytes, Profile]] = {}

    def forget(self) -> None:
        """A new record starts (the previous one is done)."""
        self._lent.clear()
        STATE.record_done()

    def identity(self, key: str) -> str | None:
        raw = STATE.get(identities, key.encode())
        return raw.decode() if raw else None

    def set_identity(self, key: str, pid: str) -> None:
        STATE.put(identities, key.encode(), pid.encode())

    def profile(self, pid: str) -> Profile | None:
        key = pid.encode()
        raw = STATE.get(profiles, key)
        if not raw:
            return None
        lent = self._lent.pop(key, None)
        if lent is not None and lent[0] is raw:
            return lent[1]
        profile: Profile = orjson.loads(raw)
        self._lent[key] = (raw, profile)
        return profile

    def set_profile(self, pid: str, profile: Profile) -> None:
        key = pid.encode()
        self._lent.pop(key, None)
        STATE.put(profiles, key, orjson.dumps(profile))

    def delete_profile(self, pid: str) -> None:
        key = pid.encode()
        self._lent.pop(key, None)
        STATE.put(profiles, key, None)  # a tombstone on the changelog

    def delete_identity(self, key: str) -> None:
        STATE.put(identities, key.encode(), None)

    def request(self, rid: str) -> dict[str, Any] | None:
        raw = STATE.get(meta, b"r:" + rid.encode())
        return orjson.loads(raw) if raw else None

    def set_request(self, rid: str, state: dict[str, Any] | None) -> None:
        STATE.put(meta, b"r:" + rid.encode(), None if state is None else orjson.dumps(state))


STORE = TableStore()
HANDLERS = protocol.handlers()  # identity's and privacy's record kinds (processors/common/records.py)
READER = DefinitionsReader(settings, on_change=lambda catalog: warm_activation_topics(catalog))
"""Started by stream.runtime.worker before the first event, so every event sees the definitions."""

WATERMARK: dict[int, int] = {}
"""Event-time clock per internal partition (TUSK_CLOCK=event); persisted by ticks under b"w"
with the offset of the tick, so a replayed tick is recognised."""
SOURCES: dict[int, list[Any]] = {}
"""Touchpoint partition → [latest event time, last offset read, caught up since (monotonic s)]."""
IDLE_AFTER_S = 2.0
"""A source partition read to its end this long holds the watermark back no more."""
BACKFILLS: dict[int, str] = {}
"""Backfill chains this worker started, by partition (fingerprint of the definitions)."""
TIME_CLOCK = settings.clock == "event"


ROUTED = routed_topic.get_topic_name()
DLQ = dlq_topic.get_topic_name()
CHANGES = changes_topic.get_topic_name()
RESULTS = results_topic.get_topic_name()


def send_internal(key: str, msg: dict[str, Any]) -> None:
    OUTBOX.send(ROUTED, key.encode(), orjson.dumps(msg), partition_for(key, N))


@app.agent(touchpoints_topic)
async def ingest(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        m.EVENTS_IN.inc()
        msg = event.message
        raw = event.value
        record_ms = int((msg.timestamp or time.time()) * 1000)
        try:
            result = ev.validate(raw, record_ts_ms=record_ms,
                                 max_bytes=settings.max_event_bytes, rules=CFG.rules)
        except Exception as e:  # a bug must not stop the stream; keep the input
            log.exception("validation crashed at %s[%s]@%s", msg.topic, msg.partition, msg.offset)
            result = Reject("internal_error", None, f"{type(e).__name__} while validating")
        if isinstance(result, Reject):
            m.REJECTED.labels(result.reason).inc()
            record = dlq_record(result, raw or b"", topic=msg.topic, partition=msg.partition,
                                offset=msg.offset, received_at=int(time.time() * 1000))
            OUTBOX.send(DLQ, event.key, orjson.dumps(record))
            read_source(msg.partition, msg.offset, None)
            continue
        key = routing_key(result.identifiers)
        record = records.event({"m": result.msg, "ts": result.ts,
                                "ids": [list(i) for i in result.identifiers]})
        home = partition_for(key, N)
        if home == msg.partition and co_partitioned():
            # keyed by its routing identifier, the event already sits on the partition that
            # resolves it (same number, same worker: Faust co-assigns topics and tables with
            # N partitions): resolve and apply it here, without the internal hop
            m.ROUTED.labels("inline").inc()
            await handle_record(key, record, msg, (touchpoint_source(msg.partition), msg.offset))
        else:
            m.ROUTED.labels("hop").inc()
            OUTBOX.send(ROUTED, key.encode(), orjson.dumps(record), home, timestamp_ms=record_ms)
        # after the send: a tick reporting this event's time is queued behind the event itself
        read_source(msg.partition, msg.offset, result.ts)


_CO_PARTITIONED: list[bool] = []


def co_partitioned() -> bool:
    """Does the touchpoints topic have the internal topic's partition count (N)?"""
    if not _CO_PARTITIONED:
        try:
            count = app.consumer.topic_partitions(touchpoints_topic.get_topic_name())
        except Exception:  # no metadata yet: take the hop this time
            return False
        if not count:
            return False
        _CO_PARTITIONED.append(count == N)
        if count != N:
            log.warning("%s has %s partitions, not %s: every event takes the internal hop",
                        touchpoints_topic.get_topic_name(), count, N)
    return _CO_PARTITIONED[0]


def touchpoint_source(partition: int) -> int:
    """The source id of a touchpoint partition in a profile's redelivery check (`_src`, `_tx`):
    internal partitions are 0..N-1, touchpoint partition p is -(p + 1), so offsets of the two
    topics are never compared with each other."""
    return -(partition + 1)


def read_source(partition: int, offset: int, ts: int | None) -> None:
    if TIME_CLOCK:
        seen = SOURCES.setdefault(partition, [None, -1, None])
        seen[1], seen[2] = offset, None
        if ts is not None:
            seen[0] = ts if seen[0] is None else max(seen[0], ts)


@app.agent(privacy_topic)
async def privacy_requests(stream):  # type: ignore[no-untyped-def]
    """Requests from tusk.privacy become P records keyed by the identifier they name."""
    async for event in stream.events():
        try:
            req = privacy_request(event.value)
        except ValueError as e:
            rid = event.key.decode(errors="replace") if event.key else ""
            OUTBOX.send(RESULTS, event.key, orjson.dumps({
                "request_id": rid, "status": "rejected", "reason": str(e),
                "completed_at": int(time.time() * 1000)}))
            continue
        key = req["identifier"]
        send_internal(key, records.privacy_request(req["type"], req["request_id"]))


def _count(fx: identity.Effects) -> None:
    for name, n in fx.counts.items():
        kind, _, label = name.partition(":")
        if kind == "msg":
            m.IDENTITY_MESSAGES.labels(label).inc(n)
        elif kind == "limit_refused":
            m.LIMIT_REFUSALS.labels(label).inc(n)
        elif kind == "merge_refused":
            m.MERGE_REFUSALS.labels(label).inc(n)
        elif kind == "quarantined":
            m.QUARANTINED.labels(label).inc(n)
        elif kind == "merged":
            m.MERGES.inc(n)
        elif kind == "profile_created":
            m.PROFILES_CREATED.inc(n)
        elif kind == "redirect_followed":
            m.REDIRECTS_FOLLOWED.inc(n)
    if fx.outcome is not None:
        m.PROCESSED.labels(fx.outcome.value).inc()


def now_ms(partition: int) -> int:
    """The clock segments are judged by: wall time, or this partition's event-time watermark."""
    if not TIME_CLOCK:
        return int(time.time() * 1000)
    wm = WATERMARK.get(partition)
    if wm is None:  # after a restart: the watermark the last tick stored
        wm = WATERMARK[partition] = stored_clock()[0]
    return wm


def stored_clock() -> tuple[int, int]:
    """(watermark, offset of the tick that set it) of the current record's partition."""
    raw = STATE.get(meta, b"w")
    if not raw:
        return 0, -1
    value = orjson.loads(raw)
    return (int(value[0]), int(value[1])) if isinstance(value, list) else (int(value), -1)


def env_at(now: int) -> identity.Env:
    return identity.Env(now, READER.catalog, ACTIVATION, event_time=TIME_CLOCK, journeys=READER.journeys,
                        journey_active=journey_active, journey_partitions=N)


def journey_stats() -> dict[str, Any]:
    """This partition's journey counts: {journey: {step: {metric: n}}} (step "" holds `active`)."""
    raw = STATE.get(meta, b"j")
    return orjson.loads(raw) if raw else {}


def journey_active(jid: str) -> int:
    return int(journey_stats().get(jid, {}).get("", {}).get("active", 0))


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


@functools.cache
def end_reader() -> Consumer:
    """A group-less reader for end offsets (the group id is required, never joined)."""
    return reader(settings, f"{settings.app_id}-ends")


def end_offsets(partitions: list[int]) -> dict[int, int | None]:
    """The broker's end offset of each touchpoint partition (blocking: run in a thread).

    Asked of the broker each time, not taken from the group consumer, whose figure is stale
    while Faust keeps a partition paused (recovery after a rebalance)."""
    topic = touchpoints_topic.get_topic_name()
    ends: dict[int, int | None] = {}
    for p in partitions:
        try:
            ends[p] = watermarks(end_reader(), topic, p, timeout=2.0)[1]
        except KafkaException:  # broker unreachable for now: not known to be at the end
            ends[p] = None
    return ends


def my_sources() -> list[int]:
    topic = touchpoints_topic.get_topic_name()
    return sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic)


def source_report(ends: dict[int, int | None]) -> dict[str, list[Any]]:
    """[latest event time, read to the end for a while] of the touchpoint partitions given."""
    topic = touchpoints_topic.get_topic_name()
    report: dict[str, list[Any]] = {}
    now = time.monotonic()
    # entries of partitions read elsewhere for a while are kept: what they hold is a lower bound
    # (the committed offset lifts it), while Faust does not hand over again records it has read
    mine = set(my_sources())
    for p, end in ends.items():
        if p not in mine:
            continue
        seen = SOURCES.setdefault(p, [None, -1, None])
        committed = app.consumer._committed_offset.get(TP(topic, p))  # type: ignore[attr-defined]
        if committed is not None:  # the group's offset, set when the partition was assigned
            seen[1] = max(seen[1], committed - 1)
        at_end = end is not None and seen[1] + 1 >= end
        if not at_end:
            seen[2] = None
        elif seen[2] is None:
            seen[2] = now
        report[str(p)] = [seen[0], at_end and now - seen[2] >= IDLE_AFTER_S]
    return report


ACTIVATION_TOPICS: set[str] = set()


async def activation_topic(channel: str) -> str:
    """tusk.activations.<channel>, created on first use (channels are named by definitions)."""
    name = settings.topics.activations(channel)
    if name not in ACTIVATION_TOPICS:
        await asyncio.to_thread(ensure_topic, settings, name)
        ACTIVATION_TOPICS.add(name)
    return name


def warm_activation_topics(_catalog: Any) -> None:
    """Create the activation topics the definitions name as soon as they are read (in the
    definitions reader's thread), so a channel's first trigger does not stop its partition
    for the admin client's round trips (a quarter of a second at start, seen in p99)."""
    for channel in sorted(named_channels(list(READER.records.values()))):
        name = settings.topics.activations(channel)
        if name in ACTIVATION_TOPICS:
            continue
        try:
            ensure_topic(settings, name)
        except Exception:  # the first trigger tries again, on the loop
            log.warning("activation topic %s not created yet", name, exc_info=True)
            continue
        ACTIVATION_TOPICS.add(name)


def due_key(due: int, pid: str) -> bytes:
    return b"d" + due.to_bytes(8, "big") + pid.encode()


async def settle(fx: identity.Effects) -> None:
    """Write what a call decided besides the profile itself: deadlines, sizes, transitions."""
    for pid, old, new in fx.schedule:
        if old is not None:
            STATE.put(meta, due_key(old, pid), None)
        if new is not None:
            STATE.put(meta, due_key(new, pid), b"")
    if any(fx.sizes.values()):  # one key for all segments: a record changes several at once
        raw = STATE.get(meta, b"s")
        sizes: dict[str, int] = orjson.loads(raw) if raw else {}
        for segment, delta in fx.sizes.items():
            if delta:
                sizes[segment] = sizes.get(segment, 0) + delta
        STATE.put(meta, b"s", orjson.dumps(sizes))
    if any(fx.journey_counts.values()):
        STATE.put(meta, b"j", orjson.dumps(journeys.add_counts(journey_stats(), fx.journey_counts)))
    for channel, trigger in fx.triggers:
        OUTBOX.send(await activation_topic(channel), trigger["profile_id"].encode(), orjson.dumps(trigger))
        m.TRIGGERS.labels(channel).inc()
    for what, n in fx.suppressed.items():
        channel, _, reason = what.partition(":")
        m.SUPPRESSED.labels(channel, reason).inc(n)
    for result in fx.results:
        OUTBOX.send(RESULTS, result["request_id"].encode(),
                    orjson.dumps({**result, "completed_at": int(time.time() * 1000)}))
    now = int(time.time() * 1000)
    for change in fx.changes:
        if change.get("type") == "segment":
            m.child(m.SEGMENT_TRANSITIONS, change["segment"], change["transition"]).inc()
        OUTBOX.send(CHANGES, change["profile_id"].encode(), orjson.dumps({**change, "recorded_at": now}))


def dead_letter(key: str, record: dict[str, Any], msg: Any, reason: str, detail: str) -> None:
    m.REJECTED.labels(reason).inc()
    OUTBOX.send(DLQ, key.encode(), orjson.dumps(dlq_record(
        Reject(reason, None, detail), orjson.dumps(record), topic=msg.topic,
        partition=msg.partition, offset=msg.offset, received_at=int(time.time() * 1000))))


async def platform_failure(e: BaseException) -> None:
    # the platform, not the record: stop before the offset moves past it, so a
    # restarted worker replays it
    log.critical("identity stage cannot write its state: %r", e)
    await app.crash(e)


async def on_record(key: str, record: dict[str, Any], msg: Any,
                    source: tuple[int, int] | None = None) -> None:
    source = source or (msg.partition, msg.offset)
    STORE.forget()
    pending = [(key, record)]
    while pending:
        key, record = pending.pop(0)
        env = env_at(now_ms(msg.partition))
        try:
            fx = identity.handle(key, record, STORE, CFG, source, env, HANDLERS)
        except Exception as e:
            if is_platform_failure(e):
                await platform_failure(e)
                raise
            # the record's failure (a bug meeting it): keep it, replayable, in the DLQ
            log.exception("identity record %s failed at %s@%s", record.get("k"), *source)
            dead_letter(key, record, msg, "internal_error",
                        f"{type(e).__name__} in identity record {record.get('k')}")
            continue
        _count(fx)
        for reason, dead in fx.dead:
            dead_letter(key, dead, msg, reason, f"identity record {dead.get('k')} kept bouncing")
        for out_key, out in fx.send:
            if identity.runs_inline(record, out_key, out, msg.partition, CFG):
                pending.append((out_key, out))
            else:
                send_internal(out_key, out)
        await settle(fx)


async def on_tick(record: dict[str, Any], msg: Any) -> None:
    """Re-check the profiles of this partition whose deadline has passed."""
    p = msg.partition
    STORE.forget()
    if TIME_CLOCK:
        now, set_at = stored_clock()
        if msg.offset <= set_at:
            # a tick replayed after a crash: the stored watermark is ahead of the records replayed
            # with it, so firing deadlines now could judge a profile before its own events
            return
        if "src" in record:
            raw = STATE.get(meta, b"sw")
            sources: dict[str, list[Any]] = orjson.loads(raw) if raw else {}
            for sp, (wm, idle) in record["src"].items():
                old = sources.get(sp, [None, False])[0]
                sources[sp] = [wm if old is None else old if wm is None else max(old, wm), idle]
            encoded = orjson.dumps(sources, option=orjson.OPT_SORT_KEYS)
            if encoded != raw:
                STATE.put(meta, b"sw", encoded)
            low = low_watermark(sources, int(record.get("of") or N))
            if low is not None and low > now:
                log.debug("watermark of partition %s: %s (inputs %s)", p, low, sources)
            now = max(now, low or 0)
        WATERMARK[p] = now
        STATE.put(meta, b"w", orjson.dumps([now, msg.offset]))
    else:
        now = int(time.time() * 1000)
    STATE.flush()  # the deadline index is scanned in the database
    db = partition_db(meta, p)
    due: list[tuple[bytes, int, str]] = []
    for k in db.keys(from_key=b"d"):
        if not k.startswith(b"d") or len(due) >= settings.backfill_batch:
            break
        at = int.from_bytes(k[1:9], "big")
        if at > now:
            break
        due.append((k, at, k[9:].decode()))
    env = env_at(now)
    for k, at, pid in due:
        STATE.put(meta, k, None)
        fx = identity.recheck(pid, STORE, env, f"time:{at}", cfg=CFG)
        m.RECHECKS.labels("time").inc()
        for out_key, out in fx.send:  # an expired profile's erase request
            send_internal(out_key, out)
        await settle(fx)
    if len(due) >= settings.backfill_batch:  # more are due: continue right after this one
        OUTBOX.send(ROUTED, b"tick", orjson.dumps(records.tick()), p)


async def on_backfill(record: dict[str, Any], msg: Any) -> None:
    """Evaluate a batch of this partition's stored profiles against new definitions."""
    p = msg.partition
    STORE.forget()
    if record["fp"] != READER.fingerprint:
        return  # definitions changed again: a newer chain does the work
    STATE.flush()  # the profiles are listed from the database
    db = partition_db(profiles, p)
    after = record["after"].encode() if record.get("after") else None
    env = env_at(now_ms(p))
    done = 0
    last: bytes | None = None
    for k in db.keys(from_key=after) if after else db.keys():
        if k == after or k.startswith(b"__faust"):
            continue
        fx = identity.recheck(k.decode(), STORE, env, f"backfill:{record['fp']}", everything=True, cfg=CFG)
        m.RECHECKS.labels("backfill").inc()
        await settle(fx)
        done += 1
        last = k
        if done >= settings.backfill_batch:
            break
    if last is not None and done >= settings.backfill_batch:
        OUTBOX.send(ROUTED, b"backfill",
                    orjson.dumps(records.backfill(record["fp"], last.decode())), p)
    else:
        STATE.put(meta, b"bv", record["fp"].encode())


async def handle_record(key: str, record: dict[str, Any], msg: Any,
                        source: tuple[int, int] | None = None) -> None:
    """One identity-protocol record (or tick, or backfill step) of this partition, timed."""
    started = time.perf_counter()
    kind = record.get("k")
    try:
        if kind == records.Kind.TICK:
            await on_tick(record, msg)
        elif kind == records.Kind.BACKFILL:
            await on_backfill(record, msg)
        else:
            await on_record(key, record, msg, source)
    except Exception as e:
        if is_platform_failure(e):
            await platform_failure(e)
        raise
    m.PROCESSING_SECONDS.observe(time.perf_counter() - started)
    if msg.timestamp and kind == records.Kind.EVENT:
        m.EVENT_LAG_SECONDS.observe(max(0.0, time.time() - msg.timestamp))


@app.agent(routed_topic)
async def identity_stage(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        await handle_record(event.key.decode(), orjson.loads(event.value), event.message)


def active_partitions() -> list[int]:
    topic = routed_topic.get_topic_name()
    return sorted(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == topic)


def backfilled(p: int) -> str | None:
    raw = STATE.peek(meta, p, b"bv")
    return raw.decode() if raw else None


@app.timer(settings.tick_interval_ms / 1000)
async def tick() -> None:
    """Time passes: every partition hears the clock; new definitions start backfills."""
    if not app.tables.recovery.completed.is_set():  # type: ignore[attr-defined]
        return
    if TIME_CLOCK:  # each partition derives its watermark from what the source partitions report
        try:
            of = app.consumer.topic_partitions(touchpoints_topic.get_topic_name()) or N
        except Exception:  # no metadata yet
            of = N
        ends = await asyncio.to_thread(end_offsets, my_sources())
        value = orjson.dumps(records.tick(source_report(ends), of))
    else:
        value = orjson.dumps(records.tick())
    # every partition, not just ours: the event-time watermark must reach them all
    for p in range(N):
        OUTBOX.send(ROUTED, b"tick", value, p)
    fp = READER.fingerprint
    mine = active_partitions()
    for p in mine:
        if BACKFILLS.get(p) != fp and backfilled(p) != fp:
            BACKFILLS[p] = fp
            OUTBOX.send(ROUTED, b"backfill", orjson.dumps(records.backfill(fp, None)), p)
    m.BACKFILL_PARTITIONS_DONE.set(sum(1 for p in mine if backfilled(p) == fp))
    m.DEFINITIONS.labels("segment").set(len(READER.catalog.segments))
    m.DEFINITIONS.labels("computed_trait").set(len(READER.catalog.traits))
    m.DEFINITIONS_SKIPPED.set(len(READER.skipped))


@app.timer(0.05)
async def deliveries() -> None:
    """Delivery reports of the outbox (changelog offsets, failures) are served on the loop."""
    try:
        OUTBOX.poll()
    except DeliveryFailed as e:
        await platform_failure(e)


@app.timer(settings.flush_interval_ms / 1000)
async def flush_state() -> None:
    """Changed state is written at least this often when records stop coming (stream/state/writeback.py)."""
    try:
        STATE.flush_due()
    except StateWriteFailed as e:
        await platform_failure(e)


@app.timer(5.0)
async def count_profiles() -> None:
    total = 0
    for db in getattr(profiles.data, "_dbs", {}).values():
        try:
            total += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
        except Exception:  # estimate unavailable on a closing db
            continue
    m.PROFILES_STORED.set(total)
    try:  # Faust internals: a missing attribute must not stop the timer
        m.RECOVERY_REMAINING.set(app.tables.recovery.active_remaining_total())  # type: ignore[attr-defined]
        m.RECOVERY_STANDBY_REMAINING.set(app.tables.recovery.standby_remaining_total())  # type: ignore[attr-defined]
        sources = {touchpoints_topic.get_topic_name(), routed_topic.get_topic_name()}
        consumer = app.consumer
        for tp in app.assignor.assigned_actives():
            if tp.topic in sources:
                high = consumer.highwater(tp)
                done = consumer._committed_offset.get(tp)  # type: ignore[attr-defined]
                if high is not None:
                    m.CONSUMER_LAG.labels(tp.topic, str(tp.partition)).set(max(0, high - (done or 0)))
    except Exception:  # not assigned yet, or rebalancing
        log.debug("lag metrics unavailable", exc_info=True)
