"""Computed traits and segments, pure: values against brute force, laws, time, bad definitions."""

from __future__ import annotations

import functools
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.common.config import ConfigError
from processors.common.predicates import Ctx, DefinitionError
from processors.ingest.events import Touchpoint
from processors.profile import aggregates as ag
from processors.profile.formula import compile_formula, evaluate
from processors.profile.merge import merge
from processors.profile.unified import Outcome, ProfileLimits, apply, new_profile
from processors.segments.catalog import Catalog
from processors.segments.definitions import load_file, parse_record

DAY = 86_400_000
EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "shop.yaml"
T0 = 1_700_000_000_000

Event = tuple[str, int, float, str]  # (name, ts, revenue, category)
event_st = st.tuples(
    st.sampled_from(["Order Completed", "Order Refunded", "Product Viewed", "Checkout Started"]),
    st.integers(0, 400 * DAY), st.integers(1, 500).map(float), st.sampled_from(["shoes", "hats", "bags"]))
events_st = st.lists(event_st, max_size=40)


def touchpoint(i: int, e: Event) -> Touchpoint:
    name, ts, revenue, category = e
    msg = {"type": "track", "event": name, "messageId": f"m{i}", "userId": "u1",
           "properties": {"revenue": revenue, "category": category,
                          "products": [{"product_id": category[0]}, {"product_id": f"p{int(revenue) % 3}"}]}}
    return Touchpoint(msg, "track", f"m{i}", T0 + ts, [("user_id", "u1")])


@functools.cache
def catalog() -> Catalog:
    traits, segments = load_file(EXAMPLES)
    return Catalog.build(traits, segments)


def run(events: list[Event], cat: Catalog, order: list[int] | None = None,
        pid: str = "p_1") -> dict[str, Any]:
    profile = new_profile(pid)
    idx = order if order is not None else list(range(len(events)))
    now = T0
    for i in idx:
        tp = touchpoint(i, events[i])
        now = max(now, tp.ts)
        assert apply(profile, tp) is Outcome.APPLIED
        cat.evaluate(profile, now, cat.observe(profile, tp, now), tp.message_id)
    return profile


def reference(events: list[Event], now: int) -> dict[str, Any]:
    """The shop.yaml traits, computed the obvious way."""
    ts = [(n, T0 + t, r, c) for n, t, r, c in events]
    orders = [e for e in ts if e[0] == "Order Completed"]
    refunds = [e for e in ts if e[0] == "Order Refunded"]
    ltv = sum(e[2] for e in orders) - sum(e[2] for e in refunds)
    last = max((e[1] for e in orders), default=None)
    spend = sum(e[2] for e in orders if now - 365 * DAY <= e[1] <= now)
    prev = sum(e[2] for e in orders if now - 730 * DAY <= e[1] <= now - 365 * DAY)
    views = [e[3] for e in ts if e[0] == "Product Viewed"]
    fav = None
    if views:
        fav = min(set(views), key=lambda c: (-views.count(c), f'"{c}"'))
    return {
        "ltv": ltv, "orders_count": len(orders),
        "orders_30d": sum(1 for e in orders if now - 30 * DAY <= e[1] <= now),
        "days_since_last_order": None if last is None else (now - last) // DAY,
        "spend_365d": spend, "spend_prev_365d": prev,
        "spend_yoy_change": None if prev == 0 else (spend - prev) / prev,
        "favourite_category": fav,
        "distinct_products": len({p for e in orders for p in (e[3][0], f"p{int(e[2]) % 3}")}),
        "vip": ltv >= 500 and sum(1 for e in orders if now - 90 * DAY <= e[1] <= now) >= 2,
        "lapsed": bool(orders) and not any(now - 30 * DAY <= e[1] <= now for e in orders),
        "frequent_buyers": sum(1 for e in orders if now - 30 * DAY <= e[1] <= now) >= 2,
        "at_risk": last is not None and 60 <= (now - last) // DAY < 180,
    }


@settings(max_examples=150, deadline=None)
@given(events_st, st.integers(0, 800))
def test_computed_traits_and_segments_equal_brute_force(events: list[Event], later_days: int) -> None:
    cat = catalog()
    profile = run(events, cat)
    now = T0 + max((e[1] for e in events), default=0) + later_days * DAY // 2
    view = cat.computed_view(profile, now)
    want = reference(events, now)
    for name in ("ltv", "orders_count", "orders_30d", "days_since_last_order", "spend_365d",
                 "spend_prev_365d", "favourite_category", "distinct_products"):
        assert view[name] == pytest.approx(want[name]), name
    if want["spend_yoy_change"] is None:
        assert view["spend_yoy_change"] is None
    else:
        assert view["spend_yoy_change"] == pytest.approx(want["spend_yoy_change"])
    fresh = dict(profile, segments={}, _due={})
    cat.evaluate(fresh, now, None, "check")
    assert ("vip" in fresh["segments"]) == want["vip"]
    for seg in ("lapsed", "frequent_buyers", "at_risk"):
        assert (seg in fresh["segments"]) == want[seg], seg


@given(st.integers(1, 40).flatmap(lambda n: st.lists(event_st, min_size=n, max_size=n)))
def test_a_rebuild_equals_observing_the_held_events_from_the_first(events: list[Event]) -> None:
    """A new profile's first event starts every aggregate empty (no state) and folds itself in (no
    replay, catalog.observe); a rebuild (here: as after a definitions change) replays the events the
    profile holds, its newest `recent_events` (README, Segments). So a rebuild equals a profile
    that saw only those events, and, up to that many events, the profile kept from the first.
    Lengths are drawn evenly up to twice the limit, so both sides of it are tried."""
    cat = catalog()
    kept = run(events, cat)
    rebuilt = dict(kept)
    rebuilt["_agg"], rebuilt["_cv"] = {}, "another catalog"
    now = T0 + 500 * DAY
    cat.evaluate(rebuilt, now, None, "rebuild")
    versions = {td.id: td.version for td in cat.aggregates}
    assert {tid: state["v"] for tid, state in rebuilt["_agg"].items()}.items() <= versions.items()
    held = sorted(range(len(events)), key=lambda i: (events[i][1], f"m{i}"))[-ProfileLimits().recent_events:]
    only_held = run(events, cat, sorted(held))
    assert cat.computed_view(rebuilt, now) == pytest.approx(cat.computed_view(only_held, now))


@settings(max_examples=100, deadline=None)
@given(events_st, st.randoms(use_true_random=False))
def test_arrival_order_does_not_change_traits(events: list[Event], rnd: random.Random) -> None:
    cat = catalog()
    order = list(range(len(events)))
    rnd.shuffle(order)
    now = T0 + 500 * DAY
    a, b = run(events, cat), run(events, cat, order)
    assert cat.computed_view(a, now) == pytest.approx(cat.computed_view(b, now))


@settings(max_examples=100, deadline=None)
@given(events_st, st.integers(0, 40))
def test_merging_two_profiles_equals_one_profile_with_all_events(events: list[Event], cut: int) -> None:
    cat = catalog()
    cut = min(cut, len(events))
    left = run(events, cat, list(range(cut)), "p_1")
    right = run(events, cat, list(range(cut, len(events))), "p_2")
    whole = run(events, cat)
    now = T0 + 500 * DAY
    merged = merge(left, right)
    assert cat.computed_view(merged, now) == pytest.approx(cat.computed_view(whole, now))
    assert merge(right, left)["_agg"] == merged["_agg"]


@settings(max_examples=100, deadline=None)
@given(events_st, st.lists(st.integers(1, 900 * DAY), min_size=1, max_size=6))
def test_deadlines_keep_membership_equal_to_a_fresh_evaluation(events: list[Event], ticks: list[int]) -> None:
    """Re-checking only when a deadline is due gives what evaluating everything would."""
    cat = catalog()
    profile = run(events, cat)
    now = T0 + max((e[1] for e in events), default=0)
    for step in sorted(ticks):
        target = now + step
        while profile.get("_next") is not None and profile.get("_next") <= target:
            cat.evaluate(profile, profile.get("_next"), set(), "time")
        fresh = dict(profile, segments={}, _due={})
        cat.evaluate(fresh, target, None, "check")
        cat.evaluate(profile, target, set(), "tick")
        assert set(profile["segments"]) == set(fresh["segments"]), target


def test_every_entry_and_exit_is_one_transition() -> None:
    cat = catalog()
    profile = new_profile("p_1")
    seen: list[tuple[str, str]] = []
    evs = [("Order Completed", 0, 400.0, "shoes"), ("Order Completed", DAY, 200.0, "shoes"),
           ("Checkout Started", 2 * DAY, 0.0, "shoes")]
    for i, e in enumerate(evs):
        tp = touchpoint(i, e)
        apply(profile, tp)
        seen += [(t["segment"], t["transition"]) for t in
                 cat.evaluate(profile, tp.ts, cat.observe(profile, tp, tp.ts), tp.message_id)]
    assert ("vip", "entered") in seen
    now = T0 + 2 * DAY
    while profile.get("_next") is not None and profile.get("_next") < T0 + 200 * DAY:
        now = profile.get("_next")
        seen += [(t["segment"], t["transition"]) for t in cat.evaluate(profile, now, set(), "time")]
    assert seen.count(("cart_abandoned", "entered")) == 1
    assert seen.count(("lapsed", "entered")) == 1
    assert seen.count(("vip", "exited")) == 1
    assert seen.count(("lapsed_vip", "entered")) == 1
    for seg in {s for s, _ in seen}:
        kinds = [k for s, k in seen if s == seg]
        assert all(a != b for a, b in zip(kinds, kinds[1:], strict=False)), seg  # alternating


def test_consent_subscriptions_and_accounts() -> None:
    cat = catalog()
    profile = new_profile("p_1")
    msg = {"type": "identify", "messageId": "i1", "userId": "u1",
           "traits": {"subscriptions": {"email": "subscribed"}},
           "context": {"consent": {"categoryPreferences": {"Marketing": True}}}}
    tp = Touchpoint(msg, "identify", "i1", T0, [("user_id", "u1")])
    apply(profile, tp)
    cat.evaluate(profile, T0, cat.observe(profile, tp, T0), "i1")
    assert "newsletter_reachable" in profile["segments"]
    assert "subscriptions" not in profile["traits"]
    msg2 = {**msg, "messageId": "i2", "traits": {"subscriptions": {"email": "unsubscribed"}}}
    tp2 = Touchpoint(msg2, "identify", "i2", T0 + 1, [("user_id", "u1")])
    apply(profile, tp2)
    cat.evaluate(profile, T0 + 1, cat.observe(profile, tp2, T0 + 1), "i2")
    assert "newsletter_reachable" not in profile["segments"]
    profile["memberships"] = [{"account_id": "p_a", "group_id": "acme", "since": T0, "until": None,
                               "account_traits": {"plan": "enterprise"}}]
    order = touchpoint(9, ("Order Completed", 5, 10.0, "hats"))
    apply(profile, order)
    cat.evaluate(profile, order.ts, cat.observe(profile, order, order.ts), "m9")
    assert "enterprise_buyers" in profile["segments"]


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 9)), max_size=200), st.integers(2, 16))
def test_buckets_stay_bounded_and_keep_the_total(points: list[tuple[int, int]], cap: int) -> None:
    buckets: ag.Buckets = {}
    for ts, n in points:
        ag.bucket_add(buckets, ts, n, lambda a, b: (a or 0) + (b or 0), cap)
    assert len(buckets) <= cap
    assert sum(p for _, p in buckets.values()) == sum(n for _, n in points)
    spans = sorted((int(k), int(k) + v[0]) for k, v in buckets.items())
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))  # disjoint
    for ts, _ in points:
        assert any(lo <= ts < hi for lo, hi in spans)  # every event in its own time's bucket


@pytest.mark.parametrize("agg", ag.AGGREGATES)
@given(st.lists(st.tuples(st.integers(0, 100), st.integers(-50, 50)), min_size=1, max_size=20), st.data())
def test_partial_aggregates_combine_in_any_grouping(agg: str, obs: list[tuple[int, int]], data: Any) -> None:
    partials = [ag.single(agg, ts, f"m{i}", v) for i, (ts, v) in enumerate(obs)]
    whole = ag.result(agg, ag.fold(agg, partials))
    shuffled = data.draw(st.permutations(partials))
    cut = data.draw(st.integers(0, len(partials)))
    split = ag.combine(agg, ag.fold(agg, shuffled[:cut]), ag.fold(agg, shuffled[cut:]))
    assert ag.result(agg, split) == pytest.approx(whole)


def test_formulas() -> None:
    fn, names = compile_formula("(a - b) / b", lambda n: n in "ab", ["f"])
    assert names == {"a", "b"}
    assert evaluate(fn, {"a": 3, "b": 2}, Ctx(0)) == 0.5
    assert evaluate(fn, {"a": 3, "b": 0}, Ctx(0)) is None
    assert evaluate(fn, {"a": None, "b": 2}, Ctx(0)) is None
    ctx = Ctx(10 * DAY + 5)
    days, _ = compile_formula("days_since(t)", lambda n: n == "t", ["f"])
    assert evaluate(days, {"t": 3 * DAY}, ctx) == 7 and ctx.next_due == 11 * DAY
    with pytest.raises(DefinitionError, match="known computed trait"):
        compile_formula("a + zz", lambda n: n == "a", ["f"])
    with pytest.raises(DefinitionError, match="got '__import__"):
        compile_formula("__import__('os')", lambda n: True, ["f"])


@pytest.mark.parametrize("spec,path,expected", [
    ({"id": "s", "condition": {"all": []}}, "segments.s.condition.all", "non-empty list"),
    ({"id": "s", "condition": {"trait": "plan", "equals": "x"}}, "segments.s.condition.equals", "operator"),
    ({"id": "s", "condition": {"any": [{"performed": "X", "within": "soon"}]}},
     "segments.s.condition.any[0].within", "duration"),
    ({"id": "s", "condition": {"computed": "nope", "gt": 1}}, "segments.s.condition", "known computed trait"),
    ({"id": "s", "condition": {"segment": "s"}}, "segments.s.condition", "not refer to 's'"),
    ({"id": "s", "condition": {"not": {"subscription": "email", "is": "maybe"}}},
     "segments.s.condition.not.is", "one of"),
])
def test_bad_segments_name_the_node(spec: dict[str, Any], path: str, expected: str) -> None:
    with pytest.raises(DefinitionError) as err:
        catalog().put("segment", spec)
    assert str(err.value).startswith(f"at {path}:")
    assert expected in str(err.value)


def test_segment_cycles_are_rejected() -> None:
    cat = catalog().put("segment", {"id": "a", "condition": {"segment": "vip"}})
    with pytest.raises(DefinitionError, match="cycle"):
        cat.put("segment", {"id": "vip", "condition": {"segment": "a"}})


def test_bad_definition_files_fail_with_file_and_line(tmp_path: Path) -> None:
    f = tmp_path / "defs.yaml"
    f.write_text("segments:\n  - id: a\n    condition:\n      all:\n        - trait: plan\n"
                 "          eq: pro\n        - performed: Order Completed\n          within: often\n")
    with pytest.raises(ConfigError) as err:
        load_file(f)
    assert str(err.value).startswith(f"{f}:8: at segments[0].condition.all[1].within: expected a duration")
    f.write_text("computed_traits:\n  - id: x\n    aggregate: median\n")
    with pytest.raises(ConfigError, match=r"defs.yaml:3: at computed_traits.0.aggregate"):
        load_file(f)


def test_records_are_checked_against_the_schema() -> None:
    assert parse_record("segment", {"kind": "segment", "id": "a", "condition": {"trait": "x", "eq": 1}})
    with pytest.raises(DefinitionError, match="condition"):
        parse_record("segment", {"id": "a"})


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 200 * DAY), min_size=1, max_size=6), st.integers(0, 300 * DAY),
       st.lists(st.integers(1, 200), min_size=2, max_size=4, unique=True))
def test_segments_on_one_trait_share_its_probes(orders: list[int], later: int, days: list[int]) -> None:
    """Segments reading one moving trait find their deadlines from one set of probes: within a
    pass the trait is computed once per instant, and each deadline is the one found alone. (A bare
    `days_since(t)` has a closed form and no probes: the trait here is one step away from it.)"""
    from processors.profile import computed as ct

    traits, _ = load_file(EXAMPLES)
    traits = [*traits, {"id": "weeks_since_last_order", "formula": "days_since(last_order_at) // 7"}]
    specs = [{"id": f"d{n}", "condition": {"computed": "weeks_since_last_order", "gte": n // 7}}
             for n in days]
    events = [("Order Completed", ts, 10.0, "hats") for ts in sorted(orders)]
    now = T0 + max(orders) + later
    alone = {}
    for spec in specs:
        one = Catalog.build(traits, [spec])
        p = run(events, one)
        one.evaluate(p, now, None, "tick")
        alone[spec["id"]] = p["_due"].get(spec["id"])
    both = Catalog.build(traits, specs)
    together = run(events, both)
    calls: list[tuple[str, int]] = []
    value = ct.value

    def recorded(td: ct.TraitDef, profile: dict[str, Any], ctx: Ctx, lookup: Any) -> Any:
        calls.append((td.id, ctx.now))
        return value(td, profile, ctx, lookup)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ct, "value", recorded)
        both.evaluate(together, now, None, "tick")
    assert {s["id"]: together["_due"].get(s["id"]) for s in specs} == alone
    assert len(calls) == len(set(calls))
    if any(d is not None for d in alone.values()):  # a deadline was searched for: probes ran
        assert any(at != now for _, at in calls)
