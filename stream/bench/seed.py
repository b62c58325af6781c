"""State at scale for `make bench`: many profiles written straight to the changelogs.

Processing a million profiles' events through the pipeline to measure memory and
restore time would take longer than the rest of the bench together. The changelogs
are what a worker restores from, so the bench writes them directly: profiles built
by the real processors from the synthetic shop stream (50 segments evaluated), copied
under fresh identifiers, each with its identity mapping, on the partition the worker
itself would use. A fresh worker then restores them like any other state.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from processors.identity.partitioning import mint_profile_id, partition_for
from processors.ingest import events as ev
from processors.ingest.identifiers import key_of
from processors.profile.unified import Profile, apply, new_profile
from processors.segments.catalog import Catalog
from processors.segments.definitions import load_file
from stream.bench.segments import EXAMPLES, segment_variants
from stream.demo.synthetic import shop_stream
from stream.kafka.clients import ensure_topic, produce_waiting, producer
from stream.runtime.settings import Settings


def templates(count: int = 300, segments: int = 50) -> list[Profile]:
    """Profiles of `count` synthetic people, as the worker would store them."""
    traits, _ = load_file(EXAMPLES)
    catalog = Catalog.build(traits, segment_variants(segments))
    by_user: dict[str, Profile] = {}
    end = datetime.now(UTC).replace(microsecond=0)
    for raw in shop_stream(count, seed=3, malformed=False, end=end):
        tp = ev.validate(raw, record_ts_ms=0)
        if not isinstance(tp, ev.Touchpoint):
            continue
        person = tp.msg.get("userId") or tp.msg.get("anonymousId")
        p = by_user.setdefault(str(person), new_profile("p"))
        apply(p, tp)
        catalog.evaluate(p, tp.ts, catalog.observe(p, tp, tp.ts), tp.message_id)
    return [p for p in by_user.values() if p["event_count"] > 1]


def seeded(count: int, partitions: int, shapes: list[Profile]) -> Iterator[tuple[int, bytes, bytes, bytes]]:
    """(partition, identity key, profile id, profile JSON) for `count` people."""
    for i, shape in zip(range(count), itertools.cycle(shapes)):
        user = f"seed-{i}"
        key = key_of(("user_id", user))
        pid = mint_profile_id(key, partitions)
        profile: dict[str, Any] = {**shape, "id": pid, "identities": {"user_id": [user],
                                                                       "email": [f"seed{i}@example.com"]}}
        yield partition_for(key, partitions), key.encode(), pid.encode(), orjson.dumps(profile)


def seed(settings: Settings, count: int) -> dict[str, Any]:
    """Write `count` profiles and their identity mappings to the app's changelogs."""
    app_id = settings.app_id
    topics = {t: f"{app_id}-{t}-changelog" for t in ("identities", "profiles")}
    for name in topics.values():
        ensure_topic(settings, name)  # compacted, with the erasure deadline (stream/kafka/topic_configs.py)
    prod = producer(settings, **{"linger.ms": 50, "batch.size": 1 << 20,
                                 "queue.buffering.max.messages": 500_000})
    shapes = templates()
    size = 0
    for part, key, pid, body in seeded(count, settings.partitions, shapes):
        for topic, k, v in ((topics["identities"], key, pid), (topics["profiles"], pid, body)):
            produce_waiting(prod, topic, v, k, partition=part)
        size += len(body)
        prod.poll(0)
    left = prod.flush(120)
    if left:
        raise RuntimeError(f"{left} seeded records were not delivered")
    return {"profiles": count, "identity_mappings": count, "mean_profile_bytes": round(size / max(1, count))}
