"""Agents: decode, call processors/, write tables and topics, count. Nothing more."""

from __future__ import annotations

import logging
import time

import orjson

from processors import events as ev
from processors.dlq import dlq_record
from processors.events import Reject
from processors.identifiers import IdentityRules, routing_key
from processors.partitioning import mint_profile_id, partition_for
from processors.profile import Outcome, ProfileLimits, apply, new_profile
from stream import metrics as m
from stream.app import (
    app,
    dlq_topic,
    identities,
    profiles,
    routed_topic,
    settings,
    touchpoints_topic,
)

log = logging.getLogger(__name__)

RULES = IdentityRules()
LIMITS = ProfileLimits(settings.dedup_window_ms, settings.dedup_max_ids, settings.recent_events)
N = settings.partitions


@app.agent(touchpoints_topic)
async def ingest(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        m.EVENTS_IN.inc()
        msg = event.message
        raw = event.value
        record_ms = int((msg.timestamp or time.time()) * 1000)
        try:
            result = ev.validate(raw, record_ts_ms=record_ms,
                                 max_bytes=settings.max_event_bytes, rules=RULES)
        except Exception as e:  # a bug must not stop the stream; keep the input
            log.exception("validation crashed at %s[%s]@%s", msg.topic, msg.partition, msg.offset)
            result = Reject("internal_error", None, f"{type(e).__name__} while validating")
        if isinstance(result, Reject):
            m.REJECTED.labels(result.reason).inc()
            record = dlq_record(result, raw or b"", topic=msg.topic, partition=msg.partition,
                                offset=msg.offset, received_at=int(time.time() * 1000))
            await dlq_topic.send(key=event.key, value=orjson.dumps(record))
            continue
        key = routing_key(result.identifiers)
        await routed_topic.send(key=key.encode(), value=ev.encode(result),
                                partition=partition_for(key, N),
                                timestamp=msg.timestamp)


@app.agent(routed_topic)
async def profile_stage(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        started = time.perf_counter()
        msg = event.message
        tp = ev.decode(event.value)
        pid = identities.get(event.key)
        if pid is None:
            pid = mint_profile_id(event.key.decode(), N).encode()
            identities[event.key] = pid
            m.PROFILES_CREATED.inc()
        stored = profiles.get(pid)
        profile = orjson.loads(stored) if stored else new_profile(pid.decode())
        outcome = apply(profile, tp, LIMITS, source=(msg.partition, msg.offset))
        if outcome is Outcome.APPLIED:
            profiles[pid] = orjson.dumps(profile)
        m.PROCESSED.labels(outcome.value).inc()
        m.PROCESSING_SECONDS.observe(time.perf_counter() - started)
        if msg.timestamp:
            m.EVENT_LAG_SECONDS.observe(max(0.0, time.time() - msg.timestamp))


@app.timer(5.0)
async def count_profiles() -> None:
    total = 0
    for db in getattr(profiles.data, "_dbs", {}).values():
        try:
            total += int(db.property_int_value("rocksdb.estimate-num-keys") or 0)
        except Exception:  # estimate unavailable on a closing db
            continue
    m.PROFILES_STORED.set(total)
