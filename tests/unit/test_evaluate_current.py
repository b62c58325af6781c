"""Segment evaluation across definition changes: what evaluate() keeps per profile (memberships,
deadlines, the fingerprint of the catalog that evaluated it) names only the catalog's segments
after every evaluation; a profile the catalog evaluated last is then evaluated without
re-checking them, a later catalog re-checks the segments whose version changed, or all of them
when the process does not know the earlier catalog (processors/segments/catalog.py, _VERSIONS),
and each must still end where a fresh evaluation does."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.profile.unified import Outcome, apply, new_profile
from processors.segments import catalog as catalog_module
from processors.segments.catalog import Catalog
from tests.unit.test_segments import DAY, T0, Event, catalog, events_st, touchpoint

NAMES = ["Order Completed", "Order Refunded", "Product Viewed", "Checkout Started"]

# a definition change: add or replace a segment (one of a few shapes), or delete one
change_st = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(["vip", "lapsed", "x1", "x2"]), st.sampled_from(NAMES),
              st.integers(1, 60)),
    st.tuples(st.just("delete"), st.sampled_from(["vip", "lapsed", "frequent_buyers", "at_risk", "x1"]),
              st.just(""), st.just(0)))


def changed(cat: Catalog, change: tuple[str, str, str, int]) -> Catalog:
    kind, sid, name, days = change
    if kind == "delete":
        return cat.delete("segment", sid) if sid in cat.segments and not any(
            sid in seg.segments for other, seg in cat.segments.items() if other != sid) else cat
    return cat.put("segment", {"id": sid, "condition": {"performed": name, "within": f"{days}d"}})


def consistent(profile: dict[str, Any], cat: Catalog) -> None:
    assert set(profile["segments"]) <= set(cat.segments)
    assert set(profile["_due"]) <= set(cat.segments)
    assert "_seg_v" not in profile
    assert profile["_sv"] == cat.fingerprint


def forget(profile: dict[str, Any], last: Catalog, how: str) -> None:
    """Before a definition change: the process keeps the catalogs it built (`kept`), forgets
    them (`forgotten`: a restart, or a partition that another worker evaluated), or the profile
    was written before the fingerprints, with its segment versions (`legacy`)."""
    if how == "kept":
        return
    catalog_module._VERSIONS.clear()
    if how == "legacy" and "_sv" in profile:  # the versions of `last`, which evaluated it
        profile.setdefault("_seg_v", dict(last.versions))


@settings(max_examples=150, deadline=None)
@given(events_st, st.lists(st.tuples(st.integers(0, 40), change_st), max_size=4),
       st.sampled_from(["kept", "forgotten", "legacy"]))
def test_definition_changes_between_events_end_as_a_fresh_evaluation(
        events: list[Event], changes: list[tuple[int, tuple[str, str, str, int]]], how: str) -> None:
    cat = catalog()
    at = sorted(changes, key=lambda c: c[0])
    profile = new_profile("p_1")
    now = T0
    last = cat
    for i, e in enumerate(events):
        while at and at[0][0] <= i:
            forget(profile, last, how)
            cat = changed(cat, at.pop(0)[1])
        tp = touchpoint(i, e)
        now = max(now, tp.ts)
        assert apply(profile, tp) is Outcome.APPLIED
        cat.evaluate(profile, now, cat.observe(profile, tp, now), tp.message_id)
        consistent(profile, cat)
        last = cat
    for _, change in at:  # changes after the last event: the next re-check (a tick) sees them
        forget(profile, last, how)
        cat = changed(cat, change)
    later = now + DAY
    cat.evaluate(profile, later, set(), "tick")
    consistent(profile, cat)
    fresh = dict(profile, segments={}, _due={})
    cat.evaluate(fresh, later, None, "check")
    assert set(profile["segments"]) == set(fresh["segments"])
    assert profile["_due"] == fresh["_due"]
