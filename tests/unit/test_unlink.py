"""Unlink through the partitioned identity protocol (processors/identity/unlink.py).

The law: a stream whose profiles were glued by a wrong identifier K, then unlinked by K
(with more events after the unlink), ends as the run that never saw K: the same people
(identities), each with the same events. Under replays, lost sends, several partitions.
"""

from __future__ import annotations

import random
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import schemas
from processors.identity.graph import IdentityConfig, event_message
from processors.identity.quarantine import QuarantineConfig
from processors.ingest import events as ev
from processors.ingest.identifiers import key_of, routing_key
from tests.unit.test_identity_protocol import (
    NO_GUARD,
    POOL,
    Cluster,
    raw_event,
)

WRONG = ("email", "shared@x.io")
CHANGE = Draft202012Validator(schemas.load("profile-change"))


def _send(cluster: Cluster, n: int, ids: list[tuple[str, str]]) -> None:
    tp = ev.validate(raw_event(n, ids), record_ts_ms=0)
    assert isinstance(tp, ev.Touchpoint), tp
    cluster.send(routing_key(tp.identifiers), event_message(orjson.loads(ev.encode(tp))))


def run(before: list[list[tuple[str, str]]], after: list[list[tuple[str, str]]], partitions: int,
        seed: int, replay: float, unlink: bool = True, cfg: IdentityConfig | None = None,
        settle: bool = False) -> Cluster:
    """`before`, to quiescence; then the unlink of WRONG and `after`, interleaved (with `settle`:
    after the unlink has finished)."""
    cfg = cfg or IdentityConfig(partitions=partitions, quarantine=NO_GUARD)
    cluster = Cluster(cfg, random.Random(seed), replay)
    rng = cluster.rng
    order = list(range(len(before)))
    rng.shuffle(order)
    for n in order:
        _send(cluster, n, before[n])
        for _ in range(rng.randrange(0, 4)):
            cluster.step()
    cluster.run()
    if unlink:
        cluster.send(key_of(WRONG), {"k": "N", "op": "op-1"})
        if settle:
            cluster.run()
    for i, ids in enumerate(after):
        _send(cluster, len(before) + i, ids)
        for _ in range(rng.randrange(0, 4)):
            cluster.step()
    cluster.run()
    return cluster


def people(cluster: Cluster) -> list[tuple[Any, ...]]:
    out = []
    for prof in cluster.live_profiles().values():
        ids = tuple(sorted((k, v) for k, vs in prof["identities"].items() for v in vs))
        out.append((ids, prof["event_count"], tuple(sorted(prof["_seen"]))))
    return sorted(out)


def without_wrong(events: list[list[tuple[str, str]]]) -> list[list[tuple[str, str]]]:
    return [[i for i in ids if i != WRONG] for ids in events]


def glued_events() -> st.SearchStrategy[list[list[tuple[str, str]]]]:
    one = st.lists(st.sampled_from(POOL), min_size=1, max_size=3, unique_by=lambda i: i[0])
    with_wrong = one.map(lambda ids: [i for i in ids if i[0] != "email"] + [WRONG])
    return st.lists(st.one_of(one, with_wrong), min_size=1, max_size=30)


def baseline(before: list[list[tuple[str, str]]], after: list[list[tuple[str, str]]],
             partitions: int) -> list[tuple[Any, ...]]:
    """The run that never saw WRONG (events carrying only WRONG have no identifier left: gone)."""
    events = without_wrong(before + after)
    keep = [n for n, ids in enumerate(events) if ids]
    base = run([events[n] for n in keep], [], partitions, 0, 0.0, unlink=False)
    renamed = {f"m{i}": f"m{n}" for i, n in enumerate(keep)}  # the messageIds of the unlink run
    return sorted((ids, count, tuple(sorted(renamed[m] for m in seen))) for ids, count, seen in people(base))


@settings(max_examples=150, deadline=None)
@given(before=glued_events(), after=glued_events(), partitions=st.sampled_from([1, 3, 8]),
       seed=st.integers(0, 2**32), replay=st.sampled_from([0.0, 0.3]))
def test_unlink_gives_back_the_run_that_never_saw_the_wrong_identifier(
        before: list[list[tuple[str, str]]], after: list[list[tuple[str, str]]], partitions: int,
        seed: int, replay: float) -> None:
    cluster = run(before, after, partitions, seed, replay, settle=True)
    got = people(cluster)
    assert got == baseline(before, after, partitions)
    assert cluster.resolve(key_of(WRONG)) is None
    records = [c for c in cluster.changes if c["type"] == "unlinked"]
    assert records and all(c["identifier"] == WRONG[1] for c in records)


def test_a_glued_profile_splits_into_its_people_and_the_value_stays_blocked() -> None:
    ann = [("user_id", "u1"), ("anonymous_id", "a1")]
    bob = [("user_id", "u2"), ("anonymous_id", "a2")]
    before = [ann, bob, [("anonymous_id", "a1"), WRONG], [("anonymous_id", "a2"), WRONG]]
    after = [[("user_id", "u2"), WRONG], [WRONG]]
    for seed in range(20):
        glued = run(before, [], 3, seed, 0.0, unlink=False)
        assert len(glued.live_profiles()) == 1
        cluster = run(before, after, 3, seed, 0.3)
        live = cluster.live_profiles()
        assert sorted(p["identities"]["user_id"] for p in live.values()) == [["u1"], ["u2"]]
        assert sorted(p["event_count"] for p in live.values()) == [2, 3]
        assert all("email" not in p["identities"] for p in live.values())
        (record,) = {orjson.dumps(c) for c in cluster.changes if c["type"] == "unlinked"}
        rec = orjson.loads(record)
        CHANGE.validate(rec)
        assert rec["split"] is True and rec["exact"] is True and rec["events_dropped"] == 0
        assert sorted(p["identities"]["user_id"] for p in rec["parts"]) == [["u1"], ["u2"]]


def test_without_a_journal_no_split_is_guessed() -> None:
    ann, bob = [("user_id", "u1")], [("user_id", "u2")]
    cfg = IdentityConfig(partitions=3, quarantine=NO_GUARD, journal=False)
    cluster = run([ann + [WRONG], bob + [WRONG]], [], 3, 1, 0.0, cfg=cfg)
    (prof,) = cluster.live_profiles().values()
    assert prof["identities"] == {"user_id": ["u1", "u2"]} and prof["event_count"] == 2
    (rec,) = [c for c in cluster.changes if c["type"] == "unlinked"]
    CHANGE.validate(rec)
    assert rec["split"] is False and rec["reason"] == "journal_incomplete"


def test_release_lifts_the_block() -> None:
    cluster = run([[("user_id", "u1"), WRONG]], [], 1, 1, 0.0)
    assert cluster.resolve(key_of(WRONG)) is None
    cluster.send(key_of(WRONG), {"k": "O", "op": "release"})
    _send(cluster, 5, [("user_id", "u1"), WRONG])
    cluster.run()
    assert cluster.resolve(key_of(WRONG)) == cluster.resolve("user_id:u1")


@settings(max_examples=150, deadline=None)
@given(before=glued_events(), after=glued_events(), partitions=st.sampled_from([1, 3, 8]),
       seed=st.integers(0, 2**32))
def test_unlink_under_limits_replays_and_quarantine_keeps_the_protocol_laws(
        before: list[list[tuple[str, str]]], after: list[list[tuple[str, str]]], partitions: int,
        seed: int) -> None:
    limits = {"user_id": 1}
    cfg = IdentityConfig(partitions=partitions, limits=limits, quarantine=QuarantineConfig(),
                         max_merges=3, max_identifiers=6)
    cluster = run(before, after, partitions, seed, 0.3, cfg=cfg)
    events = without_wrong(before + after)
    assert cluster.resolve(key_of(WRONG)) is None
    live = cluster.live_profiles()
    counted = sorted(m for p in live.values() for m in p["_seen"])
    assert counted == sorted(f"m{n}" for n, ids in enumerate(events) if ids)
