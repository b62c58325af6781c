"""Pure processors without a broker: validation, partitioning, profile and merge laws."""

from __future__ import annotations

import base64
import itertools
import random
from typing import Any

import orjson
import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import schemas
from processors.identity.partitioning import mint_profile_id, murmur2, partition_for
from processors.ingest import events as ev
from processors.ingest.dlq import dlq_record
from processors.ingest.identifiers import extract, normalise_email, normalise_phone
from processors.profile.merge import merge
from processors.profile.unified import Outcome, apply, new_profile, public_view

TOUCHPOINT = Draft202012Validator(schemas.load("touchpoint"))


@given(st.binary(max_size=64))
def test_murmur2_matches_kafka_clients(data: bytes) -> None:
    assert murmur2(data) & 0xFFFFFFFF == aiokafka_murmur2(data) & 0xFFFFFFFF


@given(st.text(min_size=1, max_size=40), st.integers(1, 16))
def test_minted_ids_live_on_their_seeds_partition(seed: str, partitions: int) -> None:
    pid = mint_profile_id(seed, partitions)
    assert pid == mint_profile_id(seed, partitions)
    assert partition_for(pid, partitions) == partition_for(seed, partitions)


def test_minted_ids_are_the_stored_ones() -> None:
    """Ids are stored: the minting function must keep giving the ids it gave before."""
    assert mint_profile_id("email:a@b.com", 8) == "p_c30024704f0cd785f83c"
    assert mint_profile_id("user:42", 12) == "p_13dfa8808bf977aab96e"
    assert mint_profile_id("anon:x", 1) == "p_939da6751619cb32c278"
    assert mint_profile_id("phone:+33612345678", 64) == "p_20ae351af0651ccb9caa"


def test_identifiers_are_normalised_and_ranked() -> None:
    msg = {"userId": 42, "anonymousId": "a1", "traits": {"email": " Jo@Example.COM ",
                                                         "phone": "+1 (415) 555-2671"},
           "context": {"device": {"id": "d1"}, "externalIds": [{"id": "z9", "type": "Zendesk ID"}]}}
    assert extract(msg) == [("user_id", "42"), ("email", "jo@example.com"), ("phone", "+14155552671"),
                            ("device_id", "d1"), ("zendesk_id", "z9"), ("anonymous_id", "a1")]
    assert normalise_email("not-an-email") is None
    assert normalise_phone("12345") is None


# (input, reason, field): every reason distinct
BAD: list[tuple[bytes, str, str | None]] = [
    (b"", "empty", None),
    (b"{" + b" " * 40_000 + b"}", "too_large", None),
    (b"\xc3\x28", "invalid_utf8", None),
    (b"{not json", "invalid_json", None),
    (b"[]", "not_an_object", None),
    (b'{"messageId": "m"}', "missing_type", "type"),
    (b'{"type": "buy", "messageId": "m"}', "unknown_type", "type"),
    (b'{"type": "page", "userId": "u"}', "missing_message_id", "messageId"),
    (b'{"type": "page", "messageId": "", "userId": "u"}', "invalid_message_id", "messageId"),
    (b'{"type": "track", "messageId": "m", "userId": "u"}', "missing_event", "event"),
    (b'{"type": "track", "messageId": "m", "userId": "u", "event": 3}', "invalid_event", "event"),
    (b'{"type": "group", "messageId": "m", "userId": "u"}', "missing_group_id", "groupId"),
    (b'{"type": "alias", "messageId": "m", "userId": "u"}', "missing_previous_id", "previousId"),
    (b'{"type": "page", "messageId": "m", "userId": [1]}', "invalid_user_id", "userId"),
    (b'{"type": "page", "messageId": "m", "anonymousId": false}', "invalid_anonymous_id", "anonymousId"),
    (b'{"type": "page", "messageId": "m", "userId": "u", "name": {}}', "invalid_name", "name"),
    (b'{"type": "identify", "messageId": "m", "userId": "u", "traits": 1}', "invalid_traits", "traits"),
    (b'{"type": "page", "messageId": "m", "userId": "u", "properties": []}', "invalid_properties",
     "properties"),
    (b'{"type": "page", "messageId": "m", "userId": "u", "integrations": 1}', "invalid_integrations",
     "integrations"),
    (b'{"type": "page", "messageId": "m", "userId": "u", "timestamp": "soon-ish!"}',
     "invalid_timestamp", "timestamp"),
    (b'{"type": "page", "messageId": "m", "userId": "u", "sentAt": 5}', "invalid_sent_at", "sentAt"),
    (b'{"type": "page", "messageId": "m", "userId": "u", "context": {"device": {"id": {}}}}',
     "invalid_context", "context.device.id"),
    (b'{"type": "page", "messageId": "m"}', "no_identifier", None),
    (b'{"type": "page", "messageId": "m", "userId": "undefined", "anonymousId": "null"}',
     "blocked_identifier", None),
]


@pytest.mark.parametrize("raw,reason,field", BAD)
def test_each_malformed_input_has_its_reason(raw: bytes, reason: str, field: str | None) -> None:
    result = ev.validate(raw, record_ts_ms=0, max_bytes=32 * 1024)
    assert isinstance(result, ev.Reject)
    assert (result.reason, result.field) == (reason, field)
    assert result.detail


def test_reasons_are_distinct() -> None:
    assert len({r for _, r, _ in BAD}) == len(BAD) >= 20


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.text(max_size=3))
fields = {
    "type": st.sampled_from(["identify", "track", "page", "screen", "group", "alias", "x"]),
    "messageId": st.one_of(st.text(max_size=3), st.integers(0, 3)),
    "userId": st.one_of(json_leaf, st.lists(json_leaf, max_size=1)),
    "anonymousId": json_leaf, "groupId": json_leaf, "previousId": json_leaf,
    "event": json_leaf, "name": json_leaf,
    "traits": st.one_of(json_leaf, st.dictionaries(st.text(max_size=2), json_leaf, max_size=2)),
    "properties": st.one_of(json_leaf, st.just({})),
    "context": st.one_of(json_leaf, st.fixed_dictionaries({}, optional={
        "traits": st.one_of(json_leaf, st.just({})),
        "device": st.one_of(json_leaf, st.fixed_dictionaries({}, optional={"id": json_leaf})),
        "externalIds": st.one_of(json_leaf, st.lists(st.fixed_dictionaries(
            {}, optional={"id": json_leaf, "type": json_leaf}), max_size=2)),
        "consent": st.one_of(json_leaf, st.fixed_dictionaries({}, optional={
            "categoryPreferences": st.one_of(json_leaf, st.dictionaries(st.text(max_size=2),
                                                                        json_leaf, max_size=2))})),
    })),
    "timestamp": st.one_of(json_leaf, st.just("2024-01-01T00:00:00Z")),
}


@settings(max_examples=400)
@given(st.fixed_dictionaries({}, optional=fields))
def test_structural_checks_agree_with_the_json_schema(msg: dict[str, Any]) -> None:
    assert (ev.check(msg) is None) == TOUCHPOINT.is_valid(msg), (ev.check(msg), msg)


def test_dlq_record_keeps_bytes_and_matches_schema() -> None:
    dlq = Draft202012Validator(schemas.load("dlq"))
    for raw in (b"\xff\x00binary", b"plain text"):
        reject = ev.validate(raw, record_ts_ms=0)
        assert isinstance(reject, ev.Reject)
        rec = dlq_record(reject, raw, topic="t", partition=1, offset=7, received_at=1)
        dlq.validate(rec)
        back = (base64.b64decode(rec["original"]) if rec["original_encoding"] == "base64"
                else rec["original"].encode())
        assert back == raw


def touchpoint(n: int, ts: int, **msg: Any) -> ev.Touchpoint:
    body = {"type": "identify", "messageId": f"m{n}", "userId": "u1",
            "timestamp": f"2024-01-01T00:00:{ts:02d}Z", **msg}
    tp = ev.validate(orjson.dumps(body), record_ts_ms=0)
    assert isinstance(tp, ev.Touchpoint)
    return tp


events_st = st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["a", "b", "c"]),
                               st.integers(0, 3)), min_size=1, max_size=12)


def build(spec: list[tuple[int, str, int]]) -> list[ev.Touchpoint]:
    return [touchpoint(i, ts, traits={"plan": plan, f"t{ts}": i}, event="E")
            for i, (ts, plan, _) in enumerate(spec)]


@settings(max_examples=200)
@given(events_st, st.randoms(use_true_random=False))
def test_profile_does_not_depend_on_arrival_order(spec: list[tuple[int, str, int]],
                                                  rnd: random.Random) -> None:
    tps = build(spec)
    a, b = new_profile("p_1"), new_profile("p_1")
    for tp in tps:
        apply(a, tp)
    shuffled = list(tps)
    rnd.shuffle(shuffled)
    for tp in shuffled:
        apply(b, tp)
    assert public_view(a) == public_view(b)
    assert a["event_count"] == len(tps)


@settings(max_examples=200)
@given(events_st)
def test_duplicates_and_redeliveries_change_nothing(spec: list[tuple[int, str, int]]) -> None:
    tps = build(spec)
    p = new_profile("p_1")
    for off, tp in enumerate(tps):
        assert apply(p, tp, source=(0, off)) is Outcome.APPLIED
    before = orjson.dumps(p)
    assert apply(p, tps[0]) is Outcome.DUPLICATE
    assert apply(p, tps[-1], source=(0, len(tps) - 1)) is Outcome.REDELIVERED
    assert orjson.dumps(p) == before


@settings(max_examples=200)
@given(events_st, st.integers(0, 2), st.integers(0, 3))
def test_merge_is_commutative_and_associative(spec: list[tuple[int, str, int]], cut1: int,
                                              cut2: int) -> None:
    tps = build(spec)
    parts: list[list[ev.Touchpoint]] = [[], [], []]
    for tp, (_, _, bucket) in zip(tps, spec, strict=True):
        parts[bucket % 3].append(tp)
    profiles = []
    for i, chunk in enumerate(parts):
        p = new_profile(f"p_{i}")
        for tp in chunk:
            apply(p, tp)
        profiles.append(p)
    a, b, c = profiles
    assert public_view(merge(a, b)) == public_view(merge(b, a))
    left, right = merge(merge(a, b), c), merge(a, merge(b, c))
    assert public_view(left) == public_view(right)
    # merging the parts equals applying everything to one profile (ids aside)
    whole = new_profile("p_0")
    for tp in tps:
        apply(whole, tp)
    merged = public_view(left)
    for key in ("traits", "event_count", "event_counts", "first_seen", "last_seen", "recent_events"):
        assert merged[key] == public_view(whole)[key], key
    for x, y in itertools.permutations(profiles, 2):
        assert merge(x, y)["id"] == min(x["id"], y["id"])
