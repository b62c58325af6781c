"""Source trust for traits: ranked sources, raise events, provenance, laws (processors/profile/trust.py)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processors.common.config import ConfigError
from processors.identity.graph import load_identity_config
from processors.ingest.events import Touchpoint
from processors.profile.merge import merge
from processors.profile.trust import TrustConfig, parse_trust
from processors.profile.unified import Outcome, ProfileLimits, apply, new_profile, public_view
from stream.ingest.collector import CollectorConfig, build_records
from stream.runtime.settings import Settings, SettingsError

TRUST = parse_trust({
    "sources": ["checkout", "app", "web", "crm_import"],
    "traits": {"email": ["verified", "double_opt_in", "checkout", "app", "web", "crm_import"]},
    "raise": [{"event": "Email Verified", "trait": "email", "to": "verified", "value": ["properties.email"]},
              {"event": "Phone Confirmed", "trait": "phone", "to": "checkout"}],
})
LIMITS = ProfileLimits(trust=TRUST)
SOURCES = ["verified", "double_opt_in", "checkout", "app", "web", "crm_import", None, "partner"]
T0 = 1_700_000_000_000


def event(i: int, ts: int, source: str | None, traits: dict[str, Any], name: str | None = None,
          props: dict[str, Any] | None = None) -> Touchpoint:
    ctx: dict[str, Any] = {"traits": traits}
    if source is not None:
        ctx["source"] = source
    msg: dict[str, Any] = {"type": "track" if name else "identify", "messageId": f"m{i}", "userId": "u1",
                           "context": ctx}
    if name:
        msg["event"] = name
        msg["properties"] = props or {}
    else:
        msg["traits"] = {}
    return Touchpoint(msg, msg["type"], f"m{i}", T0 + ts, [("user_id", "u1")])


def run(events: list[Touchpoint], pid: str = "p_1", limits: ProfileLimits = LIMITS) -> dict[str, Any]:
    profile = new_profile(pid)
    for tp in events:
        assert apply(profile, tp, limits) is Outcome.APPLIED
    return profile


def test_a_low_trust_source_writing_later_does_not_win() -> None:
    p = run([event(1, 100, "double_opt_in", {"email": "a@x.com", "phone": "1"}),
             event(2, 200, "crm_import", {"email": "typo@x.com", "phone": "2"}),
             event(3, 300, "web", {"plan": "pro"})])
    assert p["traits"]["email"] == "a@x.com"  # per-trait ranking
    assert p["traits"]["phone"] == "2"  # global ranking: double_opt_in is not listed, below crm_import
    view = public_view(p)
    assert view["trait_sources"]["email"] == {"source": "double_opt_in", "at": "2023-11-14T22:13:20.100Z",
                                              "messageId": "m1"}
    assert view["trait_sources"]["plan"]["source"] == "web"


def test_ranks_then_event_time_and_unlisted_sources() -> None:
    p = run([event(1, 100, "app", {"phone": "app-old"}), event(2, 300, "app", {"phone": "app-new"}),
             event(3, 200, "checkout", {"phone": "checkout"}), event(4, 400, None, {"phone": "default"}),
             event(5, 500, "partner", {"phone": "partner"})])
    assert p["traits"]["phone"] == "checkout"
    q = run([event(1, 100, None, {"nickname": "old"}), event(2, 300, "partner", {"nickname": "new"})])
    assert q["traits"]["nickname"] == "new"  # both unlisted: one rank, the latest wins
    assert public_view(q)["trait_sources"]["nickname"]["source"] == "partner"
    r = run([event(1, 100, None, {"nickname": "x"})], limits=ProfileLimits())
    assert public_view(r)["trait_sources"]["nickname"]["source"] == "default"


def test_raise_events_mark_a_value_verified() -> None:
    p = run([event(1, 100, "web", {"email": "jo@x.com"}),
             event(2, 200, "app", {}, name="Email Verified", props={"email": "jo@x.com"}),
             event(3, 300, "double_opt_in", {"email": "other@x.com"})])
    assert p["traits"]["email"] == "jo@x.com"
    assert public_view(p)["trait_sources"]["email"]["source"] == "verified"
    # without a value on the event, the value held when it is applied is confirmed
    q = run([event(1, 100, "web", {"phone": "+1"}), event(2, 200, "web", {}, name="Phone Confirmed"),
             event(3, 300, "app", {"phone": "+2"})])
    assert q["traits"]["phone"] == "+1" and q["_tt"]["phone"][2] == "checkout"


def test_without_trust_it_is_last_write_wins_as_before() -> None:
    p = run([event(1, 300, "crm_import", {"email": "late@x.com"}), event(2, 100, "verified", {"email": "a"})],
            limits=ProfileLimits())
    assert p["traits"]["email"] == "late@x.com"


writes = st.lists(st.tuples(st.sampled_from(["email", "phone", "plan"]),
                            st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 50),
                            st.sampled_from(SOURCES), st.booleans()),
                  min_size=1, max_size=25)


def as_events(ws: list[tuple[str, str, int, str | None, bool]]) -> list[Touchpoint]:
    out = []
    for i, (trait, value, ts, source, verify) in enumerate(ws):
        if verify and trait == "email":  # raise events here carry the value they confirm
            out.append(event(i, ts, source, {}, name="Email Verified", props={"email": value}))
        else:
            out.append(event(i, ts, source, {trait: value}))
    return out


def kept(p: dict[str, Any]) -> tuple[Any, Any]:
    return p["traits"], p["_tt"]


@settings(max_examples=200, deadline=None)
@given(writes, st.randoms(use_true_random=False))
def test_order_independence(ws: list[Any], rnd: random.Random) -> None:
    events = as_events(ws)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert kept(run(events)) == kept(run(shuffled))


@settings(max_examples=200, deadline=None)
@given(writes, st.integers(0, 25), st.randoms(use_true_random=False))
def test_merges_apply_the_same_rule_whichever_side_survives(ws: list[Any], cut: int,
                                                            rnd: random.Random) -> None:
    events = as_events(ws)
    rnd.shuffle(events)
    left, right = run(events[:cut], "p_a"), run(events[cut:], "p_b")
    whole = run(events)
    assert kept(merge(left, right, LIMITS)) == kept(whole)
    assert kept(merge(right, left, LIMITS)) == kept(whole)


def test_identity_yaml_trust_section(tmp_path: Path) -> None:
    good = tmp_path / "identity.yaml"
    good.write_text("trust:\n  sources: [checkout, web]\n  traits:\n    email: [verified, checkout]\n"
                    "  raise:\n    - {event: Email Verified, trait: email, to: verified}\n")
    cfg = load_identity_config(good, 4)
    trust = cfg.profile_limits.trust
    assert trust.rank("email", "verified") == 0 and trust.rank("phone", "web") == 1
    assert trust.rank("phone", "verified") == 2 and trust.raised_by("Email Verified")[0].to == "verified"
    bad = tmp_path / "bad.yaml"
    bad.write_text("trust:\n  sources: [web]\n  raise:\n    - {event: Email Verified, trait: email}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:4: at trust.raise.0"):
        load_identity_config(bad, 4)
    assert TrustConfig().rank("email", "anything") == 0
    unranked = tmp_path / "unranked.yaml"
    unranked.write_text("trust:\n  sources: [web]\n  traits:\n    email: [checkout, web]\n  raise:\n"
                        "    - event: Email Verified\n      trait: email\n      to: verified\n")
    with pytest.raises(ConfigError, match=r"unranked.yaml:8: at trust.raise.0.to: expected a source ranked "
                                          r"for 'email'"):
        load_identity_config(unranked, 4)


def test_collector_names_the_source_of_a_write_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUSK_COLLECTOR_WRITE_KEYS", "wk1=checkout, wk2 , wk3 = crm_import")
    cfg = CollectorConfig.from_env(Settings())
    assert cfg.write_keys == frozenset({"wk1", "wk2", "wk3"})
    assert dict(cfg.sources) == {"wk1": "checkout", "wk3": "crm_import"}
    doc = {"batch": [{"type": "identify", "userId": "u", "context": {"source": "verified", "ip": "1"}},
                     {"type": "track", "event": "x", "userId": "u"}]}
    records = build_records("batch", doc, 32_000, source="crm_import")
    contexts = [orjson.loads(v)["context"] for _, v in records]
    assert contexts == [{"source": "crm_import", "ip": "1"}, {"source": "crm_import"}]
    own = build_records("track", {"event": "x", "userId": "u", "context": {"source": "app"}}, 32_000)
    assert orjson.loads(own[0][1])["context"] == {"source": "app"}
    monkeypatch.setenv("TUSK_COLLECTOR_WRITE_KEYS", "wk1=")
    with pytest.raises(SettingsError, match="KEY=SOURCE"):
        CollectorConfig.from_env(Settings())


def test_a_raise_event_re_evaluates_segments_on_its_trait() -> None:
    from processors.segments.catalog import Catalog

    cat = Catalog.build([], [{"id": "jo", "condition": {"trait": "email", "eq": "jo@x.com"}}])
    profile = new_profile("p_1")
    for tp in [event(1, 100, "web", {"email": "old@x.com"}),
               event(2, 200, "app", {}, name="Email Verified", props={"email": "jo@x.com"})]:
        apply(profile, tp, LIMITS)
        changes = cat.evaluate(profile, tp.ts, cat.observe(profile, tp, tp.ts), tp.message_id)
    assert [c["transition"] for c in changes] == ["entered"] and "jo" in profile["segments"]
