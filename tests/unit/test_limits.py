"""Limits as users know them: merges and identifiers per profile (Segment's 100 and 1,000)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.identity.graph import IdentityConfig
from tests.unit.test_identity_protocol import NO_GUARD, Cluster, assert_limits_and_links, event_lists, play


def limited(idents: list[list[tuple[str, str]]], partitions: int, seed: int, merges: int,
            identifiers: int) -> Cluster:
    import tests.unit.test_identity_protocol as tip

    real = tip.IdentityConfig

    def cfg(**kw: Any) -> IdentityConfig:
        return real(**kw, max_merges=merges, max_identifiers=identifiers)

    tip.IdentityConfig = cfg  # type: ignore[misc,assignment]
    try:
        return play(idents, partitions, seed, guard=NO_GUARD)
    finally:
        tip.IdentityConfig = real  # type: ignore[misc]


def test_merges_past_the_limit_are_refused_counted_and_recorded() -> None:
    idents = [[("user_id", "u0")], *[[("anonymous_id", f"a{i}")] for i in range(5)],
              *[[("user_id", "u0"), ("anonymous_id", f"a{i}")] for i in range(5)]]
    refusals = 0
    for seed in range(10):  # arrival orders differ: u0 may claim an anonymous id before its profile exists
        cluster = limited(idents, 3, seed, merges=2, identifiers=1000)
        live = cluster.live_profiles()
        assert all(len(p["merged_from"]) <= 2 for p in live.values())
        refused = [c for c in cluster.changes if c["type"] == "merge_refused"]
        assert all(c["reason"] == "max_merges" and c["limit"] == 2 for c in refused)
        assert (len(live) > 1) == bool(refused), (live, refused)  # split only by a refusal
        refusals += len(refused)
        assert sum(p["event_count"] for p in live.values()) == len(idents)
        assert_limits_and_links(cluster, idents, {})
    assert refusals


def test_identifiers_past_the_limit_are_refused_and_recorded() -> None:
    idents = [[("user_id", "u0"), ("anonymous_id", f"a{i}")] for i in range(6)]
    cluster = limited(idents, 1, 0, merges=100, identifiers=3)
    (prof,) = cluster.live_profiles().values()
    assert sum(len(v) for v in prof["identities"].values()) == 3
    refused = [c for c in cluster.changes if c["type"] == "identifier_refused"]
    kept = set(prof["identities"]["anonymous_id"])
    assert {c["identifier"] for c in refused} == {f"a{i}" for i in range(6)} - kept
    assert all(c["reason"] == "max_identifiers" and c["limit"] == 3 for c in refused)


@settings(max_examples=500, deadline=None)
@given(idents=event_lists(), partitions=st.sampled_from([1, 3, 8]), seed=st.integers(0, 2**32))
def test_merge_and_identifier_limits_hold(idents: list[list[tuple[str, str]]], partitions: int,
                                          seed: int) -> None:
    cluster = limited(idents, partitions, seed, merges=2, identifiers=4)
    for prof in cluster.live_profiles().values():
        assert len(prof["merged_from"]) <= 2
        assert sum(len(v) for v in prof["identities"].values()) <= 4
    assert_limits_and_links(cluster, idents, {})


def test_defaults_are_segments() -> None:
    cfg = IdentityConfig(partitions=1)
    assert (cfg.max_merges, cfg.max_identifiers) == (100, 1000)
