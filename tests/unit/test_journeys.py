"""Journeys: the engine against an independent step-by-step simulation, and its laws.

The reference simulator below is written from the README's "Journeys" rules alone: it keeps
a customer's history as a plain list, fires each wait at entered_at + duration, and walks
the steps by hand. The engine (processors/journeys/engine.py through the identity protocol, event
clock) must take the same steps and send the same triggers on generated histories, whatever
ticks come in between, and the same again when every record is replayed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from processors.common.config import ConfigError
from processors.common.predicates import DefinitionError
from processors.identity.graph import Env, IdentityConfig, event_message, recheck
from processors.ingest import events as ev
from processors.ingest.identifiers import routing_key
from processors.journeys import engine as jn
from processors.profile.unified import iso
from processors.protocol import handle
from processors.segments.catalog import Catalog
from processors.segments.definitions import load_file, load_journeys
from tests.unit.test_identity_protocol import Partition

HOUR = 3_600_000
DAY = 24 * HOUR
T0 = 1_704_067_200_000
CFG = IdentityConfig(partitions=1)

DEFS = """
segments:
  - id: signed_up
    condition: {performed: Signed Up}
journeys:
  - id: onboarding
    entry: {segment: signed_up}
    goal: {performed: Order Completed}
    exit: {subscription: email, is: unsubscribed}
    steps:
      - id: welcome
        send: {channel: email}
      - id: wait_2d
        wait: 2d
      - id: opened?
        branch:
          - if: {performed: App Opened}
            next: wait_open
        default: push
      - id: push
        send: {channel: webhook}
      - id: wait_open
        wait: {event: App Opened, timeout: 3d, on_timeout: nudge}
        next: pro?
      - id: nudge
        send: {channel: webhook}
        next: wait_5d
      - id: pro?
        branch:
          - if: {trait: plan, eq: pro}
            next: to_loyalty
        default: wait_5d
      - id: wait_5d
        wait: 5d
        next: _end
      - id: to_loyalty
        move: loyalty
  - id: loyalty
    entry: {event: Order Completed, where: [{field: properties.total, gte: 300}]}
    reentry: 10d
    exit: {subscription: email, is: unsubscribed}
    steps:
      - id: thanks
        send: {channel: email}
      - id: until_pro
        wait: {until: {trait: plan, eq: pro}, timeout: 4d, on_timeout: remind}
        next: done
      - id: remind
        send: {channel: webhook}
        next: until_pro
      - id: done
        exit: finished
  - id: winback
    entry: {condition: {trait: plan, eq: churned}}
    reentry: always
    goal: {trait: plan, eq: pro}
    steps:
      - id: offer
        send: {channel: webhook}
      - id: wait_1d
        wait: 1d
      - id: back
        move: onboarding
"""


def definitions(text: str = DEFS) -> tuple[Catalog, jn.Book, dict[str, Any]]:
    data = yaml.safe_load(text)
    catalog = Catalog.build(data.get("computed_traits", []), data.get("segments", []))
    return catalog, jn.Book.build(data["journeys"], catalog), data


CATALOG, BOOK, SPEC = definitions()

# --- generated histories ---------------------------------------------------------------------

KINDS = ["Signed Up", "Order Completed", "Big Order", "App Opened", "Plan", "Unsubscribed", "Viewed"]
event_st = st.tuples(st.sampled_from(KINDS), st.integers(0, 30 * DAY),
                     st.sampled_from(["pro", "churned", "free"]))
history_st = st.lists(event_st, min_size=1, max_size=14)


def make_events(raw: list[tuple[str, int, str]], user: str = "u1") -> list[dict[str, Any]]:
    """(kind, offset, plan) → plain events in time order (what both engine and simulator read)."""
    out = []
    for i, (kind, t, plan) in enumerate(sorted(raw, key=lambda r: r[1])):
        name = {"Big Order": "Order Completed", "Plan": "Plan Changed", "Unsubscribed": "Preferences"}.get(
            kind, kind)
        e: dict[str, Any] = {"name": name, "ts": T0 + t, "mid": f"{user}-m{i:03d}", "traits": {}, "props": {}}
        if kind == "Order Completed":
            e["props"] = {"total": 50}
        if kind == "Big Order":
            e["props"] = {"total": 500}
        if kind == "Plan":
            e["traits"] = {"plan": plan}
        if kind == "Unsubscribed":
            e["traits"] = {"subscriptions": {"email": "unsubscribed"}}
        if kind == "Signed Up":  # signing up subscribes (marketing email is opt-in)
            e["traits"] = {"subscriptions": {"email": "subscribed"}}
        out.append(e)
    return out


def raw_event(e: dict[str, Any], user: str = "u1") -> bytes:
    return orjson.dumps({"type": "track", "event": e["name"], "userId": user, "messageId": e["mid"],
                         "timestamp": iso(e["ts"]), "properties": e["props"],
                         "context": {"traits": {"email": f"{user}@example.com", **e["traits"]}}})


def encoded(e: dict[str, Any], user: str = "u1") -> dict[str, Any]:
    tp = ev.validate(raw_event(e, user), record_ts_ms=e["ts"])
    assert isinstance(tp, ev.Touchpoint)
    return {"m": tp.msg, "ts": tp.ts, "ids": tp.identifiers}


# --- the reference simulation ----------------------------------------------------------------


class Sim:
    """One customer, the README rules, nothing shared with the engine but the definitions."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.journeys = {j["id"]: j for j in spec["journeys"]}
        self.past: list[dict[str, Any]] = []
        self.pos: dict[str, dict[str, Any]] = {j: {"at": None, "runs": 0, "cond": False}
                                               for j in self.journeys}
        self.steps: list[tuple[str, str, str, int, str]] = []
        self.sends: list[tuple[str, str, str, int, str]] = []
        self.in_segment = False

    # what the profile says ------------------------------------------------------------------
    def did(self, name: str) -> bool:
        return any(e["name"] == name for e in self.past)

    def trait(self, name: str) -> Any:
        value = None
        for e in self.past:
            if name in e["traits"]:
                value = e["traits"][name]
        return value

    def holds(self, cond: dict[str, Any] | None) -> bool:
        if cond is None:
            return False
        if "performed" in cond:
            return self.did(cond["performed"])
        if "trait" in cond:
            return str(self.trait(cond["trait"]) or "").lower() == str(cond["eq"]).lower()
        if "subscription" in cond:
            subs = self.trait("subscriptions") or {}
            return subs.get(cond["subscription"]) == cond["is"]
        raise AssertionError(cond)

    # steps ----------------------------------------------------------------------------------
    def note(self, jid: str, step: str, action: str, t: int, cause: str) -> None:
        self.steps.append((jid, step, action, t, cause))

    def step_list(self, jid: str) -> list[dict[str, Any]]:
        return list(self.journeys[jid]["steps"])

    def find(self, jid: str, sid: str) -> dict[str, Any]:
        return next(s for s in self.step_list(jid) if s["id"] == sid)

    def following(self, jid: str, s: dict[str, Any]) -> str:
        if "next" in s:
            return str(s["next"])
        ids = [x["id"] for x in self.step_list(jid)]
        i = ids.index(s["id"])
        return ids[i + 1] if i + 1 < len(ids) else "_end"

    def finish(self, jid: str, action: str, t: int, cause: str) -> None:
        p = self.pos[jid]
        self.note(jid, p["at"], action, t, cause)
        p.update(at=None, ended=t)
        self.busy.add(jid)  # left at this instant: not entered again at it

    def go(self, jid: str, sid: str, t: int, cause: str, busy: set[str]) -> None:
        p = self.pos[jid]
        while True:
            if sid == "_end":
                self.finish(jid, "completed", t, cause)
                return
            s = self.find(jid, sid)
            p.update(at=sid, since=t, by=cause, n=p.get("n", 0) + 1)
            if "send" in s:
                ch = s["send"]["channel"]
                subs = self.trait("subscriptions") or {}
                # marketing email goes only to the subscribed (opt-in); webhooks to anyone
                if sid in p.get("other_sent", ()) or (ch == "email" and subs.get("email") != "subscribed"):
                    self.note(jid, sid, "suppressed", t, cause)
                else:
                    self.note(jid, sid, "sent", t, cause)
                    self.sends.append((ch, jid, sid, t, cause))
                    p.setdefault("sent", set()).add(sid)
                sid = self.following(jid, s)
            elif "branch" in s:
                sid = next((b["next"] for b in s["branch"] if self.holds(b["if"])),
                           s.get("default") or self.following(jid, s))
                self.note(jid, s["id"], "branched", t, cause)
            elif "move" in s:
                self.finish(jid, "moved", t, cause)
                self.try_enter(s["move"], t, cause, busy)
                return
            elif "exit" in s:
                self.finish(jid, "exited", t, cause)
                return
            else:
                self.note(jid, sid, "waiting", t, cause)
                nxt = self.wait_over(jid, s, t, None)
                if nxt is None:
                    return
                sid = nxt

    def wait_over(self, jid: str, s: dict[str, Any], t: int, event: dict[str, Any] | None) -> str | None:
        p = self.pos[jid]
        w = s["wait"]
        if isinstance(w, str):
            if t >= p["since"] + parse(w):
                self.note(jid, s["id"], "resumed", t, self.cause)
                return self.following(jid, s)
            return None
        if "until" in w and self.holds(w["until"]):
            self.note(jid, s["id"], "resumed", t, self.cause)
            return self.following(jid, s)
        if "event" in w and event is not None and event["name"] == w["event"] and event["mid"] != p["by"]:
            self.note(jid, s["id"], "resumed", t, self.cause)
            return self.following(jid, s)
        if "timeout" in w and t >= p["since"] + parse(w["timeout"]):
            self.note(jid, s["id"], "resumed", t, self.cause)
            return str(w.get("on_timeout") or self.following(jid, s))
        return None

    def try_enter(self, jid: str, t: int, cause: str, busy: set[str]) -> None:
        p, j = self.pos[jid], self.journeys[jid]
        if p["at"] is not None or jid in busy:
            return
        policy = j.get("reentry", "never")
        if p["runs"] and (policy == "never" or (policy != "always" and t < p["entered"] + parse(policy))):
            return
        busy.add(jid)
        first = j["steps"][0]["id"]
        p.update(at=first, since=t, by=cause, entered=t, runs=p["runs"] + 1, n=0, sent=set(),
                 other_sent=set())
        self.note(jid, first, "entered", t, cause)
        if self.holds(j.get("goal")):
            self.finish(jid, "converted", t, cause)
        elif self.holds(j.get("exit")):
            self.finish(jid, "exited", t, cause)
        else:
            self.go(jid, first, t, cause, busy)

    def moment(self, t: int, cause: str, event: dict[str, Any] | None, seg_entered: bool) -> None:
        self.cause = cause
        self.busy: set[str] = set()
        busy = self.busy
        for jid in sorted(self.journeys):
            j, p = self.journeys[jid], self.pos[jid]
            entry = j["entry"]
            if "condition" in entry:
                now = self.holds(entry["condition"])
                fires, p["cond"] = now and not p["cond"], now
            elif "segment" in entry:
                fires = seg_entered
            else:
                fires = event is not None and event["name"] == entry["event"] and \
                    event["props"].get("total", 0) >= entry["where"][0]["gte"]
            if jid in busy:
                continue
            if p["at"] is not None:
                step = next((x for x in j["steps"] if x["id"] == p["at"]), None)
                if step is None or "wait" not in step:  # the journey was edited
                    self.finish(jid, "exited", t, cause)
                elif self.holds(j.get("goal")):
                    self.finish(jid, "converted", t, cause)
                elif self.holds(j.get("exit")):
                    self.finish(jid, "exited", t, cause)
                else:
                    nxt = self.wait_over(jid, self.find(jid, p["at"]), t, event)
                    if nxt is not None:
                        self.go(jid, nxt, t, cause, busy)
            elif fires:
                self.try_enter(jid, t, cause, busy)
        for jid, p in self.pos.items():  # when to look again (an edit shows then, not before)
            p["due"] = None
            if p["at"] is not None:
                w = self.find(jid, p["at"])["wait"]
                d = w if isinstance(w, str) else w.get("timeout")
                p["due"] = None if d is None else p["since"] + parse(d)

    def next_deadline(self) -> int | None:
        return min((p["due"] for p in self.pos.values() if p["at"] is not None and p.get("due")),
                   default=None)

    def catch_up(self, upto: int) -> None:
        while (d := self.next_deadline()) is not None and d <= upto:
            self.moment(d, f"time:{d}", None, False)

    def run(self, events: list[dict[str, Any]], end: int,
            edit: tuple[int, dict[str, Any]] | None = None) -> None:
        """Events in order; with `edit` (k, definitions), those are in force from event k on."""
        for i, e in enumerate(events):
            if edit is not None and i == edit[0]:
                self.journeys = {j["id"]: j for j in edit[1]["journeys"]}
            self.catch_up(e["ts"])
            self.past.append(e)
            entered = not self.in_segment and self.did("Signed Up")
            self.in_segment = self.in_segment or entered
            self.moment(e["ts"], e["mid"], e, entered)
        self.catch_up(end)


def merged_sim(a: Sim, b: Sim) -> Sim:
    """The README's merge rule, written out: one person with both histories; per journey the
    position that got furthest (more runs; a finished run; more steps; the later step);
    steps the other one sent in its run are not sent again."""
    out = Sim({"journeys": list(a.journeys.values())})
    out.past = sorted(a.past + b.past, key=lambda e: (e["ts"], e["mid"]))
    out.in_segment = a.in_segment or b.in_segment
    out.steps, out.sends = a.steps + b.steps, a.sends + b.sends

    def progress(p: dict[str, Any]) -> tuple[Any, ...]:
        return (p["runs"], p["at"] is None, p.get("n", 0), p.get("since") or 0, p.get("ended") or 0,
                str(p["at"]))

    for jid in out.journeys:
        pa, pb = a.pos[jid], b.pos[jid]
        keep, drop = (pa, pb) if progress(pa) >= progress(pb) else (pb, pa)
        p = {**keep, "cond": pa["cond"] or pb["cond"]}
        if keep["at"] is not None and drop["at"] is not None:
            p["other_sent"] = set(keep.get("other_sent", ())) | drop.get("sent", set()) | \
                set(drop.get("other_sent", ()))
        out.pos[jid] = p
    return out


def parse(d: str) -> int:
    return int(d[:-1]) * {"d": DAY, "h": HOUR}[d[-1]]


# --- the engine ------------------------------------------------------------------------------


def engine(events: list[dict[str, Any]], end: int, ticks: list[int | None] | None = None,
           book: jn.Book = BOOK, replay: bool = False, user: str = "u1",
           part: Partition | None = None,
           edit: tuple[int, jn.Book] | None = None) -> tuple[list[Any], list[Any], Partition]:
    fresh = part is None
    part = Partition() if part is None else part
    steps: list[Any] = []
    sends: list[Any] = []

    counts: Counter[tuple[str, str, str]] = Counter()

    def collect(fx: Any) -> None:
        counts.update(fx.journey_counts)
        steps.extend((c["journey"], c["step"], c["action"], c["at"], c["caused_by"])
                     for c in fx.changes if c.get("type") == "journey")
        sends.extend((ch, t["journey"], t["step"], t["trigger_id"])
                     for ch, t in fx.triggers if "journey" in t)

    def tick(wm: int) -> None:
        for pid in sorted(part.profiles):
            env = Env(wm, CATALOG, event_time=True, journeys=book)
            collect(recheck(pid, part, env, f"time:{wm}", cfg=CFG))

    for i, e in enumerate(events):
        if edit is not None and i == edit[0]:
            book = edit[1]
        if ticks and ticks[i] is not None:
            tick(ticks[i])
        stack = [(routing_key(encoded(e, user)["ids"]), event_message(encoded(e, user)))]
        while stack:
            key, msg = stack.pop(0)
            env = Env(None, CATALOG, event_time=True, journeys=book)
            fx = handle(key, msg, part, CFG, (0, i), env)
            collect(fx)
            if replay:  # a redelivered record: nothing new, the same records and triggers re-sent
                again = handle(key, msg, part, CFG, (0, i), env)
                assert [c for c in again.changes if c.get("type") == "journey"] == \
                    [c for c in fx.changes if c.get("type") == "journey"]
                assert again.triggers == fx.triggers
            stack += fx.send  # one partition: E's A inline, then the identifier links (L)
    tick(end)
    # the live counts the changes add up to are the positions the profiles hold
    held: Counter[tuple[str, str, str]] = Counter()
    for profile in part.profiles.values():
        for jid, pos in (profile.get("journeys") or {}).items():
            if pos.get("step") is not None:
                held[(jid, "", "active")] += 1
                held[(jid, pos["step"], "waiting")] += 1
    if fresh:
        assert {k: n for k, n in counts.items() if n and k[2] in ("active", "waiting")} == +held
    return steps, sends, part


def simulated(events: list[dict[str, Any]], end: int) -> Sim:
    sim = Sim(SPEC)
    sim.run(events, end)
    return sim


@settings(max_examples=150, deadline=None)
@given(history_st, st.integers(0, 20 * DAY))
def test_engine_takes_the_steps_of_the_reference_simulation(raw: list[Any], after: int) -> None:
    events = make_events(raw)
    end = events[-1]["ts"] + after
    steps, sends, _ = engine(events, end)
    sim = simulated(events, end)
    assert steps == sim.steps
    assert [(ch, j, s) for ch, j, s, _ in sends] == [(ch, j, s) for ch, j, s, _t, _c in sim.sends]


@settings(max_examples=80, deadline=None)
@given(history_st, st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=14, max_size=14),
       st.integers(0, 20 * DAY))
def test_ticks_up_to_the_next_event_change_nothing(raw: list[Any], where: list[float | None],
                                                   after: int) -> None:
    events = make_events(raw)
    times = [e["ts"] for e in events]
    before = [T0, *times[:-1]]
    ticks = [None if w is None else int(before[i] + w * (times[i] - before[i]))
             for i, w in enumerate(where[:len(events)])]
    end = times[-1] + after
    quiet = engine(events, end)[:2]
    busy = engine(events, end, ticks)[:2]
    assert busy == quiet


@settings(max_examples=60, deadline=None)
@given(history_st, st.integers(0, 20 * DAY))
def test_replayed_records_give_the_same_steps_and_trigger_ids(raw: list[Any], after: int) -> None:
    events = make_events(raw)
    end = events[-1]["ts"] + after
    assert engine(events, end, replay=True)[:2] == engine(events, end)[:2]


def edited() -> dict[str, Any]:
    """DEFS edited: the first wait longer, wait_5d and its branch gone, a new last step."""
    spec = yaml.safe_load(DEFS)
    onboarding = spec["journeys"][0]
    onboarding["steps"][1]["wait"] = "3d"
    onboarding["steps"] = [s for s in onboarding["steps"] if s["id"] != "wait_5d"]
    for s in onboarding["steps"]:
        if s.get("next") == "wait_5d":
            s["next"] = "wait_1d"
        if s.get("default") == "wait_5d":
            s["default"] = "wait_1d"
    onboarding["steps"].append({"id": "wait_1d", "wait": "1d"})
    return spec


EDITED = edited()
EDITED_BOOK = jn.Book.build(EDITED["journeys"], CATALOG)


@settings(max_examples=100, deadline=None)
@given(history_st, st.integers(0, 20 * DAY), st.integers(0, 13))
def test_an_edit_mid_run_matches_the_simulation(raw: list[Any], after: int, at: int) -> None:
    """Positions on steps that still exist are kept (new durations); the others exit."""
    events = make_events(raw)
    end = events[-1]["ts"] + after
    k = min(at, len(events) - 1)
    steps, sends, _ = engine(events, end, edit=(k, EDITED_BOOK))
    sim = Sim(SPEC)
    sim.run(events, end, edit=(k, EDITED))
    assert steps == sim.steps
    assert [(ch, j, s) for ch, j, s, _ in sends] == [(ch, j, s) for ch, j, s, _t, _c in sim.sends]


def test_onboarding_walkthrough() -> None:
    """Welcome on sign-up; 2d later, no app opened: push; 3d without opening: nudge; 5d: done."""
    events = make_events([("Signed Up", 0, "free")])
    steps, sends, part = engine(events, T0 + 20 * DAY)
    assert [(s[1], s[2]) for s in steps if s[0] == "onboarding"] == [
        ("welcome", "entered"), ("welcome", "sent"), ("wait_2d", "waiting"), ("wait_2d", "resumed"),
        ("opened?", "branched"), ("push", "sent"), ("wait_open", "waiting"), ("wait_open", "resumed"),
        ("nudge", "sent"), ("wait_5d", "waiting"), ("wait_5d", "resumed"), ("wait_5d", "completed")]
    resumed = [s[3] for s in steps if s[2] == "resumed"]
    assert resumed == [T0 + 2 * DAY, T0 + 5 * DAY, T0 + 10 * DAY]  # entered_at + duration exactly
    assert [(ch, s) for ch, _, s, _ in sends] == [("email", "welcome"), ("webhook", "push"),
                                                  ("webhook", "nudge")]
    (profile,) = part.profiles.values()
    assert profile["journeys"]["onboarding"]["step"] is None
    assert profile["journeys"]["onboarding"]["outcome"] == "completed"


def test_goal_mid_wait_and_unsubscribe_exit() -> None:
    events = make_events([("Signed Up", 0, "free"), ("Order Completed", DAY, "free")])
    steps, _, _ = engine(events, T0 + 20 * DAY)
    assert steps[-1][:3] == ("onboarding", "wait_2d", "converted")
    events = make_events([("Signed Up", 0, "free"), ("Unsubscribed", DAY, "free")])
    steps, _, part = engine(events, T0 + 20 * DAY)
    assert steps[-1][:3] == ("onboarding", "wait_2d", "exited")
    assert list(part.profiles.values())[0]["journeys"]["onboarding"]["outcome"] == "exited"


def test_a_move_enters_the_other_journey_at_the_same_instant() -> None:
    events = make_events([("Signed Up", 0, "free"), ("Plan", HOUR, "pro"), ("App Opened", 3 * DAY, "free")])
    steps, sends, _ = engine(events, T0 + 3 * DAY)
    moved = [s for s in steps if s[2] == "moved"]
    assert moved == [("onboarding", "to_loyalty", "moved", T0 + 3 * DAY, "u1-m002")]
    after = steps[steps.index(moved[0]) + 1:]
    assert after[0] == ("loyalty", "thanks", "entered", T0 + 3 * DAY, "u1-m002")
    # already pro: the loyalty wait is over at once
    assert ("loyalty", "done", "exited", T0 + 3 * DAY, "u1-m002") in after


def test_definition_edit_keeps_existing_steps_and_exits_from_removed_ones() -> None:
    events = make_events([("Signed Up", 0, "free")])
    _, _, part = engine(events, T0 + HOUR)
    edited = yaml.safe_load(DEFS)
    onboarding = edited["journeys"][0]
    onboarding["steps"][1]["wait"] = "3d"  # wait_2d kept, now 3 days
    book = jn.Book.build(edited["journeys"], CATALOG)
    pid = next(iter(part.profiles))
    fx = recheck(pid, part, Env(T0 + 3 * DAY, CATALOG, event_time=True, journeys=book), "t", cfg=CFG)
    resumed = [c for c in fx.changes if c.get("action") == "resumed"]
    assert [(c["step"], c["at"]) for c in resumed] == [("wait_2d", T0 + 3 * DAY)]
    onboarding["steps"] = [s for s in onboarding["steps"] if s["id"] != "wait_open"]
    onboarding["steps"][2]["branch"][0]["next"] = "push"
    book = jn.Book.build(edited["journeys"], CATALOG)
    # at the customer's next evaluation: here the deadline the old wait had (3d + 3d)
    fx = recheck(pid, part, Env(T0 + 7 * DAY, CATALOG, event_time=True, journeys=book), "t", cfg=CFG)
    exits = [(c["step"], c["reason"], c["at"]) for c in fx.changes if c.get("action") == "exited"]
    assert exits == [("wait_open", "definition_changed", T0 + 6 * DAY)]


# --- merges ----------------------------------------------------------------------------------

position_st = st.fixed_dictionaries({
    "step": st.sampled_from([None, "wait_2d", "wait_open", "wait_5d"]),
    "runs": st.integers(0, 3), "n": st.integers(0, 8), "since": st.integers(0, 10),
    "entered": st.integers(0, 10),
    "hist": st.lists(st.tuples(st.sampled_from(["welcome", "push", "nudge"]),
                               st.sampled_from(["sent", "waiting"]), st.integers(0, 10)).map(list),
                     max_size=4),
})
states_st = st.dictionaries(st.sampled_from(["onboarding", "loyalty"]), position_st, max_size=2)


@settings(max_examples=200, deadline=None)
@given(states_st, states_st, states_st)
def test_merging_positions_is_commutative_and_associative(a: Any, b: Any, c: Any) -> None:
    ab, cab = jn.merge_positions(a, b, BOOK)
    ba, cba = jn.merge_positions(b, a, BOOK)
    assert ab == ba and cab == cba
    left = jn.merge_positions(ab, c, BOOK)[0]
    right = jn.merge_positions(a, jn.merge_positions(b, c, BOOK)[0], BOOK)[0]
    assert {k: v["step"] for k, v in left.items()} == {k: v["step"] for k, v in right.items()}
    for jid in set(a) & set(b):  # the furthest position is kept
        assert ab[jid]["n"] == max(x[jid]["n"] for x in (a, b) if x[jid]["runs"] == ab[jid]["runs"]
                                   and (x[jid]["step"] is None) == (ab[jid]["step"] is None))


def test_merge_keeps_the_furthest_position_and_sends_no_step_twice() -> None:
    part = Partition()
    a = make_events([("Signed Up", 0, "free")], "a")  # a: push sent, waiting for the app
    b = make_events([("Signed Up", 2 * DAY + HOUR, "free")], "b")  # b: welcome sent, in wait_2d
    engine(a, T0 + 2 * DAY + HOUR, user="a", part=part)
    engine(b, T0 + 2 * DAY + HOUR, user="b", part=part)
    # one event naming both: the profiles merge
    link = encoded({"name": "Viewed", "ts": T0 + 2 * DAY + 2 * HOUR, "mid": "link", "traits": {},
                    "props": {}}, "a")
    link["ids"] = [*link["ids"], ("email", "b@example.com")]
    link["m"]["context"]["traits"]["email"] = "b@example.com"
    queue = [(routing_key(link["ids"]), event_message(link))]
    changes: list[Any] = []
    triggers: list[Any] = []
    for offset in range(50):
        if not queue:
            break
        key, msg = queue.pop(0)
        env = Env(None, CATALOG, event_time=True, journeys=BOOK)
        fx = handle(key, msg, part, CFG, (1, offset), env)
        changes += fx.changes
        triggers += fx.triggers
        queue += fx.send
    live = [p for p in part.profiles.values() if "redirect" not in p]
    assert len(live) == 1
    pos = live[0]["journeys"]["onboarding"]
    assert pos["step"] == "wait_open"  # a got further (welcome, wait, branch, push, wait)
    # later: b's history must not bring the welcome or push again
    later = Env(T0 + 30 * DAY, CATALOG, event_time=True, journeys=BOOK)
    fx = recheck(live[0]["id"], part, later, "t", cfg=CFG)
    sent = [c["step"] for c in fx.changes if c.get("action") == "sent"]
    assert "welcome" not in sent and "push" not in sent
    assert [c["step"] for c in fx.changes if c.get("action") == "completed"] == ["wait_5d"]


def test_merged_counts_drop_the_position_not_kept() -> None:
    a = {"onboarding": {"step": "wait_2d", "runs": 1, "n": 2, "since": 1, "entered": 0, "w": True}}
    b = {"onboarding": {"step": "wait_open", "runs": 1, "n": 5, "since": 3, "entered": 0, "w": True,
                        "hist": [["push", "sent", 3]]}}
    merged, counts = jn.merge_positions(a, b, BOOK)
    assert merged["onboarding"]["step"] == "wait_open"
    assert counts == Counter({("onboarding", "", "active"): -1, ("onboarding", "wait_2d", "waiting"): -1})


# --- definitions -----------------------------------------------------------------------------


@pytest.mark.parametrize(("patch", "where", "expected"), [
    ({"steps": [{"id": "a", "wait": "0d"}]}, ["journeys", "j", "steps", 0, "wait"], "longer than zero"),
    ({"steps": [{"id": "a", "branch": [{"if": {"trait": "x", "eq": 1}, "next": "a"}]}]},
     ["journeys", "j", "steps"], "loops pass a wait"),
    ({"steps": [{"id": "a", "move": "nowhere"}]}, ["journeys", "j", "steps"], "known journey"),
    ({"entry": {"segment": "unknown"}}, ["journeys", "j"], "known segment"),
    ({"goal": {"performed": "X", "where": [{"field": "a", "eq": 1}]}}, ["journeys", "j", "goal"],
     "performed"),
])
def test_bad_definitions_name_the_node(patch: dict[str, Any], where: list[Any], expected: str) -> None:
    spec = {"id": "j", "entry": {"event": "X"}, "steps": [{"id": "a", "wait": "1d"}], **patch}
    with pytest.raises(DefinitionError) as e:
        jn.Book.build([spec], CATALOG)
    assert e.value.path == where and expected in e.value.expected


def test_file_errors_give_file_line_and_path(tmp_path: Path) -> None:
    f = tmp_path / "j.yaml"
    f.write_text(DEFS.replace("next: wait_open", "next: nowhere"))
    with pytest.raises(ConfigError, match=r"j.yaml:\d+: at journeys\[0\].steps\[2\].branch\[0\].next"):
        load_journeys(f)
    f.write_text(DEFS)
    assert [j["id"] for j in load_journeys(f)] == ["onboarding", "loyalty", "winback"]
    assert load_file(f)[1][0]["id"] == "signed_up"


def test_step_records_and_triggers_match_their_schemas() -> None:
    from jsonschema import Draft202012Validator

    import schemas

    step_schema = Draft202012Validator(schemas.load("journey-step"))
    trigger_schema = Draft202012Validator(schemas.load("trigger"))
    part = Partition()
    records: list[Any] = []
    triggers: list[Any] = []
    for i, e in enumerate(make_events([("Signed Up", 0, "free"), ("Big Order", 6 * DAY, "free")])):
        stack = [(routing_key(encoded(e)["ids"]), event_message(encoded(e)))]
        while stack:
            key, msg = stack.pop(0)
            fx = handle(key, msg, part, CFG, (0, i), Env(None, CATALOG, event_time=True, journeys=BOOK))
            records += [c for c in fx.changes if c.get("type") == "journey"]
            triggers += [t for _, t in fx.triggers]
            stack += fx.send
    assert {r["action"] for r in records} >= {"entered", "sent", "waiting", "resumed", "branched",
                                              "converted"}
    for r in records:
        step_schema.validate(r)
    assert len({r["id"] for r in records}) == len(records)
    assert [t["step"] for t in triggers] == ["welcome", "push", "nudge", "thanks"]
    for t in triggers:
        trigger_schema.validate(t)


def run_people(stream: list[tuple[str, dict[str, Any]]], end: int,
               ticks: list[int | None]) -> tuple[list[Any], list[Any]]:
    """Several customers' events in time order on one partition; a `link` event names two
    customers (a's user id, b's email), so they merge; a tick before event i at ticks[i]."""
    part = Partition()
    steps: list[Any] = []
    sends: list[Any] = []
    offset = 0

    def collect(fx: Any) -> None:
        steps.extend((c["profile_id"], c["journey"], c["step"], c["action"], c["at"], c["caused_by"])
                     for c in fx.changes if c.get("type") == "journey")
        sends.extend(t["trigger_id"] for _, t in fx.triggers)

    def tick(wm: int) -> None:
        for pid in sorted(part.profiles):
            collect(recheck(pid, part, Env(wm, CATALOG, event_time=True, journeys=BOOK), f"time:{wm}",
                            cfg=CFG))

    for i, (user, e) in enumerate(stream):
        if ticks[i] is not None:
            tick(ticks[i])
        enc = encoded(e, user)
        if e["name"] == "link":
            enc["ids"] = [*enc["ids"], ("email", "b@example.com")]
        queue = [(routing_key(enc["ids"]), event_message(enc))]
        while queue:
            key, msg = queue.pop(0)
            offset += 1
            fx = handle(key, msg, part, CFG, (0, offset), Env(None, CATALOG, event_time=True, journeys=BOOK))
            collect(fx)
            queue += fx.send
    tick(end)
    return steps, sends


@settings(max_examples=80, deadline=None)
@example(a=[("Signed Up", 0, "free")], b=[("Signed Up", 0, "free")], link_at=5 * DAY,
         where=[None, None, 1.0] + [None] * 27, after=0)  # b's wait times out at the link's instant
@given(history_st, history_st, st.integers(0, 30 * DAY),
       st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=30, max_size=30), st.integers(0, 20 * DAY))
def test_merges_do_not_depend_on_when_ticks_came(a: list[Any], b: list[Any], link_at: int,
                                                 where: list[float | None], after: int) -> None:
    """Two customers in their own steps merge; ticks before any event, up to its time, change
    no step and no trigger id (the deadlines either side had not reached fire before the merge)."""
    link = {"name": "link", "ts": T0 + link_at, "mid": "link", "traits": {}, "props": {}}
    stream = sorted([*(("a", e) for e in make_events(a, "a")), *(("b", e) for e in make_events(b, "b")),
                     ("a", link)], key=lambda x: (x[1]["ts"], x[1]["mid"]))
    times = [e["ts"] for _, e in stream]
    before = [T0, *times[:-1]]
    ticks = [None if w is None else int(before[i] + w * (times[i] - before[i])) for i, w in enumerate(where)
             if i < len(stream)]
    end = times[-1] + after
    def per_customer(run: tuple[list[Any], list[Any]]) -> tuple[dict[str, list[Any]], list[str]]:
        steps: dict[str, list[Any]] = {}
        for s in run[0]:  # profiles are independent: only each one's own order matters
            steps.setdefault(s[0], []).append(s[1:])
        return steps, sorted(run[1])

    quiet = run_people(stream, end, [None] * len(stream))
    busy = run_people(stream, end, ticks)
    assert per_customer(busy) == per_customer(quiet)
    assert any(s[3] == "entered" for s in quiet[0]) or not any(e["name"] == "Signed Up" for _, e in stream)


@settings(max_examples=150, deadline=None)
@given(history_st, history_st, st.integers(0, 25 * DAY), st.integers(0, 20 * DAY))
def test_merges_match_the_simulation(a: list[Any], b: list[Any], link_at: int, after: int) -> None:
    """Two customers in their own steps become one at a link event: the engine (identity
    protocol, merge, catch-up of both sides) against the simulated merge rule."""
    from processors.identity.partitioning import mint_profile_id

    events_a = make_events([("Signed Up", 0, "free"), *a], "a")
    events_b = make_events([("Signed Up", 0, "free"), *b], "b")
    link = {"name": "link", "ts": T0 + link_at, "mid": "link", "traits": {}, "props": {}}
    stream = sorted([*(("a", e) for e in events_a), *(("b", e) for e in events_b), ("a", link)],
                    key=lambda x: (x[1]["ts"], x[1]["mid"]))
    end = stream[-1][1]["ts"] + after
    steps, sends = run_people(stream, end, [None] * len(stream))

    key = (link["ts"], "link")
    sim_a, sim_b = Sim(SPEC), Sim(SPEC)
    sim_a.run([e for e in events_a if (e["ts"], e["mid"]) < key], T0)
    sim_b.run([e for e in events_b if (e["ts"], e["mid"]) < key], T0)
    sim_a.run([link], T0)  # the link is an event of a's
    sim_b.catch_up(link["ts"])  # b's deadlines up to the merge fire on their own
    pid_a, pid_b = mint_profile_id("user_id:a", 1), mint_profile_id("user_id:b", 1)
    survivor, loser = sorted((pid_a, pid_b))
    one = merged_sim(sim_a, sim_b)
    one.moment(link["ts"], f"merge:{loser}", None, False)
    one.run([e for _, e in stream if (e["ts"], e["mid"]) > key], end)

    mine = sorted(s[1:] for s in steps)
    assert mine == sorted(one.steps)
    assert len(sends) == len(one.sends) and len(set(sends)) == len(sends)


def test_a_branch_can_read_the_event_of_its_instant() -> None:
    """`where` on a branch reads the event that caused the step; at a deadline there is none."""
    spec = yaml.safe_load("""
journeys:
  - id: orders
    entry: {event: Order Completed}
    reentry: always
    steps:
      - id: big?
        branch:
          - {where: [{field: properties.total, gte: 300}], next: vip}
        default: wait_1d
      - {id: vip, send: {channel: webhook}, next: _end}
      - {id: wait_1d, wait: 1d}
      - id: big_later?
        branch:
          - {where: [{field: properties.total, gte: 0}], next: vip}
""")
    book = jn.Book.build(spec["journeys"], CATALOG)
    events = make_events([("Big Order", 0, "free"), ("Order Completed", 2 * DAY, "free")])
    steps, _, _ = engine(events, T0 + 5 * DAY, book=book)
    branched = [(s[1], s[3] - T0) for s in steps if s[2] == "branched"]
    # the big order goes to vip; the small one waits, and a day later (no event) falls through
    assert branched == [("big?", 0), ("big?", 2 * DAY), ("big_later?", 3 * DAY)]
    assert [s[1] for s in steps if s[2] == "sent"] == ["vip"]
    assert steps[-1][1:3] == ("big_later?", "completed")


def test_positions_of_a_deleted_journey_wait_for_it_to_come_back() -> None:
    _, _, part = engine(make_events([("Signed Up", 0, "free")]), T0 + HOUR)
    pid = next(iter(part.profiles))
    without = jn.Book.build([j for j in SPEC["journeys"] if j["id"] == "loyalty"], CATALOG)
    fx = recheck(pid, part, Env(T0 + DAY, CATALOG, event_time=True, journeys=without), "t", cfg=CFG)
    assert [c for c in fx.changes if c.get("type") == "journey"] == []
    assert part.profiles[pid]["journeys"]["onboarding"]["step"] == "wait_2d"
    # back before the wait would have ended: it ends on time
    fx = recheck(pid, part, Env(T0 + 3 * DAY, CATALOG, event_time=True, journeys=BOOK), "t", cfg=CFG)
    assert [(c["step"], c["action"], c["at"]) for c in fx.changes if c.get("type") == "journey"][:2] == [
        ("wait_2d", "resumed", T0 + 2 * DAY), ("opened?", "branched", T0 + 2 * DAY)]


def test_erasure_takes_positions_and_history_with_the_profile() -> None:
    _, _, part = engine(make_events([("Signed Up", 0, "free")]), T0 + HOUR)
    pid = next(iter(part.profiles))
    assert part.profiles[pid]["journeys"]["onboarding"]["hist"]
    counts: Counter[tuple[str, str, str]] = Counter()
    queue: list[Any] = [("user_id:u1", {"k": "P", "op": "erase", "rid": "r1"})]
    while queue:
        key, msg = queue.pop(0)
        fx = handle(key, msg, part, CFG, None, Env(T0 + HOUR, CATALOG, event_time=True, journeys=BOOK))
        counts.update(fx.journey_counts)
        queue += fx.send
    assert pid not in part.profiles
    assert "onboarding" not in orjson.dumps(part.profiles).decode()
    assert +Counter({k: -n for k, n in counts.items()}) == Counter({("onboarding", "", "active"): 1,
                                                                   ("onboarding", "wait_2d", "waiting"): 1})
