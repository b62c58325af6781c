"""Each customer's purchase history as the buy-till-you-die models read it, kept exactly.

The state (profile["_rfm"]) holds purchase *occasions* by UTC calendar day: every
purchase event of one day is one occasion, its values summed (Fader, Hardie & Lee
count days, not orders). Refunds are kept by day beside them. From that state
summary() derives, as of any day, what the models need:

    frequency  repeat occasions (occasions after the first)
    recency    days from the first occasion to the last
    age        days from the first occasion to the as-of day (T in the papers)
    monetary   mean net value of the repeat occasions (None without one)

A refund nets against the customer's latest occasion on or before the refund's
day (a refund before any purchase counts for nothing); it never adds or removes
an occasion. Values are kept as integer millionths, so sums do not depend on the
order events arrive in, and a merge adds two states exactly: state after events
E ∪ F == merge(state after E, state after F) (tests/unit/test_predict.py).

Memory is bounded: at most `max_days` purchase days (and as many refund days) are
listed per customer. Beyond that, the oldest repeat occasions are folded into one
count and sum ("f": [occasions, millionths, last folded day]); a summary as of a
day after the folded ones stays exact, one as of an earlier day counts none of
them, a later purchase on an already-folded day counts as a new occasion, and a
refund dated among folded days nets against the latest occasion still listed
before it. Refund days beyond the bound fold into the oldest refund day kept.
The default bound, 2000 days, is more than five years of daily purchases.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from processors.common.predicates import as_number, get_path

DAY_MS = 86_400_000
UNITS = 1_000_000
"""Values are stored as integer millionths of the currency unit."""


@dataclass(frozen=True)
class RfmConfig:
    """Which events are purchases and refunds, and which property holds their value."""

    purchase_events: tuple[str, ...] = ("Order Completed",)
    purchase_value: tuple[str, ...] = ("properties.revenue", "properties.total")
    refund_events: tuple[str, ...] = ("Order Refunded",)
    refund_value: tuple[str, ...] = ("properties.revenue", "properties.total")
    max_days: int = 2000

    @functools.cached_property
    def events(self) -> frozenset[str]:
        return frozenset(self.purchase_events) | frozenset(self.refund_events)


@dataclass(frozen=True)
class Summary:
    first_day: int
    frequency: int
    recency_days: int
    age_days: int
    monetary: float | None
    as_of_day: int


def day_of(ts_ms: int) -> int:
    return ts_ms // DAY_MS


def _value(msg: Mapping[str, Any], paths: Sequence[str]) -> int:
    for path in paths:
        num = as_number(get_path(msg, path))
        if num is not None:
            return round(num * UNITS)
    return 0


def observe(state: dict[str, Any], cfg: RfmConfig, name: str, ts: int, msg: Mapping[str, Any]) -> bool:
    """Fold one event into the state (in place); True when it was a purchase or a refund."""
    if name in cfg.purchase_events:
        key, value = "o", _value(msg, cfg.purchase_value)
    elif name in cfg.refund_events:
        key, value = "r", abs(_value(msg, cfg.refund_value))
    else:
        return False
    day = day_of(ts)
    folded = state.get("f")
    first = _first(state) if folded is not None and key == "o" else None
    if first is not None and folded is not None and first < day <= folded[2] \
            and str(day) not in state.get("o", {}):
        state["f"] = [folded[0] + 1, folded[1] + value, folded[2]]  # inside the folded past
        return True
    days: dict[str, int] = state.setdefault(key, {})
    days[str(day)] = days.get(str(day), 0) + value
    _bound(state, cfg.max_days)
    return True


def _first(state: Mapping[str, Any]) -> int | None:
    days = state.get("o")
    return min(map(int, days)) if days else None


def _bound(state: dict[str, Any], cap: int) -> None:
    orders: dict[str, int] = state.get("o", {})
    if len(orders) > cap:
        ordered = sorted(orders, key=int)
        fold = ordered[1:len(orders) - cap + 1]  # never the first occasion
        n, total, last = state.get("f") or [0, 0, int(ordered[0])]
        for key in fold:
            n, total, last = n + 1, total + orders.pop(key), max(last, int(key))
        state["f"] = [n, total, last]
    refunds: dict[str, int] = state.get("r", {})
    if len(refunds) > cap:
        ordered = sorted(refunds, key=int)
        keep = ordered[len(refunds) - cap:]
        dropped = sum(refunds[k] for k in ordered[:len(refunds) - cap])
        state["r"] = {k: refunds[k] for k in keep}
        oldest = keep[0]
        state["r"][oldest] += dropped  # netted a little later than it happened, never lost


def merge(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """The state of both customers' events together (neither input changed).

    Not bounded here (at most twice the bound): the merged profile's next purchase
    applies the bound of the configuration in force."""
    out: dict[str, Any] = {}
    for key in ("o", "r"):
        days = dict(a.get(key, {}))
        for day, value in b.get(key, {}).items():
            days[day] = days.get(day, 0) + value
        if days:
            out[key] = dict(sorted(days.items(), key=lambda kv: int(kv[0])))
    fa, fb = a.get("f"), b.get("f")
    if fa is not None or fb is not None:
        fa, fb = fa or [0, 0, fb[2]], fb or [0, 0, fa[2]]  # type: ignore[index]
        out["f"] = [fa[0] + fb[0], fa[1] + fb[1], max(fa[2], fb[2])]
    return out


def summary(state: Mapping[str, Any] | None, as_of_day: int) -> Summary | None:
    """The customer's summary counting purchase days up to `as_of_day` inclusive (None: none)."""
    if not state:
        return None
    days = sorted(int(d) for d in state.get("o", {}) if int(d) <= as_of_day)
    if not days:
        return None
    orders = state["o"]
    net = {d: orders[str(d)] for d in days}
    for rday, value in state.get("r", {}).items():
        r = int(rday)
        if r > as_of_day:
            continue
        target = _latest_at_or_before(days, r)
        if target is not None:
            net[target] -= value
    first = days[0]
    frequency = len(days) - 1
    repeat_total = sum(net[d] for d in days[1:])
    last = days[-1]
    folded = state.get("f")
    if folded is not None and folded[2] <= as_of_day:
        frequency += folded[0]
        repeat_total += folded[1]
        last = max(last, folded[2])
    monetary = repeat_total / UNITS / frequency if frequency else None
    return Summary(first, frequency, last - first, as_of_day - first, monetary, as_of_day)


def _latest_at_or_before(days: list[int], day: int) -> int | None:
    lo, hi = 0, len(days)
    while lo < hi:
        mid = (lo + hi) // 2
        if days[mid] <= day:
            lo = mid + 1
        else:
            hi = mid
    return days[lo - 1] if lo else None


def parse_day(text: str) -> int:
    """'1997-09-30' (that day, inclusive) or an ISO-8601 instant (its UTC day) → day number."""
    from datetime import date

    from processors.common.timeutil import to_ms

    try:
        return (date.fromisoformat(text.strip()) - date(1970, 1, 1)).days
    except ValueError:
        pass
    ms = to_ms(text)
    if ms is None:
        raise ValueError(f"expected a date like 1997-09-30 or an ISO-8601 instant, got {text!r}")
    return day_of(ms)
