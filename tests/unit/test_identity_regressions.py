"""Schedules of the identity protocol found to lose or misplace something, replayed step by step.

Each test drives handle() by hand on one store (every key of every partition) and delivers
the records in a chosen order, the order a real cluster produced or may produce."""

from __future__ import annotations

from typing import Any

import orjson

from processors.identity.graph import IdentityConfig, is_redirect
from processors.identity.quarantine import QuarantineConfig
from processors.ingest import events as ev
from processors.protocol import handle
from tests.unit.test_identity_protocol import Partition

Msg = tuple[str, dict[str, Any]]


class Wire:
    """A hand-driven network: records wait in `pending` until delivered by index or kind."""

    def __init__(self, cfg: IdentityConfig) -> None:
        self.cfg, self.store, self.pending, self.offset = cfg, Partition(), list[Msg](), 0

    def deliver(self, key: str, msg: dict[str, Any]) -> None:
        self.offset += 1
        fx = handle(key, orjson.loads(orjson.dumps(msg)), self.store, self.cfg, (0, self.offset))
        assert not fx.dead, fx.dead
        self.pending.extend(fx.send)

    def take(self, key: str, kind: str) -> None:
        """Deliver the first pending record of `kind` addressed to `key`."""
        i = next(i for i, (k, m) in enumerate(self.pending) if k == key and m["k"] == kind)
        self.deliver(*self.pending.pop(i))

    def take_all(self, key: str, kind: str) -> None:
        """Deliver every pending record of `kind` addressed to `key` (none: nothing)."""
        for key_, msg in [(k, m) for k, m in self.pending if k == key and m["k"] == kind]:
            self.pending.remove((key_, msg))
            self.deliver(key_, msg)

    def drain(self) -> None:
        for _ in range(10_000):
            if not self.pending:
                return
            self.deliver(*self.pending.pop(0))
        raise AssertionError("did not quiesce")


def event(mid: str, **ids: str) -> dict[str, Any]:
    raw = {"type": "track", "event": "Seen", "messageId": mid, "timestamp": "2024-01-01T00:00:00Z",
           "userId": ids.get("user_id"), "anonymousId": ids.get("anonymous_id")}
    tp = ev.validate(orjson.dumps({k: v for k, v in raw.items() if v is not None}), record_ts_ms=0)
    assert isinstance(tp, ev.Touchpoint)
    return orjson.loads(ev.encode(tp))  # type: ignore[no-any-return]



def u(i: int) -> tuple[str, str]:
    return ("user_id", f"u{i}")


def e(i: int) -> tuple[str, str]:
    return ("email", f"e{i}@x.io")


def a(i: int) -> tuple[str, str]:
    return ("anonymous_id", f"a{i}")

def with_profiles(people: dict[str, dict[str, str]], holders: dict[str, str]) -> Wire:
    """One store (user_id limit 1, no over-merge guard) holding `people`' profiles (one event
    each, their links already settled: identifier key → holder)."""
    cfg = IdentityConfig(partitions=1, limits={"user_id": 1}, quarantine=QuarantineConfig(enabled=False))
    w = Wire(cfg)
    for pid, ids in people.items():
        w.deliver(pid, {"k": "A", "ev": event(f"m-{pid}", **ids), "known": [], "via": []})
    w.pending.clear()
    for key, pid in holders.items():
        w.store.set_identity(key, pid)
    return w

def test_event_through_two_redirects_whose_first_hop_merged_is_not_sent_back() -> None:
    """p3 froze toward p2, p2 toward p1, p1 toward p0. p0 refused p1 (one user_id each) and
    p1 came back; p3's merge, forwarded through p2, landed in p1. An event of p3 that came the
    same way (via p3, p2) waited in p1 for p2's merge, which p1 refused too: it used to be sent
    back to p2 and wait there forever for p3's merge (p3 was p1's by then): an event lost."""
    cfg = IdentityConfig(partitions=1, limits={"user_id": 1}, quarantine=QuarantineConfig(enabled=False))
    w = Wire(cfg)
    people = {"p0": {"user_id": "u0"}, "p1": {"user_id": "u1"}, "p2": {"user_id": "u2"},
              "p3": {"anonymous_id": "a3"}}
    for pid, ids in people.items():
        w.deliver(pid, {"k": "A", "ev": event(f"m-{pid}", **ids), "known": [], "via": []})
    w.pending.clear()
    for pid, ids in people.items():
        for kind, value in ids.items():
            w.store.set_identity(f"{kind}:{value}", pid)
    w.deliver("p2", {"k": "F", "s": "p1"})
    w.deliver("p1", {"k": "F", "s": "p0"})
    w.deliver("p3", {"k": "F", "s": "p2"})
    w.deliver("p3", {"k": "A", "ev": event("m-late", anonymous_id="a3"), "known": [], "via": []})
    w.take("p2", "A")  # the event: p3 → p2 → p1, behind the Ms
    w.take("p1", "M")  # p2's M reaches p1, frozen: on to p0
    w.take("p0", "M")  # p1's M: refused at p0 (two user_ids)
    w.take("p1", "X")  # p1 restored
    w.take("p2", "M")  # p3's M at p2, frozen: on to p1
    w.take("p1", "M")  # p3 merged into p1
    w.take("p1", "A")  # the event (via p3, p2): p3 is p1's now
    w.drain()
    live = {pid: p for pid, p in w.store.profiles.items() if not is_redirect(p)}
    seen = {m: pid for pid, p in live.items() for m in p["_seen"]}
    assert seen.get("m-late") == seen.get("m-p3") == "p1", (seen, live)
    assert not any(p.get("_parked") for p in live.values())


def test_limits_example_that_lost_an_event() -> None:
    """The CI failure's kind (merges=2, identifiers=4, no replays, 8 partitions): found by a
    generator with many repeats of one user; an event of u1's side was lost before the fix."""
    from tests.unit.test_identity_protocol import assert_limits_and_links
    from tests.unit.test_limits import limited

    u0, u1 = [("user_id", "u0")], ("user_id", "u1")
    e0, e1 = ("email", "e0@x.io"), ("email", "e1@x.io")
    a = [("anonymous_id", f"a{i}") for i in range(5)]
    idents = [u0, [e1, a[0]], [a[3]], u0, [a[0], e0], u0, [u0[0], a[4], e0], u0, u0, u0, u0,
              [u1, a[1], e1], u0, [e0, a[2], u0[0]], [a[1]], [u1, a[1]], u0, [u1, a[4]], u0, [e0], u0,
              [u1, e1]]
    cluster = limited(idents, 8, 924072006, merges=2, identifiers=4)
    assert_limits_and_links(cluster, idents, {})


def test_event_waiting_for_a_merge_that_landed_further_on_follows_it() -> None:
    """Limits with crash replays (8 partitions, hypothesis seed 2 of the limits property):
    m10 (a2) was addressed to a profile F that froze toward E while E was frozen itself; F's
    merge went on through E's redirect and landed two profiles further, E was restored, and
    m10 waited in E for a merge that would never come there. The survivor now tells the
    profiles the merge passed through (V), and what waits there for F follows it."""
    from tests.unit.test_identity_protocol import assert_limits_and_links, play

    u = [("user_id", f"u{i}") for i in range(5)]
    e = [("email", f"e{i}@x.io") for i in range(6)]
    a = [("anonymous_id", f"a{i}") for i in range(10)]
    idents = [[u[0]], [e[1]], [a[4]], [a[2], e[4]], [a[6], u[1], e[5]], [u[4], a[8], e[2]], [a[9]],
              [u[1], a[1]], [a[2]], [a[5]], [a[2]], [e[0], a[9], u[2]], [u[0]], [u[3]], [e[2]], [a[7], u[3]],
              [a[6], e[5], u[3]], [u[0]], [e[2], a[4]], [a[1]], [a[2], u[0], e[0]], [a[6], u[0]], [u[0]],
              [e[2], a[6]], [e[0], a[0], u[2]], [a[6], e[1]], [e[3], a[2]], [e[3], u[2], a[6]], [a[1]],
              [a[0], u[1], e[2]]]
    limits = {"user_id": 1, "email": 2}
    cluster = play(idents, 8, 236320, replay=0.3, limits=limits)
    assert_limits_and_links(cluster, idents, limits)


def test_a_duplicate_merge_that_took_another_way_is_not_absorbed_twice() -> None:
    """Limits with crash replays (8 partitions, the example left open by issue 14's first round):
    a loser's freeze was delivered twice; one merge went through a redirect and landed in the
    profile beyond it, which later refused the redirecting profile; the duplicate, arriving there
    after the refusal, was bounced back to the (restored) redirecting profile, which absorbed the
    same loser again: one event counted on two profiles. A merge of a loser already absorbed is
    now handled where it was absorbed, as the replay it is."""
    from tests.unit.test_identity_protocol import assert_limits_and_links, play

    idents = [[u(0)], [e(1)], [a(4)], [u(0), e(5)], [a(6), u(1), e(5)], [u(4), a(8), e(2)], [a(9)],
              [u(1), a(1)], [u(0)], [u(0)], [u(0)], [e(0), a(9), u(2)], [u(3), e(1)], [u(3)], [e(2)],
              [a(7), u(3)], [a(6), e(5), u(2)], [u(0)], [u(1), e(4)], [a(3), e(5)], [a(7)], [e(5)],
              [a(7), e(3)], [e(4), u(4)], [u(4), a(4)]]
    limits = {"user_id": 1, "email": 2}
    cluster = play(idents, 8, 244, replay=0.3, limits=limits)
    assert_limits_and_links(cluster, idents, limits)


def test_a_claim_that_reached_its_claimant_is_not_passed_on_to_the_claimants_survivor() -> None:
    """Limits with crash replays (1 partition, seed 16524 of the limits property): p2 claimed a3,
    held by p3, twice (a replayed L: two Fs). The first froze p3 toward p2, which absorbed it.
    The second followed p3's redirect to p2, frozen by then toward p1, and p2's on to p1, which
    took it for a claim between itself and p2 over a3 and sent p2 an F. p1 refused p2 (one
    user_id each), so at the restored p2 that F met a known refusal and told p2 to drop a3 (U),
    though a3 was p2's own. The U reached p2 frozen again (toward p0) and came off the snapshot
    without the check a live profile sends (C); p0 refused p2, which came back without a3 while
    a3 pointed at it. An F that comes through the redirect of the profile it asks for has
    arrived: it now stops there, as it does at that profile when it is live."""
    w = with_profiles({"p0": {"user_id": "u0"}, "p1": {"user_id": "u1"},
                       "p2": {"user_id": "u2", "anonymous_id": "a3"}, "p3": {"anonymous_id": "a3"}},
                      {"user_id:u0": "p0", "user_id:u1": "p1", "user_id:u2": "p2", "anonymous_id:a3": "p3"})
    w.deliver("anonymous_id:a3", {"k": "L", "pid": "p2"})  # p2 claims a3: F to p3
    w.deliver("anonymous_id:a3", {"k": "L", "pid": "p2"})  # redelivered: a second F
    w.take("p3", "F")  # p3 freezes toward p2
    w.take("p2", "M")  # p2 absorbs p3 (a3's repoint waits)
    w.deliver("p2", {"k": "F", "s": "p1"})  # p2 freezes toward p1 (over another link)
    w.take("p3", "F")  # the duplicate F: through p3's redirect to p2 ...
    w.take("p2", "F")  # ... and through p2's to p1
    w.take("p1", "F")  # p1 paired itself with p2 over a3 (an F to p2)
    w.take("p1", "M")  # refused: two user_ids
    w.take("p2", "X")  # p2 restored
    w.take_all("p2", "F")  # that F: a known refusal, p2 told to drop a3 (U)
    w.deliver("p2", {"k": "F", "s": "p0"})  # p2 freezes toward p0 before the U arrives
    w.take_all("p2", "U")  # dropped a3 from the frozen snapshot
    w.take("p0", "M")  # refused too: p2 restored from that snapshot
    w.drain()
    live = {pid: p for pid, p in w.store.profiles.items() if not is_redirect(p)}
    for key, pid in w.store.identities.items():
        kind, value = key.split(":", 1)
        assert value in live[pid]["identities"].get(kind, []), (key, pid, live[pid]["identities"])
    assert w.store.identities["anonymous_id:a3"] == "p2"




def test_a_claim_settled_by_a_merge_that_landed_elsewhere_is_verified_again() -> None:
    """Limits with crash replays (1 partition, seed 9137 of a stress run of the limits property):
    p2 claimed a9, held by p3, and p3 froze toward p2. p2 was frozen toward p1: p3's merge went
    on to p1, which had refused p2 (one user_id each) and frozen toward p0 since, and on to p0.
    Restored, p2 verified its links; its claim on a9 (still p3's) reached p2 again through
    p3's redirect, where it stops: p3 was to merge into p2. Then p0 absorbed p3 and a9 moved
    to p0, while p2 still listed it. The survivor tells the profiles a merge passed through
    where it landed (V); a live one now verifies its links again, and p2 drops a9."""
    w = with_profiles({"p0": {"user_id": "u0"}, "p1": {"user_id": "u1"},
                       "p2": {"user_id": "u2", "anonymous_id": "a9"}, "p3": {"anonymous_id": "a9"}},
                      {"user_id:u0": "p0", "user_id:u1": "p1", "user_id:u2": "p2", "anonymous_id:a9": "p3"})
    w.deliver("p2", {"k": "F", "s": "p1"})  # p2 freezes toward p1 (over another link)
    w.deliver("anonymous_id:a9", {"k": "L", "pid": "p2"})  # p2's claim on a9: an F to p3
    w.take("p3", "F")  # p3 freezes toward p2
    w.take("p2", "M")  # p3's merge, through p2's redirect, on to p1 (behind p2's own)
    w.take("p1", "M")  # p2's merge: refused (two user_ids)
    w.deliver("p1", {"k": "F", "s": "p0"})  # p1 freezes toward p0
    w.take("p1", "M")  # p3's merge, through p1's redirect, on to p0 (behind p1's own)
    w.take("p2", "X")  # p2 restored; it verifies its links
    w.take("anonymous_id:a9", "L")  # a9 is still p3's: an F to p3 ...
    w.take("p3", "F")  # ... through p3's redirect to p2 ...
    w.take("p2", "F")  # ... where it stops
    i = next(i for i, (k, m) in enumerate(w.pending) if k == "p0" and m["snap"]["id"] == "p3")
    w.deliver(*w.pending.pop(i))  # p0 absorbs p3: a9 repointed to p0, p2 told where p3 landed (V)
    w.drain()
    live = {pid: p for pid, p in w.store.profiles.items() if not is_redirect(p)}
    assert w.store.identities["anonymous_id:a9"] == "p0"
    for key, pid in w.store.identities.items():
        kind, value = key.split(":", 1)
        assert value in live[pid]["identities"].get(kind, []), (key, pid, live[pid]["identities"])
    for pid, profile in live.items():
        for kind, values in profile["identities"].items():
            for value in values:
                assert w.store.identities.get(f"{kind}:{value}") == pid, (kind, value, pid)


def forwarded_past_a_refusal() -> Wire:
    """Four profiles of one user_id each: p3 froze toward p2 while p2 was frozen toward p1;
    p3's merge went on to p1, which had refused p2 and frozen toward p0 since, and on to p0;
    p2 is restored. p0 has yet to decide on p3 (it will refuse: two user_ids)."""
    w = with_profiles({f"p{i}": {"user_id": f"u{i}"} for i in range(4)},
                      {f"user_id:u{i}": f"p{i}" for i in range(4)})
    w.deliver("p2", {"k": "F", "s": "p1"})  # p2 freezes toward p1 (over another link)
    w.deliver("p3", {"k": "F", "s": "p2"})  # p3 toward p2
    w.take("p2", "M")  # p3's merge, through p2's redirect, on to p1 (behind p2's own)
    w.take("p1", "M")  # p2's merge: refused (two user_ids)
    w.deliver("p1", {"k": "F", "s": "p0"})  # p1 freezes toward p0
    w.take("p1", "M")  # p3's merge, through p1's redirect, on to p0 (behind p1's own)
    w.take("p2", "X")  # p2 restored
    return w


def p0_refuses_p3(w: Wire) -> None:
    i = next(i for i, (k, m) in enumerate(w.pending) if k == "p0" and m["snap"]["id"] == "p3")
    w.deliver(*w.pending.pop(i))  # X to p3; V to p2 and p1, the profiles the merge came through


def late_event_to_p3(w: Wire) -> None:
    w.deliver("p3", {"k": "A", "ev": event("m-late", user_id="u3"), "known": ["user_id:u3"], "via": []})


def assert_late_event_counted_on_p3(w: Wire) -> None:
    w.drain()
    live = {pid: p for pid, p in w.store.profiles.items() if not is_redirect(p)}
    counted = sorted(m for p in live.values() for m in p["_seen"])
    assert counted == sorted(["m-p0", "m-p1", "m-p2", "m-p3", "m-late"]), counted
    assert "m-late" in live["p3"]["_seen"]
    assert not any(p.get("_parked") for p in live.values())


def test_an_event_waiting_for_a_merge_refused_further_on_goes_back_to_the_loser() -> None:
    """Limits with crash replays (seed 5090 of the seeded limits schedules, 8 partitions; here
    on one store): p2, restored, received an event of p3's through p3's redirect and held it
    for p3's merge, which had gone on through p2's redirect and which p0 then refused: the
    event waited in p2 for ever. A refusal now tells the profiles the merge came through that
    it was refused (V), and what waits there for the loser goes back to it."""
    w = forwarded_past_a_refusal()
    late_event_to_p3(w)
    w.take("p2", "A")  # through p3's redirect: p2 holds it for p3's merge
    p0_refuses_p3(w)
    assert_late_event_counted_on_p3(w)


def test_an_event_that_comes_after_the_news_of_its_merge_follows_it() -> None:
    """Limits with crash replays (seed 2670 of the seeded limits schedules, 1 partition): as
    above, but p3's event reached p2 after p2 was told p3's merge was refused (its way, through
    p2's own redirect and back from a refusal, was longer): it waited in p2 for a merge that
    had come through long before. The profile remembers where each merge it forwarded went
    (`_landed`), and such an event follows at once."""
    w = forwarded_past_a_refusal()
    p0_refuses_p3(w)
    w.take("p2", "V")  # nothing waits in p2 yet
    late_event_to_p3(w)
    w.take("p2", "A")  # through p3's redirect (its X not delivered yet): follows p3's merge back
    assert_late_event_counted_on_p3(w)


def test_a_duplicate_merge_that_comes_back_after_landing_elsewhere_is_not_absorbed_again() -> None:
    """Limits with crash replays (3 partitions; found by the limits property in a clean clone's
    `make test`): a loser's freeze was delivered twice. One M went on through its survivor's
    redirect and landed two profiles further; the survivor, restored, was told so (V). The
    duplicate M, bounced back from a refusal, then reached the survivor, which absorbed the
    loser a second time: m12 counted on two profiles. A profile that was told where a loser's
    merge went now sends a duplicate there (a replay where it landed)."""
    from tests.unit.test_identity_protocol import assert_limits_and_links, play

    idents = [[e(1)], [u(4), a(8), e(0)], [a(1), e(4)], [e(1)], [u(0), a(2)], [e(4)], [e(3)], [e(0)],
              [e(0), a(4), u(0)], [u(0), a(3)], [a(1), e(2), u(1)], [u(0)], [a(1)], [e(1), a(9)],
              [e(5), a(4)], [e(5)], [a(4)], [u(0), a(5)], [e(4), u(4), a(5)], [a(0)], [u(5)], [u(0)],
              [u(3)], [e(1), a(7)], [a(8), u(3), e(2)], [u(3), a(5)], [a(2), u(1)], [e(2), u(1)],
              [e(1), a(6)]]
    limits = {"user_id": 1, "email": 2}
    cluster = play(idents, 3, 1761, replay=0.3, limits=limits)
    assert_limits_and_links(cluster, idents, limits)


def test_events_sent_back_when_a_merge_lands_are_sent_again_when_it_is_replayed() -> None:
    """Limits with crash replays (8 partitions, seed 53120 of the seeded limits schedules): a
    profile held m32, which came through the redirects of two others, for the first one's
    merge; then it absorbed the second, which had refused the first, and, releasing what it
    held, sent m32 back toward the first. The worker crashed before those sends left; the
    replayed merge re-sent its repoints and links but not that bounce, and m32 was lost. A
    merge now keeps what it sent back (`_bounced`), as a refusal does, and its replay sends
    it again."""
    from tests.unit.test_identity_protocol import assert_limits_and_links, play, seeded_schedule

    idents, partitions = seeded_schedule(53120)
    limits = {"user_id": 1, "email": 2}
    assert_limits_and_links(play(idents, partitions, 53120, replay=0.3, limits=limits), idents, limits)
