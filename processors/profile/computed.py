"""Computed traits: aggregates over a profile's events, all-time or in a sliding window.

A definition (schemas/definitions.schema.json) is either an aggregate

    {id: orders_30d, aggregate: count, event: Order Completed, window: 30d}
    {id: spend, aggregate: sum, event: Order Completed, of: [properties.revenue, properties.total]}

or a formula over other computed traits

    {id: ltv, formula: spend - refunds}

State lives in the profile under `_agg[id]`: one partial aggregate (all-time),
or event-time buckets (windowed) read at evaluation time, so a windowed value
is exact at any clock reading and changes as time passes without new events.
The window holds events with now - offset - window <= time <= now - offset.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from processors.common.predicates import (
    Ctx,
    DefinitionError,
    EventFilter,
    compile_where,
    duration_at,
    get_values,
)
from processors.ingest.events import Touchpoint
from processors.profile import aggregates as ag
from processors.profile.formula import Compiled, Lookup, Trend, compile_formula
from processors.profile.formula import trend as formula_trend

Profile = dict[str, Any]
WINDOW_BUCKETS = 128
TIME_FIELD = "timestamp"


def version_of(spec: Mapping[str, Any], fields: Sequence[str]) -> str:
    blob = orjson.dumps({k: spec.get(k) for k in fields}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha1(blob).hexdigest()[:12]


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


@dataclass(frozen=True)
class EventSelector:
    """Which events count: by track event name and/or type, then property conditions."""

    names: frozenset[str] | None
    types: frozenset[str] | None
    where: EventFilter

    def matches(self, msg: Mapping[str, Any], name: str, type_: str, ctx: Ctx) -> bool:
        if self.names is not None and name not in self.names:
            return False
        if self.types is not None and type_ not in self.types:
            return False
        return self.where(msg, ctx)

    @property
    def tags(self) -> frozenset[str]:
        """Change tags (see catalog) of the events this selector can match."""
        if self.names is not None:
            return frozenset(f"name:{n}" for n in self.names)
        if self.types is not None:
            return frozenset(f"type:{t}" for t in self.types)
        return frozenset({"*"})


def compile_selector(spec: Mapping[str, Any], path: Sequence[str | int],
                     name_key: str = "event") -> EventSelector:
    names = as_list(spec.get(name_key))
    types = as_list(spec.get("type"))
    for key, values in ((name_key, names), ("type", types)):
        if any(not isinstance(v, str) or not v for v in values):
            raise DefinitionError([*path, key], "an event name or a list of names")
    return EventSelector(frozenset(names) if names else None, frozenset(types) if types else None,
                         compile_where(spec.get("where"), [*path, "where"]))


@dataclass(frozen=True)
class TraitDef:
    id: str
    aggregate: str | None
    formula: Compiled | None
    refs: frozenset[str]
    selector: EventSelector | None
    of: tuple[str, ...]
    window_ms: int | None
    offset_ms: int
    version: str
    spec: Mapping[str, Any]

    @property
    def is_time(self) -> bool:
        return self.of == (TIME_FIELD,) and self.aggregate in ("first", "last", "min", "max")

    @property
    def lookback_ms(self) -> int | None:
        return None if self.window_ms is None else self.window_ms + self.offset_ms


def _duration(spec: Mapping[str, Any], key: str, path: Sequence[str | int]) -> int | None:
    return duration_at(spec, key, path, "30d, 12h or 2w")


def compile_trait(spec: Mapping[str, Any], path: Sequence[str | int],
                  known: Callable[[str], bool]) -> TraitDef:
    tid = spec.get("id")
    if not isinstance(tid, str) or not tid:
        raise DefinitionError([*path, "id"], "a name for the computed trait")
    if "formula" in spec:
        if "aggregate" in spec:
            raise DefinitionError(path, "either `aggregate` or `formula`, not both")
        text = spec["formula"]
        if not isinstance(text, str):
            raise DefinitionError([*path, "formula"], "an expression as a string")
        fn, refs = compile_formula(text, known, [*path, "formula"])
        if tid in refs:
            raise DefinitionError([*path, "formula"], f"an expression not using {tid!r} itself")
        return TraitDef(tid, None, fn, refs, None, (), None, 0,
                        version_of(spec, ["formula"]), spec)
    agg = spec.get("aggregate")
    if agg not in ag.AGGREGATES:
        raise DefinitionError([*path, "aggregate"], f"one of {list(ag.AGGREGATES)}, got {agg!r}")
    of = tuple(as_list(spec.get("of")))
    if agg != "count" and not of:
        raise DefinitionError([*path, "of"], f"the event field `{agg}` reads, e.g. properties.revenue")
    if any(not isinstance(p, str) or not p for p in of):
        raise DefinitionError([*path, "of"], "a dotted path or a list of them")
    window = _duration(spec, "window", path)
    offset = _duration(spec, "offset", path) or 0
    if offset and window is None:
        raise DefinitionError([*path, "offset"], "a `window` to go with the offset")
    selector = compile_selector(spec, path)
    version = version_of(spec, ["aggregate", "of", "event", "type", "where", "window", "offset"])
    return TraitDef(tid, agg, None, frozenset(), selector, of, window, offset, version, spec)


def _observed_values(td: TraitDef, tp: Touchpoint) -> list[Any]:
    for p in td.of:
        if p == TIME_FIELD:
            return [tp.ts]
        values = get_values(tp.msg, p)
        if values:
            return values
    return []


def observe(td: TraitDef, profile: Profile, tp: Touchpoint, now: int, ctx: Ctx) -> bool:
    """Fold an applied event into the trait's state; True when it matched."""
    assert td.aggregate is not None and td.selector is not None
    if not td.selector.matches(tp.msg, tp.name, tp.type, ctx):
        return False
    state = state_for(td, profile)
    agg = td.aggregate
    if agg == "count":
        partials = [ag.single(agg, tp.ts, tp.message_id, None)]
    else:
        partials = [ag.single(agg, tp.ts, tp.message_id, v) for v in _observed_values(td, tp)]
        partials = [p for p in partials if p is not None]
    if not partials:
        return False
    one = ag.fold(agg, partials)
    if td.window_ms is None:
        state["p"] = ag.combine(agg, state.get("p"), one)
    else:
        buckets = state["b"]
        ag.bucket_add(buckets, tp.ts, one, _joiner(agg), WINDOW_BUCKETS)
        lookback = td.lookback_ms
        assert lookback is not None
        ag.bucket_prune(buckets, now - lookback)
    return True


def state_for(td: TraitDef, profile: Profile) -> dict[str, Any]:
    """The trait's state in the profile, made empty if missing or of another version."""
    states: dict[str, Any] = profile.setdefault("_agg", {})
    state = states.get(td.id)
    if state is None or state.get("v") != td.version:
        state = {"v": td.version, "a": td.aggregate}
        if td.window_ms is not None:
            state["b"] = {}
        states[td.id] = state
    return state


def rebuild(td: TraitDef, profile: Profile, now: int, held: list[Touchpoint] | None = None) -> None:
    """A new or changed definition: start over from the events the profile still holds.

    `held`: recent_touchpoints(profile), when the caller rebuilds several traits."""
    profile.setdefault("_agg", {}).pop(td.id, None)  # stays missing (empty) if nothing matches
    ctx = Ctx(now)
    for tp in recent_touchpoints(profile) if held is None else held:
        observe(td, profile, tp, now, ctx)


def recent_touchpoints(profile: Profile) -> list[Touchpoint]:
    """The events the profile still holds, oldest first, as a rebuild replays them."""
    held = []
    for e in sorted(profile.get("recent_events", []), key=lambda e: (e["ts"], e["messageId"])):
        msg = {"type": e["type"], "messageId": e["messageId"], "properties": e.get("properties", {})}
        if "event" in e:
            msg["event"] = e["event"]
        if "name" in e:
            msg["name"] = e["name"]
        held.append(Touchpoint(msg, e["type"], e["messageId"], e["ts"], []))
    return held


def needs_rebuild(td: TraitDef, profile: Profile, settled: bool) -> bool:
    """A state of another version, or none while the profile's aggregates are not `settled`
    (its `_cv` is another catalog's: the definition may be new to it). In a settled profile a
    missing state is an empty one: no event it holds matched it, so none is stored (most
    aggregates and `performed … where` conditions match few of a person's events)."""
    if td.aggregate is None:
        return False
    state = profile.get("_agg", {}).get(td.id)
    if state is None:
        return not settled
    return state.get("v") != td.version


def value(td: TraitDef, profile: Profile, ctx: Ctx, lookup: Lookup) -> Any:
    """The trait's value at ctx.now (registering when it will change by itself)."""
    if td.formula is not None:
        return td.formula(lookup, ctx)
    agg = td.aggregate
    assert agg is not None
    state = profile.get("_agg", {}).get(td.id)
    if state is None or state.get("v") != td.version:
        return ag.result(agg, None)
    if td.window_ms is None:
        return ag.result(agg, state.get("p"))
    hi = ctx.now - td.offset_ms
    lo = hi - td.window_ms
    inside = []
    for key, (_size, partial) in state["b"].items():
        start = int(key)
        if lo <= start <= hi:
            inside.append((start, partial))
            ctx.due(start + td.window_ms + td.offset_ms + 1)  # when it leaves the window
        elif start > hi:
            ctx.due(start + td.offset_ms)  # when it enters (offset windows)
    inside.sort(key=lambda sp: sp[0])
    return ag.result(agg, ag.fold(agg, (p for _, p in inside)))


def trend(td: TraitDef, trend_of: Mapping[str, Trend]) -> Trend:
    """How the trait's value moves with time alone (processors/profile/formula.py's Trend): an
    aggregate without a window holds still; a count over a trailing window only loses events."""
    if td.formula is not None:
        return formula_trend(str(td.spec["formula"]), trend_of)
    if td.window_ms is None:
        return 0
    return -1 if td.aggregate in ("count", "distinct_count") and td.offset_ms == 0 else None


def first_flip(probe: Callable[[int], tuple[Any, int | None]], holds: Callable[[Any], bool],
               now: int, answer: bool, first_change: int, horizon: int,
               level: float | None = None) -> int | None:
    """The first instant after `now` at which `holds(value)` differs from `answer` (its answer at
    `now`; the value holds still until `first_change`), or None within `horizon` ms, for a value
    whose answer flips at most once (a monotone value against one threshold). `probe(t)` is the
    value at t and the instant it next changes by itself.

    The instant found is one of the value's own change points, the one a re-check at each change
    would have found. With the threshold's `level`, a value moving in steps of equal time (days
    since …) is checked where its two next changes say it reaches the level: a few probes. Else,
    or if that guess is wrong, the distance doubles, then halves."""
    value, after = probe(first_change)
    if holds(value) != answer:
        return first_change
    if after is None:
        return None
    if level is not None:
        guess = _steady_guess(probe, holds, answer, first_change, value, after, level)
        if guess is not None:
            return guess
    # the answer holds on [now, lo_next)
    lo_next, hi = after, max(after, now + 2 * (first_change - now))
    while True:
        value, after = probe(hi)
        if holds(value) != answer:
            break
        if after is None or hi - now > horizon:
            return None
        lo_next, hi = after, max(after, now + 2 * (hi - now))
    while lo_next < hi:  # it differs at hi, not before lo_next
        value, after = probe(lo_next)
        if holds(value) != answer:
            return lo_next
        if after is None or after >= hi:
            break
        mid = (after + hi) // 2
        value, after_mid = probe(mid)
        if holds(value) != answer:
            lo_next, hi = after, mid
        elif after_mid is None:
            return None
        else:
            lo_next = after_mid
    return hi


def since_flip(elapsed: int, since: int, unit: int, holds: Callable[[Any], bool], answer: bool,
               level: float | None) -> int | None:
    """first_flip of a value that is the whole units elapsed since a fixed instant (`days_since(t)`
    of a t that holds still): it is k from `since + k * unit` on, so the flip is at the first
    k > `elapsed` where `holds(k)` differs from `answer`. Found from the threshold's `level` with a
    few calls of `holds` and no probe of the profile; None if not within those (search then)."""
    first = elapsed + 1
    if level is not None and math.isfinite(level) and math.floor(level) - 1 > first:
        if holds(math.floor(level) - 2) != answer:  # not one threshold at `level`
            return None
        first = math.floor(level) - 1  # every k before it keeps the answer: it flips at most once
    for k in range(first, first + 4):
        if holds(k) != answer:
            return since + k * unit
    return None


def _steady_guess(probe: Callable[[int], tuple[Any, int | None]], holds: Callable[[Any], bool],
                  answer: bool, first_change: int, v1: Any, second: int, level: float) -> int | None:
    """The flip of a value that keeps its pace (as its next two changes show: `v1` from
    `first_change`, then the value at `second`), if checked: the answer differs at the change
    point where the pace reaches `level`, not at the one before, and the value holds still in
    between; by monotonicity no earlier instant differs."""
    v2, _ = probe(second)
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (v1, v2))
    if not numbers or v2 == v1:
        return None
    period = second - first_change
    steps = (level - v1) / (v2 - v1)  # periods from first_change to the level
    if not 1 < steps < 1e12:
        return None
    at = first_change + math.ceil(steps) * period
    before, next_change = probe(at - period)
    if next_change != at or holds(before) != answer or holds(probe(at)[0]) == answer:
        return None
    return at


def _joiner(agg: str) -> ag.Combine:
    return lambda x, y: ag.combine(agg, x, y)


def merge_states(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """_agg of two merging profiles; states of different versions keep the first's."""
    out: dict[str, Any] = {k: v for k, v in a.items()}
    for tid, sb in b.items():
        sa = out.get(tid)
        if sa is None or sa.get("v") != sb.get("v"):
            if sa is None:
                out[tid] = sb
            continue
        agg = sa["a"]
        if "b" in sa:
            out[tid] = {**sa, "b": ag.bucket_merge(sa["b"], sb["b"], _joiner(agg), WINDOW_BUCKETS)}
        else:
            out[tid] = {**sa, "p": ag.combine(agg, sa.get("p"), sb.get("p"))}
    return out
