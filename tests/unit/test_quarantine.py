"""The over-merge guard (processors/identity/quarantine.py) on simulated partitions."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.common.config import ConfigError
from processors.identity import quarantine as q
from processors.identity.graph import IdentityConfig, event_message, load_identity_config
from processors.ingest import events as ev
from processors.ingest.identifiers import key_of, routing_key
from processors.profile.unified import ProfileLimits
from stream.demo import junk_traffic as junk
from tests.unit.test_identity_protocol import Cluster, components, event_lists, play

YEAR = 365 * 86_400_000
LIMITS = ProfileLimits(dedup_window_ms=YEAR, dedup_max_ids=100_000)


def run(traffic: junk.Traffic, guard: q.QuarantineConfig, partitions: int = 4, seed: int = 1,
        replay: float = 0.0, limits: dict[str, int] | None = None) -> Cluster:
    cfg = IdentityConfig(partitions=partitions, profile_limits=LIMITS, quarantine=guard,
                         limits=limits if limits is not None else {"user_id": 1})
    cluster = Cluster(cfg, random.Random(seed), replay)
    for raw in traffic.events:
        tp = ev.validate(orjson.dumps(raw), record_ts_ms=0)
        assert isinstance(tp, ev.Touchpoint), tp
        cluster.send(routing_key(tp.identifiers), event_message(orjson.loads(ev.encode(tp))))
        for _ in range(cluster.rng.randrange(0, 4)):
            cluster.step()
    cluster.run()
    return cluster


def quarantined(cluster: Cluster) -> set[str]:
    return {rid[len(q.PREFIX):] for part in cluster.parts for rid, st in part.requests.items()
            if rid.startswith(q.PREFIX) and st.get("quarantined")}


def largest_glue(cluster: Cluster, traffic: junk.Traffic) -> int:
    return max(len({traffic.truth[m] for m in p["_seen"]}) for p in cluster.live_profiles().values())


def held_events(record: dict[str, Any]) -> set[str]:
    """The events a dead-lettered record holds: an A's, or a merge's loser's (counted and parked)."""
    if record["k"] == "A":
        return {record["ev"]["m"]["messageId"]}
    if record["k"] == "M":
        parked = [m for queue in record["snap"].get("_parked", {}).values() for m in queue]
        return set(record["snap"].get("_seen", {})) | {m["ev"]["m"]["messageId"] for m in parked}
    return set()


def assert_accounted(cluster: Cluster, truth: dict[str, Any]) -> None:
    """Every event counted once on a live profile, or held by a dead-lettered record."""
    seen = [m for p in cluster.live_profiles().values() for m in p["_seen"]]
    assert len(seen) == len(set(seen))
    dead = set().union(*(held_events(m) for _, m in cluster.dead))
    assert set(seen) | dead == set(truth), sorted(set(truth) - set(seen) - dead)


def test_junk_identifiers_are_quarantined_and_stop_the_over_merge() -> None:
    """Figures (printed with -s) are in the issue 14 report. The guard stops the glue from
    growing once a value is quarantined; what it glued before that stays (unlink's job).

    Without the guard, the profiles the junk glues chase each other's freezes and refusals
    (one user_id each) until some records die of hops: on some schedules their events are
    in the DLQ (identity_loop), and the glue is smaller for it. So three schedules: with the
    guard nothing dies on any, and the worst glue without it is larger than with it."""
    traffic = junk.generate(people=200, seed=11)
    junk_keys = {key_of(i) for i in junk.JUNK}
    glue: dict[bool, list[int]] = {False: [], True: []}
    for seed in (1, 2, 3):
        off = run(traffic, q.QuarantineConfig(enabled=False), seed=seed)
        on = run(traffic, q.QuarantineConfig(), seed=seed)
        before = junk.figures(off.live_profiles().values(), traffic.truth, len(quarantined(off)))
        after = junk.figures(on.live_profiles().values(), traffic.truth, len(quarantined(on)))
        print(f"\nschedule {seed}, guard off: {before} largest {largest_glue(off, traffic)}, "
              f"{len(off.dead)} records dead-lettered"
              f"\nschedule {seed}, guard on:  {after} largest {largest_glue(on, traffic)}")
        assert quarantined(on) == junk_keys  # all the junk, and nothing else
        assert not on.dead
        assert_accounted(on, traffic.truth)
        assert_accounted(off, traffic.truth)
        glue[False].append(largest_glue(off, traffic))
        glue[True].append(largest_glue(on, traffic))
    assert max(glue[False]) > max(glue[True])


def test_a_clean_stream_quarantines_nothing() -> None:
    traffic = junk.generate(people=40, seed=3, junk_share=0.0)
    cluster = run(traffic, q.QuarantineConfig())
    assert quarantined(cluster) == set()
    figures = junk.figures(cluster.live_profiles().values(), traffic.truth, 0)
    assert figures.wrongly_joined == 0 and figures.split == 0


def test_the_same_log_decides_the_same_quarantine_under_replays() -> None:
    traffic = junk.generate(people=30, seed=5, junk_share=0.5)
    first = run(traffic, q.QuarantineConfig(), partitions=1, replay=0.0)
    again = run(traffic, q.QuarantineConfig(), partitions=1, replay=0.3)
    assert quarantined(first) == quarantined(again)


def test_quarantine_record_and_release() -> None:
    traffic = junk.generate(people=100, seed=11)
    cluster = run(traffic, q.QuarantineConfig())
    records = [c for c in cluster.changes if c["type"] == "identifier_quarantined"]
    assert {f"{r['identifier_type']}:{r['identifier']}" for r in records} == quarantined(cluster)
    for r in records:
        assert r["distinct_people"] > r["threshold"] and r["profile_id"]
    key = sorted(quarantined(cluster))[0]
    cluster.send(key, {"k": "O", "op": "release"})
    cluster.run()
    assert key not in quarantined(cluster)
    assert any(c["type"] == "identifier_released" for c in cluster.changes)


def test_claims_outside_the_window_do_not_count() -> None:
    store = Store()
    cfg = q.QuarantineConfig(thresholds={"device_id": 2}, window_ms=10)
    for i, ts in enumerate([0, 5, 100, 200]):  # never three people within 10 ms
        assert q.claim(store, "device_id:kiosk", f"w{i}", ts, cfg, "p") is None
    assert q.claim(store, "device_id:kiosk", "w9", 201, cfg, "p") is None  # two within 10 ms
    assert q.claim(store, "device_id:kiosk", "w8", 202, cfg, "p") is not None


class Store:
    def __init__(self) -> None:
        self.data: dict[str, Any] = {}

    def request(self, rid: str) -> Any:
        return self.data.get(rid)

    def set_request(self, rid: str, state: Any) -> None:
        if state is None:
            self.data.pop(rid, None)
        else:
            self.data[rid] = state


GUARD = q.QuarantineConfig(thresholds={"anonymous_id": 2, "email": 1})


@settings(max_examples=300, deadline=None)
@given(idents=event_lists(), partitions=st.sampled_from([1, 3, 8]), seed=st.integers(0, 2**32),
       replay=st.sampled_from([0.0, 0.3]))
def test_guard_only_withholds_merges(idents: list[list[tuple[str, str]]], partitions: int,
                                     seed: int, replay: float) -> None:
    """The guard in the generated schedules (interleavings, replays, lost sends): every event
    counts once; no profile spans two connected components of the identifier graph (the guard
    never joins anything); and every component of the graph without the quarantined values
    resolves to one profile (identifiers that are not junk still merge whole)."""
    cluster = play(idents, partitions, seed, replay=replay, guard=GUARD)
    live = cluster.live_profiles()
    counted = sorted(m for p in live.values() for m in p["_seen"])
    assert counted == sorted(f"m{n}" for n in range(len(idents)))
    full = components(idents)
    for prof in live.values():
        held = {key_of((k, v)) for k, vs in prof["identities"].items() for v in vs}
        assert sum(bool(held & comp) for comp in full) == 1, held
    junk_keys = quarantined(cluster)
    clean = [[i for i in ids if key_of(i) not in junk_keys] for ids in idents]
    for comp in components([ids for ids in clean if ids]):
        owners = {cluster.resolve(k) for k in comp}
        assert len(owners) == 1, (comp, owners, junk_keys)


def test_identity_yaml_quarantine_block(tmp_path: Any) -> None:
    good = tmp_path / "identity.yaml"
    good.write_text("quarantine:\n  window: 30d\n  thresholds:\n    email: 10\n    phone: 0\n")
    cfg = load_identity_config(good, 4).quarantine
    assert cfg.enabled and cfg.window_ms == 30 * 86_400_000
    assert cfg.threshold("email") == 10 and cfg.threshold("phone") is None and cfg.threshold("device_id") == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text("quarantine:\n  thresholds:\n    email: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3: at quarantine.thresholds.email"):
        load_identity_config(bad, 4)
