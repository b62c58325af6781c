"""Journeys: multi-step customer paths, advanced on the event (or deadline) that causes each step.

A journey (schema `definitions`, `journeys:`) has an entry, optional journey-wide `goal` and
`exit` conditions, a re-entry policy, an optional cap, and a list of steps:

    send: {channel, traits, cap}     a trigger through the activation policy, then on
    wait: 2d                         rest until entered_at + 2d exactly
    wait: {until: <condition>, timeout: 3d, on_timeout: step}    rest until the condition holds
    wait: {event: Name, where: [...], timeout: 3d, on_timeout: step}   … until a later event
    branch: [{if: <condition>, where: [...], next: step}, ...]  (+ `default: step`)   the first
                                     that holds (`where`: on the event of this instant)
    move: <journey>                  leave this journey and enter that one at the same instant
    exit: <reason>                   leave the journey

A step goes on to `next:` (a step id, or `_end`), else to the step below it; past the last
step the journey is `completed`. Only waits take time: every other step runs at once.

`advance()` is the whole evaluation of one profile at one instant (README "Journeys" gives the
precedence rules); it returns the step records and triggers and keeps, in the profile, one
position per journey (`journeys`), a short history, and the next instant a journey needs
looking at (`_jdue`, folded into the profile's deadline by processors.identity.graph).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from processors.activation import policy as activation
from processors.activation.policy import ActivationConfig, ComputedView
from processors.common.counts import empty_counter
from processors.common.predicates import Ctx, DefinitionError, EventFilter, compile_where
from processors.common.timeutil import iso, parse_duration_ms
from processors.ingest.events import Touchpoint
from processors.profile.computed import EventSelector, compile_selector
from processors.segments.catalog import Catalog, _Scope
from processors.segments.rules import Compiling, Cond, compile_node

Profile = dict[str, Any]
END = "_end"
HISTORY = 12
"""Step records kept per journey in the profile (the newest)."""
MAX_STEPS = 200
"""Steps one evaluation may take (compilation forbids loops without a wait; this bounds a bug)."""
TOPIC_PREFIX = "journey:"
REENTRY = ("never", "always")
KINDS = ("send", "wait", "branch", "move", "exit")
Counts = Counter[tuple[str, str, str]]
"""(journey, step, metric) → change: entered, waiting, converted, exited, completed, moved, active"""


@dataclass(frozen=True)
class Step:
    id: str
    kind: str
    next: str
    spec: Mapping[str, Any]
    duration: int | None = None
    """wait: how long (plain wait) or the timeout (until/event), None: no timeout"""
    until: Cond | None = None
    event: EventSelector | None = None
    on_timeout: str | None = None
    branches: tuple[tuple[Cond | None, EventFilter | None, str], ...] = ()
    """(condition on the profile, conditions on the event of this instant, next step)"""
    target: str | None = None
    """move: the journey; exit: the reason"""


@dataclass(frozen=True)
class Journey:
    id: str
    steps: Mapping[str, Step]
    first: str
    entry_kind: str
    entry_segment: str | None
    entry_event: EventSelector | None
    entry_condition: Cond | None
    goal: Cond | None
    exit: Cond | None
    reentry: str | int
    """"never", "always", or the ms that must pass since the previous entry"""
    cap: int | None
    moves: frozenset[str]
    segments: frozenset[str]
    traits: frozenset[str]
    spec: Mapping[str, Any]


@dataclass(frozen=True)
class Book:
    """The journeys in force, compiled against a catalog (their segments and computed traits)."""

    journeys: Mapping[str, Journey] = field(default_factory=dict)
    specs: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.journeys)

    @classmethod
    def build(cls, specs: Sequence[Mapping[str, Any]], catalog: Catalog) -> Book:
        by_id = {str(s.get("id")): s for s in specs}
        compiled = {jid: compile_journey(spec, ["journeys", jid]) for jid, spec in by_id.items()}
        for jid, j in compiled.items():
            for t in sorted(j.moves - set(compiled)):
                raise DefinitionError(["journeys", jid, "steps"], f"a move to a known journey, got {t!r}")
            for s in sorted(j.segments - set(catalog.segments)):
                raise DefinitionError(["journeys", jid], f"a known segment, got {s!r}")
            for t in sorted(j.traits - set(catalog.traits)):
                raise DefinitionError(["journeys", jid], f"a known computed trait, got {t!r}")
        return cls(dict(sorted(compiled.items())), dict(sorted(by_id.items())))

    def put(self, spec: Mapping[str, Any], catalog: Catalog) -> Book:
        return Book.build([*(s for k, s in self.specs.items() if k != spec.get("id")), spec], catalog)

    def delete(self, jid: str, catalog: Catalog) -> Book:
        return Book.build([s for k, s in self.specs.items() if k != jid], catalog)


def topic_key(jid: str) -> str:
    return f"{TOPIC_PREFIX}{jid}"


# --- compiling -------------------------------------------------------------------------------

def _duration(value: Any, path: list[str | int]) -> int:
    try:
        ms = parse_duration_ms(value)
    except ValueError:
        raise DefinitionError(path, f"a duration like 2d, 12h or 30m, got {value!r}") from None
    if ms <= 0:
        raise DefinitionError(path, f"a duration longer than zero, got {value!r}")
    return ms


def _condition(node: Any, path: list[str | int], c: Compiling) -> Cond:
    before = len(c.implicit)
    cond = compile_node(node, path, c)
    if len(c.implicit) > before:
        raise DefinitionError(path, "`performed` without `where`/`type` (for those, define a segment "
                                    "or computed trait and refer to it)")
    return cond


def _target(value: Any, path: list[str | int], ids: set[str]) -> str:
    if value != END and value not in ids:
        raise DefinitionError(path, f"a step id of this journey (or {END}), got {value!r}")
    return str(value)


def compile_journey(spec: Mapping[str, Any], path: Sequence[str | int] = ()) -> Journey:
    at = list(path)
    jid = spec.get("id")
    if not isinstance(jid, str) or not jid or ":" in jid or "/" in jid:
        raise DefinitionError([*at, "id"], "a journey id without ':' or '/'")
    c = Compiling(f"journey:{jid}")
    steps_spec = spec.get("steps")
    if not isinstance(steps_spec, list) or not steps_spec:
        raise DefinitionError([*at, "steps"], "a non-empty list of steps")
    ids: list[str] = []
    for i, s in enumerate(steps_spec):
        sid = s.get("id") if isinstance(s, Mapping) else None
        if not isinstance(sid, str) or not sid or sid == END:
            raise DefinitionError([*at, "steps", i, "id"], "a step id")
        if sid in ids:
            raise DefinitionError([*at, "steps", i, "id"], f"an id not used above, got {sid!r}")
        ids.append(sid)
    known = set(ids)
    steps: dict[str, Step] = {}
    moves: set[str] = set()
    for i, s in enumerate(steps_spec):
        sp: list[str | int] = [*at, "steps", i]
        kinds = [k for k in KINDS if k in s]
        if len(kinds) != 1:
            raise DefinitionError(sp, f"exactly one of {list(KINDS)}")
        kind = kinds[0]
        follow = ids[i + 1] if i + 1 < len(ids) else END
        nxt = _target(s["next"], [*sp, "next"], known) if s.get("next") is not None else follow
        arg = s[kind]
        step = Step(ids[i], kind, nxt, s)
        if kind == "send":
            if not isinstance(arg, Mapping) or not isinstance(arg.get("channel"), str):
                raise DefinitionError([*sp, "send"], "a destination with a `channel`")
        elif kind == "wait":
            if isinstance(arg, str):
                step = Step(ids[i], kind, nxt, s, duration=_duration(arg, [*sp, "wait"]))
            elif isinstance(arg, Mapping) and (("until" in arg) != ("event" in arg)):
                wp: list[str | int] = [*sp, "wait"]
                timeout = _duration(arg["timeout"], [*wp, "timeout"]) if arg.get("timeout") else None
                on_timeout = (_target(arg["on_timeout"], [*wp, "on_timeout"], known)
                              if arg.get("on_timeout") is not None else nxt)
                until = _condition(arg["until"], [*wp, "until"], c) if "until" in arg else None
                event = compile_selector(arg, wp) if "event" in arg else None
                if event is not None:
                    c.tags.update(event.tags)
                step = Step(ids[i], kind, nxt, s, duration=timeout, until=until, event=event,
                            on_timeout=on_timeout)
            else:
                raise DefinitionError([*sp, "wait"], "a duration, or {until: condition} or {event: name}"
                                                     " with an optional timeout and on_timeout")
        elif kind == "branch":
            if not isinstance(arg, list) or not arg:
                raise DefinitionError([*sp, "branch"], "a non-empty list of {if: condition, next: step}")
            branches = []
            for k, b in enumerate(arg):
                bp: list[str | int] = [*sp, "branch", k]
                if not isinstance(b, Mapping) or "next" not in b or ("if" not in b and "where" not in b):
                    raise DefinitionError(bp, "{if: condition, next: step} (or `where:` on the event)")
                cond = _condition(b["if"], [*bp, "if"], c) if "if" in b else None
                where = compile_where(b["where"], [*bp, "where"]) if "where" in b else None
                branches.append((cond, where, _target(b["next"], [*bp, "next"], known)))
            default = (_target(s["default"], [*sp, "default"], known) if s.get("default") is not None
                       else nxt)
            step = Step(ids[i], kind, default, s, branches=tuple(branches))
        elif kind == "move":
            if not isinstance(arg, str) or not arg:
                raise DefinitionError([*sp, "move"], "the id of a journey")
            if arg == jid:
                raise DefinitionError([*sp, "move"], "another journey (to start over, use next:)")
            moves.add(arg)
            step = Step(ids[i], kind, END, s, target=arg)
        else:  # exit
            if not isinstance(arg, str) or not arg:
                raise DefinitionError([*sp, "exit"], "a reason (a word)")
            step = Step(ids[i], kind, END, s, target=arg)
        steps[ids[i]] = step
    _check_loops(steps, at)
    entry = spec.get("entry")
    ep: list[str | int] = [*at, "entry"]
    entry_kinds = [k for k in ("segment", "event", "condition") if isinstance(entry, Mapping) and k in entry]
    if len(entry_kinds) != 1:
        raise DefinitionError(ep, "exactly one of segment (entered), event (performed) or condition "
                                  "(became true)")
    assert isinstance(entry, Mapping)
    ekind = entry_kinds[0]
    segment = event = condition = None
    if ekind == "segment":
        if not isinstance(entry["segment"], str) or len(entry) != 1:
            raise DefinitionError(ep, "{segment: id} alone")
        segment = entry["segment"]
        c.segments.add(segment)
    elif ekind == "event":
        event = compile_selector(entry, ep)
    else:
        if len(entry) != 1:
            raise DefinitionError(ep, "{condition: …} alone")
        condition = _condition(entry["condition"], [*ep, "condition"], c)
    goal = _condition(spec["goal"], [*at, "goal"], c) if spec.get("goal") is not None else None
    leave = _condition(spec["exit"], [*at, "exit"], c) if spec.get("exit") is not None else None
    reentry_spec = spec.get("reentry", "never")
    reentry: str | int = reentry_spec if reentry_spec in REENTRY else \
        _duration(reentry_spec, [*at, "reentry"])
    cap = spec.get("cap")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise DefinitionError([*at, "cap"], f"a whole number >= 1, got {cap!r}")
    return Journey(jid, steps, ids[0], ekind, segment, event, condition, goal, leave, reentry, cap,
                   frozenset(moves), frozenset(c.segments), frozenset(c.traits), spec)


def _check_loops(steps: Mapping[str, Step], at: list[str | int]) -> None:
    """A path that comes back to a step without passing a wait would run forever in one instant."""
    def outs(s: Step) -> list[str]:
        if s.kind == "wait":
            return []
        return [*(t for _, _, t in s.branches), s.next]

    state: dict[str, int] = {}

    def visit(sid: str, trail: list[str]) -> None:
        if sid == END or state.get(sid) == 2:
            return
        if state.get(sid) == 1:
            loop = " → ".join([*trail[trail.index(sid):], sid])
            raise DefinitionError([*at, "steps"], f"steps whose loops pass a wait ({loop})")
        state[sid] = 1
        for t in outs(steps[sid]):
            visit(t, [*trail, sid])
        state[sid] = 2

    for sid in steps:
        visit(sid, [])


# --- running ---------------------------------------------------------------------------------

def record_id(pid: str, jid: str, step: str, action: str, at: int, cause: str) -> str:
    return hashlib.sha1(f"{pid}|{jid}|{step}|{action}|{at}|{cause}".encode()).hexdigest()[:24]


@dataclass
class Result:
    records: list[dict[str, Any]] = field(default_factory=list)
    triggers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    suppressed: Counter[str] = field(default_factory=empty_counter)
    counts: Counts = field(default_factory=empty_counter)


@dataclass
class _Run:
    profile: Profile
    book: Book
    scope: _Scope
    now: int
    cause: str
    event: Touchpoint | None
    acfg: ActivationConfig
    computed: ComputedView | None
    active: Callable[[str], int] | None
    partitions: int
    out: Result
    touched: set[str] = field(default_factory=set)

    @property
    def pid(self) -> str:
        return str(self.profile["id"])

    def holds(self, cond: Cond | None) -> bool:
        return cond is not None and bool(cond(self.scope))

    def branch_holds(self, cond: Cond | None, where: EventFilter | None) -> bool:
        """`if` on the profile and `where` on the event of this instant (none at a deadline)."""
        if where is not None and (self.event is None or not where(self.event.msg, self.scope.ctx)):
            return False
        return cond is None or self.holds(cond)

    def record(self, jid: str, st: dict[str, Any], step: str, action: str, **extra: Any) -> None:
        rec = {"type": "journey", "journey": jid, "step": step, "action": action,
               "profile_id": self.pid, "at": self.now, "occurred_at": iso(self.now),
               "caused_by": self.cause, **extra,
               "id": record_id(self.pid, jid, step, action, self.now, self.cause)}
        self.out.records.append(rec)
        hist = st.setdefault("hist", [])
        hist.append([step, action, self.now])
        del hist[:-HISTORY]

    def count(self, jid: str, step: str, metric: str, n: int = 1) -> None:
        self.out.counts[(jid, step, metric)] += n

    # one journey ------------------------------------------------------------------------

    def end(self, j: Journey, st: dict[str, Any], action: str, **extra: Any) -> None:
        step = st["step"]
        if st.pop("w", False):
            self.count(j.id, step, "waiting", -1)
        self.count(j.id, step, action)
        self.count(j.id, "", "active", -1)
        self.record(j.id, st, step, action, **extra)
        st.update(step=None, ended=self.now, outcome=action)
        st.pop("due", None)
        self.touched.add(j.id)

    def may_enter(self, j: Journey, st: dict[str, Any]) -> bool:
        if st.get("step") is not None or j.id in self.touched:
            return False
        return not st.get("runs", 0) or j.reentry == "always" or (
            j.reentry != "never" and self.now >= st["entered"] + int(j.reentry))

    def enter(self, j: Journey, st: dict[str, Any]) -> None:
        self.touched.add(j.id)
        if j.cap is not None and self.active is not None:
            per_partition = -(-j.cap // max(1, self.partitions))
            if self.active(j.id) + self.out.counts[(j.id, "", "active")] >= per_partition:
                self.count(j.id, j.first, "capped")
                self.record(j.id, st, j.first, "capped")
                return
        st.update(step=j.first, since=self.now, by=self.cause, entered=self.now, n=0,
                  runs=st.get("runs", 0) + 1, ended=None, outcome=None)
        st.pop("sent", None)
        st.pop("own", None)
        self.count(j.id, "", "active")
        self.record(j.id, st, j.first, "entered")
        if self.ruled_out(j, st):
            return
        self.walk(j, st, j.first)

    def ruled_out(self, j: Journey, st: dict[str, Any]) -> bool:
        """The journey-wide conditions, goal first: converted, or exited."""
        if self.holds(j.goal):
            self.end(j, st, "converted")
            return True
        if self.holds(j.exit):
            self.end(j, st, "exited", reason="exit")
            return True
        return False

    def walk(self, j: Journey, st: dict[str, Any], sid: str) -> None:
        """Take step `sid` and the ones after it, until a wait that has to wait, or the end."""
        for _ in range(MAX_STEPS):
            if sid == END:
                self.end(j, st, "completed")
                return
            step = j.steps[sid]
            st.update(step=sid, since=self.now, by=self.cause, n=st.get("n", 0) + 1)
            self.count(j.id, sid, "entered")
            if step.kind == "wait":
                self.count(j.id, sid, "waiting")
                st["w"] = True  # counted as waiting at this step
                self.record(j.id, st, sid, "waiting")
                nxt = self.resume(j, st, step)
                if nxt is None:
                    return
                sid = nxt
            elif step.kind == "send":
                self.send(j, st, step)
                sid = step.next
            elif step.kind == "branch":
                sid = next((t for cond, where, t in step.branches if self.branch_holds(cond, where)),
                           step.next)
                self.record(j.id, st, step.id, "branched", to=sid)
            elif step.kind == "move":
                self.end(j, st, "moved", to=step.target)
                target = self.book.journeys[str(step.target)]
                tst = self.state(target.id)
                if self.may_enter(target, tst):
                    self.enter(target, tst)
                return
            else:
                self.end(j, st, "exited", reason=step.target)
                return
        self.end(j, st, "exited", reason="too_many_steps")

    def resume(self, j: Journey, st: dict[str, Any], step: Step) -> str | None:
        """Where a resting wait goes on to now, or None while it still waits."""
        how = None
        if step.until is not None and self.holds(step.until):
            how, nxt = "until", step.next
        elif step.event is not None and self.event is not None and self.event.message_id != st["by"] \
                and step.event.matches(self.event.msg, self.event.name, self.event.type, self.scope.ctx):
            how, nxt = "event", step.next
        elif step.duration is not None and self.now >= st["since"] + step.duration:
            how, nxt = "timeout", step.on_timeout or step.next
        if how is None:
            if step.duration is not None:
                st["due"] = st["since"] + step.duration  # kept for when the definition is away
                self.scope.ctx.due(st["due"])
            return None
        st.pop("due", None)
        if st.pop("w", False):
            self.count(j.id, step.id, "waiting", -1)
        self.record(j.id, st, step.id, "resumed", how=how)
        return nxt

    def send(self, j: Journey, st: dict[str, Any], step: Step) -> None:
        dest = step.spec["send"]
        if step.id in st.get("sent", ()):  # sent by the other profile of a merge, in its run
            self.record(j.id, st, step.id, "suppressed", reason="already_sent", channel=dest["channel"])
            return
        change = {"segment": f"journey:{j.id}", "transition": "entered", "caused_by": self.cause,
                  "at": self.now}
        decided = activation.Decisions()
        activation.decide(self.profile, change, dest, self.acfg, self.now, decided, self.computed)
        self.out.suppressed.update(decided.suppressed)
        if not decided.triggers:
            reason = next(iter(decided.suppressed), ":suppressed").partition(":")[2]
            self.record(j.id, st, step.id, "suppressed", reason=reason, channel=dest["channel"])
            return
        for channel, trig in decided.triggers:
            trig["trigger_id"] = activation.trigger_id(self.pid, f"journey:{j.id}", step.id, channel,
                                                       self.cause)
            trig.update(journey=j.id, step=step.id)
            self.out.triggers.append((channel, trig))
        own: list[str] = st.setdefault("own", [])  # send steps taken in this run (bounded by the steps)
        if step.id not in own:
            own.append(step.id)
        self.record(j.id, st, step.id, "sent", channel=dest["channel"])

    def state(self, jid: str) -> dict[str, Any]:
        states: dict[str, Any] = self.profile.setdefault("journeys", {})
        return states.setdefault(jid, {"step": None, "runs": 0})

    def entry_fires(self, j: Journey, st: dict[str, Any], segments_entered: set[str]) -> bool:
        if j.entry_kind == "segment":
            return j.entry_segment in segments_entered
        if j.entry_kind == "event":
            ev = self.event
            assert j.entry_event is not None
            return ev is not None and j.entry_event.matches(ev.msg, ev.name, ev.type, self.scope.ctx)
        now_true = self.holds(j.entry_condition)
        was = bool(st.get("cond"))
        st["cond"] = now_true
        return now_true and not was

    def step_on(self, j: Journey, st: dict[str, Any]) -> None:
        """An active position at this instant: definition edits, goal, exit, then its wait."""
        step = j.steps.get(st["step"])
        if step is None or step.kind != "wait":
            self.end(j, st, "exited", reason="definition_changed")
            return
        if self.ruled_out(j, st):
            return
        nxt = self.resume(j, st, step)
        if nxt is not None:
            self.walk(j, st, nxt)


def advance(profile: Profile, book: Book, catalog: Catalog, now: int, cause: str,
            event: Touchpoint | None = None, changes: Sequence[Mapping[str, Any]] = (),
            acfg: ActivationConfig | None = None, computed: ComputedView | None = None,
            active: Callable[[str], int] | None = None, partitions: int = 1) -> Result:
    """Every journey of one profile at one instant (in place); records, triggers and count changes.

    `changes` are this evaluation's segment transitions (entries start segment journeys);
    `active(journey)` is how many customers are in it on this partition (for caps)."""
    out = Result()
    states: dict[str, Any] | None = profile.get("journeys")
    if not book and not states:
        profile.pop("_jdue", None)
        return out
    run = _Run(profile, book, _Scope(profile, Ctx(now), catalog), now, cause, event,
               acfg or ActivationConfig(), computed, active, partitions, out)
    # positions in journeys not (or no longer) defined stay as they are, inert: a definition
    # skipped for a while (a segment it reads was deleted) or defined again finds them, at the
    # latest when the wait they were in would have ended
    due: list[int] = [st["due"] for jid, st in (states or {}).items()
                      if jid not in book.journeys and st.get("step") is not None and st.get("due")]
    pid = profile["id"]
    entered = {c["segment"] for c in changes if c.get("type") == "segment" and not c.get("continued")
               and c.get("transition") == "entered" and c.get("profile_id") == pid}
    for jid, j in book.journeys.items():
        run.scope.ctx = Ctx(now)
        st = profile.get("journeys", {}).get(jid)
        probe = st if st is not None else {"step": None, "runs": 0}
        fires = run.entry_fires(j, probe, entered)
        if st is None and (probe.get("cond") or (fires and jid not in run.touched)):
            st = run.state(jid)
            st.update(probe)
        if st is None or jid in run.touched:  # touched: entered (by a move) or left at this instant
            pass
        elif st.get("step") is not None:
            run.step_on(j, st)
        elif fires and run.may_enter(j, st):
            run.enter(j, st)
        if run.scope.ctx.next_due is not None:
            due.append(run.scope.ctx.next_due)
    due = [d for d in due if d > now]
    if due:
        profile["_jdue"] = min(due)
    else:
        profile.pop("_jdue", None)
    return out


# --- merges and erasure ----------------------------------------------------------------------

def _progress(st: Mapping[str, Any]) -> tuple[Any, ...]:
    """How far a position got: more runs, then a finished run, then more steps, then later."""
    return (st.get("runs", 0), st.get("step") is None, st.get("n", 0), st.get("since") or 0,
            st.get("ended") or 0, str(st.get("step")), repr(sorted(st.items())))


def merge_positions(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None,
                    book: Book) -> tuple[dict[str, Any], Counts]:
    """Journey states of two profiles of one person: per journey, the furthest position, with
    both histories (so a step sent on either side is not sent again). Commutative.
    Also the count changes: the position not kept is no longer in the journey."""
    a, b = a or {}, b or {}
    out: dict[str, Any] = {}
    counts: Counts = Counter()
    for jid in sorted(set(a) | set(b)):
        sa, sb = a.get(jid), b.get(jid)
        if sa is None or sb is None:
            out[jid] = dict(sa or sb or {})
            continue
        keep, drop = (sa, sb) if _progress(sa) >= _progress(sb) else (sb, sa)
        merged = dict(keep)
        hist = {tuple(h) for h in (sa.get("hist") or []) + (sb.get("hist") or [])}
        ordered = sorted(hist, key=lambda h: (h[2], str(h[0]), str(h[1])))
        merged["hist"] = [list(h) for h in ordered][-HISTORY:]
        merged["cond"] = bool(sa.get("cond")) or bool(sb.get("cond"))
        if keep.get("step") is not None:  # steps the other side sent in its run are not sent again
            sent = set(keep.get("sent", ()))
            if drop.get("step") is not None:
                sent |= set(drop.get("sent", ())) | set(drop.get("own", ()))
            if sent:
                merged["sent"] = sorted(sent)
        out[jid] = merged
        if drop.get("step") is not None:
            counts[(jid, "", "active")] -= 1
            if drop.get("w"):
                counts[(jid, drop["step"], "waiting")] -= 1
    return out, counts


def forget(profile: Profile, book: Book) -> Counts:
    """Count changes when a profile is erased (its journey state goes with the profile)."""
    counts: Counts = Counter()
    for jid, st in (profile.get("journeys") or {}).items():
        if st.get("step") is None:
            continue
        counts[(jid, "", "active")] -= 1
        if st.get("w"):
            counts[(jid, st["step"], "waiting")] -= 1
    return counts


def add_counts(stats: dict[str, Any], counts: Counts) -> dict[str, Any]:
    """Fold count changes into {journey: {step: {metric: n}}} (step "" holds `active`)."""
    for (jid, step, metric), n in counts.items():
        if n:
            cell = stats.setdefault(jid, {}).setdefault(step, {})
            cell[metric] = cell.get(metric, 0) + n
    return stats


def sum_stats(many: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stats in many:
        for jid, steps in stats.items():
            for step, cells in steps.items():
                for metric, n in cells.items():
                    cell = out.setdefault(jid, {}).setdefault(step, {})
                    cell[metric] = cell.get(metric, 0) + n
    return out


def funnel(j: Mapping[str, Any], stats: Mapping[str, Any]) -> dict[str, Any]:
    """GET /journeys/{id}: the definition and, per step in order, its live counts."""
    mine = stats.get(str(j["id"]), {})
    metrics = ("entered", "waiting", "converted", "exited", "moved", "completed")
    steps = [{"step": s["id"], "kind": next((k for k in KINDS if k in s), None),
              **{m: mine.get(s["id"], {}).get(m, 0) for m in metrics}} for s in j.get("steps", [])]
    return {**j, "active": mine.get("", {}).get("active", 0), "steps_live": steps}
