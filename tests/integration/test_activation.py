"""Activation triggers, consent and privacy on a real broker and real workers."""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from rocksdict import AccessType, Options, Rdict

from tests.conftest import TuskEnv
from tests.integration.harness import Deployment, wait_for

pytestmark = pytest.mark.kafka

DEFINITIONS = """
segments:
  - id: buyers
    condition: {performed: Order Completed}
    destinations:
      - {channel: email, traits: [first_name, computed.spend]}
      - {channel: sms}
  - id: big_buyers
    condition: {computed: spend, gte: 100}
    destinations:
      - {channel: email}
  - id: switched_on
    condition: {trait: state, eq: "on"}
    destinations:
      - {channel: webhook, cap: {max: 1, per: 1d}}
computed_traits:
  - {id: spend, aggregate: sum, event: Order Completed, of: properties.revenue}
"""


def ev(mid: str, **fields: Any) -> bytes:
    return orjson.dumps({"messageId": mid, "timestamp": fields.pop("ts", "2024-05-01T10:00:00Z"), **fields})


def stream() -> list[bytes]:
    out = [
        ev("a1", type="identify", userId="ann-5501", traits={"email": "Ann.Lee@Example.com",
                                                              "phone": "+14155552671", "first_name": "Annika",
                                                         "subscriptions": {"email": "subscribed",
                                                                           "sms": "subscribed"}},
           context={"consent": {"categoryPreferences": {"Marketing": True}}}),
        ev("a2", type="track", event="Order Completed", userId="ann-5501", properties={"revenue": 150},
           ts="2024-05-01T11:00:00Z"),
        ev("b1", type="identify", userId="bob", traits={"email": "bob@example.com", "phone": "+14155550100",
                                                         "subscriptions": {"email": "unsubscribed",
                                                                           "sms": "subscribed"}}),
        ev("b2", type="track", event="Order Completed", userId="bob", properties={"revenue": 500},
           ts="2024-05-01T11:00:00Z"),
        ev("c1", type="track", event="Order Completed", userId="cyd", properties={"revenue": 5},
           context={"traits": {"email": "cyd@example.com",
                               "subscriptions": {"email": "subscribed", "sms": "subscribed"}}}),
        # eve never subscribed: marketing is opt-in, she gets no email or sms
        ev("e1", type="identify", userId="eve", traits={"email": "eve@example.com", "phone": "+14155550123"}),
        ev("e2", type="track", event="Order Completed", userId="eve", properties={"revenue": 7},
           ts="2024-05-01T11:00:00Z"),
    ]
    for i in range(10):  # a burst of entries for one profile, capped at one trigger a day
        out.append(ev(f"d{i}", type="identify", userId="dee", traits={"state": "on" if i % 2 == 0 else "off"},
                      ts=f"2024-05-01T12:{i:02d}:00Z"))
    return out


def triggers(d: Deployment) -> list[dict[str, Any]]:
    out = []
    for channel in ("email", "sms", "webhook"):
        for rec in d.read(d.settings.topics.activations(channel)):
            out.append(orjson.loads(rec.value()))
    return out


def test_triggers_consent_caps_replay_and_erase(tusk_env: TuskEnv, tmp_path: Path) -> None:
    env = {**tusk_env, "TUSK_CLOCK": "event", "TUSK_TICK_INTERVAL": "300ms"}
    defs = tmp_path / "defs.yaml"
    defs.write_text(DEFINITIONS)
    d = Deployment(env, tmp_path)
    cli = [sys.executable, "-m", "stream.cli.commands"]
    done = subprocess.run([*cli, "segments", "apply", str(defs), "--no-wait"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    try:
        w = d.add_worker()
        records = stream()
        # who people are first (a trigger is judged on what the profile knows at the transition)
        first = [r for r in records if b'"identify"' in r and b'"dee"' not in r]
        d.produce(first)
        d.wait_accounted(len(first))
        d.produce([r for r in records if r not in first])
        d.wait_accounted(len(records))
        got = wait_for(lambda: (t := triggers(d)) and len(t) >= 6 and t, 60)
        time.sleep(2)
        got = triggers(d)
        by = Counter((t["profile_id"], t["segment"], t["channel"]) for t in got)
        assert all(n == 1 for n in by.values()), by
        _, ann = w.profile("user_id", "ann-5501")
        _, bob = w.profile("user_id", "bob")
        _, cyd = w.profile("user_id", "cyd")
        _, dee = w.profile("user_id", "dee")
        ann_t = {(t["segment"], t["channel"]): t for t in got if t["profile_id"] == ann["id"]}
        assert set(ann_t) == {("buyers", "email"), ("buyers", "sms"), ("big_buyers", "email")}
        assert ann_t[("buyers", "email")]["to"] == {"email": "ann.lee@example.com"}
        assert ann_t[("buyers", "email")]["traits"] == {"first_name": "Annika", "computed.spend": 150}
        assert ann_t[("buyers", "sms")]["to"] == {"phone": "+14155552671"}
        assert ann_t[("buyers", "email")]["caused_by"] == "a2"
        # bob unsubscribed from email: no email trigger for any segment, sms still flows
        bob_t = {(t["segment"], t["channel"]) for t in got if t["profile_id"] == bob["id"]}
        assert bob_t == {("buyers", "sms")}
        # cyd has no phone: sms suppressed as no_address; email (no consent recorded) flows
        cyd_t = {(t["segment"], t["channel"]) for t in got if t["profile_id"] == cyd["id"]}
        assert cyd_t == {("buyers", "email")}
        _, eve = w.profile("user_id", "eve")
        assert not [t for t in got if t["profile_id"] == eve["id"]]
        dee_t = [t for t in got if t["profile_id"] == dee["id"]]
        assert len(dee_t) == 1 and dee_t[0]["channel"] == "webhook"
        m = d.totals()
        assert m['tusk_triggers_suppressed_total{channel=email,reason=unsubscribed}'] == 2
        assert m['tusk_triggers_suppressed_total{channel=sms,reason=no_address}'] == 1
        assert m['tusk_triggers_suppressed_total{channel=email,reason=not_subscribed}'] == 1
        assert m['tusk_triggers_suppressed_total{channel=sms,reason=not_subscribed}'] == 1
        assert m['tusk_triggers_suppressed_total{channel=webhook,reason=capped}'] == 4

        # replay the same input after a restart: no new trigger ids
        ids = {t["trigger_id"] for t in got}
        w.stop()
        w = d.add_worker()
        d.produce(records)
        time.sleep(1)
        dup = ('tusk_events_processed_total{outcome=duplicate}',
               'tusk_events_processed_total{outcome=redelivered}')
        wait_for(lambda: sum(w.metrics().get(k, 0) for k in dup) >= len(records), 90)
        assert {t["trigger_id"] for t in triggers(d)} == ids

        # export, then erase by one identifier
        out = subprocess.run([*cli, "privacy", "export", "email:ann.lee@example.com"], env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        exported = orjson.loads(out.stdout)
        assert exported["profile"]["identities"]["user_id"] == ["ann-5501"]
        history = exported["profile"]["consent_history"]
        assert {"consent": "Marketing", "granted": True} in [
            {k: h[k] for k in ("consent", "granted") if k in h} for h in history]
        assert {"subscription": "email", "state": "subscribed"} in [
            {k: h[k] for k in ("subscription", "state") if k in h} for h in history]
        out = subprocess.run([*cli, "privacy", "erase", "user_id:ann-5501"], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        result = orjson.loads(out.stdout)
        assert result["status"] == "done" and result["identifiers"] == 3, result
        for kind, value in (("user_id", "ann-5501"), ("email", "ann.lee@example.com"),
                            ("phone", "+14155552671")):
            assert w.profile(kind, value)[0] == 404, (kind, value)
        assert w.get(f"/profiles/id/{ann['id']}")[0] == 404
        assert w.profile("user_id", "bob")[0] == 200
        secrets = [b"ann-5501", b"ann.lee@example.com", b"Annika", b"14155552671", ann["id"].encode()]

        def leaks_in_changelogs() -> list[str]:
            found = []
            for table in ("identities", "profiles", "meta"):
                latest: dict[bytes, bytes | None] = {}
                for rec in d.read(f"{env['TUSK_APP_ID']}-{table}-changelog"):
                    latest[rec.key()] = rec.value()
                for k, v in latest.items():
                    if v is None:
                        continue
                    if any(s in k or s in v for s in secrets):
                        found.append(f"{table}: {k[:40]!r}")
            return found

        assert wait_for(lambda: not leaks_in_changelogs(), 30), leaks_in_changelogs()
        w.stop()
        leaks = []
        for path in sorted((tmp_path / "worker1").rglob("*.db")):
            opts = Options(raw_mode=True)
            db = Rdict(str(path), opts, access_type=AccessType.read_only())
            try:
                for k, v in db.items():
                    if any(s in k or s in v for s in secrets):
                        leaks.append(f"{path.name}: {k[:40]!r}")
            finally:
                db.close()
        assert not leaks, leaks
    finally:
        d.stop()
