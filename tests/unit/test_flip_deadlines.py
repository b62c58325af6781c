"""Deadlines at the instant an answer flips, not at every change of the value it reads.

A threshold on a trait that moves one way with time (`days_since(...) >= 60`, a count over a
trailing window) is due once, at the change point where it flips. The laws: first_flip finds the
change point a scan of every change would, and following those deadlines gives exactly the
transitions (segment, entry or exit, instant) that re-checking at every change gives.
"""

from __future__ import annotations

import bisect
import dataclasses
import operator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from processors.profile.computed import first_flip, since_flip
from processors.profile.formula import trend
from processors.segments.catalog import Catalog
from processors.segments.rules import count_flip
from tests.unit.test_segments import DAY, T0, Event, catalog, events_st, run

OPS = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10_000), st.integers(0, 3)), max_size=30),
       st.integers(-5, 40), st.sampled_from(sorted(OPS)), st.booleans(), st.integers(0, 5_000),
       st.booleans(), st.booleans())
def test_first_flip_is_the_change_point_a_scan_finds(steps: list[tuple[int, int]], level: int, op: str,
                                                    falling: bool, now: int, steady: bool,
                                                    told_level: bool) -> None:
    """A step function moving one way (change points with rises or falls), one threshold; steady:
    equal steps at equal intervals, like days_since (where the level lets it guess)."""
    if steady and steps:
        steps = [(steps[0][0], max(1, steps[0][1]))] * len(steps)
    points: list[int] = []
    values, value = [0], 0
    for gap, rise in steps:
        points.append((points[-1] if points else 0) + gap)
        value += -rise if falling else rise
        values.append(value)

    def probe(t: int) -> tuple[Any, int | None]:
        i = bisect.bisect_right(points, t)
        return values[i], points[i] if i < len(points) else None

    def holds(v: Any) -> bool:
        return bool(OPS[op](v, level))

    value_now, first = probe(now)
    answer = holds(value_now)
    scan = next((p for p in points if p > now and holds(probe(p)[0]) != answer), None)
    found = None if first is None else first_flip(probe, holds, now, answer, first, 10**9,
                                                  float(level) if told_level else None)
    assert found == scan


@settings(max_examples=400, deadline=None)
@given(st.integers(-10**9, 10**9), st.integers(0, 10**10), st.sampled_from([DAY, 3_600_000, 7]),
       st.floats(-50, 5_000, allow_nan=False), st.sampled_from(sorted(OPS)), st.booleans())
def test_since_flip_is_the_change_point_a_scan_finds(since: int, elapsed_ms: int, unit: int,
                                                      level: float, op: str, told_level: bool) -> None:
    """The closed form for whole units since a fixed instant, against a scan of its change points
    (the units themselves) up to past the level; None (search instead) is allowed only when the
    level was not told."""
    now = since + elapsed_ms
    elapsed = (now - since) // unit

    def holds(v: Any) -> bool:
        return bool(OPS[op](v, level))

    answer = holds(elapsed)
    last = max(elapsed + 2, int(level) + 3)
    scan = next((since + k * unit for k in range(elapsed + 1, last) if holds(k) != answer), None)
    found = since_flip(elapsed, since, unit, holds, answer, level if told_level else None)
    if told_level or found is not None:
        assert found == scan


def test_a_guess_from_the_first_two_steps_is_checked() -> None:
    """Steps of 10 then 20 ms suggest the level 4 at 70; the value speeds up and reaches it at 40."""
    points, values = [10, 30, 35, 40], [0, 1, 2, 3, 4]

    def probe(t: int) -> tuple[Any, int | None]:
        i = bisect.bisect_right(points, t)
        return values[i], points[i] if i < len(points) else None

    assert first_flip(probe, lambda v: v >= 4, 0, False, 10, 10**9, 4.0) == 40
    assert first_flip(probe, lambda v: v >= 2, 0, False, 10, 10**9, 2.0) == 30


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 6), st.lists(st.tuples(st.integers(0, 20), st.sampled_from([-1, 1])), max_size=12),
       st.integers(0, 4))
def test_a_count_flips_where_the_moves_of_one_instant_leave_it(n: int, moves: list[tuple[int, int]],
                                                              level: int) -> None:
    """Events entering and leaving the window at the same instant move the count at once."""
    def holds(count: int) -> bool:
        return count >= level

    count, want = n, None
    for at in sorted({a for a, _ in moves}):
        count += sum(c for a, c in moves if a == at)
        if holds(count) != holds(n):
            want = at
            break
    assert count_flip(n, list(moves), holds) == want


def test_trends_of_formulas() -> None:
    of = {"last": 0, "n30": -1, "sum30": None, "n": 0}
    assert trend("days_since(last)", of) == 1
    assert trend("step(days_since(last), 30, 90)", of) == 1
    assert trend("5 - step(days_since(last), 30, 90)", of) == -1
    assert trend("n30 * 2 - days_since(last)", of) == -1
    assert trend("n30 + days_since(last)", of) is None  # opposite ways
    assert trend("sum30 + 1", of) is None
    assert trend("n / n30", of) is None
    assert trend("n + 1", of) == 0
    assert trend("-n30 / 4", of) == 1
    assert trend("days_since(sum30)", of) is None
    assert trend("hours_since(now)", of) is None
    assert trend("abs(n30)", of) is None


def transitions_over(events: list[Event], cat: Catalog, days: int) -> list[tuple[str, str, int]]:
    profile = run(events, cat)
    now = T0 + max((e[1] for e in events), default=0)
    out: list[tuple[str, str, int]] = []
    while profile.get("_next") is not None and profile["_next"] <= now + days * DAY:
        at = profile["_next"]
        out += [(c["segment"], c["transition"], c["at"]) for c in cat.evaluate(profile, at, set(), "time")]
    return out


@settings(max_examples=60, deadline=None)
@given(events_st, st.integers(1, 700))
def test_flip_deadlines_give_the_transitions_of_a_recheck_at_every_change(events: list[Event],
                                                                         days: int) -> None:
    exact = catalog()
    assert exact.trends["days_since_last_order"] == 1 and exact.trends["orders_30d"] == -1
    every_change = dataclasses.replace(exact, trends={})
    assert transitions_over(events, exact, days) == transitions_over(events, every_change, days)


HOUR = 3_600_000
SHOP_CHANGES = (HOUR, 30 * DAY + 1, 90 * DAY + 1, 60 * DAY, 180 * DAY)
"""After an event at t, shop.yaml's answers can change by themselves only at t + one of these:
an hour-old checkout, an order leaving a 30 or 90 day window, 60 and 180 days since an order."""


def members_at(profile: dict[str, Any], cat: Catalog, at: int) -> set[str]:
    fresh = dict(profile, segments={}, _due={})
    cat.evaluate(fresh, at, None, "check")
    return set(fresh["segments"])


@settings(max_examples=60, deadline=None)
@given(events_st, st.integers(1, 700))
def test_deadlines_fire_exactly_where_a_sweep_sees_membership_change(events: list[Event], days: int) -> None:
    """The reference knows nothing of deadlines: it evaluates afresh at every instant where an
    answer can change by itself and notes where membership differs from the instant before."""
    cat = catalog()
    profile = run(events, cat)
    now = T0 + max((e[1] for e in events), default=0)
    end = now + days * DAY
    swept: list[tuple[str, str, int]] = []
    before = members_at(profile, cat, now)
    for at in sorted({T0 + e[1] + d for e in events for d in SHOP_CHANGES if now < T0 + e[1] + d <= end}):
        after = members_at(profile, cat, at)
        swept += [(s, "entered", at) for s in after - before] + [(s, "exited", at) for s in before - after]
        before = after
    assert sorted(transitions_over(events, cat, days), key=lambda t: (t[2], t)) == \
        sorted(swept, key=lambda t: (t[2], t))
