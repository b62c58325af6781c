"""The definitions in force (computed traits and segments) and how they run on a profile.

A Catalog is immutable: a live change builds a new one (put/delete), checked
as a whole (unknown references, cycles), so a worker swaps catalogs between
two events and never evaluates half a change.

Change tags say what an event may have changed: "*" (anything counting events),
"name:<event name>", "type:<type>", "trait:<name>", "consent", "subscriptions",
"account", "identity". A segment is re-evaluated when the tags of an event meet
the tags it depends on (its own, those of the computed traits and segments it
reads, transitively), when its deadline has passed, or when a segment it reads
changed in the same pass.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from processors.common.predicates import Ctx, DefinitionError
from processors.common.timeutil import iso, to_ms
from processors.ingest.events import Touchpoint
from processors.predict import models as pr
from processors.predict import rfm
from processors.profile import aggregates as ag
from processors.profile import computed as ct
from processors.profile import formula as fm
from processors.profile.unified import EVENT_BUCKETS, consent_of, person_traits
from processors.segments.rules import FOREVER_MS, SegmentDef, compile_segment

Profile = dict[str, Any]

TRAIT_PREFIX = "computed:"
MODEL_PREFIX = "predict:"
"""The fitted prediction model (tusk predict fit) is published as predict:model."""


def topic_key(kind: str, ident: str) -> str:
    """Key on the definitions topic: segments by id, computed traits as computed:<id>."""
    if kind == "predict_model":
        return f"{MODEL_PREFIX}{ident}"
    return ident if kind == "segment" else f"{TRAIT_PREFIX}{ident}"


def parse_topic_key(key: str) -> tuple[str, str]:
    if key.startswith(TRAIT_PREFIX):
        return "computed_trait", key[len(TRAIT_PREFIX):]
    if key.startswith(MODEL_PREFIX):
        return "predict_model", key[len(MODEL_PREFIX):]
    return "segment", key


def _toposort(nodes: Mapping[str, Iterable[str]], what: str, path_of: Mapping[str, list[Any]]) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            cycle = " → ".join([*trail[trail.index(n):], n])
            raise DefinitionError(path_of.get(n, [n]), f"{what} without a cycle ({cycle})")
        state[n] = 1
        for dep in sorted(nodes[n]):
            if dep in nodes:
                visit(dep, [*trail, n])
        state[n] = 2
        order.append(n)

    for n in sorted(nodes):
        visit(n, [])
    return order


@dataclass(frozen=True)
class Catalog:
    trait_specs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    segment_specs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    traits: Mapping[str, ct.TraitDef] = field(default_factory=dict)
    trait_order: tuple[str, ...] = ()
    segments: Mapping[str, SegmentDef] = field(default_factory=dict)
    order: tuple[str, ...] = ()
    tags: Mapping[str, frozenset[str]] = field(default_factory=dict)
    dependents: Mapping[str, frozenset[str]] = field(default_factory=dict)
    implicit: tuple[ct.TraitDef, ...] = ()
    versions: Mapping[str, str] = field(default_factory=dict)
    """per segment: its definition with those of everything it reads (a change → re-evaluate)"""
    predict: pr.Setup = field(default_factory=pr.Setup)
    """purchase summaries kept per profile, and the fitted model behind p_alive & co."""
    trends: Mapping[str, ct.Trend] = field(default_factory=dict)
    """per computed trait: how its value moves with time alone (processors/profile/formula.py)"""
    clocks: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    """per `days_since(t)` trait of a t that holds still: (t, unit); its flips have a closed form"""

    @classmethod
    def build(cls, trait_specs: Iterable[Mapping[str, Any]] = (),
              segment_specs: Iterable[Mapping[str, Any]] = (), predict: pr.Setup | None = None) -> Catalog:
        tspecs = {str(s.get("id")): s for s in trait_specs}
        sspecs = {str(s.get("id")): s for s in segment_specs}
        return cls._compile(tspecs, sspecs, predict or pr.Setup())

    @classmethod
    def _compile(cls, tspecs: Mapping[str, Mapping[str, Any]],
                 sspecs: Mapping[str, Mapping[str, Any]], predict: pr.Setup) -> Catalog:
        for tid in sorted(set(tspecs) & set(pr.TRAITS)):
            raise DefinitionError(["computed_traits", tid, "id"], f"a name other than the predictive "
                                  f"traits {list(pr.TRAITS)}")
        traits = {tid: ct.compile_trait(spec, ["computed_traits", tid],
                                        lambda n: n in tspecs or n in pr.TRAITS)
                  for tid, spec in tspecs.items()}
        trait_order = _toposort({t: d.refs for t, d in traits.items()}, "formulas",
                                {t: ["computed_traits", t, "formula"] for t in traits})
        segments = {sid: compile_segment(spec, ["segments", sid]) for sid, spec in sspecs.items()}
        for sid, seg in segments.items():
            for t in sorted(seg.traits - set(traits) - set(pr.TRAITS)):
                raise DefinitionError(["segments", sid, "condition"], f"a known computed trait, got {t!r}")
            for s in sorted(seg.segments - set(segments)):
                raise DefinitionError(["segments", sid, "condition"], f"a known segment, got {s!r}")
        order = _toposort({s: d.segments for s, d in segments.items()}, "segment references",
                          {s: ["segments", s, "condition"] for s in segments})
        trait_tags: dict[str, frozenset[str]] = {
            t: frozenset(f"name:{n}" for n in predict.rfm.events) for t in pr.TRAITS}
        for tid in trait_order:
            d = traits[tid]
            if d.selector is not None:
                trait_tags[tid] = d.selector.tags
            else:
                trait_tags[tid] = frozenset().union(*(trait_tags[r] for r in d.refs))
        tags: dict[str, frozenset[str]] = {}
        dependents: dict[str, set[str]] = {s: set() for s in segments}
        for sid in order:
            sd = segments[sid]
            tags[sid] = sd.tags.union(*(trait_tags[t] for t in sd.traits), *(tags[s] for s in sd.segments))
            for ref in sd.segments:
                dependents[ref].add(sid)
        implicit = tuple(t for sid in order for t in segments[sid].implicit)
        tv: dict[str, str] = {t: _hash([t, predict.version]) for t in pr.TRAITS}
        for tid in trait_order:
            tv[tid] = _hash([traits[tid].version, *(tv[r] for r in sorted(traits[tid].refs))])
        versions: dict[str, str] = {}
        for sid in order:
            sd = segments[sid]
            versions[sid] = _hash([sd.version, *(tv[t] for t in sorted(sd.traits)),
                                   *(versions[s] for s in sorted(sd.segments))])
        trends: dict[str, ct.Trend] = {}  # predictions move, but as Forecasts (rules.py)
        for tid in trait_order:
            trends[tid] = ct.trend(traits[tid], trends)
        clocks = {tid: clock for tid in trait_order if traits[tid].formula is not None
                  and (clock := fm.clock_of(str(traits[tid].spec["formula"]))) is not None
                  and trends.get(clock[0]) == 0}
        catalog = cls(tspecs, sspecs, traits, tuple(trait_order), segments, tuple(order), tags,
                      {k: frozenset(v) for k, v in dependents.items()}, implicit, versions, predict,
                      trends, clocks)
        _VERSIONS.pop(catalog.fingerprint, None)  # built again: the newest, last to go
        _VERSIONS[catalog.fingerprint] = versions
        while len(_VERSIONS) > VERSIONS_KEPT:
            del _VERSIONS[next(iter(_VERSIONS))]
        return catalog

    def put(self, kind: str, spec: Mapping[str, Any]) -> Catalog:
        """A catalog with this definition added or replaced (DefinitionError if it breaks any)."""
        ident = str(spec.get("id"))
        if kind == "predict_model":
            return self.with_predict(replace(self.predict, model=pr.Model.from_record(spec)))
        if kind == "computed_trait":
            return self._compile({**self.trait_specs, ident: spec}, self.segment_specs, self.predict)
        return self._compile(self.trait_specs, {**self.segment_specs, ident: spec}, self.predict)

    def with_predict(self, setup: pr.Setup) -> Catalog:
        """The same definitions with another prediction setup (summary config or model)."""
        return self._compile(self.trait_specs, self.segment_specs, setup)

    def extended(self, traits: Iterable[Mapping[str, Any]],
                 segments: Iterable[Mapping[str, Any]]) -> Catalog:
        """Several definitions added or replaced at once (they may refer to each other)."""
        return self._compile({**self.trait_specs, **{str(t["id"]): t for t in traits}},
                             {**self.segment_specs, **{str(s["id"]): s for s in segments}}, self.predict)

    def delete(self, kind: str, ident: str) -> Catalog:
        if kind == "predict_model":
            return self.with_predict(replace(self.predict, model=None))
        if kind == "computed_trait":
            return self._compile({k: v for k, v in self.trait_specs.items() if k != ident},
                                 self.segment_specs, self.predict)
        return self._compile(self.trait_specs,
                             {k: v for k, v in self.segment_specs.items() if k != ident}, self.predict)

    @functools.cached_property
    def aggregates(self) -> list[ct.TraitDef]:
        return [*(t for t in self.traits.values() if t.aggregate is not None), *self.implicit]

    @functools.cached_property
    def _by_name(self) -> tuple[dict[str, list[ct.TraitDef]], list[ct.TraitDef]]:
        """Aggregates by the event names they select, and those selecting by type or anything."""
        named: dict[str, list[ct.TraitDef]] = {}
        other: list[ct.TraitDef] = []
        for td in self.aggregates:
            assert td.selector is not None
            if td.selector.names is None:
                other.append(td)
            else:
                for n in td.selector.names:
                    named.setdefault(n, []).append(td)
        return named, other

    @functools.cached_property
    def _rank(self) -> dict[str, int]:
        return {sid: i for i, sid in enumerate(self.order)}

    @functools.cached_property
    def _by_tag(self) -> dict[str, set[str]]:
        index: dict[str, set[str]] = {}
        for sid, tags in self.tags.items():
            for t in tags:
                index.setdefault(t, set()).add(sid)
        return index

    @functools.cached_property
    def fingerprint(self) -> str:
        return _hash(sorted(f"{k}={v}" for k, v in self.versions.items())
                     + sorted(f"{t.id}={t.version}" for t in self.aggregates) + [self.predict.version])

    # --- running on a profile ------------------------------------------------------------

    def observe(self, profile: Profile, tp: Touchpoint, now: int,
                retention_ms: int | None = None) -> set[str]:
        """Fold an applied event into computed state; the change tags it carries."""
        ctx = Ctx(now)
        rebuilt: set[str] = set()
        # a profile's first event has nothing to replay: every aggregate starts empty (no state,
        # processors/profile/computed.py: needs_rebuild) and those it matches observe it below
        if profile.get("_cv") != self.fingerprint and ("_cv" in profile or "_ev" in profile):
            # definitions changed since its last event (which is already in recent_events)
            rebuilt = self._rebuild_stale(profile, now)
        named, other = self._by_name
        for td in (*named.get(tp.name, ()), *other):
            if td.id not in rebuilt:
                ct.observe(td, profile, tp, now, ctx)
        if tp.name in self.predict.rfm.events:
            rfm.observe(profile.setdefault("_rfm", {}), self.predict.rfm, tp.name, tp.ts, tp.msg)
        profile["_cv"] = self.fingerprint
        index: dict[str, ag.Buckets] = profile.setdefault("_ev", {})
        ag.bucket_add(index.setdefault(tp.name, {}), tp.ts, 1, _add, EVENT_BUCKETS)
        if retention_ms is not None:
            for name in list(index):
                ag.bucket_prune(index[name], now - retention_ms)
                if not index[name]:
                    del index[name]
        tags = {"*", f"name:{tp.name}", f"type:{tp.type}"}
        changed = person_traits(tp)
        tags.update(f"trait:{t}" for t in changed if t != "subscriptions")
        # traits this event wrote without carrying them (trust `raise` events, processors/profile/trust.py)
        tags.update(f"trait:{t}" for t, stamp in profile.get("_tt", {}).items() if stamp[1] == tp.message_id)
        if "subscriptions" in changed:
            tags.add("subscriptions")
        if consent_of(tp):
            tags.add("consent")
        if tp.identifiers:
            tags.add("identity")
        return tags

    def _rebuild_stale(self, profile: Profile, now: int) -> set[str]:
        """Rebuild the aggregates whose state is missing or of another version; their ids.
        The held events are decoded once for all of them (a new profile: every aggregate)."""
        rebuilt: set[str] = set()
        held = None
        settled = profile.get("_cv") == self.fingerprint
        for td in self.aggregates:
            if ct.needs_rebuild(td, profile, settled):
                if held is None:
                    held = ct.recent_touchpoints(profile)
                ct.rebuild(td, profile, now, held)
                rebuilt.add(td.id)
        return rebuilt

    def evaluate(self, profile: Profile, now: int, tags: set[str] | None, cause: str) -> list[dict[str, Any]]:
        """Re-evaluate the segments `tags` may have changed (None: all); transitions, in order.

        Updates profile["segments"], the per-segment deadlines (_due), the next
        deadline of the profile (_next) and the computed-trait snapshot.
        """
        if tags is None:  # backfill, merge: definitions may be new to this profile
            self._rebuild_stale(profile, now)
        scope = _Scope(profile, Ctx(now), self)
        members: dict[str, Any] = profile.setdefault("segments", {})
        last = profile.get("_sv")
        # segment versions per profile, as profiles written before 2026-12 kept them: read once
        stored: dict[str, str] | None = profile.pop("_seg_v", None)
        # current: this catalog evaluated the profile last, so its memberships and deadlines
        # name only this catalog's segments, at their versions (every evaluation leaves them
        # so): nothing to filter out, no version to compare
        current = tags is not None and last == self.fingerprint
        if current:
            due: dict[str, int] = dict(profile.get("_due", {}))
        else:
            due = {k: v for k, v in profile.get("_due", {}).items() if k in self.segments}
            for gone in [s for s in members if s not in self.segments]:
                del members[gone]  # a deleted definition: no exit record, the segment is gone
        if tags is None:
            todo = set(self.segments)
        else:
            todo = set().union(*(self._by_tag.get(t, ()) for t in tags))
            todo.update(s for s, at in due.items() if at <= now)
            if not current:
                before = _VERSIONS.get(last) if last is not None else None
                if before is None:
                    before = stored
                if before is None:  # a catalog this process never built: re-check them all
                    todo = set(self.segments)
                else:
                    todo.update(s for s, v in self.versions.items() if before.get(s) != v)
        out: list[dict[str, Any]] = []
        segments, dependents, rank = self.segments, self.dependents, self._rank
        queue = sorted(todo, key=rank.__getitem__)  # in self.order: a segment after those it reads
        ctx = scope.ctx
        stamp = Stamp(profile["id"], now, cause)
        i = 0
        while i < len(queue):
            sid = queue[i]
            i += 1
            ctx.next_due = None  # one context for the pass: each segment's own next deadline
            inside = bool(segments[sid].condition(scope))
            scope.results[sid] = inside
            if ctx.next_due is None:
                due.pop(sid, None)
            else:
                due[sid] = ctx.next_due
            if inside != (sid in members):
                if inside:
                    members[sid] = {"entered_at": now}
                else:
                    del members[sid]
                out.append(stamp.transition(sid, "entered" if inside else "exited"))
                later = [d for d in dependents.get(sid, ()) if d not in todo]
                if later:  # segments reading this one: later in the order, so still ahead
                    todo.update(later)
                    queue[i:] = sorted([*queue[i:], *later], key=rank.__getitem__)
        profile["_due"] = due
        profile["_next"] = min(due.values(), default=None)
        profile["_sv"] = self.fingerprint  # every segment's version checked against this catalog
        if tags is None:
            profile["_cv"] = self.fingerprint  # and every aggregate (rebuilt above)
        # computed values are read at an instant (lookups, triggers), not stored per event
        profile.pop("computed", None)
        return out

    def computed_view(self, profile: Profile, now: int) -> dict[str, Any]:
        scope = _Scope(profile, Ctx(now), self)
        view: dict[str, Any] = {}
        for tid in self.trait_order:
            value = scope.computed(tid)
            view[tid] = iso(value) if self.traits[tid].is_time and isinstance(value, int) else value
        if self.predict.model is not None:
            for tid in pr.TRAITS:
                value = scope.computed(tid)
                view[tid] = None if value is None else float(value)
        return view

    def summary(self, profile: Profile, now: int) -> rfm.Summary | None:
        """The profile's purchase summary (processors/predict/rfm.py) as of the day of `now`."""
        return rfm.summary(profile.get("_rfm"), rfm.day_of(now))

    def predictions_view(self, profile: Profile, now: int) -> dict[str, Any] | None:
        """Summary and predictions as the profile API shows them (None: no purchase)."""
        s = self.summary(profile, now)
        if s is None:
            return None
        model = self.predict.model
        unit = model.unit if model is not None else "day"
        days = pr.UNIT_DAYS[unit]
        view: dict[str, Any] = {
            "unit": unit, "frequency": s.frequency, "recency": s.recency_days / days,
            "age": s.age_days / days, "monetary": s.monetary,
            "first_purchase": iso(s.first_day * rfm.DAY_MS), "as_of": iso(s.as_of_day * rfm.DAY_MS)}
        if model is not None:
            for tid in pr.TRAITS:
                value = pr.predict(self.predict, tid, s)
                view[tid] = None if value is None else float(value)
            view["model"] = model.version
        return view


VERSIONS_KEPT = 256

_VERSIONS: dict[str, Mapping[str, str]] = {}
"""Segment versions of the catalogs this process built, by fingerprint (oldest first, the last
VERSIONS_KEPT). A profile keeps only the fingerprint of the catalog that evaluated it last
(`_sv`); a later catalog re-checks the segments whose version differs from that one's, or all
of them when it is not known here (built by another worker, or before a restart). Evaluation is
pure in the profile and the instant, so re-checking an unchanged segment changes nothing: what
this saves is work, and ~1 KB per profile of versions read and written on every event (50
segments)."""


def _hash(parts: list[str]) -> str:
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def _add(a: Any, b: Any) -> Any:
    return b if a is None else a if b is None else a + b


def transition(pid: str, segment: str, kind: str, now: int, cause: str) -> dict[str, Any]:
    """The profile-changes record of one entry or exit; its id is the same on every replay."""
    return Stamp(pid, now, cause).transition(segment, kind)


class Stamp:
    """What one evaluation's transitions share (profile, instant, cause), formatted once: a new
    profile enters most of 50 segments in one pass. The id is sha1("pid|segment|kind|now|cause")
    cut to 24 hex digits, as in every release before (tests/unit/test_transition_ids.py)."""

    __slots__ = ("pid", "now", "cause", "_occurred_at", "_tail")

    def __init__(self, pid: str, now: int, cause: str) -> None:
        self.pid, self.now, self.cause = pid, now, cause
        # formatted at the first transition: most passes have none
        self._occurred_at = self._tail = ""

    def transition(self, segment: str, kind: str) -> dict[str, Any]:
        if not self._occurred_at:
            self._occurred_at = iso(self.now)
            self._tail = f"|{self.now}|{self.cause}"
        key = f"{self.pid}|{segment}|{kind}{self._tail}".encode()
        return {"type": "segment", "transition": kind, "profile_id": self.pid, "segment": segment,
                "occurred_at": self._occurred_at, "at": self.now, "caused_by": self.cause,
                "transition_id": hashlib.sha1(key).hexdigest()[:24]}


class _Scope:
    def __init__(self, profile: Profile, ctx: Ctx, catalog: Catalog) -> None:
        self.profile = profile
        self.ctx = ctx
        self.catalog = catalog
        self.values: dict[str, tuple[Any, int | None]] = {}
        self.results: dict[str, bool] = {}
        self.later: dict[int, _Scope] = {}
        """the profile seen at other instants (computed_flip's probes), shared by every segment
        of the pass: those reading one trait probe it at mostly the same instants"""

    def computed(self, name: str) -> Any:
        value, changes = self._value(name)
        if changes is not None:
            self.ctx.due(changes)
        return value

    def computed_flip(self, name: str, holds: Callable[[Any], bool], rising: bool,
                      level: float | None = None) -> Any:
        """A computed trait's value, registering when `holds(value)` will change by itself.

        `holds` is a threshold that only goes one way as the value grows (from False to True
        when `rising`). On a trait that moves one way with time, that is one instant, found
        along the value's change points (processors/profile/computed.py: first_flip) instead
        of a re-check at each change: `days_since(...) >= 60` is due once, not every day."""
        value, changes = self._value(name)
        direction = self.catalog.trends.get(name)
        if changes is None or not direction:
            if changes is not None:
                self.ctx.due(changes)
            return value
        answer = holds(value)
        if answer == (rising == (direction > 0)):
            return value  # already where time moves it: it stays so
        at = None
        clock = self.catalog.clocks.get(name)
        if clock is not None:
            since = to_ms(self._value(clock[0])[0])
            if since is not None and isinstance(value, int):
                at = ct.since_flip(value, since, clock[1], holds, answer, level)
        if at is None:
            at = ct.first_flip(lambda t: self._at(t)._value(name), holds,
                               self.ctx.now, answer, changes, FOREVER_MS, level)
        if at is not None:
            self.ctx.due(at)
        return value

    def _at(self, t: int) -> _Scope:
        """The scope of the same profile at instant t (values are pure in profile and instant)."""
        scope = self.later.get(t)
        if scope is None:
            scope = self.later[t] = _Scope(self.profile, Ctx(t), self.catalog)
        return scope

    def _value(self, name: str) -> tuple[Any, int | None]:
        """(the trait's value at ctx.now, when it next changes by itself), once per scope."""
        hit = self.values.get(name)
        if hit is None and name in pr.TRAITS:
            summary = self.catalog.summary(self.profile, self.ctx.now)
            hit = self.values[name] = (pr.predict(self.catalog.predict, name, summary), None)
        if hit is None:
            sub = Ctx(self.ctx.now)
            td = self.catalog.traits[name]
            outer, self.ctx = self.ctx, sub
            try:
                value = ct.value(td, self.profile, sub, lambda n, _c: self.computed(n))
            finally:
                self.ctx = outer
            hit = self.values[name] = (value, sub.next_due)
        return hit

    def segment(self, sid: str) -> bool:
        if sid in self.results:
            return self.results[sid]
        return sid in self.profile.get("segments", {})

    def events(self, name: str) -> ag.Buckets | None:
        index: dict[str, ag.Buckets] = self.profile.get("_ev", {})
        return index.get(name)

    def implicit(self, tid: str) -> ag.Buckets | None:
        state = self.profile.get("_agg", {}).get(tid)
        return None if state is None else state.get("b")
