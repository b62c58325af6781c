"""Profiles (HTTP, privacy export) and profile-changes records, as the processors build them,
match their schemas (schemas/profile.schema.json, schemas/profile-change.schema.json)."""

from __future__ import annotations

from typing import Any

import orjson
from jsonschema import Draft202012Validator

import schemas
from processors.identity.graph import Env, is_redirect
from processors.profile.unified import public_view
from processors.segments.catalog import transition
from tests.unit.test_identity_protocol import group_event, run_raw

PROFILE = Draft202012Validator(schemas.load("profile"), format_checker=Draft202012Validator.FORMAT_CHECKER)
CHANGE = Draft202012Validator(schemas.load("profile-change"),
                              format_checker=Draft202012Validator.FORMAT_CHECKER)


def event(n: int, day: int, **body: Any) -> bytes:
    return orjson.dumps({"messageId": f"e{n}", "timestamp": f"2024-02-{day:02d}T00:00:00Z", **body})


def test_profiles_and_changes_match_their_schemas() -> None:
    cluster = run_raw([
        event(1, 1, type="page", anonymousId="anon-1", name="Home", properties={"path": "/"}),
        event(2, 2, type="identify", anonymousId="anon-2", userId="jo",
              traits={"email": "Jo@Example.com", "first_name": "Jo",
                      "subscriptions": {"email": "subscribed"}},
              context={"consent": {"categoryPreferences": {"Advertising": False}}}),
        event(3, 3, type="track", anonymousId="anon-1", userId="jo", event="Order Completed",
              properties={"revenue": 40}),
        group_event(4, "jo", "acme", 4, name="Acme", role="buyer"),
        group_event(5, "jo", "acme", 5, membership_status="left"),
    ], partitions=3)
    profiles = [p for part in cluster.parts for p in part.profiles.values() if not is_redirect(p)]
    assert {p["kind"] for p in profiles} == {"person", "account"}
    for profile in profiles:
        view = {**public_view(profile), "computed": {}}  # the web view adds computed traits
        wire = orjson.loads(orjson.dumps(view))
        errors = [f"{list(e.path)}: {e.message}" for e in PROFILE.iter_errors(wire)]
        assert errors == [], (errors, view)
    jo = next(p for p in profiles if p["kind"] == "person")
    assert jo["merged_from"] and jo["memberships"] and jo["consent_history"]

    cluster.env = Env(now=1_707_000_000_000)
    cluster.send("user_id:jo", {"k": "P", "op": "export", "rid": "x1"})
    cluster.send("user_id:jo", {"k": "P", "op": "erase", "rid": "r1"})
    cluster.run()
    export = next(r for r in cluster.results if r["request_id"] == "x1")
    assert PROFILE.is_valid(orjson.loads(orjson.dumps(export["profile"]))), export["profile"]

    changes = [*cluster.changes, transition(jo["id"], "vip", "entered", 1_707_000_000_000, "e3")]
    assert {c["type"] for c in changes} == {"merged", "membership_ended", "erased", "segment"}
    for change in changes:
        record = orjson.loads(orjson.dumps({**change, "recorded_at": 1_707_000_000_001}))  # as written
        errors = [e.message for e in CHANGE.iter_errors(record)]
        assert errors == [], (errors, record)
    assert not CHANGE.is_valid({"type": "merged", "profile_id": "p_1"})  # the schema does check
