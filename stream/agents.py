"""Agents: decode, call processors/, write tables and topics, count. Nothing more."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from aiokafka.errors import KafkaError
from faust.exceptions import FaustError

from processors import events as ev
from processors import identity
from processors.dlq import dlq_record
from processors.events import Reject
from processors.identifiers import routing_key
from processors.partitioning import partition_for
from processors.profile import Profile, ProfileLimits
from stream import metrics as m
from stream.app import (
    app,
    changes_topic,
    dlq_topic,
    identities,
    profiles,
    routed_topic,
    settings,
    touchpoints_topic,
)

log = logging.getLogger(__name__)

N = settings.partitions
_limits = ProfileLimits(settings.dedup_window_ms, settings.dedup_max_ids, settings.recent_events)
CFG = (identity.load_identity_config(settings.identity_config, N, _limits)
       if settings.identity_config else identity.IdentityConfig(partitions=N, profile_limits=_limits))


class TableStore:
    """processors.identity.Store over the two Faust tables (values are JSON bytes)."""

    def identity(self, key: str) -> str | None:
        raw = identities.get(key.encode())
        return raw.decode() if raw else None

    def set_identity(self, key: str, pid: str) -> None:
        identities[key.encode()] = pid.encode()

    def profile(self, pid: str) -> Profile | None:
        raw = profiles.get(pid.encode())
        return orjson.loads(raw) if raw else None

    def set_profile(self, pid: str, profile: Profile) -> None:
        profiles[pid.encode()] = orjson.dumps(profile)


STORE = TableStore()


async def send_internal(key: str, msg: dict[str, Any]) -> None:
    await routed_topic.send(key=key.encode(), value=orjson.dumps(msg), partition=partition_for(key, N))


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
            await dlq_topic.send(key=event.key, value=orjson.dumps(record))
            continue
        key = routing_key(result.identifiers)
        await routed_topic.send(key=key.encode(), value=orjson.dumps({"k": "E", "ev": {
            "m": result.msg, "ts": result.ts, "ids": result.identifiers}}),
            partition=partition_for(key, N), timestamp=msg.timestamp)


def _count(fx: identity.Effects) -> None:
    for name, n in fx.counts.items():
        kind, _, label = name.partition(":")
        if kind == "msg":
            m.IDENTITY_MESSAGES.labels(label).inc(n)
        elif kind == "limit_refused":
            m.LIMIT_REFUSALS.labels(label).inc(n)
        elif kind == "merge_refused":
            m.MERGE_REFUSALS.labels(label).inc(n)
        elif kind == "merged":
            m.MERGES.inc(n)
        elif kind == "profile_created":
            m.PROFILES_CREATED.inc(n)
        elif kind == "redirect_followed":
            m.REDIRECTS_FOLLOWED.inc(n)
    if fx.outcome is not None:
        m.PROCESSED.labels(fx.outcome.value).inc()


@app.agent(routed_topic)
async def identity_stage(stream):  # type: ignore[no-untyped-def]
    async for event in stream.events():
        started = time.perf_counter()
        msg = event.message
        source = (msg.partition, msg.offset)
        pending = [(event.key.decode(), orjson.loads(event.value))]
        while pending:
            key, record = pending.pop(0)
            try:
                fx = identity.handle(key, record, STORE, CFG, source)
            except (FaustError, KafkaError) as e:
                # the platform, not the record: stop before the offset moves past it,
                # so a restarted worker replays it
                log.critical("identity stage cannot write its state: %r", e)
                await app.crash(e)
                raise
            except Exception as e:  # a bug on this record: keep it, replayable, in the DLQ
                log.exception("identity record %s failed at %s@%s", record.get("k"), *source)
                m.REJECTED.labels("internal_error").inc()
                await dlq_topic.send(key=key.encode(), value=orjson.dumps(dlq_record(
                    Reject("internal_error", None, f"{type(e).__name__} in identity record "
                           f"{record.get('k')}"), orjson.dumps(record), topic=msg.topic,
                    partition=msg.partition, offset=msg.offset, received_at=int(time.time() * 1000))))
                continue
            _count(fx)
            for reason, dead in fx.dead:
                m.REJECTED.labels(reason).inc()
                await dlq_topic.send(key=key.encode(), value=orjson.dumps(dlq_record(
                    Reject(reason, None, f"identity record {dead.get('k')} kept bouncing"),
                    orjson.dumps(dead), topic=msg.topic, partition=msg.partition,
                    offset=msg.offset, received_at=int(time.time() * 1000))))
            for out_key, out in fx.send:
                if identity.runs_inline(record, out_key, out, msg.partition, CFG):
                    pending.append((out_key, out))
                else:
                    await send_internal(out_key, out)
            now = int(time.time() * 1000)
            for change in fx.changes:
                await changes_topic.send(key=change["profile_id"].encode(),
                                         value=orjson.dumps({**change, "recorded_at": now}))
        m.PROCESSING_SECONDS.observe(time.perf_counter() - started)
        if msg.timestamp and event.value[:8] == b'{"k":"E"':
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
