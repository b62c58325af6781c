"""One and two real worker processes on a real Kafka: ingest, DLQ, profiles, HTTP."""

from __future__ import annotations

import base64
import subprocess
import sys

import orjson
import pytest
from jsonschema import Draft202012Validator

import schemas
from tests.integration.harness import Deployment

pytestmark = pytest.mark.kafka


def ev(**fields: object) -> bytes:
    return orjson.dumps(fields)


def identify(mid: str, uid: str, ts: str, **traits: object) -> bytes:
    return ev(type="identify", messageId=mid, userId=uid, timestamp=ts, traits=traits)


def track(mid: str, uid: str, ts: str, name: str, **props: object) -> bytes:
    return ev(type="track", messageId=mid, userId=uid, timestamp=ts, event=name, properties=props)


def test_event_reaches_profile_and_duplicate_changes_nothing(deployment: Deployment) -> None:
    w = deployment.add_worker()
    sent = deployment.produce([
        identify("m1", "u1", "2024-05-01T10:00:00Z", email=" Jo@Example.com", first_name="Jo"),
        track("m2", "u1", "2024-05-02T10:00:00Z", "Order Completed", revenue=40),
        identify("m3", "u1", "2024-04-01T10:00:00Z", first_name="Joanna"),  # older: loses
    ])
    deployment.wait_accounted(sent)
    status, before = w.profile("user_id", "u1")
    assert status == 200
    assert before["traits"]["first_name"] == "Jo"
    assert before["event_count"] == 3
    assert before["event_counts"] == {"identify": 2, "Order Completed": 1}
    assert before["identities"]["email"] == ["jo@example.com"]
    assert before["first_seen"] == "2024-04-01T10:00:00.000Z"

    again = deployment.produce([track("m2", "u1", "2024-05-02T10:00:00Z", "Order Completed",
                                      revenue=40)])
    totals = deployment.wait_accounted(sent + again)
    assert totals["tusk_events_processed_total{outcome=duplicate}"] == 1
    assert w.profile("user_id", "u1") == (200, before)
    assert w.get(f"/profiles/id/{before['id']}") == (200, before)


def test_unknown_profile_is_a_json_404(deployment: Deployment) -> None:
    w = deployment.add_worker()
    status, body = w.profile("user_id", "nobody")
    assert status == 404 and body["error"] == "not_found"
    status, body = w.get("/profiles/id/p_doesnotexist")
    assert status == 404 and body["error"] == "not_found"
    status, body = w.profile("email", "not-an-email")
    assert status == 400 and body["error"] == "invalid_identifier"


MALFORMED: list[tuple[bytes, str, str | None]] = [
    (b"not json at all", "invalid_json", None),
    (b"\xff\xfe\xfa", "invalid_utf8", None),
    (b"[1,2,3]", "not_an_object", None),
    (b'"a string"', "not_an_object", None),
    (b'{"messageId": "x1", "userId": "u"}', "missing_type", "type"),
    (b'{"type": "purchase", "messageId": "x2", "userId": "u"}', "unknown_type", "type"),
    (b'{"type": "track", "event": "E", "userId": "u"}', "missing_message_id", "messageId"),
    (b'{"type": "track", "event": "E", "messageId": 12, "userId": "u"}', "invalid_message_id",
     "messageId"),
    (b'{"type": "track", "messageId": "x3", "userId": "u"}', "missing_event", "event"),
    (b'{"type": "track", "messageId": "x4", "userId": "u", "event": ""}', "invalid_event", "event"),
    (b'{"type": "page", "messageId": "x5"}', "no_identifier", None),
    (b'{"type": "page", "messageId": "x6", "userId": "undefined"}', "blocked_identifier", None),
    (b'{"type": "page", "messageId": "x7", "userId": {"id": 1}}', "invalid_user_id", "userId"),
    (b'{"type": "page", "messageId": "x8", "anonymousId": true}', "invalid_anonymous_id",
     "anonymousId"),
    (b'{"type": "page", "messageId": "x9", "userId": "u", "timestamp": "last tuesday"}',
     "invalid_timestamp", "timestamp"),
    (b'{"type": "identify", "messageId": "x10", "userId": "u", "traits": [1]}', "invalid_traits",
     "traits"),
    (b'{"type": "track", "messageId": "x11", "userId": "u", "event": "E", "properties": "p"}',
     "invalid_properties", "properties"),
    (b'{"type": "page", "messageId": "x12", "userId": "u", "context": "web"}', "invalid_context",
     "context"),
    (b'{"type": "group", "messageId": "x13", "userId": "u"}', "missing_group_id", "groupId"),
    (b'{"type": "alias", "messageId": "x14", "userId": "u"}', "missing_previous_id", "previousId"),
    (b'{"type": "page", "messageId": "x15", "userId": "u", "name": 5}', "invalid_name", "name"),
    (b'{"type": "identify", "messageId": "x16", "userId": "u", "pad": "' + b"x" * 40_000 + b'"}',
     "too_large", None),
    (b'{"type": "page", "messageId": "x17", "userId": "u", "timestamp": 1714557600}',
     "invalid_timestamp", "timestamp"),
]


def test_malformed_inputs_land_in_dlq_while_valid_ones_flow(deployment: Deployment) -> None:
    w = deployment.add_worker()
    lines: list[bytes] = []
    for i, (bad, _, _) in enumerate(MALFORMED):
        lines.append(identify(f"ok-{i}", f"good-{i}", "2024-05-01T10:00:00Z", n=i))
        lines.append(bad)
    sent = deployment.produce(lines)
    totals = deployment.wait_accounted(sent)
    assert totals["tusk_events_processed_total{outcome=applied}"] == len(MALFORMED)

    dlq = [orjson.loads(r.value()) for r in deployment.read(deployment.settings.topics.dlq)]
    assert len(dlq) == len(MALFORMED)
    schema = Draft202012Validator(schemas.load("dlq"))
    by_original: dict[bytes, dict[str, object]] = {}
    for rec in dlq:
        schema.validate(rec)
        raw = (base64.b64decode(rec["original"]) if rec["original_encoding"] == "base64"
               else rec["original"].encode())
        by_original[raw] = rec
        assert rec["topic"] == deployment.settings.topics.touchpoints
        assert isinstance(rec["offset"], int) and rec["offset"] >= 0
    for bad, reason, field in MALFORMED:
        rec = by_original[bad]
        assert (rec["reason"], rec["field"]) == (reason, field), bad[:60]
    assert len({(r["reason"], r["field"]) for r in dlq}) >= 20
    rejected = {k: v for k, v in totals.items() if k.startswith("tusk_events_rejected_total")}
    assert sum(rejected.values()) == len(MALFORMED)
    for i in range(len(MALFORMED)):
        assert w.profile("user_id", f"good-{i}")[0] == 200
    assert w.get("/health")[0] == 200  # still running


def test_two_workers_share_partitions_and_answer_for_each_other(deployment: Deployment) -> None:
    a = deployment.add_worker()
    b = deployment.add_worker()
    deployment.wait_balanced(60)
    users = [f"user-{i}" for i in range(40)]
    sent = deployment.produce([
        track(f"m-{u}-{k}", u, f"2024-05-0{k + 1}T10:00:00Z", "Product Viewed", k=k)
        for u in users for k in range(3)])
    totals = deployment.wait_accounted(sent)
    assert totals["tusk_events_processed_total{outcome=applied}"] == len(users) * 3
    # both workers processed something
    assert a.metrics().get("tusk_events_processed_total{outcome=applied}", 0) > 0
    assert b.metrics().get("tusk_events_processed_total{outcome=applied}", 0) > 0
    for u in users:
        via_a, via_b = a.profile("user_id", u), b.profile("user_id", u)
        assert via_a == via_b
        assert via_a[0] == 200 and via_a[1]["event_count"] == 3


def test_cli_profile_get(deployment: Deployment) -> None:
    w = deployment.add_worker()
    deployment.wait_accounted(deployment.produce(
        [identify("c1", "cli-user", "2024-05-01T10:00:00Z", first_name="Cli")]))
    out = subprocess.run([sys.executable, "-m", "stream.cli.commands", "profile", "get", "user_id:cli-user",
                          "--url", w.url], capture_output=True, text=True, check=True)
    assert orjson.loads(out.stdout)["traits"]["first_name"] == "Cli"
    missing = subprocess.run([sys.executable, "-m", "stream.cli.commands", "profile", "get",
                              "user_id:nobody", "--url", w.url], capture_output=True, text=True)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "tusk: no profile found for user_id:nobody."


def test_state_survives_losing_the_local_rocksdb(deployment: Deployment) -> None:
    """A replacement worker with an empty datadir restores profiles from the changelog."""
    import shutil

    w = deployment.add_worker()
    sent = deployment.produce([identify(f"r{i}", f"ru-{i}", "2024-05-01T10:00:00Z", i=i)
                               for i in range(30)])
    deployment.wait_accounted(sent)
    before = [w.profile("user_id", f"ru-{i}") for i in range(30)]
    w.stop()
    shutil.rmtree(w.datadir)
    w.start()
    assert [w.profile("user_id", f"ru-{i}") for i in range(30)] == before
    # the changelogs were read in bulk (stream/state/restore.py), not record by record
    bulk = {k: v for k, v in w.metrics().items() if k.startswith("tusk_restored_in_bulk_records_total")}
    assert sum(v for k, v in bulk.items() if "profiles-changelog" in k) >= 30, bulk
    assert sum(v for k, v in bulk.items() if "identities-changelog" in k) >= 30, bulk
