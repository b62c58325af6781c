"""The identity protocol, run on simulated partitions with adversarial scheduling.

Each partition is a FIFO queue plus its slice of the two tables; a scheduler
picks which partition moves next at random, replays messages (at-least-once),
and drops the sends of a replayed first attempt (a crash between the state
write and the flush). Whatever the schedule, the final profiles must equal the
connected components of the identifier graph, with every event counted once.
"""

from __future__ import annotations

import copy
import itertools
import random
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.identity.graph import Env, IdentityConfig, event_message, is_redirect, runs_inline
from processors.identity.partitioning import partition_for
from processors.identity.quarantine import QuarantineConfig
from processors.ingest import events as ev
from processors.ingest.identifiers import IdentityRules, key_of, routing_key
from processors.protocol import handle
from tests.graph import components as graph_components


class Partition:
    def __init__(self) -> None:
        self.identities: dict[str, str] = {}
        self.profiles: dict[str, Any] = {}
        self.requests: dict[str, Any] = {}
        self.offset = 0

    # Store protocol
    def identity(self, key: str) -> str | None:
        return self.identities.get(key)

    def set_identity(self, key: str, pid: str) -> None:
        self.identities[key] = pid

    def profile(self, pid: str) -> Any:
        p = self.profiles.get(pid)
        return copy.deepcopy(p)  # stored bytes in real life: no aliasing

    def set_profile(self, pid: str, profile: Any) -> None:
        self.profiles[pid] = copy.deepcopy(profile)

    def delete_profile(self, pid: str) -> None:
        self.profiles.pop(pid, None)

    def delete_identity(self, key: str) -> None:
        self.identities.pop(key, None)

    def request(self, rid: str) -> Any:
        return copy.deepcopy(self.requests.get(rid))

    def set_request(self, rid: str, state: Any) -> None:
        if state is None:
            self.requests.pop(rid, None)
        else:
            self.requests[rid] = copy.deepcopy(state)


class Cluster:
    def __init__(self, cfg: IdentityConfig, rng: random.Random, replay: float = 0.0) -> None:
        self.cfg = cfg
        self.rng = rng
        self.replay = replay
        self.parts = [Partition() for _ in range(cfg.partitions)]
        self.queues: list[list[tuple[str, dict[str, Any]]]] = [[] for _ in range(cfg.partitions)]
        self.changes: list[dict[str, Any]] = []
        self.results: list[dict[str, Any]] = []
        self.dead: list[tuple[str, dict[str, Any]]] = []  # (reason, record): the DLQ
        self.env: Env | None = None

    def send(self, key: str, msg: dict[str, Any]) -> None:
        # through the wire: the message is bytes, the receiver gets a copy at the next offset
        p = partition_for(key, self.cfg.partitions)
        part = self.parts[p]
        part.offset += 1
        self.queues[p].append((key, {**orjson.loads(orjson.dumps(msg)), "_offset": part.offset}))

    def process(self, p: int, key: str, msg: dict[str, Any], deliver: bool = True) -> None:
        msg = dict(msg)
        part = self.parts[p]
        source = (p, msg.pop("_offset"))
        stack = [(key, msg)]
        while stack:
            k, m = stack.pop(0)
            fx = handle(k, m, part, self.cfg, source, self.env)
            if deliver:
                self.changes.extend(fx.changes)
                self.results.extend(fx.results)
                self.dead.extend(fx.dead)
            for out_key, out in fx.send:
                if runs_inline(m, out_key, out, p, self.cfg):
                    stack.append((out_key, orjson.loads(orjson.dumps(out))))
                elif deliver:
                    self.send(out_key, out)

    def step(self) -> bool:
        ready = [i for i, q in enumerate(self.queues) if q]
        if not ready:
            return False
        p = self.rng.choice(ready)
        key, msg = self.queues[p][0]
        if self.rng.random() < self.replay:
            # first attempt: state written, sends lost (crash before flush); then redelivered
            self.process(p, key, copy.deepcopy(msg), deliver=False)
        self.queues[p].pop(0)
        self.process(p, key, msg)
        if self.rng.random() < self.replay / 2:
            self.process(p, key, copy.deepcopy(msg))  # plain duplicate delivery
        return True

    def run(self) -> None:
        for _ in range(100_000):
            if not self.step():
                return
        raise AssertionError("protocol did not quiesce")

    def live_profiles(self) -> dict[str, Any]:
        out = {}
        for part in self.parts:
            for pid, prof in part.profiles.items():
                if not is_redirect(prof) and prof["kind"] == "person":
                    out[pid] = prof
        return out

    def resolve(self, key: str) -> str | None:
        pid = self.parts[partition_for(key, self.cfg.partitions)].identities.get(key)
        for _ in range(100):
            if pid is None:
                return None
            prof = self.parts[partition_for(pid, self.cfg.partitions)].profiles.get(pid)
            if prof is None or not is_redirect(prof):
                return pid
            pid = prof["redirect"]
        raise AssertionError("redirect loop")


NO_GUARD = QuarantineConfig(enabled=False)
"""Connected components are the answer only without the over-merge guard (test_quarantine.py)."""
REPLAY_WITH_LIMITS = 0.3
"""Limits under crash replays and lost sends: with 30% replays and 3,000 examples hypothesis seed 2
of seeds 1-3 failed before issue 14's fixes (an event lost waiting for a merge that landed further
on; an event counted twice when a duplicate merge took another way: both in
tests/unit/test_identity_regressions.py); after them seeds 1-7 pass."""

POOL = ([("user_id", f"u{i}") for i in range(6)] + [("email", f"e{i}@x.io") for i in range(6)]
        + [("anonymous_id", f"a{i}") for i in range(10)])


def raw_event(n: int, idents: list[tuple[str, str]]) -> bytes:
    msg: dict[str, Any] = {"type": "track", "event": "Seen", "messageId": f"m{n}",
                           "timestamp": f"2024-01-01T00:00:{n % 60:02d}Z", "traits": {}}
    ctx_traits: dict[str, Any] = {}
    for kind, value in idents:
        if kind == "user_id":
            msg["userId"] = value
        elif kind == "anonymous_id":
            msg["anonymousId"] = value
        else:
            ctx_traits["email"] = value
    if ctx_traits:
        msg["context"] = {"traits": ctx_traits}
    return orjson.dumps(msg)


def components(events: list[list[tuple[str, str]]]) -> list[set[str]]:
    return graph_components([[key_of(i) for i in ids] for ids in events])


def event_lists() -> st.SearchStrategy[list[list[tuple[str, str]]]]:
    one = st.lists(st.sampled_from(POOL), min_size=1, max_size=3, unique_by=lambda i: i[0])
    return st.lists(one, min_size=1, max_size=40)


def play(idents: list[list[tuple[str, str]]], partitions: int, seed: int,
         replay: float = 0.0, limits: dict[str, int] | None = None,
         guard: QuarantineConfig = NO_GUARD) -> Cluster:
    cfg = IdentityConfig(partitions=partitions, limits=limits or {}, quarantine=guard)
    rng = random.Random(seed)
    cluster = Cluster(cfg, rng, replay)
    order = list(range(len(idents)))
    rng.shuffle(order)  # arrival order independent of the generation order
    for n in order:
        tp = ev.validate(raw_event(n, idents[n]), record_ts_ms=0)
        assert isinstance(tp, ev.Touchpoint), tp
        cluster.send(routing_key(tp.identifiers), event_message(orjson.loads(ev.encode(tp))))
        # let some work happen between arrivals, as on a live stream
        for _ in range(rng.randrange(0, 4)):
            cluster.step()
    cluster.run()
    return cluster


def assert_components(cluster: Cluster, idents: list[list[tuple[str, str]]]) -> None:
    comps = components(idents)
    live = cluster.live_profiles()
    assert len(live) == len(comps), (len(live), comps)
    for comp in comps:
        owners = {cluster.resolve(k) for k in comp}
        assert len(owners) == 1, (comp, owners)
        pid = owners.pop()
        assert pid in live
        held = {key_of((t, v)) for t, vs in live[pid]["identities"].items() for v in vs}
        assert held == comp
        expected = sum(1 for ids in idents if key_of(ids[0]) in comp)
        assert live[pid]["event_count"] == expected
        assert len(live[pid]["_seen"]) == expected


@settings(max_examples=150, deadline=None)
@given(idents=event_lists(), partitions=st.sampled_from([1, 3, 8]), seed=st.integers(0, 2**32))
def test_profiles_equal_connected_components(idents: list[list[tuple[str, str]]], partitions: int,
                                             seed: int) -> None:
    assert_components(play(idents, partitions, seed), idents)


@settings(max_examples=150, deadline=None)
@given(idents=event_lists(), partitions=st.sampled_from([3, 8]), seed=st.integers(0, 2**32))
def test_converges_under_replays_and_lost_sends(idents: list[list[tuple[str, str]]], partitions: int,
                                                seed: int) -> None:
    assert_components(play(idents, partitions, seed, replay=0.3), idents)


def test_merge_chain_across_three_partitions_converges() -> None:
    a, b, c = ("user_id", "ua"), ("email", "b@x.io"), ("anonymous_id", "ac")
    idents = [[a], [b], [c], [a, b], [b, c], [a, c]]
    for seed in range(50):
        cluster = play(idents, 8, seed)
        assert_components(cluster, idents)
        merged = [ch for ch in cluster.changes if ch["type"] == "merged"]
        minted = sum(len(part.profiles) for part in cluster.parts)
        assert len(merged) == minted - 1  # one merged record per absorbed profile, no more


def assert_limits_and_links(cluster: Cluster, idents: list[list[tuple[str, str]]],
                            limits: dict[str, int]) -> None:
    live = cluster.live_profiles()
    for prof in live.values():
        for kind, most in limits.items():
            assert len(prof["identities"].get(kind, [])) <= most, prof["identities"]
    counted = [m for prof in live.values() for m in prof["_seen"]]
    assert sorted(counted) == sorted(f"m{n}" for n in range(len(idents)))
    assert sum(p["event_count"] for p in live.values()) == len(idents)
    # an identifier refused by a limit is linked nowhere; any other resolves to the
    # live profile that lists it, and every listed identifier resolves to its profile
    for ids in idents:
        for ident in ids:
            pid = cluster.resolve(key_of(ident))
            if pid is not None:
                assert pid in live
                assert ident[1] in live[pid]["identities"].get(ident[0], []), (ident, live[pid])
    for pid, prof in live.items():
        for kind, values in prof["identities"].items():
            for value in values:
                assert cluster.resolve(key_of((kind, value))) == pid, (kind, value, pid)
        assert not prof.get("_parked"), prof["_parked"]  # no event left waiting
    rules = IdentityRules()
    primaries = [min(ids, key=lambda i: rules.rank(i[0])) for ids in idents]
    assert all(cluster.resolve(key_of(p)) is not None for p in primaries)


# Before the fix (45074f1) this property failed on about 2.4% of random schedules with limits
# (~3% with replays); hypothesis' examples are small, so 150 examples found it on 0 of 10 seeds,
# 1,500 on 6 of 10 and 3,000 on 5 of 5: keep 3,000.
@settings(max_examples=3000, deadline=None)
@given(idents=event_lists(), partitions=st.sampled_from([1, 3, 8]), seed=st.integers(0, 2**32))
def test_limits_hold_and_every_event_counts_once(idents: list[list[tuple[str, str]]],
                                                  partitions: int, seed: int) -> None:
    limits = {"user_id": 1, "email": 2}
    cluster = play(idents, partitions, seed, replay=REPLAY_WITH_LIMITS, limits=limits)
    assert_limits_and_links(cluster, idents, limits)


def seeded_schedule(seed: int) -> tuple[list[list[tuple[str, str]]], int]:
    """Events and a partition count drawn from `seed` alone, as event_lists() draws them."""
    rng = random.Random(seed)
    idents = []
    for _ in range(rng.randint(1, 40)):
        one: dict[str, tuple[str, str]] = {}
        for _ in range(rng.randint(1, 3)):
            ident = rng.choice(POOL)
            one.setdefault(ident[0], ident)
        idents.append(list(one.values()))
    return idents, rng.choice([1, 3, 8])


@pytest.mark.slow
@pytest.mark.timeout(1200)  # 194 s on a quiet hour of our 2-core machine, over 300 s on a slow one
def test_limits_hold_on_ten_thousand_seeded_schedules() -> None:
    """The limits property on seeds 1,000 to 10,999 (make test-slow; 3 to 6 minutes).
    Hypothesis shrinks towards small examples; failures of about 1 in 3,000 larger schedules
    hid from it: seeds 2670, 5090 and 9137 failed here before a profile that forwarded a merge
    was told where it went when it was refused too, kept that, and verified its links again
    (tests/unit/test_identity_regressions.py has each, step by step)."""
    limits = {"user_id": 1, "email": 2}
    failed = []
    for seed in range(1_000, 11_000):
        idents, partitions = seeded_schedule(seed)
        try:
            assert_limits_and_links(play(idents, partitions, seed, replay=REPLAY_WITH_LIMITS,
                                         limits=limits), idents, limits)
        except AssertionError:
            failed.append(seed)
    assert not failed, failed


def test_freeze_forwarded_through_a_merge_later_refused() -> None:
    """The known bug (3 partitions), as hypothesis shrank it: u1's profile froze toward u0's
    (linked by e2); its second link (a0) was forwarded through that redirect and dropped as
    'already merging'; the merge was refused (one user_id each), and a0 stayed listed on u1's
    profile while resolving to u0's. Restored and refusing profiles now re-verify their links."""
    idents = [[("user_id", "u0")], [("email", "e2@x.io"), ("anonymous_id", "a0"), ("user_id", "u1")],
              [("user_id", "u0")], [("user_id", "u0"), ("anonymous_id", "a0"), ("email", "e2@x.io")],
              [("user_id", "u2"), ("email", "e0@x.io"), ("anonymous_id", "a0")], [("user_id", "u0")]]
    limits = {"user_id": 1, "email": 2}
    cluster = play(idents, 3, 1, limits=limits)
    assert_limits_and_links(cluster, idents, limits)
    assert cluster.resolve("anonymous_id:a0") == cluster.resolve("user_id:u0")
    u1 = cluster.live_profiles()[cluster.resolve("user_id:u1")]
    assert "anonymous_id" not in u1["identities"]


def test_event_that_overtook_its_merge_counts_on_the_profile_it_belongs_to() -> None:
    """An event of a frozen profile reached its survivor before the merge did (the M went
    through a survivor that was frozen itself); the merge was then refused. It used to be
    applied to the survivor anyway; it now waits there and goes back to its own profile."""
    idents = [[("user_id", "u0")], [("email", "e4@x.io"), ("anonymous_id", "a0"), ("user_id", "u1")],
              [("user_id", "u0")], [("user_id", "u0"), ("anonymous_id", "a0"), ("email", "e2@x.io")],
              [("user_id", "u2"), ("email", "e2@x.io")], [("user_id", "u0")], [("user_id", "u0")],
              [("user_id", "u1"), ("email", "e1@x.io")], [("email", "e4@x.io")]]
    limits = {"user_id": 1, "email": 2}
    cluster = play(idents, 3, 10838, limits=limits)
    assert_limits_and_links(cluster, idents, limits)
    u1 = cluster.live_profiles()[cluster.resolve("user_id:u1")]
    assert "m8" in u1["_seen"] and cluster.resolve("email:e4@x.io") == u1["id"]


def test_refused_and_accepted_merge_race() -> None:
    """Hypothesis found this (1 partition, no replays): an event for a refused loser reached,
    through the refusing profile's own merge, a survivor that had not inherited the refusal."""
    u0, e0, e1, a0, a1, u2 = (("user_id", "u0"), ("email", "e0@x.io"), ("email", "e1@x.io"),
                              ("anonymous_id", "a0"), ("anonymous_id", "a1"), ("user_id", "u2"))
    idents = [[u0], [u0], [u0], [u0], [u0], [u0, e1], [e1], [e0], [u0], [u0, a0], [u0, a1], [u2, e0, a0]]
    cluster = play(idents, 1, 12, replay=0.0, limits={"user_id": 1, "email": 2})
    live = cluster.live_profiles()
    for pid, prof in live.items():
        for kind, values in prof["identities"].items():
            for value in values:
                assert cluster.resolve(key_of((kind, value))) == pid, (kind, value, pid)


def test_two_user_ids_are_not_merged_when_limited() -> None:
    idents = [[("user_id", "u1"), ("anonymous_id", "a1")], [("user_id", "u2"), ("anonymous_id", "a1")]]
    for seed in range(30):
        cluster = play(idents, 8, seed, limits={"user_id": 1})
        live = cluster.live_profiles()
        assert len(live) == 2
        owner_a1 = cluster.resolve("anonymous_id:a1")
        assert owner_a1 is not None
        assert live[owner_a1]["identities"]["anonymous_id"] == ["a1"]
        others = [p for pid, p in live.items() if pid != owner_a1]
        assert all("anonymous_id" not in p["identities"] for p in others)


def group_event(n: int, user: str, gid: str, day: int, **traits: Any) -> bytes:
    return orjson.dumps({"type": "group", "messageId": f"g{n}", "userId": user, "groupId": gid,
                         "timestamp": f"2024-02-{day:02d}T00:00:00Z", "traits": traits})


def run_raw(raws: list[bytes], partitions: int = 3, exclusive: bool = False) -> Cluster:
    cfg = IdentityConfig(partitions=partitions, exclusive_memberships=exclusive)
    cluster = Cluster(cfg, random.Random(1))
    for raw in raws:
        tp = ev.validate(raw, record_ts_ms=0)
        assert isinstance(tp, ev.Touchpoint), tp
        cluster.send(routing_key(tp.identifiers), event_message(orjson.loads(ev.encode(tp))))
        cluster.run()
    return cluster


def person(cluster: Cluster, user: str) -> Any:
    pid = cluster.resolve(f"user_id:{user}")
    return cluster.parts[partition_for(pid, cluster.cfg.partitions)].profiles[pid]


def test_group_creates_account_and_membership_and_leaving_keeps_personal_data() -> None:
    cluster = run_raw([
        orjson.dumps({"type": "identify", "messageId": "i1", "userId": "jo",
                      "timestamp": "2024-02-01T00:00:00Z", "traits": {"first_name": "Jo"}}),
        group_event(1, "jo", "acme", 2, name="Acme", plan="enterprise", role="buyer", title="CTO"),
        group_event(2, "ann", "acme", 3, employees=120),
        group_event(3, "jo", "acme", 9, membership_status="left"),
        group_event(4, "jo", "globex", 10, name="Globex", role="admin"),
    ])
    aid = cluster.resolve("group_id:acme")
    account = cluster.parts[partition_for(aid, 3)].profiles[aid]
    assert account["kind"] == "account"
    assert account["traits"] == {"name": "Acme", "plan": "enterprise", "employees": 120}
    jo = person(cluster, "jo")
    assert jo["traits"]["first_name"] == "Jo"  # personal data stays
    acme, globex = sorted(jo["memberships"], key=lambda m: m["group_id"])
    assert acme["account_id"] == aid and acme["role"] == "buyer" and acme["title"] == "CTO"
    assert acme["until"] is not None and acme["since"] < acme["until"]
    assert globex["until"] is None and globex["role"] == "admin"
    assert person(cluster, "ann")["memberships"][0]["account_id"] == aid


def test_exclusive_memberships_close_the_previous_one() -> None:
    cluster = run_raw([group_event(1, "jo", "acme", 2), group_event(2, "jo", "globex", 5)],
                      exclusive=True)
    by_group = {m["group_id"]: m for m in person(cluster, "jo")["memberships"]}
    assert by_group["acme"]["until"] == by_group["globex"]["since"]
    assert by_group["globex"]["until"] is None


def test_alias_links_previous_id_to_user_whatever_the_order() -> None:
    raws = [
        orjson.dumps({"type": "page", "messageId": "p1", "anonymousId": "anon-9",
                      "timestamp": "2024-02-01T00:00:00Z"}),
        orjson.dumps({"type": "alias", "messageId": "al", "previousId": "anon-9", "userId": "u9",
                      "timestamp": "2024-02-02T00:00:00Z"}),
        orjson.dumps({"type": "track", "messageId": "t1", "userId": "u9", "event": "Order Completed",
                      "timestamp": "2024-02-03T00:00:00Z"}),
    ]
    for order in itertools.permutations(raws):
        cluster = run_raw(list(order), partitions=8)
        live = cluster.live_profiles()
        assert len(live) == 1
        (prof,) = live.values()
        assert prof["identities"] == {"anonymous_id": ["anon-9"], "user_id": ["u9"]}
        assert prof["event_count"] == 3


def test_a_record_that_keeps_bouncing_is_dead_lettered_not_circulated() -> None:
    part = Partition()
    part.set_profile("p_b", {"id": "p_b", "redirect": "p_a", "nonce": "n", "snap": {}})
    looping = {"k": "A", "ev": {}, "via": [], "hops": 33}
    fx = handle("p_b", looping, part, IdentityConfig(partitions=1), (0, 1))
    assert fx.send == [] and fx.dead == [("identity_loop", looping)]
    fx = handle("p_b", {**looping, "hops": 3}, part, IdentityConfig(partitions=1), (0, 2))
    assert fx.dead == [] and fx.send[0][0] == "p_a" and fx.send[0][1]["hops"] == 4


def test_erase_removes_every_trace_across_partitions() -> None:
    """Erase by one identifier of a merged person: nothing of theirs is left on any partition."""
    from processors.privacy.protocol import suppression_key

    cfg = IdentityConfig(partitions=4)
    cluster = Cluster(cfg, random.Random(3))
    events = [
        {"type": "page", "messageId": "e1", "anonymousId": "anon-1", "timestamp": "2024-01-01T00:00:00Z"},
        {"type": "identify", "messageId": "e2", "anonymousId": "anon-2", "userId": "u-9",
         "traits": {"email": "jo@example.com", "first_name": "Jo"}, "timestamp": "2024-01-02T00:00:00Z"},
        {"type": "track", "event": "Order Completed", "messageId": "e3", "anonymousId": "anon-1",
         "userId": "u-9", "timestamp": "2024-01-03T00:00:00Z"},
        {"type": "group", "messageId": "e4", "userId": "u-9", "groupId": "acme",
         "traits": {"plan": "pro"}, "timestamp": "2024-01-04T00:00:00Z"},
        {"type": "page", "messageId": "e5", "anonymousId": "someone-else",
         "timestamp": "2024-01-05T00:00:00Z"},
    ]
    for e in events:
        tp = ev.validate(orjson.dumps(e), record_ts_ms=0)
        assert not isinstance(tp, ev.Reject)
        cluster.send(routing_key(tp.identifiers), event_message(orjson.loads(ev.encode(tp))))
    cluster.run()
    person = {"anonymous_id:anon-1", "anonymous_id:anon-2", "user_id:u-9", "email:jo@example.com"}
    pids = {p.identities[k] for p in cluster.parts for k in person if k in p.identities}
    assert len(pids) == 1
    cluster.env = Env(now=1_704_500_000_000)  # 2024-01-06: the clock the stream layer supplies
    cluster.send("email:jo@example.com", {"k": "P", "op": "erase", "rid": "r1"})
    cluster.run()
    results = [r for r in cluster.results if r["request_id"] == "r1"]
    assert len(results) == 1 and results[0]["status"] == "done", results
    dump = orjson.dumps([(p.identities, p.profiles, p.requests) for p in cluster.parts]).decode()
    for secret in ("anon-1", "anon-2", "u-9", "jo@example.com", "Jo", *pids):
        assert secret not in dump, secret
    assert "someone-else" in dump  # other people untouched
    assert any(suppression_key("email:jo@example.com") in p.identities for p in cluster.parts)
    # a later event of the erased person is dropped while suppressed
    later = ev.validate(orjson.dumps({"type": "page", "messageId": "e6", "userId": "u-9",
                                      "timestamp": "2024-01-06T00:00:00Z"}), record_ts_ms=0)
    assert not isinstance(later, ev.Reject)
    cluster.send(routing_key(later.identifiers), event_message(orjson.loads(ev.encode(later))))
    cluster.run()
    assert "u-9" not in orjson.dumps([p.identities for p in cluster.parts]).decode()


def test_profiles_past_their_ttl_are_erased_and_old_history_is_dropped() -> None:
    from processors.identity.graph import recheck
    from processors.profile.unified import ProfileLimits

    day = 86_400_000
    cfg = IdentityConfig(partitions=2, profile_limits=ProfileLimits(ttl_ms=30 * day, retention_ms=10 * day))
    cluster = Cluster(cfg, random.Random(5))
    for i, stamp in enumerate(["2024-01-01", "2024-01-05", "2024-01-20"]):
        tp = ev.validate(orjson.dumps({"type": "page", "messageId": f"t{i}", "userId": "old-timer",
                                       "timestamp": f"{stamp}T00:00:00Z"}), record_ts_ms=0)
        assert not isinstance(tp, ev.Reject)
        cluster.send(routing_key(tp.identifiers), event_message(orjson.loads(ev.encode(tp))))
    cluster.run()
    (part, pid), = [(p, k) for p in cluster.parts for k in p.profiles]
    profile = part.profiles[pid]
    assert [e["messageId"] for e in profile["recent_events"]] == ["t2"]  # 10-day retention
    assert profile["event_count"] == 3
    expiry = profile["last_seen"] + 30 * day
    assert profile["_next"] == expiry
    assert not recheck(pid, part, Env(now=expiry - 1), "time", cfg=cfg).send
    fx = recheck(pid, part, Env(now=expiry), "time", cfg=cfg)
    for key, msg in fx.send:
        cluster.send(key, msg)
    cluster.env = Env(now=expiry)
    cluster.run()
    assert not any(p.profiles for p in cluster.parts)
    assert "old-timer" not in orjson.dumps([p.identities for p in cluster.parts]).decode()
