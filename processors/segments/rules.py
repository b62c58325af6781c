"""Segment rules: condition trees compiled once into closures.

    {all: [...]} {any: [...]} {not: {...}}
    {trait: plan, eq: pro}                  profile traits (dotted paths allowed)
    {computed: ltv, gte: 500}               computed traits
    {field: event_count, gt: 10}            profile fields (first_seen, last_seen, kind, …)
    {performed: Order Completed, at_least: 2, within: 30d, where: [...]}
    {not_performed: Order Completed, within: 30d}
    {performed: Checkout Started, before: 1h}            at least once, more than 1h ago
    {not_performed: Order Completed, since: Checkout Started}  none after the last checkout
    {consent: Advertising}  {consent: Advertising, is: false}
    {subscription: email}   {subscription: email, is: unsubscribed}
    {account: {trait: plan, eq: enterprise}}  traits of an account the person is a member of
    {segment: vip}                           membership of another segment

Each compiled segment lists the change tags it depends on (see catalog.py), so
an event re-evaluates only the segments whose inputs it can have changed.
Time-relative answers register, in the evaluation context, the instant they
will flip by themselves; the profile is re-checked then.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from processors.common.predicates import (
    Ctx,
    DefinitionError,
    Predicate,
    as_number,
    compile_comparison,
    duration_at,
    get_path,
)
from processors.predict.models import Forecast
from processors.profile import aggregates as ag
from processors.profile.computed import EventSelector, TraitDef, compile_selector, version_of

Profile = dict[str, Any]
FOREVER_MS = 100 * 365 * 86_400_000
PERFORMED_KEYS = ("performed", "not_performed", "event", "type", "at_least", "at_most", "within",
                  "before", "since", "where")
NODE_KINDS = ("all", "any", "not", "trait", "computed", "field", "performed", "not_performed",
              "consent", "subscription", "account", "segment")
SUBSCRIPTION_STATES = ("subscribed", "unsubscribed", "did_not_subscribe")


class Scope(Protocol):
    """What a condition can read during one evaluation."""

    profile: Profile
    ctx: Ctx

    def computed(self, name: str) -> Any: ...
    def computed_flip(self, name: str, holds: Callable[[Any], bool], rising: bool,
                      level: float | None = None) -> Any: ...
    def segment(self, sid: str) -> bool: ...
    def events(self, name: str) -> ag.Buckets | None: ...
    def implicit(self, tid: str) -> ag.Buckets | None: ...


Cond = Callable[[Scope], bool]


@dataclass
class Compiling:
    """What the compiler collects on its way through one definition."""

    segment_id: str
    tags: set[str] = field(default_factory=set)
    segments: set[str] = field(default_factory=set)
    traits: set[str] = field(default_factory=set)
    implicit: list[TraitDef] = field(default_factory=list)


@dataclass(frozen=True)
class SegmentDef:
    id: str
    condition: Cond
    tags: frozenset[str]
    """change tags this segment reads directly (catalog adds those of its traits and segments)"""
    segments: frozenset[str]
    traits: frozenset[str]
    implicit: tuple[TraitDef, ...]
    version: str
    spec: Mapping[str, Any]


def _count(buckets: ag.Buckets | None, lo: int | None, hi: int, floor: int | None, within: int | None,
           before: int | None, moves: list[tuple[int, int]]) -> int:
    """Events of `buckets` in [lo, hi] now; appends to `moves` when each will enter or leave
    the window as time passes (its instant and the change of the count). Events before `floor`
    (just after the last `since` event) never count."""
    if not buckets:
        return 0
    total = 0
    lag = before or 0
    for key, (_size, partial) in buckets.items():
        start = int(key)
        if floor is not None and start < floor:
            continue
        if start > hi:
            if before is None:
                continue
            moves.append((start + before, partial))  # it enters once it is `before` old
        elif lo is None or start >= lo:
            total += partial
        else:
            continue
        if within is not None:
            moves.append((start + within + lag + 1, -partial))  # it leaves the window
    return total


def count_flip(n: int, moves: list[tuple[int, int]], holds: Callable[[int], bool]) -> int | None:
    """The first instant the count, moved by `moves` as time passes, makes `holds` change."""
    answer = holds(n)
    moves.sort()
    for i, (at, change) in enumerate(moves):
        n += change
        if (i + 1 == len(moves) or moves[i + 1][0] != at) and holds(n) != answer:
            return at
    return None


def _performed(node: Mapping[str, Any], path: list[str | int], c: Compiling) -> Cond:
    negated = "not_performed" in node
    kind = "not_performed" if negated else "performed"
    unknown = [k for k in node if k not in PERFORMED_KEYS]
    if unknown:
        raise DefinitionError([*path, unknown[0]], f"only the keys {list(PERFORMED_KEYS)}")
    spec = dict(node)
    spec["event"] = node[kind]
    selector: EventSelector = compile_selector(spec, path, name_key="event")
    if node[kind] is None and selector.types is None:
        raise DefinitionError([*path, kind], "an event name (or `type:` for page/screen/identify)")

    def duration(key: str) -> int | None:
        return duration_at(node, key, path, "1h or 30d")

    within, before = duration("within"), duration("before")
    at_least, at_most = node.get("at_least"), node.get("at_most")
    for key, v in (("at_least", at_least), ("at_most", at_most)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
            raise DefinitionError([*path, key], f"a whole number >= 0, got {v!r}")
    if negated and (at_least is not None or at_most is not None):
        raise DefinitionError(path, "no at_least/at_most with not_performed (it means zero times)")
    if at_least is None and at_most is None:
        at_least = 1
    since = node.get("since")
    if since is not None and not isinstance(since, str):
        raise DefinitionError([*path, "since"], "the name of an event")
    c.tags.update(selector.tags)
    if since is not None:
        c.tags.add(f"name:{since}")
    names = sorted(selector.names or ())
    simple = node.get("where") is None and selector.types is None
    if simple and len(names) == 1:
        only = names[0]

        def buckets_of(scope: Scope) -> list[ag.Buckets | None]:
            return [scope.events(only)]
    elif simple:
        def buckets_of(scope: Scope) -> list[ag.Buckets | None]:
            return [scope.events(n) for n in names]
    else:
        tid = f"~{c.segment_id}#{len(c.implicit)}"
        lookback = FOREVER_MS if within is None else within + (before or 0)
        implicit = TraitDef(tid, "count", None, frozenset(), selector, (), lookback, 0,
                            version_of({**spec, "lookback": lookback},
                                       ["event", "type", "where", "lookback"]), spec)
        c.implicit.append(implicit)

        def buckets_of(scope: Scope) -> list[ag.Buckets | None]:
            return [scope.implicit(tid)]

    def holds(n: int) -> bool:
        if negated:
            return n == 0
        return (at_least is None or n >= at_least) and (at_most is None or n <= at_most)

    def check(scope: Scope) -> bool:
        ctx = scope.ctx
        hi = ctx.now - (before or 0)
        lo = None if within is None else hi - within
        floor = None
        if since is not None:
            last = ag.newest_start(scope.events(since) or {})
            floor = None if last is None else last + 1
        moves: list[tuple[int, int]] = []
        n = 0
        for b in buckets_of(scope):  # a loop, not sum() over a generator: see _all_of
            n += _count(b, lo, hi, floor, within, before, moves)
        if moves:  # due when the answer flips, not at every event entering or leaving the window
            at = count_flip(n, moves, holds)
            if at is not None:
                ctx.due(at)
        return holds(n)
    return check


def compile_node(node: Any, path: list[str | int], c: Compiling) -> Cond:
    if not isinstance(node, Mapping):
        raise DefinitionError(path, f"a condition: a mapping with one of {list(NODE_KINDS)}")
    kinds = [k for k in NODE_KINDS if k in node]
    if len(kinds) != 1:
        raise DefinitionError(path, f"exactly one of {list(NODE_KINDS)}, got {sorted(node) or 'none'}")
    kind = kinds[0]
    arg = node[kind]
    if kind in ("all", "any"):
        if len(node) != 1 or not isinstance(arg, list) or not arg:
            raise DefinitionError([*path, kind], "a non-empty list of conditions (and no other key)")
        parts = [compile_node(sub, [*path, kind, i], c) for i, sub in enumerate(arg)]
        return _all_of(parts) if kind == "all" else _any_of(parts)
    if kind == "not":
        if len(node) != 1:
            raise DefinitionError(path, "`not` alone, with one condition under it")
        inner = compile_node(arg, [*path, "not"], c)
        return lambda s: not inner(s)
    if kind in ("performed", "not_performed"):
        return _performed(node, path, c)
    if kind == "trait":
        _name(arg, [*path, kind])
        pred = compile_comparison(node, (kind,), path)
        c.tags.add(f"trait:{arg.split('.')[0]}")
        return lambda s: pred(get_path(s.profile["traits"], arg), s.ctx)
    if kind == "computed":
        _name(arg, [*path, kind])
        pred = compile_comparison(node, (kind,), path)
        c.traits.add(arg)
        return _computed_check(arg, pred, node)
    if kind == "field":
        _name(arg, [*path, kind])
        pred = compile_comparison(node, (kind,), path)
        c.tags.add("identity" if arg.startswith("identities") else "*")
        return lambda s: pred(get_path(s.profile, arg), s.ctx)
    if kind == "consent":
        _name(arg, [*path, kind])
        want = node.get("is", True)
        if set(node) - {"consent", "is"} or not isinstance(want, bool):
            raise DefinitionError(path, "{consent: Category} with an optional `is: true|false`")
        c.tags.add("consent")
        return lambda s: s.profile.get("consent", {}).get(arg) is want
    if kind == "subscription":
        _name(arg, [*path, kind])
        state = node.get("is", "subscribed")
        if set(node) - {"subscription", "is"} or state not in SUBSCRIPTION_STATES:
            raise DefinitionError([*path, "is"], f"one of {list(SUBSCRIPTION_STATES)}, got {state!r}")
        c.tags.add("subscriptions")
        return lambda s: s.profile.get("subscriptions", {}).get(arg) == state
    if kind == "account":
        if len(node) != 1:
            raise DefinitionError(path, "`account` alone, with a condition on account traits under it")
        inner_c = Compiling(c.segment_id)
        inner = compile_node(arg, [*path, "account"], inner_c)
        if any(not t.startswith("trait:") for t in inner_c.tags) or inner_c.traits or inner_c.segments:
            raise DefinitionError([*path, "account"], "conditions on account traits only (trait: …)")
        c.tags.add("account")
        return lambda s: _any_account(s, inner)
    # segment
    _name(arg, [*path, kind])
    if len(node) != 1:
        raise DefinitionError(path, "{segment: id} alone")
    c.segments.add(arg)
    return lambda s: s.segment(arg)


def _all_of(parts: list[Cond]) -> Cond:
    # loops, not all()/any() over a generator: a segment's condition runs on every event that
    # may change it, and a generator's frame costs as much as a simple condition
    def check(s: Scope) -> bool:
        for p in parts:  # noqa: SIM110 (the loop is the point)
            if not p(s):
                return False
        return True
    return check


def _any_of(parts: list[Cond]) -> Cond:
    def check(s: Scope) -> bool:
        for p in parts:  # noqa: SIM110
            if p(s):
                return True
        return False
    return check


def _computed_check(name: str, pred: Predicate, node: Mapping[str, Any]) -> Cond:
    """A condition on a computed trait; a predicted value (processors.predict.models.Forecast) that
    moves as the customer ages registers the instant the answer flips, found in closed form
    (p_alive) or by bisection on its monotone trajectory, so no daily re-check is needed."""
    levels = [as_number(node[op]) for op in ("lt", "lte", "gt", "gte") if op in node]
    level = levels[0] if levels else None
    rising = "gt" in node or "gte" in node

    def holds(value: Any) -> bool:  # for values at other instants: their dues are not this one's
        return pred(value, Ctx(0))

    def check(s: Scope) -> bool:
        value = s.computed_flip(name, holds, rising, level) if levels else s.computed(name)
        answer = pred(value, s.ctx)
        if isinstance(value, Forecast):
            probe = Ctx(s.ctx.now)
            at = value.flip_at(lambda v: pred(v, probe), level)
            if at is not None:
                s.ctx.due(at)
        return answer
    return check


@dataclass
class _AccountScope:
    profile: Profile
    ctx: Ctx
    outer: Scope

    def computed(self, name: str) -> Any:
        return None

    def computed_flip(self, name: str, holds: Callable[[Any], bool], rising: bool,
                      level: float | None = None) -> Any:
        return None

    def segment(self, sid: str) -> bool:
        return False

    def events(self, name: str) -> ag.Buckets | None:
        return None

    def implicit(self, tid: str) -> ag.Buckets | None:
        return None


def _any_account(scope: Scope, inner: Cond) -> bool:
    for m in scope.profile.get("memberships", []):
        until = m.get("until")
        if until is not None and until <= scope.ctx.now:
            continue
        if until is not None:
            scope.ctx.due(until)
        if inner(_AccountScope({"traits": m.get("account_traits") or {}}, scope.ctx, scope)):
            return True
    return False


def _name(arg: Any, path: list[str | int]) -> None:
    if not isinstance(arg, str) or not arg:
        raise DefinitionError(path, "a name")


def compile_segment(spec: Mapping[str, Any], path: Sequence[str | int] = ()) -> SegmentDef:
    sid = spec.get("id")
    if not isinstance(sid, str) or not sid or ":" in sid or "/" in sid:
        raise DefinitionError([*path, "id"], "a segment id without ':' or '/'")
    if "condition" not in spec:
        raise DefinitionError(list(path), "a `condition`")
    c = Compiling(sid)
    cond = compile_node(spec["condition"], [*path, "condition"], c)
    if sid in c.segments:
        raise DefinitionError([*path, "condition"], f"a condition that does not refer to {sid!r} itself")
    return SegmentDef(sid, cond, frozenset(c.tags), frozenset(c.segments), frozenset(c.traits),
                      tuple(c.implicit), version_of(spec, ["condition"]), spec)
